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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "test" / "faults"))

from harness import FAULT_ENV, OperatedStack, wait_for  # noqa: E402

PROJECT = os.environ.get("SHOPLOG_COMPOSE_PROJECT", "shoplogtest")
PORT = int(os.environ.get("SHOPLOG_COMPOSE_PORT", "18000"))


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

    def __init__(self, project: str = PROJECT, port: int = PORT):
        self.project, self.port = project, port
        self.base = f"http://127.0.0.1:{port}"
        # The fault harness's short timeouts reach the containers through compose's pass-through.
        self.env = dict(os.environ, **FAULT_ENV, SHOPLOG_GATEWAY_PORT=str(port))
        self.env.pop("COMPOSE_FILE", None)
        self.replicas = 1
        self.kill_mode = "crash"
        self.recoveries: list[dict] = []  # one per kill: container, seconds until healthy again
        self._killed: list[tuple[str, str, float, int]] = []

    def compose(self, *args: str, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [*compose_command(), "-f", str(ROOT / "docker-compose.yml"), "-p", self.project, *args]
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

    def down(self):
        self.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False)

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
        return {"deployment": "compose", "replicas": self.replicas, "appendfsync": self.env.get("SHOPLOG_APPENDFSYNC") or "everysec",
                "kill_mode": self.kill_mode, "recoveries": list(self.recoveries)}

    def exec_http(self, container: str, port: int, path: str) -> str:
        """`GET path` inside a container (the services publish no port of their own)."""
        script = (f'exec 3<>/dev/tcp/127.0.0.1/{port}; printf "GET {path} HTTP/1.0\\r\\n\\r\\n" >&3; cat <&3')
        return docker("exec", container, "bash", "-c", script).stdout
