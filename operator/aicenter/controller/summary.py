"""AICenter and GPUQuota status, computed from the engine's state (periodically, not per event)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .convert import rfc3339

if TYPE_CHECKING:
    from .engine import Engine

Obj = dict[str, Any]


def _cond(ctype: str, ok: bool, reason: str, message: str, old: list[Obj], now: float) -> Obj:
    status = "True" if ok else "False"
    prev = next((c for c in old if c.get("type") == ctype), None)
    since = prev["lastTransitionTime"] if prev and prev.get("status") == status else rfc3339(now)
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }


def center_status(e: Engine, name: str, now: float) -> Obj:
    obj = e.center_objs[name]
    info = e.centers[name]
    old = (obj.get("status") or {}).get("conditions") or []
    per_class: dict[str, dict[str, int]] = {}
    total = ready = schedulable = 0
    for pool in e.sched.inventory.pools_of(name):
        c = per_class.setdefault(pool.gpu_class, {"capacity": 0, "healthy": 0, "allocated": 0, "free": 0})
        for ns in pool.nodes.values():
            n = ns.node
            total += 1
            ready += n.ready
            schedulable += n.ready and n.schedulable
            c["capacity"] += n.capacity
            healthy = n.allocatable if n.ready else 0
            c["healthy"] += healthy
            c["allocated"] += min(n.capacity, ns.used + n.foreign_used)
            if pool.placeable(ns):
                c["free"] += max(0, ns.free)
    guaranteed = sum(
        g for q in e.sched.ledger.specs.values() if q.center == name for g in q.guaranteed.values()
    )
    sums = {k: sum(c[k] for c in per_class.values()) for k in ("capacity", "healthy", "allocated", "free")}
    conds = [
        _cond(
            "Ready",
            ready > 0,
            "NodesReady" if ready else "NoReadyNodes",
            f"{ready} of {total} nodes ready",
            old,
            now,
        ),
        _cond(
            "Degraded",
            ready < total or sums["healthy"] < sums["capacity"],
            "UnhealthyCapacity" if sums["healthy"] < sums["capacity"] else "AllHealthy",
            f"{sums['healthy']:,} of {sums['capacity']:,} GPUs healthy",
            old,
            now,
        ),
        _cond(
            "GuaranteesExceedHealthy",
            guaranteed > sums["healthy"],
            "Overcommitted" if guaranteed > sums["healthy"] else "Backed",
            f"quota guarantees {guaranteed:,} vs {sums['healthy']:,} healthy GPUs",
            old,
            now,
        ),
    ]
    if info.spec.maintenance:
        conds.append(_cond("Maintenance", True, "Maintenance", "no new placements", old, now))
    return {
        "observedGeneration": obj["metadata"].get("generation", 1),
        "nodes": {"total": total, "ready": ready, "schedulable": schedulable},
        "gpus": [{"class": k, **v} for k, v in sorted(per_class.items())],
        "totalGPUs": sums["capacity"],
        "healthyGPUs": sums["healthy"],
        "allocatedGPUs": sums["allocated"],
        "freeGPUs": sums["free"],
        "guaranteedGPUs": guaranteed,
        "conditions": conds,
    }


def quota_status(e: Engine, name: str, now: float, jobs_by_quota: dict[str, list[int]]) -> Obj:
    obj = e.quotas[name]
    old = (obj.get("status") or {}).get("conditions") or []
    spec = e.sched.ledger.specs.get(name)
    resources, used_total, g_total = [], 0, 0
    for cls, u in sorted(e.sched.ledger.usage.get(name, {}).items()):
        resources.append(
            {
                "gpuClass": cls,
                "guaranteed": u.guaranteed,
                "limit": u.limit,
                "used": u.used,
                "borrowed": u.borrowed,
                "lent": e.sched.ledger.lent(name, cls),
            }
        )
        used_total += u.used
        g_total += u.guaranteed
    admitted, pending = jobs_by_quota.get(name, [0, 0])
    center = spec.center if spec else ""
    conds = []
    if center not in e.centers:
        conds.append(_cond("Ready", False, "CenterNotFound", f"AICenter {center} does not exist", old, now))
    else:
        classes = {p.gpu_class for p in e.sched.inventory.pools_of(center)}
        missing = [c for c in (spec.classes() if spec else []) if c not in classes]
        if missing:
            conds.append(
                _cond(
                    "Ready",
                    False,
                    "UnknownGPUClass",
                    f"centre {center} has no {', '.join(missing)} GPUs",
                    old,
                    now,
                )
            )
        else:
            conds.append(_cond("Ready", True, "Ready", f"serving from {center}", old, now))
        healthy = sum(
            (n.node.allocatable if n.node.ready else 0)
            for p in e.sched.inventory.pools_of(center)
            for n in p.nodes.values()
        )
        guaranteed = sum(
            g for q in e.sched.ledger.specs.values() if q.center == center for g in q.guaranteed.values()
        )
        conds.append(
            _cond(
                "GuaranteeBacked",
                guaranteed <= healthy,
                "Backed" if guaranteed <= healthy else "NotBackedByHealthyGPUs",
                f"centre {center}: guarantees {guaranteed:,}, healthy GPUs {healthy:,}",
                old,
                now,
            )
        )
    return {
        "observedGeneration": obj["metadata"].get("generation", 1),
        "resources": resources,
        "usedGPUs": used_total,
        "guaranteedGPUs": g_total,
        "admittedJobs": admitted,
        "pendingJobs": pending,
        "conditions": conds,
    }
