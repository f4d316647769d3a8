"""Replica pods and the headless Service of a GPUJob, built from the job's pod template.

A replica pod is created with its node already set (``spec.nodeName``: one write, no Binding): the
operator has checked every constraint the kubelet and users rely on. A pod whose template asks for
what the operator does not evaluate (volumes bound to a zone, inter-pod affinity, spread
constraints) is *delegated*: it goes to kube-scheduler with a required node affinity to the chosen
node, so the final bind is checked by a scheduler that evaluates those.
"""

from __future__ import annotations

import copy
import hashlib

from aicenter import api
from aicenter.api import Obj

ANNOTATION_NODE = "aicenter.dev/node"  # the node the operator chose
MASTER_PORT = "29500"


def dns_name(base: str, suffix: str = "", limit: int = 63) -> str:
    """``base`` + ``suffix`` as a DNS label, shortened with a stable hash when too long."""
    name = f"{base}{suffix}"
    if len(name) <= limit:
        return name
    h = hashlib.sha256(base.encode()).hexdigest()[:8]
    return f"{base[: limit - len(suffix) - 9].rstrip('-')}-{h}{suffix}"


def pod_name(job: str, attempt: int, replica: int) -> str:
    return dns_name(job, f"-{attempt}-{replica}")


def service_name(job: str) -> str:
    return dns_name(job)


def owner_ref(job: Obj) -> Obj:
    md = job["metadata"]
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND_GPUJOB,
        "name": md["name"],
        "uid": md["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pin_to_node(pspec: Obj, node: str) -> None:
    """Add a required node affinity to ``node`` (ANDed into every term) for a delegated pod."""
    field = {"key": "metadata.name", "operator": "In", "values": [node]}
    aff = pspec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
    req = aff.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms = req.get("nodeSelectorTerms") or [{}]
    for t in terms:
        t["matchFields"] = [*(t.get("matchFields") or []), field]
    req["nodeSelectorTerms"] = terms


def replica_pod(
    job: Obj,
    replica: int,
    attempt: int,
    node: str,
    gpus: int,
    scheduler_name: str,
    gpu_resource: str,
    delegate_to: str | None = None,
) -> Obj:
    """The pod for one replica: the template plus GPUs, identity labels, training env, its node.

    ``delegate_to``: the scheduler (kube-scheduler) that binds it, pinned to ``node``; else the pod is
    created bound to ``node``.
    """
    md, spec = job["metadata"], job["spec"]
    name, ns = md["name"], md["namespace"]
    replicas = int(spec.get("replicas", 1))
    tmpl = copy.deepcopy(spec.get("template") or {})
    tmd = tmpl.get("metadata") or {}
    pspec = tmpl.get("spec") or {}
    svc = service_name(name)
    labels = {
        **(tmd.get("labels") or {}),
        api.LABEL_JOB: name,
        api.LABEL_REPLICA: str(replica),
        api.LABEL_JOB_UID: md["uid"],
        api.LABEL_ATTEMPT: str(attempt),
        api.LABEL_MANAGED_BY: api.MANAGED_BY,
    }
    annotations = {**(tmd.get("annotations") or {}), ANNOTATION_NODE: node}
    pspec.setdefault("restartPolicy", "Never")
    pspec.pop("nodeName", None)
    if delegate_to:
        pspec["schedulerName"] = delegate_to
        pin_to_node(pspec, node)
    else:
        pspec["schedulerName"] = scheduler_name
        pspec["nodeName"] = node
    if replicas > 1:
        pspec["hostname"] = dns_name(name, f"-{replica}")
        pspec["subdomain"] = svc
    master = f"{dns_name(name, '-0')}.{svc}.{ns}.svc" if replicas > 1 else "localhost"
    env = [
        {"name": "AICENTER_JOB_NAME", "value": name},
        {"name": "AICENTER_REPLICA_INDEX", "value": str(replica)},
        {"name": "AICENTER_WORLD_SIZE", "value": str(replicas)},
        {"name": "AICENTER_MASTER_ADDR", "value": master},
        {"name": "RANK", "value": str(replica)},
        {"name": "WORLD_SIZE", "value": str(replicas)},
        {"name": "MASTER_ADDR", "value": master},
        {"name": "MASTER_PORT", "value": MASTER_PORT},
    ]
    for i, c in enumerate(pspec.get("containers") or []):
        have = {e.get("name") for e in c.get("env") or []}
        c["env"] = [*(c.get("env") or []), *(e for e in env if e["name"] not in have)]
        if i == 0:  # the first container gets the replica's GPUs
            res = c.setdefault("resources", {})
            res.setdefault("limits", {})[gpu_resource] = str(gpus)
            res.setdefault("requests", {})[gpu_resource] = str(gpus)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(name, attempt, replica),
            "namespace": ns,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_ref(job)],
        },
        "spec": pspec,
    }


def headless_service(job: Obj) -> Obj:
    md = job["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(md["name"]),
            "namespace": md["namespace"],
            "labels": {api.LABEL_JOB: md["name"], api.LABEL_MANAGED_BY: api.MANAGED_BY},
            "ownerReferences": [owner_ref(job)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {api.LABEL_JOB: md["name"], api.LABEL_JOB_UID: md["uid"]},
        },
    }
