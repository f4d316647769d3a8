"""Builders for the operator's objects as tests, benchmarks and the demo submit them.

One place for the shape of an AICenter, a GPUQuota and a GPUJob on the simulated fleet, so the e2e
tests, the benchmarks, the kind e2e and the samples cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from aicenter import api
from aicenter_testbed.fleet import LABEL_CENTER
from aicenter_testbed.sim.nodes import KWOK_TOLERATION
from aicenter_testbed.sim.pods import SIM_IMAGE
from aicenter_testbed.sim.stages import ANN_OUTCOME, ANN_RUN_SECONDS

Manifest = dict[str, Any]


def namespace_selector(namespace: str) -> Manifest:
    return {"matchLabels": {"kubernetes.io/metadata.name": namespace}}


def aicenter(
    name: str,
    node_selector: Manifest | None = None,
    classes: dict[str, str] | None = None,
    **spec: Any,
) -> Manifest:
    """An AICenter selecting nodes labelled ``aicenter.dev/center=<name>`` unless told otherwise.

    ``classes`` maps class names to GPU Feature Discovery products (``{"B200": "NVIDIA-B200"}``).
    """
    body: Manifest = {"nodeSelector": node_selector or {"matchLabels": {LABEL_CENTER: name}}, **spec}
    if classes:
        body["gpuClasses"] = [{"name": c, "product": p} for c, p in sorted(classes.items())]
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND_AICENTER,
        "metadata": {"name": name},
        "spec": body,
    }


def gpuquota(
    name: str,
    center: str,
    namespace_sel: Manifest,
    resources: dict[str, tuple[int, int | None]],
    cohort: str | None = None,
    **spec: Any,
) -> Manifest:
    """A GPUQuota; ``resources`` maps a class to (guaranteed, limit or None for no borrowing)."""
    body: Manifest = {
        "center": center,
        "namespaceSelector": namespace_sel,
        "resources": [
            {"gpuClass": c, "guaranteed": g, "limit": g if lim is None else lim}
            for c, (g, lim) in sorted(resources.items())
        ],
        **spec,
    }
    if cohort:
        body["cohort"] = cohort
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND_GPUQUOTA,
        "metadata": {"name": name},
        "spec": body,
    }


def gpujob(
    name: str,
    replicas: int = 1,
    gpus: int = 8,
    *,
    namespace: str | None = None,
    quota: str | None = None,
    gpu_class: str | None = None,
    topology: tuple[str, str] | None = None,
    priority: int | None = None,
    run_seconds: float | None = None,
    outcome: str | None = None,
    image: str = SIM_IMAGE,
    simulated: bool = True,
    labels: dict[str, str] | None = None,
    pod_spec: Manifest | None = None,
    **spec: Any,
) -> Manifest:
    """A GPUJob of ``replicas`` × ``gpus``.

    On the simulated fleet (``simulated``) its pods tolerate kwok's taint and end after
    ``run_seconds`` (with ``outcome`` Failed when asked); ``pod_spec`` entries are merged into the
    template's pod spec (tolerations, nodeSelector, affinity, …).
    """
    annotations: dict[str, str] = {}
    if run_seconds is not None:
        annotations[ANN_RUN_SECONDS] = f"{run_seconds:g}"
    if outcome:
        annotations[ANN_OUTCOME] = outcome
    pspec: Manifest = {
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "main", "image": image}],
    }
    if simulated:
        pspec["tolerations"] = [dict(KWOK_TOLERATION)]
    for k, v in (pod_spec or {}).items():
        if k == "tolerations":
            pspec["tolerations"] = [*pspec.get("tolerations", []), *v]
        else:
            pspec[k] = v
    tmeta: Manifest = {}
    if annotations:
        tmeta["annotations"] = annotations
    if labels:
        tmeta["labels"] = labels
    body: Manifest = {"replicas": replicas, "gpusPerReplica": gpus, **spec, "template": {"spec": pspec}}
    if tmeta:
        body["template"]["metadata"] = tmeta
    if priority is not None:
        body["priority"] = priority
    if quota:
        body["quota"] = quota
    if gpu_class:
        body["gpuClass"] = gpu_class
    if topology:
        body["topology"] = {"key": topology[0], "mode": topology[1]}
    meta: Manifest = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": api.API_VERSION, "kind": api.KIND_GPUJOB, "metadata": meta, "spec": body}
