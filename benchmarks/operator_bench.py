"""Pods bound per second: the operator vs kube-scheduler, on a local control plane with ≥1,000 GPU nodes.

One run, side by side, on a fresh cluster from the test bed:
  (b) kube-scheduler: N plain pods (1 × G GPUs, nodeSelector on the B200 product) created by this
      client, placed and bound by kube-scheduler;
  (a) operator: N GPUJobs (1 replica × G GPUs) submitted by this client; the operator writes the
      job status (write-ahead), creates the pod and binds it through pods/binding;
  (c) context: the API server's raw ceiling on this machine — N pods created for a scheduler that
      does not exist, then bound by this client directly (create rate, bind rate).
Each figure is N divided by the seconds from the first create to the last pod seen bound (watched).

    python benchmarks/operator_bench.py [--scale 0.025] [--pods 1000] [--gpus 1]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aicenter import api
from aicenter.controller.kube import Kube, load_client
from aicenter_testbed import manifests
from aicenter_testbed.cli import add_nodes
from aicenter_testbed.cluster import LocalCluster
from aicenter_testbed.fleet import LABEL_PRODUCT, load_fleet, scale_fleet
from aicenter_testbed.operator import OperatorProcess
from aicenter_testbed.procs import rss_mib
from aicenter_testbed.sim.pods import gpu_pod_manifest

ROOT = Path(__file__).resolve().parents[1]
G = api.GROUP_PATH


class BoundCounter:
    """Watches pods in a namespace and records when ``n`` distinct pods have a node."""

    def __init__(self, kube: Kube, namespace: str, n: int) -> None:
        self.kube, self.ns, self.n = kube, namespace, n
        self.bound: set[str] = set()
        self.done = threading.Event()
        self.t_done = 0.0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        path = f"/api/v1/namespaces/{self.ns}/pods"
        while not self.done.is_set():
            items, rv = self.kube.list_all(path, [])
            for p in items:
                self._see(p)
            try:
                for ev in self.kube.watch(path, [], rv, timeout_s=120):
                    if ev.get("type") in ("ADDED", "MODIFIED"):
                        self._see(ev["object"])
                    if self.done.is_set():
                        return
            except Exception:
                continue

    def _see(self, p: dict) -> None:
        if p.get("spec", {}).get("nodeName"):
            self.bound.add(p["metadata"]["name"])
            if len(self.bound) >= self.n and not self.done.is_set():
                self.t_done = time.perf_counter()
                self.done.set()

    def wait(self, timeout: float) -> float:
        if not self.done.wait(timeout):
            raise SystemExit(f"only {len(self.bound)} of {self.n} pods bound in {self.ns} after {timeout}s")
        return self.t_done


def burst(kube: Kube, calls: list[tuple[str, str, dict]], workers: int) -> float:
    """Run the calls with ``workers`` threads; returns the start time."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda c: kube.request(c[0], c[1], body=c[2]), calls))
    return t0


def pod(name: str, gpus: int, scheduler: str | None = None) -> dict:
    return gpu_pod_manifest(name, gpus, product="NVIDIA-B200", scheduler_name=scheduler)


def job(name: str, gpus: int, replicas: int = 1) -> dict:
    return manifests.gpujob(name, replicas, gpus)


def namespace(kube: Kube, name: str) -> None:
    kube.request(
        "POST",
        "/api/v1/namespaces",
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # pods need the namespace's default ServiceAccount
        sas = kube.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts").get("items", [])
        if any(s["metadata"]["name"] == "default" for s in sas):
            return
        time.sleep(0.2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.025, help="fleet scale (0.025 ≈ 1,030 nodes)")
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--gpus", type=int, default=1, help="GPUs per pod")
    ap.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="replicas per GPUJob on the operator path (pods / replicas jobs; gangs amortise job writes)",
    )
    ap.add_argument("--workers", type=int, default=32, help="client threads that submit the burst")
    args = ap.parse_args()
    fleet = scale_fleet(load_fleet(), args.scale)
    out: dict = {
        "nodes": fleet.nodes,
        "gpus": fleet.gpus,
        "pods": args.pods,
        "gpus_per_pod": args.gpus,
        "replicas_per_job": args.replicas,
    }
    with LocalCluster() as lc:
        client = lc.client()
        info = add_nodes(client, fleet, wait=True)
        out["nodes_ready_seconds"] = info.get("ready_seconds")
        kube = Kube(load_client(str(lc.kubeconfig), pool=args.workers * 2), workers=args.workers)
        client.kubectl("apply", "--server-side", "-f", str(ROOT / "manifests/crds/all.yaml"))
        client.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        for ns in ("bench-ks", "bench-op", "bench-raw"):
            namespace(kube, ns)
        b200 = sum(
            n.nodes * n.shape.gpus_per_node
            for c in fleet.centers
            for n in c.pools
            if n.shape.product == "NVIDIA-B200"
        )
        kube.request(
            "POST",
            f"{G}/aicenters",
            body=manifests.aicenter("bench", {"matchLabels": {LABEL_PRODUCT: "NVIDIA-B200"}}),
        )
        quota = manifests.gpuquota(
            "bench", "bench", manifests.namespace_selector("bench-op"), {"B200": (b200, None)}
        )
        kube.request("POST", f"{G}/gpuquotas", body=quota)
        op = OperatorProcess(lc.kubeconfig, lc.data_dir / "operator.log", ["--no-leader-election"]).start()
        try:
            n, g = args.pods, args.gpus

            # (b) kube-scheduler
            counter = BoundCounter(kube, "bench-ks", n)
            t0 = burst(
                kube,
                [("POST", "/api/v1/namespaces/bench-ks/pods", pod(f"p{i}", g)) for i in range(n)],
                args.workers,
            )
            ks = n / (counter.wait(600) - t0)
            # (a) the operator
            counter = BoundCounter(kube, "bench-op", n)
            t0 = burst(
                kube,
                [
                    ("POST", f"{G}/namespaces/bench-op/gpujobs", job(f"j{i}", g, args.replicas))
                    for i in range(n // args.replicas)
                ],
                args.workers,
            )
            opr = n / (counter.wait(600) - t0)
            # (c) raw API ceiling: create for a scheduler that does not exist, then bind directly
            t0 = time.perf_counter()
            burst(
                kube,
                [("POST", "/api/v1/namespaces/bench-raw/pods", pod(f"r{i}", g, "nobody")) for i in range(n)],
                args.workers,
            )
            t1 = time.perf_counter()
            nodes = [
                m["metadata"]["name"]
                for m in kube.list_all("/api/v1/nodes", [])[0]
                if m["metadata"]["labels"].get(LABEL_PRODUCT) == "NVIDIA-B300"
            ]
            binds = [
                (
                    "POST",
                    f"/api/v1/namespaces/bench-raw/pods/r{i}/binding",
                    {
                        "apiVersion": "v1",
                        "kind": "Binding",
                        "metadata": {"name": f"r{i}"},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": nodes[i % len(nodes)]},
                    },
                )
                for i in range(n)
            ]
            burst(kube, binds, args.workers)
            t2 = time.perf_counter()
            out.update(
                {
                    "kube_scheduler_pods_bound_per_s": round(ks, 1),
                    "operator_pods_bound_per_s": round(opr, 1),
                    "ratio_operator_over_kube_scheduler": round(opr / ks, 2),
                    "raw_create_per_s": round(n / (t1 - t0), 1),
                    "raw_bind_per_s": round(n / (t2 - t1), 1),
                    "raw_create_then_bind_per_s": round(n / (t2 - t0), 1),
                    "operator_peak_rss_mib": round(rss_mib(op.pid), 1),
                    "kube_apiserver_peak_rss_mib": round(rss_mib(lc.pids()["kube-apiserver"]), 1),
                }
            )
        finally:
            op.stop()
            kube.close()
    print(json.dumps(out, indent=2))
    print(
        f"\noperator {out['operator_pods_bound_per_s']} pods/s vs kube-scheduler "
        f"{out['kube_scheduler_pods_bound_per_s']} pods/s: "
        f"ratio {out['ratio_operator_over_kube_scheduler']}x "
        f"(goal ≥ 2x: {'met' if out['ratio_operator_over_kube_scheduler'] >= 2 else 'NOT met'}); "
        f"API ceiling on this machine: create {out['raw_create_per_s']}/s, bind {out['raw_bind_per_s']}/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
