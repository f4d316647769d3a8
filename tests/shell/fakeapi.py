"""A fake API server and kubelets for driving the operator's shell under faults, in one process.

:class:`FakeCluster` keeps nodes, pods, GPUJobs, quotas, centres and namespaces as JSON, plays the
kubelets (admission against allocatable counting every bound, live pod — terminating ones included —
then Running, Succeeded after a run time, gone a while after deletion) and queues watch events for
the :class:`~aicenter.controller.cache.Cache`. :class:`FakeKube` stands in for the REST client:
each request can fail (a status code), be slow (it applies and answers after simulated seconds, so
concurrent requests land out of order), or apply and lose its response. Watch streams lag (each by
its own amount, so events of different resources arrive out of order; one stream stays in order),
lose events (the informer's relist brings the truth back), and GPUJob deletions can go unreported
(as kopf's relist after 410 Gone does).

Time is simulated: the controller's clock is :meth:`FakeCluster.now` and nothing here sleeps.
The witness of double-selling is the fake API server: a pod created onto a node whose GPUs (and
other resources) are already held by live pods — terminating ones included, as the kubelet counts
them — is recorded in :attr:`FakeCluster.oversold`. A pod the kubelet refuses because allocatable
dropped before the scheduler could see it is only :attr:`FakeCluster.rejected` (it is placed again).
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aicenter import api
from aicenter.controller.cache import Cache, trim_pod
from aicenter.controller.kube import ApiError
from aicenter.controller.objects import node_view, pod_requests, rfc3339

Obj = dict[str, Any]
GPU = "nvidia.com/gpu"
SOURCES = ("nodes", "ours", "others", "workload", "namespaces")  # what the informers watch
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}


@dataclass
class Fault:
    """What happens to one request: an error, a delay (simulated seconds), a lost response, a late apply."""

    status: int = 0  # >0: fail with this status (nothing applied)
    message: str = ""
    delay: float = 0.0
    lost: bool = False  # applied, but the caller sees a timeout


FaultPolicy = Callable[[str, str, Obj | None], Fault | None]


def no_faults(method: str, path: str, body: Obj | None) -> Fault | None:
    return None


@dataclass
class FakeCluster:
    t: float = 1_000_000.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    nodes: dict[str, Obj] = field(default_factory=dict)
    pods: dict[str, Obj] = field(default_factory=dict)
    jobs: dict[str, Obj] = field(default_factory=dict)
    quotas: dict[str, Obj] = field(default_factory=dict)
    centers: dict[str, Obj] = field(default_factory=dict)
    namespaces: dict[str, Obj] = field(default_factory=dict)
    events: list[Obj] = field(default_factory=list)
    owners: dict[str, Obj] = field(
        default_factory=dict
    )  # batch/v1 Jobs by namespace/name (read by the operator)
    requests: list[tuple[str, str]] = field(default_factory=list)  # every request the operator made
    oversold: list[str] = field(default_factory=list)  # pods created onto a node without room
    rejected: list[str] = field(default_factory=list)  # pods the kubelet refused (OutOf…)
    terminate_after: float = 3.0  # a deleted pod is gone this long after its deletion
    watch_delay: tuple[float, float] = (0.0, 0.0)  # (min, max) simulated delay of watch events
    drop_watch: float = 0.0  # probability that a watch event is lost (a relist follows)
    hide_job_deletions: bool = False  # GPUJob deletions are not reported (kopf after a 410)
    _rv: itertools.count = field(default_factory=lambda: itertools.count(1))
    _queue: list[tuple[float, int, str, str, Any]] = field(
        default_factory=list
    )  # (due, seq, source, type, obj)
    _seq: itertools.count = field(default_factory=itertools.count)
    _later: list[tuple[float, Callable[[], None]]] = field(default_factory=list)
    _dropped: set[str] = field(default_factory=set)  # sources that lost an event: relist them
    _last_due: dict[str, float] = field(default_factory=dict)  # a stream stays in order
    cache: Cache | None = None

    def now(self) -> float:
        return self.t

    # -- objects --------------------------------------------------------------------------------

    def _meta(self, name: str, namespace: str | None = None, **kw: Any) -> Obj:
        md = {
            "_t": self.t,
            "name": name,
            "uid": str(uuid.UUID(int=self.rng.getrandbits(128))),
            "resourceVersion": str(next(self._rv)),
            "creationTimestamp": rfc3339(self.t),
            "generation": 1,
            **kw,
        }
        if namespace:
            md["namespace"] = namespace
        return md

    def add_node(
        self,
        name: str,
        center: str = "c",
        gpus: int = 8,
        rack: str = "r0",
        cpu: str = "128",
        taints: list[Obj] | None = None,
        labels: dict[str, str] | None = None,
    ) -> Obj:
        obj = {
            "metadata": self._meta(
                name,
                labels={
                    api.LABEL_CENTER: center,
                    api.LABEL_GPU_PRODUCT: "NVIDIA-B200",
                    "nvidia.com/gpu.present": "true",
                    "topology.aicenter.dev/rack": rack,
                    "topology.kubernetes.io/zone": "z0",
                    "kubernetes.io/hostname": name,
                    **(labels or {}),
                },
            ),
            "spec": {"taints": [dict(KWOK_TAINT), *(taints or [])]},
            "status": {
                "capacity": {GPU: str(gpus), "cpu": cpu, "memory": "2Ti", "pods": "110"},
                "allocatable": {GPU: str(gpus), "cpu": cpu, "memory": "2Ti", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": rfc3339(self.t)}],
            },
        }
        self.nodes[name] = obj
        self._emit("nodes", "ADDED", obj)
        return obj

    def update_node(self, name: str, fn: Callable[[Obj], None]) -> None:
        obj = copy.deepcopy(self.nodes[name])
        fn(obj)
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self.nodes[name] = obj
        self._emit("nodes", "MODIFIED", obj)

    def set_allocatable(self, name: str, gpus: int) -> None:
        def fn(o: Obj) -> None:
            o["status"]["allocatable"][GPU] = str(gpus)

        self.update_node(name, fn)

    def add_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        obj = {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}}}
        self.namespaces[name] = obj
        self._emit("namespaces", "ADDED", obj)

    def add_center(self, name: str = "c", **spec: Any) -> None:
        obj = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND_AICENTER,
            "metadata": self._meta(name),
            "spec": {"nodeSelector": {"matchLabels": {api.LABEL_CENTER: name}}, **spec},
        }
        self.centers[name] = obj
        self._emit("centers", "ADDED", obj)

    def delete_center(self, name: str) -> None:
        obj = self.centers.pop(name)
        self._emit("centers", "DELETED", obj)

    def add_quota(
        self, name: str, namespace: str, guaranteed: int, limit: int | None = None, **spec: Any
    ) -> None:
        obj = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND_GPUQUOTA,
            "metadata": self._meta(name),
            "spec": {
                "center": spec.pop("center", "c"),
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "resources": [{"gpuClass": "B200", "guaranteed": guaranteed, "limit": limit or guaranteed}],
                **spec,
            },
        }
        self.quotas[name] = obj
        self._emit("quotas", "ADDED", obj)

    def submit(
        self,
        namespace: str,
        name: str,
        replicas: int = 1,
        gpus: int = 8,
        run_s: float | None = None,
        fail: bool = False,
        pod_spec: Obj | None = None,
        **spec: Any,
    ) -> Obj:
        tmpl_spec: Obj = {
            "tolerations": [{"key": KWOK_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "main", "image": "x"}],
            **(pod_spec or {}),
        }
        annotations = {}
        if run_s is not None:
            annotations["sim/run-seconds"] = str(run_s)
        if fail:
            annotations["sim/fail"] = "true"
        obj = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND_GPUJOB,
            "metadata": self._meta(name, namespace),
            "spec": {
                "replicas": replicas,
                "gpusPerReplica": gpus,
                **spec,
                "template": {"metadata": {"annotations": annotations}, "spec": tmpl_spec},
            },
        }
        self.jobs[f"{namespace}/{name}"] = obj
        self._emit("jobs", "ADDED", obj)
        return obj

    def edit_job(self, key: str, fn: Callable[[Obj], None]) -> None:
        obj = copy.deepcopy(self.jobs[key])
        fn(obj)
        obj["metadata"]["generation"] += 1
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self.jobs[key] = obj
        self._emit("jobs", "MODIFIED", obj)

    def delete_job(self, key: str) -> None:
        obj = self.jobs.pop(key)
        uid = obj["metadata"]["uid"]
        for pkey, p in list(self.pods.items()):  # the garbage collector follows owner references
            if any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or ()):
                self._delete_pod(pkey)
        if not self.hide_job_deletions:
            self._emit("jobs", "DELETED", obj)

    def foreign_pod(
        self, namespace: str, name: str, node: str, gpus: int, phase: str = "Pending", **spec: Any
    ) -> None:
        """A pod another scheduler bound (or someone set nodeName on): the kubelet admits it or not."""
        obj = {
            "metadata": self._meta(name, namespace, labels={}),
            "spec": {
                "nodeName": node,
                "containers": [{"name": "c", "resources": {"limits": {GPU: str(gpus)}}}],
                **spec,
            },
            "status": {"phase": phase},
        }
        self.pods[f"{namespace}/{name}"] = obj
        self._emit("others", "ADDED", obj)

    # -- the kubelets -----------------------------------------------------------------------------

    def _live_on(self, node: str, exclude: str = "", seen_before: float | None = None) -> dict[str, int]:
        used: dict[str, int] = {}
        for k, p in self.pods.items():
            if seen_before is not None and self._source(p) == "others" and p["metadata"]["_t"] > seen_before:
                continue  # bound by another scheduler after the operator could have seen it
            if (
                k != exclude
                and p["spec"].get("nodeName") == node
                and p["status"]["phase"] not in ("Succeeded", "Failed")
            ):
                for r, a in pod_requests(p["spec"]).items():
                    used[r] = used.get(r, 0) + a
        return used

    def _fits(
        self, node: str, pod_key: str, by_capacity: bool = False, seen_before: float | None = None
    ) -> bool:
        """Whether the pod fits beside every other live pod: by allocatable (the kubelet's admission),
        or by the GPUs that exist (``by_capacity``: a pod beyond that is a GPU sold twice). With
        ``seen_before``, another scheduler's pods bound after that time do not count: the watch had
        not shown them yet (two schedulers racing; the kubelet refuses one)."""
        n = self.nodes.get(node)
        if n is None:
            return False
        view = node_view(n)
        alloc = view.capacity if by_capacity else view.allocatable
        used = self._live_on(node, exclude=pod_key, seen_before=seen_before)
        need = pod_requests(self.pods[pod_key]["spec"])
        return all(used.get(r, 0) + a <= alloc.get(r, 0) for r, a in need.items())

    def _set_pod(self, key: str, fn: Callable[[Obj], None]) -> None:
        p = self.pods[key]
        fn(p)
        p["metadata"]["resourceVersion"] = str(next(self._rv))
        self._emit(self._source(p), "MODIFIED", p)

    @staticmethod
    def _source(p: Obj) -> str:
        if (p["metadata"].get("labels") or {}).get(api.LABEL_MANAGED_BY) == api.MANAGED_BY:
            return "ours"
        if p["spec"].get("schedulerName") == api.DEFAULT_SCHEDULER_NAME:
            return "workload"  # someone else's pod that names the operator as its scheduler
        return "others"

    def advance(self, dt: float) -> None:
        """Move time on: late requests land, kubelets admit, run, finish and remove pods."""
        self.t += dt
        due = [f for t, f in self._later if t <= self.t]
        self._later = [(t, f) for t, f in self._later if t > self.t]
        for f in due:
            f()
        for key in sorted(self.pods):
            p = self.pods.get(key)
            if p is None:
                continue
            md, st = p["metadata"], p["status"]
            if md.get("deletionTimestamp"):
                if self.t >= md["_gone_at"]:
                    self._remove_pod(key)
                continue
            node = p["spec"].get("nodeName")
            if not node:
                continue
            if st["phase"] == "Pending":
                if node not in self.nodes:
                    continue
                if self._fits(node, key):
                    self._set_pod(key, lambda p: p["status"].update(phase="Running", startTime=self.t))
                else:
                    if self._source(p) == "ours":
                        self.rejected.append(key)
                    self._set_pod(key, lambda p: p["status"].update(phase="Failed", reason=f"OutOf{GPU}"))
            elif st["phase"] == "Running":
                ann = md.get("annotations") or {}
                run = ann.get("sim/run-seconds")
                if run is not None and self.t - st["startTime"] >= float(run):
                    outcome = "Failed" if ann.get("sim/fail") else "Succeeded"
                    self._set_pod(key, lambda p, o=outcome: p["status"].update(phase=o))

    def _delete_pod(self, key: str, grace: float | None = None) -> None:
        p = self.pods.get(key)
        if p is None or p["metadata"].get("deletionTimestamp"):
            return
        if p["status"]["phase"] in ("Succeeded", "Failed") or not p["spec"].get("nodeName"):
            self._remove_pod(key)
            return
        p["metadata"]["deletionTimestamp"] = rfc3339(self.t)
        p["metadata"]["_gone_at"] = self.t + (self.terminate_after if grace is None else grace)
        p["metadata"]["resourceVersion"] = str(next(self._rv))
        self._emit(self._source(p), "MODIFIED", p)

    def _remove_pod(self, key: str) -> None:
        p = self.pods.pop(key)
        self._emit(self._source(p), "DELETED", p)

    # -- watch delivery ----------------------------------------------------------------------------

    def _emit(self, source: str, kind: str, obj: Obj) -> None:
        lo, hi = self.watch_delay
        due = max(self._last_due.get(source, 0.0), self.t + (self.rng.uniform(lo, hi) if hi > 0 else 0.0))
        self._last_due[source] = due
        if self.drop_watch and source in SOURCES and self.rng.random() < self.drop_watch:
            self._dropped.add(source)
            return
        heapq_push(self._queue, (due, next(self._seq), source, kind, copy.deepcopy(obj)))

    def relist(self, source: str) -> None:
        """What an informer does after an error: the whole truth, as one RESYNC; the events its old
        watch had not delivered yet are gone with that watch."""
        if self.cache is None:
            return
        self._queue = [e for e in self._queue if e[2] != source]
        heapq.heapify(self._queue)
        if source in ("ours", "workload"):
            items = [trim_pod(p, source) for p in self.pods.values() if self._source(p) == source]
            self.cache.on_pods(f"RESYNC:{source}", items)
        elif source == "others":
            items = [
                trim_pod(p, "others")
                for p in self.pods.values()
                if self._source(p) == "others"
                and p["spec"].get("nodeName")
                and p["status"]["phase"] not in ("Succeeded", "Failed")
            ]
            self.cache.on_pods("RESYNC:others", items)
        elif source == "nodes":
            self.cache.on_nodes("RESYNC", [node_view(n) for n in self.nodes.values()])
        elif source == "namespaces":
            self.cache.on_namespaces("RESYNC", list(self.namespaces.values()))

    def deliver(self) -> None:
        """Hand the cache every watch event that is due (and relist sources that lost one)."""
        c = self.cache
        assert c is not None
        while self._queue and self._queue[0][0] <= self.t:
            _, _, source, kind, obj = heapq_pop(self._queue)
            if source in ("ours", "others", "workload"):
                c.on_pods(kind, trim_pod(obj, source))
            elif source == "nodes":
                c.on_nodes(kind, node_view(obj))
            elif source == "namespaces":
                c.on_namespaces(kind, obj)
            elif source == "jobs":
                c.on_job(kind, obj)
            elif source == "quotas":
                c.on_quota(kind, obj)
            elif source == "centers":
                c.on_center(kind, obj)
        for source in sorted(self._dropped):
            self.relist(source)
        self._dropped.clear()

    def attach(self, cache: Cache) -> None:
        """Connect a cache, as the informers do on start (one RESYNC of each source)."""
        self.cache = cache
        for source in SOURCES:
            self.relist(source)
        self._queue = [e for e in self._queue if e[2] not in SOURCES]
        self.deliver()

    # -- the API server's side of a request ------------------------------------------------------

    def handle(self, method: str, path: str, body: Obj | None, issued: float | None = None) -> Obj:
        parts = path.strip("/").split("/")
        if path.startswith("/api/v1/namespaces/") and parts[4] == "pods":
            ns = parts[3]
            if method == "POST" and len(parts) == 5:
                return self._create_pod(ns, copy.deepcopy(body or {}), self.t if issued is None else issued)
            key = f"{ns}/{parts[5]}"
            if len(parts) == 7:
                return self._pod_subresource(key, parts[6], method, body or {})
            if method == "GET":
                if key not in self.pods:
                    raise ApiError(404, "NotFound", f"pod {key} not found")
                return copy.deepcopy(self.pods[key])
            if method == "DELETE":
                p = self.pods.get(key)
                if p is None:
                    raise ApiError(404, "NotFound", f"pod {key} not found")
                want = ((body or {}).get("preconditions") or {}).get("uid")
                if want and want != p["metadata"]["uid"]:
                    raise ApiError(409, "Conflict", "uid precondition failed")
                self._delete_pod(key)
                return {}
        if path.startswith("/api/v1/namespaces/") and parts[4] == "services":
            return {}
        if path.startswith("/apis/batch/v1/namespaces/") and method == "GET":
            obj = self.owners.get(f"{parts[4]}/{parts[6]}")
            if obj is None:
                raise ApiError(404, "NotFound", f"job {parts[4]}/{parts[6]} not found")
            return copy.deepcopy(obj)
        if "/events" in path:
            self.events.append(body or {})
            return {}
        if path.startswith(api.GROUP_PATH) and "/gpujobs/" in path:
            key = f"{parts[4]}/{parts[6]}"
            obj = self.jobs.get(key)
            if obj is None:
                raise ApiError(404, "NotFound", f"gpujob {key} not found")
            if method == "PATCH" and path.endswith("/status"):
                obj = copy.deepcopy(obj)
                obj["status"] = copy.deepcopy((body or {}).get("status") or {})
                obj["metadata"]["resourceVersion"] = str(next(self._rv))
                self.jobs[key] = obj
                self._emit("jobs", "MODIFIED", obj)
                return obj
            if method == "DELETE":
                want = ((body or {}).get("preconditions") or {}).get("uid")
                if want and want != obj["metadata"]["uid"]:
                    raise ApiError(409, "Conflict", "uid precondition failed")
                self.delete_job(key)
                return {}
        if path.startswith(api.GROUP_PATH) and method == "PATCH" and path.endswith("/status"):
            return {}  # centre and quota status
        raise ApiError(404, "NotFound", f"fake API: no route for {method} {path}")

    def _pod_subresource(self, key: str, sub: str, method: str, body: Obj) -> Obj:
        p = self.pods.get(key)
        if p is None:
            raise ApiError(404, "NotFound", f"pod {key} not found")
        if sub == "binding" and method == "POST":
            if p["spec"].get("nodeName"):
                raise ApiError(
                    409, "Conflict", f"pod {key} is already assigned to node {p['spec']['nodeName']}"
                )
            node = body["target"]["name"]
            self._set_pod(key, lambda o: o["spec"].update(nodeName=node))
            if not self._fits(node, key, by_capacity=True, seen_before=self.t - self.watch_delay[1] - 1.0):
                self.oversold.append(f"{key} bound onto {node}: {self._live_on(node, exclude=key)} in use")
            return {}
        if sub == "eviction" and method == "POST":
            if p["metadata"].get("_pdb_blocks"):
                raise ApiError(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                )
            self._delete_pod(key)
            return {}
        if sub == "status" and method == "PATCH":
            conds = (body.get("status") or {}).get("conditions") or []

            def fn(o: Obj) -> None:
                have = [
                    c
                    for c in o["status"].get("conditions") or []
                    if c["type"] not in {c["type"] for c in conds}
                ]
                o["status"]["conditions"] = have + conds

            self._set_pod(key, fn)
            return {}
        raise ApiError(404, "NotFound", f"fake API: no pod subresource {sub}")

    def workload_pod(
        self,
        namespace: str,
        name: str,
        gpus: int,
        labels: dict | None = None,
        owner: Obj | None = None,
        annotations: dict | None = None,
        run_s: float | None = None,
        priority: int = 0,
        **spec: Any,
    ) -> Obj:
        """Someone else's pod that names the operator as its scheduler (unbound, Pending)."""
        ann = dict(annotations or {})
        if run_s is not None:
            ann["sim/run-seconds"] = str(run_s)
        md = self._meta(name, namespace, labels=dict(labels or {}), annotations=ann)
        if owner is not None:
            md["ownerReferences"] = [owner]
        obj = {
            "metadata": md,
            "spec": {
                "schedulerName": api.DEFAULT_SCHEDULER_NAME,
                "priority": priority,
                "tolerations": [{"key": KWOK_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [{"name": "c", "resources": {"limits": {GPU: str(gpus)}}}],
                **spec,
            },
            "status": {"phase": "Pending"},
        }
        self.pods[f"{namespace}/{name}"] = obj
        self._emit("workload", "ADDED", obj)
        return obj

    def _create_pod(self, ns: str, body: Obj, issued: float) -> Obj:
        name = body["metadata"]["name"]
        key = f"{ns}/{name}"
        if key in self.pods:
            raise ApiError(409, "AlreadyExists", f"pod {key} already exists")
        body["metadata"].update(self._meta(name, ns, labels=body["metadata"].get("labels") or {}))
        body.setdefault("status", {})["phase"] = "Pending"
        self.pods[key] = body
        node = body["spec"].get("nodeName")
        if node and not self._fits(
            node, key, by_capacity=True, seen_before=issued - self.watch_delay[1] - 1.0
        ):
            used = self._live_on(node, exclude=key)
            self.oversold.append(
                f"{key} onto {node}: {used} in use, allocatable {node_view(self.nodes[node]).allocatable}"
                if node in self.nodes
                else f"{key} onto missing {node}"
            )
        self._emit(self._source(body), "ADDED", body)
        return copy.deepcopy(body)

    # -- checks after quiescence ------------------------------------------------------------------

    def violations(self) -> list[str]:
        out = list(f"oversold: {o}" for o in self.oversold)
        for name, n in self.nodes.items():
            alloc = node_view(n).allocatable
            used = self._live_on(name)
            if used.get(GPU, 0) > alloc.get(GPU, 0):
                out.append(
                    f"node {name}: {used.get(GPU)} GPUs held by live pods > allocatable {alloc.get(GPU)}"
                )
        live_by_replica: dict[tuple[str, str], list[str]] = {}
        for key, p in self.pods.items():
            labels = p["metadata"].get("labels") or {}
            if labels.get(api.LABEL_MANAGED_BY) != api.MANAGED_BY or p["status"]["phase"] in (
                "Succeeded",
                "Failed",
            ):
                continue
            live_by_replica.setdefault((labels[api.LABEL_JOB_UID], labels[api.LABEL_REPLICA]), []).append(key)
            job = next(
                (j for j in self.jobs.values() if j["metadata"]["uid"] == labels[api.LABEL_JOB_UID]), None
            )
            if job is None:
                out.append(f"orphan pod {key}: its job is gone")
                continue
            st = job.get("status") or {}
            mine = [pl for pl in st.get("placements") or () if pl.get("pod") == p["metadata"]["name"]]
            if not mine:
                out.append(f"orphan pod {key}: no placement in {job['metadata']['name']}'s status claims it")
            elif p["spec"].get("nodeName") and mine[0]["node"] != p["spec"]["nodeName"]:
                out.append(f"pod {key} on {p['spec']['nodeName']}, its placement says {mine[0]['node']}")
        for (uid, r), keys in live_by_replica.items():
            if len(keys) > 1:
                out.append(f"replica {r} of job {uid} lives twice: {keys}")
        for key, j in self.jobs.items():
            st = j.get("status") or {}
            if st.get("phase") not in api.JOB_PHASES:
                out.append(f"job {key} has no phase: {st}")
        return out


def heapq_push(h: list, item: tuple) -> None:
    import heapq

    heapq.heappush(h, item)


def heapq_pop(h: list) -> tuple:
    import heapq

    return heapq.heappop(h)


class FakeKube:
    """The REST client's interface over a :class:`FakeCluster`, with faults."""

    def __init__(self, cluster: FakeCluster, faults: FaultPolicy = no_faults) -> None:
        self.cluster, self.faults = cluster, faults
        self.gate = None
        self.pool = None

    async def run(self, method: str, path: str, body: Obj | None = None, **_: Any) -> Obj:
        c = self.cluster
        c.requests.append((method, path))
        issued = c.t
        await asyncio.sleep(0)
        f = self.faults(method, path, body) or Fault()
        if f.delay:
            until = c.t + f.delay
            while c.t < until:
                await asyncio.sleep(0)
        if f.status:
            raise ApiError(f.status, "Injected", f.message or f"injected {f.status}")
        result = c.handle(method, path, body, issued)
        if f.lost:
            raise ApiError(0, "Timeout", "injected: the response was lost")
        return result

    def close(self) -> None:
        pass
