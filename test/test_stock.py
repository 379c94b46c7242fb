"""Stock service: items, their stock and price."""

from helpers import I64_MAX, assert_error, ok_json, unknown_id


def test_create_item_starts_with_zero_stock(api):
    body = ok_json(api.post("/stock/item/create/42"))
    assert set(body) == {"item_id"}
    item = body["item_id"]
    assert isinstance(item, str) and 1 <= len(item) <= 64
    assert api.item(item) == {"stock": 0, "price": 42}


def test_created_items_get_distinct_ids(api):
    ids = [api.create_item(1) for _ in range(20)]
    assert len(set(ids)) == 20


def test_price_zero_and_max_are_accepted(api):
    assert api.item(api.create_item(0)) == {"stock": 0, "price": 0}
    assert api.item(api.create_item(I64_MAX)) == {"stock": 0, "price": I64_MAX}


def test_add_returns_new_stock(api):
    item = api.create_item(5)
    assert ok_json(api.post(f"/stock/add/{item}/10")) == {"done": True, "stock": 10}
    assert ok_json(api.post(f"/stock/add/{item}/3")) == {"done": True, "stock": 13}
    assert api.item(item) == {"stock": 13, "price": 5}


def test_add_accepts_leading_zeros(api):
    item = api.create_item(5)
    assert ok_json(api.post(f"/stock/add/{item}/007")) == {"done": True, "stock": 7}


def test_subtract_returns_new_stock(api):
    item = api.create_item(5, stock=10)
    assert ok_json(api.post(f"/stock/subtract/{item}/4")) == {"done": True, "stock": 6}
    assert api.item(item) == {"stock": 6, "price": 5}


def test_subtract_down_to_exactly_zero(api):
    item = api.create_item(5, stock=10)
    assert ok_json(api.post(f"/stock/subtract/{item}/10")) == {"done": True, "stock": 0}
    assert api.item(item)["stock"] == 0
    assert_error(api.post(f"/stock/subtract/{item}/1"), 400)
    assert api.item(item)["stock"] == 0


def test_subtract_more_than_stock_is_refused_and_changes_nothing(api):
    item = api.create_item(5, stock=10)
    assert_error(api.post(f"/stock/subtract/{item}/11"), 400)
    assert api.item(item) == {"stock": 10, "price": 5}
    # A refusal is not sticky: a subtraction that fits still works.
    assert ok_json(api.post(f"/stock/subtract/{item}/10")) == {"done": True, "stock": 0}


def test_subtract_max_from_small_stock_is_refused(api):
    item = api.create_item(5, stock=10)
    assert_error(api.post(f"/stock/subtract/{item}/{I64_MAX}"), 400)
    assert api.item(item) == {"stock": 10, "price": 5}


def test_add_up_to_i64_max_then_overflow_is_refused(api):
    item = api.create_item(1)
    assert ok_json(api.post(f"/stock/add/{item}/{I64_MAX}")) == {"done": True, "stock": I64_MAX}
    assert_error(api.post(f"/stock/add/{item}/1"), 400)
    assert api.item(item) == {"stock": I64_MAX, "price": 1}
    assert ok_json(api.post(f"/stock/subtract/{item}/{I64_MAX}")) == {"done": True, "stock": 0}


def test_add_that_would_overflow_changes_nothing(api):
    item = api.create_item(1, stock=50)
    assert_error(api.post(f"/stock/add/{item}/{I64_MAX}"), 400)
    assert api.item(item) == {"stock": 50, "price": 1}


def test_amount_past_i64_is_refused(api):
    item = api.create_item(1, stock=50)
    assert_error(api.post(f"/stock/add/{item}/9223372036854775808"), 400)
    assert_error(api.post(f"/stock/subtract/{item}/9223372036854775808"), 400)
    assert api.item(item) == {"stock": 50, "price": 1}


def test_zero_amount_is_refused(api):
    item = api.create_item(1, stock=50)
    assert_error(api.post(f"/stock/add/{item}/0"), 400)
    assert_error(api.post(f"/stock/subtract/{item}/0"), 400)
    assert api.item(item) == {"stock": 50, "price": 1}


def test_unknown_item(api):
    missing = unknown_id()
    assert_error(api.get(f"/stock/find/{missing}"), 404)
    assert_error(api.post(f"/stock/add/{missing}/1"), 404)
    assert_error(api.post(f"/stock/subtract/{missing}/1"), 404)
    # Adding to an unknown item must not create it.
    assert_error(api.get(f"/stock/find/{missing}"), 404)


def test_items_are_independent(api):
    a = api.create_item(3, stock=5)
    b = api.create_item(4, stock=6)
    ok_json(api.post(f"/stock/subtract/{a}/5"))
    assert api.item(a) == {"stock": 0, "price": 3}
    assert api.item(b) == {"stock": 6, "price": 4}
