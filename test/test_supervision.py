"""Supervision of the local stack, on stacks of its own (ports offset by 9000, gateway on 9800):
a component killed with SIGKILL is restarted by the supervisor that `shoplog up --detach` leaves
behind, with no `up` run by anyone, and comes back with its data; restarts are counted in
`shoplog status`; a component that keeps crashing waits longer each time; `shoplog down` stops the
supervisor first, so that nothing comes back; `--no-supervise` (or SHOPLOG_SUPERVISE=0) leaves a
killed component dead; one supervisor per data directory; the foreground `shoplog up` supervises
too, and Ctrl-C stops everything.

Every test gets a fresh stack, wiped afterwards.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from conftest import DOWN_TIMEOUT, _log_tails, shoplog, shoplog_bin
import helpers
from helpers import Api

OFFSET = 9000
GATEWAY = 9800
ORDER_PORT = 8101 + OFFSET
# Supervised unless a test says otherwise, whatever the caller's environment says.
ENV = {"SHOPLOG_PORT_OFFSET": str(OFFSET), "SHOPLOG_GATEWAY_PORT": str(GATEWAY), "SHOPLOG_SUPERVISE": "1"}
BACK_WITHIN = 15  # seconds for a killed component to be healthy again


def wait_for(check, what: str, timeout: float = BACK_WITHIN, every: float = 0.1):
    """`helpers.wait_for` with this module's defaults."""
    helpers.wait_for(check, what, timeout, every)


def alive(pid: int | None) -> bool:
    """Whether `pid` is a live process (a zombie counts as dead)."""
    if not pid:
        return False
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Stack:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.api = Api(f"http://127.0.0.1:{GATEWAY}")

    def run(self, *args, **env) -> subprocess.CompletedProcess:
        return shoplog(self.data_dir, *args, **{**ENV, **env})

    def up(self, *args, **env) -> subprocess.CompletedProcess:
        out = self.run("up", "--detach", *args, **env)
        assert out.returncode == 0, out.stderr + self.tails()
        return out

    def status(self) -> dict:
        out = self.run("status", "--json")
        assert out.returncode in (0, 1), out.stderr
        return {c["name"]: c for c in json.loads(out.stdout)}

    def table(self) -> str:
        return self.run("status").stdout

    def supervisor_pid(self) -> int | None:
        """The supervisor's pid, as `shoplog status` reports it (its last line)."""
        m = re.search(r"^supervisor: running \(pid (\d+)\)", self.table(), re.M)
        return int(m.group(1)) if m else None

    def kill(self, name: str) -> int:
        """SIGKILLs the component's process group, as a crash would; returns the pid it had."""
        pid = self.status()[name]["pid"]
        assert pid, f"{name} is not running"
        os.killpg(pid, signal.SIGKILL)
        return pid

    def back(self, name: str, old_pid: int, timeout: float = BACK_WITHIN) -> dict:
        """Waits until `name` is healthy under a new pid; returns its status."""
        seen = {}

        def check():
            seen.update(self.status()[name])
            return seen["health"] == "ok" and seen["pid"] not in (None, old_pid)

        try:
            wait_for(check, f"{name} to come back", timeout, every=0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}: {seen}\n{self.supervisor_log()}\n{self.tails()}") from None
        return seen

    def supervisor_log(self) -> str:
        path = self.data_dir / "logs" / "supervisor.log"
        return path.read_text() if path.exists() else "(no supervisor.log)"

    def tails(self) -> str:
        return _log_tails(self.data_dir)


@pytest.fixture
def stack():
    if not shoplog_bin().exists():
        pytest.skip(f"no shoplog binary at {shoplog_bin()}")
    s = Stack(Path(tempfile.mkdtemp(prefix="shoplog-supervision-")))
    yield s
    s.api.close()
    s.run("down", "--wipe", timeout=DOWN_TIMEOUT)


def test_a_killed_service_and_database_come_back_by_themselves_with_their_data(stack):
    out = stack.up()
    assert re.search(r"supervisor\s+started \(pid \d+", out.stderr), out.stderr
    supervisor = stack.supervisor_pid()
    assert alive(supervisor)
    api = stack.api
    item = api.create_item(3, 10)
    user = api.create_user(50)
    order = api.create_order(user)
    api.add_item(order, item, 2)

    before = stack.status()
    order_pid, db_pid = stack.kill("order-1"), stack.kill("stock-db")
    # Nobody runs `up`: the supervisor brings both back.
    stack.back("order-1", order_pid)
    stack.back("stock-db", db_pid)
    wait_for(lambda: all(c["health"] == "ok" for c in stack.status().values()), "every component healthy")

    after = stack.status()
    assert {n: c["restarts"] for n, c in after.items() if c["restarts"]} == {"order-1": 1, "stock-db": 1}, after
    unchanged = [n for n in before if n not in ("order-1", "stock-db")]
    assert [after[n]["pid"] for n in unchanged] == [before[n]["pid"] for n in unchanged]
    assert stack.supervisor_pid() == supervisor
    table = stack.table()
    assert re.search(r"^order-1\s+\d+\s+\d+\s+ok\s+1\s", table, re.M), table
    log = stack.supervisor_log()
    for name in ("order-1", "stock-db"):
        assert re.search(rf"{name} \(pid \d+\) exited: .*; restarting in 0.5 s \(attempt 1\)", log), log
        assert re.search(rf"{name} restarted \(pid \d+, attempt 1, 1 restart", log), log

    # The data is intact (stock-db reloaded its AOF), and the saga runs across both.
    assert api.item(item) == {"stock": 10, "price": 3}
    assert api.credit(user) == 50
    r = api.post(f"/orders/checkout/{order}")
    assert r.status_code == 200, r.text
    assert (api.item(item)["stock"], api.credit(user)) == (8, 44)


def test_a_component_that_keeps_crashing_waits_longer_each_time(stack):
    stack.up()
    downtimes = []
    for _ in range(3):
        pid = stack.kill("order-1")
        killed = time.monotonic()
        # Poll the service itself: quicker than `status`, and it answers only once the new
        # process serves.
        wait_for(lambda: order_healthy(), "order-1 to answer again", every=0.05)
        downtimes.append(time.monotonic() - killed)
        stack.back("order-1", pid)
    log = stack.supervisor_log()
    delays = re.findall(r"order-1 \(pid \d+\) exited: .*; restarting in ([\d.]+) s \(attempt (\d+)\)", log)
    assert delays == [("0.5", "1"), ("1", "2"), ("2", "3")], log
    # The 2nd and 3rd processes were the supervisor's own children: it knows how they ended.
    assert len(re.findall(r"order-1 \(pid \d+\) exited: killed by signal 9", log)) == 2, log
    assert stack.status()["order-1"]["restarts"] == 3
    # Loosely: the third wait (2 s) is clearly longer than the first (0.5 s).
    assert downtimes[2] > downtimes[0] + 0.5, downtimes
    assert downtimes[2] >= 1.5, downtimes


def order_healthy() -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{ORDER_PORT}/orders/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_down_stops_the_supervisor_first_and_nothing_comes_back(stack):
    stack.up()
    supervisor = stack.supervisor_pid()
    pids = {n: c["pid"] for n, c in stack.status().items()}
    # A crash just before `down`: the supervisor must not restart it behind down's back.
    stack.kill("payment-1")
    down = stack.run("down", timeout=DOWN_TIMEOUT)
    assert down.returncode == 0, down.stderr
    lines = [l.split()[0] for l in down.stderr.splitlines() if "stopped (pid" in l]
    assert lines[0] == "supervisor", down.stderr
    assert not alive(supervisor)
    assert "exiting" in stack.supervisor_log().splitlines()[-1], stack.supervisor_log()

    time.sleep(3)  # several of the supervisor's ticks, were it still there
    after = stack.status()
    assert all(c["health"] == "down" and c["pid"] is None for c in after.values()), after
    assert [n for n, pid in pids.items() if alive(pid)] == []
    assert "supervisor: not running" in stack.table()
    run_dir = stack.data_dir / "run"
    assert sorted(p.name for p in run_dir.iterdir() if p.suffix in (".pid", ".restarts")) == []

    # The next `up` starts a fresh supervisor, and the counts start again.
    stack.up()
    assert alive(stack.supervisor_pid())
    assert all(c["restarts"] == 0 for c in stack.status().values())


def test_without_supervision_a_killed_component_stays_down(stack):
    out = stack.up("--no-supervise")
    assert "supervisor   none" in out.stderr, out.stderr
    assert stack.supervisor_pid() is None
    assert "supervisor: not running" in stack.table()
    stack.kill("order-1")
    time.sleep(4)
    order = stack.status()["order-1"]
    assert (order["health"], order["pid"], order["restarts"]) == ("down", None, 0), order

    # SHOPLOG_SUPERVISE=0 is the same: `up` starts what is missing, and no supervisor.
    out = stack.up(SHOPLOG_SUPERVISE="0")
    assert re.search(r"order-1\s+started", out.stderr), out.stderr
    assert stack.supervisor_pid() is None
    stack.kill("order-1")
    time.sleep(3)
    assert stack.status()["order-1"]["pid"] is None

    # A value that means neither is refused before anything starts.
    bad = stack.run("up", "--detach", SHOPLOG_SUPERVISE="maybe")
    assert bad.returncode == 2 and "SHOPLOG_SUPERVISE" in bad.stderr, bad.stderr
    assert stack.status()["order-1"]["pid"] is None

    # A later supervised `up` adds the supervisor to the running stack.
    stack.up()
    assert stack.supervisor_pid() is not None
    pid = stack.status()["order-1"]["pid"]
    stack.kill("order-1")
    stack.back("order-1", pid)


def test_one_supervisor_per_stack(stack):
    stack.up()
    first = stack.supervisor_pid()
    again = stack.up()
    assert re.search(rf"supervisor\s+already running \(pid {first}\)", again.stderr), again.stderr
    # Started by hand, a second supervisor sees the first and leaves at once.
    by_hand = stack.run("supervise", "--data-dir", str(stack.data_dir), timeout=30)
    assert by_hand.returncode == 0, by_hand.stderr
    assert f"another supervisor (pid {first})" in by_hand.stderr, by_hand.stderr
    assert stack.supervisor_pid() == first
    supervisors = [p for p in os.listdir("/proc") if p.isdigit() and is_supervisor_of(int(p), stack.data_dir)]
    assert [int(p) for p in supervisors] == [first]


def is_supervisor_of(pid: int, data_dir: Path) -> bool:
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        return False
    return b"supervise" in argv and str(data_dir).encode() in argv and alive(pid)


def test_the_foreground_up_supervises_until_ctrl_c(stack):
    env = dict(os.environ, SHOPLOG_DATA_DIR=str(stack.data_dir), **ENV)
    err = open(stack.data_dir / "foreground.err", "w+")
    # Its own session, as in a terminal: Ctrl-C reaches `up` and no component.
    up = subprocess.Popen([str(shoplog_bin()), "up"], env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        wait_for(lambda: stack.supervisor_pid() == up.pid, "the foreground up to supervise", timeout=90,
                 every=0.5)
        assert all(c["health"] == "ok" for c in stack.status().values())
        pid = stack.kill("lock-2")
        stack.back("lock-2", pid)
        assert stack.status()["lock-2"]["restarts"] == 1
        os.killpg(up.pid, signal.SIGINT)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    err.seek(0)
    text = err.read()
    err.close()
    assert re.search(r"lock-2 \(pid \d+\) exited: killed by signal 9 \(SIGKILL\); restarting in 0.5 s", text), text
    assert "stopping…" in text, text
    assert all(c["health"] == "down" for c in stack.status().values())
    assert stack.supervisor_pid() is None
