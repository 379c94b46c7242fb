"""The fault-injection harness: a stack of its own, a recorded checkout storm, a SIGKILL in the
middle of it, a restart 1–3 s later, then every check of DESIGN.md's failure model once the system
is quiet again.

A storm populates with batch_init (items "0".."I-1" with S stock, users "0".."U-1" with C credit,
orders "0".."N-1" of two random items each), then checks out every order once from W threads,
recording each answer, while a side writer makes acknowledged single writes (create + add_funds,
create + add) whose effects must survive. Afterwards:

- `shoplog audit` is clean (conservation, saga atomicity, log completeness);
- for every item and user: final = initial − what the paid orders took (exactly once each);
- every 2xx order is paid, every 4xx order is not;
- every acknowledged create / add / add_funds / batch_init is there;
- consumer groups have nothing pending and no lag, and no dead letters.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

from conftest import DOWN_TIMEOUT, _log_tails, shoplog_bin
from helpers import Api, run_concurrently, wait_for  # noqa: F401 (wait_for: re-exported)

REPORT = Path(os.environ.get("FAULTS_REPORT", Path(__file__).resolve().parents[2] / "target" / "faults-report.jsonl"))

# Short timeouts so that a storm with a dead component settles within seconds.
FAULT_ENV = {
    "CHECKOUT_TIMEOUT_MS": "3000",
    "SAGA_TIMEOUT_MS": "4000",
    "RECOVERY_INTERVAL_MS": "500",
    "REDRIVE_AFTER_MS": "3000",
    "CLAIM_IDLE_MS": "1000",
    "LEASE_TTL_MS": "1500",
}


def group_threads(pgid: int) -> list[tuple[int, str]]:
    """Every thread of every process in process group `pgid`: (thread id, state letter of
    /proc/…/stat: R running, S sleeping, T stopped, Z zombie, …)."""
    def stat(path: str) -> list[str] | None:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:  # gone meanwhile
            return None
        return text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, pgrp, …

    threads = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fields = stat(f"/proc/{pid}/stat")
        if fields is None or int(fields[2]) != pgid:
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            t = stat(f"/proc/{pid}/task/{tid}/stat")
            if t is not None:
                threads.append((int(tid), t[0]))
    return threads


def wait_until_group(pgid: int, what: str, done, timeout: float = 5.0):
    """Waits until every thread of process group `pgid` is in a state `done` accepts.

    A signal is not a stop: `kill` returns once SIGSTOP or SIGKILL is queued, and a process
    stops (or dies) when the thread the signal woke is next scheduled, which on a busy machine
    can be milliseconds later, while its other threads run on (an order replica admitted a
    checkout sent a millisecond after `killpg` had returned). A fault's time is when it took
    effect."""
    deadline = time.monotonic() + timeout
    while True:
        running = [(tid, state) for tid, state in group_threads(pgid) if not done(state)]
        if not running:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process group {pgid} not {what} {timeout} s after the signal: {running}")
        time.sleep(0.0005)


class OperatedStack:
    """What the checks need of any deployment, given its `run(*shoplog_args)`: the consumer groups
    and the unfinished sagas, as the operator commands report them."""

    def groups(self) -> list[dict]:
        out = self.run("recover", "--dry-run", "--json")
        return json.loads(out.stdout)["groups"] if out.returncode in (0, 1) and out.stdout else []

    def unfinished_sagas(self) -> int:
        out = self.run("sagas", "--json")
        if out.returncode != 0:
            return -1
        return sum(1 for s in json.loads(out.stdout) if not s["done"])


class FaultStack(OperatedStack):
    """A local stack on its own ports, driven through the `shoplog` CLI."""

    report = REPORT

    def __init__(self, offset: int, gateway: int, replicas: int = 1, appendfsync: str = "always",
                 cluster: bool = False):
        self.offset, self.gateway, self.replicas, self.cluster = offset, gateway, replicas, cluster
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"shoplog-faults-{replicas}r-"))
        self.env = dict(
            os.environ,
            **FAULT_ENV,
            SHOPLOG_DATA_DIR=str(self.data_dir),
            SHOPLOG_PORT_OFFSET=str(offset),
            SHOPLOG_GATEWAY_PORT=str(gateway),
            SHOPLOG_APPENDFSYNC=appendfsync,
        )
        self.base = f"http://127.0.0.1:{gateway}"
        self.paused: dict[str, int] = {}  # component -> pid, while SIGSTOPped by `pause`

    def run(self, *args, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(shoplog_bin()), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def up(self):
        # --no-supervise: a killed component must stay down for as long as the scenario says
        # (e.g. a cluster primary for 8 s, to force a failover); the scenario calls `up` itself.
        out = self.run("up", "--detach", "--no-supervise", "--replicas", str(self.replicas),
                       *(["--cluster"] if self.cluster else []))
        assert out.returncode == 0, out.stderr + _log_tails(self.data_dir)

    def down(self):
        self.run("down", "--wipe", timeout=DOWN_TIMEOUT)

    def status(self) -> dict:
        out = self.run("status", "--json")
        return {c["name"]: c for c in json.loads(out.stdout)}

    def components(self) -> list[str]:
        return list(self.status())

    def kill(self, name: str) -> int:
        """SIGKILLs the component: its whole process group (nginx's workers too), as a crash of its
        host or container would. Returns once no thread of the group can run any more."""
        pid = self.status()[name]["pid"]
        os.killpg(pid, signal.SIGKILL)
        wait_until_group(pid, "dead", lambda state: state in "ZX")
        return pid

    def pause(self, name: str) -> int:
        """SIGSTOPs the component's process group: frozen, as by a long pause of its host, its
        connections open and its locks held, until `resume`. Returns once every thread of the
        group is stopped."""
        pid = self.status()[name]["pid"]
        os.killpg(pid, signal.SIGSTOP)
        self.paused[name] = pid
        wait_until_group(pid, "stopped", lambda state: state in "TtZX")
        return pid

    def resume(self, name: str):
        """SIGCONTs a component paused with `pause`."""
        os.killpg(self.paused.pop(name), signal.SIGCONT)

    def log_tails(self, lines: int = 15) -> str:
        return _log_tails(self.data_dir, lines=lines)

    def log_lines(self, pattern: str) -> list[str]:
        """Every line of the components' logs that matches the regular expression `pattern`, as
        `file: line`, escape codes removed."""
        found = []
        for log in sorted((self.data_dir / "logs").glob("*")):
            for line in log.read_text(errors="replace").splitlines():
                line = re.sub(r"\x1b\[[0-9;]*m", "", line)
                if re.search(pattern, line):
                    found.append(f"{log.name}: {line}")
        return found

    def describe(self) -> dict:
        """The deployment's settings, for the report."""
        return {"replicas": self.replicas, "appendfsync": self.env["SHOPLOG_APPENDFSYNC"],
                **({"databases": "Redis Cluster 3 × (1 + 1), WAIT 1"} if self.cluster else {})}


@dataclass
class StormResult:
    scenario: str
    killed: list = field(default_factory=list)  # (component, at seconds into the storm, down for s)
    answers: dict = field(default_factory=dict)  # order id -> status (599: transport error)
    in_flight_at_kill: list = field(default_factory=list)
    seconds: float = 0.0
    quiet_after: float = 0.0
    audit_clean: bool = False
    # Entity id -> the values it may have: {0, 7} when the add_funds was not acknowledged (it may
    # or may not have been applied: the answer can be lost after the change), {7} when it was.
    acked_users: dict = field(default_factory=dict)
    acked_items: dict = field(default_factory=dict)

    def counts(self) -> dict:
        c = {"2xx": 0, "4xx": 0, "5xx": 0}
        for s in self.answers.values():
            c["2xx" if s < 300 else "4xx" if s < 500 else "5xx"] += 1
        return c


class Storm:
    """One recorded checkout storm over a fresh batch_init population."""

    def __init__(self, stack: OperatedStack, n_orders: int = 3000, n_items: int = 50, stock: int = 40,
                 n_users: int = 300, credit: int = 6, workers: int = 32, seed: int = 0):
        self.stack, self.n_orders, self.workers = stack, n_orders, workers
        self.n_items, self.stock, self.n_users, self.credit = n_items, stock, n_users, credit
        self.rng = random.Random(seed)
        self.in_flight = 0
        self.lock = threading.Lock()
        self.durations: list[float] = []  # seconds each checkout took to be answered
        self.answered: list[float] = []  # when each checkout was answered, seconds into the storm
        self.failures: dict[str, str] = {}  # order id -> the 5xx's status and body, or why no answer

    def populate(self):
        api = Api(self.stack.base)
        for path in (f"/stock/batch_init/{self.n_items}/{self.stock}/1",
                     f"/payment/batch_init/{self.n_users}/{self.credit}",
                     f"/orders/batch_init/{self.n_orders}/{self.n_items}/{self.n_users}/1"):
            r = api.post(path)
            assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"
        api.close()

    def _checkout(self, api: Api, order: str) -> int:
        with self.lock:
            self.in_flight += 1
        sent = time.monotonic()
        try:
            r = api.post(f"/orders/checkout/{order}", timeout=30)
            if r.status_code >= 500:
                with self.lock:
                    self.failures[order] = f"{r.status_code} {r.text[:300]}"
            return r.status_code
        except requests.RequestException as e:
            with self.lock:
                self.failures[order] = f"no answer: {e}"
            return 599
        finally:
            with self.lock:
                self.in_flight -= 1
                now = time.monotonic()
                self.durations.append(now - sent)
                self.answered.append(now - self.started)

    def _side_writer(self, stop: threading.Event, result: StormResult):
        """Acknowledged single writes during the storm, on entities of their own."""
        api = Api(self.stack.base)
        while not stop.is_set():
            try:
                r = api.post("/payment/create_user", timeout=5)
                if r.status_code == 200:
                    user = r.json()["user_id"]
                    result.acked_users[user] = {0, 7}
                    if self._acknowledged(api, f"/payment/add_funds/{user}/7"):
                        result.acked_users[user] = {7}
                r = api.post("/stock/item/create/3", timeout=5)
                if r.status_code == 200:
                    item = r.json()["item_id"]
                    result.acked_items[item] = {0, 5}
                    if self._acknowledged(api, f"/stock/add/{item}/5"):
                        result.acked_items[item] = {5}
            except (requests.RequestException, ValueError, KeyError):
                pass  # unacknowledged: nothing is promised about it
            time.sleep(0.05)
        api.close()

    @staticmethod
    def _acknowledged(api: Api, path: str) -> bool:
        try:
            return api.post(path, timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def rate(self, start: float, end: float) -> float:
        """Checkouts answered per second between `start` and `end` seconds into the storm."""
        return sum(1 for t in self.answered if start <= t < end) / max(end - start, 1e-9)

    def run(self, scenario: str, kills: list[tuple]) -> StormResult:
        """Runs the storm; `kills` are (seconds into the storm, component, seconds down), with an
        optional fourth element: "pause" (SIGSTOP instead of SIGKILL, SIGCONT instead of `up`), or
        a fault with `start()` and `stop()` (netfaults.py) made instead of the kill."""
        self.populate()
        result = StormResult(scenario)
        orders = [str(i) for i in range(self.n_orders)]
        self.rng.shuffle(orders)
        stop = threading.Event()
        writer = threading.Thread(target=self._side_writer, args=(stop, result))
        killer = threading.Thread(target=self._killer, args=(kills, result))
        started = time.monotonic()
        self.started = started
        writer.start()
        killer.start()
        statuses = run_concurrently(self._checkout, orders, workers=self.workers, base=self.stack.base)
        result.seconds = time.monotonic() - started
        killer.join()
        stop.set()
        writer.join()
        if getattr(self, "killer_error", None) is not None:
            raise self.killer_error
        result.answers = dict(zip(orders, statuses))
        return result

    def _killer(self, kills, result: StormResult):
        try:
            self._kill_all(kills, result)
        except BaseException as e:  # re-raised in the test's thread
            self.killer_error = e

    def _kill_all(self, kills, result: StormResult):
        for at, name, down_for, *how in kills:
            pause = how == ["pause"]
            fault = how[0] if how and hasattr(how[0], "start") else None
            delay = at - (time.monotonic() - self.started)
            if delay > 0:
                time.sleep(delay)
            result.in_flight_at_kill.append(self.in_flight)
            if fault:
                fault.start()
            else:
                (self.stack.pause if pause else self.stack.kill)(name)
            # Not rounded: requests are compared with it to tell those sent after the fault took
            # effect (rounded to 10 ms, a request sent up to 5 ms before the SIGSTOP, which the
            # frozen replica may hold mid-admission, counted as sent after it).
            result.killed.append((name, time.monotonic() - self.started, down_for))
            try:
                time.sleep(down_for)
            finally:
                if fault:
                    fault.stop()
            if pause:
                self.stack.resume(name)
            elif not fault:
                self.stack.up()


class KeyedStorm(Storm):
    """A storm whose requests are timed (sent when, answered what), and whose side writer uses
    Idempotency-Keys, retrying a write that got no answer or a 5xx with the same key."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        # (seconds into the storm, what, status, the order id for a checkout, else "")
        self.sent: list[tuple[float, str, int, str]] = []

    def _note(self, sent: float, what: str, status: int, order: str = ""):
        with self.lock:
            self.sent.append((sent - self.started, what, status, order))

    def _checkout(self, api: Api, order: str) -> int:
        sent = time.monotonic()
        status = super()._checkout(api, order)
        self._note(sent, "checkout", status, order)
        return status

    def _keyed(self, api: Api, path: str) -> requests.Response | None:
        """POSTs `path` with a fresh key, retrying (same key) after a 5xx or no answer."""
        k = str(uuid.uuid4())
        for attempt in range(5):
            sent = time.monotonic()
            try:
                r = api.post(path, headers={"Idempotency-Key": k}, timeout=10)
            except requests.RequestException:
                self._note(sent, path.split("/")[2], 599)
                time.sleep(0.2 * (attempt + 1))
                continue
            self._note(sent, path.split("/")[2], r.status_code)
            if r.status_code < 500:
                return r
            time.sleep(0.2 * (attempt + 1))
        return None

    def _side_writer(self, stop, result: StormResult):
        api = Api(self.stack.base)
        while not stop.is_set():
            r = self._keyed(api, "/payment/create_user")
            if r is not None and r.status_code == 200:
                user = r.json()["user_id"]
                result.acked_users[user] = {0, 7}
                r = self._keyed(api, f"/payment/add_funds/{user}/7")
                if r is not None and r.status_code == 200:
                    result.acked_users[user] = {7}
            r = self._keyed(api, "/stock/item/create/3")
            if r is not None and r.status_code == 200:
                item = r.json()["item_id"]
                result.acked_items[item] = {0, 5}
                r = self._keyed(api, f"/stock/add/{item}/5")
                if r is not None and r.status_code == 200:
                    result.acked_items[item] = {5}
            time.sleep(0.02)
        api.close()

    def sent_after(self, t: float) -> list[tuple[float, str, int, str]]:
        """The requests sent `t` seconds into the storm or later: (when, what, status, order)."""
        return [r for r in self.sent if r[0] >= t]

    def errors_after(self, t: float) -> list[tuple[float, str, int, str]]:
        """The 5xx (or no answer: 599) among the requests sent from `t` seconds into the storm."""
        return [(round(w, 4), what, s, order) for w, what, s, order in self.sent_after(t) if s >= 500]

    def explain(self, errors: list[tuple[float, str, int, str]]) -> str:
        """What a failed check needs to say about these errors: each checkout's answer, and every
        line of the stack's logs that names its order (the saga's span carries the order id)."""
        out = []
        for w, what, s, order in errors[:5]:
            out.append(f"{what} {order or ''} sent at {w:.4f} s: {self.failures.get(order, s)}")
            if order:
                mentions = rf'order="{order}"|/orders/checkout/{order}[ }}"?]'
                out += [f"    {line}" for line in self.stack.log_lines(mentions)[:20]]
        return "\n".join(out)



def settle_and_verify(stack: OperatedStack, storm: Storm, result: StormResult, quiet_timeout: float = 90):
    """Waits (bounded) until the system is quiet, then checks every promise of the failure model."""
    storm_end = time.monotonic()

    def quiet() -> bool:
        if stack.unfinished_sagas() != 0:
            return False
        groups = stack.groups()
        # The saga's five consumer groups, each reported on every partition of the log it reads.
        logs_and_groups = {(g["log"], g["group"]) for g in groups}
        return len(logs_and_groups) == 5 and all(g["pending"] == 0 and g["lag"] == 0 for g in groups)

    try:
        wait_for(quiet, "the system to be quiet (sagas done, consumer groups drained)", timeout=quiet_timeout,
                 every=0.5)
    except AssertionError as e:
        sagas = stack.run("sagas", "--json")
        stuck = [s for s in json.loads(sagas.stdout or "[]") if not s["done"]][:5]
        raise AssertionError(f"{e}\nunfinished sagas: {stuck}\ngroups: {stack.groups()}\n"
                             f"{stack.log_tails(lines=15)}") from None
    result.quiet_after = round(time.monotonic() - storm_end, 1)

    audit = stack.run("audit", "--json")
    result.audit_clean = audit.returncode == 0
    record(stack, storm, result)
    assert audit.returncode == 0, audit.stdout[-4000:] + audit.stderr

    groups = stack.groups()
    assert all(g["dead_letters"] == 0 for g in groups), groups

    # Read back every order, item and user of the population.
    api_orders = run_concurrently(lambda a, o: a.order(o), [str(i) for i in range(storm.n_orders)],
                                  base=stack.base)
    stock = run_concurrently(lambda a, i: a.item(i)["stock"], [str(i) for i in range(storm.n_items)],
                             base=stack.base)
    credit = run_concurrently(lambda a, u: a.credit(u), [str(u) for u in range(storm.n_users)],
                              base=stack.base)
    taken_stock = [0] * storm.n_items
    spent = [0] * storm.n_users
    for o in api_orders:
        if o["paid"]:
            for item, qty in o["items"]:
                taken_stock[int(item)] += qty
            spent[int(o["user_id"])] += o["total_cost"]
    assert stock == [storm.stock - t for t in taken_stock], "stock not conserved"
    assert credit == [storm.credit - s for s in spent], "credit not conserved (a charge lost or doubled)"
    by_id = {o["order_id"]: o for o in api_orders}
    wrong_2xx = [o for o, s in result.answers.items() if s < 300 and not by_id[o]["paid"]]
    wrong_4xx = [o for o, s in result.answers.items() if 400 <= s < 500 and by_id[o]["paid"]]
    assert not wrong_2xx, f"2xx answered for unpaid orders: {wrong_2xx[:5]}"
    assert not wrong_4xx, f"4xx answered for paid orders: {wrong_4xx[:5]}"
    assert result.counts()["2xx"] > 0, "the storm paid nothing"

    api = Api(stack.base)
    for user, allowed in result.acked_users.items():
        assert api.credit(user) in allowed, f"user {user}: credit not in {allowed} (acknowledged write lost?)"
    for item, allowed in result.acked_items.items():
        assert api.item(item)["stock"] in allowed, f"item {item}: stock not in {allowed} (acknowledged write lost?)"
    api.close()


def record(stack: OperatedStack, storm: Storm, result: StormResult):
    """Appends the scenario's figures to the report (rendered into docs/FAULTS.md)."""
    stack.report.parent.mkdir(parents=True, exist_ok=True)
    row = {
        "scenario": result.scenario,
        **stack.describe(),
        "killed": result.killed,
        "in_flight_at_kill": result.in_flight_at_kill,
        "checkouts": len(result.answers),
        **result.counts(),
        "storm_s": round(result.seconds, 1),
        "quiet_after_s": result.quiet_after,
        "audit_clean": result.audit_clean,
        "side_writes_acked": len(result.acked_users) + len(result.acked_items),
    }
    with stack.report.open("a") as f:
        f.write(json.dumps(row) + "\n")
