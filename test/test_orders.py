"""Order service: orders and their items (checkout is tested elsewhere)."""

from helpers import I64_MAX, assert_error, assert_ok, ok_json, unknown_id


def test_create_order_is_empty_and_unpaid(api):
    user = api.create_user()
    body = ok_json(api.post(f"/orders/create/{user}"))
    assert set(body) == {"order_id"}
    order = body["order_id"]
    assert isinstance(order, str) and 1 <= len(order) <= 64
    assert api.order(order) == {
        "order_id": order,
        "paid": False,
        "items": [],
        "user_id": user,
        "total_cost": 0,
    }


def test_orders_get_distinct_ids(api):
    user = api.create_user()
    ids = [api.create_order(user) for _ in range(20)]
    assert len(set(ids)) == 20
    for order in ids[:3]:
        assert api.order(order)["user_id"] == user


def test_add_item_adds_quantity_times_price(api):
    item = api.create_item(7)
    order = api.create_order()
    assert_ok(api.post(f"/orders/addItem/{order}/{item}/3"))
    found = api.order(order)
    assert found["items"] == [[item, 3]]
    assert found["total_cost"] == 21
    assert found["paid"] is False


def test_items_keep_one_line_per_call_in_call_order(api):
    a = api.create_item(7)
    b = api.create_item(100)
    order = api.create_order()
    api.add_item(order, a, 1)
    api.add_item(order, b, 2)
    api.add_item(order, a, 4)
    found = api.order(order)
    assert found["items"] == [[a, 1], [b, 2], [a, 4]]
    assert found["total_cost"] == 7 * 1 + 100 * 2 + 7 * 4


def test_free_item_adds_a_line_but_no_cost(api):
    free = api.create_item(0)
    paid = api.create_item(9)
    order = api.create_order()
    api.add_item(order, free, 5)
    api.add_item(order, paid, 1)
    found = api.order(order)
    assert found["items"] == [[free, 5], [paid, 1]]
    assert found["total_cost"] == 9


def test_add_item_does_not_touch_stock(api):
    item = api.create_item(3, stock=2)
    order = api.create_order()
    api.add_item(order, item, 5)  # more than in stock: stock is only checked at checkout
    assert api.item(item) == {"stock": 2, "price": 3}
    assert api.order(order)["total_cost"] == 15


def test_orders_are_independent(api):
    item = api.create_item(2)
    user = api.create_user()
    o1 = api.create_order(user)
    o2 = api.create_order(user)
    api.add_item(o1, item, 10)
    assert api.order(o1)["total_cost"] == 20
    assert api.order(o2) == {"order_id": o2, "paid": False, "items": [], "user_id": user, "total_cost": 0}


def test_unknown_order(api):
    item = api.create_item(1)
    missing = unknown_id()
    assert_error(api.get(f"/orders/find/{missing}"), 404)
    assert_error(api.post(f"/orders/addItem/{missing}/{item}/1"), 404)
    assert_error(api.get(f"/orders/find/{missing}"), 404)


def test_unknown_item_is_refused_and_changes_nothing(api):
    item = api.create_item(4)
    order = api.create_order()
    api.add_item(order, item, 1)
    before = api.order(order)
    assert_error(api.post(f"/orders/addItem/{order}/{unknown_id()}/1"), 404)
    assert api.order(order) == before


def test_quantity_times_price_overflow_is_refused(api):
    item = api.create_item(2)
    order = api.create_order()
    api.add_item(order, item, 1)
    before = api.order(order)
    assert_error(api.post(f"/orders/addItem/{order}/{item}/{I64_MAX}"), 400)
    assert_error(api.post(f"/orders/addItem/{order}/{item}/{I64_MAX // 2 + 1}"), 400)
    assert api.order(order) == before


def test_total_cost_overflow_is_refused(api):
    dear = api.create_item(I64_MAX - 10)
    cheap = api.create_item(11)
    order = api.create_order()
    api.add_item(order, dear, 1)
    before = api.order(order)
    assert before["total_cost"] == I64_MAX - 10
    assert_error(api.post(f"/orders/addItem/{order}/{cheap}/1"), 400)
    assert api.order(order) == before
    # Exactly up to the limit is fine.
    cheapest = api.create_item(10)
    api.add_item(order, cheapest, 1)
    assert api.order(order)["total_cost"] == I64_MAX


def test_quantity_must_be_positive(api):
    item = api.create_item(2)
    order = api.create_order()
    for qty in ("0", "-1", "9223372036854775808"):
        assert_error(api.post(f"/orders/addItem/{order}/{item}/{qty}"), 400)
    assert api.order(order)["items"] == []
    assert api.order(order)["total_cost"] == 0


def test_large_quantity_of_free_item(api):
    free = api.create_item(0)
    order = api.create_order()
    api.add_item(order, free, I64_MAX)
    assert api.order(order)["items"] == [[free, I64_MAX]]
    assert api.order(order)["total_cost"] == 0
