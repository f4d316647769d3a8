"""Typed specs: one parse of each kind, with its defaults in one place.

The CRDs (:mod:`aicenter.api.crds`) default the same fields to the same constants (from
:mod:`aicenter.api`), so an object read before or after the API server defaulted it parses the same;
a test checks it. The shell reads specs only through these classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aicenter.api import (
    DEFAULT_BACKOFF_LIMIT,
    DEFAULT_GPU_RESOURCE,
    DEFAULT_NODE_NOT_READY_GRACE_SECONDS,
    DEFAULT_PREEMPTIBLE,
    DEFAULT_PRIORITY,
    DEFAULT_REPLICAS,
    DEFAULT_TOPOLOGY_KEYS,
    DEFAULT_UNHEALTHY_GPU_GRACE_SECONDS,
    DEFAULT_WEIGHT,
    GANG_ALL_OR_NOTHING,
    GANG_INDEPENDENT,
    PLACEMENT_BINPACK,
    PREEMPT_ANY,
    PREEMPT_LOWER_PRIORITY,
    TOPOLOGY_REQUIRED,
)

Obj = dict[str, Any]


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


@dataclass(frozen=True)
class GPUJobSpec:
    replicas: int = DEFAULT_REPLICAS
    gpus_per_replica: int = 1
    quota: str | None = None
    gpu_class: str | None = None
    gang: bool = True  # AllOrNothing; False: Independent
    topology_key: str | None = None
    topology_mode: str = TOPOLOGY_REQUIRED
    priority: int = DEFAULT_PRIORITY
    preemptible: bool = DEFAULT_PREEMPTIBLE
    backoff_limit: int = DEFAULT_BACKOFF_LIMIT
    active_deadline_s: float | None = None
    ttl_after_finished_s: float | None = None
    template: Obj = field(default_factory=dict, compare=False)

    @property
    def total_gpus(self) -> int:
        return self.replicas * self.gpus_per_replica

    @classmethod
    def parse(cls, obj: Obj) -> GPUJobSpec:
        s = _spec(obj)
        topo = s.get("topology") or {}
        deadline, ttl = s.get("activeDeadlineSeconds"), s.get("ttlSecondsAfterFinished")
        return cls(
            replicas=int(s.get("replicas", DEFAULT_REPLICAS)),
            gpus_per_replica=int(s.get("gpusPerReplica", 1)),
            quota=s.get("quota") or None,
            gpu_class=s.get("gpuClass") or None,
            gang=(s.get("gang") or {}).get("policy", GANG_ALL_OR_NOTHING) != GANG_INDEPENDENT,
            topology_key=topo.get("key") or None,
            topology_mode=topo.get("mode") or TOPOLOGY_REQUIRED,
            priority=int(s.get("priority", DEFAULT_PRIORITY)),
            preemptible=bool(s.get("preemptible", DEFAULT_PREEMPTIBLE)),
            backoff_limit=int(s.get("backoffLimit", DEFAULT_BACKOFF_LIMIT)),
            active_deadline_s=float(deadline) if deadline is not None else None,
            ttl_after_finished_s=float(ttl) if ttl is not None else None,
            template=s.get("template") or {},
        )


@dataclass(frozen=True)
class GPUQuotaSpec:
    center: str
    namespace_selector: Obj
    guaranteed: dict[str, int]
    limit: dict[str, int]
    cohort: str | None = None
    weight: int = DEFAULT_WEIGHT
    within_quota: str = PREEMPT_LOWER_PRIORITY
    reclaim_lent: str = PREEMPT_ANY

    @classmethod
    def parse(cls, obj: Obj) -> GPUQuotaSpec:
        s = _spec(obj)
        guaranteed, limit = {}, {}
        for r in s.get("resources") or []:
            g = int(r.get("guaranteed", 0))
            guaranteed[r["gpuClass"]] = g
            limit[r["gpuClass"]] = max(g, int(r.get("limit", g)))
        pre = s.get("preemption") or {}
        return cls(
            center=s.get("center", ""),
            namespace_selector=s.get("namespaceSelector") or {},
            guaranteed=guaranteed,
            limit=limit,
            cohort=s.get("cohort") or None,
            weight=int(s.get("weight", DEFAULT_WEIGHT)),
            within_quota=pre.get("withinQuota", PREEMPT_LOWER_PRIORITY),
            reclaim_lent=pre.get("reclaimLent", PREEMPT_ANY),
        )


@dataclass(frozen=True)
class AICenterSpec:
    node_selector: Obj
    gpu_resource: str = DEFAULT_GPU_RESOURCE
    class_of_product: dict[str, str] = field(default_factory=dict)  # GFD product → class
    topology_keys: tuple[str, ...] = DEFAULT_TOPOLOGY_KEYS
    placement_policy: str = PLACEMENT_BINPACK
    maintenance: bool = False
    not_ready_grace_s: float = DEFAULT_NODE_NOT_READY_GRACE_SECONDS
    unhealthy_grace_s: float = DEFAULT_UNHEALTHY_GPU_GRACE_SECONDS

    @classmethod
    def parse(cls, obj: Obj) -> AICenterSpec:
        s = _spec(obj)
        return cls(
            node_selector=s.get("nodeSelector") or {},
            gpu_resource=s.get("gpuResource") or DEFAULT_GPU_RESOURCE,
            class_of_product={c["product"]: c["name"] for c in s.get("gpuClasses") or []},
            topology_keys=tuple(s.get("topologyKeys") or DEFAULT_TOPOLOGY_KEYS),
            placement_policy=s.get("placementPolicy") or PLACEMENT_BINPACK,
            maintenance=bool(s.get("maintenance", False)),
            not_ready_grace_s=float(s.get("nodeNotReadyGraceSeconds", DEFAULT_NODE_NOT_READY_GRACE_SECONDS)),
            unhealthy_grace_s=float(s.get("unhealthyGPUGraceSeconds", DEFAULT_UNHEALTHY_GPU_GRACE_SECONDS)),
        )
