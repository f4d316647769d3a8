"""Pods for simulated GPU nodes: tolerate kwok's taint, request ``nvidia.com/gpu``, declare a run time."""

from __future__ import annotations

from typing import Any

from aicenter_testbed.fleet import GPU_RESOURCE, LABEL_PRODUCT
from aicenter_testbed.sim.nodes import KWOK_TOLERATION
from aicenter_testbed.sim.stages import ANN_OUTCOME, ANN_RUN_SECONDS

SIM_IMAGE = "registry.invalid/aicenter/sim-workload:0"  # never pulled: kwok runs no containers


def gpu_pod_manifest(
    name: str,
    gpus: int,
    *,
    namespace: str | None = None,
    product: str | None = None,
    run_seconds: float | None = None,
    outcome: str | None = None,
    labels: dict[str, str] | None = None,
    node_selector: dict[str, str] | None = None,
    scheduler_name: str | None = None,
    restart_policy: str = "Never",
) -> dict[str, Any]:
    """A Pod asking for ``gpus`` GPUs on a simulated node (optionally of one GFD ``product``).

    ``run_seconds`` makes it Succeed that long after it starts (``outcome="Failed"`` makes it fail
    instead); without it the pod runs until deleted.
    """
    annotations: dict[str, str] = {}
    if run_seconds is not None:
        annotations[ANN_RUN_SECONDS] = f"{run_seconds:g}"
    if outcome is not None:
        annotations[ANN_OUTCOME] = outcome
    selector = dict(node_selector or {})
    if product:
        selector[LABEL_PRODUCT] = product
    meta: dict[str, Any] = {"name": name, "labels": labels or {}, "annotations": annotations}
    if namespace:
        meta["namespace"] = namespace
    limits = {GPU_RESOURCE: str(gpus)} if gpus else {}
    spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "tolerations": [dict(KWOK_TOLERATION)],
        "nodeSelector": selector,
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {
                "name": "main",
                "image": SIM_IMAGE,
                "resources": {"limits": limits, "requests": {"cpu": "1", "memory": "1Gi", **limits}},
            }
        ],
    }
    if scheduler_name:
        spec["schedulerName"] = scheduler_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
