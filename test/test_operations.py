"""The log parser and the operator commands on a stack of their own (ports offset by 3000,
gateway 9300), with short timeouts so that recovery can be watched: SAGA_TIMEOUT 2 s, a pass every
300 ms, re-drive 2 s after the timeout, and a checkout timeout of 60 s so that the log parser, not
the HTTP handler, is the one that aborts stalled sagas.

Every test gets a fresh stack (`stack` is function-scoped): the tests kill components, tamper with
the databases and leave a poison entry in a log on purpose, and their checks are global (audit,
replay, bench), so no test may see what another left. Each passes alone and in any order.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from conftest import DOWN_TIMEOUT, _log_tails, shoplog, shoplog_bin
from helpers import Api, key, metric, ok_json, partition, streams, tag

OFFSET = 3000
GATEWAY = 9300
ENV = {
    "SHOPLOG_PORT_OFFSET": str(OFFSET),
    "SHOPLOG_GATEWAY_PORT": str(GATEWAY),
    "SAGA_TIMEOUT_MS": "2000",
    "RECOVERY_INTERVAL_MS": "300",
    "REDRIVE_AFTER_MS": "2000",
    "CHECKOUT_TIMEOUT_MS": "60000",
    "LEASE_TTL_MS": "1500",
    "CLAIM_IDLE_MS": "200",
    "MAX_DELIVERIES": "3",
    "SHOPLOG_SUPERVISE": "0",  # killed components stay down until a test runs `up`
}


class Stack:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.api = Api(f"http://127.0.0.1:{GATEWAY}")

    def run(self, *args, **env) -> subprocess.CompletedProcess:
        return shoplog(self.data_dir, *args, **{**ENV, **env})

    def json(self, *args):
        out = self.run(*args, "--json")
        assert out.returncode in (0, 1), out.stderr
        return json.loads(out.stdout)

    def status(self) -> dict:
        return {c["name"]: c for c in self.json("status")}

    def kill(self, name: str):
        pid = self.status()[name]["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: self.status()[name]["health"] == "down", f"{name} down")

    def up(self):
        up = self.run("up", "--detach")
        assert up.returncode == 0, up.stderr + _log_tails(self.data_dir)

    def saga_of(self, order: str) -> dict:
        for s in self.json("sagas"):
            if s["order"] == order:
                return s
        return {}

    def audit(self) -> subprocess.CompletedProcess:
        return self.run("audit", "--json")


def wait_for(check, what: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def stack():
    """A fresh stack for one test, wiped afterwards."""
    if not shoplog_bin().exists():
        pytest.skip(f"no shoplog binary at {shoplog_bin()}")
    data_dir = Path(tempfile.mkdtemp(prefix="shoplog-ops-"))
    s = Stack(data_dir)
    s.up()
    yield s
    s.api.close()
    s.run("down", "--wipe", timeout=DOWN_TIMEOUT)


def order_of(api: Api, stock: int = 5, credit: int = 10, qty: int = 2) -> tuple[str, str, str]:
    item = api.create_item(1, stock)
    user = api.create_user(credit)
    order = api.create_order(user)
    api.add_item(order, item, qty)
    return item, user, order


def abandoned_checkout(order: str):
    """Starts a checkout and hangs up after 1 s, leaving the saga to the system."""
    try:
        requests.post(f"http://127.0.0.1:{GATEWAY}/orders/checkout/{order}", timeout=1)
    except requests.RequestException:
        pass


def test_a_stalled_saga_is_aborted_by_the_log_parser_and_compensated_when_stock_is_back(stack):
    item, user, order = order_of(stack.api)
    redriven = metric(8105 + OFFSET, "sagas_redriven_total")
    stack.kill("stock-1")
    abandoned_checkout(order)
    # Nobody reserves: after SAGA_TIMEOUT the log parser aborts; payment confirms at once.
    wait_for(lambda: stack.saga_of(order).get("decision") == "abort", "the log parser's abort")
    saga = stack.saga_of(order)
    assert "log parser" in saga["reason"]
    assert stack.api.order(order)["paid"] is False
    # Stock stays down past REDRIVE_AFTER: the log parser re-appends the abort.
    wait_for(lambda: metric(8105 + OFFSET, "sagas_redriven_total") > redriven, "a re-drive")

    stack.up()  # stock is back: it reserves, sees the abort (twice), releases once, confirms
    wait_for(lambda: stack.saga_of(order).get("done") is True, "the compensation")
    assert stack.api.item(item)["stock"] == 5
    assert stack.api.credit(user) == 10
    ok_json(stack.api.post(f"/orders/checkout/{order}"))  # checkout-able again
    assert (stack.api.item(item)["stock"], stack.api.credit(user)) == (3, 8)
    audit = stack.audit()
    assert audit.returncode == 0, audit.stdout


def test_the_startup_pass_recovers_sagas_interrupted_while_the_log_parser_was_down(stack):
    item, user, order = order_of(stack.api)
    stack.kill("logparser")
    stack.kill("payment-1")
    abandoned_checkout(order)
    stack.kill("order-1")  # the waiting handler dies: only the log parser can end this saga
    time.sleep(3)  # past SAGA_TIMEOUT
    saga = stack.saga_of(order)
    assert saga["decision"] == "none", saga

    # A log parser starts (payment still down, so no commit can race it): its startup pass aborts.
    parser = start_logparser(stack, "logparser-restarted")
    try:
        wait_for(lambda: stack.saga_of(order).get("decision") == "abort", "the startup pass's abort")
        assert "log parser" in stack.saga_of(order)["reason"]
    finally:
        parser.kill()
        parser.wait()
    stack.up()  # payment and order back: payment refunds or refuses, the saga completes
    wait_for(lambda: stack.saga_of(order).get("done") is True, "the compensation")
    assert (stack.api.item(item)["stock"], stack.api.credit(user)) == (5, 10)
    assert stack.api.order(order)["paid"] is False
    audit = stack.audit()
    assert audit.returncode == 0, audit.stdout


EXTRA_PORT = 8105 + OFFSET + 50


def start_logparser(stack, instance: str) -> subprocess.Popen:
    """Starts one more `logparser` process against the stack, on EXTRA_PORT."""
    env = dict(
        os.environ,
        **ENV,
        PORT=str(EXTRA_PORT),
        INSTANCE=instance,
        ORDER_DB_URL=f"redis://127.0.0.1:{6401 + OFFSET}/",
        STOCK_DB_URL=f"redis://127.0.0.1:{6402 + OFFSET}/",
        PAYMENT_DB_URL=f"redis://127.0.0.1:{6403 + OFFSET}/",
        LOCK_URLS=",".join(f"redis://127.0.0.1:{p + OFFSET}/" for p in (6411, 6412, 6413)),
        IDS_URL=f"http://127.0.0.1:{8104 + OFFSET}",
    )
    log = open(stack.data_dir / "logs" / f"{instance}.log", "ab")
    proc = subprocess.Popen([str(shoplog_bin().parent / "logparser")], env=env, stdout=log, stderr=log)
    log.close()
    wait_for(lambda: logparser_status(EXTRA_PORT).get("instance") == instance, f"{instance} to answer")
    return proc


def logparser_status(port: int) -> dict:
    try:
        return requests.get(f"http://127.0.0.1:{port}/logparser/status", timeout=1).json()
    except requests.RequestException:
        return {}


def passes(port: int) -> int:
    return metric(port, "recovery_passes_total")


def test_two_log_parsers_only_one_acts_and_the_standby_takes_over(stack):
    main_port = 8105 + OFFSET
    extra_port = EXTRA_PORT
    extra = start_logparser(stack, "logparser-extra")
    try:
        time.sleep(2)
        a, b = logparser_status(main_port), logparser_status(extra_port)
        assert [a["active"], b["active"]].count(True) == 1, (a, b)
        standby = extra_port if a["active"] else main_port
        before = passes(standby)
        time.sleep(1.5)
        assert passes(standby) == before, "the standby ran recovery passes"

        # Kill the active one; the standby takes over within a few seconds.
        if a["active"]:
            stack.kill("logparser")
        else:
            extra.kill()
        wait_for(lambda: logparser_status(standby).get("active") is True, "the take-over", timeout=10)
        wait_for(lambda: passes(standby) > before, "passes by the new active parser", timeout=10)
    finally:
        extra.kill()
        extra.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_replay_diff_is_empty_after_a_storm_and_a_copy_audits_clean(stack):
    api = stack.api
    items = [api.create_item(1, 30) for _ in range(5)]
    users = [api.create_user(8) for _ in range(20)]
    orders = []
    for i in range(200):
        o = api.create_order(users[i % 20])
        api.add_item(o, items[i % 5], 1 + i % 3)
        orders.append(o)
    from helpers import run_concurrently

    codes = run_concurrently(lambda c, o: c.post(f"/orders/checkout/{o}").status_code, orders,
                             base=f"http://127.0.0.1:{GATEWAY}")
    assert {c // 100 for c in codes} <= {2, 4} and 2 in {c // 100 for c in codes}
    for service in ("order", "stock", "payment"):
        diff = stack.run("replay", service, "--diff")
        assert diff.returncode == 0, diff.stdout[-2000:]

    original = json.loads(stack.audit().stdout)
    servers, urls = [], {}
    tmp = Path(tempfile.mkdtemp(prefix="shoplog-copy-"))
    try:
        for service in ("order", "stock", "payment"):
            port = free_port()
            servers.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            url = f"redis://127.0.0.1:{port}/"
            wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True,
                                            text=True).stdout.strip() == "PONG", "a copy redis")
            into = stack.run("replay", service, "--into", url)
            assert into.returncode == 0, into.stderr
            # The copy has the state but not the log: copy the log too, so the copy is auditable.
            urls[service] = (port, url)
        for service, (port, _) in urls.items():
            src_port = {"order": 6401, "stock": 6402, "payment": 6403}[service] + OFFSET
            p = int(redis_cli(src_port, "GET", "shoplog:partitions"))
            mig = subprocess.run(["redis-cli", "-p", str(src_port), "MIGRATE", "127.0.0.1", str(port),
                                  "", "0", "5000", "COPY", "KEYS", *streams(service, p)],
                                 capture_output=True, text=True)
            assert "OK" in mig.stdout, mig.stdout + mig.stderr
        audit = stack.run("audit", "--json", ORDER_DB_URL=urls["order"][1], STOCK_DB_URL=urls["stock"][1],
                          PAYMENT_DB_URL=urls["payment"][1])
        assert audit.returncode == 0, audit.stdout[-3000:]
        assert json.loads(audit.stdout)["sagas"] == original["sagas"]
    finally:
        for s in servers:
            s.kill()
            s.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def test_bench_drives_checkouts_and_audits(stack):
    out = stack.run("bench", "--orders", "400", "--concurrency", "8", "--population", "50", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["checkouts"] == 400
    assert report["status_2xx"] == 400 and report["status_5xx"] == 0
    assert report["audit_clean"] is True
    assert 0 < report["p50_ms"] <= report["p99_ms"] <= report["max_ms"]
    assert all(stack.api.order(str(i))["paid"] for i in (0, 199, 399))


def test_bench_past_one_batch_init_runs_rounds_of_new_orders(stack):
    """More checkouts than one `batch_init` makes: the orders are populated again each round (the
    paid ones overwritten by open ones), so every checkout starts a saga of its own, and the
    audit accepts orders re-created after their saga committed."""
    before = json.loads(stack.audit().stdout)["sagas"].get("committed", 0)
    out = stack.run("bench", "--orders", "250", "--round", "100", "--concurrency", "8", "--population", "50",
                    "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["checkouts"] == 250 and report["status_2xx"] == 250, report
    assert report["audit_clean"] is True
    after = json.loads(stack.audit().stdout)["sagas"].get("committed", 0)
    assert after - before == 250, (before, after)
    # The last round populated orders 0..49 again and paid them; 50..99 are the second round's.
    assert all(stack.api.order(str(i))["paid"] for i in (0, 49, 50, 99))
    bad = stack.run("bench", "--orders", "10", "--round", "0")
    assert bad.returncode == 2 and "--round" in bad.stderr


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout.strip()


def violations(stack) -> list[dict]:
    out = stack.audit()
    return json.loads(out.stdout)["violations"] if out.returncode == 1 else []


def test_audit_detects_each_kind_of_tampering(stack):
    order_db, stock_db, payment_db = 6401 + OFFSET, 6402 + OFFSET, 6403 + OFFSET
    sp = int(redis_cli(stock_db, "GET", "shoplog:partitions"))
    pp = int(redis_cli(payment_db, "GET", "shoplog:partitions"))
    api = stack.api
    # A committed saga and an aborted one (credit short).
    _, _, paid = order_of(api)
    ok_json(api.post(f"/orders/checkout/{paid}"))
    item, user, refused = order_of(api, credit=1)
    assert api.post(f"/orders/checkout/{refused}").status_code == 400
    aborted = stack.saga_of(refused)["id"]
    assert stack.audit().returncode == 0

    item_key = key("item:", "stock", item, sp)
    # Records of the aborted saga: payment's in the user's partition, stock's in the item's.
    psaga = f"psaga:{tag('payment', partition(user, pp), pp)}:{aborted}"
    ssaga = f"ssaga:{tag('stock', partition(item, sp), sp)}:{aborted}"

    # 1. A stock value edited directly.
    redis_cli(stock_db, "HINCRBY", item_key, "stock", "1")
    found = violations(stack)
    assert [v["entity"] for v in found] == [item_key], found
    redis_cli(stock_db, "HINCRBY", item_key, "stock", "-1")
    assert stack.audit().returncode == 0

    # 2. A charge without a commit: the aborted saga's payment record says charged.
    was = redis_cli(payment_db, "HGET", psaga, "state")
    redis_cli(payment_db, "HSET", psaga, "state", "CHARGED")
    found = violations(stack)
    assert psaga in {v["entity"] for v in found}, found
    assert any(v["invariant"] == "saga atomicity" and v["saga"] == aborted for v in found), found
    redis_cli(payment_db, "HSET", psaga, "state", was)

    # 3. A reservation without a release after an abort.
    was = redis_cli(stock_db, "HGET", ssaga, "state")
    redis_cli(stock_db, "HSET", ssaga, "state", "RESERVED")
    found = violations(stack)
    assert any(v["entity"] == ssaga and v["invariant"] == "saga atomicity" for v in found), found
    redis_cli(stock_db, "HSET", ssaga, "state", was)
    assert stack.audit().returncode == 0

    # 4. A log entry deleted: the item's StockAdded. (XRANGE prints each entry as its id, then
    # field and value lines: log_id, type, item, amount.)
    stream = streams("stock", sp)[partition(item, sp)]
    lines = subprocess.run(["redis-cli", "-p", str(stock_db), "XRANGE", stream, "-", "+"],
                           capture_output=True, text=True).stdout.split("\n")
    ids = [lines[i - 4] for i, v in enumerate(lines) if v == "StockAdded" and lines[i + 2] == item]
    assert len(ids) == 1, "no StockAdded entry for the item"
    assert redis_cli(stock_db, "XDEL", stream, ids[0]) == "1"
    found = violations(stack)
    assert item_key in {v["entity"] for v in found}, found
    assert stack.run("audit").returncode == 1


def test_a_poison_entry_is_dead_lettered_counted_and_reported(stack):
    """The poison entry makes log:order unreplayable (and the audit dirty) on purpose."""
    order_db = 6401 + OFFSET
    op = int(redis_cli(order_db, "GET", "shoplog:partitions"))
    stream = streams("order", op)[partition("nx", op)]  # the partition of its order
    dead_stream = f"dead:stock:{stream}"
    dead_before = int(redis_cli(order_db, "XLEN", dead_stream))
    counted_before = metric(8102 + OFFSET, "dead_letters_total", prefix="stock")
    entry = redis_cli(order_db, "XADD", stream, "*", "log_id", "poison", "type", "CheckoutStarted",
                      "saga", "poison-saga", "order", "nx", "user", "nx", "total", "1", "items", "not json")
    wait_for(lambda: int(redis_cli(order_db, "XLEN", dead_stream)) == dead_before + 1,
             "the dead letter", timeout=30)
    dead = redis_cli(order_db, "XRANGE", dead_stream, "-", "+").split("\n")
    assert entry in dead and "poison-saga" in dead
    assert metric(8102 + OFFSET, "dead_letters_total", prefix="stock") == counted_before + 1
    report = stack.json("recover", "--dry-run")
    groups = {(g["stream"], g["group"]): g for g in report["groups"]}
    # Five groups of the saga, each on every partition of the log it reads.
    assert {(g["log"], g["group"]) for g in report["groups"]} == {
        ("log:order", "stock"), ("log:order", "payment"), ("log:stock", "payment"),
        ("log:stock", "order"), ("log:payment", "order")}
    assert len(groups) == 5 * op
    assert groups[(stream, "stock")]["dead_letters"] == dead_before + 1
    assert groups[(stream, "stock")]["pending"] == 0
