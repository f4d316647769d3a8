"""The operator end to end on the real control plane with simulated GPU nodes."""

from __future__ import annotations

import pytest
from e2e_kit import (
    G,
    call,
    get_job,
    job_manifest,
    job_pods,
    make_center,
    make_quota,
    node_allocatable,
    node_gpu_use,
    submit,
    wait_phase,
)

from aicenter_testbed.fleet import LABEL_CLIQUE, LABEL_PRODUCT, LABEL_RACK, load_fleet, scale_fleet
from aicenter_testbed.sim import faults
from aicenter_testbed.waiting import wait_for

pytestmark = pytest.mark.cluster


def _nodes_of(pods: list[dict]) -> list[str]:
    return sorted(p["spec"]["nodeName"] for p in pods)


def _label(cluster, node: str, key: str) -> str | None:
    return call(cluster, "GET", f"/api/v1/nodes/{node}")["metadata"]["labels"].get(key)


def test_samples_for_two_centres_apply_and_report_status(cluster, operator, sim_fleet):
    """The shared scenario's samples (two centres, scaled) apply; centres and quotas get status."""
    from aicenter_testbed.samples import fleet_manifests

    fleet = scale_fleet(load_fleet(), 0.001, centers=["national-ai-center", "samsung-ai-megafactory"])
    for obj in fleet_manifests(fleet):
        plural = "aicenters" if obj["kind"] == "AICenter" else "gpuquotas"
        call(cluster, "POST", f"{G}/{plural}", obj, ok=(201, 409))
    for c in fleet.centers:

        def status(c=c):
            st = call(cluster, "GET", f"{G}/aicenters/{c.name}").get("status") or {}
            return (
                st if st.get("totalGPUs") == c.gpus and st.get("nodes", {}).get("ready") == c.nodes else None
            )

        st = wait_for(status, 60, f"AICenter {c.name} status")
        assert st["guaranteedGPUs"] == sum(sum(q.guaranteed.values()) for q in c.quotas)
        assert {x["type"]: x["status"] for x in st["conditions"]}["Ready"] == "True"
    q = fleet.centers[0].quotas[0]

    def qstatus():
        st = call(cluster, "GET", f"{G}/gpuquotas/{q.name}").get("status") or {}
        return st if st.get("guaranteedGPUs") == sum(q.guaranteed.values()) else None

    st = wait_for(qstatus, 60, f"GPUQuota {q.name} status")
    assert {x["type"]: x["status"] for x in st["conditions"]}["Ready"] == "True"


def test_job_admitted_within_quota_on_the_right_class(cluster, operator, namespace):
    b200 = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=1)
    b300 = make_center(cluster, "hgx-b300", racks=1, nodes_per_rack=1)
    make_quota(cluster, f"{namespace}-q", b300.name, namespace, "B300", 8)
    submit(cluster, namespace, job_manifest("train", 1, 8, gpu_class="B300"))
    job = wait_phase(cluster, namespace, "train", "Running")
    assert job["status"]["quota"] == f"{namespace}-q" and job["status"]["gpuClass"] == "B300"
    pods = job_pods(cluster, namespace, "train")
    assert len(pods) == 1
    assert _nodes_of(pods) == b300.node_names()
    assert _label(cluster, pods[0]["spec"]["nodeName"], LABEL_PRODUCT) == "NVIDIA-B300"
    assert pods[0]["spec"]["schedulerName"] == "aicenter-scheduler"
    assert pods[0]["metadata"]["ownerReferences"][0]["kind"] == "GPUJob"
    env = {e["name"]: e["value"] for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env["WORLD_SIZE"] == "1" and env["RANK"] == "0"
    assert b200.name  # the B200 centre exists but serves no quota here


def test_gang_all_or_nothing_within_one_rack(cluster, operator, namespace):
    c = make_center(cluster, "hgx-b200", racks=2, nodes_per_rack=3)
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 48)
    rack = ("topology.aicenter.dev/rack", "Required")
    submit(cluster, namespace, job_manifest("a", 3, 8, topology=rack))
    wait_phase(cluster, namespace, "a", "Running")
    pods = job_pods(cluster, namespace, "a")
    assert len(pods) == 3
    racks = {_label(cluster, p["spec"]["nodeName"], LABEL_RACK) for p in pods}
    assert len(racks) == 1
    env = {e["name"]: e["value"] for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env["WORLD_SIZE"] == "3" and env["MASTER_ADDR"].startswith("a-0.a.")
    assert call(cluster, "GET", f"/api/v1/namespaces/{namespace}/services/a")["spec"]["clusterIP"] == "None"
    # 24 GPUs are free (the other rack) but a rack has only three nodes: the gang of four waits whole,
    # and says it never fits.
    submit(cluster, namespace, job_manifest("b", 4, 6, topology=rack))
    job = wait_for(
        lambda: (get_job(cluster, namespace, "b").get("status") or {}).get("message"),
        30,
        "a pending reason for job b",
    )
    job = get_job(cluster, namespace, "b")
    assert job["status"]["phase"] == "Pending"
    assert job["status"]["message"] == (
        f"no rack in {c.name} could hold this job's 4 replica(s) of 6 B200 (24 GPUs): the largest holds 3 "
        "with every node empty — it can never be admitted as it stands"
    )
    assert job_pods(cluster, namespace, "b") == []


def test_nvl72_gang_stays_inside_one_clique(cluster, operator, namespace):
    c = make_center(cluster, "gb200-nvl72", racks=2, nodes_per_rack=4)
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "GB200", 32)
    submit(cluster, namespace, job_manifest("t", 3, 4, topology=(LABEL_CLIQUE, "Required")))
    wait_phase(cluster, namespace, "t", "Running")
    cliques = {
        _label(cluster, p["spec"]["nodeName"], LABEL_CLIQUE) for p in job_pods(cluster, namespace, "t")
    }
    assert len(cliques) == 1


def test_a_job_that_can_never_fit_says_so_with_the_numbers(cluster, operator, namespace):
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=2)
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 32)
    submit(cluster, namespace, job_manifest("big", 5, 8))
    submit(cluster, namespace, job_manifest("wide", 3, 8, topology=(LABEL_RACK, "Required")))

    def status(name: str) -> dict:
        return get_job(cluster, namespace, name).get("status") or {}

    wait_for(lambda: status("big").get("message") and status("wide").get("message"), 30, "reasons")
    big, wide = status("big"), status("wide")
    assert (big["phase"], big["reason"], big["message"]) == (
        "Pending",
        "QuotaExceeded",
        f"quota {namespace}-q: 40 B200 requested but its limit is 32 B200 — it can never be admitted as it "
        "stands; ask for less or raise the quota",
    )
    assert (wide["phase"], wide["reason"], wide["message"]) == (
        "Pending",
        "NoDomainLargeEnough",
        f"no rack in {c.name} could hold this job's 3 replica(s) of 8 B200 (24 GPUs): the largest holds 2 "
        "with every node empty — it can never be admitted as it stands",
    )
    assert job_pods(cluster, namespace, "big") == [] and job_pods(cluster, namespace, "wide") == []


def test_borrow_then_reclaim_by_preemption(cluster, operator):
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=4)
    lender, borrower = cluster_namespaces(cluster, 2)
    cohort = f"{c.name}-cohort"
    make_quota(cluster, f"{lender}-q", c.name, lender, "B200", 16, 32, cohort)
    make_quota(cluster, f"{borrower}-q", c.name, borrower, "B200", 16, 32, cohort)
    for i in range(4):  # the borrower takes the whole centre: 16 own + 16 borrowed
        submit(cluster, borrower, job_manifest(f"b{i}", 1, 8))
    for i in range(4):
        wait_phase(cluster, borrower, f"b{i}", "Running")
    q = wait_for(
        lambda: next(
            (
                r
                for r in (call(cluster, "GET", f"{G}/gpuquotas/{borrower}-q").get("status") or {}).get(
                    "resources", []
                )
                if r.get("borrowed") == 16
            ),
            None,
        ),
        30,
        "borrowed 16",
    )
    assert q["used"] == 32
    # The lender claims its guarantee: two of the borrower's jobs are preempted, not all four.
    submit(cluster, lender, job_manifest("own", 2, 8))
    wait_phase(cluster, lender, "own", "Running", timeout=90)
    phases = {f"b{i}": get_job(cluster, borrower, f"b{i}")["status"] for i in range(4)}
    preempted = [k for k, st in phases.items() if st.get("preemptions")]
    assert len(preempted) == 2, phases
    for k in preempted:
        st = phases[k]
        assert st["phase"] == "Pending"
        assert f"quota {lender}-q reclaimed 8 B200" in st["preemptions"][0]["reason"]
        assert st["preemptions"][0]["preemptor"] == f"{lender}/own"
        assert "cohort" in st["message"]  # now waiting for the cohort to have room again
    use = node_gpu_use(cluster)
    alloc = node_allocatable(cluster, c.node_names())
    assert all(use.get(n, 0) <= alloc[n] for n in alloc), (use, alloc)


def cluster_namespaces(cluster, n: int) -> list[str]:
    import uuid

    names = [f"t-{uuid.uuid4().hex[:10]}" for _ in range(n)]
    for name in names:
        cluster.create_namespace(name)
    return names


def test_completion_frees_gpus_and_the_next_job_runs(cluster, operator, namespace):
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=1)
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 8)
    submit(cluster, namespace, job_manifest("first", 1, 8, run_seconds=3))
    submit(cluster, namespace, job_manifest("second", 1, 8, run_seconds=1))
    wait_phase(cluster, namespace, "first", "Running")
    assert get_job(cluster, namespace, "second")["status"]["phase"] == "Pending"
    st = wait_phase(cluster, namespace, "first", "Succeeded", timeout=60)["status"]
    assert st["finishedAt"] and st["reason"] == "Completed"
    wait_phase(cluster, namespace, "second", ("Running", "Succeeded"), timeout=60)
    wait_phase(cluster, namespace, "second", "Succeeded", timeout=60)


def test_replica_failure_restarts_gang_then_fails_past_backoff(cluster, operator, namespace):
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=2)
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 16)
    submit(cluster, namespace, job_manifest("flaky", 2, 8, run_seconds=1, outcome="Failed", backoffLimit=1))
    st = wait_phase(cluster, namespace, "flaky", "Failed", timeout=90)["status"]
    assert st["restarts"] == 2 and st["reason"] == "BackoffLimitExceeded"
    # GPUs are free again: a new job runs at once.
    submit(cluster, namespace, job_manifest("after", 2, 8))
    wait_phase(cluster, namespace, "after", "Running")


def test_node_not_ready_moves_the_job(cluster, operator, namespace):
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=2, grace_s=2)
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 16)
    submit(cluster, namespace, job_manifest("survivor", 1, 8))
    wait_phase(cluster, namespace, "survivor", "Running")
    first = job_pods(cluster, namespace, "survivor")[0]["spec"]["nodeName"]
    faults.node_not_ready(cluster, first)
    try:

        def moved():
            st = get_job(cluster, namespace, "survivor")["status"]
            pods = job_pods(cluster, namespace, "survivor")
            return st if st["phase"] == "Running" and pods and pods[0]["spec"]["nodeName"] != first else None

        st = wait_for(moved, 90, "job restarted on the other node")
        assert st["restarts"] == 1
        cst = wait_for(
            lambda: (lambda s: s if s.get("nodes", {}).get("ready") == 1 else None)(
                call(cluster, "GET", f"{G}/aicenters/{c.name}").get("status") or {}
            ),
            30,
            "centre sees 1 ready node",
        )
        assert {x["type"]: x["status"] for x in cst["conditions"]}["Degraded"] == "True"
    finally:
        faults.clear(cluster, first)


def test_unhealthy_gpus_evict_and_shrink_capacity(cluster, operator, namespace):
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=2)
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 16)
    submit(cluster, namespace, job_manifest("victim", 1, 8))
    wait_phase(cluster, namespace, "victim", "Running")
    node = job_pods(cluster, namespace, "victim")[0]["spec"]["nodeName"]
    faults.gpus_unhealthy(cluster, node, 2)

    def moved():
        pods = job_pods(cluster, namespace, "victim")
        return (
            pods
            and pods[0]["spec"]["nodeName"] != node
            and get_job(cluster, namespace, "victim")["status"]["phase"] == "Running"
        )

    wait_for(moved, 60, "job moved off the node with unhealthy GPUs")
    st = wait_for(
        lambda: (lambda s: s if s.get("healthyGPUs") == 14 else None)(
            call(cluster, "GET", f"{G}/aicenters/{c.name}").get("status") or {}
        ),
        30,
        "healthy GPUs 14",
    )
    assert st["totalGPUs"] == 16
    assert get_job(cluster, namespace, "victim")["status"]["restarts"] == 1


def test_deleting_a_job_frees_its_gpus_at_once(cluster, operator, namespace):
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=1)
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 8)
    submit(cluster, namespace, job_manifest("hog", 1, 8))
    submit(cluster, namespace, job_manifest("next", 1, 8))
    wait_phase(cluster, namespace, "hog", "Running")
    call(cluster, "DELETE", f"{G}/namespaces/{namespace}/gpujobs/hog")
    wait_phase(cluster, namespace, "next", "Running", timeout=60)


def test_invalid_objects_are_rejected_with_the_field_named(cluster, crds, namespace):
    bad_job = job_manifest("bad", 1, 0)
    status, doc = cluster.request("POST", f"{G}/namespaces/{namespace}/gpujobs", bad_job)
    assert status == 422 and "gpusPerReplica" in doc["message"]
    bad_quota = {
        "apiVersion": "aicenter.dev/v1alpha1",
        "kind": "GPUQuota",
        "metadata": {"name": f"{namespace}-bad"},
        "spec": {
            "center": "x",
            "namespaceSelector": {},
            "resources": [{"gpuClass": "B200", "guaranteed": 16, "limit": 8}],
        },
    }
    status, doc = cluster.request("POST", f"{G}/gpuquotas", bad_quota)
    assert status == 422 and "limit must be >= guaranteed" in doc["message"]


def test_objects_that_make_no_sense_get_clear_status(cluster, operator, namespace):
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=1)
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 8)
    make_quota(cluster, f"{namespace}-ghost", "no-such-centre", f"{namespace}-none", "B200", 8)
    submit(cluster, namespace, job_manifest("wrong-class", 1, 1, gpu_class="H100"))
    submit(cluster, namespace, job_manifest("wrong-quota", 1, 1, quota="nobody"))
    for name, text in (
        ("wrong-class", f"centre {c.name} has no H100 GPUs"),
        ("wrong-quota", "quota nobody does not exist"),
    ):
        wait_for(
            lambda name=name: (get_job(cluster, namespace, name).get("status") or {}).get("message"), 30, name
        )
        st = get_job(cluster, namespace, name)["status"]
        assert st["phase"] == "Pending" and text in st["message"], st
    conds = wait_for(
        lambda: (call(cluster, "GET", f"{G}/gpuquotas/{namespace}-ghost").get("status") or {}).get(
            "conditions"
        ),
        30,
        "ghost quota conditions",
    )
    ready = {x["type"]: x for x in conds}["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "CenterNotFound"
    assert operator.ready()  # and the operator is still alive
