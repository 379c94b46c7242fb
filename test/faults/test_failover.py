"""Failover under load on `shoplog up --cluster` (each service database a Redis Cluster of 3
primaries with one replica each, `WAIT 1` before anything is acknowledged): SIGKILL the primary
that holds a third of a database's slots in the middle of a checkout storm and leave it dead
for 8 s. Its replica is promoted (the node timeout is 3 s), the services follow the new slot map,
and once quiet every check of the harness holds: exact reconciliation of every item, user and
answer, the audit clean, every acknowledged write present. Then the old primary is started
again and rejoins as a replica.

The figures (5xx answers, seconds until the replica took over) go to the faults report.
`make test-faults` runs the three (one of seven runs of the stock-db scenario overran the
suite's 120 s limit for a reason not found yet, so `make test` does not run it).
"""

from __future__ import annotations

import threading
import time

import pytest

from harness import FaultStack, Storm, settle_and_verify, wait_for

OFFSET, GATEWAY = 8000, 9750
SECOND_THIRD = "5461-10922"


@pytest.fixture(scope="module")
def cluster():
    stack = FaultStack(offset=OFFSET, gateway=GATEWAY, cluster=True)
    stack.up()
    yield stack
    stack.down()


def roles(stack: FaultStack, db: str) -> dict[str, dict]:
    return {n: c["cluster"] for n, c in stack.status().items()
            if n.startswith(f"{db}-db-") and c.get("cluster")}


@pytest.mark.slow
@pytest.mark.parametrize("db", ["stock", "order", "payment"])
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
