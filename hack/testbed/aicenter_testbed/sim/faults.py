"""Inject and clear faults on simulated GPU nodes.

* NotReady: the node is annotated ``sim.aicenter.dev/fault: NotReady`` (kwok's stages then stop its
  heartbeat and hold Ready=False) and its Ready condition is set False at once; the node lifecycle
  controller then taints it ``node.kubernetes.io/not-ready`` as it would a real one.
* Unhealthy GPUs: ``status.allocatable[nvidia.com/gpu]`` drops below capacity by N, as the NVIDIA
  device plugin reports when GPUs fail health checks; annotated ``sim.aicenter.dev/unhealthy-gpus``.
* Cordon: ``spec.unschedulable``.

``clear`` undoes all three. Every function takes a ClusterClient-like object (``request(...)``).
"""

from __future__ import annotations

import time
from typing import Any

from aicenter_testbed.fleet import GPU_RESOURCE
from aicenter_testbed.sim.stages import ANN_FAULT, FAULT_NOT_READY

ANN_UNHEALTHY_GPUS = "sim.aicenter.dev/unhealthy-gpus"
ANN_CORDONED = "sim.aicenter.dev/cordoned"
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
FAULTS = ("node-notready", "gpu-unhealthy", "cordon")


class FaultError(RuntimeError):
    pass


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _call(client: Any, method: str, path: str, body: Any = None, content_type: str = SMP) -> dict[str, Any]:
    status, doc = client.request(method, path, body, content_type=content_type)
    if status >= 300:
        msg = doc.get("message") if isinstance(doc, dict) else doc
        raise FaultError(f"{method} {path} answered {status}: {msg}")
    return doc


def _node(name: str, sub: str = "") -> str:
    return f"/api/v1/nodes/{name}" + (f"/{sub}" if sub else "")


def get_node(client: Any, name: str) -> dict[str, Any]:
    return _call(client, "GET", _node(name))


def _set_ready(client: Any, name: str, ready: bool) -> dict[str, Any]:
    now = _now()
    cond = {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "KubeletReady" if ready else "SimulatedFault",
        "message": "kubelet is posting ready status"
        if ready
        else "simulated fault: kubelet stopped posting ready status",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    return _call(client, "PATCH", _node(name, "status"), {"status": {"conditions": [cond]}})


def node_not_ready(client: Any, name: str) -> dict[str, Any]:
    """Make a node NotReady: fault annotation first (kwok stops healing it), then Ready=False."""
    _call(client, "PATCH", _node(name), {"metadata": {"annotations": {ANN_FAULT: FAULT_NOT_READY}}})
    return _set_ready(client, name, False)


def gpus_unhealthy(client: Any, name: str, gpus: int = 1) -> dict[str, Any]:
    """Report ``gpus`` of the node's GPUs unhealthy: allocatable = capacity - gpus (never below 0)."""
    if gpus < 1:
        raise FaultError("gpus must be at least 1")
    node = get_node(client, name)
    capacity = int(node.get("status", {}).get("capacity", {}).get(GPU_RESOURCE, "0"))
    if capacity == 0:
        raise FaultError(f"node {name} has no {GPU_RESOURCE} capacity")
    healthy = max(0, capacity - gpus)
    _call(
        client,
        "PATCH",
        _node(name),
        {"metadata": {"annotations": {ANN_UNHEALTHY_GPUS: str(capacity - healthy)}}},
    )
    return _call(
        client, "PATCH", _node(name, "status"), {"status": {"allocatable": {GPU_RESOURCE: str(healthy)}}}
    )


def cordon(client: Any, name: str) -> dict[str, Any]:
    return _call(
        client,
        "PATCH",
        _node(name),
        {"metadata": {"annotations": {ANN_CORDONED: "true"}}, "spec": {"unschedulable": True}},
    )


def uncordon(client: Any, name: str) -> dict[str, Any]:
    return _call(
        client,
        "PATCH",
        _node(name),
        {"metadata": {"annotations": {ANN_CORDONED: None}}, "spec": {"unschedulable": None}},
        MERGE,
    )


def clear(client: Any, name: str) -> dict[str, Any]:
    """Undo every fault: annotations removed, Ready=True, allocatable GPUs = capacity, uncordoned."""
    node = get_node(client, name)
    meta = node.get("metadata", {})
    anns = meta.get("annotations") or {}
    patch: dict[str, Any] = {
        "metadata": {
            "annotations": {k: None for k in (ANN_FAULT, ANN_UNHEALTHY_GPUS, ANN_CORDONED) if k in anns}
        }
    }
    if anns.get(ANN_CORDONED) or node.get("spec", {}).get("unschedulable"):
        patch["spec"] = {"unschedulable": None}
    _call(client, "PATCH", _node(name), patch, MERGE)
    capacity = node.get("status", {}).get("capacity", {}).get(GPU_RESOURCE)
    if capacity is not None:
        _call(client, "PATCH", _node(name, "status"), {"status": {"allocatable": {GPU_RESOURCE: capacity}}})
    return _set_ready(client, name, True)


def inject(client: Any, fault: str, name: str, gpus: int = 1) -> dict[str, Any]:
    """Dispatch by CLI name: ``node-notready``, ``gpu-unhealthy``, ``cordon`` or ``clear``."""
    if fault == "node-notready":
        return node_not_ready(client, name)
    if fault == "gpu-unhealthy":
        return gpus_unhealthy(client, name, gpus)
    if fault == "cordon":
        return cordon(client, name)
    if fault == "clear":
        return clear(client, name)
    raise FaultError(f"unknown fault {fault!r}; one of {', '.join((*FAULTS, 'clear'))}")
