"""Restart safety (kill -9 mid-burst) and a single active scheduler among replicas.

Each test runs its own operator processes (not the module's shared one), and judges the outcome
from the API (pods, nodes, job statuses), never from the operator's word.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from e2e_kit import (
    OperatorProcess,
    call,
    get_job,
    job_manifest,
    job_pods,
    make_center,
    make_quota,
    node_allocatable,
    node_gpu_use,
    submit,
)
from test_workloads_e2e import deployment, indexed_job, no_node_over, pods

from aicenter import api
from aicenter_testbed.waiting import wait_for

pytestmark = pytest.mark.cluster


def _bound_pods(cluster, namespace: str) -> int:
    pods = call(cluster, "GET", f"/api/v1/namespaces/{namespace}/pods")["items"]
    return sum(1 for p in pods if p["spec"].get("nodeName"))


def test_kill_9_mid_burst_then_restart_keeps_invariants(cluster, crds, namespace, tmp_path):
    c = make_center(cluster, "hgx-b200", racks=2, nodes_per_rack=6)  # 96 GPUs
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 96)
    jobs = [job_manifest(f"s{i}", 1, 8) for i in range(12)]
    jobs += [job_manifest(f"g{i}", 2, 8) for i in range(6)]
    jobs += [job_manifest(f"h{i}", 1, 4) for i in range(8)]  # demand 96 + 96 + 32 > 96
    first = OperatorProcess(cluster.kubeconfig, tmp_path / "op1.log", ["--no-leader-election"]).start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda j: submit(cluster, namespace, j), jobs))
    wait_for(lambda: _bound_pods(cluster, namespace) >= 3, 60, "the burst to start binding")
    first.kill()  # SIGKILL in the middle of creating and binding
    alloc = node_allocatable(cluster, c.node_names())
    use = node_gpu_use(cluster)
    assert all(use.get(n, 0) <= alloc[n] for n in alloc), (use, alloc)

    second = OperatorProcess(cluster.kubeconfig, tmp_path / "op2.log", ["--no-leader-election"]).start()
    try:
        names = [j["metadata"]["name"] for j in jobs]

        def settled() -> dict | None:
            st = {n: get_job(cluster, namespace, n).get("status") or {} for n in names}
            if any(s.get("phase") in (None, "Admitted") for s in st.values()):
                return None
            if any(s["phase"] == "Pending" and not s.get("message") for s in st.values()):
                return None
            running = sum(s.get("totalGPUs", 0) for s in st.values() if s["phase"] == "Running")
            return st if running >= 88 else None  # the centre is (nearly) full

        st = wait_for(settled, 120, "the burst to settle after the restart")
        use = node_gpu_use(cluster)
        assert all(use.get(n, 0) <= alloc[n] for n in alloc), (use, alloc)
        for n in names:
            spec_reps = next(j["spec"]["replicas"] for j in jobs if j["metadata"]["name"] == n)
            pods = job_pods(cluster, namespace, n)
            replicas = [p["metadata"]["labels"][api.LABEL_REPLICA] for p in pods]
            assert len(replicas) == len(set(replicas)), f"{n}: a replica was created twice: {replicas}"
            if st[n]["phase"] == "Running":
                assert len(pods) == spec_reps, f"{n}: {len(pods)} live pods for {spec_reps} replicas"
                assert all(p["spec"].get("nodeName") for p in pods)
            else:
                assert st[n]["phase"] == "Pending" and pods == [], (n, st[n])
    finally:
        second.stop()


def test_two_replicas_only_the_leader_binds(cluster, crds, namespace, tmp_path):
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=3)
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 24)
    lease = [
        "--lease-name",
        f"aicenter-{uuid.uuid4().hex[:6]}",
        "--lease-namespace",
        "default",
        "--lease-seconds",
        "6",
    ]
    a = OperatorProcess(cluster.kubeconfig, tmp_path / "a.log", [*lease, "--identity", "replica-a"]).start()
    b = OperatorProcess(cluster.kubeconfig, tmp_path / "b.log", [*lease, "--identity", "replica-b"]).start()
    try:
        for i in range(2):
            submit(cluster, namespace, job_manifest(f"j{i}", 1, 8))
        for i in range(2):
            wait_for(
                lambda i=i: (
                    (get_job(cluster, namespace, f"j{i}").get("status") or {}).get("phase") == "Running"
                ),
                60,
                f"j{i} running",
            )
        bound = {"a": a.metric("aicenter_pods_created_total"), "b": b.metric("aicenter_pods_created_total")}
        assert sorted(bound.values()) == [0.0, 2.0], bound
        leader, standby = (a, b) if bound["a"] else (b, a)
        wait_for(
            lambda: standby.metric("aicenter_leader") == 0 and leader.metric("aicenter_leader") == 1,
            30,
            "leader gauges",
        )
        leader.kill()  # no graceful release: the standby takes over once the lease expires
        submit(cluster, namespace, job_manifest("after", 1, 8))
        wait_for(
            lambda: (get_job(cluster, namespace, "after").get("status") or {}).get("phase") == "Running",
            60,
            "the standby to take over and bind",
        )
        assert standby.metric("aicenter_pods_created_total") == 1
        assert len(job_pods(cluster, namespace, "after")) == 1
    finally:
        a.stop()
        b.stop()


# Not in test_workloads_e2e: that module's shared operator would be a second scheduler here.
def test_kill_9_mid_burst_of_jobs_and_deployments(cluster, crds, namespace, tmp_path):
    c = make_center(cluster, "hgx-b200", racks=2, nodes_per_rack=4)  # 64 GPUs
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 64)
    # As deployed: a Lease, so the restarted process starts writing only once the killed one's lease
    # (and with it any write it still had in flight) has expired.
    lease = ["--lease-name", f"kill-{namespace}", "--lease-namespace", "default", "--lease-seconds", "6"]
    first = OperatorProcess(cluster.kubeconfig, tmp_path / "op1.log", lease).start()
    for i in range(6):
        call(cluster, "POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", indexed_job(f"j{i}", 2, 4))
    call(cluster, "POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("d", 10, 2))
    for i in range(6):
        submit(cluster, namespace, job_manifest(f"g{i}", 1, 8))
    wait_for(
        lambda: len([p for p in pods(cluster, namespace, "") if p["spec"].get("nodeName")]) >= 3,
        60,
        "binding",
    )
    first.kill()
    no_node_over(cluster, c.node_names())
    second = OperatorProcess(cluster.kubeconfig, tmp_path / "op2.log", lease).start()
    try:

        def settled():
            if any(
                (get_job(cluster, namespace, f"g{i}").get("status") or {}).get("phase") == "Admitted"
                for i in range(6)
            ):
                return False  # the new leader has not yet seen through every admission it inherited
            items = pods(cluster, namespace, "")
            waiting = [p for p in items if not p["spec"].get("nodeName")]
            gpus = sum(
                int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
                for p in items
                if p["spec"].get("nodeName")
                for c in p["spec"]["containers"]
            )
            return gpus >= 56 or not waiting  # the centre (nearly) full, or nothing waits

        wait_for(settled, 120, "the burst to settle after the restart")
        no_node_over(cluster, c.node_names())
        for i in range(6):
            st = get_job(cluster, namespace, f"g{i}").get("status") or {}
            assert st.get("phase") in ("Running", "Pending"), st
    finally:
        second.stop()
