"""Concurrent changes to one entity: no lost update, no overdraft, every answer truthful."""

from collections import Counter

from helpers import run_concurrently

N = 200
WORKERS = 64


def _post(api, path):
    r = api.post(path)
    body = r.json() if "json" in r.headers.get("content-type", "") else None
    return r.status_code, body


def test_concurrent_subtracts_never_oversell(api):
    item = api.create_item(3, stock=100)
    results = run_concurrently(lambda a, _: _post(a, f"/stock/subtract/{item}/1"), range(N), WORKERS)
    statuses = Counter(s for s, _ in results)
    assert statuses == {200: 100, 400: 100}, statuses
    # Each success reports the stock it left; together they are exactly 99, 98, ..., 0.
    left = sorted(body["stock"] for s, body in results if s == 200)
    assert left == list(range(100))
    assert all(isinstance(body, dict) and body.get("error") for s, body in results if s == 400)
    assert api.item(item) == {"stock": 0, "price": 3}


def test_concurrent_pays_never_overdraw(api):
    user = api.create_user(credit=100)
    results = run_concurrently(lambda a, _: _post(a, f"/payment/pay/{user}/1"), range(N), WORKERS)
    statuses = Counter(s for s, _ in results)
    assert statuses == {200: 100, 400: 100}, statuses
    left = sorted(body["credit"] for s, body in results if s == 200)
    assert left == list(range(100))
    assert all(isinstance(body, dict) and body.get("error") for s, body in results if s == 400)
    assert api.credit(user) == 0


def test_concurrent_add_funds_sum_up(api):
    user = api.create_user(credit=5)
    amounts = list(range(1, N + 1))
    results = run_concurrently(lambda a, n: _post(a, f"/payment/add_funds/{user}/{n}"), amounts, WORKERS)
    assert all(s == 200 for s, _ in results), Counter(s for s, _ in results)
    total = 5 + sum(amounts)
    assert api.credit(user) == total
    # Every answer reports a distinct running total; the largest is the final credit.
    reported = [body["credit"] for _, body in results]
    assert len(set(reported)) == N
    assert max(reported) == total
    for (s, body), n in zip(results, amounts):
        assert 5 + n <= body["credit"] <= total


def test_concurrent_adds_and_subtracts_balance(api):
    item = api.create_item(1, stock=1000)
    ops = [("add", 3)] * 100 + [("subtract", 2)] * 100
    results = run_concurrently(lambda a, op: _post(a, f"/stock/{op[0]}/{item}/{op[1]}"), ops, WORKERS)
    assert all(s == 200 for s, _ in results), Counter(s for s, _ in results)
    assert api.item(item) == {"stock": 1000 + 300 - 200, "price": 1}


def test_concurrent_add_items_on_one_order(api):
    a = api.create_item(3)
    b = api.create_item(10)
    order = api.create_order()
    lines = [(a if i % 2 else b, i + 1) for i in range(N)]
    results = run_concurrently(
        lambda cl, line: _post(cl, f"/orders/addItem/{order}/{line[0]}/{line[1]}"), lines, WORKERS
    )
    assert all(s == 200 for s, _ in results), Counter(s for s, _ in results)
    found = api.order(order)
    assert len(found["items"]) == N
    assert Counter(tuple(x) for x in found["items"]) == Counter(lines)
    assert found["total_cost"] == sum(q * (3 if it == a else 10) for it, q in lines)
    assert found["paid"] is False


def test_concurrent_creates_get_unique_ids(api):
    user = api.create_user()

    def create(cl, i):
        if i % 3 == 0:
            return "item", _post(cl, "/stock/item/create/1")
        if i % 3 == 1:
            return "user", _post(cl, "/payment/create_user")
        return "order", _post(cl, f"/orders/create/{user}")

    results = run_concurrently(create, range(300), WORKERS)
    ids = Counter()
    for kind, (status, body) in results:
        assert status == 200, (kind, status, body)
        ids[kind, body[f"{kind}_id"]] += 1
    assert len(ids) == 300 and set(ids.values()) == {1}
