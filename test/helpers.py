"""HTTP helpers shared by the test modules: base URLs, a keep-alive client with entity helpers,
a raw client that sends a path exactly as written, and assertions on answers.

Base URLs come from ORDER_URL, STOCK_URL, PAYMENT_URL and IDS_URL (each defaults to the gateway,
http://127.0.0.1:8000, or the port in SHOPLOG_GATEWAY_PORT). A path is sent to the base URL of its first segment (`/stock/...` goes to
STOCK_URL), so the suite works through the gateway and against the services directly.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

I64_MAX = 2**63 - 1
TIMEOUT = 15  # seconds, per request

# The gateway of a stack started by `shoplog up` (which also reads SHOPLOG_GATEWAY_PORT).
GATEWAY = f"http://127.0.0.1:{os.environ.get('SHOPLOG_GATEWAY_PORT') or 8000}"


def _base(var: str) -> str:
    return (os.environ.get(var) or GATEWAY).rstrip("/")


BASES = {
    "orders": _base("ORDER_URL"),
    "stock": _base("STOCK_URL"),
    "payment": _base("PAYMENT_URL"),
    "ids": _base("IDS_URL"),
}


def base_for(path: str) -> str:
    """The base URL serving `path` (chosen by its first segment; the order URL otherwise)."""
    prefix = path.lstrip("/").split("/", 1)[0]
    return BASES.get(prefix, BASES["orders"])


def unknown_id() -> str:
    """A syntactically valid id that no service ever handed out (not decimal, so batch_init
    cannot create it either)."""
    return "nx" + uuid.uuid4().hex


class RawResponse:
    """The answer to [`Api.raw`], with the parts of `requests.Response` the tests use."""

    def __init__(self, method: str, url: str, status: int, headers: dict, content: bytes):
        self.request_method = method
        self.url = url
        self.status_code = status
        self.headers = headers  # lower-cased names
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.content)


def describe(resp) -> str:
    """One line naming the request and its answer, for assertion messages."""
    method = getattr(resp, "request_method", None) or resp.request.method
    body = resp.text
    if len(body) > 300:
        body = body[:300] + "…"
    url = resp.url if len(resp.url) <= 200 else resp.url[:200] + "…"
    return f"{method} {url} -> {resp.status_code} {body!r}"


def content_type(resp) -> str:
    return (resp.headers.get("content-type") or resp.headers.get("Content-Type") or "").lower()


def assert_ok(resp, status: int = 200):
    """The answer is `status` (default 200) and, when it has a body, a JSON one."""
    assert resp.status_code == status, describe(resp)


def ok_json(resp, status: int = 200):
    """Asserts a `status` answer with a JSON body and returns the body."""
    assert resp.status_code == status, describe(resp)
    assert "application/json" in content_type(resp), f"not JSON: {describe(resp)}"
    return resp.json()


def assert_error(resp, status):
    """The answer is a client error with the JSON body {"error": "<non-empty text>"}.

    `status` is the exact expected code, or a collection of acceptable codes.
    """
    allowed = {status} if isinstance(status, int) else set(status)
    assert resp.status_code < 500, f"server error on bad input: {describe(resp)}"
    assert resp.status_code in allowed, f"expected {sorted(allowed)}: {describe(resp)}"
    assert "application/json" in content_type(resp), f"error body is not JSON: {describe(resp)}"
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body does not parse as JSON: {describe(resp)}") from None
    assert isinstance(body, dict), describe(resp)
    assert isinstance(body.get("error"), str) and body["error"].strip(), (
        f'no {{"error": "..."}} in the body: {describe(resp)}'
    )
    return body


class Api:
    """A keep-alive client of the whole system, plus helpers that create and read entities."""

    def __init__(self, base: str | None = None):
        """`base`: one base URL for every prefix (a gateway); default: the per-service BASES."""
        self.base = base.rstrip("/") if base else None
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16)
        self.session.mount("http://", adapter)

    def close(self):
        self.session.close()

    # --- plain requests -------------------------------------------------------------------------

    def request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", TIMEOUT)
        return self.session.request(method, (self.base or base_for(path)) + path, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.request("POST", path, **kw)

    def raw(self, method: str, path: str) -> RawResponse:
        """Sends `path` byte for byte (no client-side normalisation of `..`, `%2e`, `%2F`, ...).

        `path` must be ASCII: percent-encode anything else.
        """
        base = urllib.parse.urlsplit(base_for(path))
        conn = http.client.HTTPConnection(base.hostname, base.port or 80, timeout=TIMEOUT)
        try:
            conn.putrequest(method, base.path.rstrip("/") + path, skip_accept_encoding=True)
            conn.putheader("Content-Length", "0")
            conn.endheaders()
            resp = conn.getresponse()
            content = resp.read()
            headers = {k.lower(): v for k, v in resp.getheaders()}
            return RawResponse(method, base.geturl() + path, resp.status, headers, content)
        finally:
            conn.close()

    # --- entities -------------------------------------------------------------------------------

    def create_item(self, price: int, stock: int = 0) -> str:
        body = ok_json(self.post(f"/stock/item/create/{price}"))
        item = body["item_id"]
        assert isinstance(item, str) and item, body
        if stock:
            body = ok_json(self.post(f"/stock/add/{item}/{stock}"))
            assert body == {"done": True, "stock": stock}, body
        return item

    def create_user(self, credit: int = 0) -> str:
        body = ok_json(self.post("/payment/create_user"))
        user = body["user_id"]
        assert isinstance(user, str) and user, body
        if credit:
            body = ok_json(self.post(f"/payment/add_funds/{user}/{credit}"))
            assert body == {"done": True, "credit": credit}, body
        return user

    def create_order(self, user: str | None = None) -> str:
        if user is None:
            user = self.create_user()
        body = ok_json(self.post(f"/orders/create/{user}"))
        order = body["order_id"]
        assert isinstance(order, str) and order, body
        return order

    def add_item(self, order: str, item: str, quantity: int):
        assert_ok(self.post(f"/orders/addItem/{order}/{item}/{quantity}"))

    def item(self, item: str) -> dict:
        """`{"stock": n, "price": p}` of an existing item."""
        return ok_json(self.get(f"/stock/find/{item}"))

    def credit(self, user: str) -> int:
        body = ok_json(self.get(f"/payment/find_user/{user}"))
        assert body["user_id"] == user, body
        return body["credit"]

    def order(self, order: str) -> dict:
        return ok_json(self.get(f"/orders/find/{order}"))


_local = threading.local()


def thread_api(base: str | None = None) -> Api:
    """This thread's own client for `base` (one keep-alive session per thread and base)."""
    apis = getattr(_local, "apis", None)
    if apis is None:
        apis = _local.apis = {}
    if base not in apis:
        apis[base] = Api(base)
    return apis[base]


def run_concurrently(fn, args, workers: int = 64, base: str | None = None):
    """Calls `fn(api, arg)` for every arg on `workers` threads, each with its own session, and
    returns the results in the order of `args`."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda a: fn(thread_api(base), a), args))


# --- The partitioned layout (common/src/partition.rs, common/src/keys.rs), for tests that read or
# edit Redis directly. ---

def fnv1a(s: str) -> int:
    """FNV-1a, 64 bits, of the UTF-8 bytes of `s`: the partition hash."""
    h = 0xcbf29ce484222325
    for b in s.encode():
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def partition(entity_id: str, p: int) -> int:
    return fnv1a(entity_id) % p


def key_slot(s: str) -> int:
    """Redis Cluster's hash slot of a hash tag's content: CRC16 (XMODEM) mod 16384."""
    crc = 0
    for b in s.encode():
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc % 16384


@functools.lru_cache(maxsize=None)
def tag(service: str, part: int, p: int) -> str:
    """The hash tag of partition `part` of `p`: `{o3.60}`, the smallest `.n` that puts its slot in
    the part-th of p equal slices of the slot space (common/src/partition.rs, `tags`)."""
    lo, hi = part * 16384 // p, (part + 1) * 16384 // p
    n = 0
    while not lo <= key_slot(f"{service[0]}{part}.{n}") < hi:
        n += 1
    return "{" + f"{service[0]}{part}.{n}" + "}"


def key(prefix: str, service: str, entity_id: str, p: int) -> str:
    """The key of an entity or saga record in its partition: `key("item:", "stock", id, 16)`."""
    return f"{prefix}{tag(service, partition(entity_id, p), p)}:{entity_id}"


def streams(service: str, p: int) -> list[str]:
    """Every partition's stream of a service's log."""
    return [f"log:{service}:{tag(service, k, p)}" for k in range(p)]


def metric(port: int, name: str, prefix: str = "logparser") -> int:
    """A counter's value from a service's /metrics (-1 when it does not answer)."""
    try:
        text = requests.get(f"http://127.0.0.1:{port}/{prefix}/metrics", timeout=1).text
    except requests.RequestException:
        return -1
    for line in text.splitlines():
        if line.startswith(f"shoplog_{name}{{"):
            return int(line.split()[-1])
    return 0


def wait_for(check, what: str, timeout: float = 30, every: float = 0.2):
    """Polls `check` until it is true; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
