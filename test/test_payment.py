"""Payment service: users and their credit."""

from helpers import I64_MAX, assert_error, ok_json, unknown_id


def test_create_user_starts_with_zero_credit(api):
    body = ok_json(api.post("/payment/create_user"))
    assert set(body) == {"user_id"}
    user = body["user_id"]
    assert isinstance(user, str) and 1 <= len(user) <= 64
    assert ok_json(api.get(f"/payment/find_user/{user}")) == {"user_id": user, "credit": 0}


def test_created_users_get_distinct_ids(api):
    ids = [api.create_user() for _ in range(20)]
    assert len(set(ids)) == 20


def test_add_funds_returns_new_credit(api):
    user = api.create_user()
    assert ok_json(api.post(f"/payment/add_funds/{user}/100")) == {"done": True, "credit": 100}
    assert ok_json(api.post(f"/payment/add_funds/{user}/23")) == {"done": True, "credit": 123}
    assert api.credit(user) == 123


def test_pay_returns_new_credit(api):
    user = api.create_user(credit=100)
    assert ok_json(api.post(f"/payment/pay/{user}/30")) == {"done": True, "credit": 70}
    assert api.credit(user) == 70


def test_pay_down_to_exactly_zero(api):
    user = api.create_user(credit=100)
    assert ok_json(api.post(f"/payment/pay/{user}/100")) == {"done": True, "credit": 0}
    assert_error(api.post(f"/payment/pay/{user}/1"), 400)
    assert api.credit(user) == 0


def test_pay_more_than_credit_is_refused_and_changes_nothing(api):
    user = api.create_user(credit=100)
    assert_error(api.post(f"/payment/pay/{user}/101"), 400)
    assert api.credit(user) == 100
    assert_error(api.post(f"/payment/pay/{user}/{I64_MAX}"), 400)
    assert api.credit(user) == 100
    assert ok_json(api.post(f"/payment/pay/{user}/100")) == {"done": True, "credit": 0}


def test_add_funds_up_to_i64_max_then_overflow_is_refused(api):
    user = api.create_user()
    assert ok_json(api.post(f"/payment/add_funds/{user}/{I64_MAX}")) == {"done": True, "credit": I64_MAX}
    assert_error(api.post(f"/payment/add_funds/{user}/1"), 400)
    assert api.credit(user) == I64_MAX
    assert ok_json(api.post(f"/payment/pay/{user}/{I64_MAX}")) == {"done": True, "credit": 0}


def test_add_funds_that_would_overflow_changes_nothing(api):
    user = api.create_user(credit=50)
    assert_error(api.post(f"/payment/add_funds/{user}/{I64_MAX}"), 400)
    assert api.credit(user) == 50


def test_amount_past_i64_and_zero_are_refused(api):
    user = api.create_user(credit=50)
    for amount in ("9223372036854775808", "0"):
        assert_error(api.post(f"/payment/add_funds/{user}/{amount}"), 400)
        assert_error(api.post(f"/payment/pay/{user}/{amount}"), 400)
    assert api.credit(user) == 50


def test_unknown_user(api):
    missing = unknown_id()
    assert_error(api.get(f"/payment/find_user/{missing}"), 404)
    assert_error(api.post(f"/payment/add_funds/{missing}/1"), 404)
    assert_error(api.post(f"/payment/pay/{missing}/1"), 404)
    # Funding an unknown user must not create it.
    assert_error(api.get(f"/payment/find_user/{missing}"), 404)


def test_users_are_independent(api):
    a = api.create_user(credit=10)
    b = api.create_user(credit=20)
    ok_json(api.post(f"/payment/pay/{a}/10"))
    assert api.credit(a) == 0
    assert api.credit(b) == 20
