"""Kubernetes objects (plain dicts) → the core's specs. No client, no kopf: unit-testable."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from aicenter import api
from aicenter.core import CenterSpec, Node, PlacementPolicy, QuotaSpec, ReclaimLent, WithinQuota

Obj = dict[str, Any]


def parse_time(s: str | None) -> float | None:
    if not s:
        return None
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """metav1.LabelSelector semantics; an empty selector matches everything."""
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


@dataclass(frozen=True)
class CenterInfo:
    """An AICenter as the cache needs it: the core spec plus node membership and class mapping."""

    spec: CenterSpec
    node_selector: Obj
    gpu_resource: str
    class_of_product: dict[str, str]  # GFD product → class; empty: class = product minus "NVIDIA-"

    def gpu_class(self, labels: dict[str, str]) -> str | None:
        product = labels.get(api.LABEL_GPU_PRODUCT)
        if product is None:
            return None
        if self.class_of_product:
            return self.class_of_product.get(product)
        return product.removeprefix("NVIDIA-")


def center_info(obj: Obj) -> CenterInfo:
    spec = obj.get("spec") or {}
    name = obj["metadata"]["name"]
    return CenterInfo(
        spec=CenterSpec(
            name=name,
            topology_keys=tuple(spec.get("topologyKeys") or api.DEFAULT_TOPOLOGY_KEYS),
            placement_policy=PlacementPolicy(spec.get("placementPolicy") or "BinPack"),
            maintenance=bool(spec.get("maintenance", False)),
            not_ready_grace_s=float(
                spec.get("nodeNotReadyGraceSeconds", api.DEFAULT_NODE_NOT_READY_GRACE_SECONDS)
            ),
        ),
        node_selector=spec.get("nodeSelector") or {},
        gpu_resource=spec.get("gpuResource") or api.DEFAULT_GPU_RESOURCE,
        class_of_product={c["product"]: c["name"] for c in spec.get("gpuClasses") or []},
    )


def quota_spec(obj: Obj) -> QuotaSpec:
    spec = obj.get("spec") or {}
    guaranteed, limit = {}, {}
    for r in spec.get("resources") or []:
        g = int(r.get("guaranteed", 0))
        guaranteed[r["gpuClass"]] = g
        limit[r["gpuClass"]] = max(g, int(r.get("limit", g)))
    pre = spec.get("preemption") or {}
    return QuotaSpec(
        name=obj["metadata"]["name"],
        center=spec.get("center", ""),
        guaranteed=guaranteed,
        limit=limit,
        cohort=spec.get("cohort") or None,
        weight=int(spec.get("weight", 1)),
        within_quota=WithinQuota(pre.get("withinQuota", "LowerPriority")),
        reclaim_lent=ReclaimLent(pre.get("reclaimLent", "Any")),
    )


def quantity_int(q: Any) -> int:
    """Whole-unit quantity (GPU counts are plain integers)."""
    if q is None:
        return 0
    s = str(q)
    try:
        return int(s)
    except ValueError:
        return int(float(s.rstrip("kKmMG") or 0))


def node_ready(obj: Obj) -> tuple[bool, float | None]:
    """(Ready, since when NotReady) from the node's Ready condition."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            if c.get("status") == "True":
                return True, None
            return False, parse_time(c.get("lastTransitionTime"))
    return False, None


def core_node(obj: Obj, center: CenterInfo, foreign_used: int = 0) -> Node | None:
    """The core's view of a node of ``center``; None if it has no GPU class there."""
    labels = obj["metadata"].get("labels") or {}
    cls = center.gpu_class(labels)
    if cls is None:
        return None
    status = obj.get("status") or {}
    cap = quantity_int((status.get("capacity") or {}).get(center.gpu_resource))
    alloc = quantity_int((status.get("allocatable") or {}).get(center.gpu_resource))
    ready, since = node_ready(obj)
    return Node(
        name=obj["metadata"]["name"],
        center=center.spec.name,
        gpu_class=cls,
        capacity=cap,
        allocatable=alloc,
        ready=ready,
        schedulable=not (obj.get("spec") or {}).get("unschedulable", False),
        not_ready_since=since,
        topology={k: labels[k] for k in center.spec.topology_keys if k in labels},
        foreign_used=foreign_used,
    )


def pod_gpus(pod: Obj, resource: str = api.DEFAULT_GPU_RESOURCE) -> int:
    """GPUs a pod holds: the sum over containers (init containers run before, not alongside)."""
    spec = pod.get("spec") or {}
    total = 0
    for c in spec.get("containers") or []:
        res = c.get("resources") or {}
        total += quantity_int(
            (res.get("limits") or {}).get(resource) or (res.get("requests") or {}).get(resource)
        )
    return total
