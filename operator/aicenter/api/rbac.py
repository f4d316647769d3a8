"""The API rights around the operator: the one table the chart's RBAC is generated from.

The operator's own rights, in three parts (all bound to its ServiceAccount):

* ``CLUSTER_RULES`` (+ ``METRICS_AUTH_RULES`` with ``metrics.auth``): the ClusterRole ``<fullname>``,
  bound by a ClusterRoleBinding. What it must see everywhere: GPU nodes, every bound pod (the
  GPU/CPU ledger counts pods of every namespace), namespaces, the cluster-scoped AICenters and
  GPUQuotas and their status.
* ``WORKLOAD_RULES``: the ClusterRole ``<fullname>-workload``, what it does to GPUJobs and for them
  (their pods, Services, Events). Bound by a ClusterRoleBinding, or, with ``watchNamespaces``, by a
  RoleBinding in each watched namespace only.
* ``LEASE_RULES``: a Role in the namespace of the leader-election Lease (the release namespace by
  default), so the operator cannot touch Leases anywhere else.

And roles for others:

* ``METRICS_READER_RULES``: the ClusterRole ``<fullname>-metrics-reader`` (with ``metrics.auth``):
  bind Prometheus' ServiceAccount (or an admin) to it to read ``/metrics`` and ``/visibility/v1/*``.
* ``VIEW_RULES`` and ``EDIT_RULES``: ClusterRoles aggregated into the built-in ``view``, ``edit``
  and ``admin`` roles (``rbac.aggregateToDefaultRoles``), so whoever may edit a namespace may
  submit GPUJobs there.

``python hack/render_install.py`` writes them into ``charts/aicenter-operator/templates/rbac*.yaml``
and renders ``manifests/install/aicenter-operator.yaml``; ``--check`` (and ``tests/install``) report
drift. ``tests/install/test_install_rbac_operator.py`` runs the operator's scenario as the chart's
ServiceAccount on an audited API server and fails on a right the table grants that the operator
never uses, and on any request it makes outside the table.

When the operator needs another right, add it here (with the reason) and run the script. No
wildcards in resource rules: every group, resource and verb is spelled out, and the tests check it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aicenter.api import GROUP, PLURAL_AICENTERS, PLURAL_GPUJOBS, PLURAL_GPUQUOTAS

READ = ("get", "list", "watch")
LIST_WATCH = ("list", "watch")  # the operator lists and watches; it never GETs one object of these
WRITE = ("create", "update", "patch", "delete", "deletecollection")


@dataclass(frozen=True)
class Rule:
    """One PolicyRule: an API group, its resources (``kind/subresource`` allowed) and verbs."""

    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str

    def policy_rule(self) -> dict[str, Any]:
        return {"apiGroups": [self.api_group], "resources": list(self.resources), "verbs": list(self.verbs)}


@dataclass(frozen=True)
class NonResourceRule:
    """A PolicyRule on URL paths of a server (a trailing ``/*`` is a prefix, the only wildcard)."""

    urls: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str

    def policy_rule(self) -> dict[str, Any]:
        return {"nonResourceURLs": list(self.urls), "verbs": list(self.verbs)}


CLUSTER_RULES: tuple[Rule, ...] = (
    Rule("", ("nodes",), LIST_WATCH, "GPU inventory: the GPU nodes (label selector) and their health"),
    Rule(
        "",
        ("pods",),
        LIST_WATCH,
        "the ledger: every bound live pod's GPUs and CPU on the GPU nodes, and the operator's own pods "
        "(all namespaces, also with watchNamespaces)",
    ),
    Rule("", ("namespaces",), LIST_WATCH, "GPUQuota namespaceSelectors match namespace labels"),
    Rule(
        GROUP,
        (PLURAL_AICENTERS, PLURAL_GPUQUOTAS),
        LIST_WATCH,
        "the cluster-scoped AICenters and GPUQuotas (watches, and a metadata-only list every 30 s)",
    ),
    Rule(
        GROUP,
        (f"{PLURAL_AICENTERS}/status", f"{PLURAL_GPUQUOTAS}/status"),
        ("patch",),
        "write centre and quota status (merge patch)",
    ),
)

METRICS_AUTH_RULES: tuple[Rule, ...] = (
    Rule(
        "authentication.k8s.io",
        ("tokenreviews",),
        ("create",),
        "--metrics-auth: authenticate the bearer token of a /metrics or /visibility request",
    ),
    Rule(
        "authorization.k8s.io",
        ("subjectaccessreviews",),
        ("create",),
        "--metrics-auth: authorise it (get on the path, like <fullname>-metrics-reader grants)",
    ),
)

WORKLOAD_RULES: tuple[Rule, ...] = (
    Rule(
        "",
        ("pods",),
        ("create", "delete"),
        "a GPUJob's replica pods: create them on their nodes (spec.nodeName), delete (preemption, orphans)",
    ),
    Rule(
        "",
        ("pods/binding",),
        ("create",),
        "bind others' pods that name the operator as their scheduler (Jobs, Deployments, …)",
    ),
    Rule(
        "",
        ("pods/eviction",),
        ("create",),
        "preempt others' pods through the Eviction API (PodDisruptionBudgets apply)",
    ),
    Rule(
        "",
        ("pods/status",),
        ("patch",),
        "PodScheduled=False with the reason on others' pods that wait (as kube-scheduler does)",
    ),
    Rule("batch", ("jobs",), ("get",), "a Job's parallelism: the size of its pods' gang"),
    Rule(
        "kubeflow.org",
        ("pytorchjobs", "tfjobs", "mpijobs", "xgboostjobs", "paddlejobs", "jaxjobs"),
        ("get",),
        "a Kubeflow training job's replicas: the size of its pods' gang",
    ),
    Rule("", ("services",), ("create",), "a headless Service per multi-replica GPUJob (owner reference)"),
    Rule(
        "events.k8s.io",
        ("events",),
        ("create",),
        "Events on GPUJobs (admission, placement, preemption, finish) and on the pods it binds or evicts",
    ),
    Rule(
        GROUP,
        (PLURAL_GPUJOBS,),
        ("list", "watch", "delete"),
        "watch GPUJobs (and a metadata-only list every 30 s); delete finished ones after their TTL",
    ),
    Rule(GROUP, (f"{PLURAL_GPUJOBS}/status",), ("patch",), "write GPUJob status (merge patch)"),
)

LEASE_RULES: tuple[Rule, ...] = (
    Rule(
        "coordination.k8s.io",
        ("leases",),
        ("get", "create", "update", "patch"),
        "leader election: read, create and renew (PUT) the Lease, release it (patch) on a clean exit",
    ),
)

METRICS_READER_RULES: tuple[NonResourceRule, ...] = (
    NonResourceRule(
        ("/metrics", "/visibility/v1/*"),
        ("get",),
        "read the operator's metrics and its visibility API (with --metrics-auth)",
    ),
)

CRS = (PLURAL_AICENTERS, PLURAL_GPUQUOTAS, PLURAL_GPUJOBS)

VIEW_RULES: tuple[Rule, ...] = (
    Rule(
        GROUP,
        tuple(r for p in CRS for r in (p, f"{p}/status")),
        READ,
        "read GPUJobs, AICenters and GPUQuotas (cluster-scoped: only through a ClusterRoleBinding)",
    ),
)

EDIT_RULES: tuple[Rule, ...] = (
    Rule(
        GROUP,
        (PLURAL_GPUJOBS,),
        WRITE,
        "submit, change and delete GPUJobs (the operator runs their pods in the GPUJob's namespace)",
    ),
)

#: Labels that aggregate a ClusterRole into the built-in roles: view rights go into view, edit and
#: admin (as Kubernetes' own ``system:aggregate-to-view`` does), edit rights into edit and admin.
AGGREGATE_VIEW = ("admin", "edit", "view")
AGGREGATE_EDIT = ("admin", "edit")


def cluster_role_rules(metrics_auth: bool = True) -> list[dict[str, Any]]:
    """The operator ClusterRole's ``rules`` (the chart's default has ``metrics.auth`` on)."""
    return [r.policy_rule() for r in (*CLUSTER_RULES, *(METRICS_AUTH_RULES if metrics_auth else ()))]


def workload_role_rules() -> list[dict[str, Any]]:
    """The workload ClusterRole's ``rules``."""
    return [r.policy_rule() for r in WORKLOAD_RULES]


def lease_role_rules() -> list[dict[str, Any]]:
    """The leader-election Role's ``rules``."""
    return [r.policy_rule() for r in LEASE_RULES]


def permissions(rules: tuple[Rule, ...] = CLUSTER_RULES) -> set[tuple[str, str, str]]:
    """Every granted ``(api_group, resource, verb)``: what access checks are made from."""
    return {(r.api_group, res, v) for r in rules for res in r.resources for v in r.verbs}


def operator_permissions(metrics_auth: bool = True) -> set[tuple[str, str, str]]:
    """Everything the operator's ServiceAccount is granted (cluster, workload and Lease rules)."""
    extra = METRICS_AUTH_RULES if metrics_auth else ()
    return permissions((*CLUSTER_RULES, *extra, *WORKLOAD_RULES, *LEASE_RULES))
