"""Hostile input, as a new user's fuzzer makes it: the generators and the raw HTTP client shared by
the fuzz tests (`test_fuzz.py` in `make test`, `faults/test_hostile_http.py` at 10,000 requests in
`make test-faults`).

Two layers:
- **paths**: every endpoint with at least one hostile path parameter (huge and negative numbers,
  signs, decimals, unicode digits, path tricks, ids of the wrong kind, very long segments);
- **HTTP**: the same paths, plus valid ones, sent with every method, bodies of 0 to 200 KB (over
  the 16 KiB limit too), chunked or with a wrong but parseable Content-Length, `Expect:
  100-continue`, and odd headers (huge values, hundreds of them, `Connection: close`, unknown
  transfer codings, ...). Those go out byte for byte through [`RawClient`], since no ordinary
  client library sends a wrong Content-Length.

The contract checked ([`check_answer`]): never a 5xx; every refusal a 4xx with `{"error": ...}`;
a 2xx only for a read, with the right data; nothing changes.
"""

from __future__ import annotations

import collections
import functools
import json
import socket
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from helpers import TIMEOUT, Api, base_for

I64_MAX = 2**63 - 1
# The largest body the gateway and the services accept (and ignore): common::http::MAX_BODY_BYTES.
MAX_BODY = 16 * 1024
# The largest body the fuzz sends: well over the limit.
MAX_FUZZ_BODY = 200_000

# Values a wrongly accepted batch_init of the HTTP fuzz would write into the entities "0".
SENTINEL_STOCK = 616161
SENTINEL_PRICE = 626262

# --- Hostile path parameters ---------------------------------------------------------------------

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
    """(method, path segments, {slot index: encoded hostile value or the slot's kind})."""
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


def fill_path(parts: list[str], values: dict, entities: dict) -> str:
    """The path of `parts` with each slot's hostile value, or the valid value of its kind."""
    valid = {**entities, "num": "1"}
    return "/".join(valid[values[i]] if values.get(i) in valid else values.get(i, p) for i, p in enumerate(parts))


# --- Hostile HTTP --------------------------------------------------------------------------------

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]

# Valid values of the batch_init routes, distinctive so that a batch_init wrongly applied shows.
VALID_NUMS = {
    "/stock/batch_init/{num}/{num}/{num}": ["1", str(SENTINEL_STOCK), str(SENTINEL_PRICE)],
    "/payment/batch_init/{num}/{num}": ["1", str(SENTINEL_STOCK)],
    "/orders/batch_init/{num}/{num}/{num}/{num}": ["1", "1", "1", str(SENTINEL_PRICE)],
}

# Paths no route serves (404).
ODD_PATHS = ["/stock/nope", "/nope", "/orders", "/payment/", "/ids/", "/stock/find", "/orders/find/"]


class HttpCase:
    """One hostile HTTP request, before the sentinel entities are filled in.

    `kind` says what the answer may be: "hostile" (a bad path parameter or an unknown path: a
    refusal), "method" (a valid path with another method: a refusal), "read" (a valid GET of a
    sentinel: 200 with its data, or a refusal), "write" (a valid change carrying a body over the
    limit: a refusal, and nothing changes).

    `framing`: "length" (a right Content-Length), "zeros" (a right one with leading zeros),
    "chunked", "none" (no body, no header), "short" (the declared length is less than the bytes
    sent), "long" (more than sent; the client then shuts its side down).

    `gateway_only`: the headers are ones only the gateway answers with JSON; the services' HTTP
    parser (hyper) refuses them itself with an empty 400 or 431 (left alone: see
    test_bad_input.py).

    A plain class with a short `repr`: hypothesis prints failing examples, and bodies are large.
    """

    def __init__(self, kind: str, method: str, parts: list[str], values: dict, body: bytes,
                 framing: str, declared: int, headers: list[tuple[str, str]], chunk: int = 4096,
                 expect_continue: bool = False, gateway_only: bool = False):
        self.kind, self.method, self.parts, self.values = kind, method, parts, values
        self.body, self.framing, self.declared, self.headers = body, framing, declared, headers
        self.chunk, self.expect_continue, self.gateway_only = chunk, expect_continue, gateway_only

    def path(self, entities: dict) -> str:
        if not self.values:
            return "/".join(self.parts)
        return fill_path(self.parts, self.values, entities)

    def __repr__(self):  # short, for hypothesis' falsifying examples
        heads = [(k, v if len(v) <= 40 else f"{v[:20]}…({len(v)})") for k, v in self.headers[:6]]
        more = f" +{len(self.headers) - 6} headers" if len(self.headers) > 6 else ""
        return (f"HttpCase({self.kind} {self.method} {'/'.join(self.parts)} {self.values} "
                f"body={len(self.body)} framing={self.framing}({self.declared}) chunk={self.chunk} "
                f"expect={self.expect_continue} headers={heads}{more})")


@st.composite
def body_bytes(draw, min_size=0):
    if min_size > MAX_BODY:
        size = draw(st.integers(min_size, MAX_FUZZ_BODY))
    else:
        size = draw(st.one_of(
            st.sampled_from([0, 0, 1, 100, MAX_BODY - 1, MAX_BODY, MAX_BODY + 1, MAX_FUZZ_BODY]),
            st.integers(0, MAX_FUZZ_BODY),
        ))
    pattern = draw(st.sampled_from([b"x", b"{}", b'{"amount": 5}', b"a=1&b=2&", b"\x00\xff\r\n", b"0\r\n\r\n"]))
    return (pattern * (size // len(pattern) + 1))[:size]


@st.composite
def odd_headers(draw):
    """Zero to three odd header groups: (headers, expect_continue, gateway_only)."""
    headers, expect, gateway_only = [], False, False
    for mode in draw(st.lists(st.sampled_from([
        "connection-close", "connection-keep-alive", "upgrade", "content-type", "huge", "many",
        "expect", "expect-odd", "te-gzip", "other-host", "long-host", "bad-host", "request-id",
    ]), max_size=3, unique=True)):
        if mode == "connection-close":
            headers.append(("Connection", "close"))
        elif mode == "connection-keep-alive":
            headers.append(("Connection", "keep-alive"))
        elif mode == "upgrade":
            headers += [("Connection", "Upgrade"), ("Upgrade", "websocket")]
        elif mode == "content-type":
            headers.append(("Content-Type", draw(st.sampled_from(
                ["application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "text/plain; charset=utf-16", "application/json" + ";x" * 500]))))
        elif mode == "huge":
            # Over 8 KB a line, the gateway refuses the headers (400).
            headers.append(("X-Huge", "h" * draw(st.sampled_from([100, 4000, 8100, 9000, 20_000]))))
        elif mode == "many":
            n = draw(st.integers(1, 400))
            width = draw(st.sampled_from([1, 10, 100]))
            headers += [(f"X-Fuzz-{i}", "v" * width) for i in range(n)]
            # The services' parser takes 100 headers at most (hyper answers 431 beyond).
            gateway_only = gateway_only or n > 90
        elif mode == "expect":
            expect = True
            headers.append(("Expect", "100-continue"))
        elif mode == "expect-odd":
            headers.append(("Expect", draw(st.sampled_from(["200-ok", "100-Continue, x", ""]))))
        elif mode == "te-gzip":
            headers.append(("Transfer-Encoding", "gzip"))
            gateway_only = True
        elif mode == "other-host":
            headers.append(("Host", "other.example"))
        elif mode == "long-host":
            headers.append(("X-Host-Too", "h" * 300))
            headers.append(("Host", "h" * draw(st.sampled_from([300, 5000]))))
        elif mode == "bad-host":
            headers.append(("Host", draw(st.sampled_from(["a b", "a/b", "[::1", "..", "a\tb"]))))
            gateway_only = True
        elif mode == "request-id":
            headers.append(("X-Request-Id", draw(st.text(alphabet="abc-_09", max_size=200))))
    return headers, expect, gateway_only


@st.composite
def hostile_http_request(draw) -> HttpCase:
    """A hostile request at the HTTP level; see [`HttpCase`] for what may answer it."""
    shape = draw(st.sampled_from(["hostile"] * 5 + ["method"] * 2 + ["valid"] * 2 + ["odd"]))
    if shape == "hostile":
        route_method, parts, values = draw(hostile_request())
        method = draw(st.sampled_from([route_method, *METHODS]))
        kind = "hostile"
    elif shape == "odd":
        parts, values = draw(st.sampled_from(ODD_PATHS)).split("/"), {}
        method = draw(st.sampled_from(METHODS))
        kind = "hostile"
    else:
        route_method, template = draw(st.sampled_from(TEMPLATES))
        parts = template.split("/")
        nums = iter(VALID_NUMS.get(template, []))
        # A number slot gets its literal value; an id slot its kind, filled by the test.
        values = {i: (next(nums, "1") if p == "{num}" else p[1:-1])
                  for i, p in enumerate(parts) if p.startswith("{")}
        if shape == "method":
            method = draw(st.sampled_from([m for m in METHODS if m != route_method]))
            kind = "method"
        else:
            method = route_method
            kind = "read" if method == "GET" else "write"
    # A valid change must be refused for its body: the server sees more than MAX_BODY bytes.
    body = draw(body_bytes(min_size=MAX_BODY + 2 if kind == "write" else 0))
    framings = ["length", "length", "zeros", "chunked", "chunked", "short", "long"]
    if not body:
        framings = ["length", "none", "chunked", "long"]
    framing = draw(st.sampled_from(framings))
    declared = len(body)
    if framing == "short":
        low = MAX_BODY + 1 if kind == "write" else 0
        declared = draw(st.integers(low, len(body) - 1))
    elif framing == "long":
        declared = len(body) + draw(st.integers(1, 5000))
    chunk = draw(st.sampled_from([7, 1000, 4096, 65536]))
    headers, expect, gateway_only = draw(odd_headers())
    return HttpCase(kind, method, parts, values, body, framing, declared, headers,
                    max(chunk, len(body) // 300 + 1), expect, gateway_only)


# --- A raw HTTP/1.1 client -----------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    headers: dict  # lower-cased names; the last value of a repeated header
    body: bytes

    def describe(self) -> str:
        body = self.body[:300]
        return f"{self.status} {self.headers.get('content-type', '')!r} {body!r}"


class Closed(Exception):
    """The server closed the connection before a whole answer arrived."""


class RawConnection:
    """One TCP connection that sends requests byte for byte and parses answers (1xx skipped)."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buf = b""
        self.used = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> bool:
        """False when the server closed or reset the connection during the send."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _fill(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        finally:
            if timeout is not None:
                self.sock.settimeout(TIMEOUT)
        self.buf += data
        return bool(data)

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            if not self._fill():
                raise Closed(f"closed before {sep!r} ({len(self.buf)} bytes buffered)")
        line, self.buf = self.buf.split(sep, 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise Closed(f"closed {n - len(self.buf)} bytes before the end of the body")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def interim_or_answer(self, wait: float) -> bool:
        """Waits up to `wait` s for the server's first bytes (a 100 Continue or an answer)."""
        try:
            return bool(self.buf) or self._fill(wait)
        except socket.timeout:
            return False

    def pending_is_continue(self) -> bool:
        """Consumes a whole `100 Continue` at the head of what arrived, if that is what it is."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                return False
        if self.buf.split(b" ", 2)[1:2] == [b"100"]:
            self._until(b"\r\n\r\n")
            return True
        return False

    def answer(self, method: str) -> Answer:
        while True:
            head = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
            version, status = head[0].split(" ", 2)[:2]
            assert version.startswith("HTTP/1."), head[0]
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if 100 <= int(status) < 200:
                continue
            break
        status = int(status)
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._until(b"\r\n")
                    break
                body += self._exact(size)
                self._exact(2)
        elif "content-length" in headers:
            body = self._exact(int(headers["content-length"]))
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        return Answer(status, headers, body)


def encode_request(case: HttpCase, path: str, host: str) -> tuple[bytes, bytes]:
    """(head, body bytes as framed) of `case`."""
    lines = [f"{case.method} {path} HTTP/1.1"]
    names = {k.lower() for k, _ in case.headers}
    if "host" not in names:
        lines.append(f"Host: {host}")
    body = case.body
    if case.framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        pieces = [body[i:i + case.chunk] for i in range(0, len(body), case.chunk)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    elif case.framing == "zeros":
        lines.append(f"Content-Length: {case.declared:05d}")
    elif case.framing != "none":
        lines.append(f"Content-Length: {case.declared}")
    lines += [f"{k}: {v}" for k, v in case.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), body


class RawClient:
    """Sends [`HttpCase`]s; keeps one connection per thread and base while answers allow it."""

    def __init__(self):
        self.local = threading.local()

    def _conn(self, host: str, port: int, fresh: bool) -> RawConnection:
        conns = getattr(self.local, "conns", None)
        if conns is None:
            conns = self.local.conns = {}
        conn = conns.get((host, port))
        if fresh or conn is None:
            if conn is not None:
                conn.close()
            conn = conns[(host, port)] = RawConnection(host, port)
        return conn

    def _drop(self, host: str, port: int):
        conn = self.local.conns.pop((host, port), None)
        if conn is not None:
            conn.close()

    def close(self):
        for conn in getattr(self.local, "conns", {}).values():
            conn.close()

    def send(self, case: HttpCase, path: str) -> Answer | None:
        """The answer to `case` at `path`, or None when the connection closed without one."""
        base = urllib.parse.urlsplit(base_for(path))
        host, port = base.hostname, base.port or 80
        for attempt in range(2):
            conn = self._conn(host, port, fresh=attempt > 0)
            reused = conn.used
            conn.used = True
            head, body = encode_request(case, base.path.rstrip("/") + path, f"{host}:{port}")
            sent = conn.send(head)
            if sent and body:
                if case.expect_continue and conn.interim_or_answer(1.0) and not conn.pending_is_continue():
                    # Answered before the body was asked for: that answer is final, and the
                    # connection is left without the body it announced.
                    sent = False
                else:
                    sent = conn.send(body)
            if case.framing == "long":
                try:
                    conn.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            try:
                answer = conn.answer(case.method)
            except (Closed, OSError):
                self._drop(host, port)
                if reused and not conn.buf and attempt == 0 and case.framing != "long":
                    continue  # a kept-alive connection the server had closed: as any client, retry
                return None
            clean = case.framing in ("length", "zeros", "chunked", "none") and sent
            closing = "close" in answer.headers.get("connection", "").lower() or any(
                k.lower() == "connection" and "close" in v.lower() for k, v in case.headers)
            if not clean or closing or conn.buf:
                self._drop(host, port)
            return answer
        return None


@functools.lru_cache(maxsize=None)
def behind_gateway(base: str) -> bool:
    """Whether `base` is the gateway (it answers `/gateway/health` itself) rather than a service."""
    try:
        conn = RawConnection(*_host_port(base))
        try:
            conn.send(f"GET /gateway/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            answer = conn.answer("GET")
        finally:
            conn.close()
        return answer.status == 200 and json.loads(answer.body) == {"status": "ok"}
    except (OSError, Closed, ValueError, AssertionError):
        return False


def _host_port(base: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(base)
    return parts.hostname, parts.port or 80


def for_this_stack(case: HttpCase, path: str) -> HttpCase:
    """`case` without the headers only a gateway answers with JSON when `path` goes to a service
    directly (the suite can run against the services' own ports)."""
    if not case.gateway_only or behind_gateway(base_for(path)):
        return case
    keep = [(k, v) for k, v in case.headers
            if not (k.startswith("X-Fuzz-") or k == "Transfer-Encoding" or k == "Host")]
    return HttpCase(case.kind, case.method, case.parts, case.values, case.body, case.framing,
                    case.declared, keep, case.chunk, case.expect_continue, False)


def check_answer(case: HttpCase, path: str, answer: Answer | None, expected_reads: dict):
    """Asserts the contract for one answer; `expected_reads` maps a read's path to its JSON."""
    what = f"{case!r}\n  path {path[:200]!r}"
    if answer is None:
        # Only a client that promised more body than it sent and then shut its side may be left
        # without an answer (the gateway drops such a request, as the client broke the framing).
        assert case.framing == "long", f"connection closed without an answer: {what}"
        return
    got = f"{what}\n  -> {answer.describe()}"
    assert answer.status < 500, f"server error on hostile input: {got}"
    if 200 <= answer.status < 300:
        assert case.kind == "read", f"hostile request accepted: {got}"
        assert json.loads(answer.body) == expected_reads[path], f"wrong data: {got}"
        return
    assert 400 <= answer.status < 500, f"not a 4xx: {got}"
    assert "application/json" in answer.headers.get("content-type", ""), f"error is not JSON: {got}"
    if case.method == "HEAD":
        return
    try:
        body = json.loads(answer.body)
    except ValueError:
        raise AssertionError(f"error body does not parse as JSON: {got}") from None
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"].strip(), (
        f'no {{"error": "..."}} in the body: {got}')


# --- The fuzz run --------------------------------------------------------------------------------

class HttpFuzz:
    """Sends batches of hostile HTTP requests, `workers` at a time (so that the gateway's keep-alive
    connections to the services are shared by concurrent requests, as in the issue's run), checks
    every answer, and that sentinel entities stay exactly as created."""

    def __init__(self, workers: int = 8):
        self.api = Api()
        self.item = self.api.create_item(3, 10)
        self.user = self.api.create_user(10)
        self.order = self.api.create_order(self.user)
        self.api.add_item(self.order, self.item, 1)
        self.entities = {"item": self.item, "user": self.user, "order": self.order}
        self.reads = {
            f"/stock/find/{self.item}": {"stock": 10, "price": 3},
            f"/payment/find_user/{self.user}": {"user_id": self.user, "credit": 10},
            f"/orders/find/{self.order}": {"order_id": self.order, "paid": False, "items": [[self.item, 1]],
                                           "user_id": self.user, "total_cost": 3},
        }
        self.client = RawClient()
        self.pool = ThreadPoolExecutor(max_workers=workers)
        # Answers by status ("none": the connection closed without one), for the summary.
        self.statuses = collections.Counter()
        self.lock = threading.Lock()

    def close(self):
        self.pool.shutdown()
        self.client.close()
        self.api.close()

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    def one(self, case: HttpCase):
        path = case.path(self.entities)
        case = for_this_stack(case, path)
        answer = self.client.send(case, path)
        with self.lock:
            self.statuses[answer.status if answer else "none"] += 1
        check_answer(case, path, answer, self.reads)

    def batch(self, cases: list[HttpCase]):
        list(self.pool.map(self.one, cases))  # re-raises the first failed check
        if any(c.kind == "write" for c in cases):
            self.check_unchanged()

    def check_unchanged(self):
        """The sentinels read as created, and no batch_init of the fuzz (its valid ones carry a
        body over the limit) was applied to the entities "0"."""
        now = {path: self.api.get(path).json() for path in self.reads}
        assert now == self.reads, "a refused request changed the sentinels"
        for path, key, sentinel in [("/stock/find/0", "stock", SENTINEL_STOCK),
                                    ("/stock/find/0", "price", SENTINEL_PRICE),
                                    ("/payment/find_user/0", "credit", SENTINEL_STOCK),
                                    ("/orders/find/0", "total_cost", 2 * SENTINEL_PRICE)]:
            r = self.api.get(path)
            if r.status_code == 200:
                assert r.json()[key] != sentinel, f"a refused batch_init was applied: {path} {r.json()}"

    def summary(self) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items(), key=str))
        return f"{self.sent} hostile HTTP requests answered {{{counts}}}"


def run_http_fuzz(batches: int, size: int = 64) -> HttpFuzz:
    """`batches` derandomized batches of `size` requests (the same ones every run, so that CI
    cannot pass or fail by luck); the state is checked after each batch holding a valid change and
    at the end. No shrinking: a batch runs concurrently, and a failed check names its request."""
    fuzz = HttpFuzz()
    try:
        @settings(max_examples=batches, deadline=None, derandomize=True, database=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(cases=st.lists(hostile_http_request(), min_size=size, max_size=size))
        def run(cases):
            fuzz.batch(cases)

        run()
        fuzz.check_unchanged()
    finally:
        fuzz.close()
    return fuzz
