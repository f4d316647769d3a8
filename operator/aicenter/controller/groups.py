"""Bring your own workload: pods that name the operator as their scheduler, grouped into gangs.

A pod opts in with ``spec.schedulerName: aicenter-scheduler`` (no webhook): the operator places it
and binds it (the Binding subresource), charged to the GPUQuota that serves its namespace (or the
one its ``aicenter.dev/quota`` label names), at its priority (``spec.priority``, which the
PriorityClass admission plugin fills). Pods are grouped by what created them:

- an ``aicenter.dev/pod-group`` label: that group, of ``aicenter.dev/pod-group-size`` pods (and
  ``aicenter.dev/pod-group-min-available``);
- a LeaderWorkerSet's group (``leaderworkerset.sigs.k8s.io/name`` + ``group-index``): the annotation
  ``leaderworkerset.sigs.k8s.io/size``;
- a JobSet's replicated job (``jobset.sigs.k8s.io/jobset-name`` + ``replicatedjob-name``; a Kubeflow
  TrainJob runs as a JobSet): ``replicatedjob-replicas`` × the owning Job's parallelism;
- a Kubeflow training-operator job (``training.kubeflow.org/job-name``: PyTorchJob, MPIJob, …): the
  sum of the owning job's replicas;
- a batch/v1 Job (Indexed or not): its parallelism;
- anything else (a Deployment's or StatefulSet's pods, a bare pod): each pod alone.

A group is placed all-or-nothing: when it lacks ``m`` running members and at least ``m`` of its
pods wait, those ``m`` are placed together (inside one topology domain when the
``aicenter.dev/topology-key`` annotation asks, next to the members already running). A group whose
members have not all been created says so, and after the members timeout how long it has waited.
The sizes that live on an owning object (a Job's parallelism, a PyTorchJob's replicas) are read
from it once (a GET by owner reference).

This module is pure: identity and sizes from pod records and owner objects, no client.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aicenter import api
from aicenter.api import Obj

LABEL_POD_GROUP = "aicenter.dev/pod-group"
LABEL_POD_GROUP_SIZE = "aicenter.dev/pod-group-size"
LABEL_POD_GROUP_MIN = "aicenter.dev/pod-group-min-available"
LABEL_GPU_CLASS = "aicenter.dev/gpu-class"
LABEL_PREEMPTIBLE = "aicenter.dev/preemptible"
ANN_TOPOLOGY_KEY = "aicenter.dev/topology-key"
ANN_TOPOLOGY_MODE = "aicenter.dev/topology-mode"

LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
LWS_GROUP = "leaderworkerset.sigs.k8s.io/group-index"
LWS_SIZE = "leaderworkerset.sigs.k8s.io/size"
JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"
JOBSET_RJOB = "jobset.sigs.k8s.io/replicatedjob-name"
JOBSET_RJOB_REPLICAS = "jobset.sigs.k8s.io/replicatedjob-replicas"
KUBEFLOW_JOB = "training.kubeflow.org/job-name"
BATCH_JOB_NAME = "batch.kubernetes.io/job-name"

# Owner kinds whose objects say how big the group is, and where to read them.
KUBEFLOW_KINDS = {
    "PyTorchJob": "pytorchjobs",
    "TFJob": "tfjobs",
    "MPIJob": "mpijobs",
    "XGBoostJob": "xgboostjobs",
    "PaddleJob": "paddlejobs",
    "JAXJob": "jaxjobs",
}


@dataclass(frozen=True)
class Owner:
    """An object to read a group's size from (its path relative to the API root)."""

    api_version: str
    kind: str
    name: str
    uid: str

    def path(self, namespace: str) -> str:
        group_version = self.api_version
        plural = "jobs" if self.kind == "Job" else KUBEFLOW_KINDS.get(self.kind, self.kind.lower() + "s")
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        return f"{prefix}/namespaces/{namespace}/{plural}/{self.name}"


@dataclass(frozen=True)
class Identity:
    """Which group a pod belongs to and how its size is known."""

    key: str  # unique in the cluster: namespace/kind:name
    kind: str  # PodGroup, LeaderWorkerSet, JobSet, Kubeflow, Job, Pod
    name: str  # for people: the group's name as its creator calls it
    size: int | None  # known from the pod itself; None: read it from ``owner``
    min_available: int | None = None
    owner: Owner | None = None
    factor: int = 1  # the owner's figure times this (a JobSet's replicated job: replicas × parallelism)


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v not in (None, "") else None
    except ValueError:
        return None


def _owner(md: Obj, kinds: tuple[str, ...]) -> Owner | None:
    for o in md.get("ownerReferences") or ():
        if o.get("kind") in kinds and o.get("controller", True):
            return Owner(o.get("apiVersion", ""), o["kind"], o.get("name", ""), o.get("uid", ""))
    return None


def identity(pod: Obj) -> Identity:
    """A pod's group, from its labels, annotations and owner references."""
    md = pod["metadata"]
    ns, name = md.get("namespace", ""), md["name"]
    labels, ann = md.get("labels") or {}, md.get("annotations") or {}
    if labels.get(LABEL_POD_GROUP):
        g = labels[LABEL_POD_GROUP]
        size = _int(labels.get(LABEL_POD_GROUP_SIZE) or ann.get(LABEL_POD_GROUP_SIZE))
        mini = _int(labels.get(LABEL_POD_GROUP_MIN) or ann.get(LABEL_POD_GROUP_MIN))
        return Identity(f"{ns}/group:{g}", "PodGroup", g, size or 1, mini)
    if labels.get(LWS_NAME) and labels.get(LWS_GROUP) is not None:
        g = f"{labels[LWS_NAME]}-{labels[LWS_GROUP]}"
        return Identity(f"{ns}/lws:{g}", "LeaderWorkerSet", g, _int(ann.get(LWS_SIZE)) or 1)
    if labels.get(JOBSET_NAME) and labels.get(JOBSET_RJOB):
        g = f"{labels[JOBSET_NAME]}/{labels[JOBSET_RJOB]}"
        replicas = _int(ann.get(JOBSET_RJOB_REPLICAS) or labels.get(JOBSET_RJOB_REPLICAS)) or 1
        return Identity(f"{ns}/jobset:{g}", "JobSet", g, None, owner=_owner(md, ("Job",)), factor=replicas)
    if labels.get(KUBEFLOW_JOB):
        g = labels[KUBEFLOW_JOB]
        return Identity(f"{ns}/kubeflow:{g}", "Kubeflow", g, None, owner=_owner(md, tuple(KUBEFLOW_KINDS)))
    job = _owner(md, ("Job",))
    if job is not None and job.api_version.startswith("batch/"):
        return Identity(f"{ns}/job:{job.name}", "Job", job.name, None, owner=job)
    return Identity(f"{ns}/pod:{name}", "Pod", name, 1)


def size_from_owner(ident: Identity, owner: Obj) -> int:
    """The group's size from the owning object (what ``identity`` could not read off the pod)."""
    spec = owner.get("spec") or {}
    if ident.kind in ("Job", "JobSet"):
        parallelism = spec.get("parallelism", 1)
        completions = spec.get("completions")
        n = min(parallelism, completions) if completions is not None else parallelism
        return max(1, int(n)) * ident.factor
    if ident.kind == "Kubeflow":
        for key in ("pytorchReplicaSpecs", "tfReplicaSpecs", "mpiReplicaSpecs", "xgbReplicaSpecs"):
            if key in spec:
                return max(1, sum(int((r or {}).get("replicas", 1)) for r in spec[key].values()))
        specs = next((v for k, v in spec.items() if k.endswith("ReplicaSpecs") and isinstance(v, dict)), {})
        return max(1, sum(int((r or {}).get("replicas", 1)) for r in specs.values()))
    return 1


@dataclass
class GroupRecord:
    """What the operator knows of one group of pods it schedules (rebuilt from pods; nothing durable:
    a binding is its own record)."""

    ident: Identity
    namespace: str
    size: int | None = None  # None while the owner has not been read
    size_error: str = ""
    members: set[str] = field(default_factory=set)  # pod keys
    binding: dict[str, str] = field(default_factory=dict)  # pod key → node: bound, not seen bound yet
    evicting: set[str] = field(default_factory=set)  # pod keys being evicted (preempted)
    held: dict[str, str] = field(default_factory=dict)  # pod key → node: what the core holds for it
    chosen: list[str] = field(default_factory=list)  # the waiting pods the pending unit would place
    quota: str | None = None
    center: str | None = None
    placed_class: str | None = None
    waiting_since: float | None = None  # when it started to lack members
    reason: str = ""
    message: str = ""
    busy: int = 0
    retry_at: float = 0.0
    failures: int = 0

    @property
    def key(self) -> str:
        return self.ident.key

    @property
    def run_key(self) -> str:
        return f"pods:{self.key}#run"

    @property
    def wait_key(self) -> str:
        return f"pods:{self.key}#wait"

    @property
    def min_available(self) -> int:
        n = self.size or 1
        return min(n, self.ident.min_available) if self.ident.min_available else n


def is_group_unit(key: str) -> bool:
    return key.startswith("pods:")


def group_of_unit(key: str) -> str:
    return key[len("pods:") :].rsplit("#", 1)[0]


def pod_preemptible(labels: dict[str, str]) -> bool:
    return (labels.get(LABEL_PREEMPTIBLE) or "true").lower() != "false"


def gpu_class_of(labels: dict[str, str]) -> str | None:
    return labels.get(LABEL_GPU_CLASS) or None


def quota_label(labels: dict[str, str]) -> str | None:
    return labels.get(api.LABEL_QUOTA) or None
