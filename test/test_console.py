"""The operator console (issue 16) over HTTP, through the gateway, on a stack of its own (ports
offset by 11000, gateway 9900) with CONSOLE_TOKEN set: pages and API answer, filters filter and
agree with `shoplog sagas --json`, bad input is a 4xx that changes nothing, actions are refused
without the token, with a wrong one and cross-site, and with the token they really run: a saga
left stuck (stock killed under a checkout) is aborted by the console's recovery pass, then its
compensation is re-driven. A second log parser without CONSOLE_TOKEN answers read-only.

The log parser's own passes are effectively off (RECOVERY_INTERVAL_MS=10 min after the one at
start), so only the console's pass can recover the stuck saga.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from conftest import DOWN_TIMEOUT, _log_tails, shoplog, shoplog_bin
from helpers import Api, wait_for

OFFSET = 11000
GATEWAY = 9900
BASE = f"http://127.0.0.1:{GATEWAY}"
TOKEN = "console-test-token"
ENV = {
    "SHOPLOG_PORT_OFFSET": str(OFFSET),
    "SHOPLOG_GATEWAY_PORT": str(GATEWAY),
    "CONSOLE_TOKEN": TOKEN,
    "SAGA_TIMEOUT_MS": "1500",
    "RECOVERY_INTERVAL_MS": "600000",
    "REDRIVE_AFTER_MS": "1000",
    "CHECKOUT_TIMEOUT_MS": "60000",
    "SHOPLOG_SUPERVISE": "0",  # a killed stock stays down until the test starts it again
}
READ_ONLY_PORT = 8105 + OFFSET + 50
BEARER = {"Authorization": f"Bearer {TOKEN}"}


class Stack:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.api = Api(BASE)

    def run(self, *args, **env) -> subprocess.CompletedProcess:
        return shoplog(self.data_dir, *args, **{**ENV, **env})

    def json(self, *args):
        out = self.run(*args, "--json")
        assert out.returncode in (0, 1), out.stderr
        return json.loads(out.stdout)


@pytest.fixture(scope="module")
def stack():
    if not shoplog_bin().exists():
        pytest.skip(f"no shoplog binary at {shoplog_bin()}")
    data_dir = Path(tempfile.mkdtemp(prefix="shoplog-console-"))
    s = Stack(data_dir)
    up = s.run("up", "--detach")
    assert up.returncode == 0, up.stderr + _log_tails(data_dir)
    wait_for(lambda: console_ready(), "the console to reach the databases")
    yield s
    s.api.close()
    s.run("down", "--wipe", timeout=DOWN_TIMEOUT)
    shutil.rmtree(data_dir, ignore_errors=True)


def console_ready() -> bool:
    """The console answers, and the log parser's first pass has built the saga index (the list
    answers 503 until then)."""
    try:
        return all(requests.get(f"{BASE}{p}", timeout=2).status_code == 200
                   for p in ["/console/api/overview", "/console/api/sagas"])
    except requests.RequestException:
        return False


def get(path: str, **kw) -> requests.Response:
    return requests.get(BASE + path, timeout=15, allow_redirects=False, **kw)


def post(path: str, **kw) -> requests.Response:
    return requests.post(BASE + path, timeout=60, allow_redirects=False, **kw)


def fresh(path: str, after_ms: int | None = None) -> dict:
    """The JSON of an overview or list path once the console's saga index was read after
    `after_ms` (default: now): the index is re-read at most every 2 s, not per view."""
    after_ms = int(time.time() * 1000) if after_ms is None else after_ms
    deadline = time.monotonic() + 15
    while True:
        body = get(path).json()
        as_of = body["sagas"]["as_of_ms"] if "sagas" in body else body["as_of_ms"]
        if as_of >= after_ms or time.monotonic() > deadline:
            return body
        time.sleep(0.3)


def checkouts(api: Api) -> dict:
    """Two paid orders of one user, one refused for credit (another user): their ids."""
    item = api.create_item(1, 10)
    rich, poor = api.create_user(100), api.create_user(0)
    out = {"rich": rich, "poor": poor, "paid": [], "refused": []}
    for user, n in ((rich, 2), (poor, 1)):
        for _ in range(n):
            order = api.create_order(user)
            api.add_item(order, item, 1)
            r = api.post(f"/orders/checkout/{order}")
            out["paid" if r.status_code == 200 else "refused"].append(order)
    assert len(out["paid"]) == 2 and len(out["refused"]) == 1, out
    return out


@pytest.fixture(scope="module")
def made(stack):
    return checkouts(stack.api)


def test_pages_and_api_answer_through_the_gateway_and_agree_with_the_cli(stack, made):
    for path in ["/console/", "/console/sagas", "/console/login", f"/console/sagas?user={made['rich']}"]:
        r = get(path)
        assert r.status_code == 200, (path, r.text[:300])
        assert r.headers["content-type"].startswith("text/html"), path
        assert "default-src 'self'" in r.headers["content-security-policy"]
        external = re.findall(r'(?:src|href|action)="(?!/)[^"]*"', r.text)
        assert not external, f"{path}: external assets {external}"
    assert get("/console").status_code == 301
    for asset, kind in [("console.js", "javascript"), ("console.css", "text/css")]:
        r = get(f"/console/assets/{asset}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    r = get("/console/api/chart/checkouts.svg")
    assert r.status_code == 200 and r.text.startswith("<svg")

    # The active instance names itself at its next sample (every 2 s) after taking the lease.
    wait_for(lambda: get("/console/api/overview").json()["active_instance"] == "logparser",
             "the active log parser to name itself")
    cli = stack.json("sagas")
    overview = fresh("/console/api/overview")
    by_state = {}
    for s in cli:
        state = {"commit": "committed", "none": "in-flight"}.get(s["decision"]) or (
            "aborted" if s["done"] else "compensating")
        by_state[state] = by_state.get(state, 0) + 1
    for state in ["committed", "aborted", "in-flight", "compensating"]:
        assert overview["sagas"][state] == by_state.get(state, 0), (state, overview["sagas"], by_state)
    assert overview["sagas"]["total"] == len(cli)
    assert overview["active"] is True and overview["read_only"] is False
    assert overview["active_instance"] == "logparser" and overview["active_for_ms"] > 0
    assert overview["groups"] and overview["dead_letters"] == 0
    assert {"log", "stream", "group", "lag", "pending"} <= set(overview["groups"][0])

    listed = fresh("/console/api/sagas?per_page=500")
    assert {s["id"] for s in listed["items"]} == {s["id"] for s in cli}
    # One saga: the same document as `shoplog saga <id> --json`.
    paid_saga = next(s["id"] for s in cli if s["order"] == made["paid"][0])
    api_doc = get(f"/console/api/sagas/{paid_saga}").json()
    assert api_doc == stack.json("saga", paid_saga)
    kinds = [step["kind"] for step in api_doc[0]["timeline"]]
    assert kinds[0] == "CheckoutStarted" and "CheckoutCommitted" in kinds
    page = get(f"/console/sagas/{paid_saga}").text
    for step in api_doc[0]["timeline"]:
        assert step["stream_id"] in page and step["kind"] in page
    assert "<svg" in page and 'class="timeline"' in page
    # An order id shows its sagas.
    assert get(f"/console/api/sagas/{made['refused'][0]}").json()[0]["record"]["order"] == made["refused"][0]


def test_filters_and_pages_select_what_the_cli_selects(stack, made):
    cli = stack.json("sagas")
    committed = fresh("/console/api/sagas?state=committed&per_page=500")
    assert {s["id"] for s in committed["items"]} == {s["id"] for s in cli if s["decision"] == "commit"}
    assert all(s["state"] == "committed" for s in committed["items"])
    assert committed["total"] == len(committed["items"])
    cli_committed = {s["id"] for s in stack.json("sagas", "--state", "committed")}
    assert {s["id"] for s in committed["items"]} == cli_committed
    mine = get(f"/console/api/sagas?user={made['rich']}").json()
    assert mine["total"] == 2 and {s["order"] for s in mine["items"]} == set(made["paid"])
    one = get(f"/console/api/sagas?order={made['refused'][0]}").json()
    assert one["total"] == 1 and one["items"][0]["state"] == "aborted"
    assert get("/console/api/sagas?older_than=1h").json()["total"] == 0
    # Pages: one row each, newest first, each older than the last (keyset paging: a page's
    # `next` cursor asks for the following one), together the whole list, then no `next`.
    total = get("/console/api/sagas").json()["total"]
    rows, before = [], None
    for _ in range(total + 1):
        body = get("/console/api/sagas?per_page=1" + (f"&before={before}" if before else "")).json()
        rows += [s["id"] for s in body["items"]]
        before = body["next"]
        if before is None:
            break
    assert len(rows) == total and len(set(rows)) == total
    assert before is None
    assert get("/console/api/sagas?page=2").status_code == 400, "page numbers gave way to cursors"
    page = get(f"/console/sagas?user={made['rich']}").text
    assert made["paid"][0] in page and made["refused"][0] not in page


@pytest.mark.parametrize("path", [
    "/console/api/sagas?state=paid", "/console/api/sagas?older_than=soon", "/console/api/sagas?before=0",
    "/console/api/sagas?before=x-1", "/console/api/sagas?per_page=100000", "/console/api/sagas?colour=red",
    "/console/api/sagas?order=a%2Fb", "/console/api/sagas/%3Cscript%3E", "/console/api/sagas/a%20b",
])
def test_bad_input_is_a_json_400(stack, path):
    r = get(path)
    assert r.status_code == 400, (path, r.status_code, r.text)
    assert "error" in r.json()


def test_bad_input_on_a_page_is_an_html_4xx(stack):
    r = get("/console/sagas?state=paid")
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
    assert "state=paid" in r.text
    r = get("/console/sagas/nosuchsaga0000")
    assert r.status_code == 404 and "nosuchsaga0000" in r.text
    assert get("/console/api/sagas/nosuchsaga0000").status_code == 404
    assert get("/console/nope").status_code == 404
    assert get("/console/api/recover").status_code == 405
    assert post("/console/api/overview").status_code == 405


def test_actions_need_the_token_and_the_same_origin(stack):
    before = stack.json("sagas")
    for headers, status in [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Cookie": "shoplog_console=wrong"}, 401),
        ({**BEARER, "Origin": "http://evil.example"}, 403),
        ({**BEARER, "Sec-Fetch-Site": "cross-site"}, 403),
        ({**BEARER, "Origin": "null"}, 403),
    ]:
        r = post("/console/api/recover", headers=headers)
        assert r.status_code == status, (headers, r.status_code, r.text)
        assert "error" in r.json()
    assert stack.json("sagas") == before, "a refused action changed nothing"
    # The login form: a wrong token is the form again with 401; the right one sets the cookie.
    r = post("/console/login", data={"token": "wrong"})
    assert r.status_code == 401 and "wrong operator token" in r.text
    r = post("/console/login", data={"token": TOKEN}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    r = post("/console/login", data={"token": TOKEN}, headers={"Origin": BASE})
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console/" in cookie
    jar = {"shoplog_console": r.cookies["shoplog_console"]}
    r = post("/console/api/recover", cookies=jar, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403, "the cookie does not make a cross-site request pass"
    r = post("/console/api/recover", cookies=jar, headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200, r.text
    assert r.json()["mode"] == "full" and r.json()["dry_run"] is False
    # Every action is logged with who and what.
    log = (stack.data_dir / "logs" / "logparser.log").read_text(errors="replace")
    assert "console action refused" in log and "console action: recovery pass" in log


@contextlib.contextmanager
def second_logparser(stack, port: int, instance: str, token: str):
    """Another log parser on the suite's stack (a standby: the stack's own holds the lease),
    serving its console on `port`; yields its base URL once the console answers."""
    env = dict(
        os.environ,
        **{k: v for k, v in ENV.items() if k != "CONSOLE_TOKEN"},
        CONSOLE_TOKEN=token,
        PORT=str(port),
        INSTANCE=instance,
        ORDER_DB_URL=f"redis://127.0.0.1:{6401 + OFFSET}/",
        STOCK_DB_URL=f"redis://127.0.0.1:{6402 + OFFSET}/",
        PAYMENT_DB_URL=f"redis://127.0.0.1:{6403 + OFFSET}/",
        LOCK_URLS=",".join(f"redis://127.0.0.1:{p + OFFSET}/" for p in (6411, 6412, 6413)),
        IDS_URL=f"http://127.0.0.1:{8104 + OFFSET}",
        LOG_RETAIN="off",
    )
    log = open(stack.data_dir / "logs" / f"{instance}.log", "ab")
    proc = subprocess.Popen([str(shoplog_bin().parent / "logparser")], env=env, stdout=log, stderr=log)
    log.close()
    base = f"http://127.0.0.1:{port}"
    try:
        def ready():
            try:
                return requests.get(f"{base}/console/api/overview", timeout=2).status_code == 200
            except requests.RequestException:
                return False
        wait_for(ready, f"the console of {instance}")
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_a_console_without_token_is_read_only(stack):
    with second_logparser(stack, READ_ONLY_PORT, "console-read-only", token="") as base:
        overview = requests.get(f"{base}/console/api/overview", timeout=5).json()
        assert overview["read_only"] is True and overview["active"] is False, "a standby"
        page = requests.get(f"{base}/console/", timeout=5)
        assert page.status_code == 200 and "read-only" in page.text
        for path in ["/console/api/recover", "/console/api/sagas/x1/redrive"]:
            r = requests.post(base + path, headers=BEARER, timeout=5)
            assert r.status_code == 403, r.text
            assert r.json()["error"] == "console is read-only: set CONSOLE_TOKEN"


def test_a_standby_refuses_actions_and_says_so(stack):
    """A second log parser with the token: it serves pages, and an action on it is a 503 that
    names it a standby (the gateway would move the request on to the next instance)."""
    with second_logparser(stack, READ_ONLY_PORT + 1, "console-standby", token=ENV["CONSOLE_TOKEN"]) as base:
        assert requests.get(f"{base}/console/sagas", timeout=5).status_code == 200
        r = requests.post(f"{base}/console/api/recover", headers=BEARER, timeout=5)
        assert r.status_code == 503 and "standby" in r.json()["error"], r.text
        assert "console-standby" in r.json()["error"]
        assert "(logparser)" in r.json()["error"], "it names the active instance"
        overview = requests.get(f"{base}/console/api/overview", timeout=5).json()
        assert overview["active"] is False and overview["active_instance"] == "logparser"


def test_the_recovery_pass_aborts_a_stuck_saga_and_its_compensation_is_redriven(stack, made):
    api = stack.api
    item = api.create_item(1, 5)
    user = api.create_user(10)
    order = api.create_order(user)
    api.add_item(order, item, 2)
    status = {c["name"]: c for c in stack.json("status")}
    os.killpg(status["stock-1"]["pid"], signal.SIGKILL)
    try:
        requests.post(f"{BASE}/orders/checkout/{order}", timeout=1)
    except requests.RequestException:
        pass  # abandoned: nobody reserves while stock is down
    time.sleep(1.6)  # past SAGA_TIMEOUT: stuck

    def stuck():
        body = fresh("/console/api/sagas?stuck=1")
        return [s for s in body["items"] if s["order"] == order]
    wait_for(lambda: stuck(), "the saga to show as stuck", timeout=10)
    saga = stuck()[0]["id"]
    assert stuck()[0]["state"] == "in-flight"
    # Re-drive needs a compensating saga: refused (409) while it is in flight.
    r = post(f"/console/api/sagas/{saga}/redrive", headers=BEARER)
    assert r.status_code == 409 and "in-flight" in r.json()["error"]

    r = post("/console/api/recover", headers=BEARER)
    assert r.status_code == 200, r.text
    assert saga in r.json()["aborted"]
    record = stack.json("saga", saga)[0]["record"]
    assert record["decision"] == "abort" and "stock" in record["pending"]
    assert fresh(f"/console/api/sagas?state=compensating&order={order}")["total"] == 1

    r = post(f"/console/api/sagas/{saga}/redrive", headers=BEARER)
    assert r.status_code == 200, r.text
    assert r.json()["redriven"] is True
    kinds = [s["kind"] for s in stack.json("saga", saga)[0]["timeline"]]
    assert kinds.count("CheckoutAborted") == 2, kinds
    # A committed saga is not re-driven.
    paid = get(f"/console/api/sagas?order={made['paid'][0]}").json()["items"][0]["id"]
    assert post(f"/console/api/sagas/{paid}/redrive", headers=BEARER).status_code == 409

    up = stack.run("up", "--detach")  # stock is back: releases once, confirms
    assert up.returncode == 0, up.stderr
    wait_for(lambda: stack.json("saga", saga)[0]["record"]["done"] is True, "the compensation")
    assert api.item(item)["stock"] == 5 and api.credit(user) == 10
    audit = stack.run("audit", "--json")
    assert audit.returncode == 0, audit.stdout[-2000:]
    wait_for(lambda: (get("/console/api/overview").json().get("last_audit") or {}).get("clean") is True,
             "the overview to show the audit")
