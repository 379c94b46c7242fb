"""Hostile input on every endpoint: always a 4xx with {"error": ...}, never a 5xx, and no change.

Every request is sent byte for byte (no client-side normalisation). After each one, a set of
sentinel entities (an item, a user, an order holding that item) must read back exactly as before,
and the entities "0" that a wrongly accepted batch_init would write must not carry the sentinel
values used in these requests.

Paths with dot segments (`..`, `%2e%2e`) are built so that they are refused whether or not a
gateway resolves them: resolved or not, they name no route.
"""

import json
import urllib.parse

import pytest

from helpers import assert_error, base_for, unknown_id
from hostile import MAX_BODY, HttpCase, RawClient, RawConnection, behind_gateway

# Values a wrongly accepted batch_init in this module would write into entity "0".
SENTINEL_STOCK = 424242
SENTINEL_PRICE = 434343

# Not a non-negative integer (digits only, within i64). (name, value as sent in the path)
NOT_NUMBERS = [
    ("word", "abc"),
    ("negative", "-1"),
    ("negative_zero", "-0"),
    ("plus_sign", "+1"),
    ("encoded_minus", "%2D1"),
    ("encoded_plus", "%2B1"),
    ("decimal", "1.5"),
    ("decimal_zero", "1.0"),
    ("exponent", "1e3"),
    ("hex", "0x10"),
    ("underscore", "1_000"),
    ("comma", "1,000"),
    ("leading_space", "%201"),
    ("trailing_space", "1%20"),
    ("tab", "1%09"),
    ("newline", "1%0A"),
    ("semicolon", "1;2"),
    ("encoded_slash", "1%2F2"),
    ("dotdot_encoded", "%2e%2e"),
    ("i64_max_plus_1", "9223372036854775808"),
    ("u64_max", "18446744073709551615"),
    ("huge_number", "9" * 3000),
    ("huge_string", "a" * 3000),
    ("nan", "NaN"),
    ("infinity", "inf"),
    ("fullwidth_digit", "%EF%BC%95"),
    ("arabic_indic_digit", "%D9%A5"),
    ("superscript_two", "%C2%B2"),
    ("emoji", "%F0%9F%92%B0"),
    ("invalid_utf8", "%FF%FE"),
]
# Also refused where a positive number is required.
ZEROS = [("zero", "0"), ("zeros", "000")]

# Ids that name no entity: malformed, or well-formed but unknown. `{self}` is the real entity of
# that slot, to check that a decorated real id does not reach it.
BAD_IDS = [
    ("unknown", "@unknown"),
    ("negative_number", "-1"),
    ("dotdot_encoded", "%2e%2e"),
    ("dotdot_mixed", ".%2E"),
    ("encoded_slash", "a%2Fb"),
    ("space", "a%20b"),
    ("accented", "%C3%A9"),
    ("cjk", "%E5%95%86%E5%93%81"),
    ("emoji", "%F0%9F%98%80"),
    ("invalid_utf8", "%FF%FE"),
    ("newline", "a%0Ab"),
    ("crlf_injection", "a%0D%0AX-Injected:%201"),
    ("backslash", "a%5Cb"),
    ("redis_key", "item:0"),
    ("glob", "*"),
    ("sql", "%27%20OR%201%3D1--"),
    ("percent", "%25"),
    ("encoded_question_mark", "a%3Fb"),
    ("encoded_hash", "a%23b"),
    ("id_65_chars", "x" * 65),
    ("id_3000_chars", "x" * 3000),
    ("self_space", "{self}%20"),
    ("self_encoded_slash", "{self}%2F"),
    ("self_encoded_dotdot", "{self}%2F%2e%2e"),
    ("self_suffix", "{self}x"),
    ("self_prefix", "x{self}"),
]

# Paths with a slot `{}` for the hostile value: (endpoint name, method, template, slot kind,
# expected status). Slot kinds: "positive", "non_negative", "id:<entity>", "new_id".
SLOTS = [
    ("stock_create_price", "POST", "/stock/item/create/{}", "non_negative", 400),
    ("stock_find_id", "GET", "/stock/find/{}", "id:item", 404),
    ("stock_add_id", "POST", "/stock/add/{}/5", "id:item", 404),
    ("stock_add_amount", "POST", "/stock/add/{item}/{}", "positive", 400),
    ("stock_subtract_id", "POST", "/stock/subtract/{}/5", "id:item", 404),
    ("stock_subtract_amount", "POST", "/stock/subtract/{item}/{}", "positive", 400),
    ("stock_batch_n", "POST", "/stock/batch_init/{}/%d/%d" % (SENTINEL_STOCK, SENTINEL_PRICE), "positive", 400),
    ("stock_batch_stock", "POST", "/stock/batch_init/1/{}/%d" % SENTINEL_PRICE, "non_negative", 400),
    ("stock_batch_price", "POST", "/stock/batch_init/1/%d/{}" % SENTINEL_STOCK, "non_negative", 400),
    ("payment_find_id", "GET", "/payment/find_user/{}", "id:user", 404),
    ("payment_add_funds_id", "POST", "/payment/add_funds/{}/5", "id:user", 404),
    ("payment_add_funds_amount", "POST", "/payment/add_funds/{user}/{}", "positive", 400),
    ("payment_pay_id", "POST", "/payment/pay/{}/5", "id:user", 404),
    ("payment_pay_amount", "POST", "/payment/pay/{user}/{}", "positive", 400),
    ("payment_batch_n", "POST", "/payment/batch_init/{}/%d" % SENTINEL_STOCK, "positive", 400),
    ("payment_batch_money", "POST", "/payment/batch_init/1/{}", "non_negative", 400),
    ("orders_create_user", "POST", "/orders/create/{}", "new_id", 400),
    ("orders_find_id", "GET", "/orders/find/{}", "id:order", 404),
    ("orders_add_item_order", "POST", "/orders/addItem/{}/{item}/1", "id:order", 404),
    ("orders_add_item_item", "POST", "/orders/addItem/{order}/{}/1", "id:item", 404),
    ("orders_add_item_quantity", "POST", "/orders/addItem/{order}/{item}/{}", "positive", 400),
    ("orders_batch_n", "POST", "/orders/batch_init/{}/1/1/%d" % SENTINEL_PRICE, "positive", 400),
    ("orders_batch_n_items", "POST", "/orders/batch_init/1/{}/1/%d" % SENTINEL_PRICE, "positive", 400),
    ("orders_batch_n_users", "POST", "/orders/batch_init/1/1/{}/%d" % SENTINEL_PRICE, "positive", 400),
    ("orders_batch_price", "POST", "/orders/batch_init/1/1/1/{}", "non_negative", 400),
    ("ids_batch_n", "POST", "/ids/batch/{}", "positive", 400),
]


def _cases():
    for name, method, template, kind, status in SLOTS:
        if kind in ("positive", "non_negative"):
            values = NOT_NUMBERS + (ZEROS if kind == "positive" else [])
        elif kind == "new_id":
            # Malformed user ids only: the contract does not say whether an order may be created
            # for a well-formed id of a user that does not exist.
            values = [(v, x) for v, x in BAD_IDS if v not in ("unknown", "negative_number") and "{self}" not in x]
        else:
            values = BAD_IDS
        for vname, value in values:
            expected = status
            if not kind.startswith("id:") and _is_path_trick(value):
                # Sent as is, the segment is a bad value (400); resolved by a gateway, it changes
                # the number of segments and names no route (404). Both are refusals.
                expected = (400, 404)
            yield pytest.param(method, template, kind, value, expected, id=f"{name}-{vname}")


def _is_path_trick(value: str) -> bool:
    v = value.lower()
    return "%2f" in v or "%2e" in v or value in (".", "..")


# Limits, refused although they are well-formed numbers.
LIMITS = [
    ("stock_batch_n_too_big", "POST", "/stock/batch_init/1000001/%d/%d" % (SENTINEL_STOCK, SENTINEL_PRICE)),
    ("payment_batch_n_too_big", "POST", "/payment/batch_init/1000001/%d" % SENTINEL_STOCK),
    ("orders_batch_n_too_big", "POST", "/orders/batch_init/1000001/1/1/%d" % SENTINEL_PRICE),
    ("orders_batch_price_overflows_total", "POST", "/orders/batch_init/1/1/1/9223372036854775807"),
    ("orders_batch_price_half_max_plus_1", "POST", "/orders/batch_init/1/1/1/4611686018427387904"),
    ("ids_batch_too_big", "POST", "/ids/batch/100001"),
]

# Extra and missing segments, and dot segments around otherwise valid requests.
SHAPES = [
    ("stock_find_extra", "GET", "/stock/find/{item}/x"),
    ("stock_find_extra_dotdot", "GET", "/stock/find/{item}/.."),
    ("stock_create_extra", "POST", "/stock/item/create/5/x"),
    ("stock_add_extra", "POST", "/stock/add/{item}/5/x"),
    ("stock_add_extra_number", "POST", "/stock/add/{item}/5/5"),
    ("stock_add_missing_amount", "POST", "/stock/add/{item}"),
    ("stock_add_dotdot_before_amount", "POST", "/stock/add/{item}/../5"),
    ("stock_add_encoded_dotdot_before_amount", "POST", "/stock/add/{item}/%2e%2e/5"),
    ("stock_add_dotdot_before_id", "POST", "/stock/add/../{item}/5"),
    ("stock_subtract_extra", "POST", "/stock/subtract/{item}/5/x"),
    ("stock_subtract_missing_amount", "POST", "/stock/subtract/{item}"),
    ("stock_subtract_dotdot", "POST", "/stock/subtract/{item}/%2e%2e/5"),
    ("stock_batch_extra", "POST", "/stock/batch_init/1/%d/%d/x" % (SENTINEL_STOCK, SENTINEL_PRICE)),
    ("stock_batch_missing", "POST", "/stock/batch_init/1/%d" % SENTINEL_STOCK),
    ("payment_create_extra", "POST", "/payment/create_user/x"),
    ("payment_find_extra", "GET", "/payment/find_user/{user}/x"),
    ("payment_add_funds_extra", "POST", "/payment/add_funds/{user}/5/x"),
    ("payment_add_funds_missing", "POST", "/payment/add_funds/{user}"),
    ("payment_add_funds_dotdot", "POST", "/payment/add_funds/{user}/../5"),
    ("payment_pay_extra", "POST", "/payment/pay/{user}/5/x"),
    ("payment_pay_missing", "POST", "/payment/pay/{user}"),
    ("payment_pay_encoded_dotdot", "POST", "/payment/pay/{user}/%2e%2e/5"),
    ("payment_batch_extra", "POST", "/payment/batch_init/1/%d/x" % SENTINEL_STOCK),
    ("orders_create_extra", "POST", "/orders/create/{user}/x"),
    ("orders_create_missing", "POST", "/orders/create"),
    ("orders_find_extra", "GET", "/orders/find/{order}/x"),
    ("orders_add_item_extra", "POST", "/orders/addItem/{order}/{item}/1/x"),
    ("orders_add_item_missing_quantity", "POST", "/orders/addItem/{order}/{item}"),
    ("orders_add_item_dotdot", "POST", "/orders/addItem/{order}/{item}/../1"),
    ("orders_add_item_encoded_dotdot", "POST", "/orders/addItem/{order}/%2e%2e/{item}/1"),
    ("orders_batch_extra", "POST", "/orders/batch_init/1/1/1/%d/x" % SENTINEL_PRICE),
    ("ids_batch_extra", "POST", "/ids/batch/5/x"),
    ("ids_batch_dotdot", "POST", "/ids/batch/%2e%2e/5"),
]


@pytest.fixture(scope="module")
def entities(api):
    item = api.create_item(7, stock=50)
    user = api.create_user(credit=50)
    order = api.create_order(user)
    api.add_item(order, item, 2)
    return {"item": item, "user": user, "order": order}


def _expected_snapshot(e):
    return (
        {"stock": 50, "price": 7},
        50,
        {"order_id": e["order"], "paid": False, "items": [[e["item"], 2]], "user_id": e["user"], "total_cost": 14},
    )


def check_nothing_changed(api, e, batch=True):
    assert (api.item(e["item"]), api.credit(e["user"]), api.order(e["order"])) == _expected_snapshot(e)
    if not batch:
        return
    # No batch_init of this module was applied.
    r = api.get("/stock/find/0")
    if r.status_code == 200:
        assert r.json()["stock"] != SENTINEL_STOCK and r.json()["price"] != SENTINEL_PRICE, r.json()
    r = api.get("/payment/find_user/0")
    if r.status_code == 200:
        assert r.json()["credit"] != SENTINEL_STOCK, r.json()
    r = api.get("/orders/find/0")
    if r.status_code == 200:
        assert r.json()["total_cost"] != 2 * SENTINEL_PRICE, r.json()


def test_sentinels_are_as_created(api, entities):
    check_nothing_changed(api, entities)


def _fill(template: str, entities: dict, value: str) -> str:
    return template.replace("{}", "\0").format(**entities).replace("\0", value)


@pytest.mark.parametrize("method,template,kind,value,status", list(_cases()))
def test_hostile_value(api, entities, method, template, kind, value, status):
    if kind.startswith("id:"):
        value = value.replace("{self}", entities[kind[3:]])
    if value == "@unknown":
        value = unknown_id()
    path = _fill(template, entities, value)
    assert_error(api.raw(method, path), status)
    check_nothing_changed(api, entities, batch=("batch_init" in path))


def test_nul_byte_in_any_slot(api, entities):
    """A NUL byte (%00) in a path: alone, after a number, after a real id, in every slot.

    One test for all slots, as one cause (a gateway refusing the request line) fails them all.
    Refusing the malformed request itself (400) is fine in an id slot too; the body must be JSON.
    """
    failures = []
    for name, method, template, kind, status in SLOTS:
        if kind.startswith("id:"):
            values = ["%00", entities[kind[3:]] + "%00"]
            allowed = (400, 404)
        elif kind == "new_id":
            values, allowed = ["%00", "a%00"], (400, 404)
        else:
            values, allowed = ["%00", "1%00"], status
        for value in values:
            resp = api.raw(method, _fill(template, entities, value))
            try:
                assert_error(resp, allowed)
            except AssertionError as e:
                failures.append(f"{name}: {e}".splitlines()[0])
    check_nothing_changed(api, entities)
    assert not failures, f"{len(failures)} requests answered wrongly:\n" + "\n".join(failures)


@pytest.mark.parametrize("method,path", [pytest.param(m, p, id=n) for n, m, p in LIMITS])
def test_limit(api, entities, method, path):
    assert_error(api.raw(method, path), 400)
    check_nothing_changed(api, entities)


@pytest.mark.parametrize("method,path", [pytest.param(m, p, id=n) for n, m, p in SHAPES])
def test_wrong_shape_is_404(api, entities, method, path):
    assert_error(api.raw(method, path.format(**entities)), 404)
    check_nothing_changed(api, entities)


# --- Bodies, methods, headers and framing (issue 13: no 5xx from hostile input, ever) -----------
#
# No endpoint takes a body. One of at most MAX_BODY bytes is read and ignored (a valid request
# carrying one answers as without it); a larger one is refused with a JSON 413 before the request
# is handled, by the gateway and by each service alike. The cases marked "gateway" are refusals
# only the gateway turns into JSON: sent straight to a service, its HTTP parser (hyper) refuses
# them itself, with an empty 400 or 431 (still a 4xx), so they are skipped there.

# Valid requests that would change something: (name, method, template).
CHANGES = [
    ("stock_add", "POST", "/stock/add/{item}/1"),
    ("stock_subtract", "POST", "/stock/subtract/{item}/1"),
    ("stock_create", "POST", "/stock/item/create/1"),
    ("stock_batch", "POST", "/stock/batch_init/1/%d/%d" % (SENTINEL_STOCK, SENTINEL_PRICE)),
    ("payment_add_funds", "POST", "/payment/add_funds/{user}/1"),
    ("payment_pay", "POST", "/payment/pay/{user}/1"),
    ("payment_batch", "POST", "/payment/batch_init/1/%d" % SENTINEL_STOCK),
    ("orders_add_item", "POST", "/orders/addItem/{order}/{item}/1"),
    ("orders_checkout", "POST", "/orders/checkout/{order}"),
    ("orders_batch", "POST", "/orders/batch_init/1/1/1/%d" % SENTINEL_PRICE),
    ("ids_batch", "POST", "/ids/batch/1"),
]


def _raw(method, path, headers=(), body=b"", framing="length", expect=False, declared=None):
    """The answer to one request sent byte for byte on a new connection (None: closed without)."""
    case = HttpCase("hostile", method, path.split("/"), {}, body, framing,
                    len(body) if declared is None else declared, list(headers), 4096, expect)
    client = RawClient()
    try:
        return client.send(case, path)
    finally:
        client.close()


def _connection(path) -> RawConnection:
    base = urllib.parse.urlsplit(base_for(path))
    return RawConnection(base.hostname, base.port or 80)


def _gateway_only(path):
    if not behind_gateway(base_for(path)):
        pytest.skip("only the gateway answers this with JSON (the services' parser refuses it empty)")


def _assert_json_error(answer, status, method="GET"):
    assert answer is not None, "the connection closed without an answer"
    assert answer.status == status, answer.describe()
    assert "application/json" in answer.headers.get("content-type", ""), answer.describe()
    if method != "HEAD":
        body = json.loads(answer.body)
        assert isinstance(body.get("error"), str) and body["error"].strip(), answer.describe()


@pytest.mark.parametrize("framing", ["length", "chunked", "expect"])
@pytest.mark.parametrize("method,template", [pytest.param(m, t, id=n) for n, m, t in CHANGES])
def test_a_body_over_the_limit_is_a_413_and_changes_nothing(api, entities, method, template, framing):
    path = template.format(**entities)
    body = b'{"amount": 1}' + b" " * MAX_BODY
    answer = _raw(method, path, body=body, framing="chunked" if framing == "chunked" else "length",
                  expect=framing == "expect", headers=[("Expect", "100-continue")] if framing == "expect" else [])
    _assert_json_error(answer, 413)
    check_nothing_changed(api, entities)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
@pytest.mark.parametrize("size", [1, MAX_BODY, MAX_BODY + 1, 100_000, 200_000])
def test_any_method_with_any_body_on_any_route_is_a_4xx(api, entities, method, size):
    """A read with the wrong method, an unknown id, a known path with a write's method but a bad
    amount: all refused, whatever the body, and nothing changes."""
    for template in ["/stock/find/{item}", "/stock/add/{item}/-1", "/payment/find_user/nx",
                     "/orders/checkout/nx", "/ids/batch/0", "/nope"]:
        path = template.format(**entities)
        answer = _raw(method, path, body=b"x" * size)
        assert answer is not None and answer.status < 500, f"{method} {path}: {answer and answer.describe()}"
        if method == "GET" and path.startswith("/stock/find/") and size <= MAX_BODY:
            assert answer.status == 200 and json.loads(answer.body) == {"stock": 50, "price": 7}, answer.describe()
        else:
            _assert_json_error(answer, 413 if size > MAX_BODY else answer.status, method)
            assert 400 <= answer.status < 500, answer.describe()
    check_nothing_changed(api, entities)


def test_a_body_under_the_limit_is_ignored(api):
    """A valid request carrying a body (an empty JSON object, a form, 16 KiB of anything) answers
    as it would without one: the body is read and thrown away."""
    item = api.create_item(2, stock=5)
    for body, framing in [(b"{}", "length"), (b"a=1&b=2", "chunked"), (b"x" * MAX_BODY, "length"),
                          (b"x" * MAX_BODY, "chunked")]:
        answer = _raw("POST", f"/stock/add/{item}/1", [("Content-Type", "application/json")], body, framing)
        assert answer is not None and answer.status == 200, answer and answer.describe()
        answer = _raw("GET", f"/stock/find/{item}", body=body, framing=framing)
        assert answer is not None and answer.status == 200, answer and answer.describe()
    assert api.item(item) == {"stock": 9, "price": 2}


def test_the_connection_stays_usable_after_a_body(api, entities):
    """A body read to its end leaves the connection clean: the next request on it is answered
    (a body left unread made the service close the connection, and the gateway answer 503)."""
    client = RawClient()
    path = f"/stock/find/{entities['item']}"
    conns = set()
    try:
        for body in [b"x" * 100, b"x" * MAX_BODY, b"", b"x" * MAX_BODY, b"x"]:
            case = HttpCase("read", "GET", path.split("/"), {}, body, "length", len(body), [])
            answer = client.send(case, path)
            assert answer is not None and answer.status == 200, answer and answer.describe()
            assert "close" not in answer.headers.get("connection", ""), answer.describe()
            conns.update(id(c) for c in client.local.conns.values())
    finally:
        client.close()
    assert len(conns) == 1, "a new connection was needed"


def test_a_body_that_breaks_off_changes_nothing(api, entities):
    """More body announced than sent, then the client's side shut: no answer (the gateway drops a
    request whose client broke the framing) or a 400, and nothing changes."""
    for template in ["/stock/add/{item}/1", "/payment/add_funds/{user}/1", "/orders/addItem/{order}/{item}/1"]:
        answer = _raw("POST", template.format(**entities), body=b"x" * 100, framing="long", declared=1000)
        if answer is not None:
            _assert_json_error(answer, 400)
    check_nothing_changed(api, entities)


# (name, headers, expected status): odd headers only the gateway answers with JSON.
GATEWAY_REFUSALS = [
    ("header_line_over_8k", [("X-Huge", "h" * 9000)], 400),
    ("headers_over_32k", [(f"X-H{i}", "v" * 100) for i in range(400)], 400),
    ("unknown_transfer_coding", [("Transfer-Encoding", "gzip")], 400),
    ("chunked_and_gzip", [("Transfer-Encoding", "gzip, chunked")], 400),
    ("duplicate_content_length", [("Content-Length", "0")], 400),
    ("bad_host", [("Host", "a b")], 400),
]


@pytest.mark.parametrize("headers,status", [pytest.param(h, s, id=n) for n, h, s in GATEWAY_REFUSALS])
def test_odd_headers_are_a_json_4xx_at_the_gateway(api, entities, headers, status):
    path = f"/stock/add/{entities['item']}/1"
    _gateway_only(path)
    _assert_json_error(_raw("POST", path, headers), status)
    check_nothing_changed(api, entities)


def test_many_small_headers_do_not_reach_the_services(api, entities):
    """Hundreds of headers within nginx's limits: the gateway passes on only the headers the
    services read, so the request is answered as without them (hyper alone refuses more than 100
    with an empty 431)."""
    path = f"/stock/find/{entities['item']}"
    _gateway_only(path)
    answer = _raw("GET", path, [(f"X-H{i}", "v") for i in range(300)])
    assert answer is not None and answer.status == 200, answer and answer.describe()


@pytest.mark.parametrize("request_line", [
    pytest.param(b"TRACE /stock/find/x HTTP/1.1", id="trace"),
    pytest.param(b"CONNECT /stock/find/x HTTP/1.1", id="connect"),
    pytest.param(b"GET /stock/find/x HTTP/2.0", id="http2_on_http1"),
    pytest.param(b"GET /stock/find/x HTTP/9.9", id="made_up_version"),
    pytest.param(b"GET /stock/find/a<b> HTTP/1.1", id="angle_brackets"),
    pytest.param(b"GET /stock/find/a`b HTTP/1.1", id="backquote"),
    pytest.param(b"GET /stock/find/x?q=\" HTTP/1.1", id="quote_in_query"),
    pytest.param(b"GET /stock/find/\xff\xfe HTTP/1.1", id="not_utf8"),
    pytest.param(b"GET /stock/find/\xc3 HTTP/1.1", id="cut_utf8"),
    pytest.param(b"POST /stock/find/\x00 HTTP/1.1", id="nul_with_a_large_body"),
])
def test_odd_request_lines_are_a_json_4xx_at_the_gateway(request_line):
    _gateway_only("/stock/find/x")
    conn = _connection("/stock/find/x")
    try:
        body = b"x" * (MAX_BODY + 1) if b"POST" in request_line else b""
        conn.send(request_line + b"\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        answer = conn.answer("GET")
    finally:
        conn.close()
    assert 400 <= answer.status < 500, answer.describe()
    _assert_json_error(answer, answer.status)


def test_raw_utf8_in_a_path_is_still_an_id(api):
    """Valid UTF-8 sent raw is passed on (an unknown id: 404), as percent-encoded."""
    conn = _connection("/stock/find/x")
    try:
        conn.send("GET /stock/find/é HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        _assert_json_error(conn.answer("GET"), 404)
    finally:
        conn.close()
