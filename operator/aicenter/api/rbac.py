"""The API rights the operator needs: the one table its RBAC is generated from.

``CLUSTER_RULES`` become the chart's ClusterRole (bound to the operator's ServiceAccount by a
ClusterRoleBinding); ``LEASE_RULES`` become a namespaced Role in the namespace of the leader-election
Lease (the release namespace by default), so the operator cannot touch Leases anywhere else.
``python hack/render_install.py`` writes both into ``charts/aicenter-operator/templates/`` and
renders ``manifests/install/aicenter-operator.yaml``; ``--check`` (and ``tests/install``) report drift.

When the operator needs another right, add it here (with the reason) and run the script. No
wildcards: every group, resource and verb is spelled out, and the tests check it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aicenter.api import GROUP, PLURAL_AICENTERS, PLURAL_GPUJOBS, PLURAL_GPUQUOTAS

READ = ("get", "list", "watch")


@dataclass(frozen=True)
class Rule:
    """One PolicyRule: an API group, its resources (``kind/subresource`` allowed) and verbs."""

    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str

    def policy_rule(self) -> dict[str, Any]:
        return {"apiGroups": [self.api_group], "resources": list(self.resources), "verbs": list(self.verbs)}


CRS = (PLURAL_AICENTERS, PLURAL_GPUQUOTAS, PLURAL_GPUJOBS)

CLUSTER_RULES: tuple[Rule, ...] = (
    Rule("", ("nodes",), READ, "GPU inventory: the nodes of every AICenter and their health"),
    Rule("", ("pods",), (*READ, "create", "delete"), "a GPUJob's replica pods: create, watch, evict"),
    Rule("", ("pods/binding",), ("create",), "bind the pods it places to their nodes"),
    Rule("", ("services",), (*READ, "create", "delete"), "a headless Service per multi-replica GPUJob"),
    Rule("", ("namespaces",), READ, "GPUQuota namespaceSelectors match namespace labels"),
    Rule("", ("events",), ("create", "patch"), "report admission, placement and preemption (core/v1)"),
    Rule("events.k8s.io", ("events",), ("create", "patch"), "the same through events.k8s.io/v1"),
    Rule(
        GROUP,
        CRS,
        (*READ, "patch", "update", "delete"),
        "reconcile AICenters, GPUQuotas, GPUJobs; finalizers; delete finished GPUJobs after their TTL",
    ),
    Rule(GROUP, tuple(f"{p}/status" for p in CRS), ("get", "patch", "update"), "write their status"),
    Rule("apiextensions.k8s.io", ("customresourcedefinitions",), READ, "kopf checks the CRDs at startup"),
)

LEASE_RULES: tuple[Rule, ...] = (
    Rule(
        "coordination.k8s.io",
        ("leases",),
        (*READ, "create", "update", "patch"),
        "leader election: one replica schedules at a time (Role in the Lease's namespace only)",
    ),
)


def cluster_role_rules() -> list[dict[str, Any]]:
    """The ClusterRole's ``rules``."""
    return [r.policy_rule() for r in CLUSTER_RULES]


def lease_role_rules() -> list[dict[str, Any]]:
    """The leader-election Role's ``rules``."""
    return [r.policy_rule() for r in LEASE_RULES]


def permissions(rules: tuple[Rule, ...] = CLUSTER_RULES) -> set[tuple[str, str, str]]:
    """Every granted ``(api_group, resource, verb)``: what access checks are made from."""
    return {(r.api_group, res, v) for r in rules for res in r.resources for v in r.verbs}
