"""Helpers for the operator's end-to-end tests: small centres, quotas, jobs, API checks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from aicenter import api
from aicenter_testbed import manifests
from aicenter_testbed.fleet import GPU_RESOURCE, NodeSpec, load_fleet
from aicenter_testbed.operator import OperatorProcess
from aicenter_testbed.sim.nodes import create_nodes, node_manifest, wait_nodes_ready
from aicenter_testbed.waiting import wait_for

G = api.GROUP_PATH
__all__ = ["G", "OperatorProcess"]


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
    **spec: Any,
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
    body = manifests.aicenter(
        name, classes={sh.gpu_class: sh.product}, nodeNotReadyGraceSeconds=grace_s, **spec
    )
    call(cluster, "POST", f"{G}/aicenters", body)
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
    extra = {"preemption": preemption} if preemption else {}
    body = manifests.gpuquota(
        name,
        center,
        manifests.namespace_selector(namespace),
        {gpu_class: (guaranteed, limit)},
        cohort,
        **extra,
    )
    call(cluster, "POST", f"{G}/gpuquotas", body)


job_manifest = manifests.gpujob


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
