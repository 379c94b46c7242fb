#!/usr/bin/env bash
# Checkout throughput through the gateway: populate with batch_init, then check out distinct
# orders at C concurrent connections for D seconds with wrk. Needs a running stack
# (`shoplog up --detach`, release build) and wrk (`apt-get install wrk`).
#
#   bench/checkout.sh [GATEWAY_URL] [CONNECTIONS] [DURATION]
#
# With COST_DATA_DIR set to the stack's data directory (and SHOPLOG to its `shoplog`, default
# target/release/shoplog), it also reports what a checkout cost: CPU seconds per 1,000 checkouts
# of every component, Redis commands and round trips per checkout (`shoplog cost`, the same report
# `shoplog bench` prints; COST_JSON=1 for JSON).
set -euo pipefail
G=${1:-http://127.0.0.1:8000}
C=${2:-64}
D=${3:-30s}
T=${WRK_THREADS:-2}
N_ORDERS=${N_ORDERS:-400000}
N_ITEMS=${N_ITEMS:-100000}
N_USERS=${N_USERS:-100000}

post() { curl -fsS -X POST "$G$1" >/dev/null; }
echo "populating: $N_ITEMS items, $N_USERS users, $N_ORDERS orders"
post "/stock/batch_init/$N_ITEMS/1000000/1"
post "/payment/batch_init/$N_USERS/1000000000"
post "/orders/batch_init/$N_ORDERS/$N_ITEMS/$N_USERS/1"
echo "wrk -t$T -c$C -d$D (distinct orders, through the gateway $G)"
bench=$(dirname "$0")
if [ -z "${COST_DATA_DIR:-}" ]; then
  WRK_THREADS=$T wrk -t"$T" -c"$C" -d"$D" --timeout 30s -s "$bench/checkout.lua" "$G"
  exit
fi
SHOPLOG=${SHOPLOG:-target/release/shoplog}
snaps=$(mktemp -d)
"$SHOPLOG" cost snapshot --data-dir "$COST_DATA_DIR" >"$snaps/before.json"
WRK_THREADS=$T wrk -t"$T" -c"$C" -d"$D" --timeout 30s -s "$bench/checkout.lua" "$G" | tee "$snaps/wrk.txt"
sleep 1 # the last sagas' consumers finish
"$SHOPLOG" cost snapshot --data-dir "$COST_DATA_DIR" >"$snaps/after.json"
n=$(sed -n 's/^checkouts: //p' "$snaps/wrk.txt")
# Exit status 1 (a component restarted during the run) is reported in the table, not fatal here.
"$SHOPLOG" cost report --data-dir "$COST_DATA_DIR" "$snaps/before.json" "$snaps/after.json" \
  --checkouts "$n" ${COST_JSON:+--json} || true
rm -r "$snaps"
