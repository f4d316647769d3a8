"""The full fleet on the test bed: bring-up, staying Ready, and the operator's start-up on it.

On a fresh local control plane sized for the fleet (``LocalCluster(expected_nodes=...)``):
  1. create the fleet's simulated GPU nodes (``--scale``, default 1.0: 41,250 nodes, 260,000 GPUs)
     and wait until every one is Ready and free of ``node.kubernetes.io/*`` taints;
  2. hold for ``--hold`` seconds (default 600) and sample, every ``--sample`` seconds, the NotReady
     count, each component's RSS and CPU seconds and the load average; every ``--lease-every``
     seconds also the age of the oldest node Lease renewal (kwok keeping up, or not);
  3. with ``--operator``: apply the CRDs (``manifests/crds/all.yaml``), the tenant namespaces and the
     fleet's AICenters and GPUQuotas (``aicenter_testbed.samples.fleet_manifests``), start the
     operator (``--no-leader-election``) and time it to ``/readyz``; then submit a burst of
     ``--gangs`` GPUJobs of ``--replicas`` × ``--gpus`` (default 250 × 8 × 8 GPUs) and time it until
     every pod is bound; the operator's RSS and CPU seconds after each step.
It prints a table of each figure next to its goal and writes everything (with the time series) to
``--out`` (default ``benchmarks/results/fleet_bench-<scale>.json``).

    .venv/bin/python benchmarks/fleet_bench.py [--scale 1.0] [--hold 600] [--operator]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aicenter import api
from aicenter_testbed import manifests
from aicenter_testbed.cli import add_nodes
from aicenter_testbed.cluster import ClusterClient, LocalCluster
from aicenter_testbed.fleet import load_fleet, scale_fleet
from aicenter_testbed.operator import OperatorProcess
from aicenter_testbed.procs import cpu_seconds, rss_mib
from aicenter_testbed.samples import fleet_manifests, namespace_manifests
from aicenter_testbed.sim.nodes import NodeTracker, watch_events

ROOT = Path(__file__).resolve().parents[1]
G = api.GROUP_PATH
COMPONENTS = ("kube-apiserver", "etcd", "kwok", "kube-controller-manager", "kube-scheduler")
GOAL_STARTUP_S = 60
GOAL_RSS_MIB = 1024


def log(msg: str) -> None:
    print(f"[fleet-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load1() -> float:
    return os.getloadavg()[0]


def git_state() -> dict[str, Any]:
    def run(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = [line[3:] for line in run("status", "--porcelain").splitlines()]
    return {
        "commit": run("rev-parse", "HEAD"),
        "dirty_operator_files": sorted(p for p in dirty if p.startswith("operator/")),
    }


# ---------------------------------------------------------------------------------------------
# Sampling


class Sampler:
    """Every ``period`` seconds: nodes (seen/Ready/schedulable), RSS and CPU of every component (and
    the operator once it runs), the load average. A thread; ``phase`` labels the samples."""

    def __init__(self, cluster: LocalCluster, tracker: NodeTracker, period: float) -> None:
        self.cluster, self.tracker, self.period = cluster, tracker, period
        self.t0 = time.monotonic()
        self.phase = "start"
        self.operator_pid: int | None = None
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def sample(self) -> dict[str, Any]:
        pids = self.cluster.pids()
        s: dict[str, Any] = {
            "t": round(time.monotonic() - self.t0, 1),
            "phase": self.phase,
            "load1": round(load1(), 2),
            **self.tracker.counts(),
            "rss_mib": {n: round(rss_mib(pids[n], "VmRSS"), 1) for n in COMPONENTS if n in pids},
            "cpu_s": {n: round(cpu_seconds(pids[n]), 1) for n in COMPONENTS if n in pids},
        }
        s["not_ready"] = s["seen"] - s["ready"]
        if self.operator_pid:
            try:
                s["rss_mib"]["operator"] = round(rss_mib(self.operator_pid, "VmRSS"), 1)
                s["cpu_s"]["operator"] = round(cpu_seconds(self.operator_pid), 1)
            except OSError:
                pass
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.period):  # the sampling period, not synchronisation
            with contextlib.suppress(OSError):  # a component exited: check_alive() reports it
                self.sample()

    def start(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def over(self, phase: str) -> list[dict[str, Any]]:
        return [s for s in self.samples if s["phase"] == phase]


def lease_ages(client: ClusterClient) -> dict[str, float]:
    """Leases in kube-node-lease: how many, and the age of the oldest renewal (seconds)."""
    from urllib.parse import quote

    now = time.time()
    ages: list[float] = []
    cont = ""
    while True:
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases?limit=5000"
        if cont:
            path += f"&continue={quote(cont)}"
        status, body = client.request("GET", path, timeout=120)
        if status != 200:
            raise RuntimeError(f"listing leases answered {status}")
        for lease in body["items"]:
            renew = lease["spec"].get("renewTime")
            if renew:
                ages.append(now - datetime.fromisoformat(renew.replace("Z", "+00:00")).timestamp())
        cont = body["metadata"].get("continue") or ""
        if not cont:
            break
    ages.sort()
    if not ages:
        return {"leases": 0}
    return {
        "leases": len(ages),
        "oldest_renewal_age_s": round(ages[-1], 1),
        "p99_renewal_age_s": round(ages[int(0.99 * (len(ages) - 1))], 1),
    }


# ---------------------------------------------------------------------------------------------
# The operator part


class BoundPods:
    """Watches all pods; records when ``n`` distinct pods have a node."""

    def __init__(self, client: ClusterClient, n: int) -> None:
        self.client, self.n = client, n
        self.bound: set[str] = set()
        self.seen: set[str] = set()
        self.done = threading.Event()
        self.t_first_pod = 0.0
        self.t_done = 0.0
        threading.Thread(target=self._run, name="bound-pods", daemon=True).start()

    def _run(self) -> None:
        rv = ""
        while not self.done.is_set():
            try:
                if not rv:
                    status, body = self.client.request("GET", "/api/v1/pods", timeout=120)
                    if status != 200:
                        raise RuntimeError(f"listing pods answered {status}")
                    for p in body.get("items", []):
                        self._see(p)
                    rv = body["metadata"]["resourceVersion"]
                path = (
                    f"/api/v1/pods?watch=1&allowWatchBookmarks=true&timeoutSeconds=240&resourceVersion={rv}"
                )
                for ev in watch_events(self.client, path):
                    if ev.get("type") == "ERROR":
                        rv = ""
                        break
                    if ev.get("type") in ("ADDED", "MODIFIED"):
                        self._see(ev["object"])
                    rv = ev.get("object", {}).get("metadata", {}).get("resourceVersion") or rv
                    if self.done.is_set():
                        return
            except Exception:  # a dropped watch: list again
                rv = ""
                self.done.wait(1.0)  # back-off before retrying, not synchronisation

    def _see(self, p: dict) -> None:
        key = f"{p['metadata'].get('namespace')}/{p['metadata']['name']}"
        if key not in self.seen:
            self.seen.add(key)
            if len(self.seen) == 1:
                self.t_first_pod = time.monotonic()
        if p.get("spec", {}).get("nodeName"):
            self.bound.add(key)
            if len(self.bound) >= self.n and not self.done.is_set():
                self.t_done = time.monotonic()
                self.done.set()


def burst_jobs(fleet, gangs: int, replicas: int, gpus: int) -> list[tuple[str, dict]]:
    """``gangs`` GPUJobs spread over the quotas whose classes have nodes of ``gpus`` or more GPUs,
    in proportion to and within each quota's guarantee."""
    slots: list[tuple[str, str, int]] = []  # (namespace = quota, class, gangs it can take)
    for c in fleet.centers:
        per_node = {p.shape.gpu_class: p.shape.gpus_per_node for p in c.pools}
        for q in c.quotas:
            for cls, g in sorted(q.guaranteed.items()):
                if per_node.get(cls, 0) >= gpus and g >= replicas * gpus:
                    slots.append((q.name, cls, g // (replicas * gpus)))
    room = sum(n for _, _, n in slots)
    if room < gangs:
        raise SystemExit(f"the fleet's guarantees hold only {room} gangs of {replicas}x{gpus} GPUs")
    out: list[tuple[str, dict]] = []
    left = dict.fromkeys(range(len(slots)), 0)
    for i in range(gangs):
        # the slot with the most room left relative to its size (spreads in proportion)
        k = max(left, key=lambda j: (slots[j][2] - left[j]) / slots[j][2])
        left[k] += 1
        ns, cls, _ = slots[k]
        out.append((ns, manifests.gpujob(f"fleet-{i:04d}", replicas, gpus, namespace=ns, gpu_class=cls)))
    return out


def run_operator(
    args: argparse.Namespace, lc: LocalCluster, fleet, sampler: Sampler, out: dict[str, Any]
) -> None:
    client = lc.client()
    t = time.monotonic()
    client.kubectl("apply", "--server-side", "-f", str(ROOT / "manifests/crds/all.yaml"))
    client.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=120s")
    for ns in namespace_manifests(fleet):
        client.create_namespace(ns["metadata"]["name"], ns["metadata"].get("labels"))
    for m in fleet_manifests(fleet):
        plural = "aicenters" if m["kind"] == api.KIND_AICENTER else "gpuquotas"
        status, body = client.request("POST", f"{G}/{plural}", m)
        if status not in (201, 409):
            raise SystemExit(f"creating {m['kind']} {m['metadata']['name']}: HTTP {status}: {body}")
    out["operator_objects_seconds"] = round(time.monotonic() - t, 1)

    sampler.phase = "operator-start"
    op = OperatorProcess(lc.kubeconfig, lc.data_dir / "operator.log", ["--no-leader-election"])
    t0 = time.monotonic()
    try:
        op.start(timeout=args.operator_timeout)
        startup = time.monotonic() - t0
        sampler.operator_pid = op.pid
        o = out["operator"] = {
            "startup_to_readyz_s": round(startup, 1),
            "rss_mib_at_ready": round(rss_mib(op.pid, "VmRSS"), 1),
            "cpu_s_at_ready": round(cpu_seconds(op.pid), 1),
        }
        log(f"operator ready after {startup:.1f}s, RSS {o['rss_mib_at_ready']} MiB")

        jobs = burst_jobs(fleet, args.gangs, args.replicas, args.gpus)
        n_pods = args.gangs * args.replicas
        counter = BoundPods(client, n_pods)
        sampler.phase = "operator-burst"
        cpu_before = cpu_seconds(op.pid)
        t1 = time.monotonic()
        from concurrent.futures import ThreadPoolExecutor

        def post(item: tuple[str, dict]) -> int:
            ns, job = item
            return client.request("POST", f"{G}/namespaces/{ns}/gpujobs", job)[0]

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(post, jobs))
        bad = [c for c in codes if c != 201]
        if bad:
            raise SystemExit(f"{len(bad)} GPUJob(s) were refused, e.g. HTTP {bad[0]}")
        submitted = time.monotonic() - t1
        if not counter.done.wait(args.burst_timeout):
            o["burst_error"] = f"only {len(counter.bound)} of {n_pods} pods bound after {args.burst_timeout}s"
            log(o["burst_error"])
        else:
            o["burst_all_bound_s"] = round(counter.t_done - t1, 1)
            log(f"all {n_pods} pods bound {o['burst_all_bound_s']}s after the first GPUJob")
        o.update(
            {
                "burst_jobs": args.gangs,
                "burst_pods": n_pods,
                "burst_gpus": n_pods * args.gpus,
                "burst_submit_s": round(submitted, 1),
                "burst_first_pod_s": round(counter.t_first_pod - t1, 1) if counter.t_first_pod else None,
                "pods_bound": len(counter.bound),
                "rss_mib_after_burst": round(rss_mib(op.pid, "VmRSS"), 1),
                "peak_rss_mib": round(rss_mib(op.pid, "VmHWM"), 1),
                "cpu_s_burst": round(cpu_seconds(op.pid) - cpu_before, 1),
                "cpu_s_total": round(cpu_seconds(op.pid), 1),
            }
        )
        sampler.phase = "operator-after"
        sampler.sample()
    finally:
        op.stop()
        sampler.operator_pid = None
    out["operator_log"] = str(op.log)


# ---------------------------------------------------------------------------------------------
# Report


def table(out: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    n = out["nodes"]
    rows.append(("nodes created", f"{out['create_seconds']:.0f} s ({n / out['create_seconds']:.0f}/s)", ""))
    rows.append(("all nodes Ready and untainted", f"{out['ready_seconds']:.0f} s", "all Ready"))
    hold = out.get("hold", {})
    if hold:
        rows.append(
            (
                f"NotReady over a {hold['seconds']:.0f} s hold",
                f"max {hold['max_not_ready']}, last {hold['last_not_ready']} ({hold['samples']} samples)",
                "0 (stay Ready ≥ 10 min)",
            )
        )
        if "oldest_lease_renewal_age_s" in hold:
            rows.append(
                (
                    "oldest node Lease renewal (max over hold)",
                    f"{hold['oldest_lease_renewal_age_s']:.0f} s",
                    f"< grace {out['tuning']['node_monitor_grace_seconds']} s",
                )
            )
    for c in COMPONENTS:
        rows.append(
            (
                f"{c} RSS at Ready / max over hold",
                f"{out['rss_mib_at_ready'].get(c, 0):.0f} / {hold.get('max_rss_mib', {}).get(c, 0):.0f} MiB",
                "",
            )
        )
    op = out.get("operator")
    if op:
        s = op["startup_to_readyz_s"]
        rows.append(
            (
                "operator start-up (list, cache, first cycle) to /readyz",
                f"{s:.1f} s",
                f"< {GOAL_STARTUP_S} s at 41,250 nodes: {'met' if s < GOAL_STARTUP_S else 'NOT met'}",
            )
        )
        rows.append(("operator RSS at ready", f"{op['rss_mib_at_ready']:.0f} MiB", ""))
        if "burst_all_bound_s" in op:
            jobs, pods, secs = op["burst_jobs"], op["burst_pods"], op["burst_all_bound_s"]
            rows.append(
                (
                    f"burst: {jobs} GPUJobs × {pods // jobs} pods, all bound",
                    f"{secs:.1f} s ({pods / secs:.0f} pods/s)",
                    "",
                )
            )
        else:
            rows.append(("burst", op.get("burst_error", "?"), ""))
        r = op["peak_rss_mib"]
        rows.append(
            (
                "operator RSS after the burst (peak)",
                f"{op['rss_mib_after_burst']:.0f} MiB ({r:.0f} MiB)",
                f"< {GOAL_RSS_MIB} MiB at 41,250 nodes + 50,000 running pods + 10,000 pending GPUJobs "
                f"(here {op['burst_pods']:,} pods): {'met' if r < GOAL_RSS_MIB else 'NOT met'} so far",
            )
        )
        rows.append(
            (
                "operator CPU seconds (start-up / burst)",
                f"{op['cpu_s_at_ready']:.1f} / {op['cpu_s_burst']:.1f}",
                "",
            )
        )
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{'measure':<{w0}}  {'figure':<{w1}}  goal", "-" * (w0 + w1 + 30)]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fleet scale (1.0 = 41,250 nodes)")
    ap.add_argument("--hold", type=float, default=600, help="seconds to watch the fleet after all Ready")
    ap.add_argument("--sample", type=float, default=15, help="seconds between samples")
    ap.add_argument("--lease-every", type=float, default=120, help="seconds between Lease age checks")
    ap.add_argument("--workers", type=int, default=16, help="threads creating nodes")
    ap.add_argument("--operator", action="store_true", help="then start the operator and run a burst")
    ap.add_argument("--gangs", type=int, default=250)
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--operator-timeout", type=float, default=600, help="seconds to wait for /readyz")
    ap.add_argument("--burst-timeout", type=float, default=600, help="seconds to wait for all pods bound")
    ap.add_argument("--dir", default=None, help="data directory (default: a temporary one, removed)")
    ap.add_argument(
        "--out", default=None, help="JSON file (default benchmarks/results/fleet_bench-<scale>.json)"
    )
    args = ap.parse_args()
    # A TERM (or an INT to a background job, which ignores it) stops cleanly: the cluster is stopped
    # and what was measured is written.
    signal.signal(signal.SIGTERM, _interrupt)

    fleet = scale_fleet(load_fleet(), args.scale)
    out: dict[str, Any] = {
        "scale": args.scale,
        "nodes": fleet.nodes,
        "gpus": fleet.gpus,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load1_at_start": round(load1(), 2),
        "git": git_state(),
    }
    log(f"{fleet.nodes:,} nodes, {fleet.gpus:,} GPUs; load average {os.getloadavg()}")
    t0 = time.monotonic()
    with LocalCluster(args.dir, expected_nodes=fleet.nodes, keep_data=args.dir is not None) as lc:
        out["control_plane_seconds"] = round(time.monotonic() - t0, 1)
        out["tuning"] = lc.tuning.as_dict()
        client = lc.client()
        tracker = NodeTracker(client).start()
        sampler = Sampler(lc, tracker, args.sample).start()
        try:
            sampler.phase = "bring-up"
            info = add_nodes(client, fleet, wait=True, workers=args.workers, progress=True, tracker=tracker)
            out.update(info)
            pids = lc.pids()
            out["rss_mib_at_ready"] = {n: round(rss_mib(pids[n], "VmRSS"), 1) for n in COMPONENTS}
            out["load1_at_ready"] = round(load1(), 2)
            log(f"all {fleet.nodes:,} Ready after {info['ready_seconds']}s; RSS {out['rss_mib_at_ready']}")

            sampler.phase = "hold"
            sampler.sample()
            leases: list[dict[str, Any]] = []
            end = time.monotonic() + args.hold
            pause = threading.Event()  # never set: its wait() is the hold loop's period
            next_lease = time.monotonic()
            while time.monotonic() < end:
                lc.check_alive()
                if time.monotonic() >= next_lease:
                    leases.append({"t": round(time.monotonic() - sampler.t0, 1), **lease_ages(client)})
                    next_lease += args.lease_every
                    last = sampler.samples[-1]
                    log(
                        f"hold: NotReady {last['not_ready']}, oldest lease renewal "
                        f"{leases[-1].get('oldest_renewal_age_s')}s, load {last['load1']}"
                    )
                pause.wait(min(5.0, max(0.0, end - time.monotonic())))  # the checking period
            sampler.sample()
            held = sampler.over("hold")
            out["hold"] = {
                "seconds": args.hold,
                "samples": len(held),
                "max_not_ready": max(s["not_ready"] for s in held),
                "last_not_ready": held[-1]["not_ready"],
                "min_schedulable": min(s["schedulable"] for s in held),
                "max_rss_mib": {c: max(s["rss_mib"].get(c, 0) for s in held) for c in COMPONENTS},
                "cpu_s_per_s": {
                    c: round(
                        (held[-1]["cpu_s"][c] - held[0]["cpu_s"][c]) / max(1, held[-1]["t"] - held[0]["t"]), 3
                    )
                    for c in COMPONENTS
                },
                "mean_load1": round(sum(s["load1"] for s in held) / len(held), 2),
                "leases": leases,
            }
            ages = [x["oldest_renewal_age_s"] for x in leases if "oldest_renewal_age_s" in x]
            if ages:
                out["hold"]["oldest_lease_renewal_age_s"] = max(ages)
            out["not_ready_at_end"] = tracker.not_ready()[:20]

            if args.operator:
                run_operator(args, lc, fleet, sampler, out)
        finally:
            sampler.stop()
            tracker.stop()
            out["samples"] = sampler.samples
            out["tracker_events"] = tracker.events
            path = Path(args.out or ROOT / "benchmarks" / "results" / f"fleet_bench-{args.scale:g}.json")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(out, indent=1) + "\n")
            log(f"wrote {path}")
    print(table(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
