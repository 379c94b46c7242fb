"""The operator console in a real browser (issue 16, point 6): headless Chromium from Debian's
packages (`chromium`, `chromium-driver`; `make test-deps` installs them) driven by selenium,
against a stack of its own (ports offset by 11500, gateway 9950) with live checkouts. It opens
the overview, the saga list and one saga, checks what they show against `shoplog sagas --json`
and `shoplog saga <id> --json`, uses the filter form, runs the recovery pass from the page
without the token (refused) and after logging in (done), and saves screenshots to
target/console-screenshots/*.png; with SHOPLOG_UPDATE_SCREENSHOTS=1 to docs/console/*.png (the
README shows them), so that a test run leaves the checkout as it was.

Without Chromium it skips, saying so; with SHOPLOG_REQUIRE_BROWSER=1 (CI) it fails instead.
SHOPLOG_CHROMIUM and SHOPLOG_CHROMEDRIVER name other binaries.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import DOWN_TIMEOUT, ROOT, _log_tails, shoplog, shoplog_bin
from helpers import Api, wait_for

OFFSET = 11500
GATEWAY = 9950
BASE = f"http://127.0.0.1:{GATEWAY}"
TOKEN = "browser-test-token"
ENV = {
    "SHOPLOG_PORT_OFFSET": str(OFFSET),
    "SHOPLOG_GATEWAY_PORT": str(GATEWAY),
    "CONSOLE_TOKEN": TOKEN,
}
SHOTS = ROOT / ("docs/console" if os.environ.get("SHOPLOG_UPDATE_SCREENSHOTS") == "1"
                else "target/console-screenshots")


def _browser_paths() -> tuple[str | None, str | None]:
    """Chromium and its driver: $SHOPLOG_CHROMIUM / $SHOPLOG_CHROMEDRIVER when set (and
    existing), else Debian's packages on the PATH."""
    def given(var):
        path = os.environ.get(var)
        return path if path and os.path.exists(path) else None
    if os.environ.get("SHOPLOG_CHROMIUM"):
        chromium = given("SHOPLOG_CHROMIUM")
    else:
        chromium = next((p for p in map(shutil.which, ["chromium", "chromium-browser"]) if p), None)
    if os.environ.get("SHOPLOG_CHROMEDRIVER"):
        driver = given("SHOPLOG_CHROMEDRIVER")
    else:
        driver = shutil.which("chromedriver") or next(
            (p for p in ["/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver"] if os.path.exists(p)), None)
    return chromium, driver


def _unavailable(why: str):
    if os.environ.get("SHOPLOG_REQUIRE_BROWSER") == "1":
        pytest.fail(f"SHOPLOG_REQUIRE_BROWSER=1 but {why}")
    pytest.skip(f"{why}: the browser test of the console is skipped "
                "(`make test-deps` installs chromium and chromium-driver; `make python-deps` selenium)")


@pytest.fixture(scope="module")
def driver():
    chromium, chromedriver = _browser_paths()
    if not chromium or not chromedriver:
        _unavailable(f"no Chromium ({chromium}) or chromedriver ({chromedriver}) found")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("the selenium package is not installed")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1400", "--disable-extensions", "--no-first-run"]:
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    d.set_page_load_timeout(30)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def stack():
    if not shoplog_bin().exists():
        pytest.skip(f"no shoplog binary at {shoplog_bin()}")
    data_dir = Path(tempfile.mkdtemp(prefix="shoplog-browser-"))
    up = shoplog(data_dir, "up", "--detach", **ENV)
    assert up.returncode == 0, up.stderr + _log_tails(data_dir)

    def ready():
        try:
            # The overview answers, and the first pass has built the saga index the list reads.
            return all(requests.get(f"{BASE}{p}", timeout=2).status_code == 200
                       for p in ["/console/api/overview", "/console/api/sagas"])
        except requests.RequestException:
            return False
    wait_for(ready, "the console")
    yield data_dir
    shoplog(data_dir, "down", "--wipe", timeout=DOWN_TIMEOUT, **ENV)
    shutil.rmtree(data_dir, ignore_errors=True)


def cli(data_dir: Path, *args):
    out = shoplog(data_dir, *args, "--json", **ENV)
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)


def live_checkouts(seconds: float) -> dict:
    """Checkouts for `seconds` from two threads (some refused for credit), so that the charts
    have something to draw; returns the users and orders."""
    api = Api(BASE)
    item = api.create_item(1, 10_000)
    rich, poor = api.create_user(10_000), api.create_user(1)
    made = {"rich": rich, "poor": poor, "orders": []}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(user):
        a = Api(BASE)
        while time.monotonic() < stop:
            order = a.create_order(user)
            a.add_item(order, item, 1)
            a.post(f"/orders/checkout/{order}")
            with lock:
                made["orders"].append(order)
            time.sleep(0.05)
        a.close()
    threads = [threading.Thread(target=worker, args=(u,)) for u in (rich, rich, poor)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    api.close()
    return made


def text(d, css: str) -> str:
    from selenium.webdriver.common.by import By
    return d.find_element(By.CSS_SELECTOR, css).text


def wait_until(check, what: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:  # the page is reloading: try again
            last = e
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} ({last})")


def test_the_console_in_a_browser(driver, stack):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    SHOTS.mkdir(parents=True, exist_ok=True)
    made = live_checkouts(6)
    sagas = cli(stack, "sagas")
    assert len(sagas) == len(made["orders"])
    by_state = {}
    for s in sagas:
        state = {"commit": "committed", "none": "in-flight"}.get(s["decision"]) or (
            "aborted" if s["done"] else "compensating")
        by_state[state] = by_state.get(state, 0) + 1
    assert by_state.get("committed") and by_state.get("aborted"), by_state

    audit = shoplog(stack, "audit", "--json", **ENV)
    assert audit.returncode == 0, audit.stdout[-2000:]

    # Overview: the numbers of `shoplog sagas --json`, refreshed live; charts drawn; the audit.
    driver.get(f"{BASE}/console/")
    for state in ["committed", "aborted"]:
        wait_until(lambda: text(driver, f'[data-k="/sagas/{state}"]') == str(by_state[state]),
                   f"the overview's {state} count")
    wait_until(lambda: text(driver, "#updated").endswith("UTC"), "a live refresh")
    charts = driver.find_elements(By.CSS_SELECTOR, "img.live-chart")
    assert len(charts) == 5
    wait_until(lambda: all(driver.execute_script("return arguments[0].naturalWidth", c) > 0 for c in charts),
               "the charts to load")
    svg = requests.get(f"{BASE}/console/api/chart/checkouts.svg", timeout=5).text
    assert "<polyline" in svg, "the checkouts chart has points"
    assert float(text(driver, '[data-k="/dead_letters"]')) == 0
    assert text(driver, '[data-k="/last_audit/clean"]') == "yes"
    assert text(driver, '[data-k="/last_audit/violations"]') == "0"
    assert text(driver, "#active-instance") == "logparser"
    wait_until(lambda: {"order", "stock", "payment"} <= {
        r.find_element(By.CSS_SELECTOR, "td").text for r in driver.find_elements(By.CSS_SELECTOR, "#services tr")},
        "requests by service")
    driver.save_screenshot(str(SHOTS / "overview.png"))

    # The saga list: the same ids as the CLI; the filter form narrows it.
    driver.get(f"{BASE}/console/sagas?per_page=500")
    rows = driver.find_elements(By.CSS_SELECTOR, "#saga-list tbody tr")
    assert {r.get_attribute("data-saga") for r in rows} == {s["id"] for s in sagas}
    Select(driver.find_element(By.ID, "f-state")).select_by_value("committed")
    driver.find_element(By.ID, "f-user").send_keys(made["rich"])
    driver.find_element(By.ID, "f-apply").click()
    wait_until(lambda: "state=committed" in driver.current_url, "the filtered list")
    committed = {s["id"] for s in cli(stack, "sagas", "--state", "committed") if s["user"] == made["rich"]}
    rows = driver.find_elements(By.CSS_SELECTOR, "#saga-list tbody tr")
    shown = {r.get_attribute("data-saga") for r in rows}
    assert shown <= committed and len(shown) == min(50, len(committed))
    assert int(text(driver, "#total")) == len(committed)
    driver.save_screenshot(str(SHOTS / "sagas.png"))
    if len(committed) > 50:  # the next page: the following rows, the same filter
        driver.find_element(By.ID, "next").click()
        wait_until(lambda: "before=" in driver.current_url, "the next page")
        rows = driver.find_elements(By.CSS_SELECTOR, "#saga-list tbody tr")
        second = {r.get_attribute("data-saga") for r in rows}
        assert second and second <= committed and not second & shown

    # One saga: its timeline is `shoplog saga <id> --json`'s.
    refused = next(s for s in sagas if s["decision"] == "abort")
    driver.get(f"{BASE}/console/sagas/{refused['id']}")
    doc = cli(stack, "saga", refused["id"])[0]
    steps = driver.find_elements(By.CSS_SELECTOR, "table.steps tr.step")
    assert [s.get_attribute("data-id") for s in steps] == [s["stream_id"] for s in doc["timeline"]]
    assert text(driver, "#decision") == doc["record"]["decision"] == "abort"
    assert text(driver, "#state") == "aborted"
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.timeline circle")) == len(doc["timeline"])
    driver.save_screenshot(str(SHOTS / "saga.png"))

    # The recovery pass from the page: refused without the token, done after logging in.
    driver.get(f"{BASE}/console/")
    driver.find_element(By.ID, "recover").click()
    wait_until(lambda: driver.find_element(By.ID, "action-result").get_attribute("data-status") == "401",
               "the refusal without token")
    assert "operator token" in text(driver, "#action-result")
    driver.get(f"{BASE}/console/login")
    driver.find_element(By.ID, "token").send_keys("wrong")
    driver.find_element(By.ID, "login").click()
    wait_until(lambda: "wrong operator token" in text(driver, "#login-error"), "the wrong token refused")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "login").click()
    wait_until(lambda: text(driver, "#mode") == "operator", "the login")
    driver.find_element(By.ID, "recover").click()
    wait_until(lambda: driver.find_element(By.ID, "action-result").get_attribute("data-status") == "200",
               "the recovery pass")
    assert '"mode": "full"' in text(driver, "#action-result")
    driver.save_screenshot(str(SHOTS / "action.png"))
    log = (stack / "logs" / "logparser.log").read_text(errors="replace")
    assert "console action: recovery pass" in log and "console action refused" in log
