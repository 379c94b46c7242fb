"""The compose files, checked offline (`make test-deploy`): what `docker-compose config` makes of
docker-compose.yml alone and of docker-compose.yml + docker-compose.cluster.yml (the cluster
option), without a Docker engine.

For the cluster option: each service database is six cluster nodes (cluster-node entrypoint, AOF,
a named volume each, a fixed address of the network's lower half, the host name the node
announces) and a keeper under the database's own name (cluster-keeper, health-checked, after
its six nodes); the services name exactly those nodes in their `redis+cluster://` URLs, wait for
REPLICA_ACKS=1, keep the standalone lock nodes, and set only documented variables; every
container keeps a health check, the restart policy and ordered starts; the images carry the two
scripts; the file's header gives the command.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from test_manifests import readme_variables

ROOT = Path(__file__).resolve().parents[2]
BASE, CLUSTER = "docker-compose.yml", "docker-compose.cluster.yml"
DBS = ("order", "stock", "payment")
NODES = {db: [f"{db}-db-{i}" for i in range(1, 7)] for db in DBS}
APPS = ("order", "stock", "payment", "logparser")


@pytest.fixture(scope="session")
def stack():
    """Overrides the suite's stack: nothing here needs a running system."""
    return None


def compose_config(*files: str) -> dict:
    if shutil.which("docker-compose"):
        cmd = ["docker-compose"]
    elif shutil.which("docker"):
        cmd = ["docker", "compose"]
    else:
        pytest.fail("neither docker-compose nor docker is installed: `docker-compose config` renders the files")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "SHOPLOG_", "REPLICA_"))}
    args = [a for f in files for a in ("-f", str(ROOT / f))]
    out = subprocess.run([*cmd, *args, "-p", "shoplogcheck", "config"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


@pytest.fixture(scope="module")
def standalone() -> dict:
    return compose_config(BASE)


@pytest.fixture(scope="module")
def cluster() -> dict:
    return compose_config(BASE, CLUSTER)


def test_the_cluster_option_adds_six_nodes_per_database_and_keeps_every_service(standalone, cluster):
    services = cluster["services"]
    assert set(services) == set(standalone["services"]) | {n for nodes in NODES.values() for n in nodes}
    for name, s in services.items():
        assert s["healthcheck"]["test"], name
        assert s["restart"] == "unless-stopped", name
        assert s.get("stop_grace_period"), name
        for dep, cond in (s.get("depends_on") or {}).items():
            assert dep in services and cond == {"condition": "service_healthy"}, f"{name} -> {dep}"


def test_every_node_is_a_cluster_node_with_aof_a_volume_and_a_fixed_address(cluster):
    services = cluster["services"]
    (ipam,) = cluster["networks"]["default"]["ipam"]["config"]
    subnet, dynamic = ipaddress.ip_network(ipam["subnet"]), ipaddress.ip_network(ipam["ip_range"])
    assert dynamic.subnet_of(subnet)
    addresses = set()
    for db, nodes in NODES.items():
        for node in nodes:
            s = services[node]
            assert s["image"] == "shoplog-redis:latest" and s["entrypoint"] == ["cluster-node"], node
            assert s["hostname"] == node, f"{node} would announce another host name"
            command = s["command"]
            assert command[command.index("--appendonly") + 1] == "yes", node
            assert s["volumes"] == [f"{node}:/data:rw"] or s["volumes"] == [f"{node}:/data"], s["volumes"]
            assert node in cluster["volumes"], node
            address = ipaddress.ip_address(s["networks"]["default"]["ipv4_address"])
            assert address in subnet and address not in dynamic, f"{node}: {address}"
            addresses.add(address)
    assert len(addresses) == sum(map(len, NODES.values())), "two nodes share an address"


def test_each_database_name_is_its_clusters_keeper(cluster):
    services = cluster["services"]
    for db, nodes in NODES.items():
        keeper = services[f"{db}-db"]
        assert keeper["entrypoint"] == ["cluster-keeper"], db
        assert keeper["command"] == [f"{db}-db", str(len(nodes))], db
        assert keeper["healthcheck"]["test"] == ["CMD", "cluster-keeper", "check", f"{db}-db", str(len(nodes))]
        assert set(keeper["depends_on"]) == set(nodes), db
        assert keeper["read_only"] is True and keeper["cap_drop"] == ["ALL"], db
        assert all(v.endswith(":ro") for v in keeper.get("volumes", [])), keeper.get("volumes")
        # The services wait for it: a formed cluster.
        for app in APPS:
            assert services[app]["depends_on"][f"{db}-db"] == {"condition": "service_healthy"}, app


def test_the_services_reach_the_clusters_and_wait_for_a_replica(standalone, cluster):
    documented = readme_variables()
    for app in APPS + ("ids",):
        env = cluster["services"][app]["environment"]
        assert set(env) <= documented, f"{app}: undocumented {set(env) - documented}"
        for db, nodes in NODES.items():
            assert env[f"{db.upper()}_DB_URL"] == "redis+cluster://" + ",".join(f"{n}:6379" for n in nodes), app
        assert str(env["REPLICA_ACKS"]) == "1", app
        # Redlock keeps its three independent standalone nodes.
        assert env["LOCK_URLS"] == standalone["services"][app]["environment"]["LOCK_URLS"], app
    for lock in ("lock-1", "lock-2", "lock-3"):
        assert cluster["services"][lock] == standalone["services"][lock], lock


def test_the_redis_image_carries_the_cluster_scripts_and_the_header_gives_the_command():
    dockerfile = (ROOT / "deploy" / "docker" / "redis.Dockerfile").read_text()
    assert "COPY cluster-node cluster-keeper /usr/local/bin/" in dockerfile
    for script in ("cluster-node", "cluster-keeper"):
        path = ROOT / "deploy" / "docker" / script
        assert os.access(path, os.X_OK), f"{path} is not executable"
        out = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        if shutil.which("shellcheck"):
            out = subprocess.run(["shellcheck", "-S", "warning", str(path)], capture_output=True, text=True)
            assert out.returncode == 0, out.stdout
    header = (ROOT / CLUSTER).read_text().split("\n\n", 1)[0]
    assert f"docker-compose -f {BASE} -f {CLUSTER} up -d" in header
    assert "SHOPLOG_CLUSTER_NET" in header
