"""The aicenter.dev/v1alpha1 CustomResourceDefinitions, as Python data.

This module is the single source of truth for the API. ``python -m aicenter_testbed.generate`` renders
it to ``manifests/crds/`` (and the Helm chart's ``crds/`` folder when present); a test fails when the
files drift from it. Small helpers build OpenAPI v3 schema pieces; ``aicenter_crd()``,
``gpuquota_crd()`` and ``gpujob_crd()`` return complete ``apiextensions.k8s.io/v1`` objects.

Every field carries a description (``kubectl explain`` shows them). Cross-field rules are CEL
``x-kubernetes-validations`` whose messages name the field they are about; ``cel_rules(kind)`` lists
them for tests and docs.
"""

from __future__ import annotations

import copy
from typing import Any

from aicenter.api import (
    API_VERSION,
    CATEGORY,
    DEFAULT_BACKOFF_LIMIT,
    DEFAULT_GPU_RESOURCE,
    DEFAULT_NODE_NOT_READY_GRACE_SECONDS,
    DEFAULT_PREEMPTIBLE,
    DEFAULT_PRIORITY,
    DEFAULT_REPLICAS,
    DEFAULT_TOPOLOGY_KEYS,
    DEFAULT_UNHEALTHY_GPU_GRACE_SECONDS,
    DEFAULT_WEIGHT,
    GANG_ALL_OR_NOTHING,
    GANG_POLICIES,
    GROUP,
    JOB_PHASES,
    KIND_AICENTER,
    KIND_GPUJOB,
    KIND_GPUQUOTA,
    LABEL_GPU_PRODUCT,
    MANAGED_BY,
    MAX_JOB_GPUS,
    MAX_NAME_FOR_PODS,
    MAX_PRIORITY,
    MAX_WEIGHT,
    MIN_PRIORITY,
    MIN_WEIGHT,
    PLACEMENT_BINPACK,
    PLACEMENT_POLICIES,
    PLURAL_AICENTERS,
    PLURAL_GPUJOBS,
    PLURAL_GPUQUOTAS,
    PREEMPT_ANY,
    PREEMPT_LOWER_PRIORITY,
    RECLAIM_LENT_POLICIES,
    SHORT_AICENTER,
    SHORT_GPUJOB,
    SHORT_GPUQUOTA,
    SINGULAR_AICENTER,
    SINGULAR_GPUJOB,
    SINGULAR_GPUQUOTA,
    TOPOLOGY_MODES,
    TOPOLOGY_REQUIRED,
    VERSION,
    WITHIN_QUOTA_POLICIES,
)

Schema = dict[str, Any]

# Bounds that keep the API server's CEL cost estimates small and objects reasonable.
NAME_MAX = 253  # DNS subdomain: names of AICenters, GPUQuotas, nodes, pods
LABEL_VALUE_MAX = 63
LABEL_KEY_MAX = 317  # 253-character prefix, '/', 63-character name
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
CLASS_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
MAX_GPU_CLASSES = 64
MAX_SELECTOR_TERMS = 32
MAX_SELECTOR_VALUES = 1024


# --------------------------------------------------------------------------------------------------
# Schema helpers


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> Schema:
    """One ``x-kubernetes-validations`` entry."""
    out: Schema = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def _finish(schema: Schema, default: Any = None, validations: list[Schema] | None = None) -> Schema:
    if default is not None:
        schema["default"] = copy.deepcopy(default)
    if validations:
        schema["x-kubernetes-validations"] = validations
    return schema


def string(
    description: str,
    *,
    default: str | None = None,
    enum: tuple[str, ...] | list[str] | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    fmt: str | None = None,
    validations: list[Schema] | None = None,
) -> Schema:
    s: Schema = {"description": description, "type": "string"}
    if fmt:
        s["format"] = fmt
    if enum:
        s["enum"] = list(enum)
    if min_length is not None:
        s["minLength"] = min_length
    if max_length is not None:
        s["maxLength"] = max_length
    if pattern:
        s["pattern"] = pattern
    return _finish(s, default, validations)


def enum(description: str, values: tuple[str, ...] | list[str], *, default: str | None = None) -> Schema:
    """A string restricted to ``values`` (kubectl explain shows them)."""
    return string(description, enum=values, default=default)


def integer(
    description: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    default: int | None = None,
    fmt: str = "int32",
    validations: list[Schema] | None = None,
) -> Schema:
    s: Schema = {"description": description, "type": "integer", "format": fmt}
    if minimum is not None:
        s["minimum"] = minimum
    if maximum is not None:
        s["maximum"] = maximum
    return _finish(s, default, validations)


def count(description: str) -> Schema:
    """A non-negative counter in a status."""
    return integer(description, minimum=0, fmt="int64")


def boolean(description: str, *, default: bool | None = None) -> Schema:
    return _finish({"description": description, "type": "boolean"}, default)


def timestamp(description: str) -> Schema:
    return string(
        f"{description} RFC 3339 date and time with a zone, e.g. 2026-01-02T15:04:05Z.", fmt="date-time"
    )


def obj(
    description: str,
    properties: dict[str, Schema],
    *,
    required: list[str] | None = None,
    default: Any = None,
    validations: list[Schema] | None = None,
    preserve_unknown_fields: bool = False,
) -> Schema:
    s: Schema = {"description": description, "type": "object"}
    if properties:
        s["properties"] = properties
    if required:
        missing = set(required) - set(properties)
        assert not missing, f"required fields without a schema: {missing}"
        s["required"] = list(required)
    if preserve_unknown_fields:
        s["x-kubernetes-preserve-unknown-fields"] = True
    return _finish(s, default, validations)


def string_map(description: str, *, max_value_length: int | None = None) -> Schema:
    values: Schema = {"type": "string"}
    if max_value_length is not None:
        values["maxLength"] = max_value_length
    return {"description": description, "type": "object", "additionalProperties": values}


def array(
    description: str,
    items: Schema,
    *,
    min_items: int | None = None,
    max_items: int | None = None,
    list_type: str | None = None,
    map_keys: list[str] | None = None,
    default: Any = None,
    validations: list[Schema] | None = None,
) -> Schema:
    s: Schema = {"description": description, "type": "array", "items": items}
    if min_items is not None:
        s["minItems"] = min_items
    if max_items is not None:
        s["maxItems"] = max_items
    if map_keys:
        list_type = "map"
        s["x-kubernetes-list-map-keys"] = list(map_keys)
        for key in map_keys:
            assert key in items.get("required", []) or "default" in items["properties"][key], (
                f"list map key {key!r} must be required or defaulted"
            )
    if list_type:
        s["x-kubernetes-list-type"] = list_type
    return _finish(s, default, validations)


def label_selector(description: str, path: str) -> Schema:
    """A metav1.LabelSelector (matchLabels and matchExpressions); ``path`` names it in CEL messages."""
    requirement = obj(
        "A label selector requirement: a key, an operator and, for In and NotIn, values.",
        {
            "key": string("The label key the selector applies to.", min_length=1, max_length=LABEL_KEY_MAX),
            "operator": enum("How the key relates to the values.", ("In", "NotIn", "Exists", "DoesNotExist")),
            "values": array(
                "Label values; non-empty for In and NotIn, empty for Exists and DoesNotExist.",
                string("A label value.", max_length=LABEL_VALUE_MAX),
                max_items=MAX_SELECTOR_VALUES,
                list_type="atomic",
            ),
        },
        required=["key", "operator"],
        validations=[
            cel(
                "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
                " : (!has(self.values) || size(self.values) == 0)",
                f"{path}.matchExpressions[].values must be non-empty for In and NotIn"
                " and empty for Exists and DoesNotExist",
                field_path=".values",
            )
        ],
    )
    return obj(
        f"{description} An empty selector selects everything; matchLabels and matchExpressions are ANDed.",
        {
            "matchLabels": string_map(
                "Label key/value pairs, each equivalent to a matchExpressions entry with operator In"
                " and a single value.",
                max_value_length=LABEL_VALUE_MAX,
            ),
            "matchExpressions": array(
                "Label selector requirements, ANDed.",
                requirement,
                max_items=MAX_SELECTOR_TERMS,
                list_type="atomic",
            ),
        },
        validations=None,
    ) | {"x-kubernetes-map-type": "atomic"}


def conditions(description: str) -> Schema:
    """Standard metav1.Condition list (kept permissive: only type and status are required)."""
    condition = obj(
        "One aspect of the object's current state, in the metav1.Condition shape.",
        {
            "type": string("Type of the condition in CamelCase, e.g. Ready.", min_length=1, max_length=316),
            "status": enum("Status of the condition.", ("True", "False", "Unknown")),
            "reason": string(
                "A CamelCase, machine-readable reason for the last transition.", max_length=1024
            ),
            "message": string("A human-readable message about the last transition.", max_length=32768),
            "lastTransitionTime": timestamp("When the condition last changed status."),
            "observedGeneration": integer(
                "The .metadata.generation the condition was set for.", minimum=0, fmt="int64"
            ),
        },
        required=["type", "status"],
    )
    return array(description, condition, map_keys=["type"])


def printer(
    name: str, json_path: str, type_: str, description: str, *, priority: int = 0, fmt: str | None = None
) -> Schema:
    col: Schema = {"name": name, "type": type_, "jsonPath": json_path, "description": description}
    if fmt:
        col["format"] = fmt
    if priority:
        col["priority"] = priority
    return col


AGE_COLUMN = printer("Age", ".metadata.creationTimestamp", "date", "Time since the object was created.")


def root_schema(
    kind: str, description: str, spec: Schema, status: Schema, validations: list[Schema] | None = None
) -> Schema:
    return obj(
        description,
        {
            "apiVersion": string(
                "APIVersion defines the versioned schema of this representation of an object."
                f" For {kind} it is {API_VERSION}."
            ),
            "kind": string(f"Kind is the REST resource this object represents: {kind}."),
            # The API server allows nothing but the type here (it rejects even a description).
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        required=["spec"],
        validations=validations,
    )


def custom_resource_definition(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    namespaced: bool,
    schema: Schema,
    columns: list[Schema],
    selectable_fields: tuple[str, ...] | list[str] = (),
) -> Schema:
    version: Schema = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
        "subresources": {"status": {}},
        "additionalPrinterColumns": columns,
    }
    if selectable_fields:
        version["selectableFields"] = [{"jsonPath": p} for p in selectable_fields]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": MANAGED_BY, "app.kubernetes.io/part-of": MANAGED_BY},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": [CATEGORY],
            },
            "scope": "Namespaced" if namespaced else "Cluster",
            "versions": [version],
        },
    }


def immutable(field: str, path: str, *, once_set: bool = False) -> Schema:
    """A transition rule at the parent level making ``field`` immutable (optionally once set)."""
    if once_set:
        rule = f"!has(oldSelf.{field}) || (has(self.{field}) && self.{field} == oldSelf.{field})"
        message = f"{path} is immutable once set"
    else:
        rule = f"self.{field} == oldSelf.{field}"
        message = f"{path} is immutable"
    return cel(rule, message, field_path=f".{field}")


# --------------------------------------------------------------------------------------------------
# AICenter


def gpu_class_name(description: str, **kw: Any) -> Schema:
    return string(description, min_length=1, max_length=LABEL_VALUE_MAX, pattern=CLASS_PATTERN, **kw)


def aicenter_crd() -> Schema:
    gpu_class = obj(
        "Maps a GPU product, as GPU Feature Discovery labels it, to a short class name.",
        {
            "name": gpu_class_name(
                "Class name used by GPUQuotas and GPUJobs, e.g. B200. Unique within the AICenter."
            ),
            "product": string(
                f"Value of the node label {LABEL_GPU_PRODUCT} for this class, e.g. NVIDIA-B200."
                " Unique within the AICenter.",
                min_length=1,
                max_length=LABEL_VALUE_MAX,
                pattern=LABEL_VALUE_PATTERN,
            ),
        },
        required=["name", "product"],
    )
    spec = obj(
        "Desired state of the AICenter: which nodes it manages and how it places GPU jobs on them.",
        {
            "nodeSelector": label_selector(
                "Selects the nodes of this centre (for example aicenter.dev/center=<name>).",
                "spec.nodeSelector",
            ),
            "gpuResource": string(
                "Extended resource name under which nodes advertise GPUs.",
                default=DEFAULT_GPU_RESOURCE,
                min_length=1,
                max_length=LABEL_KEY_MAX,
            ),
            "gpuClasses": array(
                f"GPU classes of this centre, each mapped from a {LABEL_GPU_PRODUCT} label value."
                " When empty, a node's class is its product value without the NVIDIA- prefix.",
                gpu_class,
                max_items=MAX_GPU_CLASSES,
                map_keys=["name"],
                validations=[
                    cel(
                        "self.all(c, self.exists_one(d, d.name == c.name))",
                        "spec.gpuClasses[].name must be unique",
                    ),
                    cel(
                        "self.all(c, self.exists_one(d, d.product == c.product))",
                        "spec.gpuClasses[].product must be unique",
                    ),
                ],
            ),
            "topologyKeys": array(
                "Node label keys describing the network topology, from the tightest domain (an NVLink"
                " clique) to the loosest (a zone). GPUJobs may only name these keys in spec.topology.key.",
                string("A node label key.", min_length=1, max_length=LABEL_KEY_MAX),
                max_items=16,
                list_type="set",
                default=list(DEFAULT_TOPOLOGY_KEYS),
            ),
            "placementPolicy": enum(
                "How replicas are placed on nodes: BinPack fills the fullest nodes and domains first"
                " (keeps whole nodes and cliques free for large gangs); Spread prefers the emptiest.",
                PLACEMENT_POLICIES,
                default=PLACEMENT_BINPACK,
            ),
            "maintenance": boolean(
                "When true, no new placements are made in this centre; running jobs are left alone.",
                default=False,
            ),
            "nodeNotReadyGraceSeconds": integer(
                "How long a node may be NotReady before its GPUs count as unhealthy and the replicas on it"
                " are treated as failed.",
                minimum=0,
                default=DEFAULT_NODE_NOT_READY_GRACE_SECONDS,
            ),
            "unhealthyGPUGraceSeconds": integer(
                "How long a node may show fewer healthy (allocatable) GPUs than its pods hold before the"
                " lowest-priority work on it is evicted. A device plugin or kubelet restart shows 0 GPUs for"
                " a moment; nothing is evicted for that.",
                minimum=0,
                default=DEFAULT_UNHEALTHY_GPU_GRACE_SECONDS,
            ),
        },
        required=["nodeSelector"],
    )
    gpu_status = obj(
        "GPU counts of one class.",
        {
            "class": string("GPU class name."),
            "product": string(f"The {LABEL_GPU_PRODUCT} label value of the class."),
            "capacity": count("GPUs of this class on selected nodes."),
            "healthy": count("GPUs of this class on Ready, schedulable nodes that report them healthy."),
            "allocated": count("GPUs of this class allocated to admitted or running GPUJobs."),
            "free": count("Healthy GPUs of this class not allocated."),
        },
        required=["class"],
    )
    status = obj(
        "Observed state of the AICenter, written by the operator.",
        {
            "observedGeneration": integer(
                "The .metadata.generation this status was computed for.", minimum=0, fmt="int64"
            ),
            "nodes": obj(
                "Node counts.",
                {
                    "total": count("Nodes matching spec.nodeSelector."),
                    "ready": count("Selected nodes with condition Ready=True."),
                    "schedulable": count("Selected nodes that are Ready and not cordoned."),
                },
            ),
            "gpus": array("GPU counts per class.", gpu_status, map_keys=["class"]),
            "totalGPUs": count("GPUs on selected nodes (all classes)."),
            "healthyGPUs": count("GPUs on Ready, schedulable nodes that report them healthy."),
            "allocatedGPUs": count("GPUs allocated to admitted or running GPUJobs."),
            "freeGPUs": count("Healthy GPUs not allocated."),
            "guaranteedGPUs": count("Sum of the guarantees of the GPUQuotas of this centre."),
            "conditions": conditions("Conditions of the AICenter, e.g. Ready and Overcommitted."),
        },
    )
    schema = root_schema(
        KIND_AICENTER,
        "AICenter is one GPU computing centre: a set of GPU nodes selected by labels, their GPU classes,"
        " topology and placement policy. Cluster-scoped.",
        spec,
        status,
    )
    columns = [
        printer("Total", ".status.totalGPUs", "integer", "GPUs on selected nodes."),
        printer("Allocated", ".status.allocatedGPUs", "integer", "GPUs allocated to jobs."),
        printer("Free", ".status.freeGPUs", "integer", "Healthy GPUs not allocated."),
        printer("Healthy", ".status.healthyGPUs", "integer", "GPUs on healthy, schedulable nodes."),
        printer("Ready Nodes", ".status.nodes.ready", "integer", "Selected nodes that are Ready."),
        printer("Maintenance", ".spec.maintenance", "boolean", "No new placements while true."),
        AGE_COLUMN,
    ]
    return custom_resource_definition(
        kind=KIND_AICENTER,
        plural=PLURAL_AICENTERS,
        singular=SINGULAR_AICENTER,
        short_names=[SHORT_AICENTER],
        namespaced=False,
        schema=schema,
        columns=columns,
    )


# --------------------------------------------------------------------------------------------------
# GPUQuota

LIMIT_RULE = "!has(self.limit) || self.limit >= self.guaranteed"
LIMIT_MESSAGE = "spec.resources[].limit must be >= guaranteed"


def gpuquota_crd() -> Schema:
    resource = obj(
        "Guaranteed and maximum GPUs of one class.",
        {
            "gpuClass": gpu_class_name("GPU class, as named in the AICenter's spec.gpuClasses, e.g. B200."),
            "guaranteed": integer(
                "GPUs of this class the quota's jobs can always get, by preempting borrowers if needed.",
                minimum=0,
            ),
            "limit": integer(
                "Most GPUs of this class the quota's jobs may use, borrowing unused guarantees of the"
                " cohort beyond the guarantee. Defaults to guaranteed (no borrowing).",
                minimum=0,
            ),
        },
        required=["gpuClass", "guaranteed"],
        validations=[cel(LIMIT_RULE, LIMIT_MESSAGE, field_path=".limit")],
    )
    spec = obj(
        "Desired state of the GPUQuota: which tenant namespaces it serves, in which centre, how many GPUs.",
        {
            "center": string(
                "Name of the AICenter the quota draws GPUs from. Immutable.",
                min_length=1,
                max_length=NAME_MAX,
            ),
            "cohort": string(
                "Quotas of one centre in the same cohort lend unused guarantees to each other. Empty: no"
                " borrowing or lending.",
                max_length=NAME_MAX,
            ),
            "namespaceSelector": label_selector(
                "Selects the tenant namespaces whose GPUJobs this quota serves.", "spec.namespaceSelector"
            ),
            "resources": array(
                "GPUs per class. At least one entry; one entry per class.",
                resource,
                min_items=1,
                max_items=MAX_GPU_CLASSES,
                map_keys=["gpuClass"],
            ),
            "weight": integer(
                "Fair-share weight when borrowers of a cohort compete for lent GPUs.",
                minimum=MIN_WEIGHT,
                maximum=MAX_WEIGHT,
                default=DEFAULT_WEIGHT,
            ),
            "preemption": obj(
                "When this quota's pending jobs may preempt running ones.",
                {
                    "withinQuota": enum(
                        "Whether a pending job may preempt lower-priority preemptible jobs of the same"
                        " quota.",
                        WITHIN_QUOTA_POLICIES,
                        default=PREEMPT_LOWER_PRIORITY,
                    ),
                    "reclaimLent": enum(
                        "Which jobs of other quotas may be preempted to reclaim GPUs this quota lent and now"
                        " needs within its guarantee: Any borrower, only LowerPriority ones, or Never.",
                        RECLAIM_LENT_POLICIES,
                        default=PREEMPT_ANY,
                    ),
                },
                default={},
            ),
        },
        required=["center", "namespaceSelector", "resources"],
        validations=[immutable("center", "spec.center")],
    )
    resource_status = obj(
        "Usage of one class.",
        {
            "gpuClass": string("GPU class name."),
            "guaranteed": count("Guaranteed GPUs of this class."),
            "limit": count(
                "Effective limit of this class (guaranteed when spec.resources[].limit is unset)."
            ),
            "used": count("GPUs of this class held by the quota's admitted and running jobs."),
            "borrowed": count("Used GPUs beyond the guarantee, borrowed from the cohort."),
            "lent": count("Unused guaranteed GPUs currently used by other quotas of the cohort."),
        },
        required=["gpuClass"],
    )
    status = obj(
        "Observed state of the GPUQuota, written by the operator.",
        {
            "observedGeneration": integer(
                "The .metadata.generation this status was computed for.", minimum=0, fmt="int64"
            ),
            "resources": array("Usage per class.", resource_status, map_keys=["gpuClass"]),
            "usedGPUs": count("GPUs held by the quota's admitted and running jobs (all classes)."),
            "guaranteedGPUs": count("Sum of spec.resources[].guaranteed."),
            "admittedJobs": count("Jobs admitted or running under this quota."),
            "pendingJobs": count("Jobs waiting for admission under this quota."),
            "conditions": conditions("Conditions of the GPUQuota, e.g. Ready and CenterFound."),
        },
    )
    schema = root_schema(
        KIND_GPUQUOTA,
        "GPUQuota gives the GPUJobs of selected tenant namespaces guaranteed and borrowable GPUs of an"
        " AICenter. Cluster-scoped.",
        spec,
        status,
    )
    columns = [
        printer("Center", ".spec.center", "string", "AICenter the quota draws from."),
        printer("Cohort", ".spec.cohort", "string", "Borrowing cohort."),
        printer("Guaranteed", ".status.guaranteedGPUs", "integer", "Guaranteed GPUs, all classes."),
        printer("Used", ".status.usedGPUs", "integer", "GPUs in use, all classes."),
        printer("Admitted", ".status.admittedJobs", "integer", "Jobs admitted or running."),
        printer("Pending", ".status.pendingJobs", "integer", "Jobs waiting for admission."),
        AGE_COLUMN,
    ]
    return custom_resource_definition(
        kind=KIND_GPUQUOTA,
        plural=PLURAL_GPUQUOTAS,
        singular=SINGULAR_GPUQUOTA,
        short_names=[SHORT_GPUQUOTA],
        namespaced=False,
        schema=schema,
        columns=columns,
        selectable_fields=[".spec.center", ".spec.cohort"],
    )


# --------------------------------------------------------------------------------------------------
# GPUJob

TOTAL_GPUS_RULE = f"self.replicas * self.gpusPerReplica <= {MAX_JOB_GPUS}"
TOTAL_GPUS_MESSAGE = f"spec.replicas * spec.gpusPerReplica (total GPUs) must be at most {MAX_JOB_GPUS}"


MAX_CONTAINERS = 64
MAX_RESOURCES = 64


def _no_gpus_rule(field: str) -> Schema:
    gpu = DEFAULT_GPU_RESOURCE
    inner = (
        f"(!has(c.resources.limits) || !('{gpu}' in c.resources.limits))"
        f" && (!has(c.resources.requests) || !('{gpu}' in c.resources.requests))"
    )
    return cel(
        f"!has(self.{field}) || self.{field}.all(c, !has(c.resources) || ({inner}))",
        f"spec.template.spec.{field}[].resources must not ask for {gpu}: every replica gets"
        " spec.gpusPerReplica GPUs, added by the operator",
        field_path=f".{field}",
    )


def pod_template(description: str) -> Schema:
    quantity: Schema = {
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
    }

    def resource_map(what: str) -> Schema:
        return {
            "description": f"{what} per resource name (cpu, memory, …), as quantities.",
            "type": "object",
            "maxProperties": MAX_RESOURCES,
            "additionalProperties": quantity,
        }

    container = obj(
        "A container (core/v1 Container); fields other than name, image and resources are kept as given.",
        {
            "name": string(
                "Container name, unique within the pod.", min_length=1, max_length=LABEL_VALUE_MAX
            ),
            "image": string("Container image."),
            "resources": obj(
                "Compute resources besides GPUs (the operator adds spec.gpusPerReplica GPUs to the first"
                " container). The operator places replicas only on nodes with these free.",
                {"limits": resource_map("Limits"), "requests": resource_map("Requests")},
                preserve_unknown_fields=True,
            ),
        },
        required=["name"],
        preserve_unknown_fields=True,
    )
    return obj(
        description,
        {
            "metadata": obj(
                "Labels and annotations for every replica's pod.",
                {
                    "labels": string_map("Labels added to every pod."),
                    "annotations": string_map("Annotations added to every pod."),
                },
            ),
            "spec": obj(
                "A core/v1 PodSpec; validated by the API server when pods are created. The operator sets"
                " the scheduler, the GPU resource (spec.gpusPerReplica) and the placement.",
                {
                    "containers": array(
                        "Containers of the pod; at least one.",
                        container,
                        min_items=1,
                        max_items=MAX_CONTAINERS,
                        list_type="atomic",
                    ),
                    "initContainers": array(
                        "Init containers of the pod (restartPolicy Always makes one a sidecar).",
                        container,
                        max_items=MAX_CONTAINERS,
                        list_type="atomic",
                    ),
                },
                required=["containers"],
                preserve_unknown_fields=True,
                validations=[_no_gpus_rule("containers"), _no_gpus_rule("initContainers")],
            ),
        },
        required=["spec"],
    )


def gpujob_crd() -> Schema:
    spec = obj(
        "Desired state of the GPUJob: how many GPUs, in what shape, under which quota, running what.",
        {
            "quota": string(
                "Name of the GPUQuota to charge. Optional when exactly one quota selects the job's"
                " namespace. Immutable once set.",
                min_length=1,
                max_length=NAME_MAX,
            ),
            "gpuClass": gpu_class_name(
                "GPU class to run on, e.g. B200. Optional when the quota has a single class."
                " Immutable once set."
            ),
            "replicas": integer("Number of pods (replicas). Immutable.", minimum=1, default=DEFAULT_REPLICAS),
            "gpusPerReplica": integer("GPUs for each replica, on one node. Immutable.", minimum=1),
            "gang": obj(
                "How replicas are admitted together.",
                {
                    "policy": enum(
                        "AllOrNothing admits and places all replicas at once or none; Independent places"
                        " each replica as GPUs allow.",
                        GANG_POLICIES,
                        default=GANG_ALL_OR_NOTHING,
                    ),
                },
                default={},
            ),
            "topology": obj(
                "Keep the replicas inside one topology domain, e.g. one NVLink clique or one rack.",
                {
                    "key": string(
                        "Node label key of the domain, one of the AICenter's spec.topologyKeys,"
                        " e.g. nvidia.com/gpu.clique.",
                        min_length=1,
                        max_length=LABEL_KEY_MAX,
                    ),
                    "mode": enum(
                        "Required: all replicas in one domain or wait; Preferred: one domain when possible.",
                        TOPOLOGY_MODES,
                        default=TOPOLOGY_REQUIRED,
                    ),
                },
                required=["key"],
            ),
            "priority": integer(
                "Higher runs first and may preempt lower (see the quota's spec.preemption).",
                minimum=MIN_PRIORITY,
                maximum=MAX_PRIORITY,
                default=DEFAULT_PRIORITY,
            ),
            "preemptible": boolean("Whether other jobs may preempt this one.", default=DEFAULT_PREEMPTIBLE),
            "backoffLimit": integer(
                "Restarts of the job (all replicas, for a gang) before it is marked Failed.",
                minimum=0,
                default=DEFAULT_BACKOFF_LIMIT,
            ),
            "activeDeadlineSeconds": integer(
                "Seconds the job may run once started before it is stopped and marked Failed.",
                minimum=1,
                fmt="int64",
            ),
            "ttlSecondsAfterFinished": integer(
                "Seconds after Succeeded or Failed when the job (and its pods) are deleted.", minimum=0
            ),
            "template": pod_template("Pod template for every replica."),
        },
        required=["gpusPerReplica", "template"],
        validations=[
            cel(TOTAL_GPUS_RULE, TOTAL_GPUS_MESSAGE, field_path=".gpusPerReplica"),
            immutable("replicas", "spec.replicas"),
            immutable("gpusPerReplica", "spec.gpusPerReplica"),
            immutable("gpuClass", "spec.gpuClass", once_set=True),
            immutable("quota", "spec.quota", once_set=True),
        ],
    )
    placement = obj(
        "Where one replica runs.",
        {
            "replica": integer("Replica index, 0 to replicas-1.", minimum=0),
            "node": string("Node name."),
            "pod": string("Pod name."),
        },
        required=["replica"],
    )
    preemption = obj(
        "One preemption of this job.",
        {
            "time": timestamp("When the job was preempted."),
            "preemptor": string("The job that needed the GPUs, as namespace/name."),
            "reason": string("Why, e.g. ReclaimLent or HigherPriority."),
        },
    )
    status = obj(
        "Observed state of the GPUJob, written by the operator.",
        {
            "phase": enum("Lifecycle phase.", JOB_PHASES),
            "reason": string("Short CamelCase reason for the phase, e.g. QuotaExhausted."),
            "message": string(
                "Plain-language explanation, e.g. why the job is pending: quota universities: limit"
                " 20,000 B200 reached - 19,992 used, 16 requested."
            ),
            "quota": string("The GPUQuota the job is charged to."),
            "center": string("The AICenter the job runs in."),
            "gpuClass": string("The GPU class the job runs on."),
            "totalGPUs": count("spec.replicas x spec.gpusPerReplica."),
            "placements": array("Node and pod of each placed replica.", placement),
            "admittedAt": timestamp("When the job was admitted."),
            "startedAt": timestamp("When all replicas (a gang) or the first replica started running."),
            "finishedAt": timestamp("When the job Succeeded or Failed."),
            "restarts": count("Times the job has been restarted."),
            "attempt": count(
                "The latest admission attempt; its replica pods are named <job>-<attempt>-<replica> and"
                " labelled aicenter.dev/attempt, so a pod of an earlier attempt is never taken for one of it."
            ),
            "preemptions": array("Preemptions of this job, oldest first.", preemption),
            "lastTransitionTime": timestamp("When the phase last changed."),
            "observedGeneration": integer(
                "The .metadata.generation this status was computed for.", minimum=0, fmt="int64"
            ),
            "conditions": conditions("Conditions of the GPUJob, e.g. Admitted and Ready."),
        },
    )
    schema = root_schema(
        KIND_GPUJOB,
        "GPUJob runs replicas x gpusPerReplica GPUs of one class under a GPUQuota, as a gang when asked,"
        " inside a topology domain when asked. Namespaced.",
        spec,
        status,
        validations=[
            cel(
                f"size(self.metadata.name) <= {MAX_NAME_FOR_PODS}",
                f"metadata.name must be at most {MAX_NAME_FOR_PODS} characters: it is a label value on the"
                " job's pods",
            )
        ],
    )
    columns = [
        printer("Phase", ".status.phase", "string", "Lifecycle phase."),
        printer("GPUs", ".status.totalGPUs", "integer", "Total GPUs of the job."),
        printer("Replicas", ".spec.replicas", "integer", "Number of replicas."),
        printer("Quota", ".status.quota", "string", "GPUQuota the job is charged to."),
        printer("Reason", ".status.reason", "string", "Reason for the phase.", priority=1),
        AGE_COLUMN,
    ]
    return custom_resource_definition(
        kind=KIND_GPUJOB,
        plural=PLURAL_GPUJOBS,
        singular=SINGULAR_GPUJOB,
        short_names=[SHORT_GPUJOB],
        namespaced=True,
        schema=schema,
        columns=columns,
        selectable_fields=[".spec.quota", ".status.phase"],
    )


# --------------------------------------------------------------------------------------------------


def all_crds() -> list[Schema]:
    """The three CRDs, in the order they should be applied."""
    return [aicenter_crd(), gpuquota_crd(), gpujob_crd()]


def crd_for(kind: str) -> Schema:
    """The CRD of ``kind`` (AICenter, GPUQuota or GPUJob)."""
    for crd in all_crds():
        if crd["spec"]["names"]["kind"] == kind:
            return crd
    raise KeyError(f"no CRD for kind {kind!r}")


def openapi_schema(kind: str) -> Schema:
    """The openAPIV3Schema of ``kind``."""
    return crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _collect_rules(schema: Schema, path: str, out: list[tuple[str, str, str]]) -> None:
    for v in schema.get("x-kubernetes-validations", []):
        out.append((path, v["rule"], v["message"]))
    for name, sub in schema.get("properties", {}).items():
        _collect_rules(sub, f"{path}.{name}" if path else name, out)
    if "items" in schema:
        _collect_rules(schema["items"], f"{path}[]", out)


def cel_rules(kind: str) -> list[tuple[str, str, str]]:
    """(schema path, rule, message) of every CEL rule of ``kind``, for tests and docs."""
    out: list[tuple[str, str, str]] = []
    _collect_rules(openapi_schema(kind), "", out)
    return out
