"""The engine: a cache fed by watch events, one scheduling loop, and the writes that apply it.

All state lives on the asyncio loop's thread: informer threads and kopf handlers only post events
to it, so nothing races over GPUs. The loop reconciles job lifecycles from their pods, runs one
core cycle, assumes its decisions, and starts apply tasks; a failed apply forgets its decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aicenter import api
from aicenter.core import Admit, Evict, Node, Preempt, Scheduler

from . import pods as podlib
from .config import Settings
from .convert import CenterInfo, center_info, core_node, pod_gpus, quota_spec, rfc3339, selector_matches
from .jobs import JobRecord, Placement, record_from
from .kube import MERGE, ApiError, Kube
from .metrics import Metrics

log = logging.getLogger("aicenter.engine")
Obj = dict[str, Any]
GROUP_PATH = f"/apis/{api.GROUP}/{api.VERSION}"
TRANSIENT = (0, 409, 429, 500, 502, 503, 504)
RESYNC_S = 5.0  # every unfinished job is reconciled at least this often


def _trim_pod(p: Obj) -> Obj:
    md, spec, st = p["metadata"], p.get("spec") or {}, p.get("status") or {}
    return {
        "name": md["name"],
        "namespace": md.get("namespace", ""),
        "uid": md.get("uid", ""),
        "labels": md.get("labels") or {},
        "node": spec.get("nodeName", ""),
        "phase": st.get("phase", "Pending"),
        "deleting": bool(md.get("deletionTimestamp")),
    }


class Engine:
    def __init__(self, settings: Settings, kube: Kube, metrics: Metrics) -> None:
        self.settings, self.kube, self.metrics = settings, kube, metrics
        self.sched = Scheduler()
        self.centers: dict[str, CenterInfo] = {}
        self.center_objs: dict[str, Obj] = {}
        self.quotas: dict[str, Obj] = {}
        self.ns_labels: dict[str, dict[str, str]] = {}
        self.nodes: dict[str, Obj] = {}
        self.node_center: dict[str, str] = {}
        self.core_nodes: dict[str, Node] = {}
        self.foreign: dict[str, tuple[str, int]] = {}  # pod uid → (node, GPUs)
        self.foreign_by_node: dict[str, int] = {}
        self.pods: dict[str, Obj] = {}  # "ns/name" → trimmed pod of ours
        self.jobs: dict[str, JobRecord] = {}
        self.dirty: set[str] = set()
        self.written: dict[str, Obj] = {}  # job key → last status written
        self.status_dirty: set[str] = set()
        self.wake = asyncio.Event()
        self.leader = False
        self.synced: set[str] = set()
        self.tasks: set[asyncio.Task] = set()
        self.last_cycle = time.time()
        self._last_resync = 0.0

    # -- events -----------------------------------------------------------------------------

    def on_informer(self, resource: str, kind: str, obj: Any) -> None:
        handler = {
            "nodes": self._on_node,
            "pods": self._on_pod,
            "foreign": self._on_foreign,
            "namespaces": self._on_namespace,
        }[resource]
        if kind == "RESYNC":
            handler("RESYNC", obj)
            self.synced.add(resource)
        else:
            handler(kind, obj)
        self.wake.set()

    def _on_node(self, kind: str, obj: Any) -> None:
        if kind == "RESYNC":
            fresh = {o["metadata"]["name"]: o for o in obj}
            for name in set(self.nodes) - set(fresh):
                self.nodes.pop(name)
                self._feed_node(name)
            for name, o in fresh.items():
                self.nodes[name] = o
                self._assign(name)
            return
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self.nodes.pop(name, None)
            self.node_center.pop(name, None)
        else:
            self.nodes[name] = obj
            self._assign(name)
        self._feed_node(name)

    def _assign(self, name: str) -> None:
        labels = self.nodes[name]["metadata"].get("labels") or {}
        for cname in sorted(self.centers):
            if selector_matches(self.centers[cname].node_selector, labels):
                self.node_center[name] = cname
                break
        else:
            self.node_center.pop(name, None)
        self._feed_node(name)

    def _feed_node(self, name: str) -> None:
        obj, cname = self.nodes.get(name), self.node_center.get(name)
        n = None
        if obj is not None and cname in self.centers:
            n = core_node(obj, self.centers[cname], self.foreign_by_node.get(name, 0))
        if n is None:
            if self.core_nodes.pop(name, None) is not None:
                self.sched.remove_node(name)
        elif self.core_nodes.get(name) != n:
            self.core_nodes[name] = n
            self.sched.set_node(n)

    def _on_foreign(self, kind: str, obj: Any) -> None:
        items = obj if kind == "RESYNC" else [obj]
        touched: set[str] = set()
        if kind == "RESYNC":
            touched |= {n for n, _ in self.foreign.values()}
            self.foreign.clear()
            self.foreign_by_node.clear()
        for p in items:
            md = p["metadata"]
            if (md.get("labels") or {}).get(api.LABEL_MANAGED_BY) == api.MANAGED_BY:
                continue
            uid = md.get("uid", "")
            old = self.foreign.pop(uid, None)
            if old:
                self.foreign_by_node[old[0]] -= old[1]
                touched.add(old[0])
            phase = (p.get("status") or {}).get("phase")
            node = (p.get("spec") or {}).get("nodeName")
            gpus = pod_gpus(p)
            if kind != "DELETED" and node and gpus and phase not in ("Succeeded", "Failed"):
                self.foreign[uid] = (node, gpus)
                self.foreign_by_node[node] = self.foreign_by_node.get(node, 0) + gpus
                touched.add(node)
        for n in touched:
            self._feed_node(n)

    def _on_pod(self, kind: str, obj: Any) -> None:
        if kind == "RESYNC":
            old = set(self.pods)
            self.pods = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": _trim_pod(p) for p in obj}
            for key in old | set(self.pods):
                self._pod_dirty(key)
            return
        t = _trim_pod(obj)
        key = f"{t['namespace']}/{t['name']}"
        if kind == "DELETED":
            self.pods.pop(key, None)
        else:
            self.pods[key] = t
        self._pod_dirty(key, t)

    def _pod_dirty(self, key: str, t: Obj | None = None) -> None:
        t = t or self.pods.get(key)
        ns = key.split("/", 1)[0]
        job = (t or {}).get("labels", {}).get(api.LABEL_JOB)
        if job:
            self.dirty.add(f"{ns}/{job}")
        else:  # a deleted pod we no longer hold: find its job by name prefix cheaply
            for jk, rec in self.jobs.items():
                if rec.namespace == ns and key.split("/", 1)[1] in rec.draining | {
                    p.pod for p in rec.placements.values()
                }:
                    self.dirty.add(jk)

    def _on_namespace(self, kind: str, obj: Any) -> None:
        items = obj if kind == "RESYNC" else [obj]
        if kind == "RESYNC":
            self.ns_labels.clear()
        for o in items:
            name = o["metadata"]["name"]
            if kind == "DELETED":
                self.ns_labels.pop(name, None)
            else:
                self.ns_labels[name] = o["metadata"].get("labels") or {}
        self._resolve_all()

    def on_center(self, kind: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self.centers.pop(name, None)
            self.center_objs.pop(name, None)
            self.sched.remove_center(name)
        else:
            info = center_info(obj)
            self.center_objs[name] = obj
            old = self.centers.get(name)
            self.centers[name] = info
            self.sched.set_center(info.spec)
            if old is not None and old == info:
                self.wake.set()
                return
        for n in list(self.nodes):
            self._assign(n)
        self.wake.set()

    def on_quota(self, kind: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self.quotas.pop(name, None)
            self.sched.remove_quota(name)
        else:
            self.quotas[name] = obj
            self.sched.set_quota(quota_spec(obj))
        self._resolve_all()
        self.wake.set()

    def on_job(self, kind: str, obj: Obj) -> None:
        md = obj["metadata"]
        key = f"{md['namespace']}/{md['name']}"
        rec = self.jobs.get(key)
        if kind == "DELETED":
            if rec is not None and rec.uid == md.get("uid"):
                self._drop(rec)
            self.wake.set()
            return
        if rec is None or rec.uid != md.get("uid"):
            if rec is not None:
                self._drop(rec)
            rec = record_from(obj)
            self.jobs[key] = rec
            self._resolve(rec)
            self._sync_workloads(rec)
        else:
            prio_changed = (rec.spec.get("priority"), rec.spec.get("preemptible")) != (
                (obj.get("spec") or {}).get("priority"),
                (obj.get("spec") or {}).get("preemptible"),
            )
            rec.obj = obj
            if prio_changed and not rec.busy:
                self._sync_workloads(rec)
        self.dirty.add(key)
        self.wake.set()

    def _drop(self, rec: JobRecord) -> None:
        """A deleted job frees its GPUs at once; its pods go with it (owner references)."""
        self.jobs.pop(rec.key, None)
        for k in rec.unit_keys():
            self.sched.remove_workload(k)
        self.written.pop(rec.key, None)
        self.metrics.jobs_deleted.inc()

    def _sync_workloads(self, rec: JobRecord) -> None:
        for k in rec.unit_keys():
            self.sched.remove_workload(k)
        for w in rec.workloads():
            if w.placement is not None and w.placed_class is None:
                continue
            self.sched.add_workload(w)

    def _resolve_all(self) -> None:
        for rec in self.jobs.values():
            before = (rec.quota, rec.quota_error)
            self._resolve(rec)
            if (rec.quota, rec.quota_error) != before and not rec.placements:
                self._sync_workloads(rec)
                self.dirty.add(rec.key)

    def _resolve(self, rec: JobRecord) -> None:
        """Which quota pays: the named one, or the one quota serving the namespace."""
        if rec.placements:
            return  # admitted work keeps the quota it was admitted under
        named = rec.spec.get("quota")
        rec.quota_error = ""
        if named:
            rec.quota = named
        else:
            labels = {**self.ns_labels.get(rec.namespace, {}), "kubernetes.io/metadata.name": rec.namespace}
            serving = sorted(
                q
                for q, o in self.quotas.items()
                if selector_matches((o.get("spec") or {}).get("namespaceSelector"), labels)
            )
            if len(serving) == 1:
                rec.quota = serving[0]
            else:
                rec.quota = None
                rec.quota_error = (
                    f"no GPUQuota serves namespace {rec.namespace}: set spec.quota or label the namespace"
                    if not serving
                    else f"namespace {rec.namespace} is served by several quotas ({', '.join(serving)}): "
                    "set spec.quota"
                )
        q = self.quotas.get(rec.quota or "")
        rec.center = (q.get("spec") or {}).get("center") if q else None

    # -- the loop ---------------------------------------------------------------------------

    def ready(self) -> bool:
        return {"nodes", "pods", "foreign", "namespaces"} <= self.synced

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=self.settings.cycle_interval)
                await asyncio.sleep(0.02)  # let a burst of events land in one cycle
            except TimeoutError:
                pass
            self.wake.clear()
            self.last_cycle = time.time()
            if not self.leader or not self.ready():
                continue
            try:
                self.step(time.time())
            except Exception:
                log.exception("scheduling step failed")
                self.metrics.loop_errors.inc()

    def step(self, now: float) -> None:
        """One pass: lifecycle from pods, one core cycle, apply, status."""
        dirty, self.dirty = self.dirty, set()
        if now - self._last_resync >= RESYNC_S:  # self-heal any missed event
            self._last_resync = now
            dirty |= {k for k, r in self.jobs.items() if not r.finished}
        for key in sorted(dirty):
            rec = self.jobs.get(key)
            if rec is None:
                continue
            if rec.busy:
                self.dirty.add(key)  # look again once its writes are done
            else:
                self._reconcile(rec, now)
        self._housekeeping(now)
        t0 = time.perf_counter()
        res = self.sched.cycle(now)
        self.metrics.cycle_seconds.observe(time.perf_counter() - t0)
        preempting: dict[str, asyncio.Task] = {}
        for ev in res.evicted:
            self._on_evict(ev, now)
        for p in res.preempted:
            preempting[p.key] = self._spawn(self._on_preempt(p, now))
        for a in res.admitted:
            self._on_admit(a, now, [preempting[k] for k in a.after if k in preempting])
        for p in res.pending:
            rec = self._rec_of(p.key)
            if rec is None or rec.busy:
                continue
            msg = rec.quota_error if rec.quota is None and rec.quota_error else p.message
            reason = "NoQuota" if rec.quota is None and rec.quota_error else p.reason
            if not rec.placements and (rec.reason, rec.message) != (reason, msg):
                rec.phase, rec.reason, rec.message = "Pending", reason, msg
                rec.set_condition("Admitted", False, reason, msg, now)
                self.status_dirty.add(rec.key)
        self._flush_status()

    def _rec_of(self, unit_key: str) -> JobRecord | None:
        return self.jobs.get(unit_key.split("#", 1)[0])

    def _spawn(self, coro: Any) -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return t

    # -- applying decisions ----------------------------------------------------------------

    def _on_admit(self, a: Admit, now: float, wait_for: list[asyncio.Task]) -> None:
        rec = self._rec_of(a.key)
        if rec is None:
            self.sched.forget(a.key)
            return
        reps = rec.unit_replicas(a.key)
        for r, node in zip(reps, a.nodes, strict=True):
            rec.placements[r] = Placement(node, podlib.pod_name(rec.name, rec.attempt, r))
        rec.gpu_class = a.gpu_class
        rec.admitted_at = rec.admitted_at or now
        if rec.phase == "Pending":
            rec.phase = "Admitted"
        borrowed = f", {a.borrowed} borrowed from cohort" if a.borrowed else ""
        rec.reason, rec.message = (
            "Admitted",
            (
                f"admitted to {rec.center}: {len(reps)} × {rec.gpus_per_replica} {a.gpu_class} on "
                f"{len(set(a.nodes))} node(s){borrowed}"
            ),
        )
        rec.set_condition("Admitted", True, "Admitted", rec.message, now)
        rec.busy += 1
        self.metrics.admitted.inc()
        self._spawn(self._apply_admit(rec, a, reps, wait_for))

    async def _apply_admit(
        self, rec: JobRecord, a: Admit, reps: list[int], wait_for: list[asyncio.Task]
    ) -> None:
        try:
            if wait_for:
                await asyncio.gather(*wait_for, return_exceptions=True)
            await self._write_status(rec)  # write-ahead: placements are durable before any pod exists
            if a.after:
                await self._wait_pods_gone(list(a.after), timeout=120)
            await self._ensure_pods(rec, reps)
            nodes = sorted(set(a.nodes))
            shown = ", ".join(nodes[:5]) + (" …" if len(nodes) > 5 else "")
            self._event(rec, "Normal", "Scheduled", f"{rec.message}; bound to {shown}")
        except ApiError as e:
            self.metrics.bind_errors.inc()
            log.warning("admitting %s failed: %s", a.key, e)
            for r in reps:
                rec.placements.pop(r, None)
            self.sched.forget(a.key)
            permanent = e.status not in TRANSIENT
            rec.phase = "Failed" if permanent else ("Pending" if not rec.placements else rec.phase)
            rec.reason = "PodCreateFailed" if permanent else "ApplyFailed"
            rec.message = f"could not start replicas: {e.message or e}"
            if permanent:
                rec.finished_at = time.time()
                self._sync_workloads(rec)
            self._event(rec, "Warning", rec.reason, rec.message)
            self.status_dirty.add(rec.key)
        finally:
            rec.busy -= 1
            self.dirty.add(rec.key)
            self.wake.set()

    async def _wait_pods_gone(self, unit_keys: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        prefixes = {k.split("#", 1)[0] for k in unit_keys}
        while time.monotonic() < deadline:
            left = [
                p
                for p in self.pods.values()
                if f"{p['namespace']}/{p['labels'].get(api.LABEL_JOB)}" in prefixes and self._stale(p)
            ]
            if not left:
                return
            await asyncio.sleep(0.2)

    def _stale(self, p: Obj) -> bool:
        rec = self.jobs.get(f"{p['namespace']}/{p['labels'].get(api.LABEL_JOB)}")
        return rec is None or p["name"] not in {x.pod for x in rec.placements.values()}

    async def _ensure_pods(self, rec: JobRecord, reps: list[int]) -> None:
        """Create missing replica pods and bind unbound ones: used by admission and by repair."""
        ns = rec.namespace
        job = rec.obj
        if rec.replicas > 1:
            try:
                await self.kube.run(
                    "POST", f"/api/v1/namespaces/{ns}/services", body=podlib.headless_service(job)
                )
            except ApiError as e:
                if e.status != 409:
                    raise
        center = self.centers.get(rec.center or "")
        resource = center.gpu_resource if center else api.DEFAULT_GPU_RESOURCE

        async def one(r: int) -> None:
            p = rec.placements[r]
            have = self.pods.get(f"{ns}/{p.pod}")
            if have is None:
                body = podlib.replica_pod(
                    job, r, rec.attempt, p.node, rec.gpus_per_replica, self.settings.scheduler_name, resource
                )
                body["metadata"]["name"] = p.pod
                try:
                    await self.kube.run("POST", f"/api/v1/namespaces/{ns}/pods", body=body)
                except ApiError as e:
                    if e.status != 409:
                        raise
            elif have["node"]:
                return
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": p.pod},
                "target": {"apiVersion": "v1", "kind": "Node", "name": p.node},
            }
            try:
                await self.kube.run("POST", f"/api/v1/namespaces/{ns}/pods/{p.pod}/binding", body=binding)
                self.metrics.pods_bound.inc()
            except ApiError as e:
                if e.status != 409:
                    raise

        await asyncio.gather(*(one(r) for r in reps if r in rec.placements))

    async def _on_preempt(self, p: Preempt, now: float) -> None:
        rec = self._rec_of(p.key)
        if rec is None:
            return
        reps = rec.unit_replicas(p.key)
        doomed = [rec.placements.pop(r).pod for r in reps if r in rec.placements]
        rec.preemptions = [
            *rec.preemptions,
            {"time": rfc3339(now), "preemptor": p.preemptor, "reason": p.message},
        ]
        if not rec.placements:
            rec.phase = "Pending"
        rec.reason, rec.message = p.reason, p.message
        rec.set_condition("Admitted", False, p.reason, p.message, now)
        if not rec.placements:
            rec.set_condition("Running", False, p.reason, p.message, now)
        self.metrics.preemptions.inc()
        rec.busy += 1
        try:
            await self._write_status(rec)  # before the preemptor's write-ahead
            self._event(rec, "Warning", "Preempted", p.message)
            await self._delete_pods(rec.namespace, doomed)
        except ApiError as e:
            log.warning("preempting %s: %s", p.key, e)
        finally:
            rec.busy -= 1
            self.dirty.add(rec.key)

    def _on_evict(self, ev: Evict, now: float) -> None:
        rec = self._rec_of(ev.key)
        if rec is None:
            return
        self._restart(rec, rec.unit_replicas(ev.key), ev.reason, ev.message, now, held=False)

    def _restart(
        self, rec: JobRecord, reps: list[int], reason: str, message: str, now: float, held: bool
    ) -> None:
        """Stop replicas and requeue them (one retry), or fail the job past its backoff limit.

        ``held``: the core still holds their GPUs; they are released once the pods are gone.
        """
        doomed = [rec.placements.pop(r).pod for r in reps if r in rec.placements]
        rec.restarts += 1
        limit = int(rec.spec.get("backoffLimit", 3))
        if rec.restarts > limit:
            self._finish(
                rec,
                "Failed",
                "BackoffLimitExceeded",
                f"{message}; restarted {rec.restarts - 1} time(s), backoffLimit {limit}",
                now,
            )
        else:
            rec.phase = "Pending" if not rec.placements else rec.phase
            rec.reason, rec.message = reason, f"{message}; restarting (retry {rec.restarts} of {limit})"
            rec.set_condition("Admitted", False, reason, rec.message, now)
        if held:
            rec.draining |= set(doomed)
        self._event(rec, "Warning", reason, rec.message)
        self.metrics.restarts.inc()
        self.status_dirty.add(rec.key)
        if doomed:
            self._spawn(self._delete_pods(rec.namespace, doomed))

    def _finish(self, rec: JobRecord, phase: str, reason: str, message: str, now: float) -> None:
        rec.phase, rec.reason, rec.message = phase, reason, message
        rec.finished_at = now
        rec.set_condition("Finished", True, reason, message, now)
        for k in rec.unit_keys():
            self.sched.remove_workload(k)  # GPUs are free at once
        self._event(rec, "Normal" if phase == "Succeeded" else "Warning", reason, message)
        self.metrics.finished.labels(phase=phase).inc()
        self.status_dirty.add(rec.key)

    async def _delete_pods(self, ns: str, names: list[str]) -> None:
        async def one(n: str) -> None:
            try:
                await self.kube.run("DELETE", f"/api/v1/namespaces/{ns}/pods/{n}")
            except ApiError as e:
                if e.status != 404:
                    log.warning("deleting pod %s/%s: %s", ns, n, e)

        await asyncio.gather(*(one(n) for n in names))

    # -- lifecycle ---------------------------------------------------------------------------

    def _reconcile(self, rec: JobRecord, now: float) -> None:
        """Advance one job from what its pods say."""
        if rec.finished:
            return
        if rec.draining:
            rec.draining = {p for p in rec.draining if f"{rec.namespace}/{p}" in self.pods}
            if rec.draining:
                return
            self._sync_workloads(rec)  # pods gone: release the held GPUs, requeue
        deadline = rec.spec.get("activeDeadlineSeconds")
        if deadline and rec.admitted_at and now - rec.admitted_at > float(deadline):
            doomed = [p.pod for p in rec.placements.values()]
            rec.placements.clear()
            self._finish(rec, "Failed", "DeadlineExceeded", f"active for more than {deadline}s", now)
            self._spawn(self._delete_pods(rec.namespace, doomed))
            return
        repair: list[int] = []
        running = 0
        for key in rec.unit_keys():
            reps = rec.unit_replicas(key)
            if all(r in rec.done for r in reps) or not all(r in rec.placements for r in reps):
                continue
            states = []
            for r in reps:
                pod = self.pods.get(f"{rec.namespace}/{rec.placements[r].pod}")
                if pod is not None:
                    rec.seen.add(pod["name"])
                states.append((r, pod))
            failed = [
                r
                for r, p in states
                if (p is not None and p["phase"] == "Failed")
                or (p is None and rec.placements[r].pod in rec.seen)
            ]
            if failed:
                self._restart(rec, reps, "ReplicaFailed", f"replica {failed[0]} failed", now, held=True)
                continue
            if all(p is not None and p["phase"] == "Succeeded" for _, p in states):
                rec.done |= set(reps)
                for r in reps:
                    rec.placements.pop(r, None)
                self.sched.remove_workload(key)
                continue
            repair += [r for r, p in states if p is None or not p["node"]]
            running += sum(1 for _, p in states if p is not None and p["phase"] in ("Running", "Succeeded"))
        if len(rec.done) == rec.replicas:
            self._finish(rec, "Succeeded", "Completed", f"all {rec.replicas} replica(s) succeeded", now)
            return
        if (
            running
            and rec.phase == "Admitted"
            and running + len(rec.done) >= len(rec.placements) + len(rec.done)
        ):
            rec.phase, rec.reason = "Running", "Running"
            rec.message = f"{running} replica(s) running"
            rec.started_at = rec.started_at or now
            rec.set_condition("Running", True, "Running", rec.message, now)
            self.status_dirty.add(rec.key)
        if repair and not rec.busy:
            rec.busy += 1
            self._spawn(self._repair(rec, repair))

    async def _repair(self, rec: JobRecord, reps: list[int]) -> None:
        try:
            await self._ensure_pods(rec, reps)
        except ApiError as e:
            log.warning("repairing %s: %s", rec.key, e)
        finally:
            rec.busy -= 1

    def _housekeeping(self, now: float) -> None:
        """TTL after finish: delete the job (its pods go with it)."""
        for rec in list(self.jobs.values()):
            ttl = rec.spec.get("ttlSecondsAfterFinished")
            expired = (
                rec.finished and ttl is not None and rec.finished_at and now - rec.finished_at >= float(ttl)
            )
            if expired and not rec.busy:
                rec.busy += 1
                self._spawn(self._delete_job(rec))

    async def _delete_job(self, rec: JobRecord) -> None:
        try:
            await self.kube.run(
                "DELETE",
                f"{GROUP_PATH}/namespaces/{rec.namespace}/gpujobs/{rec.name}",
                body={"propagationPolicy": "Background"},
            )
        except ApiError as e:
            if e.status != 404:
                log.warning("TTL delete of %s: %s", rec.key, e)
                rec.busy -= 1

    # -- status and events --------------------------------------------------------------------

    async def _write_status(self, rec: JobRecord) -> None:
        st = rec.status()
        path = f"{GROUP_PATH}/namespaces/{rec.namespace}/gpujobs/{rec.name}/status"
        await self.kube.run("PATCH", path, body={"status": st}, content_type=MERGE)
        self.written[rec.key] = st
        self.status_dirty.discard(rec.key)

    def _flush_status(self) -> None:
        keys, self.status_dirty = self.status_dirty, set()
        batch = [self.jobs[k] for k in sorted(keys) if k in self.jobs and not self.jobs[k].busy]
        for k in keys:
            if k in self.jobs and self.jobs[k].busy:
                self.status_dirty.add(k)
        if batch:
            self._spawn(self._write_batch(batch))

    async def _write_batch(self, recs: list[JobRecord]) -> None:
        async def one(rec: JobRecord) -> None:
            if self.written.get(rec.key) == rec.status():
                return
            try:
                await self._write_status(rec)
            except ApiError as e:
                if e.status != 404:
                    log.info("status of %s: %s", rec.key, e)
                    self.status_dirty.add(rec.key)

        await asyncio.gather(*(one(r) for r in recs))

    def _event(self, rec: JobRecord, etype: str, reason: str, message: str) -> None:
        now = rfc3339(time.time())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{rec.name}.", "namespace": rec.namespace},
            "involvedObject": {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND_GPUJOB,
                "name": rec.name,
                "namespace": rec.namespace,
                "uid": rec.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": etype,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": self.settings.scheduler_name},
            "reportingComponent": self.settings.scheduler_name,
            "reportingInstance": self.settings.identity,
        }

        async def post() -> None:
            try:
                await self.kube.run("POST", f"/api/v1/namespaces/{rec.namespace}/events", body=body)
            except ApiError as e:
                log.debug("event for %s: %s", rec.key, e)

        with contextlib.suppress(RuntimeError):  # no running loop (unit tests)
            self._spawn(post())
