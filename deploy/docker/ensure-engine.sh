#!/usr/bin/env bash
# Makes sure a Docker engine answers before the container tests, and says what it did.
#
# Why: the container tests need a running engine, and on the machines this project is built on the
# engine is started by the machine, not by systemd, so nothing brings it back once it is gone or
# hung (Docker 20.10 can also wedge on a stale network endpoint until it restarts). Waiting a little,
# then starting the engine (or restarting a hung one) as root, turns such a machine into one that
# can run the tests instead of one that fails them.
#
# Exit codes: 0 an engine answers; 1 none answers and none could be started (the reason is printed).
# Set SHOPLOG_DOCKER_NO_START=1 to only wait and never start or restart the engine.
set -uo pipefail

answers() { timeout 10 docker info >/dev/null 2>&1; }

wait_for_engine() { # $1: seconds of wall time (a hung engine makes each question take 10 s)
  local deadline=$((SECONDS + $1))
  while ((SECONDS < deadline)); do
    answers && return 0
    sleep 1
  done
  return 1
}

command -v docker >/dev/null 2>&1 || { echo "ensure-engine: the docker client is not installed" >&2; exit 1; }
answers && exit 0

echo "ensure-engine: no Docker engine answers; waiting up to 30 s for one" >&2
wait_for_engine 30 && { echo "ensure-engine: the engine answers now" >&2; exit 0; }

diagnose() {
  echo "--- docker info:" >&2
  timeout 10 docker info 2>&1 | tail -5 >&2
  echo "--- engine processes:" >&2
  pgrep -a 'dockerd|containerd' >&2 || echo "(none)" >&2
  echo "--- disk:" >&2
  df -h / /var/lib/docker 2>/dev/null >&2
  [ -f "${LOG:-}" ] && { echo "--- last lines of $LOG:" >&2; tail -20 "$LOG" >&2; }
}

if [ "${SHOPLOG_DOCKER_NO_START:-}" = 1 ] || [ "$(id -u)" != 0 ] || ! command -v dockerd >/dev/null 2>&1; then
  echo "ensure-engine: still none, and this script may not start one (root and dockerd are needed)" >&2
  diagnose
  exit 1
fi

if pgrep -x dockerd >/dev/null; then
  echo "ensure-engine: dockerd runs but does not answer: stopping it to start it again" >&2
  pkill -x dockerd
  for _ in $(seq 30); do pgrep -x dockerd >/dev/null || break; sleep 1; done
  pkill -9 -x dockerd 2>/dev/null
  sleep 1
fi

LOG=/tmp/shoplog-dockerd.log
echo "ensure-engine: starting dockerd (log: $LOG)" >&2
nohup dockerd >"$LOG" 2>&1 </dev/null &
if wait_for_engine 90; then
  echo "ensure-engine: the engine answers" >&2
  exit 0
fi
echo "ensure-engine: dockerd was started but does not answer after 90 s" >&2
diagnose
exit 1
