"""`Idempotency-Key` (API.md, *Retrying safely*; issue 13): a repeated POST with the same key
changes nothing and gets the first answer again, status and body; the same key on another request
is a 422 that changes nothing; a bad key is a 400; keys expire after the retention.

Runs its own stack (2 replicas each, ports offset by 1500, gateway on 9150,
IDEMPOTENCY_TTL_SECS=2), through the gateway unless a test says otherwise: repeats land on either
replica.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import DOWN_TIMEOUT, UP_TIMEOUT, _log_tails, _run, shoplog_bin
from helpers import Api, assert_error, ok_json

GATEWAY = 9150
OFFSET = 1500
STOCK_REPLICA = f"http://127.0.0.1:{8102 + OFFSET}"  # stock-1, bypassing the gateway
TTL = 2


@pytest.fixture(scope="module")
def api():
    binary = shoplog_bin()
    if not binary.exists():
        pytest.skip(f"no shoplog binary at {binary}")
    data_dir = Path(tempfile.mkdtemp(prefix="shoplog-idempotency-"))
    env = dict(
        os.environ,
        SHOPLOG_DATA_DIR=str(data_dir),
        SHOPLOG_PORT_OFFSET=str(OFFSET),
        SHOPLOG_GATEWAY_PORT=str(GATEWAY),
        IDEMPOTENCY_TTL_SECS=str(TTL),
    )
    up = _run([str(binary), "up", "--detach", "--replicas", "2"], env, UP_TIMEOUT)
    assert up.returncode == 0, f"{up.stderr}\n{_log_tails(data_dir)}"
    client = Api(f"http://127.0.0.1:{GATEWAY}")
    yield client
    client.close()
    audit = _run([str(binary), "audit"], env, 120)
    _run([str(binary), "down", "--wipe"], env, DOWN_TIMEOUT)
    assert audit.returncode == 0, f"audit after the idempotency tests:\n{audit.stdout}{audit.stderr}"


def key() -> str:
    return f"test-{uuid.uuid4()}"


def keyed(api: Api, path: str, k: str, times: int = 3) -> list[tuple[int, str]]:
    """POSTs `path` `times` times with key `k`: every (status, body)."""
    return [(r.status_code, r.text) for r in (api.post(path, headers={"Idempotency-Key": k})
                                              for _ in range(times))]


def test_a_repeated_add_funds_or_pay_applies_once_with_the_first_answer(api):
    user = api.create_user()
    k = key()
    answers = keyed(api, f"/payment/add_funds/{user}/10", k)
    assert answers == [(200, '{"credit":10,"done":true}')] * 3
    assert api.credit(user) == 10
    answers = keyed(api, f"/payment/pay/{user}/4", key())
    assert {a for a in answers} == {(200, '{"credit":6,"done":true}')}
    assert api.credit(user) == 6
    # A refusal is the answer too: repeated, even once the credit would allow it.
    k = key()
    refused = keyed(api, f"/payment/pay/{user}/9", k, times=1)
    assert refused[0][0] == 400 and "not enough credit" in refused[0][1]
    ok_json(api.post(f"/payment/add_funds/{user}/100"))
    assert keyed(api, f"/payment/pay/{user}/9", k, times=2) == refused * 2
    assert api.credit(user) == 106


def test_a_repeated_stock_add_or_subtract_applies_once(api):
    item = api.create_item(3)
    assert set(keyed(api, f"/stock/add/{item}/7", key())) == {(200, '{"done":true,"stock":7}')}
    assert set(keyed(api, f"/stock/subtract/{item}/2", key())) == {(200, '{"done":true,"stock":5}')}
    assert api.item(item) == {"stock": 5, "price": 3}


def test_a_repeated_create_answers_the_same_entity_and_never_resets_it(api):
    k = key()
    first = api.post("/stock/item/create/4", headers={"Idempotency-Key": k})
    item = ok_json(first)["item_id"]
    ok_json(api.post(f"/stock/add/{item}/9"))
    again = api.post("/stock/item/create/4", headers={"Idempotency-Key": k})
    assert (again.status_code, again.text) == (first.status_code, first.text)
    assert api.item(item) == {"stock": 9, "price": 4}

    for path, field in (("/payment/create_user", "user_id"), (f"/orders/create/{uuid.uuid4().hex}", "order_id")):
        answers = keyed(api, path, key())
        assert len(set(answers)) == 1 and answers[0][0] == 200, answers


def test_a_repeated_add_item_adds_one_line(api):
    item = api.create_item(5)
    order = api.create_order()
    assert set(keyed(api, f"/orders/addItem/{order}/{item}/2", key())) == {(200, '{"done":true}')}
    found = api.order(order)
    assert found["items"] == [[item, 2]] and found["total_cost"] == 10


def test_a_keyed_checkout_repeats_its_first_answer(api):
    item = api.create_item(5, stock=10)
    user = api.create_user(credit=5)
    order = api.create_order(user)
    api.add_item(order, item, 2)
    k = key()
    refused = keyed(api, f"/orders/checkout/{order}", k, times=1)
    assert refused[0][0] == 400, refused
    # The key's answer stays the refusal; a new attempt (a new key, or none) pays.
    ok_json(api.post(f"/payment/add_funds/{user}/5"))
    assert keyed(api, f"/orders/checkout/{order}", k, times=2) == refused * 2
    assert api.order(order)["paid"] is False
    k2 = key()
    paid = keyed(api, f"/orders/checkout/{order}", k2)
    assert paid[0][0] == 200 and len(set(paid)) == 1, paid
    assert api.order(order)["paid"] is True
    assert api.credit(user) == 0 and api.item(item)["stock"] == 8


def test_concurrent_duplicates_apply_once_and_share_the_answer(api):
    user = api.create_user()
    k = key()

    def add(_):
        r = Api(f"http://127.0.0.1:{GATEWAY}")
        try:
            resp = r.post(f"/payment/add_funds/{user}/3", headers={"Idempotency-Key": k})
            return resp.status_code, resp.text
        finally:
            r.close()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(add, range(32)))
    assert set(answers) == {(200, '{"credit":3,"done":true}')}, set(answers)
    assert api.credit(user) == 3


def test_the_same_key_on_another_request_is_a_422_that_changes_nothing(api):
    user = api.create_user(credit=10)
    item = api.create_item(2, stock=10)
    order = api.create_order(user)
    cases = {  # a first request, then other requests of the same service with its key
        f"/payment/add_funds/{user}/1": [f"/payment/add_funds/{user}/2", f"/payment/pay/{user}/1",
                                         "/payment/create_user", f"/payment/add_funds/{user}/1/"],
        f"/stock/add/{item}/1": [f"/stock/add/{item}/2", f"/stock/subtract/{item}/1", "/stock/item/create/2"],
        f"/orders/addItem/{order}/{item}/1": [f"/orders/addItem/{order}/{item}/2", f"/orders/create/{user}",
                                              f"/orders/checkout/{order}"],
    }
    for first, others in cases.items():
        k = key()
        ok_json(api.post(first, headers={"Idempotency-Key": k}))
        for path in others:
            r = api.post(path, headers={"Idempotency-Key": k})
            if path == f"/payment/add_funds/{user}/1/":  # the same route: the same request
                ok_json(r)
                continue
            assert_error(r, 422)
            assert k in r.json()["error"] and first in r.json()["error"], r.text
    assert api.credit(user) == 11
    assert api.item(item)["stock"] == 11
    assert api.order(order)["items"] == [[item, 1]]
    # Keys are the service's: the payment service cannot know what the stock service saw.
    k = key()
    ok_json(api.post(f"/payment/add_funds/{user}/1", headers={"Idempotency-Key": k}))
    ok_json(api.post(f"/stock/add/{item}/1", headers={"Idempotency-Key": k}))


def test_bad_keys_are_a_400_that_changes_nothing(api):
    user = api.create_user(credit=10)
    for bad in ("k" * 129, "tab\there", "del\x7f", "caf\u00e9".encode().decode("latin-1")):
        r = api.post(f"/payment/add_funds/{user}/5", headers={"Idempotency-Key": bad})
        assert_error(r, 400)
    assert len(keyed(api, f"/payment/add_funds/{user}/5", "k" * 128, times=2)) == 2
    assert api.credit(user) == 15
    # An empty header reaches the services only directly: nginx does not forward an empty value
    # (through the gateway it is a request without a key).
    item = api.create_item(1)
    r = Api(STOCK_REPLICA).post(f"/stock/add/{item}/1", headers={"Idempotency-Key": ""})
    assert_error(r, 400)
    assert api.item(item)["stock"] == 0


def test_a_key_expires_after_the_retention(api):
    user = api.create_user()
    k = key()
    ok_json(api.post(f"/payment/add_funds/{user}/1", headers={"Idempotency-Key": k}))
    time.sleep(TTL + 1.5)
    # Forgotten: the same request applies again, and the key may name another request.
    assert keyed(api, f"/payment/add_funds/{user}/1", k, times=1) == [(200, '{"credit":2,"done":true}')]
    time.sleep(TTL + 1.5)
    assert keyed(api, f"/payment/pay/{user}/2", k, times=1) == [(200, '{"credit":0,"done":true}')]
    assert api.credit(user) == 0


def test_without_a_key_nothing_changes(api):
    user = api.create_user()
    for _ in range(2):
        ok_json(api.post(f"/payment/add_funds/{user}/5"))
    assert api.credit(user) == 10
    # GETs ignore a key, even a malformed one.
    assert ok_json(api.get(f"/payment/find_user/{user}", headers={"Idempotency-Key": "k" * 200}))["credit"] == 10
