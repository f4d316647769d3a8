"""The read-only visibility API: the queue in the order the scheduler considers it, one job's
place in it and why, the centres' racks and cliques, the quotas. Served on the operator's HTTP port
(``/visibility/v1/...``) and reached by ``kubectl aicenter`` through the API server's service proxy,
so queue positions need no status write per position change.
"""

from __future__ import annotations

from typing import Any

from aicenter.core.placement import key_noun

from .loop import Controller


def snapshot(ctl: Controller, what: str, query: dict[str, str]) -> Any:
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
        rec = ctl.cache.jobs.get(p.key.split("#", 1)[0])
        if w is None or rec is None:
            continue
        if (quota and w.quota != quota) or (center and rec.center != center):
            continue
        out.append(
            {
                "position": i,
                "namespace": rec.namespace,
                "name": rec.name,
                "unit": p.key,
                "quota": w.quota,
                "center": rec.center,
                "gpuClass": w.gpu_class,
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
