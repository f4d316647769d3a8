"""The read-only visibility API: the queue in the order the scheduler considers it, one job's
place in it and why, the centres' racks and cliques, the quotas. Served on the operator's HTTP port
(``/visibility/v1/...``) and reached by ``kubectl aicenter`` through the API server's service proxy,
so queue positions need no status write per position change.
"""

from __future__ import annotations

from typing import Any

from aicenter.core.placement import key_noun

from .groups import group_of_unit, is_group_unit
from .loop import Controller


class NotLeader(Exception):
    """A standby replica has no queue of its own: the leader must answer (HTTP 421)."""


def snapshot(ctl: Controller, what: str, query: dict[str, str]) -> Any:
    if not ctl.leader:
        raise NotLeader("this replica stands by; the leader schedules and answers")
    now = ctl.clock()
    if what == "queue":
        return {"generatedAt": now, "pending": _queue(ctl, now, query.get("quota"), query.get("center"))}
    if what == "job":
        return _job(ctl, now, query["namespace"], query["name"])
    if what == "centers":
        return {"generatedAt": now, "centers": _centers(ctl, query.get("center"))}
    if what == "quotas":
        return {"generatedAt": now, "quotas": _quotas(ctl)}
    raise KeyError(what)


def _queue(ctl: Controller, now: float, quota: str | None, center: str | None) -> list[dict]:
    out = []
    for i, p in enumerate(ctl.queue, 1):
        w = ctl.sched.workloads.get(p.key)
        if is_group_unit(p.key):
            g = ctl.cache.groups.get(group_of_unit(p.key))
            owner = (g.namespace, g.ident.name, g.ident.kind, g.center) if g is not None else None
        else:
            rec = ctl.cache.jobs.get(p.key.split("#", 1)[0])
            owner = (rec.namespace, rec.name, "GPUJob", rec.center) if rec is not None else None
        if w is None or owner is None:
            continue
        namespace, name, kind, in_center = owner
        if (quota and w.quota != quota) or (center and in_center != center):
            continue
        out.append(
            {
                "position": i,
                "namespace": namespace,
                "name": name,
                "kind": kind,
                "unit": p.key,
                "quota": w.quota,
                "center": in_center,
                "gpuClass": w.gpu_class or _only_class(ctl, w.quota),
                "replicas": w.replicas,
                "gpusPerReplica": w.gpus_per_replica,
                "gpus": w.gpus,
                "priority": w.priority,
                "reason": p.reason,
                "message": p.message,
                "waitingSeconds": round(max(0.0, now - w.created), 1),
            }
        )
    return out


def _only_class(ctl: Controller, quota: str) -> str | None:
    """The class a job without one will get: its quota's, when the quota has just one."""
    spec = ctl.sched.ledger.specs.get(quota)
    classes = spec.classes() if spec else []
    return classes[0] if len(classes) == 1 else None


def _job(ctl: Controller, now: float, namespace: str, name: str) -> dict:
    rec = ctl.cache.jobs[f"{namespace}/{name}"]
    entries = [e for e in _queue(ctl, now, None, None) if e["namespace"] == namespace and e["name"] == name]
    ahead: list[dict] = []
    if entries:
        first = entries[0]
        ahead = [
            e
            for e in _queue(ctl, now, first["quota"], None)
            if e["position"] < first["position"] and e["gpuClass"] in (None, first["gpuClass"])
        ][:20]
    return {
        "namespace": namespace,
        "name": name,
        "phase": rec.phase,
        "reason": rec.reason,
        "message": rec.message,
        "quota": rec.quota,
        "center": rec.center,
        "placements": [
            {"replica": r, "node": p.node, "pod": p.pod} for r, p in sorted(rec.placements.items())
        ],
        "queue": entries,
        "ahead": ahead,
    }


def _centers(ctl: Controller, only: str | None) -> list[dict]:
    out = []
    for name in sorted(ctl.cache.centers):
        if only and name != only:
            continue
        info = ctl.cache.centers[name]
        classes = []
        for pool in ctl.sched.inventory.pools_of(name):
            t = pool.totals
            levels = []
            for lvl, key in enumerate(info.core.topology_keys):
                domains = []
                for dname, d in sorted(pool.domains[lvl].items()):
                    free = sum(f * c for f, c in enumerate(d.hist))
                    total = sum(ns.node.capacity for ns in d.members)
                    used = sum(ns.used + ns.node.other_gpus for ns in d.members)
                    largest = max((f for f, c in enumerate(d.hist) if c), default=0)
                    domains.append(
                        {
                            "name": dname,
                            "nodes": len(d.members),
                            "capacity": total,
                            "allocated": min(total, used),
                            "free": free,
                            "largestFreeOnANode": largest,
                            "parent": _parent(d, lvl, len(info.core.topology_keys)),
                        }
                    )
                levels.append({"key": key, "noun": key_noun(key), "domains": domains})
            classes.append(
                {
                    "gpuClass": pool.gpu_class,
                    "nodes": t.nodes,
                    "readyNodes": t.ready,
                    "capacity": t.capacity,
                    "healthy": t.healthy,
                    "allocated": t.allocated,
                    "free": pool.free_gpus(),
                    "unhealthy": t.unhealthy,
                    "levels": levels,
                }
            )
        out.append({"name": name, "maintenance": info.spec.maintenance, "classes": classes})
    return out


def _parent(d: Any, lvl: int, levels: int) -> str | None:
    """The domain of the next looser level that holds this one (its first member's)."""
    if lvl + 1 >= levels or not d.members:
        return None
    return d.members[0].domains[lvl + 1]


def _quotas(ctl: Controller) -> list[dict]:
    ledger = ctl.sched.ledger
    out = []
    for q, spec in sorted(ledger.specs.items()):
        classes = [
            {
                "gpuClass": cls,
                "used": u.used,
                "guaranteed": u.guaranteed,
                "limit": u.limit,
                "borrowed": u.borrowed,
                "lent": ledger.lent(q, cls),
            }
            for cls, u in sorted(ledger.usage.get(q, {}).items())
        ]
        pending = sum(1 for w in ctl.sched.workloads.values() if w.quota == q and w.placement is None)
        out.append(
            {
                "name": q,
                "center": spec.center,
                "cohort": spec.cohort,
                "classes": classes,
                "pendingUnits": pending,
            }
        )
    return out
