"""The compose stack's cluster option on the real Docker engine (`make test-compose`):
docker-compose.yml + docker-compose.cluster.yml, each service database a Redis Cluster of 3
primaries with one replica each and the services on REPLICA_ACKS=1, brought up as project
`shoplogtestcluster` (gateway on 127.0.0.1:18001, network 172.30.109.0/24) beside the standalone
tests' project. Then:

- each database is a formed cluster, as every one of its six nodes sees it: 3 primaries whose
  slots cover the 16,384 exactly once, 3 replicas, one per primary, in sync with their
  primary's address; AOF on every node, a named volume each, the restart policy and a health
  check on every container, REPLICA_ACKS=1 in the services;
- checkouts through the gateway (items, users, orders made through the API) reconcile exactly:
  each order paid as answered, stock and credit exactly what the paid orders took; `shoplog
  audit` in the logparser container exits 0;
- a stock-db primary crashed in the middle of a checkout storm (SIGKILL of the container's
  process from the host; the restart policy restarts it): its replica is promoted, a checkout
  succeeds again within 30 s, the storm passes the fault harness's every check (exact
  reconciliation, truthful answers, acknowledged writes present, audit clean, nothing pending),
  what was acknowledged before the crash is unchanged, and the old primary is back as a replica
  of the promoted one;
- `down` and `up` (volumes kept): the same clusters (the same node ids), not formed again, with
  all their data.

`down -v` at the end. Every container's log tail is printed when a test fails. About 2.5 minutes.
"""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from compose_stack import SLOTS, ComposeCluster, docker, inspect, require_engine_and_images
from compose_stack import stack  # noqa: F401 (the fixture: no local stack for these tests)
from conftest import _say
from harness import Storm, settle_and_verify, wait_for
from helpers import Api, run_concurrently


# Bringing 30 containers up (or down and up again) on a 2-core machine, or a storm with a
# failover, can take longer than the suite's 120 s per test.
pytestmark = pytest.mark.timeout(300)

# What the first checkouts left (order -> paid, item -> stock, user -> credit), checked again
# after the crash and after `down`/`up`.
BEFORE: dict[str, dict] = {}


@pytest.fixture(scope="module")
def cluster(request):
    require_engine_and_images()
    s = ComposeCluster()
    s.down()  # what an interrupted earlier run left
    seconds = s.start(timeout=180)
    _say(request, f"\n[compose cluster] `up -d` to every container healthy: {seconds:.1f}s")
    yield s
    s.down()
    left = docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={s.project}").stdout
    assert not left.split(), f"`down -v` left volumes: {left}"


@pytest.fixture(autouse=True)
def tails_on_failure(request, cluster):
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        _say(request, cluster.log_tails(lines=25))


def assert_formed(cluster: ComposeCluster, db: str) -> dict[str, dict]:
    """`db`'s cluster as its six nodes see it: formed, every slot served once, one replica in sync
    per primary. Returns the view."""
    view = cluster.cluster_view(db)
    ids = {name: v.get("id") for name, v in view.items()}
    assert all(ids.values()), f"{db}-db: nodes that do not answer: {[n for n, i in ids.items() if not i]}"
    assert len(set(ids.values())) == cluster.nodes_per_db, f"{db}-db: node ids {ids}"
    for name, v in view.items():
        assert v["state"] == "ok", f"{name}: cluster_state:{v['state']}"
        assert len(v["known"]) == cluster.nodes_per_db, f"{name} knows {len(v['known'])} nodes: {v['known']}"
        for node_id, host, flags, link in v["known"]:
            assert link == "connected" and "fail" not in flags, f"{name} sees {host} ({node_id}) {flags} {link}"
    primaries = {n: v for n, v in view.items() if v["role"] == "primary"}
    replicas = {n: v for n, v in view.items() if v["role"] == "replica"}
    assert len(primaries) == 3 and len(replicas) == 3, f"{db}-db: primaries {sorted(primaries)}, replicas {sorted(replicas)}"
    served = sorted(r for v in primaries.values() for r in v["slots"])
    assert all(v["slots"] for v in primaries.values()), f"{db}-db: a primary without slots: {primaries}"
    assert served[0][0] == 0 and served[-1][1] == SLOTS - 1, served
    assert all(a[1] + 1 == b[0] for a, b in zip(served, served[1:])), f"{db}-db: slots not covered once: {served}"
    by_id = {v["id"]: n for n, v in primaries.items()}
    assert sorted(by_id.get(v["master_id"], "?") for v in replicas.values()) == sorted(primaries), \
        f"{db}-db: not one replica per primary: {[(n, v['master_id']) for n, v in replicas.items()]}"
    for name, v in replicas.items():
        primary = view[by_id[v["master_id"]]]
        assert v["master_link"] == "up", f"{name}: replication link {v['master_link']}"
        assert v["master_host"] == primary["addr"], \
            f"{name} replicates from {v['master_host']}, its primary {by_id[v['master_id']]} is at {primary['addr']}"
    return view


def test_each_database_is_a_formed_cluster_of_three_primaries_and_three_replicas(cluster):
    for db in cluster.databases:
        view = assert_formed(cluster, db)
        assert all(v["aof"] == "1" for v in view.values()), {n: v["aof"] for n, v in view.items()}
    infos = {i["Config"]["Labels"]["com.docker.compose.service"]: i
             for i in json.loads(docker("inspect", *cluster.containers()).stdout)}
    for name, info in infos.items():
        assert info["Config"].get("Healthcheck", {}).get("Test"), f"{name}: no health check"
        assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped", name
    for node in (n for db in cluster.databases for n in cluster.nodes(db)):
        mounts = {m["Destination"]: m for m in infos[node]["Mounts"]}
        assert mounts["/data"]["Type"] == "volume" and mounts["/data"]["Name"] == f"{cluster.project}_{node}", node
    for service in ("order", "stock", "payment", "logparser"):
        env = dict(e.partition("=")[::2] for e in infos[service]["Config"]["Env"])
        assert env["REPLICA_ACKS"] == "1", service
        for db in cluster.databases:
            assert env[f"{db.upper()}_DB_URL"] == "redis+cluster://" + ",".join(f"{n}:6379" for n in cluster.nodes(db))


def test_checkouts_through_the_gateway_reconcile_exactly_and_audit_is_clean(cluster):
    api = Api(cluster.base)
    prices = [1, 2, 3, 5, 8]
    credits = [0, 4, 12, 30, 60]
    items = dict(zip(run_concurrently(lambda a, p: a.create_item(price=p, stock=10), prices, 8, cluster.base), prices))
    users = dict(zip(run_concurrently(lambda a, c: a.create_user(credit=c), credits, 8, cluster.base), credits))
    rng = random.Random(11)
    plans = [(list(users)[i % len(users)], [(rng.choice(list(items)), rng.randint(1, 3))
                                             for _ in range(rng.randint(1, 2))]) for i in range(20)]

    def make(a: Api, plan):
        order = a.create_order(plan[0])
        for item, qty in plan[1]:
            a.add_item(order, item, qty)
        return order

    orders = dict(zip(run_concurrently(make, plans, 8, cluster.base), plans))
    answers = run_concurrently(lambda a, o: a.post(f"/orders/checkout/{o}", timeout=30).status_code,
                               list(orders), workers=8, base=cluster.base)
    assert all(s in (200, 400) for s in answers), answers
    assert 200 in answers and 400 in answers, answers

    found = {o: api.order(o) for o in orders}
    stock, credit = dict.fromkeys(items, 10), dict(users)
    for (order, (user, lines)), status in zip(orders.items(), answers):
        assert found[order]["paid"] == (status == 200), f"order {order} answered {status}: {found[order]}"
        if status == 200:
            for item, qty in lines:
                stock[item] -= qty
            credit[user] -= sum(items[item] * qty for item, qty in lines)
            assert found[order]["total_cost"] == sum(items[i] * q for i, q in lines)
    assert {i: api.item(i)["stock"] for i in items} == stock
    assert {u: api.credit(u) for u in users} == credit
    api.close()
    BEFORE.update(orders={o: f["paid"] for o, f in found.items()}, stock=stock, credit=credit)

    audit = cluster.run("audit", "--json")
    assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr
    assert json.loads(audit.stdout)["violations"] == []


def assert_before_unchanged(cluster: ComposeCluster):
    assert BEFORE, "the checkout test did not run first"
    api = Api(cluster.base)
    assert {o: api.order(o)["paid"] for o in BEFORE["orders"]} == BEFORE["orders"]
    assert {i: api.item(i)["stock"] for i in BEFORE["stock"]} == BEFORE["stock"]
    assert {u: api.credit(u) for u in BEFORE["credit"]} == BEFORE["credit"]
    api.close()


@pytest.mark.slow  # make test-faults: see test/faults/test_failover.py on why not make test
def test_a_stock_db_primary_crashed_in_a_storm_fails_over_and_loses_nothing(cluster, request):
    view = assert_formed(cluster, "stock")
    primary = min(n for n, v in view.items() if v["role"] == "primary")
    replica = next(n for n, v in view.items() if v["master_id"] == view[primary]["id"])
    restarts = inspect(cluster.container(primary))["RestartCount"]

    # Probe checkouts: orders of their own, one a time from the kill on, until one is paid.
    api = Api(cluster.base)
    item = api.create_item(price=1, stock=1000)
    user = api.create_user(credit=1000)

    def make(a: Api, _):
        order = a.create_order(user)
        a.add_item(order, item, 1)
        return order

    probes = run_concurrently(make, range(40), 8, cluster.base)
    killed_at: list[float] = []
    promoted_after: list[float] = []
    paid_after: list[float] = []

    def watch_promotion():
        cid = cluster.container(replica)
        while not promoted_after and time.monotonic() - killed_at[0] < 60:
            role = docker("exec", cid, "redis-cli", "role", check=False).stdout.split()
            if role[:1] == ["master"]:
                promoted_after.append(time.monotonic() - killed_at[0])
            time.sleep(0.2)

    def probe_checkouts():
        probe_api = Api(cluster.base)
        for order in probes:
            if time.monotonic() - killed_at[0] > 60:
                break
            try:
                if probe_api.post(f"/orders/checkout/{order}", timeout=10).status_code == 200:
                    paid_after.append(time.monotonic() - killed_at[0])
                    break
            except Exception:  # noqa: BLE001 — a timeout or a reset: not paid yet
                pass
            time.sleep(0.5)
        probe_api.close()

    threads = [threading.Thread(target=watch_promotion), threading.Thread(target=probe_checkouts)]
    original_kill = cluster.kill

    def kill(name):
        pid = original_kill(name)
        killed_at.append(time.monotonic())
        for t in threads:
            t.start()
        return pid

    cluster.kill_mode = "crash"
    cluster.recoveries = []
    cluster.kill = kill
    storm = Storm(cluster, n_orders=400, n_items=20, stock=20, n_users=80, credit=6, workers=16, seed=17)
    try:
        result = storm.run(f"compose cluster: the {primary} primary crashed (SIGKILL of its process, "
                           "restart policy)", [(1.0, primary, 0.0)])
    finally:
        cluster.kill = original_kill
        for t in threads:
            if t.ident:  # started
                t.join()
    assert promoted_after, f"{replica} was not promoted within 60 s of the crash of {primary}"
    assert paid_after, "no checkout was paid within 60 s of the crash"
    result.scenario += f" (replica promoted after {promoted_after[0]:.1f} s, a checkout paid after {paid_after[0]:.1f} s)"
    settle_and_verify(cluster, storm, result)
    assert paid_after[0] < 30, f"the first checkout after the crash was paid after {paid_after[0]:.1f} s"

    # The old primary was restarted by the policy and rejoined as the promoted node's replica.
    assert inspect(cluster.container(primary))["RestartCount"] == restarts + 1
    wait_for(lambda: cluster.cluster_view("stock").get(primary, {}).get("master_link") == "up",
             f"{primary} to be in sync as a replica", timeout=30, every=1)
    view = assert_formed(cluster, "stock")
    assert view[replica]["role"] == "primary" and view[primary]["master_id"] == view[replica]["id"], view

    # Everything acknowledged before the crash is there, and the probe entities reconcile.
    assert_before_unchanged(cluster)
    paid = sum(api.order(o)["paid"] for o in probes)
    assert api.item(item)["stock"] == 1000 - paid and api.credit(user) == 1000 - paid
    api.close()
    _say(request, f"\n{result.scenario}: {result.counts()} in {result.seconds:.1f}s, quiet after "
                  f"{result.quiet_after}s, {cluster.recoveries}")


def test_down_and_up_keep_the_clusters_and_their_data(cluster, request):
    ids = {db: {n: v["id"] for n, v in cluster.cluster_view(db).items()} for db in cluster.databases}
    cluster.down(volumes=False)
    assert not cluster.networks(), f"`down` left networks: {cluster.networks()}"
    seconds = cluster.start(timeout=180)
    for db in cluster.databases:
        view = assert_formed(cluster, db)
        assert {n: v["id"] for n, v in view.items()} == ids[db], f"{db}-db: other node ids after `up`"
    keepers = cluster.compose("logs", "--no-color", *(f"{db}-db" for db in cluster.databases)).stdout
    assert "forming" not in keepers, keepers
    assert_before_unchanged(cluster)
    audit = cluster.run("audit")
    assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr
    api = Api(cluster.base)
    order = api.create_order(api.create_user(credit=5))
    api.add_item(order, api.create_item(price=5, stock=1), 1)
    assert api.post(f"/orders/checkout/{order}").status_code == 200
    api.close()
    _say(request, f"\n[compose cluster] `down`, then `up -d` to every container healthy: {seconds:.1f}s")
