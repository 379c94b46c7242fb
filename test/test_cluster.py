"""`shoplog up --cluster` on a stack of its own (ports offset by 7000, gateway on 9700): each
service database a Redis Cluster of 3 primaries with one replica each; checkouts through the
gateway, the audit clean on the clusters, and a restart (`down`, `up`) that finds the clusters
formed and every acknowledged write still there.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from conftest import DOWN_TIMEOUT, _log_tails, shoplog, shoplog_bin
from helpers import Api

ENV = {"SHOPLOG_PORT_OFFSET": "7000", "SHOPLOG_GATEWAY_PORT": "9700"}
SLOTS = 16384


@pytest.fixture
def cluster_stack():
    if not shoplog_bin().exists():
        pytest.skip(f"no shoplog binary at {shoplog_bin()}")
    data_dir = Path(tempfile.mkdtemp(prefix="shoplog-cluster-"))
    up = shoplog(data_dir, "up", "--detach", "--cluster", **ENV)
    assert up.returncode == 0, up.stderr + _log_tails(data_dir)
    yield data_dir
    shoplog(data_dir, "down", "--wipe", timeout=DOWN_TIMEOUT, **ENV)


def status(data_dir: Path) -> list[dict]:
    out = shoplog(data_dir, "status", "--json", **ENV)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def slot_count(ranges: list[str]) -> int:
    total = 0
    for r in ranges:
        first, _, last = r.partition("-")
        total += int(last or first) - int(first) + 1
    return total


def test_the_saga_runs_on_three_clusters_and_survives_a_restart(cluster_stack):
    nodes = [c for c in status(cluster_stack) if c.get("cluster")]
    for db in ("order", "stock", "payment"):
        mine = [c for c in nodes if c["name"].startswith(f"{db}-db-")]
        roles = sorted(c["cluster"]["role"] for c in mine)
        assert roles == ["primary"] * 3 + ["replica"] * 3, mine
        assert sum(slot_count(c["cluster"]["slots"]) for c in mine) == SLOTS, mine

    api = Api("http://127.0.0.1:9700")
    items = [api.create_item(price=2, stock=5) for _ in range(6)]
    users = [api.create_user(credit=100) for _ in range(3)]
    orders = []
    taken = {i: 0 for i in items}
    for k in range(9):
        order = api.create_order(users[k % 3])
        for item in (items[k % 6], items[(k + 1) % 6]):
            api.add_item(order, item, 1)
            taken[item] += 1
        orders.append(order)
    for order in orders:
        r = api.post(f"/orders/checkout/{order}")
        assert r.status_code == 200, r.text
    audit = shoplog(cluster_stack, "audit", **ENV)
    assert audit.returncode == 0, audit.stdout + audit.stderr

    # A restart reads every node's node table and AOF: the same clusters, nothing lost.
    down = shoplog(cluster_stack, "down", timeout=DOWN_TIMEOUT, **ENV)
    assert down.returncode == 0, down.stderr
    up = shoplog(cluster_stack, "up", "--detach", **ENV)
    assert up.returncode == 0, up.stderr + _log_tails(cluster_stack)
    assert "formed" not in up.stderr
    for order in orders:
        assert api.order(order)["paid"] is True
    assert [api.credit(u) for u in users] == [100 - 3 * 4] * 3
    assert {i: api.item(i)["stock"] for i in items} == {i: 5 - n for i, n in taken.items()}
    api.close()
