"""Side by side with Kueue: the same fleet, the same trace, one run on one fresh cluster.

One local control plane from the test bed (etcd, kube-apiserver, kube-controller-manager with the Job
controller, kube-scheduler, kwok) with the national fleet at ``--scale`` (0.025 ≈ 1,030 GPU nodes).
The same AICenters and GPUQuotas are applied for the operator and mapped to Kueue objects
(:mod:`aicenter_testbed.kueue.mapping`). One trace, the fleet's workload mix (``fleet.job_stream``,
sizes capped at ``--max-gpus``, run times scaled by ``--time-scale``), is replayed through:

* **operator**: one GPUJob per trace job; the operator admits, places, creates and binds the pods;
* **kueue**: one Indexed batch/v1 Job per trace job (parallelism = completions = replicas, the
  queue-name label, the same topology as ``podset-required/preferred-topology``); Kueue v0.17.0
  admits it (topology-aware), the Job controller creates the pods, kube-scheduler binds them.

The two sides run **one after the other on the same nodes**, interleaved (operator, kueue, kueue,
operator, …) and repeated ``--repeats`` times. Only the side under test has its controller running;
before each turn the previous turn's objects and pods are gone.

Per turn: time from submit to all of a job's pods Running (p50/p99 by job size), jobs/s and pods/s
(all jobs started / time from first submit to the last job started), the best 5-s pods/s, GPUs held
by bound pods while jobs wait, multi-pod gangs inside one rack/clique, the longest wait of a
foundation-training gang and how many later, smaller jobs started before it, API writes per pod
(``apiserver_request_total`` from the API server's /metrics before and after), and the controller's
CPU seconds and RSS next to the control plane's CPU, the load average and wall time.

    .venv/bin/python benchmarks/peer_bench.py                       # 1,030 nodes, 3 repeats
    .venv/bin/python benchmarks/peer_bench.py --scale 0.25 --repeats 1 --jobs 2000
    .venv/bin/python benchmarks/peer_bench.py --sides kueue --repeats 1 --jobs 50   # a quick look

Results: ``--out`` (default benchmarks/results/peer_bench-<nodes>) ``.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import urllib.parse
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aicenter import api
from aicenter_testbed import manifests
from aicenter_testbed.cli import add_nodes
from aicenter_testbed.cluster import ClusterClient, LocalCluster
from aicenter_testbed.fleet import (
    GPU_RESOURCE,
    LABEL_CLIQUE,
    LABEL_RACK,
    LABEL_ZONE,
    JobSpec,
    job_stream,
    load_fleet,
    scale_fleet,
)
from aicenter_testbed.kueue.mapping import LABEL_MANAGED_NAMESPACE, batch_job, kueue_objects
from aicenter_testbed.kueue.runner import KueueProcess
from aicenter_testbed.operator import OperatorProcess
from aicenter_testbed.procs import cpu_seconds, rss_mib
from aicenter_testbed.samples import fleet_manifests
from aicenter_testbed.tools import KUEUE_VERSION, ensure_kueue
from aicenter_testbed.waiting import WaitTimeout, wait_for

ROOT = Path(__file__).resolve().parents[1]
G = api.GROUP_PATH
K = "/apis/kueue.x-k8s.io/v1beta2"
LBL_JOB = "bench.aicenter.dev/job"
LBL_SIDE = "bench.aicenter.dev/side"
INDEX_LABELS = (api.LABEL_REPLICA, "batch.kubernetes.io/job-completion-index")
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"}
BACKGROUND = {"leases", "nodes"}  # kwok's node leases and heartbeats: there with or without work
SIZE_BUCKETS = ((1, 1), (2, 4), (5, 16), (17, 10**9))
SIDES = ("operator", "kueue")


def log(msg: str) -> None:
    print(f"[peer-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """A turn could not be measured; the message says what and where the logs are."""


# --------------------------------------------------------------------------------------------------
# the trace


@dataclass(frozen=True)
class TraceJob:
    spec: JobSpec
    run_seconds: float
    namespace: str


def make_trace(fleet, jobs: int, seed: int, max_gpus: int, time_scale: float, run_min: float, run_max: float):
    """The fleet's workload mix, sizes capped at ``max_gpus`` and at the quota's limit for the class."""
    limits = {(c.name, q.name): q.limit for c in fleet.centers for q in c.quotas}
    per_node = {(c.name, p.shape.gpu_class): p.shape.gpus_per_node for c in fleet.centers for p in c.pools}
    per_rack = {(c.name, p.shape.gpu_class): p.shape.nodes_per_rack for c in fleet.centers for p in c.pools}
    out = []
    for j in job_stream(fleet, jobs, seed=seed, max_gpus=max_gpus):
        cap = limits[(j.center, j.quota)].get(j.gpu_class, 0)
        if j.gpus > cap:  # a job larger than its quota's limit could never start on either side
            pn = per_node[(j.center, j.gpu_class)]
            replicas = max(1, cap // pn)
            key = LABEL_RACK if replicas <= per_rack[(j.center, j.gpu_class)] else LABEL_ZONE
            j = JobSpec(**{**j.__dict__, "replicas": replicas, "gpus_per_replica": pn, "topology_key": key})
        run = min(run_max, max(run_min, j.duration_s * time_scale))
        out.append(TraceJob(j, round(run, 1), j.quota))
    return out


def size_bucket(pods: int) -> str:
    for lo, hi in SIZE_BUCKETS:
        if lo <= pods <= hi:
            return f"{lo}" if lo == hi else (f"{lo}-{hi}" if hi < 10**9 else f"{lo}+")
    return "?"


# --------------------------------------------------------------------------------------------------
# watching pods


def stream(client: ClusterClient, path: str, params: dict[str, str], stop: threading.Event):
    """Raw JSON watch events of ``path`` (one connection; returns when it ends or ``stop`` is set)."""
    import urllib3

    api_client = client.api_client(pool_size=2)
    try:
        url = f"{api_client.configuration.host}{path}?{urllib.parse.urlencode(params)}"
        r = api_client.rest_client.pool_manager.request(
            "GET",
            url,
            headers={"Accept": "application/json"},
            preload_content=False,
            timeout=urllib3.Timeout(connect=10, read=90),
        )
        buf = b""
        for chunk in r.stream(1 << 16):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
            if stop.is_set():
                return
    finally:
        api_client.close()


@dataclass
class PodState:
    job: str
    index: str
    gpus: int
    node: str = ""
    phase: str = ""
    gone: bool = False
    t_running: float | None = None
    t_done: float | None = None


@dataclass
class Tracker:
    """Watches the side's pods; knows when each trace job has had all its replicas Running."""

    client: ClusterClient
    side: str
    jobs: dict[str, TraceJob]  # bench name → trace job
    pid: int  # the controller, for RSS samples
    fleet_gpus: int
    pods: dict[str, PodState] = field(default_factory=dict)
    ran: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    started: dict[str, float] = field(default_factory=dict)
    nodes_of: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    submitted: dict[str, float] = field(default_factory=dict)
    samples: list[tuple[float, int, int, int, int, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    synced: threading.Event = field(default_factory=threading.Event)
    all_started: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def start(self) -> None:
        threading.Thread(target=self._watch, daemon=True, name="watch").start()
        threading.Thread(target=self._sample, daemon=True, name="sample").start()
        if not self.synced.wait(60):
            raise BenchError(f"pod watch did not start: {self.errors[-3:]}")

    def _see(self, pod: dict, deleted: bool = False) -> None:
        md, spec, st = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
        labels = md.get("labels") or {}
        job = labels.get(LBL_JOB)
        if job not in self.jobs:
            return
        uid = md["uid"]
        p = self.pods.get(uid)
        if p is None:
            index = next((labels[k] for k in INDEX_LABELS if k in labels), md["name"])
            gpus = sum(
                int(((c.get("resources") or {}).get("requests") or {}).get(GPU_RESOURCE, 0)
                    or ((c.get("resources") or {}).get("limits") or {}).get(GPU_RESOURCE, 0))
                for c in spec.get("containers", [])
            )  # fmt: skip
            p = self.pods[uid] = PodState(job, index, gpus)
        p.node = spec.get("nodeName") or p.node
        p.phase = st.get("phase", p.phase)
        p.gone = p.gone or deleted or bool(md.get("deletionTimestamp")) or p.phase in ("Succeeded", "Failed")
        if p.phase in ("Succeeded", "Failed") and p.t_done is None:
            p.t_done = time.perf_counter()
        if p.phase == "Running" and p.t_running is None:
            now = time.perf_counter()
            p.t_running = now
            self.ran[job].add(p.index)
            self.nodes_of[job].add(p.node)
            if job not in self.started and len(self.ran[job]) >= self.jobs[job].spec.replicas:
                self.started[job] = now
                if len(self.started) == len(self.jobs):
                    self.all_started.set()

    def _watch(self) -> None:
        params = {"labelSelector": f"{LBL_SIDE}={self.side}"}
        while not self.stop.is_set():
            try:
                status, body = self.client.request("GET", f"/api/v1/pods?{urllib.parse.urlencode(params)}")
                if status != 200:
                    raise BenchError(f"list pods answered {status}")
                with self.lock:
                    for pod in body["items"]:
                        self._see(pod)
                self.synced.set()
                rv = body["metadata"]["resourceVersion"]
                w = {**params, "watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true"}
                for ev in stream(self.client, "/api/v1/pods", {**w, "timeoutSeconds": "60"}, self.stop):
                    if ev.get("type") == "ERROR":
                        break  # e.g. 410 Gone: list again
                    if ev.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        with self.lock:
                            self._see(ev["object"], deleted=ev["type"] == "DELETED")
            except Exception as e:  # a dropped watch is listed again; the error is kept for the report
                self.errors.append(f"{type(e).__name__}: {e}")
                time.sleep(0.5)  # back-off before the next list, not synchronisation

    def _sample(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                now = time.perf_counter()
                live = [p for p in self.pods.values() if p.node and not p.gone]
                running = sum(1 for p in live if p.phase == "Running")
                gpus = sum(p.gpus for p in live)
                waiting = sum(1 for j in self.submitted if j not in self.started)
            try:
                rss = rss_mib(self.pid, "VmRSS")
            except OSError:
                rss = 0.0
            self.samples.append((now, running, gpus, len(self.started), waiting, rss))
            self.stop.wait(0.5)


# --------------------------------------------------------------------------------------------------
# API server metrics, processes


def apiserver_writes(client: ClusterClient) -> dict[str, float]:
    """``apiserver_request_total`` of write verbs, summed by ``VERB resource[/subresource]``.

    Writes the API server refused (code ≥ 400) are also under ``ERR <code> VERB resource``.
    """
    status, text = client.request("GET", "/metrics", timeout=60)
    if status != 200 or not isinstance(text, str):
        raise BenchError(f"GET /metrics answered {status}")
    out: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        head, value = line.rsplit(" ", 1)
        labels = dict(
            kv.split("=", 1) for kv in head[len("apiserver_request_total{") : -1].replace('"', "").split(",")
        )
        if labels.get("verb") in WRITE_VERBS and not labels.get("dry_run"):
            res = labels.get("resource", "?") + (
                f"/{labels['subresource']}" if labels.get("subresource") else ""
            )
            out[f"{labels['verb']} {res}"] += float(value)
            if labels.get("code", "200") >= "400":  # refused writes are counted apart too
                out[f"ERR {labels['code']} {labels['verb']} {res}"] += float(value)
    return out


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            out[name] = cpu_seconds(pid)
    return out


def operator_snapshot(rev: str, dest: Path) -> tuple[Path, str]:
    """The operator package and CRDs of ``rev`` (a commit), unpacked into ``dest``; (dir, commit)."""
    commit = subprocess.run(
        ["git", "rev-parse", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "operator", "manifests/crds"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(dest, filter="data")
    return dest, commit


# --------------------------------------------------------------------------------------------------
# one turn


@dataclass
class Bench:
    args: argparse.Namespace
    lc: LocalCluster
    client: ClusterClient
    fleet: Any
    trace: list[TraceJob]
    op_src: Path
    kueue: KueueProcess
    namespaces: list[str]
    products: dict[tuple[str, str], str]
    node_topology: dict[str, dict[str, str]]
    results: list[dict] = field(default_factory=list)

    # -- controllers ---------------------------------------------------------------------------

    def start_operator(self) -> tuple[OperatorProcess, int]:
        op = OperatorProcess(self.lc.kubeconfig, self.lc.data_dir / "operator.log", ["--no-leader-election"])
        op.start(timeout=180)
        want = self.fleet.nodes

        def synced() -> bool:  # its caches hold every node (AICenter status counts them)
            items = self.client.request("GET", f"{G}/aicenters")[1]["items"]
            return sum(((i.get("status") or {}).get("nodes") or {}).get("ready", 0) for i in items) >= want

        try:
            wait_for(synced, 180, "the operator to report every node Ready in its AICenters")
        except WaitTimeout as e:
            log(f"warning: {e}; measuring anyway")
        return op, op.pid

    def stop_operator(self, op: OperatorProcess) -> None:
        op.stop()

    def start_kueue(self) -> int:
        self.kueue.start(timeout=180)

        def active() -> bool:
            items = self.client.request("GET", f"{K}/clusterqueues")[1]["items"]
            ok = [
                i
                for i in items
                if any(
                    c["type"] == "Active" and c["status"] == "True"
                    for c in i.get("status", {}).get("conditions", [])
                )
            ]
            return len(ok) == len(items) > 0

        wait_for(active, 120, f"every ClusterQueue Active (log {self.kueue.log_path})")
        return self.kueue.pid

    # -- objects -------------------------------------------------------------------------------

    def manifest(self, side: str, tj: TraceJob, name: str) -> tuple[str, dict]:
        j = tj.spec
        labels = {LBL_JOB: name, LBL_SIDE: side}
        topology = (j.topology_key, j.topology_mode) if j.topology_key else None
        if side == "operator":
            body = manifests.gpujob(
                name,
                j.replicas,
                j.gpus_per_replica,
                namespace=tj.namespace,
                quota=j.quota,
                gpu_class=j.gpu_class,
                topology=topology,
                priority=j.priority,
                run_seconds=tj.run_seconds,
                labels=labels,
            )
            return f"{G}/namespaces/{tj.namespace}/gpujobs", body
        body = batch_job(
            name,
            tj.namespace,
            j.quota,
            j.replicas,
            j.gpus_per_replica,
            product=self.products[(j.center, j.gpu_class)],
            topology=topology,
            priority=j.priority,
            run_seconds=tj.run_seconds,
            labels=labels,
        )
        return f"/apis/batch/v1/namespaces/{tj.namespace}/jobs", body

    def submit(self, side: str, named: dict[str, TraceJob], tracker: Tracker) -> list[str]:
        errors: list[str] = []
        t0 = time.perf_counter()
        rate = self.args.rate

        def one(item: tuple[int, tuple[str, TraceJob]]) -> None:
            i, (name, tj) = item
            if rate > 0:
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)  # pacing the arrivals, not synchronisation
            path, body = self.manifest(side, tj, name)
            with tracker.lock:
                tracker.submitted[name] = time.perf_counter()
            for attempt in range(6):
                status, resp = self.client.request("POST", path, body=body, timeout=60)
                if status == 201:
                    return
                if status not in (429, 500, 503, 504) or attempt == 5:
                    errors.append(f"{name}: {status} {str(resp)[:300]}")
                    return
                time.sleep(0.5 * (attempt + 1))  # retry back-off after a refused write

        with ThreadPoolExecutor(self.args.workers) as pool:
            list(pool.map(one, enumerate(named.items())))
        return errors

    def clean(self, side: str, timeout: float = 600) -> float:
        """Delete the side's jobs and pods; wait until none are left (with Kueue's Workloads)."""
        t0 = time.perf_counter()
        opts = {"propagationPolicy": "Background"}
        sel = urllib.parse.urlencode({"labelSelector": f"{LBL_SIDE}={side}"})
        for ns in self.namespaces:  # the bench owns these namespaces: everything in them goes
            if side == "operator":
                self.client.request("DELETE", f"{G}/namespaces/{ns}/gpujobs", body=opts)
            else:
                self.client.request("DELETE", f"/apis/batch/v1/namespaces/{ns}/jobs", body=opts)
            self.client.request(
                "DELETE", f"/api/v1/namespaces/{ns}/pods?{sel}", body={"gracePeriodSeconds": 0}
            )

        def empty() -> bool:
            left = len(self.client.request("GET", f"/api/v1/pods?{sel}")[1]["items"])
            if side == "operator":
                left += len(self.client.request("GET", f"{G}/gpujobs")[1]["items"])
            else:
                left += len(self.client.request("GET", "/apis/batch/v1/jobs")[1]["items"])
                left += len(self.client.request("GET", f"{K}/workloads")[1]["items"])
            return left == 0

        wait_for(
            empty, timeout, f"the {side} side's jobs, pods (and Workloads) to be deleted", max_interval=3
        )
        return time.perf_counter() - t0

    def preemptions(self, side: str) -> int:
        n = 0
        if side == "operator":
            for j in self.client.request("GET", f"{G}/gpujobs")[1].get("items", []):
                n += len((j.get("status") or {}).get("preemptions") or [])
        else:
            for w in self.client.request("GET", f"{K}/workloads")[1].get("items", []):
                for ev in ((w.get("status") or {}).get("schedulingStats") or {}).get("evictions") or []:
                    if ev.get("reason") == "Preempted":
                        n += int(ev.get("count", 1))
        return n

    # -- a turn --------------------------------------------------------------------------------

    def turn(self, side: str, repeat: int) -> dict:
        suffix = f"-{side[0]}{repeat}"
        named = {tj.spec.name + suffix: tj for tj in self.trace}
        log(f"turn {side} #{repeat}: starting the controller")
        op = None
        if side == "operator":
            op, pid = self.start_operator()
        else:
            pid = self.start_kueue()
        comp = self.lc.pids()
        try:
            tracker = Tracker(self.client, side, named, pid, self.fleet.gpus)
            tracker.start()
            load0 = os.getloadavg()
            writes0 = apiserver_writes(self.client)
            cpu0 = cpu_of({**comp, "controller": pid, "bench": os.getpid()})
            t0 = time.perf_counter()
            log(f"turn {side} #{repeat}: submitting {len(named)} jobs")
            errors = self.submit(side, named, tracker)
            t_submitted = time.perf_counter()
            if errors:
                raise BenchError(f"{len(errors)} submissions failed, e.g. {errors[:3]}")
            done = tracker.all_started.wait(self.args.side_timeout)
            t1 = time.perf_counter()
            cpu1 = cpu_of({**comp, "controller": pid, "bench": os.getpid()})
            writes1 = apiserver_writes(self.client)
            load1 = os.getloadavg()
            tracker.stop.set()
            rss_hwm = rss_mib(pid)
            preempted = self.preemptions(side)
            if not done:
                log(
                    f"turn {side} #{repeat}: only {len(tracker.started)}/{len(named)} jobs started within"
                    f" {self.args.side_timeout}s (log {op.log if op else self.kueue.log_path})"
                )
            res = self.summarise(side, repeat, tracker, t0, t_submitted, t1, done)
            res.update(
                {
                    "load_avg_before": [round(x, 2) for x in load0],
                    "load_avg_after": [round(x, 2) for x in load1],
                    "cpu_seconds": {k: round(cpu1[k] - cpu0.get(k, 0.0), 1) for k in cpu1},
                    "controller_rss_peak_mib": round(max((s[5] for s in tracker.samples), default=0.0), 1),
                    "controller_rss_hwm_mib": round(rss_hwm, 1),
                    "preemptions": preempted,
                    "watch_errors": tracker.errors[-5:],
                }
            )
            res.update(self.writes(writes0, writes1, res["pods_started"]))
        finally:
            log(f"turn {side} #{repeat}: cleaning up")
            try:
                res_clean = self.clean(side)
            finally:
                if op is not None:
                    self.stop_operator(op)
                else:
                    self.kueue.stop()
        res["cleanup_seconds"] = round(res_clean, 1)
        log(
            f"turn {side} #{repeat}: {res['pods_started']} pods in {res['makespan_s']}s ="
            f" {res['pods_per_s']} pods/s, {res['jobs_per_s']} jobs/s; gang p99"
            f" {res['ttr_gangs']['p99']}s; controller CPU {res['cpu_seconds'].get('controller')}s"
            f" in {res['wall_s']}s wall; load {res['load_avg_after'][0]}"
        )
        return res

    @staticmethod
    def writes(w0: dict[str, float], w1: dict[str, float], pods: int) -> dict:
        delta = {k: w1.get(k, 0.0) - w0.get(k, 0.0) for k in w1}
        errors = {k[4:]: int(v) for k, v in delta.items() if k.startswith("ERR ") and v > 0}
        delta = {k: v for k, v in delta.items() if v > 0 and not k.startswith("ERR ")}
        total = sum(delta.values())
        workload = {k: v for k, v in delta.items() if k.split(" ", 1)[1].split("/")[0] not in BACKGROUND}
        wsum = sum(workload.values())
        top = sorted(workload.items(), key=lambda kv: -kv[1])
        return {
            "api_writes_total": int(total),
            "api_writes_workload": int(wsum),
            "api_writes_per_pod": round(wsum / pods, 2) if pods else None,
            "api_writes_per_pod_all": round(total / pods, 2) if pods else None,
            "api_writes_by_resource": {k: int(v) for k, v in top},
            "api_write_errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])),
            "api_writes_per_pod_accepted": accepted_per_pod(wsum, errors, pods),
        }

    def summarise(
        self, side: str, repeat: int, tr: Tracker, t0: float, t_sub: float, t1: float, done: bool
    ) -> dict:
        jobs = tr.jobs
        started = dict(tr.started)
        ttr = {n: started[n] - tr.submitted[n] for n in started if n in tr.submitted}
        last = max(started.values(), default=t1)
        span = max(1e-9, last - t0)
        pods_started = sum(jobs[n].spec.replicas for n in started)

        def pct(values: list[float]) -> dict:
            if not values:
                return {"n": 0, "p50": None, "p99": None, "max": None}
            v = sorted(values)
            q = statistics.quantiles(v, n=100, method="inclusive") if len(v) > 1 else [v[0]] * 99
            return {"n": len(v), "p50": round(q[49], 2), "p99": round(q[98], 2), "max": round(v[-1], 2)}

        by_size: dict[str, list[float]] = defaultdict(list)
        for n, t in ttr.items():
            by_size[size_bucket(jobs[n].spec.replicas)].append(t)
        gangs = [t for n, t in ttr.items() if jobs[n].spec.replicas > 1]
        # pods/s: all started pods over the whole span, and the best 5-s window
        firsts = sorted(p.t_running for p in tr.pods.values() if p.t_running is not None)
        best5 = 0
        j = 0
        for i, t in enumerate(firsts):
            while firsts[j] < t - 5:
                j += 1
            best5 = max(best5, i - j + 1)
        # fill: what started before the first trace pod finished, i.e. before any capacity came back
        t_first_done = min((p.t_done for p in tr.pods.values() if p.t_done is not None), default=math.inf)
        fill_pods = [
            p.t_running for p in tr.pods.values() if p.t_running is not None and p.t_running < t_first_done
        ]
        fill_jobs = [t for t in started.values() if t < t_first_done]
        fill_pod_rate = len(fill_pods) / (max(fill_pods) - t0) if fill_pods else None
        fill_job_rate = len(fill_jobs) / (max(fill_jobs) - t0) if fill_jobs else None
        # allocation while jobs wait (GPUs held by bound pods / fleet GPUs)
        window = [s for s in tr.samples if t0 <= s[0] <= last and s[4] > 0]
        alloc = [s[2] / tr.fleet_gpus for s in window]
        # locality of multi-pod gangs
        local = {
            "rack": [0, 0, 0, 0],
            "zone": [0, 0, 0, 0],
            "clique": [0, 0, 0, 0],
        }  # jobs, ok, gpus, ok gpus
        for n in started:
            spec = jobs[n].spec
            if spec.replicas < 2:
                continue
            nodes = tr.nodes_of[n]
            for level, key in (("rack", LABEL_RACK), ("zone", LABEL_ZONE), ("clique", LABEL_CLIQUE)):
                values = {self.node_topology.get(x, {}).get(key) for x in nodes}
                if level == "clique" and spec.gpu_class != "GB200":
                    continue
                ok = len(values) == 1 and None not in values
                local[level][0] += 1
                local[level][1] += ok
                local[level][2] += spec.gpus
                local[level][3] += spec.gpus if ok else 0
        locality = {
            lv: {
                "gangs": v[0],
                "inside": v[1],
                "share": round(v[1] / v[0], 3) if v[0] else None,
                "gpu_weighted": round(v[3] / v[2], 3) if v[2] else None,
            }
            for lv, v in local.items()
        }
        # big gangs behind small jobs
        big = [n for n in jobs if jobs[n].spec.kind == "foundation-training"]
        waits = []
        for n in big:
            s = jobs[n].spec
            w = ttr.get(n, (t1 - tr.submitted[n]) if n in tr.submitted else None)
            if w is None:
                continue
            overtook = sum(
                1
                for m in started
                if m != n
                and jobs[m].spec.center == s.center
                and jobs[m].spec.gpu_class == s.gpu_class
                and jobs[m].spec.gpus < s.gpus
                and tr.submitted.get(m, 0) > tr.submitted[n]
                and started[m] < started.get(n, math.inf)
            )
            waits.append((w, overtook, n, n in started))
        waits.sort(reverse=True)
        curve = [(round(s[0] - t0, 2), s[1], s[2]) for s in tr.samples if s[0] >= t0 - 1 and s[0] <= t1 + 1]
        return {
            "side": side,
            "repeat": repeat,
            "complete": done,
            "jobs": len(jobs),
            "jobs_started": len(started),
            "pods": sum(j.spec.replicas for j in jobs.values()),
            "pods_started": pods_started,
            "submit_seconds": round(t_sub - t0, 2),
            "makespan_s": round(span, 2),
            "wall_s": round(t1 - t0, 2),
            "jobs_per_s": round(len(started) / span, 2),
            "pods_per_s": round(pods_started / span, 2),
            "best_5s_pods_per_s": round(best5 / 5, 1),
            "fill_pods": len(fill_pods),
            "fill_pods_per_s": round(fill_pod_rate, 2) if fill_pod_rate else None,
            "fill_jobs_per_s": round(fill_job_rate, 2) if fill_job_rate else None,
            "first_completion_s": round(t_first_done - t0, 2) if t_first_done < math.inf else None,
            "first_pod_running_s": round(firsts[0] - t0, 2) if firsts else None,
            "ttr_all": pct(list(ttr.values())),
            "ttr_gangs": pct(gangs),
            "ttr_by_pods": {
                k: pct(v)
                for k, v in sorted(by_size.items(), key=lambda kv: int(kv[0].split("-")[0].rstrip("+")))
            },
            "alloc_while_waiting_median": round(statistics.median(alloc), 4) if alloc else None,
            "alloc_while_waiting_mean": round(statistics.fmean(alloc), 4) if alloc else None,
            "alloc_max": round(max((s[2] for s in tr.samples), default=0) / tr.fleet_gpus, 4),
            "locality": locality,
            "big_gang_wait_max_s": round(waits[0][0], 1) if waits else None,
            "big_gang_wait_median_s": round(statistics.median(w[0] for w in waits), 1) if waits else None,
            "big_gang_worst": (
                {"job": waits[0][2], "started": waits[0][3], "overtaken_by_smaller_later_jobs": waits[0][1]}
                if waits
                else None
            ),
            "big_gang_overtaken_mean": round(statistics.fmean(w[1] for w in waits), 1) if waits else None,
            "curve": curve,
            "per_job": {
                n: [jobs[n].spec.kind, jobs[n].spec.replicas, round(ttr[n], 2) if n in ttr else None]
                for n in jobs
            },
        }


# --------------------------------------------------------------------------------------------------
# summary, table, plot


def accepted_per_pod(workload_writes: float, errors: dict[str, int], pods: int) -> float | None:
    """Workload writes per pod without those the API server refused (``errors``: "code VERB res")."""
    if not pods:
        return None
    refused = sum(v for k, v in errors.items() if k.split(" ")[2].split("/")[0] not in BACKGROUND)
    return round((workload_writes - refused) / pods, 2)


def normalise(results: list[dict]) -> None:
    """Fill in figures that older result files lack but can be derived."""
    for r in results:
        if "api_writes_per_pod_accepted" not in r and "api_write_errors" in r:
            r["api_writes_per_pod_accepted"] = accepted_per_pod(
                r["api_writes_workload"], r["api_write_errors"], r["pods_started"]
            )


HEADLINES = (
    ("fill_pods_per_s", "pods/s while filling (started before the first pod ended)", "max"),
    ("fill_jobs_per_s", "jobs/s while filling", "max"),
    ("best_5s_pods_per_s", "best 5-s pods/s", "max"),
    ("pods_per_s", "pods/s over the whole trace (all started / span)", "max"),
    ("jobs_per_s", "jobs/s over the whole trace", "max"),
    ("makespan_s", "span: first submit → last job Running (s)", "min"),
    ("first_pod_running_s", "first submit → first pod Running (s)", "min"),
    ("ttr_all.p50", "time to Running p50 (s), all jobs", "min"),
    ("ttr_all.p99", "time to Running p99 (s), all jobs", "min"),
    ("ttr_gangs.p50", "gangs (≥2 pods) p50 (s)", "min"),
    ("ttr_gangs.p99", "gangs (≥2 pods) p99 (s)", "min"),
    ("ttr_by_pods.1.p99", "1-pod jobs p99 (s)", "min"),
    ("ttr_by_pods.2-4.p99", "2–4-pod gangs p99 (s)", "min"),
    ("ttr_by_pods.5-16.p99", "5–16-pod gangs p99 (s)", "min"),
    ("ttr_by_pods.17+.p99", "17–32-pod gangs p99 (s)", "min"),
    ("alloc_while_waiting_mean", "GPUs allocated while jobs wait (time mean)", "max"),
    ("alloc_while_waiting_median", "GPUs allocated while jobs wait (median)", "max"),
    ("alloc_max", "GPUs allocated, peak", "max"),
    ("locality.rack.share", "multi-pod gangs inside one rack", "max"),
    ("locality.clique.share", "GB200 gangs inside one NVLink clique", "max"),
    ("locality.zone.share", "multi-pod gangs inside one zone", "max"),
    ("big_gang_wait_max_s", "longest foundation-training wait (s)", "min"),
    ("big_gang_overtaken_mean", "smaller later jobs that started first (mean per big gang)", ""),
    ("api_writes_per_pod", "API writes per pod (without leases/nodes)", "min"),
    ("api_writes_per_pod_accepted", "… of which the API server accepted", "min"),
    ("cpu_seconds.controller", "controller CPU seconds", "min"),
    ("controller_rss_peak_mib", "controller RSS peak (MiB)", "min"),
    ("cpu_seconds.kube-apiserver", "kube-apiserver CPU seconds", "min"),
    ("preemptions", "preemptions (same policies on both sides; not a score)", ""),
    ("jobs_started", "jobs started", "max"),
)


def dig(d: dict, path: str):
    cur: Any = d
    parts = path.split(".")
    i = 0
    while i < len(parts):
        if not isinstance(cur, dict):
            return None
        # keys may contain dots? no; but bucket keys like "2-4" and "17+" are fine
        cur = cur.get(parts[i])
        i += 1
    return cur


def medians(results: list[dict]) -> dict[str, dict[str, float | None]]:
    normalise(results)
    out: dict[str, dict[str, float | None]] = {}
    for side in SIDES:
        rs = [r for r in results if r.get("side") == side and "error" not in r]
        out[side] = {}
        for key, _, _ in HEADLINES:
            vals = [v for v in (dig(r, key) for r in rs) if isinstance(v, int | float)]
            out[side][key] = round(statistics.median(vals), 3) if vals else None
    return out


def table(med: dict, results: list[dict]) -> str:
    lines = [
        "| measure (median of turns) | operator | Kueue + kube-scheduler | better |",
        "|---|---:|---:|---|",
    ]
    for key, label, better in HEADLINES:
        a, b = med["operator"].get(key), med["kueue"].get(key)
        if a is None and b is None:
            continue
        win = ""
        if better and isinstance(a, int | float) and isinstance(b, int | float) and a != b:
            win = "operator" if (a > b) == (better == "max") else "**Kueue**"
        fa = "–" if a is None else f"{a:g}"
        fb = "–" if b is None else f"{b:g}"
        lines.append(f"| {label} | {fa} | {fb} | {win} |")
    return "\n".join(lines)


def conditions(results: list[dict]) -> str:
    """One line per turn: wall time next to CPU time and the load average (the machine is shared)."""
    lines = [
        "| turn | complete | wall s | load 1-min before → after | controller CPU s | apiserver CPU s"
        " | control plane + controller CPU s |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['side']} #{r['repeat']} | FAILED: {r['error'][:80]} | | | | | |")
            continue
        cpu = r["cpu_seconds"]
        total = sum(v for k, v in cpu.items() if k != "bench")
        lines.append(
            f"| {r['side']} #{r['repeat']} | {r['jobs_started']}/{r['jobs']} | {r['wall_s']:.0f} |"
            f" {r['load_avg_before'][0]:.2f} → {r['load_avg_after'][0]:.2f} |"
            f" {cpu.get('controller', 0):.1f} | {cpu.get('kube-apiserver', 0):.1f} | {total:.1f} |"
        )
    return "\n".join(lines)


def plot(results: list[dict], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed (dev extra): no plot")
        return False
    fig, axes = plt.subplots(2, 1, figsize=(10, 7.5), sharex=True)
    colours = {"operator": "tab:blue", "kueue": "tab:orange"}
    seen = set()
    for r in results:
        if "curve" not in r:
            continue
        t = [c[0] for c in r["curve"]]
        label = (
            None
            if r["side"] in seen
            else ("operator (GPUJobs)" if r["side"] == "operator" else "Kueue + kube-scheduler (Jobs)")
        )
        seen.add(r["side"])
        axes[0].plot(t, [c[1] for c in r["curve"]], color=colours[r["side"]], alpha=0.8, lw=1.2, label=label)
        axes[1].plot(
            t, [100 * c[2] / r["fleet_gpus"] for c in r["curve"]], color=colours[r["side"]], alpha=0.8, lw=1.2
        )
    axes[0].set_ylabel("pods Running")
    axes[0].legend(loc="lower right")
    axes[0].set_title(title, fontsize=10)
    axes[1].set_ylabel("GPUs held by bound pods (%)")
    axes[1].set_xlabel("seconds since the first submit (each line one turn)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------------


def turns_per_side(results: list[dict]) -> str:
    """ "2" or "3/2": the turns each side completed (a run may be stopped before all are done)."""
    counts = sorted({sum(1 for r in results if r.get("side") == s and "error" not in r) for s in SIDES})
    return "/".join(str(c) for c in counts)


def report(path: Path) -> int:
    """Tables and plot again from a saved result (no cluster)."""
    doc = json.loads(path.read_text())
    meta, results = doc["meta"], doc["turns"]
    med = medians(results)
    print(table(med, results))
    print()
    print(conditions(results))
    trace = meta["trace"]
    title = (
        f"{meta['nodes']} nodes, {meta['fleet_gpus']} GPUs; trace {trace['jobs']} jobs /"
        f" {trace['pods']} pods; {turns_per_side(results)} turns/side, interleaved; {meta['cpus']} CPUs"
    )
    plot(results, path.with_suffix(".png"), title)
    doc["medians"] = med
    path.write_text(json.dumps(doc, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.025, help="fleet scale (0.025 ≈ 1,030 nodes)")
    ap.add_argument("--jobs", type=int, default=400, help="trace length (jobs per turn)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-gpus", type=int, default=128, help="cap on a trace job's GPUs")
    ap.add_argument("--time-scale", type=float, default=1 / 120, help="run seconds per second of duration")
    ap.add_argument(
        "--run-min",
        type=float,
        default=20.0,
        help="shortest run time (s): the fill phase lasts at least this",
    )
    ap.add_argument("--run-max", type=float, default=90.0)
    ap.add_argument("--repeats", type=int, default=3, help="turns per side (interleaved)")
    ap.add_argument("--sides", default="operator,kueue")
    ap.add_argument("--rate", type=float, default=0.0, help="arrivals per second (0: one burst)")
    ap.add_argument("--workers", type=int, default=16, help="client threads that submit")
    ap.add_argument("--side-timeout", type=float, default=900, help="seconds for every job to start")
    ap.add_argument(
        "--operator-src",
        default="HEAD",
        help="git revision of the operator to run (snapshot of operator/ and manifests/crds), or 'worktree'",
    )
    ap.add_argument("--kueue-qps", type=float, default=200)
    ap.add_argument("--kueue-burst", type=int, default=400)
    ap.add_argument("--kueue-log-level", type=int, default=2, help="--zap-log-level (2 as Kueue ships)")
    ap.add_argument("--out", default="", help="output path without suffix (.json, .png)")
    ap.add_argument("--dir", default="", help="cluster data directory (kept); default a temporary one")
    ap.add_argument("--report", default="", help="print the tables and redraw the plot of a saved .json")
    args = ap.parse_args()
    if args.report:
        return report(Path(args.report))

    # SIGTERM (or SIGINT in a background job, where it is ignored) ends the run through the cleanups
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sides = [s for s in args.sides.split(",") if s]
    if set(sides) - set(SIDES):
        ap.error(f"--sides takes {', '.join(SIDES)}")
    fleet = scale_fleet(load_fleet(), args.scale)
    trace = make_trace(
        fleet, args.jobs, args.seed, args.max_gpus, args.time_scale, args.run_min, args.run_max
    )
    out_base = Path(args.out or ROOT / f"benchmarks/results/peer_bench-{fleet.nodes}")
    out_base.parent.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "scale": args.scale,
        "nodes": fleet.nodes,
        "fleet_gpus": fleet.gpus,
        "trace": {
            "jobs": len(trace),
            "pods": sum(t.spec.replicas for t in trace),
            "gpus": sum(t.spec.gpus for t in trace),
            "by_kind": {
                k: sum(1 for t in trace if t.spec.kind == k) for k in sorted({t.spec.kind for t in trace})
            },
            "seed": args.seed,
            "max_gpus": args.max_gpus,
            "run_seconds": [args.run_min, args.run_max, round(args.time_scale, 5)],
        },
        "args": vars(args),
        "cpus": os.cpu_count(),
        "kueue_version": KUEUE_VERSION,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    log(
        f"{fleet.nodes} nodes, {fleet.gpus} GPUs; trace {meta['trace']['jobs']} jobs, "
        f"{meta['trace']['pods']} pods, {meta['trace']['gpus']} GPUs; sides {sides} × {args.repeats}"
    )
    t_kueue = time.monotonic()
    ensure_kueue()
    meta["kueue_build_or_cache_seconds"] = round(time.monotonic() - t_kueue, 1)

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="peer-bench-")))
        if args.operator_src == "worktree":
            op_src, commit = ROOT, "worktree"
        else:
            op_src, commit = operator_snapshot(args.operator_src, tmp / "operator-src")
            os.environ["PYTHONPATH"] = os.pathsep.join(
                [str(op_src / "operator"), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
        probe = subprocess.run(
            [sys.executable, "-c", "import aicenter; print(aicenter.__file__)"],
            capture_output=True,
            text=True,
        )
        meta["operator"] = {"source": args.operator_src, "commit": commit, "module": probe.stdout.strip()}
        log(f"operator from {args.operator_src} ({commit[:12]}): {probe.stdout.strip()}")
        data_dir = Path(args.dir) if args.dir else tmp / "cluster"
        lc = LocalCluster(data_dir=data_dir, keep_data=bool(args.dir), expected_nodes=fleet.nodes)
        t = time.monotonic()
        client = lc.start()
        stack.callback(lc.stop)
        info = add_nodes(client, fleet, wait=True, timeout=1800)
        meta["cluster"] = {"start_s": round(time.monotonic() - t, 1), **info, "logs": str(lc.logs)}
        log(f"cluster up: {info}")
        client.kubectl(
            "apply", "--server-side", "-f", str(op_src / "manifests/crds/all.yaml"), timeout=120
        )  # fmt: skip
        client.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        docs = fleet_manifests(fleet, namespaces=True)
        namespaces = []
        for d in docs:
            if d["kind"] == "Namespace":
                d["metadata"]["labels"][LABEL_MANAGED_NAMESPACE] = "true"
                namespaces.append(d["metadata"]["name"])
        import yaml

        client.kubectl(
            "apply", "--server-side", "-f", "-", input="".join(f"---\n{yaml.safe_dump(d)}" for d in docs)
        )  # fmt: skip
        for ns in namespaces:
            client.create_namespace(ns)  # waits for the default ServiceAccount
        # Kueue: CRDs, the process, webhooks, and the objects mapped from the GPUQuotas as served
        kq = KueueProcess(
            client,
            lc.data_dir / "kueue",
            qps=args.kueue_qps,
            burst=args.kueue_burst,
            log_level=args.kueue_log_level,
        )
        stack.callback(kq.uninstall_webhooks)
        stack.callback(kq.stop)
        kq.install_crds()
        kq.start(timeout=180)
        kq.install_webhooks()
        centers = client.request("GET", f"{G}/aicenters")[1]["items"]
        quotas = client.request("GET", f"{G}/gpuquotas")[1]["items"]
        ns_objs = [client.request("GET", f"/api/v1/namespaces/{n}")[1] for n in namespaces]
        node_items = client.request("GET", "/api/v1/nodes?labelSelector=sim.aicenter.dev%2Fsimulated%3Dtrue")[
            1
        ]["items"]
        node_labels = [n["metadata"]["labels"] for n in node_items]
        objs = kueue_objects(
            centers, quotas, ns_objs, node_labels, priorities={t.spec.priority for t in trace}
        )
        kq.apply(objs.all())
        kq.stop()
        meta["kueue"] = {
            "objects": {
                k: len(getattr(objs, k))
                for k in ("topologies", "flavors", "cohorts", "cluster_queues", "local_queues")
            },
            "notes": objs.notes,
            "qps": args.kueue_qps,
            "burst": args.kueue_burst,
            "log": str(kq.log_path),
        }
        topo = {
            n["metadata"]["name"]: {
                k: n["metadata"]["labels"].get(k) for k in (LABEL_RACK, LABEL_ZONE, LABEL_CLIQUE)
            }
            for n in node_items
        }
        bench = Bench(args, lc, client, fleet, trace, op_src, kq, namespaces, objs.product_of, topo)
        order = []
        for r in range(args.repeats):
            pair = sides if r % 2 == 0 else list(reversed(sides))
            order += [(s, r) for s in pair]
        for side, r in order:
            try:
                res = bench.turn(side, r)
            except Exception as e:
                log(f"turn {side} #{r} FAILED: {type(e).__name__}: {e}")
                res = {
                    "side": side,
                    "repeat": r,
                    "error": f"{type(e).__name__}: {e}",
                    "trace": traceback.format_exc()[-3000:],
                }
            res["fleet_gpus"] = fleet.gpus
            bench.results.append(res)
            lc.check_alive()
            Path(f"{out_base}.json").write_text(json.dumps({"meta": meta, "turns": bench.results}, indent=1))
        med = medians(bench.results)
        meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        doc = {"meta": meta, "medians": med, "turns": bench.results}
        Path(f"{out_base}.json").write_text(json.dumps(doc, indent=1))
        title = (
            f"{fleet.nodes} nodes, {fleet.gpus} GPUs; trace {meta['trace']['jobs']} jobs /"
            f" {meta['trace']['pods']} pods; {args.repeats} turns/side, interleaved; {os.cpu_count()} CPUs"
        )
        plotted = plot(bench.results, Path(f"{out_base}.png"), title)
    print(table(med, bench.results))
    print()
    print(conditions(bench.results))
    o, k = med["operator"], med["kueue"]

    def ratio(key: str) -> float | None:
        a, b = o.get(key), k.get(key)
        return a / b if isinstance(a, int | float) and isinstance(b, int | float) and b else None

    fill, span, p99 = ratio("fill_pods_per_s"), ratio("pods_per_s"), ratio("ttr_gangs.p99")
    if fill is not None and p99 is not None:
        print(
            f"\nthroughput operator/Kueue: {fill:.2f}x while filling,"
            f" {span or float('nan'):.2f}x over the trace"
            f" (goal ≥ 2x: {'met' if fill >= 2 else 'NOT met'}); gang p99 time-to-running operator/Kueue"
            f" {p99:.2f} (goal ≤ 0.5: {'met' if p99 <= 0.5 else 'NOT met'})"
        )
    failed = [r for r in bench.results if "error" in r]
    print(f"\nresults: {out_base}.json" + (f", plot {out_base}.png" if plotted else ""))
    if failed:
        print(
            f"{len(failed)} turn(s) failed: "
            + "; ".join(f"{r['side']} #{r['repeat']}: {r['error']}" for r in failed)
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
