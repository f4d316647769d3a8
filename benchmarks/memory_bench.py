"""The operator's memory at fleet size: the real shell and core holding a full national fleet.

Issue #11 asks for operator RSS < 1 GiB with 41,250 nodes, 50,000 running pods and 10,000 pending
GPUJobs. The local test bed cannot bind 50,000 real pods (kwok on 2 cores binds ~14 pods/s), so this
benchmark puts the operator's own state there in one process, without an API server: it is the
state a restarted operator rebuilds from the API (its informers' lists, the seed, take-over) plus a
few scheduling cycles.

What runs is the operator's code: the real ``aicenter.controller`` ``Controller`` (its ``Cache``,
``Applier``, ``Lifecycle``, ``StatusWriter``, ``Events``) and the pure core ``Scheduler``. The bench
only plays the API server:

1. **Nodes.** The fleet preset (``--scale``) as the test bed creates its kwok nodes
   (``aicenter_testbed.sim.nodes.node_manifest`` + what the API server adds), listed in pages of 500
   through JSON, each trimmed by the nodes informer's own ``trim`` (``node_view``) and delivered as
   that informer does: one ``RESYNC`` into the cache. The core gets them at the first ``flush``.
2. **Centres, quotas, namespaces.** ``aicenter_testbed.samples.fleet_manifests`` and
   ``namespace_manifests`` (+ the system namespaces), delivered as ``seed()`` and the namespaces
   informer do.
3. **Running work.** ``--running-pods`` pods (default 50,000 × scale) of GPUJobs drawn from the
   preset's workload mix (``fleet.job_stream``): single-pod inference of 1–4 GPUs, fine-tuning and
   simulation-twin gangs, foundation-training gangs of 32–512 whole nodes; about a quarter of the pods
   are inference, the rest whole-node replicas, which fills the fleet (≈ 99 % of GPUs). Each job is a
   valid GPUJob (``aicenter_testbed.manifests.gpujob``, as the tests submit them) in a quota of its
   centre with room under its guarantee; its status is the write-ahead status the Applier writes
   (``JobRecord.place`` + ``JobRecord.status()``: attempt, placements naming node and pod,
   conditions, phase Running). Its pods are the operator's own bodies (``pods.replica_pod``) as the
   API server returns them, bound and Running, trimmed by the pod informer's trim
   (``trim_pod(o, "ours")``) and delivered as one ``RESYNC``. Jobs arrive through ``seed()``'s path
   (``Cache.rebuild``). ``--foreign-pods`` (default 5,000 × scale) bound pods of other schedulers
   (a monitoring DaemonSet: CPU and memory, no GPUs) go through the foreign informer's trim.
4. **Pending work.** ``--pending`` (default 10,000 × scale) GPUJobs from the same mix, without status,
   in the fleet's quotas, delivered as kopf's event handler does (``Cache.on_job``). This is a
   steady state: running work stays within each quota's guarantee (nothing is lent, so nothing can
   be reclaimed), and a pending job's priority is at most the lowest priority running in its quota
   (the operator would already have preempted for one that could). The fleet is full, so they wait.
5. **Leading.** ``Controller.lead(jobs)`` with a fresh list of every job, as ``take_over`` does, then
   ``--cycles`` scheduling steps (``Controller.step``), each followed by the writes it spawned. The
   API stand-in answers every write with success and plays its effects back as the watches would:
   a created pod appears bound and Running, a deleted pod disappears, a GPUJob status write comes
   back as a MODIFIED event carrying the new status.

Every object the operator receives has been through ``json.dumps``/``json.loads`` in pages, as the
real client parses API responses, so strings are not shared the way literals in a generator would
be. GPUJobs carry ``managedFields`` as the API server returns them (one entry for the creator, one
for the operator's status writes; ``--no-managed-fields`` leaves them out): the operator keeps each
job's object as it was received.

**What is measured.** RSS (``VmRSS``) after the imports, after each phase and after the cycles, and
the peak (``VmHWM``). Before each reading the generator's own objects are dropped (``del`` +
``gc.collect()``); nothing is subtracted. Memory freed by Python stays in the process's arenas and
the C heap, as it would in the operator (which parses the same lists), so RSS is an upper bound of
what the operator's data needs; ``--tracemalloc`` (a separate run: it slows everything and adds its
own overhead to RSS) reports the live Python allocations and where they were made (top 15 lines of
the ``aicenter`` package, and the parsed API objects apart). Times: the operator's part of building
the cache, and each cycle (wall and CPU), and its writes.

**What is not included.** kopf (its watch streams and per-object state), the aiohttp server, the
kubernetes client's connection pools, the informer threads' page buffers and watch streams, and
the lists' raw JSON responses (the bench parses pages of the same size). The import baseline of the
real process (Python + ``aicenter.controller.main`` + kopf + aiohttp + kubernetes, doing nothing)
is measured in a separate interpreter and reported next to the figures.

    .venv/bin/python benchmarks/memory_bench.py                     # the issue's figures (scale 1.0)
    .venv/bin/python benchmarks/memory_bench.py --scale 0.25        # quick check
    .venv/bin/python benchmarks/memory_bench.py --scale 0.25 --tracemalloc
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import inspect
import itertools
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from aicenter import api
from aicenter.controller import pods as podlib
from aicenter.controller.config import Settings
from aicenter.controller.loop import Controller
from aicenter.controller.main import informers
from aicenter.controller.metrics import Metrics
from aicenter.controller.objects import rfc3339
from aicenter.controller.records import record_from
from aicenter_testbed import manifests, samples
from aicenter_testbed.fleet import GPU_RESOURCE, Fleet, iter_nodes, job_stream, load_fleet, scale_fleet
from aicenter_testbed.procs import rss_mib
from aicenter_testbed.sim.nodes import node_manifest

ROOT = Path(__file__).resolve().parents[1]
GOAL_MIB = 1024.0
INFERENCE_SHARE = 0.25  # at least this share of the running pods are single-pod inference
CREATOR = "kubectl-create"  # the manager of a submitted GPUJob's spec
STATUS_MANAGER = "OpenAPI-Generator"  # the kubernetes Python client's field manager (the operator)
UID_NS = uuid.UUID("6f1c8d4e-1d1a-4c7e-9a55-3b1e0c2a7f10")
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease", "aicenter-system")
FOREIGN_NS = "gpu-monitoring"


# -- what the API server adds, and JSON like the client parses it ------------------------------------


def uid_of(*parts: str) -> str:
    return str(uuid.uuid5(UID_NS, "/".join(parts)))


_rv = itertools.count(10_000)


def _fields(v: Any, depth: int = 0) -> dict:
    """A FieldsV1 set for a value as the API server records it for a custom resource: maps field by
    field (with "." for a map the manager created), lists of conditions keyed by type, every other
    list atomic (the GPUJob CRD's lists are atomic, or unknown fields under the template)."""
    if isinstance(v, dict):
        out: dict = {".": {}} if depth >= 1 else {}
        out.update({f"f:{k}": _fields(x, depth + 1) for k, x in v.items()})
        return out
    if isinstance(v, list) and v and all(isinstance(x, dict) and "type" in x for x in v):
        return {f'k:{{"type":"{x["type"]}"}}': _fields(x, 1) for x in v}
    return {}


def managed_entry(manager: str, t: float, fields: dict, subresource: str | None = None) -> dict:
    e = {
        "manager": manager,
        "operation": "Update",
        "apiVersion": api.API_VERSION,
        "time": rfc3339(t),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }
    if subresource:
        e["subresource"] = subresource
    return e


def as_stored(obj: dict, t: float, managed: bool, generation: bool = True) -> dict:
    """``obj`` with the metadata the API server sets (and managedFields, if asked)."""
    md = obj["metadata"]
    md["uid"] = md.get("uid") or uid_of(obj.get("kind", ""), md.get("namespace", ""), md["name"])
    md["resourceVersion"] = str(next(_rv))
    md["creationTimestamp"] = rfc3339(t)
    if generation:
        md["generation"] = 1
    if managed:
        add_managed_fields(obj, t)
    if obj.get("kind") == api.KIND_GPUJOB:
        gpujob_defaults(obj)
    return obj


def gpujob_defaults(obj: dict) -> None:
    """The defaults the GPUJob CRD's schema applies (not in the creator's managedFields)."""
    spec = obj["spec"]
    spec.setdefault("replicas", api.DEFAULT_REPLICAS)
    spec.setdefault("gang", {"policy": api.GANG_ALL_OR_NOTHING})
    spec.setdefault("priority", api.DEFAULT_PRIORITY)
    spec.setdefault("preemptible", api.DEFAULT_PREEMPTIBLE)
    spec.setdefault("backoffLimit", api.DEFAULT_BACKOFF_LIMIT)
    if "topology" in spec:
        spec["topology"].setdefault("mode", api.TOPOLOGY_REQUIRED)


def add_managed_fields(obj: dict, t: float) -> None:
    md = obj["metadata"]
    mine = {k: v for k, v in md.items() if k in ("labels", "annotations")}
    fields = {"f:metadata": _fields(mine)} if mine else {}
    fields.update({"f:spec": _fields(obj.get("spec") or {}, 1)})
    md["managedFields"] = [managed_entry(CREATOR, t, fields)]


def status_entry(status: dict, t: float) -> dict:
    """The managedFields entry of the operator's status writes (merge patches of the subresource)."""
    return managed_entry(STATUS_MANAGER, t, {"f:status": _fields(status, 1)}, "status")


def listed(items: list[dict]) -> list[dict]:
    """A page as the client gets it: serialised by the API server, parsed by ``json.loads``."""
    doc = {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}
    return json.loads(json.dumps(doc))["items"]


def pages(it: Iterable[dict], n: int) -> Iterator[list[dict]]:
    buf: list[dict] = []
    for o in it:
        buf.append(o)
        if len(buf) == n:
            yield listed(buf)
            buf = []
    if buf:
        yield listed(buf)


def api_pod(body: dict, t: float, running: bool = True) -> dict:
    """A pod as the API server returns it once the kubelet (kwok) runs it."""
    md, spec = body["metadata"], body["spec"]
    md["uid"] = uid_of("Pod", md["namespace"], md["name"])
    md["resourceVersion"] = str(next(_rv))
    md["creationTimestamp"] = rfc3339(t)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec["tolerations"] = [
        *(spec.get("tolerations") or []),
        {
            "key": "node.kubernetes.io/not-ready",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
    ]
    spec.setdefault(
        "volumes", [{"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": []}}]
    )
    node = spec.get("nodeName", "")
    ts = rfc3339(t + 2)
    body["status"] = {
        "phase": "Running" if running else "Pending",
        "conditions": [
            {"type": c, "status": "True", "lastProbeTime": None, "lastTransitionTime": ts}
            for c in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
        ],
        "hostIP": f"10.64.{len(node) % 250}.{sum(map(ord, node)) % 250}",
        "podIP": f"10.128.{len(md['name']) % 250}.{sum(map(ord, md['name'])) % 250}",
        "startTime": ts,
        "qosClass": "BestEffort",
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": True,
                "restartCount": 0,
                "started": True,
                "state": {"running": {"startedAt": ts}},
            }
            for c in spec.get("containers") or []
        ],
    }
    return body


# -- the running work: jobs from the preset's mix, placed where nodes have room -----------------------


@dataclass(frozen=True)
class Planned:
    name: str
    kind: str
    quota: str
    center: str
    gpu_class: str
    gpus: int  # per replica
    nodes: tuple[str, ...]  # one per replica
    priority: int
    topology_key: str | None
    topology_mode: str | None
    run_s: int
    started: float
    created: float


class PoolRoom:
    """Free GPUs per node of one (centre, class), bucketed by free count; lowest node index first."""

    def __init__(self, names: list[str], per_node: int) -> None:
        self.names, self.g = names, per_node
        self.free = [per_node] * len(names)
        self.buckets: list[list[int]] = [[] for _ in range(per_node + 1)]
        self.buckets[per_node] = list(range(len(names)))  # sorted: a valid heap

    def whole(self) -> int:
        return len(self.buckets[self.g])

    def take(self, gpus: int, replicas: int) -> list[str] | None:
        if gpus == self.g:  # whole nodes, lowest index first (racks are contiguous)
            if self.whole() < replicas:
                return None
            idx = [heapq.heappop(self.buckets[self.g]) for _ in range(replicas)]
            for i in idx:
                self.free[i] = 0
            return [self.names[i] for i in idx]
        assert replicas == 1
        for f in range(gpus, self.g + 1):  # best fit
            if self.buckets[f]:
                i = heapq.heappop(self.buckets[f])
                self.free[i] = f - gpus
                if self.free[i]:
                    heapq.heappush(self.buckets[self.free[i]], i)
                return [self.names[i]]
        return None


class QuotaRoom:
    """GPUs used per (quota, class) against the guarantees. Running work stays within its quota's
    guarantee: nothing is lent, so nothing can be reclaimed."""

    def __init__(self, fleet: Fleet, rng: random.Random) -> None:
        self.rng = rng
        self.by_center = {c.name: list(c.quotas) for c in fleet.centers}
        self.used: Counter[tuple[str, str]] = Counter()

    def pick(self, center: str, cls: str, gpus: int) -> str | None:
        """A quota of ``center`` with room for ``gpus`` under its guarantee (by room), or None."""
        room = [(q.name, q.guaranteed.get(cls, 0) - self.used[q.name, cls]) for q in self.by_center[center]]
        under = [(n, r) for n, r in room if r >= gpus]
        if not under:
            return None
        chosen = self.rng.choices([n for n, _ in under], [r for _, r in under])[0]
        self.used[chosen, cls] += gpus
        return chosen


def plan_running(fleet: Fleet, target: int, now: float, seed: int) -> tuple[list[Planned], dict]:
    """Jobs from the preset's mix placed on nodes with room until ``target`` pods run.

    First single-pod inference jobs (1–4 GPUs, best fit) until the inference pods plus the nodes
    still wholly free make ``target`` (at least ``INFERENCE_SHARE`` of the pods); then the mix's
    whole-node jobs (fine-tuning, simulation twins, foundation training; a gang is cut to what its
    pool has left) on the free nodes, lowest index first (racks are contiguous). That fills the
    fleet with exactly ``target`` pods when it can. Each job goes to a quota of its centre with room
    under its guarantee (a gang is halved until one has).
    """
    rng = random.Random(seed)
    by_pool: dict[tuple[str, str], list[str]] = {}
    per_node: dict[tuple[str, str], int] = {}
    for n in iter_nodes(fleet):
        by_pool.setdefault((n.center, n.gpu_class), []).append(n.name)
        per_node[n.center, n.gpu_class] = n.shape.gpus_per_node
    rooms = {k: PoolRoom(v, per_node[k]) for k, v in by_pool.items()}
    quotas = QuotaRoom(fleet, rng)
    kinds = {w.kind: w for w in fleet.workloads}
    out: list[Planned] = []
    done = {"inference": 0, "whole": 0}
    skipped = 0

    def whole_free() -> int:
        return sum(r.whole() for r in rooms.values())

    def place(
        name: str, kind: str, center: str, cls: str, replicas: int, gpus: int, prio: int, key, mode
    ) -> int:
        room = rooms[center, cls]
        if gpus == room.g:
            replicas = min(replicas, room.whole())
        q = None
        while replicas > 0:
            q = quotas.pick(center, cls, replicas * gpus)
            if q is not None:
                break
            replicas //= 2
        if q is None:
            return 0
        nodes = room.take(gpus, replicas)
        if nodes is None:  # no partial room left in this pool
            quotas.used[q, cls] -= replicas * gpus
            return 0
        lo, hi = kinds[kind].minutes if kind in kinds else (5, 60)
        run_s = rng.randint(lo, hi) * 60
        started = now - rng.uniform(0.05, 0.95) * run_s
        key = key if replicas > 1 else None
        out.append(
            Planned(
                name,
                kind,
                q,
                center,
                cls,
                gpus,
                tuple(nodes),
                prio,
                key,
                mode if key else None,
                run_s,
                started,
                started - rng.uniform(1, 120),
            )
        )
        return replicas

    misses = 0
    for js in job_stream(fleet, 10**9, seed=seed):
        if js.kind != "inference":
            continue
        if done["inference"] >= INFERENCE_SHARE * target and done["inference"] + whole_free() >= target:
            break
        n = place(
            f"run-{js.name}",
            js.kind,
            js.center,
            js.gpu_class,
            1,
            js.gpus_per_replica,
            js.priority,
            None,
            None,
        )
        done["inference"] += n
        misses = 0 if n else misses + 1
        skipped += not n
        if misses > 10_000:
            break
    misses = 0
    for js in job_stream(fleet, 10**9, seed=seed + 7):
        left = target - done["inference"] - done["whole"]
        if left <= 0 or not whole_free() or misses > 10_000:
            break
        if js.kind == "inference":
            continue
        n = place(
            f"run-{js.name}",
            js.kind,
            js.center,
            js.gpu_class,
            min(js.replicas, left),
            js.gpus_per_replica,
            js.priority,
            js.topology_key,
            js.topology_mode,
        )
        done["whole"] += n
        misses = 0 if n else misses + 1
        skipped += not n
    capacity = sum(r.g * len(r.names) for r in rooms.values())
    free = sum(sum(r.free) for r in rooms.values())
    stats = {
        "jobs": len(out),
        "pods": done["inference"] + done["whole"],
        "inference_pods": done["inference"],
        "whole_node_pods": done["whole"],
        "gpus_used": capacity - free,
        "gpus_capacity": capacity,
        "gpu_fill": round((capacity - free) / capacity, 4),
        "jobs_by_kind": dict(Counter(p.kind for p in out)),
        "pods_by_kind": dict(sum((Counter({p.kind: len(p.nodes)}) for p in out), Counter())),
        "gangs_over_8_pods": sum(1 for p in out if len(p.nodes) > 8),
        "largest_gang": max((len(p.nodes) for p in out), default=0),
        "skipped_draws": skipped,
        "borrowing_quota_classes": sum(
            1
            for c in fleet.centers
            for q in c.quotas
            for cls, g in q.guaranteed.items()
            if quotas.used[q.name, cls] > g
        ),
    }
    return out, stats


def lowest_priorities(plan: list[Planned]) -> dict[str, int]:
    """The lowest priority running in each quota."""
    low: dict[str, int] = {}
    for p in plan:
        low[p.quota] = min(low.get(p.quota, p.priority), p.priority)
    return low


def job_body(p: Planned) -> dict:
    """The GPUJob as submitted (the test bed's builder)."""
    obj = manifests.gpujob(
        p.name,
        len(p.nodes),
        p.gpus,
        namespace=p.quota,
        gpu_class=p.gpu_class,
        topology=(p.topology_key, p.topology_mode) if p.topology_key else None,
        priority=p.priority,
        run_seconds=p.run_s,
    )
    obj["metadata"]["uid"] = uid_of("GPUJob", p.quota, p.name)
    return obj


def running_job(p: Planned, managed: bool) -> dict:
    """The GPUJob with the write-ahead status the Applier writes, then Running (as the lifecycle)."""
    obj = as_stored(job_body(p), p.created, managed)
    rec = record_from(obj)
    rec.quota, rec.center, rec.gpu_class = p.quota, p.center, p.gpu_class
    reps = rec.place(rec.key, p.nodes)  # a gang: one unit
    rec.admitted_at, rec.started_at = p.started, p.started + 2
    msg = f"admitted to {p.center}: {len(reps)} × {p.gpus} {p.gpu_class} on {len(set(p.nodes))} node(s)"
    rec.set_condition("Admitted", True, "Admitted", msg, p.started)
    rec.phase, rec.reason, rec.message = api.PHASE_RUNNING, "Running", f"{len(reps)} replica(s) running"
    rec.set_condition("Running", True, "Running", rec.message, p.started + 2)
    obj["status"] = rec.status()
    if managed:
        obj["metadata"]["managedFields"].append(status_entry(obj["status"], p.started))
    return obj


def running_pods(p: Planned, scheduler: str) -> Iterator[dict]:
    job = job_body(p)
    for r, node in enumerate(p.nodes):
        body = podlib.replica_pod(job, r, 1, node, p.gpus, scheduler, GPU_RESOURCE)
        yield api_pod(body, p.started)


def foreign_pods(node_names: list[str], count: int, now: float) -> Iterator[dict]:
    """Bound pods of another scheduler on GPU nodes (a monitoring DaemonSet): CPU and memory only."""
    for i in range(count):
        node = node_names[(i * len(node_names)) // max(1, count)]
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"dcgm-exporter-{uuid.uuid5(UID_NS, node).hex[:5]}",
                "namespace": FOREIGN_NS,
                "labels": {"app": "dcgm-exporter", "controller-revision-hash": "7c9d8f6b5"},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "DaemonSet",
                        "name": "dcgm-exporter",
                        "uid": uid_of("DaemonSet", FOREIGN_NS, "dcgm-exporter"),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                "nodeName": node,
                "schedulerName": "default-scheduler",
                "containers": [
                    {
                        "name": "exporter",
                        "image": "nvcr.io/nvidia/k8s/dcgm-exporter:4.2.3-4.1.3-ubuntu22.04",
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "128Mi"},
                            "limits": {"memory": "512Mi"},
                        },
                    }
                ],
                "tolerations": [{"operator": "Exists"}],
            },
        }
        body["metadata"]["name"] = f"dcgm-exporter-{i:06d}"
        yield api_pod(body, now - 86_400)


def pending_jobs(
    fleet: Fleet, count: int, now: float, seed: int, managed: bool, cap: dict[str, int]
) -> Iterator[dict]:
    """GPUJobs from the preset's mix, waiting: no status, in their quota's namespace. A job's priority
    is at most the lowest priority running in its quota (``cap``): in a steady state the operator has
    already preempted for any job that could (the fleet is full, so the rest wait)."""
    rng = random.Random(seed)
    for js in job_stream(fleet, count, seed=seed):
        obj = manifests.gpujob(
            f"wait-{js.name}",
            js.replicas,
            js.gpus_per_replica,
            namespace=js.quota,
            gpu_class=js.gpu_class,
            topology=(js.topology_key, js.topology_mode) if js.topology_key else None,
            priority=min(js.priority, cap.get(js.quota, js.priority)),
            run_seconds=js.duration_s,
        )
        yield as_stored(obj, now - rng.uniform(10, 3600), managed)


# -- the API stand-in: every write succeeds; its effects come back as watch events -------------------


class StubKube:
    """Answers every request with success (no I/O) and plays back what the watches would show."""

    def __init__(self, managed: bool) -> None:
        self.gate = None
        self.pool = None
        self.calls: Counter[str] = Counter()
        self.managed = managed
        self.ctl: Controller | None = None
        self.infs: dict[str, Any] = {}

    async def run(self, method: str, path: str, body: dict | None = None, **_: Any) -> dict:
        parts = path.strip("/").split("/")
        if parts[-1] in ("status", "binding", "eviction"):
            what = f"{parts[-3]}/{parts[-1]}"
        else:
            what = parts[-1] if method == "POST" else parts[-2]
        self.calls[f"{method} {what}"] += 1
        asyncio.get_running_loop().call_soon(self._echo, method, parts, body)
        return {}

    def _echo(self, method: str, parts: list[str], body: dict | None) -> None:
        assert self.ctl is not None
        cache, now = self.ctl.cache, self.ctl.clock()
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) >= 5 and parts[4] == "pods":
            if method == "POST" and len(parts) == 5 and body is not None:
                pod = listed([api_pod(json.loads(json.dumps(body)), now)])[0]
                inf = self.infs["pods"]
                inf.deliver("ADDED", inf.trim(pod))
            elif method == "DELETE" and len(parts) == 6:
                p = cache.pods.get(f"{parts[3]}/{parts[5]}")
                if p is not None:
                    self.infs["pods" if p.origin == "ours" else "foreign"].deliver("DELETED", p)
        elif parts[-1] == "status" and api.PLURAL_GPUJOBS in parts and method == "PATCH" and body:
            rec = cache.jobs.get(f"{parts[-4]}/{parts[-2]}")
            if rec is None:
                return
            obj = dict(rec.obj)
            obj["status"] = body["status"]
            md = obj["metadata"] = dict(obj["metadata"])
            md["resourceVersion"] = str(next(_rv))
            if self.managed:
                mf = [e for e in md.get("managedFields") or () if e.get("subresource") != "status"]
                md["managedFields"] = [*mf, status_entry(body["status"], now)]
            cache.on_job("MODIFIED", listed([obj])[0])  # kopf's event handler

    def close(self) -> None:
        pass


# -- measuring ----------------------------------------------------------------------------------------


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Meter:
    def __init__(self, traced: bool) -> None:
        self.traced = traced
        self.marks: list[dict] = []
        self.t0, self.c0 = time.monotonic(), time.process_time()
        self.op_wall = 0.0
        self.op_cpu = 0.0

    def mark(self, step: str, **extra: Any) -> dict:
        gc.collect()
        m = {
            "step": step,
            "rss_mib": round(rss_mib(key="VmRSS"), 1),
            "peak_mib": round(rss_mib(key="VmHWM"), 1),
            "elapsed_s": round(time.monotonic() - self.t0, 1),
            "cpu_s": round(time.process_time() - self.c0, 1),
            **extra,
        }
        if self.traced:
            cur, peak = tracemalloc.get_traced_memory()
            m["traced_mib"] = round(cur / 2**20, 1)
            m["traced_peak_mib"] = round(peak / 2**20, 1)
        self.marks.append(m)
        tm = f"  traced {m['traced_mib']:>7.1f} MiB" if self.traced else ""
        print(
            f"[{m['elapsed_s']:>6.1f}s] {step:<34} RSS {m['rss_mib']:>7.1f} MiB  "
            f"peak {m['peak_mib']:>7.1f} MiB{tm}",
            flush=True,
        )
        return m

    class _Op:
        def __init__(self, meter: Meter) -> None:
            self.meter = meter

        def __enter__(self) -> None:
            self.w, self.c = time.perf_counter(), time.process_time()

        def __exit__(self, *_: Any) -> None:
            self.meter.op_wall += time.perf_counter() - self.w
            self.meter.op_cpu += time.process_time() - self.c

    def op(self) -> Meter._Op:
        """Time the operator's own work (deliveries, rebuilds, flushes), apart from the generator's."""
        return Meter._Op(self)


def malloc_trim_rss() -> float | None:
    """RSS once glibc has handed free heap memory back (how much of RSS is freed-but-kept memory)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return None
    return round(rss_mib(key="VmRSS"), 1)


def import_baseline() -> float | None:
    """RSS of a fresh interpreter that imports what the real operator process imports, and idles."""
    code = (
        "import aicenter.controller.main, kopf, aiohttp, kubernetes, gc; gc.collect();"
        "from aicenter_testbed.procs import rss_mib; print(rss_mib(key='VmRSS'))"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
        )
        return round(float(out.stdout.strip()), 1)
    except (subprocess.SubprocessError, ValueError) as e:
        print(f"import baseline: {e}", file=sys.stderr)
        return None


_LEAVES = (str, bytes, int, float, bool, type(None))


# Shared structures a sampled object points into: counted by the totals, not per object.
_SHARED = frozenset({"Pool", "Domain", "Inventory", "QuotaLedger", "Scheduler", "Cache", "Controller"})


def deep_size(root: Any, seen: set[int], shared: frozenset[str] = _SHARED) -> int:
    """Bytes of ``root`` and what it holds (containers, dataclasses, slots), each object once in
    ``seen``; other objects (locks, functions, the event loop) count only their own size, and the
    shared structures in ``_SHARED`` (a node's pool, the core) nothing unless they are the root."""
    total = 0
    stack = [root]
    while stack:
        o = stack.pop()
        if id(o) in seen or (o is not root and type(o).__name__ in shared):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, _LEAVES):
            continue
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list | tuple | set | frozenset):
            stack.extend(o)
        elif type(o).__module__.startswith("aicenter."):
            # gc.get_referents reads an instance's attributes without materialising its __dict__
            refs = [r for r in gc.get_referents(o) if not isinstance(r, type)]
            if not hasattr(type(o), "__slots__"):
                total += 8 * len(refs) + 16  # the inline values array sys.getsizeof leaves out
            stack.extend(refs)
    return total


def sample_sizes(ctl: Controller, n: int = 300, seed: int = 0) -> list[dict]:
    """Approximate bytes per object of what the operator holds, from samples (strings shared within
    a sample, such as interned label keys, count once), and the estimated totals."""
    cache, rng = ctl.cache, random.Random(seed)
    running = [r for r in cache.jobs.values() if r.placements]
    waiting = [r for r in cache.jobs.values() if not r.placements]
    ours = [p for p in cache.pods.values() if p.origin == "ours"]
    others = [p for p in cache.pods.values() if p.origin == "others"]
    views = list(cache.views.values())
    nodes = list(ctl.sched.inventory.nodes.values())
    workloads = list(ctl.sched.workloads.values())
    out = []

    def add(what: str, items: list, part: Any = lambda x: x) -> None:
        if not items:
            return
        pick = rng.sample(items, min(n, len(items)))
        seen: set[int] = set()
        size = sum(deep_size(part(x), seen) for x in pick) / len(pick)
        out.append(
            {
                "what": what,
                "count": len(items),
                "bytes_each": round(size),
                "mib": round(size * len(items) / 2**20, 1),
            }
        )

    for label, recs in (("running", running), ("pending", waiting)):
        add(f"{label} GPUJob record (JobRecord, all of it)", recs)
        add("  of which the job's object as received (rec.obj)", recs, lambda r: r.obj)
        add("  of which rec.obj managedFields", recs, lambda r: r.obj["metadata"].get("managedFields") or [])
        add("  of which rec.obj status", recs, lambda r: r.obj.get("status") or {})
        add("  of which the status last written (rec.written)", recs, lambda r: r.written or {})
    add("pod of ours (PodRec)", ours)
    add("foreign pod (PodRec)", others)
    add("node as trimmed (NodeView)", views)
    add("core node (NodeState)", nodes)
    add("core workload (Workload)", workloads)
    return out


def totals(ctl: Controller) -> dict:
    """Deep sizes of the whole cache (without the core) and of the whole core, in MiB."""
    seen: set[int] = set()
    t0 = time.monotonic()
    core = deep_size(ctl.sched, seen, frozenset())
    cache = deep_size(ctl.cache, seen, frozenset({"Scheduler"}))
    return {
        "core_scheduler_mib": round(core / 2**20, 1),
        "cache_without_core_mib": round(cache / 2**20, 1),
        "seconds": round(time.monotonic() - t0, 1),
    }


def _bench_lines(fn: Any) -> tuple[str, range]:
    lines, first = inspect.getsourcelines(fn)
    return __file__, range(first, first + len(lines))


def breakdown(snap: tracemalloc.Snapshot, top: int = 15) -> dict:
    """Live allocations by the innermost frame in the aicenter package; parsed API objects apart."""
    pkg = os.sep + "aicenter" + os.sep
    listed_file, listed_range = _bench_lines(listed)
    by_line: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    api_json = api_n = other = other_n = 0
    for st in snap.statistics("traceback"):
        frames = list(reversed(st.traceback))  # innermost first
        label = None
        for f in frames:
            if pkg in f.filename and "aicenter_testbed" not in f.filename:
                label = f"{f.filename.split(pkg, 1)[1]}:{f.lineno}"
                break
            if f.filename == "<string>":  # a generated dataclass __init__ (the operator's records)
                label = "<dataclass __init__>"
                break
        if label is None and any(
            (f.filename == listed_file and f.lineno in listed_range) or f.filename.endswith("json/decoder.py")
            for f in frames
        ):
            api_json += st.size
            api_n += st.count
            continue
        if label is None:
            other += st.size
            other_n += st.count
            continue
        by_line[label] += st.size
        counts[label] += st.count
    total = sum(by_line.values())
    return {
        "aicenter_total_mib": round(total / 2**20, 1),
        "api_objects_mib": round(api_json / 2**20, 1),
        "api_objects_blocks": api_n,
        "other_mib": round(other / 2**20, 1),
        "other_blocks": other_n,
        "top": [
            {"where": k, "mib": round(v / 2**20, 1), "blocks": counts[k]} for k, v in by_line.most_common(top)
        ],
    }


def other_top(snap: tracemalloc.Snapshot, top: int = 8) -> list[dict]:
    """The biggest allocation sites overall (innermost frame), whatever the file."""
    return [
        {
            "where": f"{st.traceback[-1].filename.rsplit(os.sep, 2)[-1]}:{st.traceback[-1].lineno}",
            "mib": round(st.size / 2**20, 1),
            "blocks": st.count,
        }
        for st in snap.statistics("lineno")[:top]
    ]


# -- the run ------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict:
    meter = Meter(args.tracemalloc)
    marks: dict[str, dict] = {"imports": meter.mark("imports (baseline)")}
    now = float(int(time.time()))
    clock = Clock(now)
    kube = StubKube(managed=args.managed_fields)
    settings = Settings(leader_election=False, identity="memory-bench", metrics_port=0)
    ctl = Controller(settings, kube, Metrics(), clock=clock)  # type: ignore[arg-type]
    kube.ctl = ctl
    infs = {i.resource: i for i in informers(ctl, kube, asyncio.get_running_loop())}  # type: ignore[arg-type]
    kube.infs = infs
    cache = ctl.cache
    fleet = scale_fleet(load_fleet(), args.scale)
    counts: dict[str, Any] = {"nodes": fleet.nodes, "gpus": fleet.gpus}

    # 1–2. Namespaces, centres and quotas (the namespaces informer; seed()), then the nodes informer.
    crs = samples.fleet_manifests(fleet)
    ns_objs = listed(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
            for n in (*SYSTEM_NAMESPACES, FOREIGN_NS)
        ]
        + samples.namespace_manifests(fleet)
    )
    for o in ns_objs:
        o["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = o["metadata"]["name"]
    crs = listed([as_stored(o, now - 86_400, args.managed_fields) for o in crs])
    with meter.op():
        infs["namespaces"].deliver("RESYNC", [infs["namespaces"].trim(o) for o in ns_objs])
        for o in crs:
            (cache.on_center if o["kind"] == api.KIND_AICENTER else cache.on_quota)("ADDED", o)
    counts["namespaces"], counts["centers_quotas"] = len(ns_objs), len(crs)
    del crs, ns_objs
    stamp = rfc3339(now - 86_400)
    node_names: list[str] = []
    items: list[Any] = []
    inf = infs["nodes"]
    nodes_iter = (
        as_stored(node_manifest(s, stamp), now - 86_400, managed=False, generation=False)
        for s in iter_nodes(fleet)
    )
    for page in pages(nodes_iter, 500):
        with meter.op():
            items.extend(inf.trim(o) for o in page)
        node_names.extend(o["metadata"]["name"] for o in page)
    del page
    with meter.op():
        inf.deliver("RESYNC", items)
        del items
        cache.flush()  # the core's inventory, as the first step builds it
    node_names = [sys.intern(n) for n in node_names]
    marks["nodes"] = meter.mark(
        "after nodes", nodes=len(cache.views), core_nodes=len(ctl.sched.inventory.nodes)
    )

    # 3. Running work: jobs (seed()'s list) and their pods (the pod informer's RESYNC).
    plan, plan_stats = plan_running(fleet, args.running_pods, now, args.seed)
    counts["running"] = plan_stats
    cap = lowest_priorities(plan)
    fd, plan_path = tempfile.mkstemp(prefix="memory_bench-", suffix=".pickle")
    with os.fdopen(fd, "wb") as f:
        pickle.dump([astuple(p) for p in plan], f)

    def running_list() -> list[dict]:
        with open(plan_path, "rb") as f:
            pl = [Planned(*t) for t in pickle.load(f)]
        out: list[dict] = []
        for page in pages((running_job(p, args.managed_fields) for p in pl), 1000):
            out += page
        return out

    jobs = running_list()
    with meter.op():
        cache.rebuild(jobs, clock())
    del jobs
    inf = infs["pods"]
    items = []
    n_pods = 0
    for page in pages((pod for p in plan for pod in running_pods(p, settings.scheduler_name)), 500):
        with meter.op():
            items.extend(inf.trim(o) for o in page)
        n_pods += len(page)
    del page, plan
    with meter.op():
        inf.deliver("RESYNC", items)
    del items
    inf = infs["foreign"]
    items = []
    for page in pages(foreign_pods(node_names, args.foreign_pods, now), 500):
        with meter.op():
            items.extend(inf.trim(o) for o in page)
    with meter.op():
        inf.deliver("RESYNC", items)
        infs["workload"].deliver("RESYNC", [])
        cache.flush()
    del items, node_names
    marks["running"] = meter.mark(
        "after running work",
        jobs=len(cache.jobs),
        pods=len(cache.pods),
        orphans=len(cache.orphans),
        nodes_with_other_usage=len(cache.usage),
    )

    # 4. Pending work: GPUJobs as kopf's event handler delivers them.
    for page in pages(pending_jobs(fleet, args.pending, now, args.seed + 1, args.managed_fields, cap), 1000):
        with meter.op():
            for o in page:
                cache.on_job("ADDED", o)
    del page
    marks["pending"] = meter.mark("after pending", jobs=len(cache.jobs))

    # 5. Take over: a fresh list of every job, then lead; then cycles with their writes.
    jobs = running_list()
    for page in pages(pending_jobs(fleet, args.pending, now, args.seed + 1, args.managed_fields, cap), 1000):
        jobs += page
    del page
    os.unlink(plan_path)
    build_wall, build_cpu = meter.op_wall, meter.op_cpu
    t0, c0 = time.perf_counter(), time.process_time()
    ctl.lead(jobs, clock())
    lead_wall, lead_cpu = time.perf_counter() - t0, time.process_time() - c0
    del jobs
    marks["lead"] = meter.mark("after take-over (lead)", jobs=len(cache.jobs))
    counts["ready"] = ctl.ready()

    cycles = []
    for i in range(args.cycles):
        clock.t += settings.cycle_interval
        before = Counter(kube.calls)
        admitted0, preempt0 = ctl.metrics.admitted.values[()], ctl.metrics.preemptions.values[()]
        core0 = ctl.metrics.cycle_seconds.sum
        t0, c0 = time.perf_counter(), time.process_time()
        ctl.step(clock())
        step_wall, step_cpu = time.perf_counter() - t0, time.process_time() - c0
        t1, c1 = time.perf_counter(), time.process_time()
        spawned = len(ctl.tasks)
        await ctl.settle(args.settle)
        await asyncio.sleep(0)
        cyc = {
            "cycle": i + 1,
            "step_wall_s": round(step_wall, 3),
            "step_cpu_s": round(step_cpu, 3),
            "core_cycle_s": round(ctl.metrics.cycle_seconds.sum - core0, 3),
            "writes_wall_s": round(time.perf_counter() - t1, 3),
            "writes_cpu_s": round(time.process_time() - c1, 3),
            "tasks_spawned": spawned,
            "tasks_left": len(ctl.tasks),
            "pending": len(ctl.queue),
            "admitted": int(ctl.metrics.admitted.values[()] - admitted0),
            "preempted": int(ctl.metrics.preemptions.values[()] - preempt0),
            "writes": dict(Counter(kube.calls) - before),
        }
        cycles.append(cyc)
        print(
            f"  cycle {i + 1}: step {step_wall:.2f} s wall / {step_cpu:.2f} s CPU "
            f"(core {cyc['core_cycle_s']:.2f} s); writes {cyc['writes_wall_s']:.2f} s; "
            f"pending {cyc['pending']}, admitted {cyc['admitted']}, preempted {cyc['preempted']}; "
            f"{sum(cyc['writes'].values())} writes, {cyc['tasks_left']} tasks left",
            flush=True,
        )
    reasons = Counter(r.reason for r in cache.jobs.values() if r.phase == api.PHASE_PENDING)
    live_ours = sum(1 for p in cache.pods.values() if p.ours and p.live)
    marks["cycles"] = meter.mark(
        f"after {args.cycles} cycles",
        jobs=len(cache.jobs),
        pods=len(cache.pods),
        live_pods_ours=live_ours,
        tasks=len(ctl.tasks),
    )
    counts.update(
        jobs=len(cache.jobs),
        running_jobs=sum(1 for r in cache.jobs.values() if r.placements),
        pending_jobs=sum(1 for r in cache.jobs.values() if r.phase == api.PHASE_PENDING),
        pods_ours=sum(1 for p in cache.pods.values() if p.ours),
        pods_foreign=sum(1 for p in cache.pods.values() if p.origin == "others"),
        pods_created_in_run=n_pods,
        pending_reasons=dict(reasons.most_common()),
        core_workloads=len(getattr(ctl.sched, "workloads", {}) or {}),
        orphans=len(cache.orphans),
    )
    trimmed = malloc_trim_rss()
    if trimmed is not None:
        print(
            f"  (informative: RSS after glibc malloc_trim(0), which the operator never calls: {trimmed} MiB)"
        )
    result: dict[str, Any] = {
        "marks": list(marks.values()),
        "rss_after_malloc_trim_mib": trimmed,
        "counts": counts,
        "cycles": cycles,
        "times": {
            "cache_build_wall_s": round(build_wall, 2),
            "cache_build_cpu_s": round(build_cpu, 2),
            "lead_wall_s": round(lead_wall, 2),
            "lead_cpu_s": round(lead_cpu, 2),
        },
        "writes_total": dict(kube.calls),
    }
    if args.tracemalloc:
        snap = tracemalloc.take_snapshot()
        result["tracemalloc"] = {**breakdown(snap), "overall_top": other_top(snap)}
        del snap
        tracemalloc.stop()
        result["totals"] = totals(ctl)
    result["sizes"] = sample_sizes(ctl)
    # keep the operator alive until here: everything above measured it in place
    del ctl, cache, infs
    kube.ctl, kube.infs = None, {}
    return result


def table(res: dict) -> str:
    m = {x["step"]: x for x in res["marks"]}
    steps = list(m)
    lines = ["", "| step | RSS MiB | peak MiB | goal < 1,024 MiB |", "|---|---:|---:|---|"]
    for s in steps:
        x = m[s]
        ok = "met" if x["rss_mib"] < GOAL_MIB else "**not met**"
        lines.append(f"| {s} | {x['rss_mib']:,.0f} | {x['peak_mib']:,.0f} | {ok} |")
    last = res["marks"][-1]
    peak_ok = "met" if last["peak_mib"] < GOAL_MIB else "**not met**"
    lines.append(f"| **peak (VmHWM)** | | **{last['peak_mib']:,.0f}** | {peak_ok} |")
    if res.get("import_baseline_mib") is not None:
        lines.append(
            f"| a real process's import baseline (Python + operator + kopf + aiohttp + kubernetes) "
            f"| {res['import_baseline_mib']:,.0f} | | |"
        )
    t = res["times"]
    lines += [
        "",
        f"cache build (operator's part): {t['cache_build_wall_s']} s wall, {t['cache_build_cpu_s']} s CPU; "
        f"take-over (lead): {t['lead_wall_s']} s wall, {t['lead_cpu_s']} s CPU; whole run {res['wall_s']} s",
        f"load average {res['load_before']} → {res['load_after']} (1/5/15 min) on {os.cpu_count()} CPUs",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fleet scale (1.0: 41,250 nodes)")
    ap.add_argument("--running-pods", type=int, default=None, help="running pods (default 50,000 × scale)")
    ap.add_argument(
        "--foreign-pods", type=int, default=None, help="others' bound pods (default 5,000 × scale)"
    )
    ap.add_argument("--pending", type=int, default=None, help="pending GPUJobs (default 10,000 × scale)")
    ap.add_argument("--cycles", type=int, default=5, help="scheduling cycles after the take-over")
    ap.add_argument("--settle", type=float, default=30.0, help="seconds to wait for each cycle's writes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--managed-fields",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="GPUJobs carry managedFields as the API server returns them (default: yes)",
    )
    ap.add_argument(
        "--tracemalloc", action="store_true", help="trace allocations (slow; RSS then includes its cost)"
    )
    ap.add_argument("--frames", type=int, default=1, help="traceback depth with --tracemalloc")
    ap.add_argument("--out", type=Path, default=None, help="JSON result (default benchmarks/results/…)")
    args = ap.parse_args(argv)
    s = args.scale
    args.running_pods = args.running_pods if args.running_pods is not None else round(50_000 * s)
    args.foreign_pods = args.foreign_pods if args.foreign_pods is not None else round(5_000 * s)
    args.pending = args.pending if args.pending is not None else round(10_000 * s)
    if args.tracemalloc:
        tracemalloc.start(args.frames)
    load_before = [round(x, 2) for x in os.getloadavg()]
    t0 = time.monotonic()
    print(
        f"memory_bench: scale {s:g}, {args.running_pods:,} running pods, {args.foreign_pods:,} foreign pods, "
        f"{args.pending:,} pending jobs, {args.cycles} cycles; load {load_before}",
        flush=True,
    )
    res = asyncio.run(run(args))
    res["wall_s"] = round(time.monotonic() - t0, 1)
    res["load_before"] = load_before
    res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    res["import_baseline_mib"] = import_baseline()
    res["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    res["python"] = sys.version.split()[0]
    res["cpus"] = os.cpu_count()
    try:
        res["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        res["commit"] = None
    res["goal_mib"] = GOAL_MIB
    last = res["marks"][-1]
    res["goal_met"] = {"rss_after_cycles": last["rss_mib"] < GOAL_MIB, "peak": last["peak_mib"] < GOAL_MIB}
    print(table(res))
    print("\nbytes per object (deep size of samples; estimated totals):")
    for x in res["sizes"]:
        print(f"  {x['what']:<56} {x['count']:>8,} × {x['bytes_each']:>7,} B = {x['mib']:>7.1f} MiB")
    if args.tracemalloc:
        t = res["totals"]
        print(
            f"deep size, all of it: core Scheduler {t['core_scheduler_mib']} MiB, "
            f"cache without the core {t['cache_without_core_mib']} MiB"
        )
        tm = res["tracemalloc"]
        print(
            f"\ntracemalloc (live after the cycles): aicenter package {tm['aicenter_total_mib']} MiB; "
            f"API objects as parsed JSON {tm['api_objects_mib']} MiB; other {tm['other_mib']} MiB"
        )
        for x in tm["top"]:
            print(f"  {x['mib']:>8.1f} MiB  {x['blocks']:>9,} blocks  {x['where']}")
        print("overall, by innermost line:")
        for x in tm["overall_top"]:
            print(f"  {x['mib']:>8.1f} MiB  {x['blocks']:>9,} blocks  {x['where']}")
    suffix = ("-tracemalloc" if args.tracemalloc else "") + (
        "" if args.managed_fields else "-no-managed-fields"
    )
    out = args.out or ROOT / "benchmarks" / "results" / f"memory_bench-{s:g}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
