"""Kueue v0.17.0 on the test bed: a 2 × 8-GPU Indexed Job admitted by Kueue, bound by kube-scheduler.

Builds Kueue's manager from the Go module proxy on first use (about 6 minutes cold on 2 cores,
cached in ~/.cache/aicenter-testbed/kueue-v0.17.0/). Skips only where that build is impossible here
(no go command), and says so.
"""

from __future__ import annotations

import shutil
import uuid
from collections import defaultdict

import pytest

from aicenter import api
from aicenter_testbed import manifests
from aicenter_testbed.fleet import GPU_RESOURCE, LABEL_CENTER, LABEL_PRODUCT, LABEL_RACK
from aicenter_testbed.waiting import wait_for

pytestmark = pytest.mark.cluster

KUEUE_API_PATH = "/apis/kueue.x-k8s.io/v1beta2"


@pytest.fixture(scope="module")
def kueue(cluster, tmp_path_factory):
    if shutil.which("go") is None:
        pytest.skip("Kueue cannot be built here: the go command is not on PATH")
    from aicenter_testbed.kueue.runner import KueueProcess
    from aicenter_testbed.tools import ensure_kueue

    ensure_kueue()  # a build failure is a test failure, not a skip
    kq = KueueProcess(cluster, tmp_path_factory.mktemp("kueue"))
    kq.install_crds()
    kq.start()
    try:
        kq.install_webhooks()
        yield kq
    finally:
        kq.stop()
        kq.uninstall_webhooks()


def _free_rack(cluster, need_nodes: int, gpus: int) -> tuple[str, str]:
    """A (centre, product) with ``need_nodes`` wholly free ``gpus``-GPU nodes in one rack."""
    core = cluster.core_v1()
    used: dict[str, int] = defaultdict(int)
    for p in core.list_pod_for_all_namespaces(
        field_selector="status.phase!=Succeeded,status.phase!=Failed"
    ).items:
        if p.spec.node_name:
            for c in p.spec.containers:
                used[p.spec.node_name] += int(
                    ((c.resources and c.resources.requests) or {}).get(GPU_RESOURCE, 0)
                )
    free: dict[tuple[str, str, str], int] = defaultdict(int)
    for n in core.list_node(label_selector="sim.aicenter.dev/simulated=true").items:
        labels = n.metadata.labels
        whole = int(n.status.allocatable.get(GPU_RESOURCE, 0)) == gpus and not used[n.metadata.name]
        if whole and not n.spec.unschedulable and LABEL_RACK in labels:
            free[(labels[LABEL_CENTER], labels[LABEL_PRODUCT], labels[LABEL_RACK])] += 1
    for (center, product, _), count in sorted(free.items()):
        if count >= need_nodes:
            return center, product
    raise AssertionError(
        f"no rack with {need_nodes} free {gpus}-GPU nodes in the simulated fleet: {dict(free)}"
    )


def test_indexed_job_2x8_admitted_by_kueue_and_bound_by_kube_scheduler_in_one_rack(
    cluster, sim_fleet, namespace, kueue
):
    from aicenter_testbed.kueue.mapping import LABEL_MANAGED_NAMESPACE, batch_job, kueue_objects, object_path

    center, product = _free_rack(cluster, 2, 8)
    gpu_class = product.removeprefix("NVIDIA-")
    tag = f"kq-{uuid.uuid4().hex[:6]}"
    # The mapping's input: an AICenter for the centre's nodes and a GPUQuota of 16 for this namespace.
    aic = manifests.aicenter(tag, {"matchLabels": {LABEL_CENTER: center}}, classes={gpu_class: product})
    quota = manifests.gpuquota(tag, tag, manifests.namespace_selector(namespace), {gpu_class: (16, None)})
    status, _ = cluster.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}",
        body={"metadata": {"labels": {LABEL_MANAGED_NAMESPACE: "true"}}},
        content_type="application/merge-patch+json",
    )
    assert status == 200
    ns_obj = cluster.request("GET", f"/api/v1/namespaces/{namespace}")[1]
    nodes = [
        n.metadata.labels
        for n in cluster.core_v1().list_node(label_selector=f"{LABEL_CENTER}={center}").items
    ]
    objs = kueue_objects([aic], [quota], [ns_obj], nodes)
    assert [q["metadata"]["namespace"] for q in objs.local_queues] == [namespace]
    kueue.apply(objs.all())
    try:
        job = batch_job(
            "gang",
            namespace,
            tag,
            2,
            8,
            product=product,
            topology=(LABEL_RACK, api.TOPOLOGY_REQUIRED),
        )
        status, body = cluster.request("POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", body=job)
        assert status == 201, body

        def admitted():
            items = cluster.request("GET", f"{KUEUE_API_PATH}/namespaces/{namespace}/workloads")[1]["items"]
            for wl in items:
                conds = {c["type"]: c["status"] for c in wl.get("status", {}).get("conditions", [])}
                if conds.get("Admitted") == "True":
                    return wl
            return None

        wl = wait_for(admitted, 60, f"Kueue to admit the Job's Workload (log {kueue.log_path})")
        (ps,) = wl["status"]["admission"]["podSetAssignments"]
        assert ps["count"] == 2
        assert ps["flavors"] == {GPU_RESOURCE: objs.flavor_of[(tag, gpu_class)]}
        assert ps["topologyAssignment"]["levels"][-1] == "kubernetes.io/hostname"

        core = cluster.core_v1()

        def running():
            pods = core.list_namespaced_pod(namespace, label_selector="job-name=gang").items
            ok = [p for p in pods if p.status.phase == "Running" and p.spec.node_name]
            return ok if len(ok) == 2 else None

        pods = wait_for(running, 90, "both pods of the Job Running on simulated nodes")
        racks = set()
        for p in pods:
            assert p.spec.scheduler_name == "default-scheduler"
            assert not p.spec.scheduling_gates, "Kueue's topology gate must be lifted before binding"
            assert p.spec.node_selector[LABEL_PRODUCT] == product
            node = core.read_node(p.spec.node_name)
            racks.add(node.metadata.labels[LABEL_RACK])
            assert node.metadata.labels[LABEL_CENTER] == center
        assert len(racks) == 1, f"pods spread over racks {racks}"
        assert len({p.spec.node_name for p in pods}) == 2
        # bound by kube-scheduler: its Scheduled event for each pod
        events = cluster.request("GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")[1]["items"]
        scheduled = {
            e["regarding"]["name"]
            for e in events
            if e.get("reason") == "Scheduled" and e.get("reportingController") == "default-scheduler"
        }
        assert {p.metadata.name for p in pods} <= scheduled
    finally:
        cluster.request(
            "DELETE",
            f"/apis/batch/v1/namespaces/{namespace}/jobs/gang",
            body={"propagationPolicy": "Background"},
        )
        wait_for(
            lambda: (
                not cluster.request("GET", f"{KUEUE_API_PATH}/namespaces/{namespace}/workloads")[1]["items"]
            ),
            60,
            "the Job's Workload to be deleted",
        )
        for obj in reversed(objs.all()):
            if obj["kind"] != "Topology":  # shared by every flavor of its shape; harmless to keep
                cluster.request("DELETE", object_path(obj))
