"""Kubernetes objects (plain JSON) → what the cache and the core need. No client, no kopf.

- times, label selectors and resource quantities;
- a pod's *effective requests* by Kubernetes' rule (the larger of its init containers and the sum of
  its containers plus sidecars, plus the pod overhead; ``pods`` = 1);
- a pod template's constraints (tolerations, node selector, node affinity, per-replica requests)
  and what the operator cannot evaluate in it;
- a trimmed node (:class:`NodeView`) and the core's :class:`~aicenter.core.Node` built from it.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from aicenter import api
from aicenter.api import Obj
from aicenter.api.specs import AICenterSpec, GPUQuotaSpec
from aicenter.core import CenterSpec, Node, PlacementPolicy, QuotaSpec, ReclaimLent, WithinQuota
from aicenter.core.constraints import (
    HARD_EFFECTS,
    PREFER_NO_SCHEDULE,
    Constraints,
    NodeFacts,
    Preferred,
    Requirement,
    Taint,
    Term,
    Toleration,
    resources,
)

intern = sys.intern

# -- times and selectors ---------------------------------------------------------------------------


def parse_time(s: str | None) -> float | None:
    if not s:
        return None
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


# -- quantities and requests -----------------------------------------------------------------------

_SUFFIX = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def quantity(q: Any, milli: bool = False) -> int:
    """A resource quantity as an integer (cpu in millicores with ``milli``), rounded up; 0 if invalid."""
    if q is None:
        return 0
    if isinstance(q, int | float):
        v = Decimal(str(q))
    else:
        s = str(q).strip()
        num = s.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
        suffix = s[len(num) :]
        try:  # a suffix, else a decimal exponent (1e3) or garbage
            v = Decimal(num) * _SUFFIX[suffix] if suffix in _SUFFIX else Decimal(s)
        except InvalidOperation:
            return 0
    if milli:
        v *= 1000
    i = int(v)
    return i + 1 if v > i else i


def _container_requests(c: Obj) -> dict[str, int]:
    res = c.get("resources") or {}
    req = dict(res.get("requests") or {})
    for k, v in (res.get("limits") or {}).items():
        req.setdefault(k, v)  # the API server defaults requests to limits
    return {intern(k): quantity(v, milli=(k == "cpu")) for k, v in req.items()}


def _add(into: dict[str, int], more: dict[str, int], factor: int = 1) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + factor * v


def pod_requests(spec: Obj) -> dict[str, int]:
    """Effective requests of a pod spec, every resource (Kubernetes' rule, with sidecars and overhead)."""
    total: dict[str, int] = {}
    for c in spec.get("containers") or []:
        _add(total, _container_requests(c))
    sidecars: dict[str, int] = {}
    peak: dict[str, int] = {}
    for c in spec.get("initContainers") or []:
        req = _container_requests(c)
        if c.get("restartPolicy") == "Always":  # a sidecar: runs alongside what starts after it
            _add(sidecars, req)
            _add(total, req)
            for k, v in sidecars.items():
                peak[k] = max(peak.get(k, 0), v)
        else:
            for k in set(req) | set(sidecars):
                peak[k] = max(peak.get(k, 0), req.get(k, 0) + sidecars.get(k, 0))
    out = {k: max(total.get(k, 0), peak.get(k, 0)) for k in set(total) | set(peak)}
    _add(out, {intern(k): quantity(v, milli=(k == "cpu")) for k, v in (spec.get("overhead") or {}).items()})
    out["pods"] = 1
    return {k: v for k, v in out.items() if v}


def split_gpus(req: dict[str, int], gpu_resources: tuple[str, ...]) -> tuple[int, dict[str, int]]:
    """(GPUs, the other requests) of a request dict."""
    gpus = sum(req.get(r, 0) for r in gpu_resources)
    return gpus, {k: v for k, v in req.items() if k not in gpu_resources}


# -- constraints of a pod template -------------------------------------------------------------------


def _requirements(exprs: list[Obj] | None) -> tuple[Requirement, ...]:
    return tuple(
        Requirement(e.get("key", ""), e.get("operator", ""), tuple(e.get("values") or ()))
        for e in exprs or ()
    )


def _term(t: Obj) -> Term:
    return Term(_requirements(t.get("matchExpressions")), _requirements(t.get("matchFields")))


def constraints_of(pod_spec: Obj, gpu_resource: str) -> Constraints:
    """What a replica pod built from this spec asks of its node, besides GPUs."""
    aff = (pod_spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = (aff.get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get(
        "nodeSelectorTerms"
    ) or []
    preferred = aff.get("preferredDuringSchedulingIgnoredDuringExecution") or []
    _, other = split_gpus(pod_requests(pod_spec), (gpu_resource,))
    return Constraints(
        tolerations=tuple(
            Toleration(
                t.get("key") or "", t.get("operator") or "Equal", t.get("value") or "", t.get("effect") or ""
            )
            for t in pod_spec.get("tolerations") or ()
        ),
        node_selector=tuple(sorted((pod_spec.get("nodeSelector") or {}).items())),
        required=tuple(_term(t) for t in required),
        preferred=tuple(
            Preferred(int(p.get("weight", 1)), _term(p.get("preference") or {})) for p in preferred
        ),
        requests=resources(other),
    )


def not_evaluated(pod_spec: Obj) -> list[str]:
    """What in a pod spec the operator does not evaluate itself (kube-scheduler must bind such pods)."""
    out = []
    if any(v.get("persistentVolumeClaim") or v.get("ephemeral") for v in pod_spec.get("volumes") or ()):
        out.append("persistent volume claims")
    aff = pod_spec.get("affinity") or {}
    if aff.get("podAffinity") or aff.get("podAntiAffinity"):
        out.append("inter-pod affinity")
    if pod_spec.get("topologySpreadConstraints"):
        out.append("topology spread constraints")
    return out


def refused(pod_spec: Obj) -> str | None:
    """Why a template can never be placed by the operator (it would bind blind), or None."""
    if pod_spec.get("resourceClaims"):
        return (
            "the pod template uses resourceClaims (dynamic resource allocation), which the operator does not"
            " allocate; request GPUs with spec.gpusPerReplica"
        )
    return None


# -- nodes -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeView:
    """A node trimmed to what scheduling needs (no managed fields, images or conditions list)."""

    name: str
    labels: dict[str, str]
    taints: tuple[Taint, ...]
    soft_taints: tuple[Taint, ...]
    unschedulable: bool
    ready: bool
    not_ready_since: float | None
    capacity: dict[str, int]
    allocatable: dict[str, int]


def node_view(obj: Obj) -> NodeView:
    md, spec, st = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    hard, soft = [], []
    for t in spec.get("taints") or ():
        taint = Taint(intern(t.get("key", "")), t.get("value") or "", t.get("effect") or "")
        if taint.effect in HARD_EFFECTS:
            hard.append(taint)
        elif taint.effect == PREFER_NO_SCHEDULE:
            soft.append(taint)
    ready, since = False, None
    for c in st.get("conditions") or ():
        if c.get("type") == "Ready":
            ready = c.get("status") == "True"
            since = None if ready else parse_time(c.get("lastTransitionTime"))
    return NodeView(
        name=intern(md["name"]),
        labels={intern(k): intern(v) for k, v in (md.get("labels") or {}).items()},
        taints=tuple(sorted(hard, key=str)),
        soft_taints=tuple(sorted(soft, key=str)),
        unschedulable=bool(spec.get("unschedulable", False)),
        ready=ready,
        not_ready_since=since,
        capacity={intern(k): quantity(v, k == "cpu") for k, v in (st.get("capacity") or {}).items()},
        allocatable={intern(k): quantity(v, k == "cpu") for k, v in (st.get("allocatable") or {}).items()},
    )


@dataclass(frozen=True)
class CenterInfo:
    """An AICenter as the cache needs it: its parsed spec and the core's view of it."""

    name: str
    spec: AICenterSpec
    core: CenterSpec

    def gpu_class(self, labels: dict[str, str]) -> str | None:
        product = labels.get(api.LABEL_GPU_PRODUCT)
        if product is None:
            return None
        if self.spec.class_of_product:
            return self.spec.class_of_product.get(product)
        return product.removeprefix("NVIDIA-")

    def selects(self, labels: dict[str, str]) -> bool:
        return selector_matches(self.spec.node_selector, labels)


def center_info(obj: Obj) -> CenterInfo:
    name = obj["metadata"]["name"]
    s = AICenterSpec.parse(obj)
    return CenterInfo(
        name,
        s,
        CenterSpec(
            name=name,
            topology_keys=s.topology_keys,
            placement_policy=PlacementPolicy(s.placement_policy),
            maintenance=s.maintenance,
            not_ready_grace_s=s.not_ready_grace_s,
            unhealthy_grace_s=s.unhealthy_grace_s,
        ),
    )


def quota_spec(obj: Obj) -> QuotaSpec:
    s = GPUQuotaSpec.parse(obj)
    return QuotaSpec(
        name=obj["metadata"]["name"],
        center=s.center,
        guaranteed=s.guaranteed,
        limit=s.limit,
        cohort=s.cohort,
        weight=s.weight,
        within_quota=WithinQuota(s.within_quota),
        reclaim_lent=ReclaimLent(s.reclaim_lent),
    )


@dataclass
class NodeUsage:
    """What the pods on a node that no placement of ours claims request (every resource), and the
    part of it that is draining away (terminating, being deleted, not yet admitted by the kubelet)."""

    requests: dict[str, int] = field(default_factory=dict)
    draining: dict[str, int] = field(default_factory=dict)

    def add(self, requests: dict[str, int], draining: bool, sign: int) -> None:
        _add(self.requests, requests, sign)
        if draining:
            _add(self.draining, requests, sign)

    @property
    def empty(self) -> bool:
        return not any(self.requests.values())


def core_node(view: NodeView, center: CenterInfo | None, usage: NodeUsage | None) -> Node | None:
    """The core's view of a node; None when it has no GPU class. ``center`` None: unmanaged."""
    cls = center.gpu_class(view.labels) if center else None
    if center is not None and cls is None:
        return None
    res = center.spec.gpu_resource if center else api.DEFAULT_GPU_RESOURCE
    u = usage or NodeUsage()
    topo_keys = center.core.topology_keys if center else ()
    return Node(
        name=view.name,
        center=center.name if center else "",
        gpu_class=cls or "",
        capacity=view.capacity.get(res, 0),
        allocatable=view.allocatable.get(res, 0),
        ready=view.ready,
        schedulable=not view.unschedulable,
        not_ready_since=view.not_ready_since,
        topology={k: view.labels[k] for k in topo_keys if k in view.labels},
        other_gpus=u.requests.get(res, 0),
        draining_gpus=u.draining.get(res, 0),
        facts=NodeFacts(
            labels=view.labels,
            taints=view.taints,
            soft_taints=view.soft_taints,
            allocatable={k: v for k, v in view.allocatable.items() if k != res},
        ),
        other_requests={k: v for k, v in u.requests.items() if k != res and v},
    )
