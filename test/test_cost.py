"""The cost report (issue 15) on a stack of its own (ports offset by 10000, gateway 9550): a short
`shoplog bench --json` must carry a cost section that is present, plausible and consistent, and
`shoplog cost snapshot`/`report` (what bench/checkout.sh runs around wrk) must give the same kind of
report. Checked against figures the test reads itself: Redis's own `INFO commandstats` around the
run, the number of checkouts made, and the machine's cores.
"""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from conftest import own_stack, shoplog

# Not 5500: test_cluster's stock-db nodes (offset 7000) sit on 13601-13606, where stock-1 would.
OFFSET = 10000
GATEWAY = 9550
ENV = {"SHOPLOG_PORT_OFFSET": str(OFFSET), "SHOPLOG_GATEWAY_PORT": str(GATEWAY)}
ORDER_DB_PORT = 6401 + OFFSET
CHECKOUTS = 600


@pytest.fixture(scope="module")
def data_dir():
    with own_stack("shoplog-cost-", **ENV) as d:
        yield d


def commandstats(port: int) -> dict[str, int]:
    """Calls of every command of the Redis on `port`, read here (not through shoplog)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            head, _, rest = buf.partition(b"\r\n")
            if head.startswith(b"$") and len(rest) >= int(head[1:]):
                break
    calls = {}
    for line in buf.decode().splitlines():
        if line.startswith("cmdstat_"):
            name, values = line[len("cmdstat_"):].split(":", 1)
            calls[name.upper()] = int(dict(kv.split("=", 1) for kv in values.split(","))["calls"])
    return calls


def by_name(cost: dict) -> dict:
    return {c["component"]: c for c in cost["components"]}


def check_consistent(cost: dict):
    """Per-checkout figures × checkouts = the deltas; shares and the total add up."""
    n = cost["checkouts"]
    for c in cost["components"]:
        assert c["cpu_seconds"] >= 0, c
        assert c["cpu_s_per_1k"] == pytest.approx(c["cpu_seconds"] * 1000 / n, rel=1e-6, abs=1e-9)
        if c["kind"] == "redis":
            calls = sum(k["calls"] for _, k in c["commands"])
            assert c["commands_per_checkout"] * n == pytest.approx(calls, rel=1e-6), c
            for name, k in c["commands"]:
                assert k["per_checkout"] * n == pytest.approx(k["calls"], rel=1e-6), (c["component"], name)
    total = sum(c["cpu_seconds"] for c in cost["components"])
    assert cost["total_cpu_s_per_1k"] == pytest.approx(total * 1000 / n, rel=1e-6)
    assert sum(c["share"] for c in cost["components"]) == pytest.approx(1.0, abs=1e-6)
    assert cost["total_commands_per_checkout"] == pytest.approx(
        sum(c.get("commands_per_checkout", 0) for c in cost["components"]), rel=1e-6
    )


def test_bench_reports_a_plausible_and_consistent_cost_per_checkout(data_dir):
    before = commandstats(ORDER_DB_PORT)
    t0 = time.monotonic()
    run = shoplog(data_dir, "bench", "--orders", str(CHECKOUTS), "--population", "2000",
                  "-c", "16", "--no-audit", "--json", timeout=120, **ENV)
    wall = time.monotonic() - t0
    after = commandstats(ORDER_DB_PORT)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["checkouts"] == CHECKOUTS and report["status_2xx"] == CHECKOUTS, report
    cost = report["cost"]
    assert cost is not None, "no cost section on a local stack"
    assert cost["checkouts"] == CHECKOUTS
    check_consistent(cost)

    comps = by_name(cost)
    # Every component of the stack (the list `shoplog status` gives) is in the report.
    status = json.loads(shoplog(data_dir, "status", "--json", **ENV).stdout)
    assert {c["name"] for c in status} == set(comps)
    assert not any(c["restarted"] for c in comps.values())

    # Plausible: the order service and its database worked; no more CPU than the machine has.
    assert comps["order-1"]["cpu_seconds"] > 0
    assert comps["gateway"]["cpu_seconds"] >= 0
    total_cpu = sum(c["cpu_seconds"] for c in comps.values())
    assert 0 < total_cpu <= wall * (os.cpu_count() or 1) * 1.1, (total_cpu, wall)
    assert cost["load_generator_cpu_s_per_1k"] > 0
    db = comps["order-db"]
    assert db["commands_per_checkout"] > 0
    evalsha = dict(db["commands"]).get("EVALSHA")
    assert evalsha is not None, db["commands"]
    # At least the admission script per checkout; the run's own calls within what Redis itself
    # counted around the whole command (which also covers the populate's scripts).
    assert CHECKOUTS <= evalsha["calls"] <= after["EVALSHA"] - before.get("EVALSHA", 0)
    assert db["scripts_per_checkout"] >= 1
    # Every checkout is one request to the order service; Redlock touches all three lock nodes.
    assert comps["order-1"]["http_routes"]["/orders/checkout"] == pytest.approx(1.0, abs=0.02)
    for lock in ("lock-1", "lock-2", "lock-3"):
        assert comps[lock]["commands_per_checkout"] >= 2, comps[lock]  # acquire + release
    rt = cost["round_trips"]
    assert rt["client_requests"] == 1
    assert rt["http_requests"] >= 1
    assert 0 < rt["redis_reads"] <= cost["total_commands_per_checkout"]


def test_cost_snapshot_and_report_measure_another_load_generator(data_dir, tmp_path):
    """The path bench/checkout.sh takes around wrk: snapshot, load, snapshot, report."""
    snap = lambda name: (tmp_path / name).write_text(
        shoplog(data_dir, "cost", "snapshot", **ENV).stdout
    )
    snap("before.json")
    load = shoplog(data_dir, "bench", "--orders", "200", "--population", "2000", "-c", "8",
                   "--no-audit", "--no-cost", "--json", timeout=120, **ENV)
    assert load.returncode == 0, load.stderr
    assert "cost" in json.loads(load.stdout) and json.loads(load.stdout)["cost"] is None
    snap("after.json")
    out = shoplog(data_dir, "cost", "report", str(tmp_path / "before.json"),
                  str(tmp_path / "after.json"), "--checkouts", "200", "--json", **ENV)
    assert out.returncode == 0, out.stderr
    cost = json.loads(out.stdout)
    check_consistent(cost)
    comps = by_name(cost)
    assert comps["order-1"]["cpu_seconds"] > 0
    assert comps["order-1"]["http_routes"]["/orders/checkout"] == pytest.approx(1.0, abs=0.02)
    assert dict(comps["order-db"]["commands"])["EVALSHA"]["per_checkout"] >= 1
    # The human table names every component and the total.
    table = shoplog(data_dir, "cost", "report", str(tmp_path / "before.json"),
                    str(tmp_path / "after.json"), "--checkouts", "200", **ENV)
    assert table.returncode == 0 and "\x1b[" not in table.stdout
    for name in ("order-db", "lock-1", "order-1", "gateway", "total"):
        assert any(line.startswith(name) for line in table.stdout.splitlines()), table.stdout
    # Nothing to divide by: refused.
    zero = shoplog(data_dir, "cost", "report", str(tmp_path / "before.json"),
                   str(tmp_path / "after.json"), "--checkouts", "0", **ENV)
    assert zero.returncode == 2 and "nothing to divide by" in zero.stderr
