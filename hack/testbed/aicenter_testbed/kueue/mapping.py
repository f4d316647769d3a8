"""The same quotas for Kueue: GPUQuota/AICenter objects → Kueue v1beta2 objects, and trace jobs → Jobs.

Pure data in, data out (no client): :func:`kueue_objects` reads the operator's AICenters, GPUQuotas,
the namespaces and the nodes' labels and returns the Kueue objects that express the same quotas:

=========================  ======================================================================
operator                   Kueue
=========================  ======================================================================
AICenter × GPU class       ResourceFlavor ``<center>-<class>``: ``nodeLabels`` = the centre's
                           ``matchLabels`` + ``nvidia.com/gpu.product``; kwok's toleration;
                           ``topologyName`` = the Topology its nodes carry
AICenter ``topologyKeys``  Topology: the keys loosest first (zone → rack → clique), only the keys
                           that *every* node of the flavor has (only GB200 nodes carry a clique),
                           then ``kubernetes.io/hostname``
GPUQuota                   ClusterQueue of the same name, one resource group covering the
                           centre's ``gpuResource`` with one flavor per class:
                           ``nominalQuota`` = guaranteed, ``borrowingLimit`` = limit − guaranteed
                           (only with a cohort; Kueue rejects it without one)
``spec.cohort``            ``cohortName`` and a Cohort object of that name
``spec.namespaceSelector`` the ClusterQueue's ``namespaceSelector``, and a LocalQueue named like the
                           quota in every namespace the selector matches
``preemption.withinQuota`` ``preemption.withinClusterQueue`` (LowerPriority / Never)
``preemption.reclaimLent`` ``preemption.reclaimWithinCohort`` (Any / LowerPriority / Never);
                           ``borrowWithinCohort: Never`` (the operator never preempts to borrow)
``spec.weight``            ``fairSharing.weight`` (only with ``fair_sharing=True``: Kueue ignores it
                           unless fair sharing is enabled in its configuration)
GPUJob ``priority``        a WorkloadPriorityClass per value, named by :func:`priority_class_name`
=========================  ======================================================================

:func:`batch_job` builds the Kueue side of one trace job: an Indexed ``batch/v1`` Job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aicenter import api
from aicenter_testbed.sim.nodes import KWOK_TOLERATION
from aicenter_testbed.sim.pods import SIM_IMAGE
from aicenter_testbed.sim.stages import ANN_RUN_SECONDS

Manifest = dict[str, Any]

KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_API = f"{KUEUE_GROUP}/v1beta2"
LABEL_QUEUE_NAME = "kueue.x-k8s.io/queue-name"
LABEL_PRIORITY_CLASS = "kueue.x-k8s.io/priority-class"
ANN_REQUIRED_TOPOLOGY = "kueue.x-k8s.io/podset-required-topology"
ANN_PREFERRED_TOPOLOGY = "kueue.x-k8s.io/podset-preferred-topology"
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_GPU_PRODUCT = api.LABEL_GPU_PRODUCT
#: namespaces whose batch Jobs Kueue manages in the test bed (its webhooks and
#: ``managedJobsNamespaceSelector`` select them), so other tests' Jobs never reach Kueue.
LABEL_MANAGED_NAMESPACE = "kueue.aicenter.dev/managed"

_WITHIN = {api.PREEMPT_LOWER_PRIORITY: "LowerPriority", api.PREEMPT_NEVER: "Never"}
_RECLAIM = {api.PREEMPT_ANY: "Any", api.PREEMPT_LOWER_PRIORITY: "LowerPriority", api.PREEMPT_NEVER: "Never"}
_LEVEL_NAMES = {
    "topology.kubernetes.io/zone": "zone",
    "topology.aicenter.dev/rack": "rack",
    "nvidia.com/gpu.clique": "clique",
    LABEL_HOSTNAME: "host",
}


#: resource (plural) of each Kueue kind this module makes, for REST paths
PLURALS = {
    "Topology": "topologies",
    "ResourceFlavor": "resourceflavors",
    "Cohort": "cohorts",
    "ClusterQueue": "clusterqueues",
    "LocalQueue": "localqueues",
    "WorkloadPriorityClass": "workloadpriorityclasses",
}


def object_path(obj: Manifest) -> str:
    """The REST path of a Kueue object made here (for GET/DELETE)."""
    meta = obj["metadata"]
    ns = f"namespaces/{meta['namespace']}/" if meta.get("namespace") else ""
    return f"/apis/{KUEUE_API}/{ns}{PLURALS[obj['kind']]}/{meta['name']}"


class MappingError(ValueError):
    """A GPUQuota or AICenter that Kueue cannot express (the message says which and why)."""


# --------------------------------------------------------------------------------------------------
# label selectors (the subset a GPUQuota's namespaceSelector and an AICenter's nodeSelector use)


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` match a Kubernetes LabelSelector (matchLabels and matchExpressions)."""
    if selector is None:
        return False  # a nil selector selects nothing
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise MappingError(f"unknown label selector operator {op!r}")
    return True


def _dns_name(*parts: str) -> str:
    name = "-".join(parts).lower()
    name = re.sub(r"[^a-z0-9.-]+", "-", name).strip("-.")
    if not name or len(name) > 253:
        raise MappingError(f"cannot make a Kubernetes name from {parts!r}")
    return name


def priority_class_name(priority: int) -> str:
    """The WorkloadPriorityClass for a GPUJob priority: ``aicenter-priority-50``, ``…-m10`` for −10."""
    return f"aicenter-priority-{priority}" if priority >= 0 else f"aicenter-priority-m{-priority}"


# --------------------------------------------------------------------------------------------------
# the mapping


@dataclass
class KueueObjects:
    """Everything one mapping produces, in the order they must be applied."""

    topologies: list[Manifest] = field(default_factory=list)
    flavors: list[Manifest] = field(default_factory=list)
    cohorts: list[Manifest] = field(default_factory=list)
    cluster_queues: list[Manifest] = field(default_factory=list)
    local_queues: list[Manifest] = field(default_factory=list)
    priority_classes: list[Manifest] = field(default_factory=list)
    #: ResourceFlavor name per (AICenter name, GPU class): what a trace job of that class uses.
    flavor_of: dict[tuple[str, str], str] = field(default_factory=dict)
    #: GFD product per (AICenter name, GPU class): the nodeSelector a Job of that class carries.
    product_of: dict[tuple[str, str], str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def all(self) -> list[Manifest]:
        return [
            *self.topologies,
            *self.flavors,
            *self.cohorts,
            *self.cluster_queues,
            *self.local_queues,
            *self.priority_classes,
        ]


def _kueue(kind: str, name: str, spec: Manifest, namespace: str | None = None) -> Manifest:
    meta: Manifest = {"name": name, "labels": {"app.kubernetes.io/managed-by": "aicenter-testbed"}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": KUEUE_API, "kind": kind, "metadata": meta, "spec": spec}


def topology_levels(topology_keys: Iterable[str], node_labels: Iterable[Mapping[str, str]]) -> list[str]:
    """Kueue levels (loosest first) for nodes: the centre's keys every node carries, then hostname.

    ``topology_keys`` are the AICenter's, tightest first (clique → rack → zone). Kueue's topology
    assignment needs every node of a flavor to carry every level, so a key missing on any node (the
    NVLink clique on HGX nodes) is left out for that flavor.
    """
    nodes = list(node_labels)
    keys = [k for k in topology_keys if k != LABEL_HOSTNAME]
    present = [k for k in keys if nodes and all(k in n for n in nodes)]
    return [*reversed(present), LABEL_HOSTNAME]


def topology_name(levels: list[str]) -> str:
    return _dns_name("aicenter", *(_LEVEL_NAMES.get(k, k) for k in levels))


def kueue_objects(
    centers: Iterable[Manifest],
    quotas: Iterable[Manifest],
    namespaces: Iterable[Manifest] = (),
    nodes: Iterable[Mapping[str, str]] = (),
    *,
    priorities: Iterable[int] = (),
    fair_sharing: bool = False,
    tolerations: list[Manifest] | None = None,
) -> KueueObjects:
    """The Kueue objects for the operator's ``centers`` (AICenters) and ``quotas`` (GPUQuotas).

    ``namespaces`` (Namespace objects: name and labels) decide where LocalQueues go; ``nodes`` (label
    dicts, one per node) decide each flavor's Topology and, for centres without ``gpuClasses``, the
    product of each class. ``priorities`` get a WorkloadPriorityClass each. ``tolerations`` go on
    every flavor (default: kwok's taint, which every simulated node has).
    """
    out = KueueObjects()
    tolerations = [dict(KWOK_TOLERATION)] if tolerations is None else tolerations
    node_list = [dict(n) for n in nodes]
    by_center = {c["metadata"]["name"]: c for c in centers}
    topologies: dict[str, Manifest] = {}
    flavors: dict[str, Manifest] = {}
    cohorts: set[str] = set()

    def flavor_for(center_name: str, gpu_class: str, quota_name: str) -> str:
        key = (center_name, gpu_class)
        if key in out.flavor_of:
            return out.flavor_of[key]
        center = by_center.get(center_name)
        if center is None:
            raise MappingError(f"GPUQuota {quota_name}: AICenter {center_name!r} not found")
        spec = center.get("spec") or {}
        selector = spec.get("nodeSelector") or {}
        center_nodes = [n for n in node_list if selector_matches(selector, n)]
        products = {c["name"]: c["product"] for c in spec.get("gpuClasses") or []}
        if products:
            if gpu_class not in products:
                raise MappingError(
                    f"GPUQuota {quota_name}: AICenter {center_name} has no GPU class {gpu_class!r}"
                    f" (it has {', '.join(sorted(products))})"
                )
            product = products[gpu_class]
        else:  # no gpuClasses: a node's class is its product without the NVIDIA- prefix
            seen = {
                n[LABEL_GPU_PRODUCT]
                for n in center_nodes
                if n.get(LABEL_GPU_PRODUCT, "").removeprefix("NVIDIA-") == gpu_class
            }
            product = sorted(seen)[0] if seen else f"NVIDIA-{gpu_class}"
        if selector.get("matchExpressions"):
            out.notes.append(
                f"AICenter {center_name}: nodeSelector.matchExpressions cannot be ResourceFlavor nodeLabels;"
                " its flavors select nodes by matchLabels and product only"
            )
        node_labels = {**(selector.get("matchLabels") or {}), LABEL_GPU_PRODUCT: product}
        flavor_nodes = [n for n in center_nodes if n.get(LABEL_GPU_PRODUCT) == product]
        keys = spec.get("topologyKeys") or list(api.DEFAULT_TOPOLOGY_KEYS)
        levels = topology_levels(keys, flavor_nodes)
        tname = topology_name(levels)
        topologies.setdefault(
            tname, _kueue("Topology", tname, {"levels": [{"nodeLabel": k} for k in levels]})
        )
        name = _dns_name(center_name, gpu_class)
        fspec: Manifest = {"nodeLabels": node_labels, "topologyName": tname}
        if tolerations:
            fspec["tolerations"] = [dict(t) for t in tolerations]
        flavors[name] = _kueue("ResourceFlavor", name, fspec)
        out.flavor_of[key] = name
        out.product_of[key] = product
        return name

    for q in sorted(quotas, key=lambda q: q["metadata"]["name"]):
        qname = q["metadata"]["name"]
        spec = q.get("spec") or {}
        center_name = spec.get("center", "")
        cohort = spec.get("cohort") or ""
        center = by_center.get(center_name)
        resource = ((center or {}).get("spec") or {}).get("gpuResource") or api.DEFAULT_GPU_RESOURCE
        flavor_quotas = []
        for r in spec.get("resources") or []:
            guaranteed = int(r.get("guaranteed", 0))
            limit = int(r.get("limit", guaranteed))
            if limit < guaranteed:
                raise MappingError(f"GPUQuota {qname}: limit {limit} < guaranteed {guaranteed}")
            res: Manifest = {"name": resource, "nominalQuota": guaranteed}
            if cohort:
                res["borrowingLimit"] = limit - guaranteed
            elif limit > guaranteed:
                out.notes.append(
                    f"GPUQuota {qname}: limit {limit} > guaranteed {guaranteed} without a cohort;"
                    " there is nothing to borrow from, so Kueue gets nominalQuota only"
                )
            flavor_quotas.append({"name": flavor_for(center_name, r["gpuClass"], qname), "resources": [res]})
        if not flavor_quotas:
            raise MappingError(f"GPUQuota {qname}: no spec.resources")
        preemption = spec.get("preemption") or {}
        within = preemption.get("withinQuota", api.PREEMPT_LOWER_PRIORITY)
        reclaim = preemption.get("reclaimLent", api.PREEMPT_ANY)
        if within not in _WITHIN or reclaim not in _RECLAIM:
            raise MappingError(f"GPUQuota {qname}: unknown preemption policy {within!r}/{reclaim!r}")
        cq_spec: Manifest = {
            "namespaceSelector": spec.get("namespaceSelector") or {},
            "queueingStrategy": "BestEffortFIFO",
            "resourceGroups": [{"coveredResources": [resource], "flavors": flavor_quotas}],
            "preemption": {
                "withinClusterQueue": _WITHIN[within],
                "reclaimWithinCohort": _RECLAIM[reclaim],
                "borrowWithinCohort": {"policy": "Never"},
            },
        }
        if cohort:
            cq_spec["cohortName"] = cohort
            cohorts.add(cohort)
        if fair_sharing:
            cq_spec["fairSharing"] = {"weight": str(int(spec.get("weight", api.DEFAULT_WEIGHT)))}
        out.cluster_queues.append(_kueue("ClusterQueue", qname, cq_spec))
        for ns in namespaces:
            meta = ns["metadata"]
            labels = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": meta["name"]}
            if selector_matches(spec.get("namespaceSelector"), labels):
                out.local_queues.append(
                    _kueue("LocalQueue", qname, {"clusterQueue": qname}, namespace=meta["name"])
                )
    out.topologies = [topologies[k] for k in sorted(topologies)]
    out.flavors = [flavors[k] for k in sorted(flavors)]
    out.cohorts = [_kueue("Cohort", c, {}) for c in sorted(cohorts)]
    for p in sorted(set(priorities)):
        pc = {
            "apiVersion": KUEUE_API,
            "kind": "WorkloadPriorityClass",
            "metadata": {"name": priority_class_name(p)},
            "value": p,
            "description": f"GPUJob priority {p}",
        }
        out.priority_classes.append(pc)
    return out


# --------------------------------------------------------------------------------------------------
# the Kueue side of one trace job


def batch_job(
    name: str,
    namespace: str,
    queue: str,
    replicas: int,
    gpus_per_replica: int,
    *,
    product: str | None = None,
    topology: tuple[str, str] | None = None,
    priority: int | None = None,
    run_seconds: float | None = None,
    labels: Mapping[str, str] | None = None,
    gpu_resource: str = api.DEFAULT_GPU_RESOURCE,
    image: str = SIM_IMAGE,
) -> Manifest:
    """An Indexed Job for Kueue: ``replicas`` pods of ``gpus_per_replica`` GPUs each.

    parallelism = completions = replicas; created suspended with ``kueue.x-k8s.io/queue-name``;
    ``topology`` (key, ``Required``/``Preferred``) becomes the pod template's
    ``kueue.x-k8s.io/podset-required-topology`` / ``podset-preferred-topology`` annotation;
    ``product`` a nodeSelector on ``nvidia.com/gpu.product`` (which picks the quota's flavor of that
    class); ``priority`` the WorkloadPriorityClass label; pods tolerate kwok's taint and, with
    ``run_seconds``, succeed that long after they start.
    """
    annotations: dict[str, str] = {}
    if run_seconds is not None:
        annotations[ANN_RUN_SECONDS] = f"{run_seconds:g}"
    if topology:
        key, mode = topology
        if mode == api.TOPOLOGY_REQUIRED:
            annotations[ANN_REQUIRED_TOPOLOGY] = key
        elif mode == api.TOPOLOGY_PREFERRED:
            annotations[ANN_PREFERRED_TOPOLOGY] = key
        else:
            raise MappingError(f"job {name}: unknown topology mode {mode!r}")
    job_labels = {LABEL_QUEUE_NAME: queue}
    if priority is not None:
        job_labels[LABEL_PRIORITY_CLASS] = priority_class_name(priority)
    pod_spec: Manifest = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "tolerations": [dict(KWOK_TOLERATION)],
        "containers": [
            {
                "name": "main",
                "image": image,
                "resources": {
                    "limits": {gpu_resource: str(gpus_per_replica)},
                    "requests": {gpu_resource: str(gpus_per_replica)},
                },
            }
        ],
    }
    if product:
        pod_spec["nodeSelector"] = {LABEL_GPU_PRODUCT: product}
    template_meta: Manifest = {"labels": dict(labels or {})}
    if annotations:
        template_meta["annotations"] = annotations
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": {**job_labels, **(labels or {})}},
        "spec": {
            "suspend": True,
            "completionMode": "Indexed",
            "parallelism": replicas,
            "completions": replicas,
            "backoffLimit": 0,
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }
