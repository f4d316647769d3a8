"""Pods bound per second: the operator, kube-scheduler and the API server's own ceiling, interleaved.

One fresh local control plane from the test bed (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok) with the national fleet's simulated GPU nodes at ``--scale`` (0.025 ≈ 1,030
nodes; 0.25 ≈ 10,311). All pods go to the fleet's B200 nodes (8 GPUs each). Three *sides* get the
same work, each in its own namespace:

* **kube-scheduler**: the bench creates N plain pods (nodeSelector on the B200 product);
  kube-scheduler, as the test bed runs it, places them and binds them (``pods/binding``). The test
  bed gives it no configuration file, so its client keeps the shipped rate limit (50 QPS, burst
  100): the bench reads it from kube-scheduler's ``/configz`` and prints what it allows;
* **operator**: the bench creates GPUJobs; the operator (a snapshot of ``--operator-src``, default
  ``HEAD``, run by the test bed's launcher with ``--no-leader-election --namespace bench-op``) admits
  them against one GPUQuota holding every B200 GPU, writes each job's status first, then creates the
  pods with their node set;
* **raw**: the API server's own ceiling on this machine. The bench creates each pod for a scheduler
  that does not exist and at once binds it itself (``pods/binding``) onto a node with room: the
  same two writes per pod as kube-scheduler's path, with no scheduler at all.

Two *shapes* (``--shape single|gang8|both``):

* **single**: N single-pod jobs of 1 GPU (``--pods``, default 1,000): N GPUJobs of 1 × 1 GPU, N
  plain 1-GPU pods for kube-scheduler and raw;
* **gang8**: gangs of 8 replicas × 8 GPUs: N/8 GPUJobs for the operator. kube-scheduler has no
  gangs, so it gets the same number of plain 8-GPU pods (N), placed one by one, all-or-nothing
  not asked of it. Each pod needs a whole B200 node, so N is capped at the B200 nodes, rounded
  down to whole gangs (512 of 515 nodes at 1,030 nodes).

**Turns.** Each side runs ``--repeats`` times per shape (default 3), interleaved: repeat r runs the
sides rotated by r (kube-scheduler, operator, raw; operator, raw, kube-scheduler; raw,
kube-scheduler, operator), so each side runs first, second and third once in three repeats, and the
shapes alternate. Only the side under test has a scheduler running: the operator process runs only
during its turns; kube-scheduler is stopped (SIGTERM) outside its turns and started again before
them (the bench waits until the new process holds the scheduler lease, i.e. its caches are
synced); raw pods name a scheduler nobody runs. Each turn starts when the previous turn's jobs and
pods are deleted and gone.

**Definitions**, per turn:

* *seconds*: from just before the bench's first create request until the bench's pod watch has
  seen every one of the N pods with ``spec.nodeName`` set (bound). Controller start-up and its
  cache sync are before that and not counted.
* *pods/s*: N / seconds. A side's figure is the median of its turns, with the min–max range.
* *operator / kube-scheduler*, *operator / raw*: the ratio of pods/s within each repeat (the turns
  of one repeat run within a minute or two of each other), median and range over the repeats.
* *load*: the 1-minute load average just before the first request and when the last pod is bound.
  The machine may be shared: read wall time next to CPU time.
* *CPU seconds*: user + system time from ``/proc`` over the same window, for the controller (the
  operator's Python process or kube-scheduler; for raw, the bench process itself, which does the
  binding), kube-apiserver, etcd, kwok, kube-controller-manager and the bench process.
* *writes*: the change in the API server's own ``apiserver_request_total`` for POST, PUT, PATCH,
  DELETE, DELETECOLLECTION and APPLY (the counting of ``peer_bench.py``), split by
  ``VERB resource[/subresource]``, from just before the first request (once the count has stood
  still for 2 s, so nothing of the previous turn is left in it) until every pod is Running and the
  count has stood still for 2 s again (at most 60 s each). Writes to ``leases`` and ``nodes`` (kwok's
  heartbeats, there with or without work) are left out. *Writes/pod*: all the rest ÷ N: the bench's
  own creates and binds, the controller's writes, kwok marking each pod Running (``pods/status``),
  kube-controller-manager's Endpoints and EndpointSlices for the operator's headless Services of
  gangs. *Controller writes/pod*: what is left after taking out the bench's own requests (it counts
  them), every ``pods/status`` write (kwok's here: no pod is left unschedulable), the
  Endpoints/EndpointSlices and ``serviceaccounts/token`` (kube-controller-manager's own clients);
  for raw it comes out 0, which checks the attribution.

Results: ``--out`` (default ``benchmarks/results/operator_bench-<nodes>``) ``.json`` (every turn,
with its bound-over-time curve) and ``.png`` (pods bound over time, every side and turn).

    .venv/bin/python benchmarks/operator_bench.py            # 1,030 nodes, both shapes, 3 repeats
    .venv/bin/python benchmarks/operator_bench.py --scale 0.25 --repeats 1   # ~10,311 nodes
    .venv/bin/python benchmarks/operator_bench.py --scale 0.005 --pods 80 --repeats 1   # a quick check
    .venv/bin/python benchmarks/operator_bench.py --report benchmarks/results/operator_bench-1030.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aicenter import api
from aicenter.controller.kube import ApiError, Kube, load_client
from aicenter_testbed import manifests
from aicenter_testbed.cli import add_nodes
from aicenter_testbed.cluster import ClusterClient, ClusterError, LocalCluster
from aicenter_testbed.fleet import LABEL_PRODUCT, load_fleet, scale_fleet
from aicenter_testbed.operator import OperatorProcess
from aicenter_testbed.procs import rss_mib
from aicenter_testbed.sim.pods import gpu_pod_manifest
from aicenter_testbed.waiting import wait_for

# benchmarks/ is not a package: ``python benchmarks/operator_bench.py`` puts this directory first on
# sys.path, so peer_bench's helpers (the API server's write counters, CPU from /proc) import as a module.
from peer_bench import BACKGROUND, apiserver_writes, cpu_of, operator_snapshot

ROOT = Path(__file__).resolve().parents[1]
G = api.GROUP_PATH
SIDES = ("kube-scheduler", "operator", "raw")
SHAPES = {"single": (1, 1), "gang8": (8, 8)}  # replicas per job, GPUs per pod
NS = {"kube-scheduler": "bench-ks", "operator": "bench-op", "raw": "bench-raw"}
PRODUCT, GPU_CLASS, CENTER, QUOTA = "NVIDIA-B200", "B200", "bench", "bench"
NOBODY = "bench-no-such-scheduler"
SCHEDULER_LEASE = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler"
#: writes no controller under test makes here: kwok's pod status, the endpoints controllers' objects,
#: kube-controller-manager's service-account tokens for its own controllers
NOT_CONTROLLER = {"pods/status", "endpoints", "endpointslices", "serviceaccounts/token"}
GOALS = {  # (figure, shape) → the least that meets the goal
    ("operator / raw", "single"): 0.8,
    ("operator / raw", "gang8"): 0.8,
    ("operator / kube-scheduler", "single"): 1.5,
    ("operator / kube-scheduler", "gang8"): 2.5,
}
GOAL_10K = 2.0  # operator / kube-scheduler at ≥ 10,000 nodes
LABELS = {
    "kube-scheduler": "kube-scheduler (plain pods)",
    "operator": "operator (GPUJobs)",
    "raw": "raw: create + bind by the client",
}
COLOURS = {"kube-scheduler": "tab:orange", "operator": "tab:blue", "raw": "tab:gray"}


def log(msg: str) -> None:
    print(f"[operator-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """A turn could not be measured; the message says what."""


# --------------------------------------------------------------------------------------------------
# watching pods


class PodWatch:
    """One namespace's pods, listed then watched: when each was first seen bound, and Running."""

    def __init__(self, kube: Kube, namespace: str, want: int) -> None:
        self.kube, self.ns, self.want = kube, namespace, want
        self.bound: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self.all_bound = threading.Event()
        self.all_running = threading.Event()
        self.synced = threading.Event()
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def start(self) -> PodWatch:
        threading.Thread(target=self._run, daemon=True, name=f"watch-{self.ns}").start()
        if not self.synced.wait(60):
            raise BenchError(f"the pod watch of {self.ns} did not start: {self.errors[-3:]}")
        return self

    def _see(self, pod: dict) -> None:
        now = time.perf_counter()
        name = pod["metadata"]["name"]
        with self.lock:
            if pod.get("spec", {}).get("nodeName") and name not in self.bound:
                self.bound[name] = now
                if len(self.bound) >= self.want:
                    self.all_bound.set()
            if (pod.get("status") or {}).get("phase") == "Running" and name not in self.running:
                self.running[name] = now
                if len(self.running) >= self.want:
                    self.all_running.set()

    def _run(self) -> None:
        path = f"/api/v1/namespaces/{self.ns}/pods"
        while not self.stop.is_set():
            try:
                items, rv = self.kube.list_all(path, [])
                for p in items:
                    self._see(p)
                self.synced.set()
                for ev in self.kube.watch(path, [], rv, timeout_s=60):
                    if self.stop.is_set():
                        return
                    if ev.get("type") == "ERROR":
                        break  # e.g. 410 Gone: list again
                    if ev.get("type") in ("ADDED", "MODIFIED"):
                        self._see(ev["object"])
            except Exception as e:  # a dropped watch is listed again; the error is kept for the report
                self.errors.append(f"{type(e).__name__}: {str(e)[:200]}")
                time.sleep(0.5)  # back-off before the next list, not synchronisation


def curve(times: list[float], t0: float, points: int = 300) -> list[list[float]]:
    """[seconds since t0, pods bound] at up to ``points`` steps (the first and last always)."""
    ts = sorted(times)
    if not ts:
        return []
    step = max(1, len(ts) // points)
    idx = sorted({*range(0, len(ts), step), len(ts) - 1})
    return [[0.0, 0], *([round(ts[i] - t0, 3), i + 1] for i in idx)]


# --------------------------------------------------------------------------------------------------
# the bench


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def scheduler_config(lc: LocalCluster) -> dict:
    """kube-scheduler's client QPS/burst and nodes-to-score as it runs (its /configz), best effort."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # its serving certificate is self-signed
    ctx.load_cert_chain(str(lc.pki / "admin.crt"), str(lc.pki / "admin.key"))
    try:
        url = f"https://127.0.0.1:{lc.ports['scheduler']}/configz"
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            cfg = json.loads(r.read()).get("componentconfig", {})
    except (OSError, ValueError) as e:
        return {"error": f"{type(e).__name__}: {e}"}

    def get(d: dict, key: str) -> Any:  # the internal type is served: Go field names, or json tags
        return next((v for k, v in d.items() if k.lower() == key.lower()), None)

    cc = get(cfg, "clientConnection") or {}
    return {
        "qps": get(cc, "qps"),
        "burst": get(cc, "burst"),
        "percentageOfNodesToScore": get(cfg, "percentageOfNodesToScore"),
        "parallelism": get(cfg, "parallelism"),
    }


def delta(w0: dict[str, float], w1: dict[str, float]) -> dict[str, float]:
    return {k: w1.get(k, 0.0) - w0.get(k, 0.0) for k in w1 if w1.get(k, 0.0) - w0.get(k, 0.0) > 0}


def workload_sum(w: dict[str, float]) -> float:
    return sum(
        v
        for k, v in w.items()
        if not k.startswith("ERR ") and k.split(" ", 1)[1].split("/")[0] not in BACKGROUND
    )


@dataclass
class Bench:
    args: argparse.Namespace
    lc: LocalCluster
    client: ClusterClient
    kube: Kube
    nodes: list[str]  # the B200 nodes
    pool_gpus: int
    op_log: Path
    results: list[dict] = field(default_factory=list)
    scheduler_up: bool = True
    old_holder: str = ""  # kube-scheduler's lease holder when it was stopped

    # -- kube-scheduler ------------------------------------------------------------------------

    def lease_holder(self) -> str:
        try:
            return (self.kube.request("GET", SCHEDULER_LEASE).get("spec") or {}).get("holderIdentity") or ""
        except ApiError:
            return ""

    def set_scheduler(self, up: bool) -> None:
        """Stop kube-scheduler, or start it again and wait until the new process leads (synced)."""
        if up == self.scheduler_up:
            return
        if not up:
            self.old_holder = self.lease_holder()
            self.lc.procs["kube-scheduler"].stop()
            self.scheduler_up = False
            log("kube-scheduler stopped")
            return
        t = time.monotonic()
        self.lc.kill_and_restart("kube-scheduler", timeout=120)
        holder = wait_for(
            lambda: (h := self.lease_holder()) and h != self.old_holder and h,
            90,
            "the restarted kube-scheduler to take its lease",
            max_interval=0.5,
        )
        self.scheduler_up = True
        log(f"kube-scheduler started again, leading as {holder} after {time.monotonic() - t:.1f}s")

    def check_alive(self) -> None:
        dead = [
            n
            for n, p in self.lc.procs.items()
            if not p.running() and not (n == "kube-scheduler" and not self.scheduler_up)
        ]
        if dead:
            raise ClusterError(f"component(s) exited: {', '.join(dead)}")

    # -- the operator --------------------------------------------------------------------------

    def start_operator(self) -> OperatorProcess:
        op = OperatorProcess(
            self.lc.kubeconfig, self.op_log, ["--no-leader-election", "--namespace", NS["operator"]]
        )

        def synced() -> bool:  # its inventory holds every B200 GPU, free, and its ledger the quota
            free = op.metric("aicenter_center_gpus", center=CENTER, gpu_class=GPU_CLASS, state="free")
            guaranteed = op.metric("aicenter_quota_class_gpus", quota=QUOTA, state="guaranteed")
            return free >= self.pool_gpus and guaranteed >= self.pool_gpus

        try:
            op.start(timeout=180)
            wait_for(synced, 180, "the operator to hold every B200 GPU free and the bench quota")
        except BaseException:
            op.stop()
            raise
        return op

    # -- work ----------------------------------------------------------------------------------

    def calls(self, side: str, shape: str, pods: int, tag: str) -> list[list[tuple[str, str, dict]]]:
        """The bench's requests, as one list of calls per worker item (raw: create, then bind)."""
        replicas, gpus = SHAPES[shape]
        ns = NS[side]
        if side == "operator":
            return [
                [
                    (
                        "POST",
                        f"{G}/namespaces/{ns}/gpujobs",
                        manifests.gpujob(f"{tag}-{i}", replicas, gpus, namespace=ns, gpu_class=GPU_CLASS),
                    )
                ]
                for i in range(pods // replicas)
            ]
        if side == "kube-scheduler":
            return [
                [
                    (
                        "POST",
                        f"/api/v1/namespaces/{ns}/pods",
                        gpu_pod_manifest(f"{tag}-{i}", gpus, product=PRODUCT),
                    )
                ]
                for i in range(pods)
            ]
        per_node = 8 // gpus
        slots = [n for _ in range(per_node) for n in self.nodes][:pods]  # round-robin, within capacity
        if len(slots) < pods:
            raise BenchError(f"{pods} pods of {gpus} GPUs do not fit on {len(self.nodes)} B200 nodes")
        out = []
        for i, node in enumerate(slots):
            name = f"{tag}-{i}"
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            }
            pod = gpu_pod_manifest(name, gpus, product=PRODUCT, scheduler_name=NOBODY)
            out.append(
                [
                    ("POST", f"/api/v1/namespaces/{ns}/pods", pod),
                    ("POST", f"/api/v1/namespaces/{ns}/pods/{name}/binding", binding),
                ]
            )
        return out

    def submit(self, items: list[list[tuple[str, str, dict]]]) -> tuple[dict[str, int], list[str]]:
        """Run the calls with ``--workers`` threads; the requests made, by ``VERB resource``, and errors."""
        made: dict[str, int] = defaultdict(int)
        errors: list[str] = []
        lock = threading.Lock()

        def key(method: str, path: str) -> str:
            parts = path.strip("/").split("/")
            i = parts.index("namespaces") + 2
            return f"{method} {'/'.join([parts[i], *parts[i + 2 : i + 3]])}"

        def one(item: list[tuple[str, str, dict]]) -> None:
            for method, path, body in item:
                for attempt in range(6):
                    with lock:
                        made[key(method, path)] += 1
                    try:
                        self.kube.request(method, path, body=body, timeout=60)
                        break
                    except ApiError as e:
                        if e.status not in (0, 429, 500, 503, 504) or attempt == 5:
                            with lock:
                                errors.append(f"{method} {path}: {e}"[:300])
                            return
                        time.sleep(0.5 * (attempt + 1))  # back-off after a refused or failed write

        with ThreadPoolExecutor(self.args.workers) as pool:
            list(pool.map(one, items))
        return dict(made), errors

    def clean(self, side: str, timeout: float = 600) -> float:
        """Delete the side's jobs, Services and pods; wait until none is left."""
        t0 = time.perf_counter()
        ns = NS[side]
        if side == "operator":
            self.kube.request(
                "DELETE", f"{G}/namespaces/{ns}/gpujobs", body={"propagationPolicy": "Background"}
            )
            for svc in self.kube.request("GET", f"/api/v1/namespaces/{ns}/services").get("items", []):
                with contextlib.suppress(ApiError):
                    self.kube.request("DELETE", f"/api/v1/namespaces/{ns}/services/{svc['metadata']['name']}")
        self.kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods", body={"gracePeriodSeconds": 0})

        def empty() -> bool:
            left = len(self.kube.request("GET", f"/api/v1/namespaces/{ns}/pods").get("items", []))
            if side == "operator":
                left += len(self.kube.request("GET", f"{G}/namespaces/{ns}/gpujobs").get("items", []))
                left += len(self.kube.request("GET", f"/api/v1/namespaces/{ns}/services").get("items", []))
            return left == 0

        wait_for(empty, timeout, f"the {side} side's jobs and pods to be gone", max_interval=2)
        return time.perf_counter() - t0

    def quiet(self, limit: float = 60) -> tuple[dict[str, float], float]:
        """The write counters once they stopped moving for 2 s (leases and nodes aside; ≤ ``limit`` s)."""
        prev = apiserver_writes(self.client)
        t_end = time.perf_counter() + limit
        while time.perf_counter() < t_end:
            time.sleep(2)  # the quiet period the counters must hold still for
            cur = apiserver_writes(self.client)
            if workload_sum(cur) == workload_sum(prev):
                return cur, time.perf_counter()
            prev = cur
        log(f"API writes still moving after {limit:.0f}s")
        return prev, time.perf_counter()

    # -- one turn ------------------------------------------------------------------------------

    def turn(self, side: str, shape: str, repeat: int, pods: int) -> dict:
        replicas, gpus = SHAPES[shape]
        tag = f"{shape}-{side[:2]}{repeat}"
        res: dict[str, Any] = {
            "side": side,
            "shape": shape,
            "repeat": repeat,
            "pods": pods,
            "jobs": pods // replicas if side == "operator" else pods,
            "replicas_per_job": replicas if side == "operator" else 1,
            "gpus_per_pod": gpus,
        }
        op: OperatorProcess | None = None
        res_clean = 0.0
        try:
            self.set_scheduler(side == "kube-scheduler")
            op = self.start_operator() if side == "operator" else None
            comp = self.lc.pids()
            controller = (
                op.pid if op else (comp["kube-scheduler"] if side == "kube-scheduler" else os.getpid())
            )
            pids = {k: v for k, v in comp.items() if self.scheduler_up or k != "kube-scheduler"}
            pids |= {"controller": controller, "bench": os.getpid()}
            items = self.calls(side, shape, pods, tag)
            watch = PodWatch(self.kube, NS[side], pods).start()
            w0, _ = self.quiet()  # what the previous turn or the bring-up set going has ended
            load0 = os.getloadavg()
            cpu0 = cpu_of(pids)
            log(f"turn {side} {shape} #{repeat}: {len(items)} submissions, {pods} pods")
            t0 = time.perf_counter()
            made, errors = self.submit(items)
            t_sub = time.perf_counter()
            if errors:
                raise BenchError(f"{len(errors)} requests failed, e.g. {errors[:3]}")
            done = watch.all_bound.wait(max(1.0, self.args.turn_timeout - (t_sub - t0)))
            cpu1 = cpu_of(pids)
            load1 = os.getloadavg()
            with watch.lock:
                bound = dict(watch.bound)
            if not done:
                raise BenchError(
                    f"only {len(bound)}/{pods} pods bound within {self.args.turn_timeout}s"
                    + (f" (operator log {op.log})" if op else "")
                )
            t_last = max(bound.values())
            watch.all_running.wait(120)
            w1, t_settled = self.quiet()
            with watch.lock:
                running = dict(watch.running)
            watch.stop.set()
            seconds = t_last - t0
            res.update(
                {
                    "seconds": round(seconds, 3),
                    "pods_per_s": round(pods / seconds, 2),
                    "submit_seconds": round(t_sub - t0, 3),
                    "first_bound_s": round(min(bound.values()) - t0, 3),
                    "all_running_s": round(max(running.values()) - t0, 3) if len(running) >= pods else None,
                    "writes_window_s": round(t_settled - t0, 2),
                    "load_avg_before": [round(x, 2) for x in load0],
                    "load_avg_after": [round(x, 2) for x in load1],
                    "cpu_seconds": {k: round(cpu1[k] - cpu0.get(k, 0.0), 2) for k in cpu1},
                    "controller_rss_hwm_mib": round(rss_mib(controller), 1),
                    "bench_requests": made,
                    "watch_errors": watch.errors[-5:],
                    "curve": curve(list(bound.values()), t0),
                }
            )
            res.update(self.writes(w0, w1, made, pods))
        finally:
            if op is not None:
                op.stop()
            try:
                res_clean = self.clean(side)
            finally:
                res["cleanup_seconds"] = round(res_clean, 1)
        log(
            f"turn {side} {shape} #{repeat}: {pods} pods bound in {res['seconds']:.1f}s = {res['pods_per_s']}"
            f" pods/s; controller CPU {res['cpu_seconds'].get('controller')}s, apiserver"
            f" {res['cpu_seconds'].get('kube-apiserver')}s; load {res['load_avg_before'][0]} →"
            f" {res['load_avg_after'][0]}; writes/pod {res['writes_per_pod']}"
            f" (controller {res['controller_writes_per_pod']})"
        )
        return res

    @staticmethod
    def writes(w0: dict[str, float], w1: dict[str, float], made: dict[str, int], pods: int) -> dict:
        d = delta(w0, w1)
        refused = {k[4:]: int(v) for k, v in d.items() if k.startswith("ERR ")}
        work = {
            k: int(v)
            for k, v in sorted(d.items(), key=lambda kv: -kv[1])
            if not k.startswith("ERR ") and k.split(" ", 1)[1].split("/")[0] not in BACKGROUND
        }
        controller = {}
        for k, v in work.items():
            if k.split(" ", 1)[1] in NOT_CONTROLLER:
                continue
            left = v - made.get(k, 0)
            if left > 0:
                controller[k] = left
        total = sum(work.values())
        return {
            "writes_by_resource": work,
            "writes_refused": refused,
            "writes_background": {
                k: int(v) for k, v in d.items() if k not in work and not k.startswith("ERR ")
            },
            "writes": total,
            "writes_per_pod": round(total / pods, 2),
            "controller_writes": controller,
            "controller_writes_per_pod": round(sum(controller.values()) / pods, 2),
        }


# --------------------------------------------------------------------------------------------------
# summary, tables, plot


def ok(results: list[dict]) -> list[dict]:
    return [r for r in results if "error" not in r and "pods_per_s" in r]


def med_range(values: list[float]) -> tuple[float, float, float] | None:
    v = [x for x in values if isinstance(x, int | float)]
    return (statistics.median(v), min(v), max(v)) if v else None


def fmt(mr: tuple[float, float, float] | None, spec: str = ".1f", unit: str = "") -> str:
    if mr is None:
        return "–"
    m, lo, hi = mr
    return f"{m:{spec}}{unit} ({lo:{spec}}–{hi:{spec}})"


def ratios(results: list[dict], shape: str, a: str, b: str) -> list[float]:
    """pods/s of side ``a`` ÷ side ``b`` within each repeat of ``shape`` where both were measured."""
    by = {(r["side"], r["repeat"]): r["pods_per_s"] for r in ok(results) if r["shape"] == shape}
    reps = sorted({rep for _, rep in by})
    return [by[(a, rep)] / by[(b, rep)] for rep in reps if (a, rep) in by and (b, rep) in by]


def summarise(results: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for shape in SHAPES:
        rs = [r for r in ok(results) if r["shape"] == shape]
        if not rs:
            continue
        s: dict[str, Any] = {}
        for side in SIDES:
            t = [r for r in rs if r["side"] == side]
            if not t:
                continue
            s[side] = {
                "turns": len(t),
                "pods": t[0]["pods"],
                "pods_per_s": med_range([r["pods_per_s"] for r in t]),
                "seconds": med_range([r["seconds"] for r in t]),
                "controller_cpu_s": med_range([r["cpu_seconds"].get("controller") for r in t]),
                "apiserver_cpu_s": med_range([r["cpu_seconds"].get("kube-apiserver") for r in t]),
                "writes_per_pod": med_range([r["writes_per_pod"] for r in t]),
                "controller_writes_per_pod": med_range([r["controller_writes_per_pod"] for r in t]),
                "writes_per_pod_by_resource": {
                    k: round(statistics.median(r["writes_by_resource"].get(k, 0) / r["pods"] for r in t), 2)
                    for k in sorted({k for r in t for k in r["writes_by_resource"]})
                },
            }
        s["operator / kube-scheduler"] = med_range(ratios(results, shape, "operator", "kube-scheduler"))
        s["operator / raw"] = med_range(ratios(results, shape, "operator", "raw"))
        s["kube-scheduler / raw"] = med_range(ratios(results, shape, "kube-scheduler", "raw"))
        out[shape] = s
    return out


def medians_table(summary: dict) -> str:
    lines = [
        "| shape | side | pods | turns | pods/s, median (range) | seconds | controller CPU s"
        " | kube-apiserver CPU s | writes/pod | controller writes/pod |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for shape, s in summary.items():
        for side in SIDES:
            if side not in s:
                continue
            x = s[side]
            lines.append(
                f"| {shape} | {side} | {x['pods']} | {x['turns']} | **{fmt(x['pods_per_s'])}** |"
                f" {fmt(x['seconds'])} | {fmt(x['controller_cpu_s'])} | {fmt(x['apiserver_cpu_s'])} |"
                f" {fmt(x['writes_per_pod'], '.2f')} | {fmt(x['controller_writes_per_pod'], '.2f')} |"
            )
    return "\n".join(lines)


def turns_table(results: list[dict]) -> str:
    lines = [
        "| # | shape | side | repeat | pods | wall s | pods/s | load 1-min before → after | controller CPU s"
        " | kube-apiserver CPU s | etcd CPU s | bench CPU s | writes/pod | controller writes/pod |",
        "|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(results):
        if "error" in r or "pods_per_s" not in r:
            lines.append(
                f"| {i} | {r['shape']} | {r['side']} | {r['repeat']} | {r.get('pods', '')} |"
                f" FAILED: {str(r.get('error', '?'))[:90]} | | | | | | | | |"
            )
            continue
        c = r["cpu_seconds"]
        lines.append(
            f"| {i} | {r['shape']} | {r['side']} | {r['repeat']} | {r['pods']} | {r['seconds']:.1f} |"
            f" {r['pods_per_s']:.1f} | {r['load_avg_before'][0]:.2f} → {r['load_avg_after'][0]:.2f} |"
            f" {c.get('controller', 0):.1f} | {c.get('kube-apiserver', 0):.1f} | {c.get('etcd', 0):.1f} |"
            f" {c.get('bench', 0):.1f} | {r['writes_per_pod']:.2f} | {r['controller_writes_per_pod']:.2f} |"
        )
    return "\n".join(lines)


def writes_table(summary: dict, top: int = 8) -> str:
    lines = ["Where the writes go, per pod (median of the turns; leases and nodes left out):"]
    for shape, s in summary.items():
        for side in SIDES:
            if side not in s:
                continue
            by = sorted(s[side]["writes_per_pod_by_resource"].items(), key=lambda kv: -kv[1])
            shown = ", ".join(f"{k} {v:g}" for k, v in by[:top] if v > 0)
            lines.append(f"- {shape} / {side}: {shown}")
    return "\n".join(lines)


def goals_table(summary: dict, meta: dict) -> str:
    nodes = meta["nodes"]
    lines = ["| figure | measured (median, range) | goal | |", "|---|---|---|---|"]

    def row(label: str, mr, goal: float, pct: bool) -> None:
        if mr is None:
            lines.append(f"| {label} | not measured | ≥ {goal:g}× | – |")
            return
        shown = f"{100 * mr[0]:.0f} % ({100 * mr[1]:.0f}–{100 * mr[2]:.0f} %)" if pct else fmt(mr, ".2f", "×")
        want = f"≥ {100 * goal:.0f} %" if pct else f"≥ {goal:g}×"
        lines.append(f"| {label} | {shown} | {want} | {'met' if mr[0] >= goal else '**not met**'} |")

    for shape, s in summary.items():
        what = "1-pod jobs of 1 GPU" if shape == "single" else "gangs of 8 × 8 GPUs"
        n = s.get("operator", {}).get("pods", "?")
        row(
            f"operator pods/s ÷ raw, {n} pods in {what}",
            s["operator / raw"],
            GOALS[("operator / raw", shape)],
            True,
        )
        row(
            f"operator ÷ kube-scheduler, {n} pods in {what}",
            s["operator / kube-scheduler"],
            GOALS[("operator / kube-scheduler", shape)],
            False,
        )
        if nodes >= 10_000:
            row(
                f"operator ÷ kube-scheduler at {nodes:,} nodes ({shape})",
                s["operator / kube-scheduler"],
                GOAL_10K,
                False,
            )
    if nodes < 10_000:
        lines.append(
            f"| operator ÷ kube-scheduler at ≥ 10,000 nodes | not measured (this run: {nodes:,} nodes;"
            " `--scale 0.25`) | ≥ 2× | – |"
        )
    for shape, s in summary.items():
        mr = s.get("kube-scheduler / raw")
        if mr:
            shown = f"{100 * mr[0]:.0f} % ({100 * mr[1]:.0f}–{100 * mr[2]:.0f} %)"
            lines.append(f"| context: kube-scheduler pods/s ÷ raw, {shape} | {shown} | | |")
    sc = meta.get("kube_scheduler") or {}
    qps, burst = sc.get("qps"), sc.get("burst")
    for shape, s in summary.items():
        n = s.get("kube-scheduler", {}).get("pods")
        if isinstance(qps, int | float) and isinstance(burst, int | float) and qps > 0 and n and n > burst:
            cap = n / ((n - burst) / qps)  # its client's token bucket: the burst at once, then qps per second
            lines.append(
                f"| context: what kube-scheduler's client rate limit ({qps:g} QPS, burst {burst:g}) allows"
                f" for {n} bindings, {shape} | {cap:.1f} pods/s | | |"
            )
    return "\n".join(lines)


def conditions(meta: dict, results: list[dict]) -> str:
    loads = [x for r in ok(results) for x in (r["load_avg_before"][0], r["load_avg_after"][0])]
    sc = meta.get("kube_scheduler") or {}
    op = meta.get("operator") or {}
    parts = [
        f"{meta['nodes']:,} nodes ({meta['pool_nodes']} B200 nodes, {meta['pool_gpus']:,} B200 GPUs)",
        f"{meta['cpus']} CPUs",
        f"1-min load average {min(loads):.2f}–{max(loads):.2f} over the turns"
        if loads
        else "no turn measured",
        f"kube-scheduler client QPS/burst {sc.get('qps')}/{sc.get('burst')}"
        f" (percentageOfNodesToScore {sc.get('percentageOfNodesToScore')})",
        f"operator {op.get('source', '?')} = {op.get('commit', '?')[:10]}"
        + (" + modified operator/ files" if op.get("modified") else ""),
        f"{meta['args']['workers']} client threads",
    ]
    return "Conditions: " + "; ".join(parts) + "."


def plot(results: list[dict], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed (dev extra): no plot")
        return False
    shapes = [s for s in SHAPES if any(r["shape"] == s and r.get("curve") for r in results)]
    if not shapes:
        return False
    fig, axes = plt.subplots(1, len(shapes), figsize=(6.5 * len(shapes), 5), squeeze=False)
    styles = ("-", "--", ":", "-.")
    for ax, shape in zip(axes[0], shapes, strict=True):
        seen = set()
        for r in results:
            if r["shape"] != shape or not r.get("curve"):
                continue
            side = r["side"]
            label = None
            if side not in seen:
                med = statistics.median(
                    x["pods_per_s"] for x in ok(results) if x["shape"] == shape and x["side"] == side
                )
                label = f"{LABELS[side]}: median {med:.1f} pods/s"
            seen.add(side)
            c = r["curve"]
            ax.step(
                [p[0] for p in c],
                [p[1] for p in c],
                where="post",
                color=COLOURS[side],
                ls=styles[r["repeat"] % len(styles)],
                alpha=0.85,
                lw=1.3,
                label=label,
            )
        n = next(r["pods"] for r in results if r["shape"] == shape and "pods" in r)
        what = (
            "single-pod jobs, 1 GPU"
            if shape == "single"
            else "gangs of 8 × 8 GPUs (kube-scheduler: plain 8-GPU pods)"
        )
        ax.set_title(f"{n} pods: {what}", fontsize=9)
        ax.set_xlabel("seconds since the first create (line style: repeat)")
        ax.set_ylabel("pods bound")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def print_report(doc: dict) -> None:
    meta, results = doc["meta"], doc["turns"]
    summary = summarise(results)
    doc["summary"] = summary
    print(medians_table(summary))
    print()
    print(turns_table(results))
    print()
    print(writes_table(summary))
    print()
    print(goals_table(summary, meta))
    print()
    print(conditions(meta, results))
    if any(r["shape"] == "gang8" for r in results):
        print(
            "gang8: the operator gets GPUJobs of 8 replicas; kube-scheduler has no gangs and gets the same"
            " number of plain 8-GPU pods, placed one by one."
        )
    failed = [r for r in results if "error" in r]
    if failed:
        print(
            f"{len(failed)} turn(s) failed: "
            + "; ".join(f"{r['side']} {r['shape']} #{r['repeat']}: {r['error'][:200]}" for r in failed)
        )


def plot_title(meta: dict, results: list[dict]) -> str:
    per = sorted(
        {
            sum(1 for r in ok(results) if (r["side"], r["shape"]) == k)
            for k in {(r["side"], r["shape"]) for r in results}
        }
    )
    return (
        f"{meta['nodes']:,} nodes; {'/'.join(map(str, per))} turns per side and shape, interleaved;"
        f" {meta['cpus']} CPUs, load {min((r['load_avg_before'][0] for r in ok(results)), default=0):.1f}–"
        f"{max((r['load_avg_after'][0] for r in ok(results)), default=0):.1f}"
    )


def report(path: Path) -> int:
    """The tables and the plot again from a saved result (no cluster)."""
    doc = json.loads(path.read_text())
    print_report(doc)
    plot(doc["turns"], path.with_suffix(".png"), plot_title(doc["meta"], doc["turns"]))
    path.write_text(json.dumps(doc, indent=1))
    return 0


# --------------------------------------------------------------------------------------------------


def order(sides: list[str], shapes: list[str], repeats: int) -> list[tuple[str, str, int]]:
    """Repeat r runs the sides rotated by r (a Latin square over the repeats), the shapes alternating."""
    out = []
    for r in range(repeats):
        for shape in shapes if r % 2 == 0 else shapes[::-1]:
            k = (r + list(SHAPES).index(shape)) % len(sides)
            out += [(side, shape, r) for side in sides[k:] + sides[:k]]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--scale", type=float, default=0.025, help="fleet scale (0.025 ≈ 1,030 nodes, 0.25 ≈ 10,311)"
    )
    ap.add_argument("--pods", type=int, default=1000, help="pods per turn (gang8: capped at the B200 nodes)")
    ap.add_argument("--shape", choices=["single", "gang8", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=3, help="turns per side and shape, interleaved")
    ap.add_argument("--sides", default=",".join(SIDES), help="a subset of " + ",".join(SIDES))
    ap.add_argument("--workers", type=int, default=32, help="client threads that submit")
    ap.add_argument(
        "--turn-timeout", type=float, default=600, help="seconds for every pod of a turn to be bound"
    )
    ap.add_argument(
        "--operator-src",
        default="HEAD",
        help="git revision of the operator to run (snapshot of operator/ and manifests/crds) or 'worktree'",
    )
    ap.add_argument("--out", default="", help="output path without suffix (.json, .png)")
    ap.add_argument(
        "--dir", default="", help="cluster data directory (kept, with the logs); default a temporary one"
    )
    ap.add_argument("--report", default="", help="print the tables and redraw the plot of a saved .json")
    args = ap.parse_args()
    if args.report:
        return report(Path(args.report))
    # SIGTERM (or SIGINT in a background job, where it is ignored) ends the run through the cleanups
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sides = [s for s in args.sides.split(",") if s]
    if not sides or set(sides) - set(SIDES):
        ap.error(f"--sides takes {', '.join(SIDES)}")
    shapes = list(SHAPES) if args.shape == "both" else [args.shape]
    fleet = scale_fleet(load_fleet(), args.scale)
    pool_nodes = sum(p.nodes for c in fleet.centers for p in c.pools if p.shape.product == PRODUCT)
    pool_gpus = pool_nodes * 8
    pods_for = {"single": min(args.pods, pool_gpus), "gang8": min(args.pods, pool_nodes) // 8 * 8}
    for shape in shapes:
        if pods_for[shape] < args.pods:
            log(
                f"{shape}: {args.pods} pods do not fit on {pool_nodes} B200 nodes:"
                f" {pods_for[shape]} pods instead"
            )
        if pods_for[shape] <= 0:
            ap.error(f"no room for {shape} on {pool_nodes} B200 nodes")
    out_base = Path(args.out or ROOT / f"benchmarks/results/operator_bench-{fleet.nodes}")
    out_base.parent.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "scale": args.scale,
        "nodes": fleet.nodes,
        "fleet_gpus": fleet.gpus,
        "pool_nodes": pool_nodes,
        "pool_gpus": pool_gpus,
        "pods": {s: pods_for[s] for s in shapes},
        "args": vars(args),
        "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    log(f"{fleet.nodes} nodes ({pool_nodes} B200); shapes {pods_for}; sides {sides} × {args.repeats}")
    results: list[dict] = []

    def save(final: bool = False) -> None:
        doc = {"meta": meta, "turns": results}
        if final:
            meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            doc["summary"] = summarise(results)
        Path(f"{out_base}.json").write_text(json.dumps(doc, indent=1))

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="operator-bench-")))
        if args.operator_src == "worktree":
            dirty = git("status", "--porcelain", "--", "operator", "manifests/crds")
            op_src, commit = ROOT, git("rev-parse", "HEAD")
            meta["operator"] = {"source": "worktree", "commit": commit, "modified": dirty.splitlines()}
        else:  # a snapshot: commits landing in the working tree during the run do not change it
            op_src, commit = operator_snapshot(args.operator_src, tmp / "operator-src")
            os.environ["PYTHONPATH"] = os.pathsep.join(
                [str(op_src / "operator"), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
            meta["operator"] = {"source": args.operator_src, "commit": commit, "modified": []}
        probe = subprocess.run(
            [sys.executable, "-c", "import aicenter; print(aicenter.__file__)"],
            capture_output=True,
            text=True,
        )
        meta["operator"]["module"] = probe.stdout.strip()
        log(f"operator from {args.operator_src} ({commit[:12]}): {probe.stdout.strip()}")
        data_dir = Path(args.dir) if args.dir else tmp / "cluster"
        lc = LocalCluster(data_dir=data_dir, keep_data=bool(args.dir), expected_nodes=fleet.nodes)
        t = time.monotonic()
        stack.callback(lc.stop)
        client = lc.start()
        info = add_nodes(client, fleet, wait=True)
        meta["cluster"] = {"start_s": round(time.monotonic() - t, 1), **info}
        log(f"cluster up: {info}")
        kube = Kube(load_client(str(lc.kubeconfig), pool=args.workers * 2 + 8), workers=4)
        stack.callback(kube.close)
        client.kubectl("apply", "--server-side", "-f", str(op_src / "manifests/crds/all.yaml"), timeout=120)
        client.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        for ns in NS.values():
            client.create_namespace(ns)  # waits for the default ServiceAccount
        kube.request(
            "POST",
            f"{G}/aicenters",
            body=manifests.aicenter(CENTER, {"matchLabels": {LABEL_PRODUCT: PRODUCT}}, {GPU_CLASS: PRODUCT}),
        )
        kube.request(
            "POST",
            f"{G}/gpuquotas",
            body=manifests.gpuquota(
                QUOTA, CENTER, manifests.namespace_selector(NS["operator"]), {GPU_CLASS: (pool_gpus, None)}
            ),
        )
        nodes = sorted(
            n["metadata"]["name"]
            for n in kube.list_all("/api/v1/nodes", [("labelSelector", f"{LABEL_PRODUCT}={PRODUCT}")])[0]
        )
        if len(nodes) != pool_nodes:
            raise BenchError(f"{len(nodes)} B200 nodes in the cluster, {pool_nodes} expected")
        meta["kube_scheduler"] = scheduler_config(lc)
        log(f"kube-scheduler as run: {meta['kube_scheduler']}")
        op_log = lc.data_dir / "operator.log"  # kept with --dir; a failed turn keeps its tail in the JSON
        meta["operator"]["log"] = str(op_log)
        bench = Bench(args, lc, client, kube, nodes, pool_gpus, op_log, results)
        plan = order(sides, shapes, args.repeats)
        log("order: " + ", ".join(f"{s}/{sh}#{r}" for s, sh, r in plan))
        for side, shape, r in plan:
            try:
                res = bench.turn(side, shape, r, pods_for[shape])
            except Exception as e:
                log(f"turn {side} {shape} #{r} FAILED: {type(e).__name__}: {e}")
                res = {
                    "side": side,
                    "shape": shape,
                    "repeat": r,
                    "pods": pods_for[shape],
                    "error": f"{type(e).__name__}: {e}"[:2000],
                    "trace": traceback.format_exc()[-3000:],
                }
                if side == "operator" and op_log.exists():
                    res["operator_log_tail"] = op_log.read_text(errors="replace")[-3000:]
            results.append(res)
            save()
            bench.check_alive()
        save(final=True)
    doc = json.loads(Path(f"{out_base}.json").read_text())
    print_report(doc)
    plotted = plot(results, Path(f"{out_base}.png"), plot_title(meta, results))
    print(f"\nresults: {out_base}.json" + (f", plot {out_base}.png" if plotted else ""))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
