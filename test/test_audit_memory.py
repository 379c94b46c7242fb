"""The audit within a memory budget (issue 14, point 3), on a stack of its own (ports offset by
7500, gateway 9850).

With a budget far below what a partition's replayed state needs (`--memory-budget 16K`), every
partition is spooled to disk and replayed in buckets of its keys. The report must be the one a
whole replay gives: clean on a clean stack, with the same saga counts and records; and the same
violations, naming the same entities, when a stock value is edited behind the log's back, when a
log entry is deleted, and when a participant holds a record of a saga that never started.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import own_stack, shoplog
from helpers import Api, key, ok_json, partition, streams, tag

OFFSET = 7500
GATEWAY = 9850
ENV = {"SHOPLOG_PORT_OFFSET": str(OFFSET), "SHOPLOG_GATEWAY_PORT": str(GATEWAY), "SHOPLOG_SUPERVISE": "0"}
STOCK_DB = 6402 + OFFSET
TINY = "16K"


@pytest.fixture(scope="module")
def stack():
    with own_stack("shoplog-auditmem-", **ENV) as data_dir:
        yield data_dir


def audit(data_dir: Path, budget: str | None = None) -> tuple[int, dict]:
    args = ["audit", "--json"] + (["--memory-budget", budget] if budget else [])
    out = shoplog(data_dir, *args, **ENV)
    assert out.returncode in (0, 1), out.stdout[-2000:] + out.stderr
    return out.returncode, json.loads(out.stdout)


def findings(report: dict) -> list[tuple]:
    return sorted((v["entity"], v["invariant"], v["expected"], v["found"]) for v in report["violations"])


def both(data_dir: Path) -> tuple[dict, dict]:
    """The audit with the default budget and with a tiny one: the same findings, sagas, records;
    the tiny one replayed partitions in buckets."""
    rc_whole, whole = audit(data_dir)
    rc_tiny, tiny = audit(data_dir, TINY)
    assert whole["spill"]["partitions"] == 0, whole["spill"]
    assert tiny["spill"]["partitions"] > 0 and tiny["spill"]["passes"] > tiny["spill"]["partitions"], tiny["spill"]
    assert rc_tiny == rc_whole
    assert findings(tiny) == findings(whole)
    assert tiny["sagas"] == whole["sagas"]
    assert tiny["records"] == whole["records"]
    return whole, tiny


def redis_cli(port: int, *args: str) -> str:
    """redis-cli's answer (options such as --json go before the command)."""
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout.strip()


def test_a_spilled_audit_finds_what_a_whole_one_finds(stack):
    api = Api(f"http://127.0.0.1:{GATEWAY}")
    bench = shoplog(stack, "bench", "--orders", "600", "--concurrency", "8", "--population", "40",
                    "--no-audit", "--json", **ENV)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    # One more committed saga and an aborted one (credit short), on entities of their own.
    item = api.create_item(1, 5)
    user = api.create_user(10)
    order = api.create_order(user)
    api.add_item(order, item, 2)
    ok_json(api.post(f"/orders/checkout/{order}"))
    poor = api.create_user(1)
    refused = api.create_order(poor)
    api.add_item(refused, item, 2)
    assert api.post(f"/orders/checkout/{refused}").status_code == 400

    whole, tiny = both(stack)
    assert whole["violations"] == [] and tiny["violations"] == []
    assert tiny["sagas"].get("committed", 0) >= 601 and tiny["sagas"].get("aborted", 0) >= 1, tiny["sagas"]

    sp = int(redis_cli(STOCK_DB, "GET", "shoplog:partitions"))
    item_key = key("item:", "stock", item, sp)

    # 1. A stock value edited behind the log's back.
    redis_cli(STOCK_DB, "HINCRBY", item_key, "stock", "7")
    _, tiny = both(stack)
    assert [v["entity"] for v in tiny["violations"]] == [item_key], tiny["violations"]
    redis_cli(STOCK_DB, "HINCRBY", item_key, "stock", "-7")

    # 2. A participant's record of a saga the order service never started (a key the log never
    # made: found by the per-bucket key counts).
    ghost = f"ssaga:{tag('stock', partition(item, sp), sp)}:ghost-saga"
    redis_cli(STOCK_DB, "HSET", ghost, "state", "RESERVED", "order", order)
    _, tiny = both(stack)
    assert {v["entity"] for v in tiny["violations"]} == {ghost}, tiny["violations"]
    assert any("never started" in v["invariant"] for v in tiny["violations"]), tiny["violations"]
    redis_cli(STOCK_DB, "DEL", ghost)
    rc, _ = audit(stack, TINY)
    assert rc == 0

    # 3. A log entry deleted: the item's creation. The log no longer replays (its next entry
    # changes an item no entry created); the first failure is the one a whole replay stops at.
    stream = streams("stock", sp)[partition(item, sp)]
    entries = json.loads(redis_cli(STOCK_DB, "--json", "XRANGE", stream, "-", "+"))
    created = [eid for eid, kv in entries
               if dict(zip(kv[::2], kv[1::2])).get("type") == "ItemCreated"
               and dict(zip(kv[::2], kv[1::2])).get("item") == item]
    assert len(created) == 1, f"no ItemCreated entry for {item}"
    assert redis_cli(STOCK_DB, "XDEL", stream, created[0]) == "1"
    _, tiny = both(stack)
    assert any(v["entity"] == stream and "cannot be replayed" in v["invariant"] for v in tiny["violations"]), \
        tiny["violations"]
