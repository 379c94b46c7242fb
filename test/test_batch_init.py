"""batch_init in all three services.

batch_init writes the entities "0".."n-1", overwriting any with the same ids. This module is the
only one that creates such ids (everything else uses ids the services hand out, and unknown ids
that are not decimal), so its tests may overwrite each other's entities but nobody else's.
"""

import time

from helpers import assert_error, ok_json

N = 100_000
# A product requirement (API.md): batch_init of 100,000 entities answers within a few seconds.
# Checked with room for a shared, loaded machine (it takes ~1-2 s alone, and 7.5 s was seen with
# container builds running beside it): this catches an order-of-magnitude regression, such as a
# round trip per entity, not a speed figure; those come from benchmarks.
LIMIT_SECONDS = 10.0


def timed_post(api, path):
    started = time.monotonic()
    r = api.post(path, timeout=60)
    return r, time.monotonic() - started


def assert_msg(r):
    body = ok_json(r)
    assert isinstance(body.get("msg"), str) and body["msg"], body


def test_stock_batch_init_100k(api):
    r, seconds = timed_post(api, f"/stock/batch_init/{N}/7/13")
    assert_msg(r)
    assert seconds < LIMIT_SECONDS, f"stock batch_init of {N} took {seconds:.2f}s"
    for i in ("0", "1", "4242", "50000", str(N - 1)):
        assert api.item(i) == {"stock": 7, "price": 13}, i
    # They are ordinary items.
    assert ok_json(api.post(f"/stock/subtract/{N - 1}/7")) == {"done": True, "stock": 0}
    assert_error(api.post(f"/stock/subtract/{N - 1}/1"), 400)
    assert ok_json(api.post("/stock/add/0/3")) == {"done": True, "stock": 10}


def test_stock_batch_init_overwrites(api):
    assert_msg(api.post("/stock/batch_init/20/7/13"))
    ok_json(api.post("/stock/add/5/100"))
    ok_json(api.post("/stock/subtract/15/7"))
    assert api.item("5") == {"stock": 107, "price": 13}
    assert_msg(api.post("/stock/batch_init/10/50/60"))
    assert api.item("0") == {"stock": 50, "price": 60}
    assert api.item("5") == {"stock": 50, "price": 60}
    assert api.item("9") == {"stock": 50, "price": 60}
    # Beyond n: untouched.
    assert api.item("10") == {"stock": 7, "price": 13}
    assert api.item("15") == {"stock": 0, "price": 13}


def test_stock_batch_init_zero_stock_and_price(api):
    assert_msg(api.post("/stock/batch_init/3/0/0"))
    assert api.item("2") == {"stock": 0, "price": 0}
    assert_error(api.post("/stock/subtract/2/1"), 400)


def test_payment_batch_init_100k(api):
    r, seconds = timed_post(api, f"/payment/batch_init/{N}/1000")
    assert_msg(r)
    assert seconds < LIMIT_SECONDS, f"payment batch_init of {N} took {seconds:.2f}s"
    for i in ("0", "1", "4242", "50000", str(N - 1)):
        assert ok_json(api.get(f"/payment/find_user/{i}")) == {"user_id": i, "credit": 1000}
    assert ok_json(api.post(f"/payment/pay/{N - 1}/1000")) == {"done": True, "credit": 0}
    assert_error(api.post(f"/payment/pay/{N - 1}/1"), 400)
    assert ok_json(api.post("/payment/add_funds/0/1")) == {"done": True, "credit": 1001}


def test_payment_batch_init_overwrites(api):
    assert_msg(api.post("/payment/batch_init/20/100"))
    ok_json(api.post("/payment/add_funds/5/11"))
    ok_json(api.post("/payment/pay/15/100"))
    assert api.credit("5") == 111
    assert_msg(api.post("/payment/batch_init/10/30"))
    assert api.credit("0") == 30
    assert api.credit("5") == 30
    assert api.credit("9") == 30
    assert api.credit("10") == 100
    assert api.credit("15") == 0


def check_batch_order(order, oid, n_items, n_users, price):
    assert order["order_id"] == oid
    assert order["paid"] is False
    assert order["total_cost"] == 2 * price
    assert isinstance(order["items"], list) and len(order["items"]) == 2, order
    for item, qty in order["items"]:
        assert qty == 1, order
        assert isinstance(item, str) and item == str(int(item)) and 0 <= int(item) < n_items, order
    user = order["user_id"]
    assert isinstance(user, str) and user == str(int(user)) and 0 <= int(user) < n_users, order


def test_orders_batch_init_100k(api):
    n_items, n_users, price = 50, 30, 9
    r, seconds = timed_post(api, f"/orders/batch_init/{N}/{n_items}/{n_users}/{price}")
    assert_msg(r)
    assert seconds < LIMIT_SECONDS, f"orders batch_init of {N} took {seconds:.2f}s"
    sample = [str(i) for i in range(60)] + ["4242", "50000", "77777", str(N - 1)]
    users, items = set(), set()
    for oid in sample:
        order = api.order(oid)
        check_batch_order(order, oid, n_items, n_users, price)
        users.add(order["user_id"])
        items.update(item for item, _ in order["items"])
    # Users and items are chosen at random: 64 orders do not all share one user or one item.
    assert len(users) > 5, users
    assert len(items) > 5, items


def test_orders_batch_init_with_one_item_and_one_user(api):
    assert_msg(api.post("/orders/batch_init/5/1/1/0"))
    for i in range(5):
        assert api.order(str(i)) == {
            "order_id": str(i),
            "paid": False,
            "items": [["0", 1], ["0", 1]],
            "user_id": "0",
            "total_cost": 0,
        }


def test_orders_batch_init_orders_are_open_and_overwritten(api):
    assert_msg(api.post("/orders/batch_init/20/5/5/3"))
    item = api.create_item(100)
    api.add_item("3", item, 2)
    api.add_item("12", item, 1)
    three = api.order("3")
    assert three["total_cost"] == 6 + 200 and len(three["items"]) == 3
    assert three["items"][2] == [item, 2]
    twelve = api.order("12")
    assert twelve["total_cost"] == 6 + 100

    assert_msg(api.post("/orders/batch_init/10/5/5/4"))
    check_batch_order(api.order("3"), "3", 5, 5, 4)
    check_batch_order(api.order("0"), "0", 5, 5, 4)
    # Beyond n: untouched.
    assert api.order("12") == twelve
