"""Stock partitions under faults: a checkout whose items live in two stock partitions, with the stock
service killed (SIGKILL) between the two partitions' reservations; and a restart with another
number of partitions, refused.

The stock service pauses between partitions only because `SHOPLOG_TEST_PAUSE_BETWEEN_PARTITIONS_MS`
is set (a test-only variable: nothing else reads it), which gives the test a moment to kill it
there.
"""

from __future__ import annotations

import subprocess
import threading
import time

import pytest
import requests

from conftest import shoplog_bin
from harness import FaultStack, Storm, settle_and_verify, wait_for
from helpers import Api, key, partition, tag

OFFSET, GATEWAY = 4000, 9400
PAUSE_MS = 2000


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def stack():
    s = FaultStack(offset=OFFSET, gateway=GATEWAY)
    s.env["SHOPLOG_TEST_PAUSE_BETWEEN_PARTITIONS_MS"] = str(PAUSE_MS)
    s.up()
    yield s
    s.down()


def two_partition_order(api: Api, p: int) -> tuple[str, str, str, str]:
    """Items a and b (stock 5 each, price 1) in two different stock partitions, a user with 100,
    and an order of one of each."""
    a = api.create_item(1, 5)
    b = api.create_item(1, 5)
    while partition(b, p) == partition(a, p):
        b = api.create_item(1, 5)
    user = api.create_user(100)
    order = api.create_order(user)
    api.add_item(order, a, 1)
    api.add_item(order, b, 1)
    return a, b, user, order


def test_a_crash_between_two_partitions_reservations_is_finished_and_compensated(stack):
    order_db, stock_db = 6401 + OFFSET, 6402 + OFFSET
    op = int(redis_cli(order_db, "GET", "shoplog:partitions"))
    sp = int(redis_cli(stock_db, "GET", "shoplog:partitions"))
    api = Api(stack.base)
    a, b, user, order = two_partition_order(api, sp)
    first = min(partition(a, sp), partition(b, sp))

    answer = {}

    def checkout():
        try:
            answer["status"] = requests.post(f"{stack.base}/orders/checkout/{order}", timeout=60).status_code
        except requests.RequestException as e:
            answer["error"] = str(e)

    t = threading.Thread(target=checkout)
    t.start()
    # The saga id, once admitted; then the first partition's reservation, made before the pause.
    wait_for(lambda: redis_cli(order_db, "HGET", key("order:", "order", order, op), "saga") != "",
             "the checkout's admission")
    saga = redis_cli(order_db, "HGET", key("order:", "order", order, op), "saga")
    record = f"ssaga:{tag('stock', first, sp)}:{saga}"
    wait_for(lambda: redis_cli(stock_db, "HGET", record, "state") == "RESERVED",
             "the first partition's reservation", timeout=20, every=0.05)
    # Killed in its pause: the second partition is not reserved yet.
    stack.kill("stock-1")
    other = f"ssaga:{tag('stock', max(partition(a, sp), partition(b, sp)), sp)}:{saga}"
    assert redis_cli(stock_db, "HGET", other, "state") == ""
    time.sleep(1)
    stack.up()  # restarts stock-1; its pending CheckoutStarted is delivered again
    t.join(timeout=90)
    assert "status" in answer, answer

    def done() -> bool:
        out = stack.run("saga", saga, "--json")
        return out.returncode == 0 and '"done": true' in out.stdout
    wait_for(done, "the saga to finish", timeout=90, every=0.5)
    audit = stack.run("audit", "--json")
    assert audit.returncode == 0, audit.stdout[-3000:]
    paid = api.order(order)["paid"]
    stock = (api.item(a)["stock"], api.item(b)["stock"])
    credit = api.credit(user)
    # The answer is the truth, and either way nothing is held twice or left held.
    if answer["status"] == 200:
        assert (paid, stock, credit) == (True, (4, 4), 98)
    else:
        assert 400 <= answer["status"] < 500, answer
        assert (paid, stock, credit) == (False, (5, 5), 100)
    # Both partitions logged their part of the saga.
    kinds = stack.run("saga", saga).stdout
    assert "StockPartReserved" in kinds, kinds


def test_a_multi_item_storm_over_every_stock_partition_reconciles_exactly(stack):
    """Orders of two random items among items "0".."49", which cover every stock partition: most
    checkouts reserve in two partitions. Every check of the harness holds (exact reconciliation
    of every item and user, answers true, audit clean); the pause between partitions (above)
    makes each such reservation slower, so the storm is smaller."""
    sp = int(redis_cli(6402 + OFFSET, "GET", "shoplog:partitions"))
    storm = Storm(stack, n_orders=300, n_items=50, stock=10, n_users=100, credit=4, workers=32, seed=3)
    assert {partition(str(i), sp) for i in range(storm.n_items)} == set(range(sp))
    stack.env.pop("SHOPLOG_TEST_PAUSE_BETWEEN_PARTITIONS_MS")
    stack.kill("stock-1")
    stack.up()  # stock without the pause
    result = storm.run("multi-item storm over every stock partition", [])
    settle_and_verify(stack, storm, result)
    assert result.counts()["2xx"] > 0 and result.counts()["4xx"] > 0, result.counts()


def test_a_restart_with_another_number_of_partitions_is_refused(stack):
    stock_db = 6402 + OFFSET
    stored = redis_cli(stock_db, "GET", "shoplog:partitions")
    stack.kill("stock-1")
    env = dict(stack.env, STOCK_PARTITIONS=str(int(stored) * 2))
    up = subprocess.run([str(shoplog_bin()), "up", "--detach", "--timeout", "10"], env=env,
                        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert up.returncode == 1, up.stdout + up.stderr
    log = (stack.data_dir / "logs" / "stock-1.log").read_text()
    assert f"stock-db was initialised with {stored} partitions" in log, log[-2000:]
    assert f"STOCK_PARTITIONS={stored}" in log, log[-2000:]
    # Started again with the stored number (the stack's own environment): healthy.
    stack.up()
    assert redis_cli(stock_db, "GET", "shoplog:partitions") == stored
