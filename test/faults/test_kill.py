"""Kill one component in the middle of a checkout storm, restart it 1–3 s later, and check that
nothing acknowledged was lost and every invariant holds (see harness.py for the checks).

`make test` runs the scenarios marked `quick`; `make test-faults` runs them all, plus the chaos
runs and the same scenarios with 2 replicas per service.
"""

from __future__ import annotations

import os
import random

import pytest

from harness import FaultStack, Storm, settle_and_verify

# `FAULTS_APPENDFSYNC=always make test-faults` runs everything with an fsync per write.
FSYNC = os.environ.get("FAULTS_APPENDFSYNC", "always")

SINGLE = ["order-1", "stock-1", "payment-1", "ids", "logparser", "order-db", "stock-db", "payment-db",
          "lock-1", "gateway"]
QUICK = {"stock-1", "order-db"}


@pytest.fixture(scope="module")
def single():
    stack = FaultStack(offset=5000, gateway=9500, appendfsync=FSYNC)
    stack.up()
    yield stack
    stack.down()


@pytest.fixture(scope="module")
def replicated():
    stack = FaultStack(offset=6000, gateway=9600, replicas=2, appendfsync=FSYNC)
    stack.up()
    yield stack
    stack.down()


def params(names, quick=()):
    return [pytest.param(n, marks=() if n in quick else pytest.mark.slow) for n in names]


@pytest.mark.parametrize("component", params(SINGLE, QUICK))
def test_kill_one_component_during_a_storm(single, component):
    down_for = random.Random(component).uniform(1, 3)
    storm = Storm(single, seed=hash(component) % 1000)
    result = storm.run(f"kill {component}", [(1.0, component, down_for)])
    settle_and_verify(single, storm, result)


def chaos_schedule(seed: int, names: list[str]) -> list[tuple[float, str, float]]:
    """A minute of kills: a random component every 3-7 s, each down for 1-3 s."""
    rng = random.Random(seed)
    kills, t = [], 1.0
    while t < 55:
        name = rng.choice(names)
        down = rng.uniform(1, 3)
        kills.append((t, name, down))
        t += down + rng.uniform(2, 4)
    return kills


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chaos_random_kills_for_a_minute(single):
    kills = chaos_schedule(7, SINGLE)
    # Enough orders to keep checking out for the whole minute.
    storm = Storm(single, n_orders=40000, n_items=200, stock=150, n_users=2000, credit=30, workers=16, seed=7)
    result = storm.run("chaos (1 replica)", kills)
    settle_and_verify(single, storm, result, quiet_timeout=120)


REPLICATED = ["order-1", "stock-2", "payment-1", "ids", "logparser", "order-db", "stock-db", "payment-db",
              "lock-3", "gateway"]


@pytest.mark.slow
@pytest.mark.parametrize("component", REPLICATED)
def test_kill_one_component_during_a_storm_with_two_replicas(replicated, component):
    down_for = random.Random(component).uniform(1, 3)
    storm = Storm(replicated, seed=hash(component) % 1000)
    result = storm.run(f"kill {component} (2 replicas)", [(1.0, component, down_for)])
    settle_and_verify(replicated, storm, result)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chaos_random_kills_for_a_minute_with_two_replicas(replicated):
    kills = chaos_schedule(11, REPLICATED + ["order-2", "stock-1", "payment-2"])
    storm = Storm(replicated, n_orders=40000, n_items=200, stock=150, n_users=2000, credit=30, workers=16, seed=11)
    result = storm.run("chaos (2 replicas)", kills)
    settle_and_verify(replicated, storm, result, quiet_timeout=120)
