"""The container stack on the real Docker engine: `make test-compose` (and `make test` whenever an
engine answers; CI sets SHOPLOG_REQUIRE_DOCKER=1 so that a missing engine fails instead).

Needs the images (`make images`, which the make targets run first). Brings up docker-compose.yml
as project `shoplogtest` with the gateway on 127.0.0.1:18000, then: the images' size and layering,
the HTTP suite against the published port, a checkout storm reconciled exactly, order and
stock-db killed in the middle of storms — as a crash (SIGKILL of the container's process; the
restart policy brings it back) and as `docker kill` + `docker start` — each followed by the fault
harness's every check (exact stock and credit against the paid orders, truthful answers, nothing
acknowledged lost, audit clean inside the network), the operator commands in the network,
`--scale order=3 stock=2 payment=2` with one order replica killed (every replica served
requests), and a graceful stop. `down -v` at the end; every
container's log tail is printed when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from compose_stack import IMAGES, ROOT, ComposeStack, docker, require_engine_and_images
from compose_stack import stack  # noqa: F401 (the fixture: no local stack for these tests)
from conftest import _say
from harness import Storm, settle_and_verify

BASE = "debian:bookworm-slim"

# The HTTP contract suite, as run against any deployment (the files that need a local stack of
# their own — durability, operations, faults — are left out, and so is the 2-replica half of
# test_checkout, which starts one).
CONTRACT_SUITE = ["test_stock.py", "test_payment.py", "test_orders.py", "test_ids.py", "test_ops.py",
                  "test_bad_input.py", "test_concurrency.py", "test_batch_init.py", "test_checkout.py",
                  "test_fuzz.py"]


@pytest.fixture(scope="module")
def compose(request):
    require_engine_and_images()
    s = ComposeStack()
    s.down()  # what an interrupted earlier run left
    seconds = s.start()
    s.startup_s = round(seconds, 1)
    _say(request, f"\n[compose] `up -d` to every container healthy: {seconds:.1f}s")
    yield s
    s.down()
    left = docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={s.project}").stdout
    assert not left.split(), f"`down -v` left volumes: {left}"


@pytest.fixture(autouse=True)
def tails_on_failure(request, compose):
    """Prints every container's log tail when the test failed."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        _say(request, compose.log_tails(lines=25))


def test_images_share_the_base_are_small_and_run_unprivileged(compose):
    base = docker("image", "inspect", BASE).stdout
    base = json.loads(base)[0]
    base_layers = base["RootFS"]["Layers"]
    assert base["Size"] < 150e6, f"base image {base['Size'] / 1e6:.0f} MB"
    for image in IMAGES:
        info = json.loads(docker("image", "inspect", image).stdout)[0]
        layers = info["RootFS"]["Layers"]
        assert layers[: len(base_layers)] == base_layers, f"{image} is not built on {BASE}"
        own = info["Size"] - base["Size"]
        # shoplog:latest holds six statically linked programs (stripped): 53 MB since the log
        # parser serves the operator console; a stray debug build or a second copy of the
        # binaries would be twice that.
        assert own < 64e6, f"{image}: {own / 1e6:.0f} MB on top of the base"
        user = info["Config"]["User"]
        assert user and user not in ("root", "0"), f"{image} runs as root"
    for cid in compose.containers():
        out = docker("exec", cid, "id", "-u").stdout.strip()
        assert out != "0", f"container {cid[:12]} runs as root"


def test_every_container_has_a_health_check_and_a_restart_policy(compose):
    for cid in compose.containers():
        info = json.loads(docker("inspect", cid).stdout)[0]
        name = info["Name"]
        assert info["Config"].get("Healthcheck", {}).get("Test"), f"{name}: no health check"
        assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped", name
        assert info["State"]["Health"]["Status"] == "healthy", name


@pytest.mark.timeout(900)  # a whole suite: its own tests are bounded by pytest.ini's 120 s each
def test_the_http_suite_passes_against_the_published_port(compose):
    env = dict(os.environ, SHOPLOG_GATEWAY_PORT=str(compose.port))
    for var in ("ORDER_URL", "STOCK_URL", "PAYMENT_URL", "IDS_URL"):
        env.pop(var, None)
    files = [str(ROOT / "test" / f) for f in CONTRACT_SUITE]
    out = subprocess.run([sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider",
                          "-m", "not slow", "-k", "not replicas"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=900,
                         stdin=subprocess.DEVNULL)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert re.search(r"\d+ passed", summary), summary
    # Proof that it ran against the containers and not a stack of its own.
    assert "[shoplog] stack up" not in out.stderr


def test_a_checkout_storm_reconciles_exactly(compose):
    storm = Storm(compose, seed=1)
    result = storm.run("compose: storm, nothing killed", [])
    settle_and_verify(compose, storm, result)
    assert result.counts()["5xx"] == 0, result.counts()


@pytest.mark.parametrize("service,mode", [("order", "crash"), ("order", "stop"), ("stock-db", "crash"),
                                          ("stock-db", "stop")],
                         ids=["order-crash", "order-stop", "stock-db-crash", "stock-db-stop"])
def test_a_container_killed_in_a_storm_comes_back_and_nothing_is_lost(compose, service, mode):
    compose.kill_mode = mode
    compose.recoveries = []
    storm = Storm(compose, seed=hash((service, mode)) % 1000)
    how = "SIGKILL of its process, restart policy" if mode == "crash" else "docker kill, docker start"
    # A crash is restarted by the policy at once (the harness waits for it); a manual stop stays
    # down for 3 s before `docker start`.
    down_for = 0.0 if mode == "crash" else 3.0
    result = storm.run(f"compose: {service} killed ({how})", [(1.0, service, down_for)])
    settle_and_verify(compose, storm, result)
    assert len(compose.recoveries) == 1
    _say_result(result, compose)


def test_databases_fsync_before_they_answer_and_lock_nodes_every_second(compose):
    # `everysec` loses acknowledged writes when a database is killed during its background fsync
    # (docs/FAULTS.md, "Durability"); the lock nodes keep it on purpose.
    for name, want in [("order-db", "always"), ("stock-db", "always"), ("payment-db", "always"),
                       ("lock-1", "everysec"), ("lock-2", "everysec"), ("lock-3", "everysec")]:
        out = compose.compose("exec", "-T", name, "redis-cli", "CONFIG", "GET", "appendfsync")
        assert out.stdout.split()[-1:] == [want], (name, out.stdout, out.stderr)


def test_operator_commands_run_inside_the_network(compose):
    api_order = _checked_out_order(compose)
    # The CLI reads the archive where the log parser writes it (it once looked in a data
    # directory of its own, and every audit after archiving began found the history short).
    archive = compose.run("archive", "--json")
    assert archive.returncode == 0, archive.stdout + archive.stderr
    assert json.loads(archive.stdout)["root"] == "/var/lib/shoplog/archive"
    audit = compose.run("audit", "--json")
    assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr
    assert json.loads(audit.stdout)["violations"] == []
    saga = compose.run("saga", api_order)
    assert saga.returncode == 0 and "CheckoutCommitted" in saga.stdout, saga.stdout + saga.stderr
    sagas = compose.run("sagas", "--json", "--state", "committed")
    assert sagas.returncode == 0 and any(s["order"] == api_order for s in json.loads(sagas.stdout))
    for service in ("order", "stock", "payment"):
        diff = compose.run("replay", service, "--diff")
        assert diff.returncode == 0, diff.stdout[-2000:] + diff.stderr
    recover = compose.run("recover", "--dry-run", "--json")
    assert recover.returncode == 0, recover.stdout + recover.stderr
    groups = json.loads(recover.stdout)["groups"]
    # The saga's five consumer groups, each reported on every partition of the log it reads.
    assert {(g["log"], g["group"]) for g in groups} == {
        ("log:order", "stock"), ("log:order", "payment"), ("log:stock", "payment"),
        ("log:stock", "order"), ("log:payment", "order")}
    assert len(groups) > 5
    # `tail` follows until stopped: two seconds of it show the entries that arrive meanwhile.
    tail = compose.compose("exec", "-T", "logparser", "timeout", "-s", "INT", "3", "shoplog", "tail",
                           check=False)
    assert tail.returncode in (0, 124, 130), tail.stdout + tail.stderr


def test_scaled_services_reach_every_replica_and_survive_one_killed(compose):
    compose.start(scale={"order": 3, "stock": 2, "payment": 2})
    replicas = {svc: compose.containers(svc) for svc in ("order", "stock", "payment")}
    assert [len(r) for r in replicas.values()] == [3, 2, 2]
    before = {svc: [_requests_served(compose, c) for c in cs] for svc, cs in replicas.items()}
    compose.kill_mode = "stop"
    compose.recoveries = []
    storm = Storm(compose, seed=5)
    result = storm.run("compose: order=3 stock=2 payment=2, one order replica killed (docker kill, docker start)",
                       [(1.0, "order#2", 3.0)])
    settle_and_verify(compose, storm, result)
    after = {svc: [_requests_served(compose, c) for c in cs] for svc, cs in replicas.items()}
    for svc in replicas:
        assert all(a > b for a, b in zip(after[svc], before[svc])), \
            f"{svc}: requests per replica before {before[svc]}, after {after[svc]}"
    _say_result(result, compose)


def test_sigterm_stops_a_service_gracefully(compose):
    cid = compose.container("payment")
    started = time.monotonic()
    compose.compose("stop", "--timeout", "15", "payment")
    took = time.monotonic() - started
    state = json.loads(docker("inspect", cid).stdout)[0]["State"]
    assert state["ExitCode"] == 0, f"payment exited with {state['ExitCode']} (137: killed after the grace period)"
    assert took < 14, f"stopping took {took:.1f}s: SIGTERM did not reach the process"
    compose.compose("start", "payment")
    compose.wait_healthy()


def _checked_out_order(compose) -> str:
    from helpers import Api

    api = Api(compose.base)
    item = api.post("/stock/item/create/2").json()["item_id"]
    assert api.post(f"/stock/add/{item}/3").status_code == 200
    user = api.post("/payment/create_user").json()["user_id"]
    assert api.post(f"/payment/add_funds/{user}/10").status_code == 200
    order = api.post(f"/orders/create/{user}").json()["order_id"]
    assert api.post(f"/orders/addItem/{order}/{item}/1").status_code == 200
    assert api.post(f"/orders/checkout/{order}").status_code == 200
    api.close()
    return order


PORTS = {"order": (8101, "orders"), "stock": (8102, "stock"), "payment": (8103, "payment")}


def _requests_served(compose, container: str) -> int:
    """The API requests one replica has answered, from its own /metrics: checkouts for order,
    any route but health and metrics for the others (health checks reach every replica directly,
    not through the gateway, so they do not count)."""
    service = json.loads(docker("inspect", container).stdout)[0]["Config"]["Labels"]["com.docker.compose.service"]
    port, prefix = PORTS[service]
    text = compose.exec_http(container, port, f"/{prefix}/metrics")
    total = 0
    for line in text.splitlines():
        if not line.startswith("shoplog_http_requests_total{"):
            continue
        route = re.search(r'route="([^"]+)"', line).group(1)
        wanted = route == "/orders/checkout" if service == "order" else \
            route not in (f"/{prefix}/health", f"/{prefix}/metrics")
        if wanted:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def _say_result(result, compose):
    print(f"{result.scenario}: {result.counts()} in {result.seconds:.1f}s, quiet after {result.quiet_after}s, "
          f"recoveries {compose.recoveries}")
