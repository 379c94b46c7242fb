#!/usr/bin/env bash
# Side-by-side checkout throughput of two builds on this machine: for each round, start a stack with
# build A, run bench/checkout.sh, stop it; then the same with build B. Alternating cancels most of a
# shared machine's drift (rounds alternate which build goes first); report the ratio of the
# means, never one absolute rate.
#
#   bench/compare.sh BASE_SHOPLOG NEW_SHOPLOG [ROUNDS] [DURATION]
#
# Example (the base built from another commit in a worktree):
#   git worktree add /tmp/base <commit> && (cd /tmp/base && CARGO_TARGET_DIR=/tmp/base-target \
#     cargo build --release --workspace)
#   bench/compare.sh /tmp/base-target/release/shoplog target/release/shoplog 3 20s
set -uo pipefail
A=${1:?base shoplog binary}
B=${2:?new shoplog binary}
ROUNDS=${3:-3}
D=${4:-20s}
cd "$(dirname "$0")/.."
export N_ORDERS=${N_ORDERS:-200000} N_ITEMS=${N_ITEMS:-50000} N_USERS=${N_USERS:-50000}
declare -A sum=([base]=0 [new]=0)
for round in $(seq "$ROUNDS"); do
  # ABBA: odd rounds run base first, even rounds new first, so that neither build always runs
  # right after the other's stack was torn down.
  order="base new"; [ $((round % 2)) = 0 ] && order="new base"
  for build in $order; do
    bin=$A; [ "$build" = new ] && bin=$B
    dd=$(mktemp -d /tmp/shoplog-compare-XXXXXX)
    "$bin" up --detach --data-dir "$dd" --port-offset 7000 --gateway-port 9800 >"$dd.up.log" 2>&1 ||
      { echo "round $round $build: up failed (see $dd.up.log)"; "$bin" down --wipe --data-dir "$dd"; exit 2; }
    # COST=1: also each run's cost per checkout (`shoplog cost`), printed after its rate. Both
    # builds' stacks are measured by the new build's `shoplog cost` (a base may predate it).
    out=$(if [ -n "${COST:-}" ]; then export COST_DATA_DIR=$dd SHOPLOG=${COST_SHOPLOG:-$B}; fi
      bash bench/checkout.sh http://127.0.0.1:9800 64 "$D" 2>&1)
    "$bin" down --wipe --data-dir "$dd" >/dev/null 2>&1
    rate=$(echo "$out" | sed -n 's/^checkouts\/s: //p')
    echo "round $round $build: $(echo "$out" | grep -E 'checkouts/s|p50|p99|non-2xx' | tr '\n' ' ')"
    if [ -n "${COST:-}" ]; then echo "$out" | sed -n '/^cost per checkout/,$p'; fi
    sum[$build]=$(( ${sum[$build]} + ${rate:-0} ))
  done
done
echo "mean checkouts/s: base $(( ${sum[base]} / ROUNDS )), new $(( ${sum[new]} / ROUNDS ))," \
  "ratio new/base $(awk "BEGIN { printf \"%.3f\", ${sum[new]} / ${sum[base]} }")"
