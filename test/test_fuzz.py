"""Bad input at scale: thousands of generated hostile requests against every endpoint — huge and
negative numbers, signs, decimals, exponents, unicode digits, percent-encoded unicode, path tricks,
ids of the wrong kind, very long segments — each with at least one hostile path parameter and the
others valid. Every answer must be a 4xx with a JSON error, and the entities the valid parameters
point at must be exactly as before.
"""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import Api, assert_error

I64_MAX = 2**63 - 1

# Strings that are never a valid amount/quantity/count.
bad_numbers = st.one_of(
    st.integers(max_value=-1).map(str),
    st.integers(min_value=I64_MAX + 1, max_value=10**40).map(str),
    st.just("0"),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=1, max_value=1000).map(lambda n: f"+{n}"),
    st.integers(min_value=1, max_value=1000).map(lambda n: f"{n}e3"),
    st.integers(min_value=1, max_value=1000).map(lambda n: f"0x{n:x}"),
    st.sampled_from(["", " 5", "5 ", "١٢", "５", "1_000", "--1", "NaN", "null", "true", "[1]", "1,5"]),
    # Free text, but never a plain positive decimal (that would be a valid amount).
    st.text(min_size=1, max_size=30).filter(lambda s: not (s.isascii() and s.isdigit() and s.strip("0"))),
)

# Strings that are never the id of an existing entity.
bad_ids = st.one_of(
    st.uuids().map(lambda u: "nx" + u.hex),
    st.sampled_from(["..", ".", "%2e%2e", "%2F", "..%2F..", "%00", "*", "'; DROP", "$(id)", "<script>",
                     "order:1", "item:*", "%252e"]),
    # Free text, but never all digits: "0".."n-1" are the ids batch_init creates.
    st.text(min_size=1, max_size=40).filter(lambda s: not s.isdigit()),
    st.text(alphabet="abcXYZ019-_", min_size=65, max_size=3000),
)


def encode(value: str) -> str:
    """Percent-encodes what is not a safe path character; keeps `%`-escapes and dots as written."""
    return urllib.parse.quote(value, safe="%.-_~")


@pytest.fixture(scope="module")
def sentinel():
    api = Api()
    item = api.create_item(3, 10)
    user = api.create_user(10)
    order = api.create_order(user)
    api.add_item(order, item, 1)
    yield api, item, user, order
    api.close()


def snapshot(api, item, user, order):
    return api.item(item), api.credit(user), api.order(order)


# (method, path template); {id:kind} and {num} slots.
TEMPLATES = [
    ("GET", "/stock/find/{item}"),
    ("POST", "/stock/add/{item}/{num}"),
    ("POST", "/stock/subtract/{item}/{num}"),
    ("POST", "/stock/item/create/{num}"),
    ("POST", "/stock/batch_init/{num}/{num}/{num}"),
    ("GET", "/payment/find_user/{user}"),
    ("POST", "/payment/add_funds/{user}/{num}"),
    ("POST", "/payment/pay/{user}/{num}"),
    ("POST", "/payment/batch_init/{num}/{num}"),
    ("GET", "/orders/find/{order}"),
    ("POST", "/orders/addItem/{order}/{item}/{num}"),
    ("POST", "/orders/checkout/{order}"),
    ("POST", "/orders/batch_init/{num}/{num}/{num}/{num}"),
    ("POST", "/ids/batch/{num}"),
]


@st.composite
def hostile_request(draw):
    method, template = draw(st.sampled_from(TEMPLATES))
    parts = template.split("/")
    slots = [i for i, p in enumerate(parts) if p.startswith("{")]
    hostile = set(draw(st.sets(st.sampled_from(slots), min_size=1)))
    values = {}
    for i in slots:
        kind = parts[i][1:-1]
        if i in hostile:
            v = draw(bad_numbers if kind == "num" else bad_ids)
            if kind == "num" and v == "0" and template.startswith("/stock/item/create"):
                v = "-0"  # price 0 is valid
            if kind == "num" and template.startswith("/stock/batch_init") and i > 3 and v == "0":
                v = "-1"  # a starting stock or price of 0 is valid
            if kind == "num" and template.startswith("/payment/batch_init") and i == 4 and v == "0":
                v = "-1"
            if kind == "num" and template.startswith("/orders/batch_init") and i == 6 and v == "0":
                v = "-1"
            values[i] = encode(v)
        else:
            values[i] = kind  # filled with a valid value by the test
    return method, parts, values


# Derandomized: the same 1,500 cases every run, so CI cannot pass or fail by luck; change the
# strategies (or run with --hypothesis-seed) to explore further.
@settings(max_examples=1500, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(req=hostile_request())
def test_hostile_requests_get_a_4xx_and_change_nothing(sentinel, req):
    api, item, user, order = sentinel
    method, parts, values = req
    valid = {"item": item, "user": user, "order": order, "num": "1"}
    path = "/".join(valid[values[i]] if values.get(i) in valid else values.get(i, p) for i, p in enumerate(parts))
    resp = api.raw(method, path)
    assert_error(resp, range(400, 500))


def test_nothing_changed_after_the_fuzzing(sentinel):
    api, item, user, order = sentinel
    assert snapshot(api, item, user, order) == (
        {"stock": 10, "price": 3},
        10,
        {"order_id": order, "paid": False, "items": [[item, 1]], "user_id": user, "total_cost": 3},
    )
