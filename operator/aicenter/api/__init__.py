"""The aicenter.dev API: group, version, kinds, label and annotation keys.

The CustomResourceDefinitions themselves are built as Python data in :mod:`aicenter.api.crds`
(the single source of truth); the test bed's generator (``python -m aicenter_testbed.generate``)
writes them under ``manifests/`` and the chart. This package is pure Python: no Kubernetes client,
no kopf.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]  # a Kubernetes object (or part of one) as plain JSON

GROUP = "aicenter.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
GROUP_PATH = f"/apis/{GROUP}/{VERSION}"  # REST path prefix of the group
CATEGORY = "aicenter-all"

# Kinds and their resource names.
KIND_AICENTER = "AICenter"
KIND_GPUQUOTA = "GPUQuota"
KIND_GPUJOB = "GPUJob"

PLURAL_AICENTERS = "aicenters"
PLURAL_GPUQUOTAS = "gpuquotas"
PLURAL_GPUJOBS = "gpujobs"

SINGULAR_AICENTER = "aicenter"
SINGULAR_GPUQUOTA = "gpuquota"
SINGULAR_GPUJOB = "gpujob"

SHORT_AICENTER = "aic"
SHORT_GPUQUOTA = "gq"
SHORT_GPUJOB = "gj"

CRD_NAME_AICENTERS = f"{PLURAL_AICENTERS}.{GROUP}"
CRD_NAME_GPUQUOTAS = f"{PLURAL_GPUQUOTAS}.{GROUP}"
CRD_NAME_GPUJOBS = f"{PLURAL_GPUJOBS}.{GROUP}"

# Kind -> plural, for generic code.
PLURALS = {KIND_AICENTER: PLURAL_AICENTERS, KIND_GPUQUOTA: PLURAL_GPUQUOTAS, KIND_GPUJOB: PLURAL_GPUJOBS}
NAMESPACED = {KIND_AICENTER: False, KIND_GPUQUOTA: False, KIND_GPUJOB: True}

# Labels and annotations.
LABEL_JOB = "aicenter.dev/job"  # pod label: name of the owning GPUJob
LABEL_REPLICA = "aicenter.dev/replica"  # pod label: replica index, "0".."replicas-1"
LABEL_JOB_UID = "aicenter.dev/job-uid"  # pod label: uid of the owning GPUJob
LABEL_ATTEMPT = "aicenter.dev/attempt"  # pod label: the admission attempt the pod belongs to
LABEL_MANAGED_BY = "aicenter.dev/managed-by"
MANAGED_BY = "aicenter-operator"  # value of LABEL_MANAGED_BY
LABEL_CENTER = "aicenter.dev/center"  # node label: the AICenter a node belongs to
LABEL_QUOTA = "aicenter.dev/quota"  # namespace label in the samples: the GPUQuota serving it

DEFAULT_SCHEDULER_NAME = "aicenter-scheduler"
FINALIZER = "aicenter.dev/cleanup"

# Defaults and enumerations used by the schemas (kept here so controllers can share them).
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
LABEL_GPU_PRODUCT = "nvidia.com/gpu.product"
DEFAULT_TOPOLOGY_KEYS = (
    "nvidia.com/gpu.clique",
    "topology.aicenter.dev/rack",
    "topology.kubernetes.io/zone",
)
DEFAULT_NODE_NOT_READY_GRACE_SECONDS = 60
DEFAULT_UNHEALTHY_GPU_GRACE_SECONDS = 30  # a device plugin or kubelet restart shows 0 GPUs for a moment
DEFAULT_REPLICAS = 1
DEFAULT_PRIORITY = 0
DEFAULT_PREEMPTIBLE = True
DEFAULT_BACKOFF_LIMIT = 3
DEFAULT_WEIGHT = 1
MAX_NAME_FOR_PODS = 63  # a GPUJob's name is a label value on its pods

PLACEMENT_BINPACK = "BinPack"
PLACEMENT_SPREAD = "Spread"
PLACEMENT_POLICIES = (PLACEMENT_BINPACK, PLACEMENT_SPREAD)

GANG_ALL_OR_NOTHING = "AllOrNothing"
GANG_INDEPENDENT = "Independent"
GANG_POLICIES = (GANG_ALL_OR_NOTHING, GANG_INDEPENDENT)

TOPOLOGY_REQUIRED = "Required"
TOPOLOGY_PREFERRED = "Preferred"
TOPOLOGY_MODES = (TOPOLOGY_REQUIRED, TOPOLOGY_PREFERRED)

PREEMPT_ANY = "Any"
PREEMPT_LOWER_PRIORITY = "LowerPriority"
PREEMPT_NEVER = "Never"
WITHIN_QUOTA_POLICIES = (PREEMPT_LOWER_PRIORITY, PREEMPT_NEVER)
RECLAIM_LENT_POLICIES = (PREEMPT_ANY, PREEMPT_LOWER_PRIORITY, PREEMPT_NEVER)

PHASE_PENDING = "Pending"
PHASE_ADMITTED = "Admitted"
PHASE_RUNNING = "Running"
PHASE_SUCCEEDED = "Succeeded"
PHASE_FAILED = "Failed"
JOB_PHASES = (PHASE_PENDING, PHASE_ADMITTED, PHASE_RUNNING, PHASE_SUCCEEDED, PHASE_FAILED)

MIN_PRIORITY = -1_000_000
MAX_PRIORITY = 1_000_000
MAX_JOB_GPUS = 100_000  # replicas x gpusPerReplica
MIN_WEIGHT = 1
MAX_WEIGHT = 1000

__all__ = [name for name in dir() if name.isupper()] + ["Obj"]
