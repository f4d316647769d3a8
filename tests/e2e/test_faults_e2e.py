"""Faults and constraints on the real control plane, each judged from the API (not the operator's word):

- kube-apiserver and etcd killed (SIGKILL) and restarted in the middle of a burst;
- the operator killed 20 times during a stream of jobs;
- taints, node selectors, node affinity and CPU fit;
- an allocatable flap (a device plugin restart) that must not evict;
- a deleted AICenter whose running work must keep running.

After each: no node holds more GPUs than it has, no replica lives twice, every live pod of ours is
claimed by its job's status, every job has a phase (and a reason while pending).
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest
from e2e_kit import (
    G,
    OperatorProcess,
    call,
    get_job,
    job_manifest,
    job_pods,
    make_center,
    make_quota,
    node_allocatable,
    submit,
    wait_phase,
)

from aicenter import api
from aicenter_testbed.cluster import LocalCluster
from aicenter_testbed.sim import faults
from aicenter_testbed.waiting import wait_for

pytestmark = pytest.mark.cluster
RACK = "topology.aicenter.dev/rack"


def node_use(cluster) -> dict[str, int]:
    """GPUs requested by live pods bound to each node, every container counted."""
    use: dict[str, int] = {}
    for p in call(cluster, "GET", "/api/v1/pods")["items"]:
        node = p["spec"].get("nodeName")
        if not node or p["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        for c in [*p["spec"]["containers"], *(p["spec"].get("initContainers") or [])]:
            use[node] = use.get(node, 0) + int(
                ((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", 0)
            )
    return use


def check_invariants(cluster, namespace: str, nodes: list[str]) -> None:
    alloc = node_allocatable(cluster, nodes)
    use = node_use(cluster)
    over = {n: (use.get(n, 0), alloc[n]) for n in nodes if use.get(n, 0) > alloc[n]}
    assert not over, f"nodes above allocatable: {over}"
    jobs = {
        j["metadata"]["name"]: j for j in call(cluster, "GET", f"{G}/namespaces/{namespace}/gpujobs")["items"]
    }
    pods = [
        p
        for p in call(cluster, "GET", f"/api/v1/namespaces/{namespace}/pods")["items"]
        if p["status"].get("phase") not in ("Succeeded", "Failed")
        and not p["metadata"].get("deletionTimestamp")
    ]
    seen: set[tuple[str, str]] = set()
    for p in pods:
        labels = p["metadata"]["labels"]
        ident = (labels[api.LABEL_JOB_UID], labels[api.LABEL_REPLICA])
        assert ident not in seen, f"replica {ident} lives twice"
        seen.add(ident)
        job = jobs.get(labels[api.LABEL_JOB])
        assert job is not None and job["metadata"]["uid"] == labels[api.LABEL_JOB_UID], (
            f"orphan {p['metadata']['name']}"
        )
        placed = {pl["pod"] for pl in (job.get("status") or {}).get("placements") or ()}
        assert p["metadata"]["name"] in placed, (
            f"pod {p['metadata']['name']} not in its job's placements {placed}"
        )
    for name, j in jobs.items():
        st = j.get("status") or {}
        assert st.get("phase") in api.JOB_PHASES, (name, st)
        if st["phase"] == "Pending":
            assert st.get("reason") and st.get("message"), (name, st)


def settled(cluster, namespace: str, names: list[str]):
    """Every job Running, finished, or Pending with a reason, and no pod of ours terminating."""

    def check():
        for n in names:
            st = get_job(cluster, namespace, n).get("status") or {}
            if st.get("phase") not in ("Running", "Succeeded", "Failed", "Pending"):
                return None
            if st["phase"] == "Pending" and not st.get("reason"):
                return None
        pods = call(cluster, "GET", f"/api/v1/namespaces/{namespace}/pods")["items"]
        return not any(p["metadata"].get("deletionTimestamp") for p in pods) or None

    return check


# -- the control plane crashes ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_plane(tmp_path_factory):
    """A control plane of this module's own: its apiserver and etcd are killed here."""
    from pathlib import Path

    local = LocalCluster()
    client = local.start()
    root = Path(__file__).resolve().parents[2]
    client.kubectl("apply", "--server-side", "-f", str(root / "manifests/crds/all.yaml"))
    client.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    try:
        yield local, client
    finally:
        local.stop()


def _submit_retrying(cluster, namespace: str, manifest: dict, deadline_s: float = 120) -> None:
    """Submit, riding out an API server that is down (a client would retry too)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            status, doc = cluster.request("POST", f"{G}/namespaces/{namespace}/gpujobs", manifest)
            if status in (201, 409):
                return
        except Exception:  # connection refused while the API server restarts
            status, doc = 0, None
        if time.monotonic() > end:
            raise AssertionError(f"could not submit {manifest['metadata']['name']}: {status} {doc}")
        time.sleep(0.5)  # client retry back-off while the API server is down, not synchronisation


def test_apiserver_and_etcd_killed_mid_burst(own_plane, tmp_path):
    local, cluster = own_plane
    ns = cluster.create_namespace(f"t-{uuid.uuid4().hex[:8]}")
    c = make_center(cluster, "hgx-b200", racks=2, nodes_per_rack=6)  # 96 GPUs
    make_quota(cluster, f"{ns}-q", c.name, ns, "B200", 96)
    op = OperatorProcess(local.kubeconfig, tmp_path / "op.log", ["--no-leader-election"]).start()
    try:
        jobs = [job_manifest(f"g{i}", 2, 8, run_seconds=20) for i in range(6)]
        jobs += [job_manifest(f"s{i}", 1, 8, run_seconds=15) for i in range(8)]
        jobs += [job_manifest(f"h{i}", 1, 4) for i in range(10)]
        stop = threading.Event()

        def stream() -> None:
            for j in jobs:
                if stop.is_set():
                    return
                _submit_retrying(cluster, ns, j)

        t = threading.Thread(target=stream)
        t.start()
        wait_for(
            lambda: sum(1 for p in call(cluster, "GET", f"/api/v1/namespaces/{ns}/pods")["items"]) >= 4,
            60,
            "a few pods",
        )
        local.kill_and_restart("kube-apiserver", down_s=3)
        wait_for(lambda: op.ready(), 60, "the operator ready again")
        local.kill_and_restart("etcd", down_s=2)
        t.join(180)
        stop.set()
        names = [j["metadata"]["name"] for j in jobs]
        wait_for(settled(cluster, ns, names), 180, "the burst to settle after the crashes")
        check_invariants(cluster, ns, c.node_names())
        assert op.proc.poll() is None, "the operator survived both crashes"
    finally:
        op.stop()


def test_operator_killed_twenty_times_during_a_stream(cluster, crds, namespace, tmp_path):
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=4)  # 32 GPUs
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 32)
    rng = random.Random(7)
    names: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        i = 0
        while not stop.is_set():
            name = f"j{i}"
            gang = rng.random() < 0.3
            submit(
                cluster,
                namespace,
                job_manifest(name, 2 if gang else 1, rng.choice([4, 8]), run_seconds=rng.choice([2, 4, 8])),
            )
            names.append(name)
            i += 1
            stop.wait(0.7)  # the arrival rate of the stream

    t = threading.Thread(target=stream)
    t.start()
    try:
        for k in range(20):
            op = OperatorProcess(
                cluster.kubeconfig, tmp_path / f"op{k}.log", ["--no-leader-election"]
            ).start()
            time.sleep(rng.uniform(0.5, 3.0))  # how long this incarnation lives: the fault, not a wait
            op.kill()
            check_invariants_partial(cluster, namespace, c.node_names())
    finally:
        stop.set()
        t.join(30)
    last = OperatorProcess(cluster.kubeconfig, tmp_path / "last.log", ["--no-leader-election"]).start()
    try:
        wait_for(settled(cluster, namespace, list(names)), 240, "the stream to settle")
        check_invariants(cluster, namespace, c.node_names())
        done = sum(
            1
            for n in names
            if (get_job(cluster, namespace, n).get("status") or {}).get("phase") == "Succeeded"
        )
        assert done >= len(names) // 2, f"{done} of {len(names)} jobs finished"
    finally:
        last.stop()


def check_invariants_partial(cluster, namespace: str, nodes: list[str]) -> None:
    """Right after a kill: nothing above allocatable, no replica twice (statuses may lag)."""
    alloc = node_allocatable(cluster, nodes)
    use = node_use(cluster)
    assert all(use.get(n, 0) <= alloc[n] for n in nodes), (use, alloc)
    seen: set[tuple[str, str]] = set()
    for p in call(cluster, "GET", f"/api/v1/namespaces/{namespace}/pods")["items"]:
        if p["status"].get("phase") in ("Succeeded", "Failed") or p["metadata"].get("deletionTimestamp"):
            continue
        labels = p["metadata"]["labels"]
        ident = (labels[api.LABEL_JOB_UID], labels[api.LABEL_REPLICA])
        assert ident not in seen, f"replica {ident} lives twice"
        seen.add(ident)


# -- constraints --------------------------------------------------------------------------------------


def test_taints_selectors_affinity_and_cpu_fit(cluster, operator, namespace):
    c = make_center(cluster, "hgx-b200", racks=2, nodes_per_rack=2)  # 224 CPUs a node
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 32)
    tainted, *rest = c.node_names()
    call(
        cluster,
        "PATCH",
        f"/api/v1/nodes/{tainted}",
        {
            "spec": {
                "taints": [
                    *faults.get_node(cluster, tainted)["spec"].get("taints", []),
                    {"key": "example.com/maintenance", "effect": "NoSchedule"},
                ]
            }
        },
    )
    rack1 = [n for n in c.node_names() if "-r1-" in n]
    # 1: a nodeSelector on rack 1
    submit(cluster, namespace, job_manifest("sel", 1, 4, pod_spec={"nodeSelector": {RACK: f"{c.name}-r1"}}))
    # 2: required affinity: not rack 1 (so rack 0, whose first node is tainted: only the other)
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": RACK, "operator": "NotIn", "values": [f"{c.name}-r1"]}]}
                ]
            }
        }
    }
    submit(cluster, namespace, job_manifest("aff", 1, 4, pod_spec={"affinity": affinity}))
    # 3: two replicas wanting 150 CPUs each: never two on one 224-CPU node
    big_cpu = {"containers": [{"name": "main", "image": "x", "resources": {"requests": {"cpu": "150"}}}]}
    submit(cluster, namespace, job_manifest("cpu", 2, 1, pod_spec=big_cpu))
    for n in ("sel", "aff", "cpu"):
        wait_phase(cluster, namespace, n, "Running", timeout=60)
    assert job_pods(cluster, namespace, "sel")[0]["spec"]["nodeName"] in rack1
    aff_node = job_pods(cluster, namespace, "aff")[0]["spec"]["nodeName"]
    assert aff_node not in rack1 and aff_node != tainted
    cpu_nodes = [p["spec"]["nodeName"] for p in job_pods(cluster, namespace, "cpu")]
    assert len(set(cpu_nodes)) == 2 and tainted not in cpu_nodes
    # 4: more CPU than any node has: pending, and the reason says so
    submit(
        cluster,
        namespace,
        job_manifest(
            "huge",
            1,
            1,
            pod_spec={
                "containers": [{"name": "main", "image": "x", "resources": {"requests": {"cpu": "300"}}}]
            },
        ),
    )
    st = wait_for(
        lambda: (get_job(cluster, namespace, "huge").get("status") or {}).get("reason") or None,
        30,
        "a reason",
    )
    st = get_job(cluster, namespace, "huge")["status"]
    assert st["phase"] == "Pending" and st["reason"] == "NoNodeLargeEnough" and "300 CPU" in st["message"], st
    # 5: nothing of ours ever landed on the tainted node
    pods = call(cluster, "GET", f"/api/v1/namespaces/{namespace}/pods")["items"]
    assert all(p["spec"].get("nodeName") != tainted for p in pods)
    check_invariants(cluster, namespace, c.node_names())
    assert rest


def test_an_allocatable_flap_does_not_evict(cluster, operator, namespace):
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=2)
    call(cluster, "PATCH", f"{G}/aicenters/{c.name}", {"spec": {"unhealthyGPUGraceSeconds": 20}})
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 16)
    submit(cluster, namespace, job_manifest("keep", 1, 8, preemptible=False))
    job = wait_phase(cluster, namespace, "keep", "Running")
    node = job["status"]["placements"][0]["node"]
    faults.gpus_unhealthy(cluster, node, 8)  # allocatable 0: what a device plugin restart shows
    time.sleep(5)  # the flap's length: the fault, not synchronisation
    faults.clear(cluster, node)
    time.sleep(25)  # past the grace: nothing may have happened meanwhile (checked below)
    st = get_job(cluster, namespace, "keep")["status"]
    assert st["phase"] == "Running" and st["restarts"] == 0 and st["placements"][0]["node"] == node, st
    check_invariants(cluster, namespace, c.node_names())


def test_a_deleted_aicenter_keeps_its_running_work(cluster, operator, namespace):
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=2)
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 16)
    submit(cluster, namespace, job_manifest("runs", 1, 8))
    wait_phase(cluster, namespace, "runs", "Running")
    pod = job_pods(cluster, namespace, "runs")[0]["metadata"]["name"]
    call(cluster, "DELETE", f"{G}/aicenters/{c.name}")
    submit(cluster, namespace, job_manifest("after", 1, 8))
    st = wait_for(
        lambda: (get_job(cluster, namespace, "after").get("status") or {}).get("reason") or None,
        30,
        "a reason",
    )
    assert st == "CenterNotFound"
    time.sleep(10)  # nothing may happen to the running job: checked below
    st = get_job(cluster, namespace, "runs")["status"]
    assert st["phase"] == "Running" and st["restarts"] == 0, st
    assert [p["metadata"]["name"] for p in job_pods(cluster, namespace, "runs")] == [pod]
    check_invariants(cluster, namespace, c.node_names())
