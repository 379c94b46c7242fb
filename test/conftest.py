"""Session setup: make sure the stack is up, and give tests a client.

If nothing answers `GET {ORDER_URL}/orders/health`, the suite starts the whole stack with
`shoplog up --detach` in a fresh data directory (SHOPLOG_DATA_DIR) and stops it with
`shoplog down --wipe` at the end. A stack that was already running is used and left alone.

The binary is $SHOPLOG_BIN, else target/release/shoplog, else target/debug/shoplog (relative to the
repository root, the parent of this directory). Set SHOPLOG_KEEP_DATA=1 to stop a stack the suite
started without wiping its data directory (its path is printed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from helpers import BASES, Api

ROOT = Path(__file__).resolve().parent.parent
UP_TIMEOUT = 300  # seconds for `shoplog up --detach`
DOWN_TIMEOUT = 120


def shoplog_bin() -> Path:
    env = os.environ.get("SHOPLOG_BIN")
    if env:
        path = Path(env)
        return path if path.is_absolute() else ROOT / path
    release = ROOT / "target" / "release" / "shoplog"
    return release if release.exists() else ROOT / "target" / "debug" / "shoplog"


def _healthy(prefix: str) -> bool:
    try:
        r = requests.get(f"{BASES[prefix]}/{prefix}/health", timeout=2)
        return r.status_code == 200
    except requests.RequestException:
        return False


def _wait_healthy(deadline: float) -> list[str]:
    """Waits until every service answers its health check; returns those that never did."""
    pending = list(BASES)
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if not _healthy(p)]
        if pending:
            time.sleep(0.5)
    return pending


def _log_tails(data_dir: Path, lines: int = 20, max_files: int = 30) -> str:
    """The last lines of every log file under the data dir (to explain a failure)."""
    out = []
    files = sorted(p for p in data_dir.rglob("*") if p.is_file() and p.suffix in {".log", ".err", ".out"})
    # The Redis servers' logs say little; name them only.
    quiet = [p for p in files if p.name.endswith("-db.log") or p.name.startswith("lock-")]
    if quiet:
        out.append("--- also: " + " ".join(str(p) for p in quiet))
    files = [p for p in files if p not in quiet]
    for path in files[:max_files]:
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        out.append(f"--- {path} (last {len(text)} lines)")
        out.extend(text)
    return "\n".join(out)


def _say(request, text: str):
    """Prints past pytest's output capture (session setup and teardown output is otherwise hidden)."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        print(text, file=sys.stderr)
        return
    with capman.global_and_fixture_disabled():
        print(text, file=sys.stderr)


def _status_lines(status: subprocess.CompletedProcess) -> str:
    """`shoplog status --json` as one compact line per component (raw output if it is not JSON)."""
    try:
        components = json.loads(status.stdout)
        return "\n".join(json.dumps(c, separators=(",", ":")) for c in components)
    except (ValueError, TypeError):
        return f"{status.stdout.strip()} {status.stderr.strip()}"


def _run(cmd: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session", autouse=True)
def stack(request):
    """The running system: started here when nothing answers, else the one already running."""
    if _healthy("orders"):
        missing = _wait_healthy(time.monotonic() + 10)
        if missing:
            pytest.exit(f"a stack answers at {BASES['orders']} but not: {missing}", returncode=3)
        yield None
        return

    binary = shoplog_bin()
    if not binary.exists():
        pytest.exit(
            f"nothing answers at {BASES['orders']}/orders/health and there is no shoplog binary at "
            f"{binary} (build it with `cargo build --release`, or set SHOPLOG_BIN)",
            returncode=3,
        )
    data_dir = Path(tempfile.mkdtemp(prefix="shoplog-test-"))
    env = dict(os.environ, SHOPLOG_DATA_DIR=str(data_dir))
    started = time.monotonic()
    try:
        up = _run([str(binary), "up", "--detach"], env, UP_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        _run([str(binary), "down", "--wipe"], env, DOWN_TIMEOUT)
        pytest.exit(f"`shoplog up --detach` did not return within {UP_TIMEOUT}s: {e}", returncode=3)
    if up.returncode != 0:
        tails = _log_tails(data_dir)
        _run([str(binary), "down", "--wipe"], env, DOWN_TIMEOUT)
        shutil.rmtree(data_dir, ignore_errors=True)
        pytest.exit(
            f"`shoplog up --detach` failed ({up.returncode}):\n{up.stdout}\n{up.stderr}\n{tails}",
            returncode=3,
        )
    missing = _wait_healthy(time.monotonic() + 30)
    if missing:
        tails = _log_tails(data_dir)
        _run([str(binary), "down", "--wipe"], env, DOWN_TIMEOUT)
        pytest.exit(f"`shoplog up --detach` returned but {missing} are not healthy\n{tails}", returncode=3)
    _say(request, f"\n[shoplog] stack up in {time.monotonic() - started:.1f}s, data dir {data_dir}")
    STACK_DIRS[None] = data_dir

    yield data_dir

    failed = request.session.testsfailed
    if failed:
        status = _run([str(binary), "status", "--json"], env, 30)
        _say(request, f"\n[shoplog] {failed} test(s) failed; stack data dir {data_dir}")
        _say(request, "[shoplog] status:\n" + _status_lines(status))
        _say(request, _log_tails(data_dir))
    keep = os.environ.get("SHOPLOG_KEEP_DATA") == "1"
    down = _run([str(binary), "down"] + ([] if keep else ["--wipe"]), env, DOWN_TIMEOUT)
    if down.returncode != 0:
        _say(request, f"\n[shoplog] `shoplog down` failed ({down.returncode}): {down.stdout}{down.stderr}")
    if keep:
        _say(request, f"\n[shoplog] data kept in {data_dir}")


@pytest.fixture(scope="session")
def api(stack) -> Api:
    """A keep-alive client (one `requests.Session`) for the whole session."""
    client = Api()
    yield client
    client.close()


# Data directories of the stacks this session started, by gateway base (None: the suite's stack).
STACK_DIRS: dict = {}


def shoplog(data_dir: Path, *args: str, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    """Runs `shoplog ARGS` against the stack whose data directory is `data_dir`."""
    full_env = dict(os.environ, SHOPLOG_DATA_DIR=str(data_dir), **env)
    return _run([str(shoplog_bin()), *args], full_env, timeout)


@contextlib.contextmanager
def own_stack(prefix: str, *up_args: str, **env: str) -> Iterator[Path]:
    """A stack of the caller's own, for tests that load, stop or break one: `shoplog up --detach
    UP_ARGS` in a fresh data directory (named `prefix`…) with `env` (its SHOPLOG_PORT_OFFSET and
    SHOPLOG_GATEWAY_PORT keep it off the ports of the other stacks of the session), taken down and
    wiped when the block ends. Skips without a binary; a stack that does not come up is taken down
    and fails the test with its logs."""
    binary = shoplog_bin()
    if not binary.exists():
        pytest.skip(f"no shoplog binary at {binary}")
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    up = shoplog(data_dir, "up", "--detach", *up_args, timeout=UP_TIMEOUT, **env)
    if up.returncode != 0:
        tails = _log_tails(data_dir)
        shoplog(data_dir, "down", "--wipe", timeout=DOWN_TIMEOUT, **env)
        pytest.fail(f"`shoplog up --detach {' '.join(up_args)}` failed ({up.returncode}):\n{up.stderr}\n{tails}")
    try:
        yield data_dir
    finally:
        shoplog(data_dir, "down", "--wipe", timeout=DOWN_TIMEOUT, **env)


REPLICATED_GATEWAY_PORT = int(os.environ.get("SHOPLOG_REPLICATED_GATEWAY_PORT", "9000"))


@pytest.fixture(scope="session")
def replicated_gateway(request, stack) -> str:
    """A second local stack with 2 replicas of order, stock and payment (ports offset by 1000),
    started for the tests that must hold with replicas; yields its gateway URL."""
    base = f"http://127.0.0.1:{REPLICATED_GATEWAY_PORT}"
    ports = {"SHOPLOG_PORT_OFFSET": "1000", "SHOPLOG_GATEWAY_PORT": str(REPLICATED_GATEWAY_PORT)}
    with own_stack("shoplog-replicas-", "--replicas", "2", **ports) as data_dir:
        _say(request, f"\n[shoplog] replicated stack up, data dir {data_dir}")
        STACK_DIRS[base] = data_dir
        yield base
        if request.session.testsfailed:
            _say(request, _log_tails(data_dir))
