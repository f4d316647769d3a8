"""A job's life from what its pods say: running, succeeded, failed and restarted, past its deadline.

For each unit of a job (the gang, or each independent replica) whose placements are complete:

- every pod Succeeded → the unit is done (its GPUs were the placement's; the pods hold nothing);
- a pod Failed, or gone after it was seen → the unit restarts (a gang restarts whole), counted
  against ``backoffLimit``; past it the job fails;
- the kubelet refused a pod at admission (``OutOfnvidia.com/gpu``, ``UnexpectedAdmissionError``, a
  node affinity it no longer meets) → the unit is placed again, not counted as a restart;
- a pod that kube-scheduler binds for us and that stays unbound past the bind timeout → placed again
  elsewhere, with kube-scheduler's reason;
- a pod missing that was never seen (a restart of the operator between the write-ahead and the
  create) → created again.

A restart or a finish clears the placements at once; the old pods are then nobody's and hold their
room until they are gone (see :mod:`aicenter.controller.cache`). Every such pod of ours — of an
earlier attempt, of a finished or deleted job — is an *orphan*, and :meth:`Lifecycle.sweep` deletes
it.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from typing import Protocol

from aicenter import api
from aicenter.core import Evict

from .cache import Cache, PodRec
from .config import Settings
from .events import Events
from .metrics import Metrics
from .records import JobRecord

log = logging.getLogger("aicenter.lifecycle")
# status.reason of a pod the kubelet refused at admission (the scheduler's fault, not the workload's)
KUBELET_REFUSALS = ("UnexpectedAdmissionError", "NodeAffinity", "NodeSelector", "Unschedulable", "NodeLost")


class Writes(Protocol):
    def delete(self, key: str, uid: str | None = None) -> None: ...
    def repair(self, rec: JobRecord, reps: list[int]) -> None: ...
    def delete_job(self, rec: JobRecord) -> None: ...


def refused_by_kubelet(p: PodRec) -> bool:
    return p.phase == "Failed" and (p.reason.startswith("OutOf") or p.reason in KUBELET_REFUSALS)


class Lifecycle:
    def __init__(
        self,
        cache: Cache,
        writes: Writes,
        events: Events,
        metrics: Metrics,
        settings: Settings,
        clock: Callable[[], float],
    ) -> None:
        self.cache, self.writes, self.events, self.metrics = cache, writes, events, metrics
        self.settings, self.clock = settings, clock
        self._ttl: list[tuple[float, str, str]] = []  # (due, job key, uid)

    # -- one job ------------------------------------------------------------------------------------

    def reconcile(self, rec: JobRecord, now: float) -> None:
        if rec.finished:
            self._schedule_ttl(rec)
            return
        if rec.respec:
            rec.respec = False
            self.cache.resolve(rec)
            self.cache.sync_workloads(rec)
        if rec.retry_at and now >= rec.retry_at:
            rec.retry_at = 0.0
            self.cache.sync_workloads(rec)
        deadline = rec.spec.active_deadline_s
        if deadline and rec.admitted_at and rec.placements and now - rec.admitted_at > deadline:
            self.finish(rec, api.PHASE_FAILED, "DeadlineExceeded", f"active for more than {deadline:g}s", now)
            return
        repair: list[int] = []
        running = 0
        for key in rec.unit_keys():
            reps = rec.unit_replicas(key)
            if all(r in rec.done for r in reps) or not all(r in rec.placements for r in reps):
                continue
            states: list[tuple[int, PodRec | None]] = []
            for r in reps:
                p = self.cache.pods.get(f"{rec.namespace}/{rec.placements[r].pod}")
                if p is not None and not self.cache.claimed(p):
                    p = None  # a pod of that name that is not this placement's
                if p is not None:
                    rec.seen.add(p.key)
                states.append((r, p))
            refused = [r for r, p in states if p is not None and refused_by_kubelet(p)]
            if refused:
                p0 = states[reps.index(refused[0])][1]
                assert p0 is not None
                self.replace(
                    rec,
                    key,
                    "NodeRejected",
                    f"the kubelet on {p0.node} refused replica {refused[0]}: {p0.reason}",
                    now,
                )
                continue
            unbound = [
                (r, p)
                for r, p in states
                if p is not None
                and not p.node
                and p.unschedulable
                and now - p.created > self.settings.bind_timeout
            ]
            if unbound:
                r, p = unbound[0]
                self.replace(
                    rec,
                    key,
                    "DelegatedBindFailed",
                    f"kube-scheduler could not bind replica {r} to its node: {p.unschedulable}",
                    now,
                )
                continue
            failed = [
                r
                for r, p in states
                if (p is not None and p.phase == "Failed")
                or (p is None and f"{rec.namespace}/{rec.placements[r].pod}" in rec.seen)
            ]
            if failed:
                gone = states[reps.index(failed[0])][1] is None
                what = "was deleted" if gone else "failed"
                self.restart(rec, key, "ReplicaFailed", f"replica {failed[0]} {what}", now)
                continue
            if all(p is not None and p.phase == "Succeeded" for _, p in states):
                rec.done |= set(reps)
                for r in reps:
                    rec.placements.pop(r, None)
                self.cache.sched.remove_workload(key)
                self.cache.recount_job(rec)
                continue
            repair += [  # never seen, and not created by us a moment ago either (the watch lags)
                r
                for r, p in states
                if p is None and f"{rec.namespace}/{rec.placements[r].pod}" not in self.cache.inflight
            ]
            running += sum(1 for _, p in states if p is not None and p.phase in ("Running", "Succeeded"))
        if len(rec.done) == rec.replicas:
            self.finish(
                rec, api.PHASE_SUCCEEDED, "Completed", f"all {rec.replicas} replica(s) succeeded", now
            )
            return
        placed = len(rec.placements)
        if running and rec.phase == api.PHASE_ADMITTED and running >= placed and (rec.spec.gang or placed):
            rec.phase, rec.reason = api.PHASE_RUNNING, "Running"
            rec.message = f"{running} replica(s) running"
            waiting = rec.replicas - placed - len(rec.done)
            if waiting:
                rec.message += f"; {waiting} waiting for GPUs"
            rec.started_at = rec.started_at or now
            rec.set_condition("Running", True, "Running", rec.message, now)
            self.cache.status_dirty.add(rec.key)
        if repair and not rec.busy:
            self.writes.repair(rec, repair)

    def _stop(self, rec: JobRecord, key: str) -> list[str]:
        """Clear a unit's placements; its pods become orphans (deleted, counted until gone)."""
        doomed = [
            f"{rec.namespace}/{rec.placements.pop(r).pod}"
            for r in rec.unit_replicas(key)
            if r in rec.placements
        ]
        self.cache.recount_job(rec)
        for k in doomed:
            self.writes.delete(k)
        return doomed

    def replace(self, rec: JobRecord, key: str, reason: str, message: str, now: float) -> None:
        """Place a unit again elsewhere (the placement failed, not the workload)."""
        self._stop(rec, key)
        if not rec.placements:
            rec.phase = api.PHASE_PENDING
        rec.reason, rec.message = reason, f"{message}; placing it again"
        rec.set_condition("Admitted", False, reason, rec.message, now)
        self.cache.sync_workloads(rec)
        self.events.job(rec.namespace, rec.name, rec.uid, "Warning", reason, "Schedule", rec.message)
        self.cache.status_dirty.add(rec.key)

    def restart(self, rec: JobRecord, key: str, reason: str, message: str, now: float) -> None:
        """Stop a unit and queue it again (one retry), or fail the job past its backoff limit."""
        self._stop(rec, key)
        rec.restarts += 1
        self.metrics.restarts.inc()
        limit = rec.spec.backoff_limit
        if rec.restarts > limit:
            self.finish(
                rec,
                api.PHASE_FAILED,
                "BackoffLimitExceeded",
                f"{message}; restarted {rec.restarts - 1} time(s), backoffLimit {limit}",
                now,
            )
            return
        if not rec.placements:
            rec.phase = api.PHASE_PENDING
        rec.reason, rec.message = reason, f"{message}; restarting (retry {rec.restarts} of {limit})"
        rec.set_condition("Admitted", False, reason, rec.message, now)
        if not rec.placements:
            rec.set_condition("Running", False, reason, rec.message, now)
        self.cache.sync_workloads(rec)
        self.events.job(rec.namespace, rec.name, rec.uid, "Warning", reason, "Restart", rec.message)
        self.cache.status_dirty.add(rec.key)

    def evicted(self, rec: JobRecord, ev: Evict, now: float) -> None:
        """The core took a unit off unhealthy nodes (it is already pending there)."""
        self.restart(rec, ev.key, ev.reason, ev.message, now)

    def finish(self, rec: JobRecord, phase: str, reason: str, message: str, now: float) -> None:
        live = [k for k in self.cache.by_job.get(rec.uid, ()) if self.cache.pods[k].live]
        self.cache.finish(rec, phase, reason, message, now)
        for k in live:
            self.writes.delete(k)
        etype = "Normal" if phase == api.PHASE_SUCCEEDED else "Warning"
        self.events.job(rec.namespace, rec.name, rec.uid, etype, reason, "Finish", message)
        self.metrics.finished.labels(phase=phase).inc()
        self._schedule_ttl(rec)

    # -- every cycle ------------------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Delete orphans (pods of ours no placement claims); delete finished jobs past their TTL."""
        for key in list(self.cache.orphans):
            if key not in self.cache.deleting:
                p = self.cache.pods.get(key)
                if p is not None and p.live:
                    log.info("deleting orphan pod %s (job uid %s, attempt %d)", key, p.job_uid, p.attempt)
                    self.metrics.orphans.inc()
                    self.writes.delete(key, p.uid)
        while self._ttl and self._ttl[0][0] <= now:
            _, key, uid = heapq.heappop(self._ttl)
            rec = self.cache.jobs.get(key)
            if rec is not None and rec.uid == uid and rec.finished:
                self.writes.delete_job(rec)

    def _schedule_ttl(self, rec: JobRecord) -> None:
        ttl = rec.spec.ttl_after_finished_s
        if ttl is not None and rec.finished_at is not None and not rec.ttl_scheduled:
            rec.ttl_scheduled = True
            heapq.heappush(self._ttl, (rec.finished_at + ttl, rec.key, rec.uid))
