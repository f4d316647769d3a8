"""``kubectl aicenter`` and its dashboard against the real control plane.

The national fleet at scale 0.001 (the session's ``sim_fleet``: 40 simulated nodes in five centres)
with its AICenters and GPUQuotas applied, the operator running as a process, and a few GPUJobs in
two centres, three of them pending for different reasons. The plugin's output is checked against the
fleet's numbers and against what the API server says (job status, pods), and the dashboard is loaded
in a real headless Chromium, screenshotted, and its racks and counts compared with the fleet.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from browser import Chromium, find_chromium
from plugin_kit import (
    ReachableOperator,
    cliques_of,
    fleet,
    host_ip,
    racks_of,
    rows,
    run_cli,
    sa_token,
    token_kubeconfig,
)

from aicenter import api
from aicenter_testbed import manifests
from aicenter_testbed.fleet import GPU_RESOURCE, LABEL_CLIQUE, Fleet, iter_nodes
from aicenter_testbed.procs import free_port
from aicenter_testbed.samples import fleet_manifests
from aicenter_testbed.waiting import wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
G = api.GROUP_PATH
NATIONAL, SAMSUNG = "national-ai-center", "samsung-ai-megafactory"


def call(cluster, method: str, path: str, body=None, ok=(200, 201)):
    status, doc = cluster.request(method, path, body)
    assert status in ok, f"{method} {path}: {status} {doc}"
    return doc


def get_job(cluster, ns: str, name: str) -> dict:
    return call(cluster, "GET", f"{G}/namespaces/{ns}/gpujobs/{name}")


@dataclass(frozen=True)
class Job:
    namespace: str
    name: str
    replicas: int
    gpus: int
    pending: bool
    priority: int = 0
    clique: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class Env:
    fleet: Fleet
    operator: ReachableOperator
    jobs: list[Job]

    @property
    def endpoint(self) -> str:
        return self.operator.endpoint

    def cli(self, *args: str):
        res = run_cli(*args, "--endpoint", self.endpoint)
        assert res.rc == 0, f"kubectl aicenter {' '.join(args)}: rc {res.rc}\n{res.err}"
        return res.out

    def job(self, name: str) -> Job:
        return next(j for j in self.jobs if j.name == name)


def _jobs(f: Fleet) -> list[Job]:
    """Running and pending work in two centres, sized from the fleet's quotas (checked here)."""
    nat = f.center(NATIONAL)
    q = {x.name: x for x in nat.quotas}
    per_node = nat.pools[0].shape.gpus_per_node
    assert per_node == 8 and q["universities"].limit["B200"] < 32 and q["startups"].limit["B200"] < 24
    assert (
        q["sovereign-foundation-models"].guaranteed["B200"] >= 16
        and q["universities"].guaranteed["B200"] >= 4
    )
    sam = {x.name: x for x in f.center(SAMSUNG).quotas}
    assert sam["semiconductor-fab-ai"].guaranteed["GB200"] >= 12
    return [
        Job("sovereign-foundation-models", "pretrain", 2, 8, pending=False),
        Job("universities", "course", 1, 4, pending=False),
        Job("semiconductor-fab-ai", "nvl", 3, 4, pending=False, clique=True),
        # pending: over its quota's limit (highest priority first), a replica larger than any node
        Job("universities", "thesis", 4, 8, pending=True, priority=100),
        Job("public-research-institutes", "wide", 1, per_node + 4, pending=True, priority=50),
        Job("startups", "moonshot", 3, 8, pending=True, priority=0),
    ]


def _fleet_namespaces(f: Fleet, *centers: str) -> list[str]:
    return [q.name for c in f.centers if c.name in centers for q in c.quotas]


def _clear_jobs(cluster, namespaces: list[str]) -> None:
    """No GPUJobs and no job pods left in the fleet namespaces this module uses."""
    for ns in namespaces:
        call(cluster, "DELETE", f"{G}/namespaces/{ns}/gpujobs", ok=(200, 404))

    def gone() -> bool:
        for ns in namespaces:
            if call(cluster, "GET", f"{G}/namespaces/{ns}/gpujobs")["items"]:
                return False
            pods = call(cluster, "GET", f"/api/v1/namespaces/{ns}/pods?labelSelector={api.LABEL_JOB}")[
                "items"
            ]
            if pods:
                return False
        return True

    wait_for(gone, 120, f"no GPUJobs or job pods in {namespaces}")


@pytest.fixture(scope="module")
def env(cluster, sim_fleet, tmp_path_factory) -> Iterator[Env]:
    f = fleet()
    assert {n.name for n in iter_nodes(f)} == {n.name for n in sim_fleet}
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "manifests/crds/all.yaml"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd", api.CRD_NAME_AICENTERS, api.CRD_NAME_GPUQUOTAS,
        api.CRD_NAME_GPUJOBS, "--timeout=60s",
    )  # fmt: skip
    objs = fleet_manifests(f, namespaces=True)
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=aicenter-plugin-tests", "-f", "-",
        input=yaml.safe_dump_all(objs),
    )  # fmt: skip
    used = _fleet_namespaces(f, NATIONAL, SAMSUNG)
    _clear_jobs(cluster, used)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = ReachableOperator(cluster.kubeconfig, log, host=host_ip() or "127.0.0.1").start(timeout=180)
    jobs = _jobs(f)
    try:
        for c in f.centers:  # the operator has seen every node of the fleet's centres

            def counted(c=c) -> bool:
                st = call(cluster, "GET", f"{G}/aicenters/{c.name}").get("status") or {}
                return st.get("totalGPUs") == c.gpus and (st.get("nodes") or {}).get("ready") == c.nodes

            wait_for(counted, 120, f"AICenter {c.name} status with the fleet's {c.gpus} GPUs")
        for j in jobs:
            topo = (LABEL_CLIQUE, api.TOPOLOGY_REQUIRED) if j.clique else None
            body = manifests.gpujob(j.name, j.replicas, j.gpus, priority=j.priority, topology=topo)
            call(cluster, "POST", f"{G}/namespaces/{j.namespace}/gpujobs", body)
        for j in jobs:

            def settled(j=j) -> dict | None:
                st = get_job(cluster, j.namespace, j.name).get("status") or {}
                if j.pending:
                    return st if st.get("phase") == api.PHASE_PENDING and st.get("reason") else None
                return st if st.get("phase") == api.PHASE_RUNNING else None

            wait_for(settled, 120, f"GPUJob {j.key} {'pending with a reason' if j.pending else 'running'}")
        yield Env(f, op, jobs)
    finally:
        _clear_jobs(cluster, used)
        op.stop()


def _pod_gpus_on(cluster, nodes: set[str]) -> int:
    """GPUs held by live pods bound to ``nodes``, from the API server (not the operator's word)."""
    total = 0
    for p in call(cluster, "GET", "/api/v1/pods")["items"]:
        if p["spec"].get("nodeName") in nodes and p["status"].get("phase") not in ("Succeeded", "Failed"):
            for c in p["spec"]["containers"]:
                total += int(((c.get("resources") or {}).get("limits") or {}).get(GPU_RESOURCE, 0))
    return total


# -- status ----------------------------------------------------------------------------------------


def test_status_shows_each_centre_and_class_as_the_fleet_has_it(cluster, env):
    out = env.cli("status")
    table = {(r["CENTRE"], r["CLASS"]): r for r in rows(out, "CENTRE")}
    for c in env.fleet.centers:
        for cls, gpus in c.gpus_by_class().items():
            r = table[(c.name, cls)]
            nodes = sum(p.nodes for p in c.pools if p.shape.gpu_class == cls)
            assert (r["NODES"], r["READY"], r["TOTAL"], r["UNHEALTHY"]) == (
                str(nodes),
                str(nodes),
                str(gpus),
                "0",
            )
            assert int(r["ALLOCATED"]) + int(r["FREE"]) == gpus, r
    # allocation as the API server's pods say, including this module's running jobs
    nat_nodes = {n.name for n in iter_nodes(env.fleet) if n.center == NATIONAL}
    running = sum(
        j.replicas * j.gpus for j in env.jobs if not j.pending and j.namespace != "semiconductor-fab-ai"
    )
    allocated = _pod_gpus_on(cluster, nat_nodes)
    assert allocated >= running == 20
    assert table[(NATIONAL, "B200")]["ALLOCATED"] == str(allocated)
    assert table[(NATIONAL, "B200")]["LARGEST"] == "8"  # whole free nodes remain


def test_status_shows_racks_and_cliques_with_their_largest_free_block(cluster, env):
    out = env.cli("status", "--center", SAMSUNG)
    topo = rows(out, "LEVEL")
    racks = {r["NAME"] for r in topo if r["LEVEL"] == "rack"}
    cliques = {r["NAME"]: r for r in topo if r["LEVEL"] == "clique"}
    assert racks == {rack for _, rack in racks_of(env.fleet, SAMSUNG)}
    assert set(cliques) == {cl for _, cl in cliques_of(env.fleet, SAMSUNG)}
    nvl = env.job("nvl")
    pods = call(
        cluster, "GET", f"/api/v1/namespaces/{nvl.namespace}/pods?labelSelector={api.LABEL_JOB}%3Dnvl"
    )
    used = {p["spec"]["nodeName"] for p in pods["items"]}
    clique_of = {n.name: n.clique for n in iter_nodes(env.fleet)}
    (clique,) = {clique_of[n] for n in used}  # the gang stayed inside one NVLink clique
    assert int(cliques[clique]["ALLOCATED"]) >= nvl.replicas * nvl.gpus
    assert cliques[clique]["LARGEST"] == "4"  # GB200 nodes: 4 GPUs each
    assert "samsung-ai-megafactory GB200: racks and NVLink cliques" in out


# -- queue -----------------------------------------------------------------------------------------


def test_queue_lists_pending_work_in_order_with_positions_and_reasons(cluster, env):
    out = env.cli("queue")
    table = rows(out, "POS")
    assert [int(r["POS"]) for r in table] == list(range(1, len(table) + 1))
    ours = [r for r in table if r["JOB"] in {j.key for j in env.jobs if j.pending}]
    assert [r["JOB"] for r in ours] == [
        "universities/thesis",  # priority 100
        "public-research-institutes/wide",  # priority 50
        "startups/moonshot",  # priority 0
    ]
    for r in ours:
        ns, name = r["JOB"].split("/")
        st = get_job(cluster, ns, name)["status"]
        j = env.job(name)
        assert (r["REASON"], r["MESSAGE"]) == (st["reason"], st["message"]), r
        assert (r["QUOTA"], r["CLASS"], r["SHAPE"], r["GPUS"]) == (
            ns,
            "B200",
            f"{j.replicas}x{j.gpus}",
            str(j.replicas * j.gpus),
        )
    assert {r["JOB"] for r in table}.isdisjoint({j.key for j in env.jobs if not j.pending})
    one = rows(env.cli("queue", "--quota", "universities"), "POS")
    assert [r["JOB"] for r in one] == ["universities/thesis"]
    assert json_names(env.cli("queue", "--center", NATIONAL, "-o", "json")) == [
        r["JOB"] for r in table if r["CENTRE"] == NATIONAL
    ]


def json_names(text: str) -> list[str]:
    import json

    return [f"{e['namespace']}/{e['name']}" for e in json.loads(text)["pending"]]


# -- why -------------------------------------------------------------------------------------------


def test_why_explains_a_pending_job(cluster, env):
    out = env.cli("why", "startups/moonshot")
    st = get_job(cluster, "startups", "moonshot")["status"]
    assert out.startswith(f"GPUJob startups/moonshot: Pending\n  {st['reason']}: {st['message']}\n")
    queue = rows(env.cli("queue"), "POS")
    pos = next(r["POS"] for r in queue if r["JOB"] == "startups/moonshot")
    assert f"Queue: position {pos} of {len(queue)}; 3x8 = 24 B200, priority 0" in out
    quota = next(q for q in env.fleet.center(NATIONAL).quotas if q.name == "startups")
    (row,) = rows(out, "CLASS  USED")
    assert row["CLASS"] == "B200"
    assert (int(row["GUARANTEED"]), int(row["LIMIT"])) == (quota.guaranteed["B200"], quota.limit["B200"])
    assert f"Centre {NATIONAL} B200: " in out


def test_why_shows_where_a_running_job_runs(cluster, env):
    out = env.cli("why", "sovereign-foundation-models/pretrain")
    assert out.startswith("GPUJob sovereign-foundation-models/pretrain: Running")
    placed = {(r["REPLICA"], r["NODE"]) for r in rows(out, "REPLICA")}
    pods = call(
        cluster,
        "GET",
        f"/api/v1/namespaces/sovereign-foundation-models/pods?labelSelector={api.LABEL_JOB}%3Dpretrain",
    )["items"]
    assert placed == {(p["metadata"]["labels"][api.LABEL_REPLICA], p["spec"]["nodeName"]) for p in pods}


def test_why_of_an_unknown_job_says_so(env):
    res = run_cli("why", "startups/no-such-job", "--endpoint", env.endpoint)
    assert res.rc == 1 and "does not know GPUJob startups/no-such-job" in res.err


# -- top quotas ------------------------------------------------------------------------------------


def test_top_quotas_shows_used_guaranteed_limit(cluster, env):
    table = {(r["QUOTA"], r["CLASS"]): r for r in rows(env.cli("top", "quotas"), "QUOTA")}
    for c in env.fleet.centers:
        for q in c.quotas:
            for cls in c.gpus_by_class():
                r = table[(q.name, cls)]
                assert (r["CENTRE"], int(r["GUARANTEED"]), int(r["LIMIT"])) == (
                    c.name,
                    q.guaranteed[cls],
                    max(q.limit[cls], q.guaranteed[cls]),
                ), r
    used = {
        ("sovereign-foundation-models", "B200"): 16,
        ("universities", "B200"): 4,
        ("semiconductor-fab-ai", "GB200"): 12,
    }
    for (quota, cls), n in used.items():
        assert int(table[(quota, cls)]["USED"]) == n, table[(quota, cls)]
        # the quota's own status (written every few seconds) comes to say the same
        what = f"GPUQuota {quota} status.usedGPUs {n}"
        wait_for(lambda q=quota, n=n: _status_used(cluster, q) == n, 60, what)
    assert table[("startups", "B200")]["PENDING"] == "1"


def _status_used(cluster, quota: str) -> int | None:
    return (call(cluster, "GET", f"{G}/gpuquotas/{quota}").get("status") or {}).get("usedGPUs")


# -- the API server's service proxy, RBAC and the kubectl plugin mechanism ---------------------------


@pytest.fixture(scope="module")
def proxied(cluster, env, tmp_path_factory) -> Iterator[dict]:
    """The operator behind a Service as the chart makes it (label app.kubernetes.io/name, port
    "metrics"): a selector-less Service whose Endpoints name the operator's address and a placeholder
    Pod holding that IP (the API server proxies only to endpoints that point at a pod)."""
    ip = env.operator.host
    if ip == "127.0.0.1":
        pytest.skip(
            "no non-loopback IPv4 address here: the API server's service proxy refuses loopback endpoints"
        )
    ns = cluster.create_namespace(f"aic-proxy-{os.getpid() % 100000}")
    svc = "aicenter-operator-metrics"
    try:
        pod_spec = {
            "schedulerName": "none-so-it-stays-unscheduled",
            "containers": [{"name": "c", "image": "x"}],
        }
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "operator-address"}, "spec": pod_spec}
        call(cluster, "POST", f"/api/v1/namespaces/{ns}/pods", pod)
        status, doc = cluster.request(
            "PATCH",
            f"/api/v1/namespaces/{ns}/pods/operator-address/status",
            {"status": {"podIP": ip, "podIPs": [{"ip": ip}]}},
            content_type="application/merge-patch+json",
        )
        assert status == 200, doc
        call(cluster, "POST", f"/api/v1/namespaces/{ns}/services", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": svc, "labels": {"app.kubernetes.io/name": "aicenter-operator"}},
            "spec": {"ports": [{"name": "metrics", "port": 8080, "targetPort": env.operator.port}]},
        })  # fmt: skip
        address = {"ip": ip, "targetRef": {"kind": "Pod", "name": "operator-address", "namespace": ns}}
        subset = {"addresses": [address], "ports": [{"name": "metrics", "port": env.operator.port}]}
        endpoints = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": svc}, "subsets": [subset]}
        call(cluster, "POST", f"/api/v1/namespaces/{ns}/endpoints", endpoints)
        proxy = f"/api/v1/namespaces/{ns}/services/{svc}:metrics/proxy/visibility/v1/quotas"
        wait_for(
            lambda: cluster.request("GET", proxy)[0] == 200, 60, "the operator through the service proxy"
        )
        # a reader with what docs/admin.md asks for, and a ServiceAccount without the proxy right
        for sa in ("reader", "stranger"):
            call(cluster, "POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": sa}})
        rules = {
            "reader": [
                {"apiGroups": [""], "resources": ["services"], "verbs": ["list"]},
                {
                    "apiGroups": [""],
                    "resources": ["services/proxy"],
                    "verbs": ["get"],
                    "resourceNames": [f"{svc}:metrics"],
                },
            ],
            "stranger": [{"apiGroups": [""], "resources": ["services"], "verbs": ["list"]}],
        }
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        for sa, rs in rules.items():
            call(cluster, "POST", f"{rbac}/namespaces/{ns}/roles", {"metadata": {"name": sa}, "rules": rs})
            call(cluster, "POST", f"{rbac}/namespaces/{ns}/rolebindings", {
                "metadata": {"name": sa},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
            })  # fmt: skip
        d = tmp_path_factory.mktemp("kubeconfigs")
        yield {
            "namespace": ns,
            "service": svc,
            "reader": token_kubeconfig(cluster, sa_token(cluster, ns, "reader"), d / "reader"),
            "stranger": token_kubeconfig(cluster, sa_token(cluster, ns, "stranger"), d / "stranger"),
        }
    finally:
        cluster.delete_namespace(ns)


def test_through_the_service_proxy_with_only_the_documented_rights(env, proxied):
    """The default way: the API server's service proxy, the Service found by its label, the caller
    allowed "get" on services/proxy (and "list" on services for the discovery) and nothing else."""
    args = ["--kubeconfig", str(proxied["reader"]), "--operator-namespace", proxied["namespace"]]
    res = run_cli("queue", *args)
    assert res.rc == 0, res.err
    seen = [(r["POS"], r["JOB"], r["REASON"]) for r in rows(res.out, "POS")]
    assert seen == [(r["POS"], r["JOB"], r["REASON"]) for r in rows(env.cli("queue"), "POS")]
    assert "universities/thesis" in {job for _, job, _ in seen}
    res = run_cli("top", "quotas", *args, "-o", "json")
    assert res.rc == 0, res.err
    res = run_cli("why", "universities/thesis", *args)
    assert res.rc == 0 and "GPUJob universities/thesis: Pending" in res.out, res.err


def test_without_the_proxy_right_the_error_names_it(env, proxied):
    res = run_cli(
        "queue", "--kubeconfig", str(proxied["stranger"]), "--operator-namespace", proxied["namespace"]
    )
    assert res.rc == 1 and res.out == ""
    assert '"get" on "services/proxy" for service aicenter-operator-metrics' in res.err, res.err


def test_kubectl_finds_the_plugin_on_its_path(cluster, env, proxied):
    """krew-style naming: ``kubectl aicenter`` runs the console script ``kubectl-aicenter``."""
    bindir = Path(sys.executable).parent
    if not (bindir / "kubectl-aicenter").exists():
        pytest.skip(
            f"kubectl-aicenter is not installed in {bindir}: reinstall the project (hack/lib/venv.sh)"
        )
    kubectl = str(cluster.kubectl_bin)
    env_vars = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(proxied["reader"]),
    }
    args = ["aicenter", "queue", "--operator-namespace", proxied["namespace"], "--quota", "universities"]
    proc = subprocess.run([kubectl, *args], capture_output=True, text=True, env=env_vars, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [r["JOB"] for r in rows(proc.stdout, "POS")] == ["universities/thesis"]


# -- the dashboard in a real browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard_url(env, tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("dashboard") / "dashboard.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aicenter.plugin.cli", "dashboard", "--endpoint", env.endpoint,
             "--port", str(port), "--refresh", "1"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"dashboard exited {proc.returncode}: {log.read_text()}")
        with urllib.request.urlopen(url + "healthz", timeout=5) as r:
            return r.status == 200

    try:
        wait_for(up, 60, f"the dashboard on {url}")
        assert f"dashboard: {url}" in log.read_text()
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Chromium]:
    if find_chromium() is None:
        pytest.skip("no Chromium to test the dashboard in: apt-get install chromium (.ci/run installs it)")
    with Chromium.launch(tmp_path_factory.mktemp("browser")) as b:
        yield b


DOM_FACTS = """(() => {
  const out = {};
  for (const c of document.querySelectorAll('article.center')) {
    const q = (sel) => [...c.querySelectorAll(sel)];
    out[c.dataset.center] = {
      capacity: +c.dataset.capacity,
      allocated: +c.dataset.allocated,
      racks: q('.domain.rack').map((e) => [e.dataset.gpuClass, e.dataset.name]),
      rackGPUs: q('.domain.rack').reduce((s, e) => s + +e.dataset.capacity, 0),
      rackNodes: q('.domain.rack').reduce((s, e) => s + +e.dataset.nodes, 0),
      cliques: q('.domain.clique').map((e) => [e.dataset.gpuClass, e.dataset.name]),
      classText: Object.fromEntries(q('.gpu-class').map((e) => [e.dataset.gpuClass,
        e.querySelector('.stat-capacity').textContent])),
      totalText: c.querySelector('.center-total').textContent,
    };
  }
  return {
    centers: out,
    queue: [...document.querySelectorAll('#queue tr.pending')].map((r) => [+r.dataset.position,
      r.dataset.namespace + '/' + r.dataset.name, r.dataset.reason]),
    quotas: [...document.querySelectorAll('.quota')].map((e) => [e.dataset.quota, e.dataset.gpuClass,
      +e.dataset.used, +e.dataset.guaranteed, +e.dataset.limit]),
    summaryGPUs: document.querySelector('#summary .tile.capacity .value').textContent,
    error: document.body.dataset.error,
  };
})()"""


def _screenshot_dir() -> Path | None:
    d = os.environ.get("AICENTER_SCREENSHOT_DIR")
    return Path(d) if d else None


def test_dashboard_draws_the_fleet_in_a_real_browser(cluster, env, dashboard_url, browser, tmp_path):
    browser.navigate(dashboard_url)
    wait_for(
        lambda: int(browser.evaluate("document.body.dataset.generation") or 0) >= 1,
        60,
        "the page's first render",
    )
    facts = browser.evaluate(DOM_FACTS)
    assert facts["error"] == "0"
    for c in env.fleet.centers:
        dom = facts["centers"][c.name]
        assert sorted(map(tuple, dom["racks"])) == sorted(racks_of(env.fleet, c.name)), c.name
        assert sorted(map(tuple, dom["cliques"])) == sorted(cliques_of(env.fleet, c.name)), c.name
        assert dom["capacity"] == dom["rackGPUs"] == c.gpus, c.name
        assert dom["rackNodes"] == c.nodes, c.name
        assert dom["classText"] == {cls: f"{n:,}" for cls, n in c.gpus_by_class().items()}, c.name
        share = int(100 * dom["allocated"] / c.gpus + 0.5)  # as the page rounds (half up)
        assert dom["totalText"] == f"{dom['allocated']:,} / {c.gpus:,} GPUs allocated ({share}%)", c.name
    nat_nodes = {n.name for n in iter_nodes(env.fleet) if n.center == NATIONAL}
    assert facts["centers"][NATIONAL]["allocated"] == _pod_gpus_on(cluster, nat_nodes)
    assert int(facts["summaryGPUs"].replace(",", "")) >= env.fleet.gpus
    pending = [row for row in facts["queue"] if row[1] in {j.key for j in env.jobs if j.pending}]
    assert [row[1] for row in pending] == [
        "universities/thesis",
        "public-research-institutes/wide",
        "startups/moonshot",
    ]
    for _, key, reason in pending:
        ns, name = key.split("/")
        assert reason == get_job(cluster, ns, name)["status"]["reason"]
    quotas = {(q, cls): (g, lim) for q, cls, _, g, lim in facts["quotas"]}
    for c in env.fleet.centers:
        for q in c.quotas:
            for cls in c.gpus_by_class():
                assert quotas[(q.name, cls)] == (q.guaranteed[cls], max(q.limit[cls], q.guaranteed[cls]))
    shot = browser.screenshot(tmp_path / "dashboard.png")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    width = int.from_bytes(data[16:20], "big")
    assert width == 1500
    if (d := _screenshot_dir()) is not None:
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, d / "dashboard.png")
    print(f"dashboard screenshot: {shot}")


def test_dashboard_follows_the_cluster(cluster, env, dashboard_url, browser):
    """A job admitted after the page loaded shows up within a few refreshes, without a reload."""
    browser.navigate(dashboard_url)
    wait_for(
        lambda: int(browser.evaluate("document.body.dataset.generation") or 0) >= 1,
        60,
        "the page's first render",
    )
    before = browser.evaluate(
        "+document.querySelector('article.center[data-center=\"national-ai-center\"]').dataset.allocated"
    )
    body = manifests.gpujob("late", 1, 8)
    call(cluster, "POST", f"{G}/namespaces/startups/gpujobs", body)
    try:
        wait_for(
            lambda: (
                (get_job(cluster, "startups", "late").get("status") or {}).get("phase") == api.PHASE_RUNNING
            ),
            120,
            "GPUJob startups/late running",
        )
        after = wait_for(
            lambda: (
                browser.evaluate(
                    "+document.querySelector('article.center[data-center=\"national-ai-center\"]').dataset.allocated"
                )
                == before + 8
            ),
            60,
            f"the page showing {before + 8} GPUs allocated in {NATIONAL}",
        )
        assert after
        used = browser.evaluate(
            '+document.querySelector(\'.quota[data-quota="startups"][data-gpu-class="B200"]\').dataset.used'
        )
        assert used == 8
    finally:
        call(cluster, "DELETE", f"{G}/namespaces/startups/gpujobs/late", ok=(200, 202, 404))
