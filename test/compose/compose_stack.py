"""The docker-compose stack, driven like the fault harness's local stack (test/faults/harness.py),
so that the same storm and the same checks run against the containers.

- `start()` runs `docker-compose up -d` (project `shoplogtest`, gateway published on 127.0.0.1 at
  port $SHOPLOG_COMPOSE_PORT, default 18000) and waits until every container is healthy.
- `run(*args)` runs `shoplog ARGS` inside the network (`docker-compose exec -T logparser shoplog`),
  as an operator would.
- `kill(name)` and `up()` are the storm's fault: with `kill_mode = "crash"` the container's main
  process gets SIGKILL from the host (a crash: the restart policy brings it back, and `up()` only
  waits for that); with `kill_mode = "stop"`, `docker kill` (a manual stop: nothing restarts it)
  and `up()` runs `docker start`, as the course's evaluators do. Either way `up()` waits until the
  container is healthy again and records how long it took.

Names are compose service names (`order`, `stock-db`); `order#2` is the second container of a
scaled service.

`ComposeCluster` is the same stack with docker-compose.cluster.yml on top (each service database
a Redis Cluster of 3 primaries and 3 replicas; project `shoplogtestcluster`, gateway port
$SHOPLOG_COMPOSE_PORT + 1, network $SHOPLOG_COMPOSE_CLUSTER_NET.0/24, default 172.30.109), plus
what the cluster checks read: every node's view of its cluster (`cluster_view`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "test" / "faults"))

from harness import FAULT_ENV, OperatedStack, wait_for  # noqa: E402

PROJECT = os.environ.get("SHOPLOG_COMPOSE_PROJECT", "shoplogtest")
PORT = int(os.environ.get("SHOPLOG_COMPOSE_PORT", "18000"))


# The images every container stack runs (`make images`).
IMAGES = ["shoplog:latest", "shoplog-redis:latest", "shoplog-gateway:latest"]


@pytest.fixture(scope="session")
def stack():
    """Overrides test/conftest.py's `stack` in the container test modules, which import it: they
    bring their own stacks (compose), not `shoplog up`."""
    return None


def require_engine_and_images():
    """Fails (never skips: `make test` runs these tests only where an engine answers) when no
    Docker engine answers or an image is missing, saying what to do."""
    if docker("info", check=False).returncode != 0:
        pytest.fail("no Docker engine answers (`docker info` failed); `make test` runs these tests only "
                    "when one does")
    missing = [i for i in IMAGES if docker("image", "inspect", i, check=False).returncode != 0]
    if missing:
        pytest.fail(f"images missing: {missing}; build them with `make images`")


def compose_command() -> list[str]:
    """`docker-compose` (Debian's 1.29) when installed, else the `docker compose` plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


def docker(*args: str, timeout: int = 60, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    if check and out.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
    return out


def inspect(container: str) -> dict:
    return json.loads(docker("inspect", container).stdout)[0]


class ComposeStack(OperatedStack):
    report = ROOT / "target" / "compose-report.jsonl"
    files = ("docker-compose.yml",)

    def __init__(self, project: str = PROJECT, port: int = PORT, **env: str):
        self.project, self.port = project, port
        self.base = f"http://127.0.0.1:{port}"
        # The fault harness's short timeouts reach the containers through compose's pass-through.
        self.env = dict(os.environ, **FAULT_ENV, SHOPLOG_GATEWAY_PORT=str(port), **env)
        # Archiving runs during the suite (a short retention), so that the audits of its later
        # tests read archive + live log while archiving passes write and trim: that is how a
        # reader race once lost part of one partition's history (docs/FAULTS.md).
        self.env.setdefault("LOG_RETAIN", "30s")
        self.env.pop("COMPOSE_FILE", None)
        self.replicas = 1
        self.kill_mode = "crash"
        self.recoveries: list[dict] = []  # one per kill: container, seconds until healthy again
        self._killed: list[tuple[str, str, float, int]] = []

    def compose(self, *args: str, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
        files = [arg for f in self.files for arg in ("-f", str(ROOT / f))]
        cmd = [*compose_command(), *files, "-p", self.project, *args]
        out = subprocess.run(cmd, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}\n"
                                 f"{self.log_tails()}")
        return out

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self, scale: dict[str, int] | None = None, timeout: float = 120) -> float:
        """`up -d` (with `--scale`), then waits until every container is healthy; returns seconds."""
        started = time.monotonic()
        args = ["up", "-d", "--no-build"]
        for service, n in (scale or {}).items():
            args += ["--scale", f"{service}={n}"]
        self.replicas = max((scale or {}).values(), default=1)
        self.compose(*args)
        self.wait_healthy(timeout)
        return time.monotonic() - started

    def down(self, volumes: bool = True):
        """`docker-compose down` (`-v` unless `volumes` is False: an operator's stop that keeps
        the data), through the engine fault it can meet after a crash.

        Docker Engine 20.10 can keep the endpoint of a container that crashed and was restarted
        on the project's network after the container is gone; `down` then removes every container
        and stops at "error while removing network: … has active endpoints", before the volumes,
        and a later `up` cannot attach a container of the same name. The remedy (moby/moby#17217,
        #23302) is to disconnect those endpoints by force, by the name the network lists them
        under, and run `down` again. When that is still refused, a teardown (`volumes`) removes
        the volumes itself, as the containers are gone; otherwise it raises, saying what is
        left."""
        args = ["down", *(["-v"] if volumes else []), "--remove-orphans", "--timeout", "20"]
        out = self.compose(*args, check=False)
        if out.returncode != 0 and "active endpoints" in out.stderr:
            freed = self.free_networks()
            print(f"[compose] `down` of {self.project} met stale endpoints on its network; "
                  f"disconnected by force: {freed}", file=sys.stderr)
            out = self.compose(*args, check=False)
        if out.returncode != 0 and volumes and "active endpoints" in out.stderr:
            # Still refused (an endpoint `disconnect` cannot find; only an engine restart drops
            # it): the containers are gone, so a teardown removes the volumes itself and leaves
            # the empty network to the engine's next restart.
            print(f"[compose] `down -v` of {self.project} still failed: {out.stderr.strip()[-300:]}; "
                  "removing its volumes directly", file=sys.stderr)
            left = docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}",
                          check=False).stdout.split()
            if left:
                docker("volume", "rm", "-f", *left, check=False)
            return
        if out.returncode != 0:
            raise AssertionError(f"`{' '.join(args)}` of {self.project} failed ({out.returncode}):\n"
                                 f"{out.stdout[-1500:]}\n{out.stderr[-1500:]}\n"
                                 f"networks left: {self.networks()}")

    def networks(self) -> dict[str, list[str]]:
        """The project's networks -> the endpoint names each still lists."""
        ids = docker("network", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}",
                     check=False).stdout.split()
        infos = json.loads(docker("network", "inspect", *ids).stdout) if ids else []
        return {n["Name"]: [c["Name"] for c in (n.get("Containers") or {}).values()] for n in infos}

    def free_networks(self) -> list[str]:
        """Disconnects, by force, every endpoint left on the project's networks (only called once
        `down` has removed the containers); returns the names it disconnected."""
        freed = []
        for network, names in self.networks().items():
            for name in names:
                docker("network", "disconnect", "--force", network, name, check=False)
                freed.append(name)
        return freed

    def containers(self, service: str | None = None) -> list[str]:
        """Container ids of a service (every container when None), in container-number order."""
        args = ["ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            args += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = docker(*args).stdout.split()
        if not ids:
            return []
        infos = json.loads(docker("inspect", *ids).stdout)
        infos.sort(key=lambda i: int(i["Config"]["Labels"].get("com.docker.compose.container-number", 0)))
        return [i["Id"] for i in infos]

    def container(self, name: str) -> str:
        service, _, index = name.partition("#")
        found = self.containers(service)
        assert found, f"no container of service {service}"
        return found[int(index or 1) - 1]

    def health(self) -> dict[str, str]:
        """Container name -> health status (`healthy`, `starting`, `unhealthy`, or the state)."""
        ids = self.containers()
        out = {}
        for info in json.loads(docker("inspect", *ids).stdout) if ids else []:
            state = info["State"]
            status = state.get("Health", {}).get("Status") if state.get("Running") else state.get("Status")
            out[info["Name"].lstrip("/")] = status
        return out

    def wait_healthy(self, timeout: float = 120):
        def all_healthy():
            h = self.health()
            return bool(h) and all(s == "healthy" for s in h.values())
        try:
            wait_for(all_healthy, "every container to be healthy", timeout=timeout, every=0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}: {self.health()}\n{self.log_tails()}") from None

    # --- the storm's fault -----------------------------------------------------------------------

    def kill(self, name: str) -> int:
        cid = self.container(name)
        state = inspect(cid)
        restarts = state["RestartCount"]
        if self.kill_mode == "crash":
            pid = state["State"]["Pid"]
            os.kill(pid, signal.SIGKILL)
        else:
            docker("kill", cid)
            pid = 0
        self._killed.append((name, cid, time.monotonic(), restarts))
        return pid

    def up(self):
        """Brings the last killed container back (or waits for its restart policy to), then waits
        until it is healthy again."""
        name, cid, killed_at, restarts = self._killed.pop()
        if self.kill_mode == "stop":
            state = inspect(cid)["State"]
            assert not state["Running"], f"{name} runs again although `docker kill` is a manual stop"
            docker("start", cid)

        def healthy():
            info = inspect(cid)
            # Right after a SIGKILL the engine may not have seen the exit yet and still shows the
            # old, healthy state: a crash counts as recovered only once it was restarted.
            if self.kill_mode == "crash" and info["RestartCount"] <= restarts:
                return False
            state = info["State"]
            return state.get("Running") and state.get("Health", {}).get("Status") == "healthy"

        what = f"{name} to be restarted by its restart policy and healthy again" if self.kill_mode == "crash" \
            else f"{name} to be healthy again after `docker start`"
        try:
            wait_for(healthy, what, timeout=90, every=0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}: {inspect(cid)['State']}") from None
        self.recoveries.append({"container": name, "mode": self.kill_mode,
                                "healthy_after_s": round(time.monotonic() - killed_at, 1)})

    # --- what the checks need ---------------------------------------------------------------------

    def run(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return self.compose("exec", "-T", "logparser", "shoplog", *args, timeout=timeout, check=False)

    def log_tails(self, lines: int = 20) -> str:
        out = self.compose("logs", "--no-color", "--tail", str(lines), timeout=60, check=False)
        return f"--- container logs (last {lines} lines each)\n{out.stdout}{out.stderr}"

    def describe(self) -> dict:
        return {"deployment": "compose", "replicas": self.replicas, "appendfsync": self.env.get("SHOPLOG_APPENDFSYNC") or "always",
                "kill_mode": self.kill_mode, "recoveries": list(self.recoveries)}

    def exec_http(self, container: str, port: int, path: str) -> str:
        """`GET path` inside a container (the services publish no port of their own)."""
        script = (f'exec 3<>/dev/tcp/127.0.0.1/{port}; printf "GET {path} HTTP/1.0\\r\\n\\r\\n" >&3; cat <&3')
        return docker("exec", container, "bash", "-c", script).stdout


CLUSTER_NET = os.environ.get("SHOPLOG_COMPOSE_CLUSTER_NET", "172.30.109")
SLOTS = 16384


class ComposeCluster(ComposeStack):
    """The stack of docker-compose.yml + docker-compose.cluster.yml: nodes `<db>-db-1` …
    `<db>-db-6` per database, the base file's `<db>-db` as the cluster's keeper. The kills of
    the storm (`kill`, `up`) work on nodes as on any container."""

    files = ("docker-compose.yml", "docker-compose.cluster.yml")
    databases = ("order", "stock", "payment")
    nodes_per_db = 6

    def __init__(self, project: str = f"{PROJECT}cluster", port: int = PORT + 1, net: str = CLUSTER_NET):
        super().__init__(project, port, SHOPLOG_CLUSTER_NET=net)
        self.env.pop("REPLICA_ACKS", None)  # the file's default, 1
        self.net = net

    def nodes(self, db: str) -> list[str]:
        return [f"{db}-db-{i}" for i in range(1, self.nodes_per_db + 1)]

    def cluster_view(self, db: str) -> dict[str, dict]:
        """Each node of `db`'s cluster as it sees itself, read with one `docker exec`: `id`,
        `role` (primary/replica), `slots` (a list of (first, last)), `master_id` (a replica's
        primary), `addr` (its address on the cluster bus), `state` (cluster_state), `known` (the
        nodes it knows, each `(id, host, flags, link)`), `aof` (INFO persistence's aof_enabled),
        and for a replica `master_host` and `master_link` (INFO replication). A node that does not
        answer has `{}`."""
        script = "; ".join(
            f"echo '### {n}'; redis-cli -h {n} cluster nodes; echo '#'; redis-cli -h {n} cluster info; "
            f"echo '#'; redis-cli -h {n} info replication; redis-cli -h {n} info persistence" for n in self.nodes(db))
        # From the keeper's container (the same image, never killed by the tests).
        out = docker("exec", self.container(f"{db}-db"), "bash", "-c", script, timeout=60, check=False)
        view: dict[str, dict] = {}
        for chunk in out.stdout.replace("\r", "").split("### ")[1:]:
            name, _, rest = chunk.partition("\n")
            parts = rest.split("\n#\n")
            if len(parts) != 3 or "myself" not in parts[0]:
                view[name] = {}
                continue
            nodes, info, repl = parts
            info, repl = _fields(info), _fields(repl)
            known = []
            me = {}
            for line in nodes.splitlines():
                f = line.split()
                if len(f) < 8:
                    continue
                host = f[1].split(",", 1)[1] if "," in f[1] else ""
                known.append((f[0], host, f[2], f[7]))
                if "myself" in f[2].split(","):
                    slots = []
                    for r in f[8:]:
                        if r.startswith("["):
                            continue  # a slot being migrated
                        first, _, last = r.partition("-")
                        slots.append((int(first), int(last or first)))
                    me = {"id": f[0], "addr": f[1].split(":")[0],
                          "role": "primary" if "master" in f[2] else "replica",
                          "slots": slots, "master_id": f[3] if f[3] != "-" else None}
            view[name] = {**me, "state": info.get("cluster_state"), "known": known, "aof": repl.get("aof_enabled"),
                          "master_host": repl.get("master_host"), "master_link": repl.get("master_link_status")}
        return view

    def describe(self) -> dict:
        return {**super().describe(), "databases": "Redis Cluster 3 × (1 + 1), WAIT 1"}


def _fields(text: str) -> dict[str, str]:
    """`field:value` lines (CLUSTER INFO, INFO) as a dict."""
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))
