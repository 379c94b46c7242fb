"""Network faults for the native stack, made with the kernel's own tools: iptables rules (a cut
link drops packets, as a split network does: connections stay open, nothing arrives), control
groups (to pick one process's traffic), and a slow link (a small delaying proxy that the
connections to one database are redirected through, since `tc netem` is not in this kernel).

Every rule carries a comment naming this run, and is removed when the fault ends or the test
process exits, whatever happens: a stray DROP rule on a developer's machine would be a fault of
its own.

How a process's traffic is picked: `iptables -m cgroup --path` matches a packet by the control
group of the socket that sent it, fixed when the socket was created. So a running process is
moved into a group of its own (its later sockets match), and the connections it already holds are
picked by their local ports (read from `ss`).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup/unified")
RUN = f"shoplog-test-{uuid.uuid4().hex[:8]}"
SLOWLINK = Path(__file__).with_name("slowlink.py")

_rules: list[list[str]] = []  # every rule added and not yet removed: table, chain, match...


def unavailable() -> str | None:
    """Why network faults cannot be made here (None: they can): root, iptables with the cgroup
    and statistic matches, and a cgroup2 hierarchy."""
    if os.geteuid() != 0:
        return "network faults need root (iptables, control groups)"
    if not shutil.which("iptables") or not shutil.which("ss"):
        return "iptables or ss is not installed (apt-get install iptables iproute2)"
    if not (CGROUP_ROOT / "cgroup.procs").exists():
        return f"no cgroup2 hierarchy at {CGROUP_ROOT}"
    probe = Cgroup("probe")
    try:
        for rule in (["-m", "cgroup", "--path", probe.path, "-p", "tcp", "--dport", "1"],
                     ["-m", "statistic", "--mode", "random", "--probability", "0.05", "-p", "tcp", "--dport", "1"]):
            added = subprocess.run(["iptables", "-w", "-A", "OUTPUT", *rule, "-j", "DROP"],
                                   capture_output=True, text=True)
            if added.returncode != 0:
                return f"iptables refuses {' '.join(rule[:2])}: {added.stderr.strip()}"
            subprocess.run(["iptables", "-w", "-D", "OUTPUT", *rule, "-j", "DROP"], check=True)
    finally:
        probe.remove()
    return None


def _iptables(table: str, chain: str, rule: list[str]):
    """Inserts `rule` first in `chain`, tagged with this run's comment, remembered for removal."""
    tagged = [table, chain, *rule, "-m", "comment", "--comment", RUN]
    added = subprocess.run(["iptables", "-w", "-t", table, "-I", chain, *tagged[2:]], capture_output=True, text=True)
    assert added.returncode == 0, f"iptables -t {table} -I {chain} {' '.join(tagged[2:])}: {added.stderr}"
    _rules.append(tagged)
    return tagged


def _remove(tagged: list[str]):
    if tagged in _rules:
        _rules.remove(tagged)
        table, chain, *rule = tagged
        subprocess.run(["iptables", "-w", "-t", table, "-D", chain, *rule], capture_output=True)


@atexit.register
def _remove_all():
    for tagged in list(_rules):
        _remove(tagged)


class Cgroup:
    """A cgroup2 group of its own, for the processes whose traffic a rule picks."""

    def __init__(self, name: str):
        self.path = f"/{RUN}-{name}"
        self.dir = CGROUP_ROOT / self.path.lstrip("/")
        self.dir.mkdir(exist_ok=True)

    def add(self, pid: int):
        """Moves the process (all its threads) into the group: its new sockets are picked."""
        (self.dir / "cgroup.procs").write_text(str(pid))

    def remove(self):
        """Moves the processes back to the root group, then deletes the group."""
        try:
            for pid in (self.dir / "cgroup.procs").read_text().split():
                try:
                    (CGROUP_ROOT / "cgroup.procs").write_text(pid)
                except OSError:
                    pass  # exited meanwhile
            self.dir.rmdir()
        except OSError:
            pass


def local_ports(pid: int, remote_port: int) -> list[int]:
    """The local ports of `pid`'s TCP connections to 127.0.0.1:`remote_port` (from `ss`)."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", "dst", f"127.0.0.1:{remote_port}"],
                         capture_output=True, text=True, check=True).stdout
    ports = []
    for line in out.splitlines():
        if f"pid={pid}," in line:
            local = line.split()[2]  # Recv-Q Send-Q Local Peer Process
            ports.append(int(local.rsplit(":", 1)[1]))
    return ports


class Cut:
    """A split network between one process and one port: from `start` to `stop`, every packet the
    process sends to the port is dropped — on the connections it holds and on any it opens."""

    def __init__(self, pid: int, port: int, what: str):
        self.pid, self.port, self.what = pid, port, what
        self.rules: list[list[str]] = []
        self.group: Cgroup | None = None

    def start(self):
        self.group = Cgroup(f"cut-{self.pid}")
        self.group.add(self.pid)
        match = ["-p", "tcp", "-d", "127.0.0.1", "--dport", str(self.port)]
        self.rules.append(_iptables("filter", "OUTPUT", [*match, "-m", "cgroup", "--path", self.group.path, "-j", "DROP"]))
        for sport in local_ports(self.pid, self.port):
            self.rules.append(_iptables("filter", "OUTPUT", [*match, "--sport", str(sport), "-j", "DROP"]))

    def stop(self):
        for rule in self.rules:
            _remove(rule)
        self.rules.clear()
        if self.group:
            self.group.remove()


class Isolate:
    """A node cut off from everyone: every packet to its port is dropped, new connections and
    those already open."""

    def __init__(self, port: int, what: str):
        self.port, self.what = port, what
        self.rule: list[str] | None = None

    def start(self):
        self.rule = _iptables("filter", "OUTPUT", ["-p", "tcp", "-d", "127.0.0.1", "--dport", str(self.port), "-j", "DROP"])

    def stop(self):
        if self.rule:
            _remove(self.rule)
            self.rule = None


class SlowLink:
    """One database's link, made slow and lossy on demand.

    Installed on a running stack: every connection to the database's port, from any process but
    the proxy itself, is redirected to a delaying proxy (`slowlink.py`) that relays to the
    database; NAT applies to new connections only, so the connections open before are aborted
    (`ss -K`) and their clients reconnect, through it. Healthy, it relays at once. `start` makes it add
    `delay_ms` to every byte sent towards the database (one way: a request's round trip grows by
    that much) and drops `loss` of the packets on the proxy's link to the database in both
    directions (TCP retransmits them, as on a lossy network); `stop` heals it."""

    def __init__(self, db_port: int, proxy_port: int, delay_ms: int = 50, loss: float = 0.05):
        self.db_port, self.proxy_port, self.delay_ms, self.loss = db_port, proxy_port, delay_ms, loss
        self.proxy: subprocess.Popen | None = None
        self.group = Cgroup(f"slowlink-{db_port}")
        self.redirect: list[str] | None = None
        self.loss_rules: list[list[str]] = []

    def install(self):
        """Starts the proxy (in a group of its own, so that its connections are not redirected),
        redirects every other connection to the database through it, and aborts the connections
        opened before."""
        assert not _listening(self.proxy_port), f"port {self.proxy_port} (the slow link's relay) is in use"
        group = self.group.dir / "cgroup.procs"
        self.proxy = subprocess.Popen(
            ["sh", "-c", f'echo $$ > {group} && exec "$0" "$@"', sys.executable, str(SLOWLINK),
             str(self.proxy_port), str(self.db_port), str(self.delay_ms)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        atexit.register(self.uninstall)
        deadline = time.monotonic() + 10
        while not _listening(self.proxy_port):
            assert self.proxy.poll() is None, f"slowlink.py exited: {self.proxy.stderr.read().decode()}"
            assert time.monotonic() < deadline, "slowlink.py does not listen"
            time.sleep(0.05)
        self.redirect = _iptables("nat", "OUTPUT", [
            "-p", "tcp", "-d", "127.0.0.1", "--dport", str(self.db_port),
            "-m", "cgroup", "!", "--path", self.group.path, "-j", "REDIRECT", "--to-ports", str(self.proxy_port)])
        subprocess.run(["ss", "-K", "dst", f"127.0.0.1:{self.db_port}"], capture_output=True, check=True)

    def start(self):
        assert self.proxy is not None, "install() the slow link before the stack starts"
        self.proxy.send_signal(signal.SIGUSR1)
        chance = ["-m", "statistic", "--mode", "random", "--probability", str(self.loss), "-j", "DROP"]
        self.loss_rules = [
            _iptables("filter", "OUTPUT", ["-p", "tcp", "-d", "127.0.0.1", "--dport", str(self.db_port),
                                           "-m", "cgroup", "--path", self.group.path, *chance]),
            _iptables("filter", "OUTPUT", ["-p", "tcp", "-s", "127.0.0.1", "--sport", str(self.db_port), *chance]),
        ]

    def stop(self):
        for rule in self.loss_rules:
            _remove(rule)
        self.loss_rules.clear()
        if self.proxy is not None:
            self.proxy.send_signal(signal.SIGUSR2)

    def uninstall(self):
        self.stop()
        if self.redirect:
            _remove(self.redirect)
            self.redirect = None
        if self.proxy is not None:
            self.proxy.kill()
            self.proxy.wait()
            self.proxy = None
        self.group.remove()


def _listening(port: int) -> bool:
    out = subprocess.run(["ss", "-Htln", "sport", f"= :{port}"], capture_output=True, text=True)
    return bool(re.search(rf":{port}\b", out.stdout))
