"""Faults on simulated nodes show up in the API and change what the scheduler does.

Each test makes its own nodes (named ``fault-…``) so the shared fleet stays healthy.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from aicenter_testbed.fleet import GPU_RESOURCE, iter_nodes, load_fleet, scale_fleet
from aicenter_testbed.sim import faults
from aicenter_testbed.sim.nodes import NodeTracker, create_nodes, node_manifest, wait_nodes_ready
from aicenter_testbed.sim.pods import gpu_pod_manifest
from aicenter_testbed.sim.stages import ANN_FAULT
from aicenter_testbed.waiting import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def fault_node(cluster):
    """One fresh 8-GPU B200 simulated node, deleted afterwards."""
    spec = next(s for s in iter_nodes(scale_fleet(load_fleet(), 0.001)) if s.shape.product == "NVIDIA-B200")
    spec = dataclasses.replace(spec, name=f"fault-{uuid.uuid4().hex[:8]}")
    res = create_nodes(cluster, [node_manifest(spec)])
    assert res.ok, res.failed
    wait_nodes_ready(cluster, [spec.name], timeout=60)
    yield spec.name
    cluster.request("DELETE", f"/api/v1/nodes/{spec.name}")


def node(cluster, name):
    status, body = cluster.request("GET", f"/api/v1/nodes/{name}")
    assert status == 200, body
    return body


def ready_status(n):
    return next(c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready")


def taint_keys(n):
    return {t["key"] for t in n["spec"].get("taints") or []}


def test_node_not_ready_shows_in_the_api_and_clears(cluster, fault_node):
    n = faults.node_not_ready(cluster, fault_node)
    assert ready_status(n) == "False"
    # The node lifecycle controller reacts as to a real NotReady kubelet: it taints the node.
    wait_for(
        lambda: "node.kubernetes.io/not-ready" in taint_keys(node(cluster, fault_node)),
        timeout=60,
        what="the not-ready taint on the faulted node",
    )
    assert node(cluster, fault_node)["metadata"]["annotations"][ANN_FAULT] == "NotReady"

    faults.clear(cluster, fault_node)
    wait_for(
        lambda: (
            (n := node(cluster, fault_node))
            and ready_status(n) == "True"
            and not {
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            }
            & taint_keys(n)
        ),
        timeout=60,
        what="the node Ready again and its not-ready taint removed",
    )


def test_node_tracker_follows_a_fault_through_its_watch(cluster, fault_node):
    """NodeTracker (what `up` and the fleet benchmark count with) sees a node go down and come back."""
    tracker = NodeTracker(cluster).start()
    try:
        assert tracker.counts([fault_node]) == {"seen": 1, "ready": 1, "schedulable": 1}
        faults.node_not_ready(cluster, fault_node)
        wait_for(lambda: fault_node in tracker.not_ready(), timeout=60, what="the tracker to see NotReady")
        assert tracker.unschedulable([fault_node]) == [fault_node]
        faults.clear(cluster, fault_node)
        wait_for(
            lambda: tracker.counts([fault_node])["schedulable"] == 1,
            timeout=60,
            what="the tracker to see it Ready and untainted again",
        )
        assert tracker.events >= 2 and tracker.relists == 1  # watched, not listed again
    finally:
        tracker.stop()


def test_kwok_stage_alone_takes_an_annotated_node_down_and_back(cluster, fault_node):
    """Only the fault annotation is set: kwok's fault stage must turn Ready False by itself."""
    status, body = cluster.request(
        "PATCH",
        f"/api/v1/nodes/{fault_node}",
        {"metadata": {"annotations": {ANN_FAULT: "NotReady"}}},
        content_type="application/strategic-merge-patch+json",
    )
    assert status == 200, body
    wait_for(
        lambda: ready_status(node(cluster, fault_node)) == "False",
        timeout=30,
        what="kwok to mark it NotReady",
    )

    status, body = cluster.request(
        "PATCH",
        f"/api/v1/nodes/{fault_node}",
        {"metadata": {"annotations": {ANN_FAULT: None}}},
        content_type="application/merge-patch+json",
    )
    assert status == 200, body
    wait_for(
        lambda: ready_status(node(cluster, fault_node)) == "True", timeout=30, what="kwok to heal the node"
    )


def test_unhealthy_gpus_shrink_allocatable_and_block_a_full_node_pod(cluster, fault_node, namespace):
    n = faults.gpus_unhealthy(cluster, fault_node, gpus=2)
    assert n["status"]["capacity"][GPU_RESOURCE] == "8"
    assert n["status"]["allocatable"][GPU_RESOURCE] == "6"
    pin = {"kubernetes.io/hostname": fault_node}

    status, body = cluster.request(
        "POST", f"/api/v1/namespaces/{namespace}/pods", gpu_pod_manifest("full", 8, node_selector=pin)
    )
    assert status == 201, body
    status, body = cluster.request(
        "POST", f"/api/v1/namespaces/{namespace}/pods", gpu_pod_manifest("fits", 6, node_selector=pin)
    )
    assert status == 201, body

    def phase(name):
        return cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")[1]

    wait_for(lambda: phase("fits")["status"].get("phase") == "Running", timeout=60, what="6-GPU pod Running")

    def unschedulable():
        conds = phase("full")["status"].get("conditions", [])
        return any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conds)

    wait_for(unschedulable, timeout=60, what="8-GPU pod Unschedulable on the degraded node")

    n = faults.clear(cluster, fault_node)
    assert n["status"]["allocatable"][GPU_RESOURCE] == "8"
    assert faults.ANN_UNHEALTHY_GPUS not in (n["metadata"].get("annotations") or {})


def test_cordon_marks_the_node_unschedulable(cluster, fault_node):
    n = faults.cordon(cluster, fault_node)
    assert n["spec"]["unschedulable"] is True
    wait_for(
        lambda: "node.kubernetes.io/unschedulable" in taint_keys(node(cluster, fault_node)),
        timeout=30,
        what="the unschedulable taint",
    )
    faults.clear(cluster, fault_node)
    assert not node(cluster, fault_node)["spec"].get("unschedulable")


def test_cli_fault_command(cluster, fault_node, capsys, monkeypatch):
    from aicenter_testbed import cli

    monkeypatch.delenv("AICENTER_KUBECONFIG", raising=False)
    kc = str(cluster.kubeconfig)
    assert cli.main(["fault", "gpu-unhealthy", fault_node, "--gpus", "3", "--kubeconfig", kc]) == 0
    assert "allocatable/capacity=5/8" in capsys.readouterr().out
    assert cli.main(["fault", "clear", fault_node, "--kubeconfig", kc]) == 0
    assert "Ready=True" in capsys.readouterr().out
