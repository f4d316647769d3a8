"""Bring your own workload, with kube-controller-manager's own Job and Deployment controllers: their
pods name the operator as their scheduler and share quotas, gangs, topology and preemption with
GPUJobs. Judged from the API."""

from __future__ import annotations

import pytest
from e2e_kit import (
    G,
    call,
    job_manifest,
    make_center,
    make_quota,
    node_allocatable,
    submit,
    wait_phase,
)
from test_faults_e2e import node_use

from aicenter import api
from aicenter.controller.groups import ANN_TOPOLOGY_KEY, LABEL_POD_GROUP, LABEL_POD_GROUP_SIZE
from aicenter_testbed.sim.nodes import KWOK_TOLERATION
from aicenter_testbed.sim.stages import ANN_RUN_SECONDS
from aicenter_testbed.waiting import wait_for

pytestmark = pytest.mark.cluster
RACK = "topology.aicenter.dev/rack"
IMAGE = "registry.invalid/aicenter/sim-workload:0"


def pod_template(
    gpus: int, labels: dict | None = None, annotations: dict | None = None, priority: int = 0
) -> dict:
    spec: dict = {
        "schedulerName": api.DEFAULT_SCHEDULER_NAME,
        "tolerations": [dict(KWOK_TOLERATION)],
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {"name": "main", "image": IMAGE, "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
        ],
    }
    if priority:
        spec["priorityClassName"] = f"prio-{priority}"
    return {"metadata": {"labels": labels or {}, "annotations": annotations or {}}, "spec": spec}


def indexed_job(name: str, n: int, gpus: int, **kw) -> dict:
    tmpl = pod_template(gpus, {"app": name}, **kw)
    tmpl["spec"]["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completionMode": "Indexed",
            "completions": n,
            "parallelism": n,
            "backoffLimit": 0,
            "template": tmpl,
        },
    }


def deployment(name: str, replicas: int, gpus: int, **kw) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(gpus, {"app": name}, **kw),
        },
    }


def pods(cluster, ns: str, selector: str) -> list[dict]:
    items = call(cluster, "GET", f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def bound(cluster, ns: str, selector: str) -> list[dict]:
    return [p for p in pods(cluster, ns, selector) if p["spec"].get("nodeName")]


def rack_of(cluster, node: str) -> str:
    return call(cluster, "GET", f"/api/v1/nodes/{node}")["metadata"]["labels"][RACK]


def no_node_over(cluster, nodes: list[str]) -> None:
    alloc, use = node_allocatable(cluster, nodes), node_use(cluster)
    over = [n for n in nodes if use.get(n, 0) > alloc[n]]
    if over:
        held = [
            (
                p["metadata"]["namespace"],
                p["metadata"]["name"],
                p["spec"]["nodeName"],
                p["status"].get("phase"),
                p["metadata"].get("creationTimestamp"),
                bool(p["metadata"].get("deletionTimestamp")),
            )
            for p in call(cluster, "GET", "/api/v1/pods")["items"]
            if p["spec"].get("nodeName") in over
        ]
        raise AssertionError(f"nodes above allocatable: {over}; use {use}; pods there: {held}")


@pytest.fixture(scope="module")
def priorities(cluster):
    for value in (10, 100):
        call(
            cluster,
            "POST",
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": f"prio-{value}"},
                "value": value,
            },
            ok=(201, 409),
        )


def test_an_indexed_job_runs_as_one_gang_in_one_rack(cluster, operator, namespace):
    c = make_center(cluster, "hgx-b200", racks=2, nodes_per_rack=5)
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 80)
    job = indexed_job("train", 4, 8, annotations={ANN_TOPOLOGY_KEY: RACK, ANN_RUN_SECONDS: "5"})
    call(cluster, "POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
    got = wait_for(
        lambda: (b := bound(cluster, namespace, "app=train")) and len(b) == 4 and b, 60, "4 pods bound"
    )
    assert len({rack_of(cluster, p["spec"]["nodeName"]) for p in got}) == 1
    wait_for(
        lambda: (
            (
                call(cluster, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/train").get("status") or {}
            ).get("succeeded")
            == 4
        ),
        90,
        "the Job to complete",
    )
    no_node_over(cluster, c.node_names())


def test_a_deployment_scales_3_6_2_and_an_explicit_group(cluster, operator, namespace):
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=2)
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 16)
    call(cluster, "POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("infer", 3, 1))
    wait_for(lambda: len(bound(cluster, namespace, "app=infer")) == 3, 60, "3 replicas bound")
    for replicas in (6, 2):
        call(
            cluster,
            "PATCH",
            f"/apis/apps/v1/namespaces/{namespace}/deployments/infer",
            {"spec": {"replicas": replicas}},
        )
        wait_for(
            lambda r=replicas: (
                len(bound(cluster, namespace, "app=infer")) == r == len(pods(cluster, namespace, "app=infer"))
            ),
            60,
            f"{replicas} replicas bound",
        )
    # an explicit group of 2 × 4: both bound together once the second member exists
    for i in range(2):
        labels = {LABEL_POD_GROUP: "pair", LABEL_POD_GROUP_SIZE: "2", "app": "pair"}
        body = {"apiVersion": "v1", "kind": "Pod", **pod_template(4, labels)}
        body["metadata"]["name"] = f"pair-{i}"
        call(cluster, "POST", f"/api/v1/namespaces/{namespace}/pods", body)
        if i == 0:
            msg = wait_for(
                lambda: next(
                    (
                        cond.get("message")
                        for cond in (
                            pods(cluster, namespace, "app=pair")[0]["status"].get("conditions") or ()
                        )
                        if cond["type"] == "PodScheduled"
                        and "WaitingForMembers" in (cond.get("message") or "")
                    ),
                    None,
                ),
                30,
                "the first member to say it waits for the second",
            )
            assert "needs 2 pod(s)" in msg
    wait_for(lambda: len(bound(cluster, namespace, "app=pair")) == 2, 60, "the pair bound together")
    no_node_over(cluster, c.node_names())


def statefulset(name: str, replicas: int, gpus: int) -> dict:
    """As ``deployment``, a StatefulSet whose pods are created in parallel."""
    body = deployment(name, replicas, gpus)
    body["kind"] = "StatefulSet"
    body["spec"].update(serviceName=name, podManagementPolicy="Parallel")
    return body


def test_a_statefulset_runs_each_pod_alone_within_the_quota(cluster, operator, namespace):
    """kube-controller-manager's StatefulSet controller: each pod is single-pod work charged to the
    quota; what the quota cannot hold waits saying why, and runs once the set is scaled down."""
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=2)
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 8)
    sts = f"/apis/apps/v1/namespaces/{namespace}/statefulsets"
    call(cluster, "POST", sts, statefulset("db", 5, 2))
    wait_for(lambda: len(bound(cluster, namespace, "app=db")) == 4, 60, "4 of 5 pods bound (quota 8)")

    def waiting_reason() -> str | None:
        waiting = [p for p in pods(cluster, namespace, "app=db") if not p["spec"].get("nodeName")]
        conds = [
            c for p in waiting for c in p["status"].get("conditions") or () if c["type"] == "PodScheduled"
        ]
        return next(
            (c.get("message") for c in conds if c.get("status") == "False" and c.get("message")), None
        )

    msg = wait_for(waiting_reason, 30, "the fifth pod to say why it waits")
    assert msg.startswith("QuotaExceeded: ") and "limit 8 B200 reached — 8 used, 2 requested" in msg, msg
    call(cluster, "PATCH", f"{sts}/db", {"spec": {"replicas": 3}})
    wait_for(
        lambda: len(bound(cluster, namespace, "app=db")) == 3 == len(pods(cluster, namespace, "app=db")),
        60,
        "3 pods, all bound",
    )
    assert sorted(p["metadata"]["name"] for p in pods(cluster, namespace, "app=db")) == [
        "db-0",
        "db-1",
        "db-2",
    ]
    no_node_over(cluster, c.node_names())


def test_jobs_deployments_and_gpujobs_share_a_quota_with_borrowing_reclaim_and_preemption(
    cluster, operator, priorities, namespace
):
    lender = cluster.create_namespace(f"{namespace}-l")
    try:
        c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=4)  # 32 GPUs
        cohort = f"{c.name}-co"
        make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 16, 32, cohort)
        make_quota(cluster, f"{lender}-q", c.name, lender, "B200", 16, 16, cohort)
        # the borrower fills the centre: a Job gang of 2 × 8 and a Deployment of 2 × 8 (borrowing 16)
        call(cluster, "POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", indexed_job("batch", 2, 8))
        call(cluster, "POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", deployment("svc", 2, 8))
        wait_for(
            lambda: (
                len(bound(cluster, namespace, "app=batch")) == 2
                and len(bound(cluster, namespace, "app=svc")) == 2
            ),
            60,
            "the borrower's Job and Deployment bound (32 GPUs)",
        )
        qst = wait_for(
            lambda: (
                (call(cluster, "GET", f"{G}/gpuquotas/{namespace}-q").get("status") or {}).get("usedGPUs")
                == 32
                and call(cluster, "GET", f"{G}/gpuquotas/{namespace}-q")["status"]
            ),
            30,
            "the borrower's quota to count both kinds",
        )
        assert qst["resources"][0]["borrowed"] == 16
        # the lender reclaims its guarantee with a GPUJob: borrowers are preempted through eviction
        submit(cluster, lender, job_manifest("own", 2, 8))
        wait_phase(cluster, lender, "own", "Running", timeout=90)
        # a higher-priority GPUJob of the borrower preempts its own lower-priority pods
        submit(cluster, namespace, job_manifest("urgent", 1, 8, priority=100))
        wait_phase(cluster, namespace, "urgent", "Running", timeout=90)
        no_node_over(cluster, c.node_names())
        events = call(cluster, "GET", f"/api/v1/namespaces/{namespace}/events")["items"]
        assert any(e.get("reason") in ("Reclaimed", "PreemptedByPriority") for e in events), [
            e.get("reason") for e in events
        ]
    finally:
        cluster.delete_namespace(lender)
