"""Helpers for the operator's end-to-end tests: small centres, quotas, jobs, API checks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aicenter import api
from aicenter_testbed.fleet import GPU_RESOURCE, LABEL_CENTER, NodeSpec, load_fleet
from aicenter_testbed.sim.nodes import KWOK_TOLERATION, create_nodes, node_manifest, wait_nodes_ready
from aicenter_testbed.sim.stages import ANN_OUTCOME, ANN_RUN_SECONDS
from aicenter_testbed.waiting import wait_for

G = f"/apis/{api.GROUP}/{api.VERSION}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OperatorProcess:
    """A running ``aicenter-operator run`` process."""

    cluster: Any
    log: Path
    args: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen | None = None

    def start(self) -> OperatorProcess:
        self.port = _free_port()
        cmd = [
            sys.executable,
            "-m",
            "aicenter.cli",
            "run",
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.port),
            "--cycle-interval",
            "0.5",
            *self.args,
        ]
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        wait_for(self.ready, 60, f"operator ready on :{self.port} (log {self.log})")
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except OSError as e:
            return getattr(e, "code", 0) or 0, str(e)

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"operator exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
        return self.get("/readyz")[0] == 200

    def metric(self, name: str) -> float:
        total = 0.0
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def call(cluster, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
    ctype = "application/merge-patch+json" if method == "PATCH" else "application/json"
    status, doc = cluster.request(method, path, body, content_type=ctype)
    assert status in ok, f"{method} {path}: {status} {doc}"
    return doc


@dataclass
class Center:
    """A small AICenter of simulated nodes built for one test."""

    name: str
    nodes: list[NodeSpec]

    def node_names(self, rack: str | None = None) -> list[str]:
        return [n.name for n in self.nodes if rack is None or n.rack == rack]


def make_center(
    cluster,
    shape: str = "hgx-b200",
    racks: int = 1,
    nodes_per_rack: int = 2,
    grace_s: int = 60,
    prefix: str = "c",
) -> Center:
    """Create simulated nodes (``racks`` × ``nodes_per_rack`` of a fleet shape) and their AICenter."""
    sh = load_fleet().shapes[shape]
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    nodes = []
    for r in range(racks):
        for i in range(nodes_per_rack):
            clique = f"{name}.nvl{r}" if sh.nvlink_domain else None
            nodes.append(NodeSpec(f"{name}-r{r}-n{i}", name, "e2e", sh, f"{name}-r{r}", f"{name}-z0", clique))
    res = create_nodes(cluster, [node_manifest(n) for n in nodes])
    assert res.ok, res.failed
    wait_nodes_ready(cluster, [n.name for n in nodes], timeout=60)
    call(
        cluster,
        "POST",
        f"{G}/aicenters",
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND_AICENTER,
            "metadata": {"name": name},
            "spec": {
                "nodeSelector": {"matchLabels": {LABEL_CENTER: name}},
                "nodeNotReadyGraceSeconds": grace_s,
                "gpuClasses": [{"name": sh.gpu_class, "product": sh.product}],
            },
        },
    )
    return Center(name, nodes)


def make_quota(
    cluster,
    name: str,
    center: str,
    namespace: str,
    gpu_class: str,
    guaranteed: int,
    limit: int | None = None,
    cohort: str | None = None,
    **preemption: str,
) -> None:
    spec: dict[str, Any] = {
        "center": center,
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "resources": [{"gpuClass": gpu_class, "guaranteed": guaranteed, "limit": limit or guaranteed}],
    }
    if cohort:
        spec["cohort"] = cohort
    if preemption:
        spec["preemption"] = preemption
    call(
        cluster,
        "POST",
        f"{G}/gpuquotas",
        {"apiVersion": api.API_VERSION, "kind": api.KIND_GPUQUOTA, "metadata": {"name": name}, "spec": spec},
    )


def job_manifest(
    name: str,
    replicas: int = 1,
    gpus: int = 8,
    *,
    quota: str | None = None,
    gpu_class: str | None = None,
    topology: tuple[str, str] | None = None,
    priority: int = 0,
    run_seconds: float | None = None,
    outcome: str | None = None,
    **spec: Any,
) -> dict:
    annotations = {}
    if run_seconds is not None:
        annotations[ANN_RUN_SECONDS] = f"{run_seconds:g}"
    if outcome:
        annotations[ANN_OUTCOME] = outcome
    body: dict[str, Any] = {
        "replicas": replicas,
        "gpusPerReplica": gpus,
        "priority": priority,
        **spec,
        "template": {
            "metadata": {"annotations": annotations},
            "spec": {
                "tolerations": [dict(KWOK_TOLERATION)],
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "main", "image": "registry.invalid/aicenter/sim-workload:0"}],
            },
        },
    }
    if quota:
        body["quota"] = quota
    if gpu_class:
        body["gpuClass"] = gpu_class
    if topology:
        body["topology"] = {"key": topology[0], "mode": topology[1]}
    return {"apiVersion": api.API_VERSION, "kind": api.KIND_GPUJOB, "metadata": {"name": name}, "spec": body}


def submit(cluster, namespace: str, manifest: dict) -> dict:
    return call(cluster, "POST", f"{G}/namespaces/{namespace}/gpujobs", manifest)


def get_job(cluster, namespace: str, name: str) -> dict:
    return call(cluster, "GET", f"{G}/namespaces/{namespace}/gpujobs/{name}")


def wait_phase(
    cluster, namespace: str, name: str, phases: str | tuple[str, ...], timeout: float = 60
) -> dict:
    want = (phases,) if isinstance(phases, str) else phases

    def check() -> dict | None:
        j = get_job(cluster, namespace, name)
        return j if (j.get("status") or {}).get("phase") in want else None

    try:
        return wait_for(check, timeout, f"job {namespace}/{name} in {want}")
    except Exception as e:
        j = get_job(cluster, namespace, name)
        raise AssertionError(f"{e}; status now: {j.get('status')}") from None


def job_pods(cluster, namespace: str, job: str, live: bool = True) -> list[dict]:
    doc = call(cluster, "GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector={api.LABEL_JOB}%3D{job}")
    pods = doc["items"]
    if live:
        pods = [
            p
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and p["status"].get("phase") not in ("Succeeded", "Failed")
        ]
    return pods


def node_gpu_use(cluster) -> dict[str, int]:
    """GPUs requested by live pods bound to each node, from the API (not the operator's word)."""
    use: dict[str, int] = {}
    for p in call(cluster, "GET", "/api/v1/pods")["items"]:
        node = p["spec"].get("nodeName")
        if not node or p["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        for c in p["spec"]["containers"]:
            g = int(((c.get("resources") or {}).get("limits") or {}).get(GPU_RESOURCE, 0))
            use[node] = use.get(node, 0) + g
    return use


def node_allocatable(cluster, names: list[str]) -> dict[str, int]:
    out = {}
    for n in names:
        doc = call(cluster, "GET", f"/api/v1/nodes/{n}")
        out[n] = int(doc["status"]["allocatable"].get(GPU_RESOURCE, 0))
    return out
