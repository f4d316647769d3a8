"""Applying decisions: admissions, preemptions, and deletes that last until the pods are gone.

An admission is applied in this order, and undone as a whole if any step fails:

1. the job's status is written with the new attempt and its placements (write-ahead: a restarted
   operator rebuilds the reservation from it);
2. each replica's pod is created with its node set — once the node, *as observed*, has room for it
   (every bound, live pod counted, terminating ones included, and creates in flight): a preemptor
   waits here for its victims' pods to be gone;
3. one ``Scheduled`` Event.

A failure rolls back: the placements go, the core forgets the admission, every pod this attempt may
have created is deleted, and the job waits (backing off) or, for an error that retrying cannot fix
(an invalid template, a Pod Security rejection), fails. The next attempt has new pod names.

A delete is retried with backoff until the pod is gone from the cache; while it lasts the pod is
counted as draining on its node (it holds room, it never causes an eviction).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aicenter import api
from aicenter.core import Admit, Preempt

from . import pods as podlib
from .cache import Cache, InFlight
from .config import Settings
from .events import Events
from .groups import GroupRecord, size_from_owner
from .kube import ApiError, Kube
from .metrics import Metrics
from .objects import pod_requests, rfc3339
from .records import JobRecord, write_job_status

log = logging.getLogger("aicenter.apply")
Spawn = Callable[[Coroutine[Any, Any, Any]], asyncio.Task]


class AdmissionFailed(Exception):
    def __init__(self, reason: str, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.reason, self.message, self.permanent = reason, message, permanent


def classify(e: Exception) -> tuple[bool, str, str]:
    """(permanent, reason, message) of a failed admission."""
    if isinstance(e, AdmissionFailed):
        return e.permanent, e.reason, e.message
    assert isinstance(e, ApiError)
    msg = e.message or str(e)
    if e.status in (400, 422):
        return True, "PodCreateFailed", f"the API server rejected a replica pod: {msg}"
    if e.status == 403 and "PodSecurity" in msg:
        return True, "PodCreateFailed", f"Pod Security admission rejected a replica pod: {msg}"
    if e.status == 403 and "exceeded quota" in msg:
        return (
            False,
            "ResourceQuotaExceeded",
            f"a ResourceQuota of the namespace rejected a replica pod: {msg}",
        )
    return False, "ApplyFailed", f"could not start replicas: {e}"


# A failed request that may still have been applied (no answer, or a proxy's timeout): a pod create
# that failed so keeps its room reserved until the pod is seen gone.
AMBIGUOUS = (0, 500, 504)


def backoff_s(failures: int) -> float:
    return min(300.0, 2.0 ** min(failures, 9))


class Applier:
    def __init__(
        self,
        cache: Cache,
        kube: Kube,
        settings: Settings,
        metrics: Metrics,
        events: Events,
        clock: Callable[[], float],
        spawn: Spawn,
        wake: Callable[[], None],
    ) -> None:
        self.cache, self.kube, self.settings, self.metrics = cache, kube, settings, metrics
        self.events, self.clock, self.spawn, self.wake = events, clock, spawn, wake
        self.deletes: dict[str, asyncio.Task] = {}  # pod deletes and evictions in flight
        self.job_deletes: set[str] = set()
        self.reading: set[str] = set()  # owner uids being read

    # -- status ---------------------------------------------------------------------------------

    async def write_status(self, rec: JobRecord) -> None:
        await write_job_status(self.kube, rec)
        self.cache.status_dirty.discard(rec.key)

    # -- admission ------------------------------------------------------------------------------

    def admit(self, rec: JobRecord, a: Admit, now: float, after: list[asyncio.Task]) -> None:
        reps = rec.place(a.key, a.nodes)
        attempt = rec.attempt
        rec.gpu_class = a.gpu_class
        rec.admitted_at = rec.admitted_at if rec.placements and rec.admitted_at and not rec.spec.gang else now
        if rec.phase == api.PHASE_PENDING:
            rec.phase = api.PHASE_ADMITTED
        borrowed = f", borrowing {a.borrowed:,} from its cohort" if a.borrowed else ""
        rec.reason = "Admitted"
        rec.message = (
            f"admitted to {rec.center}: {len(reps)} × {rec.spec.gpus_per_replica} {a.gpu_class} on "
            f"{len(set(a.nodes))} node(s){borrowed}"
        )
        rec.set_condition("Admitted", True, "Admitted", rec.message, now)
        rec.busy += 1
        self.cache.recount_job(rec)
        self.cache.track(rec)
        self.metrics.admitted.inc()
        self.spawn(self._admit(rec, a.key, reps, attempt, after))

    async def _admit(
        self, rec: JobRecord, key: str, reps: list[int], attempt: int, after: list[asyncio.Task]
    ) -> None:
        created: list[str] = []
        t0 = self.clock()
        try:
            if after:  # victims' statuses first: a restart must never see both holding the GPUs
                await asyncio.gather(*after, return_exceptions=True)
            await self.write_status(rec)
            await self.create_pods(rec, reps, attempt, created)
            nodes = sorted({rec.placements[r].node for r in reps if r in rec.placements})
            shown = ", ".join(nodes[:5]) + (" …" if len(nodes) > 5 else "")
            self.events.job(
                rec.namespace,
                rec.name,
                rec.uid,
                "Normal",
                "Scheduled",
                "Schedule",
                f"{rec.message}; on {shown}",
            )
            rec.failures = 0
            self.metrics.admission_seconds.observe(max(0.0, t0 - rec.created))
        except (ApiError, AdmissionFailed) as e:
            self._rollback(rec, key, reps, attempt, created, e)
        finally:
            rec.busy -= 1
            self.cache.dirty.add(rec.key)
            self.wake()

    async def create_pods(
        self, rec: JobRecord, reps: list[int], attempt: int | None, created: list[str]
    ) -> None:
        """Create the replicas' pods (those missing), each once its node has room; ``attempt`` None:
        whatever attempt the placements have (a repair after a restart)."""
        if rec.replicas > 1:
            try:
                await self.kube.run(
                    "POST",
                    f"/api/v1/namespaces/{rec.namespace}/services",
                    body=podlib.headless_service(rec.obj),
                )
            except ApiError as e:
                if e.status != 409:
                    raise
        center = self.cache.centers.get(rec.center or "")
        resource = center.spec.gpu_resource if center else api.DEFAULT_GPU_RESOURCE
        results = await asyncio.gather(
            *(self._create_one(rec, r, attempt, resource, created) for r in reps), return_exceptions=True
        )
        for res in results:
            if isinstance(res, BaseException):
                raise res

    def _placement(self, rec: JobRecord, r: int, attempt: int | None):
        p = rec.placements.get(r)
        if p is None or (attempt is not None and p.attempt != attempt):
            raise AdmissionFailed("Superseded", f"replica {r} was preempted or restarted meanwhile")
        return p

    async def _create_one(
        self, rec: JobRecord, r: int, attempt: int | None, resource: str, created: list[str]
    ) -> None:
        p = self._placement(rec, r, attempt)
        key = f"{rec.namespace}/{p.pod}"
        if key in self.cache.inflight:
            return  # created a moment ago (or perhaps, if the answer was lost): not twice
        have = self.cache.pods.get(key)
        if have is not None:
            if have.job_uid == rec.uid and have.attempt == p.attempt and have.replica == r:
                return  # already there (a repair, or a retry after a lost response)
            raise AdmissionFailed("NameConflict", f"pod {key} exists and is not replica {r} of this job")
        delegate = self.settings.delegate_scheduler if rec.delegated else None
        body = podlib.replica_pod(
            rec.obj,
            r,
            p.attempt,
            p.node,
            rec.spec.gpus_per_replica,
            self.settings.scheduler_name,
            resource,
            delegate,
        )
        body["metadata"]["name"] = p.pod
        requests = pod_requests(body["spec"])
        deadline = self.clock() + self.settings.room_timeout
        while not self.cache.room(p.node, requests, exclude=key):
            left = deadline - self.clock()
            if left <= 0:
                raise AdmissionFailed(
                    "NodeBusy",
                    f"node {p.node} did not have room for replica {r} within "
                    f"{self.settings.room_timeout:.0f}s (pods still terminating there, or taken by another "
                    "scheduler)",
                )
            await self.cache.wait_change(min(5.0, left))
            p = self._placement(rec, r, attempt)
        flight = self.cache.inflight[key] = InFlight(p.node, requests)
        log.debug("creating %s on %s", key, p.node)
        created.append(key)
        try:
            await self._post_pod(rec, r, p, key, body, created)
        finally:
            flight.creating, flight.since = False, self.clock()

    async def _post_pod(self, rec: JobRecord, r: int, p, key: str, body: dict, created: list[str]) -> None:
        try:
            await self.kube.run("POST", f"/api/v1/namespaces/{rec.namespace}/pods", body=body)
            self.metrics.pods_created.inc()
        except ApiError as e:
            if e.status != 409:
                if e.status not in AMBIGUOUS:  # surely not created: the reservation can go
                    self.cache.inflight.pop(key, None)
                raise  # else it may exist: reserved until a delete finds it gone
            # It exists: ours (a create whose answer was lost, repeated) or another pod of that name.
            # The watch tells which (no GET: the operator has no right to read single pods).
            until = self.clock() + 30.0
            while key not in self.cache.pods and self.clock() < until:
                await self.cache.wait_change(1.0)
            have = self.cache.pods.get(key)
            mine = (
                have is not None
                and have.job_uid == rec.uid
                and have.attempt == p.attempt
                and have.replica == r
            )
            if not mine:
                self.cache.inflight.pop(key, None)
                created.remove(key)
                raise AdmissionFailed(
                    "NameConflict", f"pod {key} exists and is not replica {r} of this job"
                ) from None

    def _rollback(
        self, rec: JobRecord, key: str, reps: list[int], attempt: int, created: list[str], err: Exception
    ) -> None:
        self.metrics.admission_errors.inc()
        now = self.clock()
        permanent, reason, message = classify(err)
        log.warning("admitting %s (attempt %d) failed: %s", key, attempt, message)
        mine = [r for r in reps if (p := rec.placements.get(r)) is not None and p.attempt == attempt]
        for r in mine:
            rec.placements.pop(r)
        if mine:
            self.cache.sched.forget(key)
        self.cache.recount_job(rec)
        for pod_key in created:
            self.delete(pod_key)
        if permanent:
            self.cache.finish(rec, api.PHASE_FAILED, reason, message, now)
            for pod_key in list(self.cache.by_job.get(rec.uid, ())):
                self.delete(pod_key)
        elif mine:
            rec.failures += 1
            wait = backoff_s(rec.failures)
            rec.retry_at = now + wait
            if not rec.placements:
                rec.phase = api.PHASE_PENDING
            rec.reason, rec.message = reason, f"{message}; retrying in {wait:.0f}s"
            rec.set_condition("Admitted", False, reason, rec.message, now)
            self.cache.sync_workloads(rec)
        self.events.job(rec.namespace, rec.name, rec.uid, "Warning", reason, "Schedule", rec.message)
        self.cache.status_dirty.add(rec.key)

    def repair(self, rec: JobRecord, reps: list[int]) -> None:
        """Create the missing pods of placements already made (after a restart)."""
        rec.busy += 1

        async def run() -> None:
            created: list[str] = []
            try:
                await self.create_pods(rec, reps, None, created)
            except (ApiError, AdmissionFailed) as e:
                log.warning("repairing %s: %s", rec.key, e)
            finally:
                rec.busy -= 1
                self.cache.dirty.add(rec.key)
                self.wake()

        self.spawn(run())

    # -- preemption -----------------------------------------------------------------------------

    def preempt(self, rec: JobRecord, p: Preempt, now: float) -> asyncio.Task:
        """Stop a victim: its placements go now (its pods hold their room until gone)."""
        reps = rec.unit_replicas(p.key)
        doomed = [rec.placements.pop(r).pod for r in reps if r in rec.placements]
        rec.preemptions = [
            *rec.preemptions,
            {"time": rfc3339(now), "preemptor": p.preemptor, "reason": p.message},
        ]
        if not rec.placements:
            rec.phase = api.PHASE_PENDING
            rec.set_condition("Running", False, p.reason, p.message, now)
        rec.reason, rec.message = p.reason, p.message
        rec.set_condition("Admitted", False, p.reason, p.message, now)
        self.cache.recount_job(rec)
        self.cache.track(rec)
        self.metrics.preemptions.inc()
        self.events.job(rec.namespace, rec.name, rec.uid, "Warning", "Preempted", "Preempt", p.message)
        for pod in doomed:
            self.delete(f"{rec.namespace}/{pod}")
        rec.busy += 1

        async def write() -> None:
            try:
                await self.write_status(rec)
            except ApiError as e:
                log.warning("status of preempted %s: %s", p.key, e)
                self.cache.status_dirty.add(rec.key)
            finally:
                rec.busy -= 1
                self.cache.dirty.add(rec.key)

        return self.spawn(write())

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds`` by the controller's clock (woken by pod changes and every cycle)."""
        until = self.clock() + seconds
        while self.clock() < until:
            await self.cache.wait_change(min(seconds, 1.0))

    # -- pods of others' workloads: bind, evict, read owners ---------------------------------------

    def bind_group(self, g: GroupRecord, a: Admit, now: float) -> None:
        """Bind a group's waiting pods to the admitted nodes (each once its node has room)."""
        pods = list(g.chosen)
        if len(pods) != len(a.nodes):  # the group changed since it was presented: look again
            self.cache.sched.forget(a.key)
            self.cache.dirty_groups.add(g.key)
            return
        g.binding.update(zip(pods, a.nodes, strict=True))
        g.busy += 1
        self.metrics.admitted.inc()
        self.spawn(self._bind(g, a.key, list(zip(pods, a.nodes, strict=True)), now))

    async def _bind(self, g: GroupRecord, key: str, pairs: list[tuple[str, str]], t0: float) -> None:
        try:
            results = await asyncio.gather(*(self._bind_one(p, n) for p, n in pairs), return_exceptions=True)
            failed = []
            for (pod, node), res in zip(pairs, results, strict=True):
                if isinstance(res, BaseException):
                    g.binding.pop(pod, None)
                    failed.append((pod, res))
                else:
                    ns, name = pod.split("/", 1)
                    self.events.pod(
                        ns,
                        name,
                        "Normal",
                        "Scheduled",
                        "Bind",
                        f"bound to {node} ({g.ident.kind} {g.ident.name}, quota {g.quota})",
                    )
            if failed:
                self.metrics.admission_errors.inc()
                g.failures += 1
                g.retry_at = self.clock() + backoff_s(g.failures)
                pod, err = failed[0]
                g.reason, g.message = "BindFailed", f"binding {pod} failed: {err}; retrying"
                log.warning("binding pods of %s: %d failed, e.g. %s: %s", g.key, len(failed), pod, err)
            else:
                g.failures = 0
                self.metrics.admission_seconds.observe(
                    max(
                        0.0,
                        t0
                        - min(
                            (self.cache.pods[p].created for p, _ in pairs if p in self.cache.pods), default=t0
                        ),
                    )
                )
        finally:
            g.busy -= 1
            self.cache.sched.remove_workload(key)
            self.cache.dirty_groups.add(g.key)
            self.wake()

    async def _bind_one(self, pod_key: str, node: str) -> None:
        p = self.cache.pods.get(pod_key)
        if p is None or p.node:
            raise AdmissionFailed("Gone", f"pod {pod_key} is gone or bound already")
        if pod_key in self.cache.inflight:  # an earlier binding's answer was lost: never bind it twice
            raise AdmissionFailed("Unresolved", f"an earlier binding of {pod_key} is not resolved yet")
        deadline = self.clock() + self.settings.room_timeout
        while not self.cache.room(node, p.requests, exclude=pod_key):
            if self.clock() >= deadline:
                raise AdmissionFailed(
                    "NodeBusy", f"node {node} did not have room within {self.settings.room_timeout:.0f}s"
                )
            await self.cache.wait_change(min(5.0, deadline - self.clock()))
            p = self.cache.pods.get(pod_key)
            if p is None or p.node:
                raise AdmissionFailed("Gone", f"pod {pod_key} is gone or bound already")
        flight = self.cache.inflight[pod_key] = InFlight(node, p.requests)
        log.debug("binding %s to %s", pod_key, node)
        ns, name = pod_key.split("/", 1)
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": ns, "uid": p.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        try:
            await self.kube.run("POST", f"/api/v1/namespaces/{ns}/pods/{name}/binding", body=body)
            self.metrics.pods_bound.inc()
        except ApiError as e:
            if e.status not in (*AMBIGUOUS, 409):  # 409: bound already (where, the watch will say)
                self.cache.inflight.pop(pod_key, None)
            raise
        finally:
            flight.creating, flight.since = False, self.clock()

    def evict_group(self, g: GroupRecord, key: str, reason: str, message: str) -> None:
        """Stop a group's running pods through the Eviction API (PodDisruptionBudgets apply); their
        controllers make new pods, which wait for room. The core forgets the unit at once."""
        pods = [k for k in (g.held if key == g.run_key else g.binding) if k in self.cache.pods]
        self.cache.sched.remove_workload(key)
        g.evicting |= set(pods)
        self.metrics.preemptions.inc()
        for k in pods:
            self.cache.recount(k)
            ns, name = k.split("/", 1)
            self.events.pod(ns, name, "Warning", reason, "Preempt", message)
            self.evict(k)
        self.cache.dirty_groups.add(g.key)

    def evict(self, key: str) -> None:
        if key in self.deletes:
            return
        p = self.cache.pods.get(key)
        self.deletes[key] = self.spawn(self._evict(key, p.uid if p else None))

    async def _evict(self, key: str, uid: str | None) -> None:
        ns, name = key.split("/", 1)
        body: dict[str, Any] = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": ns},
            "deleteOptions": {"preconditions": {"uid": uid}} if uid else {},
        }
        pause = 1.0
        try:
            while True:
                p = self.cache.pods.get(key)
                if p is None or (uid and p.uid != uid):
                    return
                if p.deleting:
                    await self.cache.wait_change(30.0)
                    continue
                try:
                    await self.kube.run("POST", f"/api/v1/namespaces/{ns}/pods/{name}/eviction", body=body)
                    self.metrics.pods_deleted.inc()
                    await self.cache.wait_change(30.0)
                except ApiError as e:
                    if e.status in (404, 409):
                        return
                    why = "a PodDisruptionBudget allows no eviction now" if e.status == 429 else str(e)
                    log.info("evicting %s (retrying in %.0fs): %s", key, pause, why)
                    self.metrics.delete_errors.inc()
                    await self.pause(pause)
                    pause = min(pause * 2, 60.0)
        finally:
            self.deletes.pop(key, None)

    def read_owner(self, g: GroupRecord) -> None:
        """Read a group's size from the object that owns its pods (a Job, a PyTorchJob, …), once."""
        owner = g.ident.owner
        if owner is None or owner.uid in self.cache.owner_sizes or owner.uid in self.reading:
            return
        self.reading.add(owner.uid)

        async def run() -> None:
            try:
                obj = await self.kube.run("GET", owner.path(g.namespace))
                self.cache.owner_sizes[owner.uid] = size_from_owner(g.ident, obj)
            except ApiError as e:
                self.cache.owner_sizes[owner.uid] = f"cannot read {owner.kind} {owner.name}: {e}"
            finally:
                self.reading.discard(owner.uid)
                for other in self.cache.groups.values():
                    if other.ident.owner is not None and other.ident.owner.uid == owner.uid:
                        self.cache.dirty_groups.add(other.key)
                self.wake()

        self.spawn(run())

    # -- deletes --------------------------------------------------------------------------------

    def delete(self, key: str, uid: str | None = None) -> None:
        """Delete a pod of ours and keep at it until it is gone."""
        if key in self.deletes:
            return
        p = self.cache.pods.get(key)
        uid = uid or (p.uid if p else None)
        self.cache.mark_deleting(key)
        self.deletes[key] = self.spawn(self._delete(key, uid))

    async def _delete(self, key: str, uid: str | None) -> None:
        ns, name = key.split("/", 1)
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            body["preconditions"] = {"uid": uid}
        acked = False
        pause = 0.5
        try:
            while True:
                p = self.cache.pods.get(key)
                if p is not None and uid and p.uid != uid:
                    return  # another pod under that name now: not this delete's business
                if acked and p is None:
                    return
                if not acked:
                    try:
                        await self.kube.run("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", body=body)
                        acked = True
                        self.metrics.pods_deleted.inc()
                    except ApiError as e:
                        if e.status == 404:
                            f = self.cache.inflight.get(key)
                            if f is not None and f.creating:  # our create may still land: ask after it
                                await self.cache.wait_change(1.0)
                                continue
                            if p is None:
                                self.cache.inflight.pop(key, None)  # it was never created
                                return
                            acked = True  # gone already; the watch will say so
                        elif e.status == 409:
                            return  # the uid precondition failed: a different pod (the sweep judges it)
                        else:
                            self.metrics.delete_errors.inc()
                            log.info("deleting pod %s (retrying in %.1fs): %s", key, pause, e)
                            await self.pause(pause)
                            pause = min(pause * 2, 30.0)
                            continue
                await self.cache.wait_change(30.0)
        finally:
            self.deletes.pop(key, None)
            p = self.cache.pods.get(key)
            if p is None or not p.deleting:  # not (or no longer) on its way out: the sweep may retry
                self.cache.deleting.discard(key)
                self.cache.recount(key)

    def delete_job(self, rec: JobRecord) -> None:
        """TTL after finish: delete the job (its pods go with it), retrying until it is gone."""
        if rec.key in self.job_deletes:
            return
        self.job_deletes.add(rec.key)

        async def run() -> None:
            pause = 1.0
            try:
                while rec.key in self.cache.jobs and self.cache.jobs[rec.key] is rec:
                    try:
                        await self.kube.run(
                            "DELETE",
                            f"{api.GROUP_PATH}/namespaces/{rec.namespace}/{api.PLURAL_GPUJOBS}/{rec.name}",
                            body={"propagationPolicy": "Background", "preconditions": {"uid": rec.uid}},
                        )
                        return
                    except ApiError as e:
                        if e.status in (404, 409):
                            return
                        log.info("TTL delete of %s (retrying in %.0fs): %s", rec.key, pause, e)
                        await self.pause(pause)
                        pause = min(pause * 2, 60.0)
            finally:
                self.job_deletes.discard(rec.key)

        self.spawn(run())
