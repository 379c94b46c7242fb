"""No 5xx when a replica dies (issue 13, point 3): with 2 replicas of each service, a replica of
order, of stock and of payment is killed with SIGKILL in the middle of a checkout storm (and
restarted 2 s later). The gateway moves a checkout that was on the dead replica to the other one
(a checkout is idempotent: the retry joins the same saga, within the first attempt's deadline),
and the storm's side writer sends an `Idempotency-Key` with every create, add and add_funds and
retries with the same key, as a client should; the gateway retries those on the other replica
too. So no request sent after the first kill gets a 5xx, every acknowledged write is there exactly
once, the audit is clean and stock and credit reconcile exactly (harness.py's checks).

`make test` runs the kills 2.5 s apart; `make test-faults` also kills the other replicas 1.5 s
apart.
"""

from __future__ import annotations

import os

import pytest

from harness import FaultStack, KeyedStorm, settle_and_verify

FSYNC = os.environ.get("FAULTS_APPENDFSYNC", "always")


@pytest.fixture(scope="module")
def two_replicas():
    stack = FaultStack(offset=2500, gateway=9250, replicas=2, appendfsync=FSYNC)
    stack.up()
    yield stack
    stack.down()


def run(stack: FaultStack, scenario: str, kills: list[tuple]):
    storm = KeyedStorm(stack, n_orders=3000, seed=13)
    result = storm.run(scenario, kills)
    settle_and_verify(stack, storm, result)
    first_kill = min(k[1] for k in result.killed)
    after = storm.sent_after(first_kill)
    errors = storm.errors_after(first_kill)
    side = [s for _, what, s, _ in storm.sent if what != "checkout"]
    slowest = max(storm.durations)
    print(f"\n{scenario}: killed {result.killed}, in flight {result.in_flight_at_kill}; checkouts "
          f"{result.counts()}; requests sent after the first kill {len(after)}, 5xx among them "
          f"{len(errors)}; side writes {len(side)} (acknowledged "
          f"{len(result.acked_users) + len(result.acked_items)}); slowest checkout {slowest:.2f} s; "
          f"quiet after {result.quiet_after} s; audit clean {result.audit_clean}")
    assert not errors, f"5xx for requests sent after the kill: {errors[:10]}\n{storm.explain(errors)}"
    # Retries keep a checkout's deadline: CHECKOUT_TIMEOUT_MS (3 s here) + 1 s, plus the client.
    assert slowest < 3 + 1 + 0.5, f"a checkout took {slowest:.2f} s"


def test_killing_a_replica_of_each_service_in_turn_gives_no_5xx(two_replicas):
    run(two_replicas, "replica death: order-1, stock-1, payment-1 in turn",
        [(1.0, "order-1", 2.0), (3.5, "stock-1", 2.0), (6.0, "payment-1", 2.0)])


@pytest.mark.slow
def test_killing_the_other_replicas_in_quick_succession_gives_no_5xx(two_replicas):
    run(two_replicas, "replica death: payment-2, order-2, stock-2, 1.5 s apart",
        [(1.0, "payment-2", 1.0), (2.5, "order-2", 1.0), (4.0, "stock-2", 1.0)])
