"""The cluster under load on `shoplog up --cluster` (each service database a Redis Cluster of 3
primaries with one replica each, `WAIT 1` before anything is acknowledged), in the middle of a
checkout storm; once quiet, every check of the harness holds each time: exact reconciliation of
every item, user and answer, the audit clean, every acknowledged write present.

- **A primary killed** (SIGKILL), the one holding the second third of a database's slots, dead for
  8 s: its replica is promoted (the node timeout is 3 s), the services follow the new slot map;
  then the old primary is started again and rejoins as a replica. `make test` runs stock-db's,
  `make test-faults` the three databases. (This scenario found redis-rs's cluster connection
  wedging after the failover under load — `common/src/cluster_link.rs` replaces it when it does.)
- **A replica killed** and restarted 2 s later: no 5xx at all. Its primary's acknowledgements
  wait (`WAIT 1`, up to `REPLICA_ACK_TIMEOUT_MS`) until the restarted replica has resynchronised.
- **Slots moved** with `redis-cli --cluster reshard` (2,048 slots, at least one stock partition
  with its keys and its log stream) while checkouts run: MOVED and ASK redirections, and TRYAGAIN
  while a partition's keys are half moved, are followed; no 5xx.

The figures (5xx answers, seconds until the replica took over) go to the faults report.
"""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from harness import FaultStack, Storm, settle_and_verify, wait_for
from helpers import key_slot, tag

OFFSET, GATEWAY = 8000, 9750
SECOND_THIRD = "5461-10922"
MOVED_SLOTS = 2048


@pytest.fixture(scope="module")
def cluster():
    stack = FaultStack(offset=OFFSET, gateway=GATEWAY, cluster=True)
    stack.up()
    yield stack
    stack.down()


def redis_cli(*args: str, timeout: float = 120) -> str:
    out = subprocess.run(["redis-cli", *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def roles(stack: FaultStack, db: str) -> dict[str, dict]:
    return {n: c["cluster"] for n, c in stack.status().items()
            if n.startswith(f"{db}-db-") and c.get("cluster")}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("db", ["stock", pytest.param("order", marks=pytest.mark.slow),
                                pytest.param("payment", marks=pytest.mark.slow)])
def test_a_primary_killed_mid_storm_fails_over_and_loses_nothing(cluster, db):
    before = roles(cluster, db)
    primary = next(n for n, r in before.items() if r["role"] == "primary" and SECOND_THIRD in r["slots"])
    replicas = [n for n, r in before.items() if r["role"] == "replica"]

    # Watch for the moment a replica of that database takes over the slots.
    took_over: list[float] = []
    killed_at: list[float] = []

    def watch():
        while not took_over and time.monotonic() - started < 60:
            if killed_at:
                now = roles(cluster, db)
                if any(now.get(r, {}).get("role") == "primary" and SECOND_THIRD in now[r]["slots"]
                       for r in replicas):
                    took_over.append(time.monotonic() - killed_at[0])
            time.sleep(0.2)

    storm = Storm(cluster, seed=42, n_orders=2000)
    original_kill = cluster.kill

    def kill(name):
        killed_at.append(time.monotonic())
        return original_kill(name)

    cluster.kill = kill
    started = time.monotonic()
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = storm.run(f"cluster: kill the {db}-db primary of slots {SECOND_THIRD}", [(1.0, primary, 8.0)])
    finally:
        cluster.kill = original_kill
        watcher.join()
    assert took_over, f"no replica of {db}-db took over slots {SECOND_THIRD}"
    result.scenario += f" (replica promoted after {took_over[0]:.1f} s)"
    settle_and_verify(cluster, storm, result)

    # The old primary was started again (storm.run's restart): it rejoins as a replica.
    wait_for(lambda: roles(cluster, db).get(primary, {}).get("role") == "replica",
             f"{primary} to rejoin as a replica", timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_replica_killed_mid_storm_gives_no_5xx(cluster):
    replica = next(n for n, r in sorted(roles(cluster, "stock").items()) if r["role"] == "replica")
    storm = Storm(cluster, seed=43, n_orders=2000)
    result = storm.run(f"cluster: kill the stock-db replica {replica}", [(1.0, replica, 2.0)])
    assert result.counts()["5xx"] == 0, result.counts()
    settle_and_verify(cluster, storm, result)
    wait_for(lambda: roles(cluster, "stock").get(replica, {}).get("role") == "replica",
             f"{replica} to be a replica again", timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_slots_moved_mid_storm_are_followed(cluster):
    """Runs last: it leaves stock-db's slot ranges uneven."""
    status = cluster.status()
    nodes = roles(cluster, "stock")
    primaries = sorted((n for n, r in nodes.items() if r["role"] == "primary"),
                       key=lambda n: int(nodes[n]["slots"][0].split("-")[0]))
    source, target = primaries[1], primaries[2]
    ids = {n: redis_cli("-p", str(status[n]["port"]), "CLUSTER", "MYID").strip() for n in (source, target)}
    first = int(nodes[source]["slots"][0].split("-")[0])
    moved = range(first, first + MOVED_SLOTS)
    # The stock partitions whose slot is among those moved: at least one, keys and stream.
    sp = int(redis_cli("-c", "-p", str(status[source]["port"]), "GET", "shoplog:partitions"))
    partitions = [k for k in range(sp) if key_slot(tag("stock", k, sp)[1:-1]) in moved]
    assert partitions, f"no stock partition among slots {moved}"

    resharded: list = []

    def reshard():
        time.sleep(1.0)
        started = time.monotonic()
        redis_cli("--cluster", "reshard", f"127.0.0.1:{status[source]['port']}",
                  "--cluster-from", ids[source], "--cluster-to", ids[target],
                  "--cluster-slots", str(MOVED_SLOTS), "--cluster-yes", timeout=180)
        resharded.append(round(time.monotonic() - started, 1))

    mover = threading.Thread(target=reshard)
    storm = Storm(cluster, seed=44, n_orders=3000)
    mover.start()
    result = storm.run(f"cluster: {MOVED_SLOTS} stock-db slots (partitions {partitions}) resharded", [])
    mover.join()
    assert resharded, "redis-cli --cluster reshard did not finish"
    result.scenario += f" (reshard took {resharded[0]} s, storm {result.seconds:.1f} s)"
    assert result.counts()["5xx"] == 0, result.counts()
    settle_and_verify(cluster, storm, result)
    after = roles(cluster, "stock")
    assert any(r.startswith(f"{first}-") for r in after[target]["slots"]), after[target]
