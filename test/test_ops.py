"""Operational surface: health, metrics, unknown routes, wrong methods."""

import re

import pytest

from helpers import assert_error, content_type, ok_json, unknown_id

PREFIXES = ["orders", "stock", "payment", "ids"]

# name{labels} value [timestamp]
SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})?'
    r" (-?[0-9.eE+-]+|NaN|[+-]Inf)( -?[0-9]+)?$"
)


def parse_metrics(text: str) -> list[tuple[str, str, float]]:
    """(name, labels, value) of every sample; fails on any line that is not valid text format."""
    samples = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        samples.append((m.group(1), m.group(2) or "", float(m.group(3))))
    return samples


@pytest.mark.parametrize("prefix", PREFIXES)
def test_health(api, prefix):
    body = ok_json(api.get(f"/{prefix}/health"))
    assert isinstance(body, dict)
    assert body.get("status") == "ok", body


@pytest.mark.parametrize("prefix", PREFIXES)
def test_metrics_are_prometheus_text(api, prefix):
    r = api.get(f"/{prefix}/metrics")
    assert r.status_code == 200, r.text[:300]
    assert content_type(r).startswith("text/plain"), r.headers
    samples = parse_metrics(r.text)
    assert any(line.startswith("# TYPE ") for line in r.text.splitlines())
    assert samples, "no samples at all"


def _max_404s(api, prefix: str, scrapes: int = 10) -> float:
    """The highest 404 request count over several scrapes: behind the gateway, successive scrapes
    reach the replicas in turn, so this is the count of the busiest replica."""
    counts = []
    for _ in range(scrapes):
        samples = parse_metrics(api.get(f"/{prefix}/metrics").text)
        counts.append(
            sum(v for name, labels, v in samples if name.endswith("requests_total") and 'status="404"' in labels)
        )
    return max(counts)


@pytest.mark.parametrize("prefix", ["orders", "stock", "payment"])
def test_metrics_count_requests(api, prefix):
    path = {"orders": "/orders/find/", "stock": "/stock/find/", "payment": "/payment/find_user/"}[prefix]
    before = _max_404s(api, prefix)
    for _ in range(20):  # enough to reach every replica behind the gateway
        assert_error(api.get(path + unknown_id()), 404)
    after = _max_404s(api, prefix)
    assert after > before, f"404 request counter of {prefix} did not move: {before} -> {after}"


UNKNOWN_ROUTES = [
    ("GET", "/stock/nope"),
    ("POST", "/stock/nope/1"),
    ("GET", "/stock"),
    ("GET", "/stock/"),
    ("GET", "/stock/find"),
    ("POST", "/stock/item/create"),
    ("POST", "/stock/item/1"),
    ("GET", "/stock/Find/1"),
    ("GET", "/payment/nope"),
    ("GET", "/payment/find_user"),
    ("POST", "/payment/create_user/extra"),
    ("GET", "/orders/nope"),
    ("GET", "/orders/find"),
    ("POST", "/orders/additem/a/b/1"),  # paths are case-sensitive: addItem
    ("GET", "/ids/nope"),
    ("GET", "/ids/create/extra"),
    ("POST", "/ids/batch"),
    ("GET", "/"),
    ("GET", "/nope"),
    ("POST", "/nope/find/1"),
    ("GET", "/stockx/find/1"),
    ("GET", "/STOCK/find/1"),
    ("GET", "/orders/health/extra"),
    ("GET", "/stock/metrics/extra"),
]


@pytest.mark.parametrize("method,path", UNKNOWN_ROUTES, ids=[f"{m} {p}" for m, p in UNKNOWN_ROUTES])
def test_unknown_route_is_404_json(api, method, path):
    assert_error(api.raw(method, path), 404)


@pytest.fixture(scope="module")
def entities(api):
    item = api.create_item(7, stock=50)
    user = api.create_user(credit=50)
    order = api.create_order(user)
    api.add_item(order, item, 2)
    return {"item": item, "user": user, "order": order}


def snapshot(api, e):
    return (api.item(e["item"]), api.credit(e["user"]), api.order(e["order"]))


WRONG_METHODS = [
    ("GET", "/stock/item/create/5"),
    ("PUT", "/stock/item/create/5"),
    ("POST", "/stock/find/{item}"),
    ("DELETE", "/stock/find/{item}"),
    ("GET", "/stock/add/{item}/5"),
    ("PUT", "/stock/add/{item}/5"),
    ("PATCH", "/stock/add/{item}/5"),
    ("DELETE", "/stock/subtract/{item}/5"),
    ("GET", "/stock/subtract/{item}/5"),
    ("GET", "/stock/batch_init/1/424242/434343"),
    ("GET", "/payment/create_user"),
    ("DELETE", "/payment/create_user"),
    ("POST", "/payment/find_user/{user}"),
    ("GET", "/payment/add_funds/{user}/5"),
    ("PUT", "/payment/add_funds/{user}/5"),
    ("GET", "/payment/pay/{user}/5"),
    ("DELETE", "/payment/pay/{user}/5"),
    ("GET", "/payment/batch_init/1/424242"),
    ("GET", "/orders/create/{user}"),
    ("PUT", "/orders/create/{user}"),
    ("POST", "/orders/find/{order}"),
    ("DELETE", "/orders/find/{order}"),
    ("GET", "/orders/addItem/{order}/{item}/1"),
    ("PUT", "/orders/addItem/{order}/{item}/1"),
    ("GET", "/orders/batch_init/1/1/1/434343"),
    ("POST", "/ids/create"),
    ("GET", "/ids/batch/5"),
    ("DELETE", "/ids/batch/5"),
]


@pytest.mark.parametrize("method,path", WRONG_METHODS, ids=[f"{m} {p}" for m, p in WRONG_METHODS])
def test_wrong_method_is_405_json_and_changes_nothing(api, entities, method, path):
    before = snapshot(api, entities)
    assert_error(api.raw(method, path.format(**entities)), 405)
    assert snapshot(api, entities) == before
