"""Status writes: GPUJobs when what they say changed, AICenters and GPUQuotas every few seconds.

A job's status is written only when it differs from what was last written; a pending job's only
when its *reason* changes (its message carries numbers that move with every completion, and
rewriting every pending job's status on each of them costs one write per pending job). Centre and
quota status come from the core's counters, not from walks over every node, and are written only
when they changed. Conditions are ``metav1.Condition`` with ``observedGeneration``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aicenter import api
from aicenter.api import Obj

from .cache import Cache
from .events import Events
from .kube import MERGE, STRATEGIC, ApiError, Kube
from .metrics import Metrics
from .objects import rfc3339
from .records import JobRecord, write_job_status

log = logging.getLogger("aicenter.status")


def condition(ctype: str, ok: bool, reason: str, message: str, old: list[Obj], now: float, gen: int) -> Obj:
    status = "True" if ok else "False"
    prev = next((c for c in old if c.get("type") == ctype), None)
    since = prev["lastTransitionTime"] if prev and prev.get("status") == status else rfc3339(now)
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": gen,
    }


def center_status(cache: Cache, name: str, now: float) -> Obj:
    obj = cache.center_objs[name]
    info = cache.centers[name]
    gen = int(obj["metadata"].get("generation", 1))
    old = (obj.get("status") or {}).get("conditions") or []
    per_class = []
    nodes = ready = schedulable = 0
    sums = {"capacity": 0, "healthy": 0, "allocated": 0, "free": 0}
    for pool in cache.sched.inventory.pools_of(name):
        t = pool.totals
        nodes, ready, schedulable = nodes + t.nodes, ready + t.ready, schedulable + t.schedulable
        c = {"capacity": t.capacity, "healthy": t.healthy, "allocated": t.allocated, "free": pool.free_gpus()}
        per_class.append({"class": pool.gpu_class, **c})
        for k, v in c.items():
            sums[k] += v
    guaranteed = cache.sched.ledger.guaranteed_in(name)
    conds = [
        condition(
            "Ready",
            ready > 0,
            "NodesReady" if ready else "NoReadyNodes",
            f"{ready} of {nodes} nodes ready",
            old,
            now,
            gen,
        ),
        condition(
            "Degraded",
            ready < nodes or sums["healthy"] < sums["capacity"],
            "UnhealthyCapacity" if sums["healthy"] < sums["capacity"] else "AllHealthy",
            f"{sums['healthy']:,} of {sums['capacity']:,} GPUs healthy",
            old,
            now,
            gen,
        ),
        condition(
            "GuaranteesExceedHealthy",
            guaranteed > sums["healthy"],
            "Overcommitted" if guaranteed > sums["healthy"] else "Backed",
            f"quota guarantees {guaranteed:,} vs {sums['healthy']:,} healthy GPUs",
            old,
            now,
            gen,
        ),
    ]
    if info.spec.maintenance:
        conds.append(condition("Maintenance", True, "Maintenance", "no new placements", old, now, gen))
    return {
        "observedGeneration": gen,
        "nodes": {"total": nodes, "ready": ready, "schedulable": schedulable},
        "gpus": sorted(per_class, key=lambda c: c["class"]),
        "totalGPUs": sums["capacity"],
        "healthyGPUs": sums["healthy"],
        "allocatedGPUs": sums["allocated"],
        "freeGPUs": sums["free"],
        "guaranteedGPUs": guaranteed,
        "conditions": conds,
    }


def quota_status(cache: Cache, name: str, now: float, jobs: tuple[int, int]) -> Obj:
    obj = cache.quotas[name]
    gen = int(obj["metadata"].get("generation", 1))
    old = (obj.get("status") or {}).get("conditions") or []
    ledger = cache.sched.ledger
    spec = ledger.specs.get(name)
    resources, used_total, g_total = [], 0, 0
    for cls, u in sorted(ledger.usage.get(name, {}).items()):
        resources.append(
            {
                "gpuClass": cls,
                "guaranteed": u.guaranteed,
                "limit": u.limit,
                "used": u.used,
                "borrowed": u.borrowed,
                "lent": ledger.lent(name, cls),
            }
        )
        used_total += u.used
        g_total += u.guaranteed
    center = spec.center if spec else ""
    conds = []
    if center not in cache.centers:
        conds.append(
            condition("Ready", False, "CenterNotFound", f"AICenter {center} does not exist", old, now, gen)
        )
    else:
        pools = list(cache.sched.inventory.pools_of(center))
        classes = {p.gpu_class for p in pools}
        missing = [c for c in (spec.classes() if spec else []) if c not in classes]
        if missing:
            msg = f"centre {center} has no {', '.join(missing)} GPUs"
            conds.append(condition("Ready", False, "UnknownGPUClass", msg, old, now, gen))
        else:
            conds.append(condition("Ready", True, "Ready", f"serving from {center}", old, now, gen))
        healthy = sum(p.totals.healthy for p in pools)
        guaranteed = ledger.guaranteed_in(center)
        conds.append(
            condition(
                "GuaranteeBacked",
                guaranteed <= healthy,
                "Backed" if guaranteed <= healthy else "NotBackedByHealthyGPUs",
                f"centre {center}: guarantees {guaranteed:,}, healthy GPUs {healthy:,}",
                old,
                now,
                gen,
            )
        )
    admitted, pending = jobs
    return {
        "observedGeneration": gen,
        "resources": resources,
        "usedGPUs": used_total,
        "guaranteedGPUs": g_total,
        "admittedJobs": admitted,
        "pendingJobs": pending,
        "conditions": conds,
    }


def _comparable(st: Obj) -> tuple:
    conds = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in st.get("conditions") or ()]
    return repr(({k: v for k, v in st.items() if k != "conditions"}, conds))


class StatusWriter:
    def __init__(
        self, cache: Cache, kube: Kube, metrics: Metrics, spawn: Callable, events: Events, clock: Callable
    ) -> None:
        self.cache, self.kube, self.metrics, self.spawn = cache, kube, metrics, spawn
        self.events, self.clock = events, clock
        self._written: dict[str, tuple] = {}  # centre/quota status path → what was written
        self._flying: set[str] = set()
        self._pod_written: dict[str, str] = {}  # pod key → the PodScheduled reason last written

    def flush_jobs(self) -> None:
        """Write the statuses of jobs that changed (not those with writes of their own in flight)."""
        keys, self.cache.status_dirty = self.cache.status_dirty, set()
        for key in sorted(keys):
            rec = self.cache.jobs.get(key)
            if rec is None:
                continue
            if rec.busy or key in self._flying:
                self.cache.status_dirty.add(key)
                continue
            if rec.written == rec.status():
                continue
            self._flying.add(key)
            self.spawn(self._write_job(rec))

    async def _write_job(self, rec: JobRecord) -> None:
        try:
            if await write_job_status(self.kube, rec, force=False):
                self.metrics.status_writes.inc()
        except ApiError as e:
            if e.status != 404:
                log.info("status of %s: %s", rec.key, e)
                self.cache.status_dirty.add(rec.key)
        finally:
            self._flying.discard(rec.key)

    def flush_pods(self) -> None:
        """Waiting pods we schedule for others say why, where people look (as kube-scheduler does):
        ``PodScheduled=False`` with the reason, and a ``FailedScheduling`` Event — when it changes."""
        for g in self.cache.groups.values():
            if not g.reason or g.busy:
                continue
            text = f"{g.reason}: {g.message}"
            for key in g.members:
                p = self.cache.pods.get(key)
                if p is None or p.node or not p.live or key in g.binding:
                    continue
                if p.scheduled_reason == text or self._pod_written.get(key) == text or key in self._flying:
                    continue
                self._flying.add(key)
                self._pod_written[key] = text
                self.spawn(self._write_pod(key, g.reason, g.message))
        if len(self._pod_written) > 100_000:
            self._pod_written = {k: v for k, v in self._pod_written.items() if k in self.cache.pods}

    async def _write_pod(self, key: str, reason: str, message: str) -> None:
        ns, name = key.split("/", 1)
        cond = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": f"{reason}: {message}",
            "lastTransitionTime": rfc3339(self.clock()),
        }
        try:
            await self.kube.run(
                "PATCH",
                f"/api/v1/namespaces/{ns}/pods/{name}/status",
                body={"status": {"conditions": [cond]}},
                content_type=STRATEGIC,
            )
            self.metrics.status_writes.inc()
            self.events.pod(ns, name, "Warning", "FailedScheduling", "Schedule", f"{reason}: {message}")
        except ApiError as e:
            self._pod_written.pop(key, None)
            if e.status != 404:
                log.info("condition of pod %s: %s", key, e)
        finally:
            self._flying.discard(key)

    async def refresh_sites(self, now: float) -> None:
        """AICenter and GPUQuota status, written when they changed."""
        per_q: dict[str, list[int]] = {}
        for rec in self.cache.jobs.values():
            if rec.quota and not rec.finished:
                per_q.setdefault(rec.quota, [0, 0])[0 if rec.placements else 1] += 1
        for g in self.cache.groups.values():
            if g.quota:
                per_q.setdefault(g.quota, [0, 0])[0 if g.held else 1] += 1
        todo = [
            (f"{api.GROUP_PATH}/{api.PLURAL_AICENTERS}/{n}/status", center_status(self.cache, n, now))
            for n in sorted(self.cache.center_objs)
            if n in self.cache.centers
        ]
        todo += [
            (
                f"{api.GROUP_PATH}/{api.PLURAL_GPUQUOTAS}/{n}/status",
                quota_status(self.cache, n, now, tuple(per_q.get(n, (0, 0)))),  # type: ignore[arg-type]
            )
            for n in sorted(self.cache.quotas)
        ]
        for path, st in todo:
            cmp = _comparable(st)
            if self._written.get(path) == cmp:
                continue
            try:
                await self.kube.run("PATCH", path, body={"status": st}, content_type=MERGE)
                self._written[path] = cmp
                self.metrics.status_writes.inc()
            except ApiError as e:
                log.info("status %s: %s", path, e)


def gauge_lines(cache: Cache, leader: bool, version: str) -> list[str]:
    """The gauges: leadership, queue depth, quota use and borrowing, centre GPUs by state (counters)."""
    lines = [
        "# HELP aicenter_build_info The operator's version",
        "# TYPE aicenter_build_info gauge",
        f'aicenter_build_info{{version="{version}"}} 1',
        "# HELP aicenter_leader 1 if this replica holds the scheduling lease",
        "# TYPE aicenter_leader gauge",
        f"aicenter_leader {1 if leader else 0}",
        "# HELP aicenter_queue_depth Pending workloads",
        "# TYPE aicenter_queue_depth gauge",
        f"aicenter_queue_depth {cache.sched.pending_count()}",
    ]
    per_q: dict[str, list[int]] = {}
    for rec in cache.jobs.values():
        if rec.quota is None or rec.finished:
            continue
        c = per_q.setdefault(rec.quota, [0, 0, 0, 0])
        i = 0 if rec.placements else 2
        c[i] += 1
        c[i + 1] += rec.spec.total_gpus
    for g in cache.groups.values():  # others' pod groups count as jobs of their quota too
        if g.quota is None:
            continue
        c = per_q.setdefault(g.quota, [0, 0, 0, 0])
        gpus = sum(p.requests.get(api.DEFAULT_GPU_RESOURCE, 0) for k in g.members if (p := cache.pods.get(k)))
        i = 0 if g.held else 2
        c[i] += 1
        c[i + 1] += gpus
    lines += [
        "# HELP aicenter_quota_jobs Jobs per quota, admitted or pending",
        "# TYPE aicenter_quota_jobs gauge",
        "# HELP aicenter_quota_gpus GPUs per quota: admitted or pending jobs' GPUs",
        "# TYPE aicenter_quota_gpus gauge",
    ]
    for q, (aj, ag, pj, pg) in sorted(per_q.items()):
        lines += [
            f'aicenter_quota_jobs{{quota="{q}",state="admitted"}} {aj}',
            f'aicenter_quota_jobs{{quota="{q}",state="pending"}} {pj}',
            f'aicenter_quota_gpus{{quota="{q}",state="admitted"}} {ag}',
            f'aicenter_quota_gpus{{quota="{q}",state="pending"}} {pg}',
        ]
    ledger = cache.sched.ledger
    lines += [
        "# HELP aicenter_quota_class_gpus GPUs of a quota per class: used, guaranteed, limit, borrowed, lent",
        "# TYPE aicenter_quota_class_gpus gauge",
    ]
    for q in sorted(ledger.usage):
        spec = ledger.specs.get(q)
        where = f'center="{spec.center if spec else ""}",cohort="{(spec.cohort or "") if spec else ""}",'
        for cls, u in sorted(ledger.usage[q].items()):
            lab = f'{where}quota="{q}",gpu_class="{cls}"'
            for state, v in (
                ("used", u.used),
                ("guaranteed", u.guaranteed),
                ("limit", u.limit),
                ("borrowed", u.borrowed),
                ("lent", ledger.lent(q, cls)),
            ):
                lines.append(f'aicenter_quota_class_gpus{{{lab},state="{state}"}} {v}')
    lines += [
        "# HELP aicenter_center_gpus GPUs of a centre per class: capacity, allocated, free, unhealthy",
        "# TYPE aicenter_center_gpus gauge",
    ]
    for (c, cls), pool in sorted(cache.sched.inventory.pools.items()):
        t = pool.totals
        lab = f'center="{c}",gpu_class="{cls}"'
        for state, v in (
            ("capacity", t.capacity),
            ("allocated", t.allocated),
            ("free", pool.free_gpus()),
            ("unhealthy", t.unhealthy),
        ):
            lines.append(f'aicenter_center_gpus{{{lab},state="{state}"}} {v}')
    return lines
