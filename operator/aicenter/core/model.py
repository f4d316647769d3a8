"""The scheduling core's input and output data.

Inputs (centres, quotas, nodes, workloads) are plain dataclasses the shell builds from the cluster.
Outputs are decisions: data the shell applies (create and bind pods, delete pods, write status).
Nothing here knows about Kubernetes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .constraints import NO_CONSTRAINTS, NO_FACTS, Constraints, NodeFacts


class PlacementPolicy(StrEnum):
    BIN_PACK = "BinPack"
    SPREAD = "Spread"


class TopologyMode(StrEnum):
    REQUIRED = "Required"
    PREFERRED = "Preferred"


class WithinQuota(StrEnum):
    LOWER_PRIORITY = "LowerPriority"
    NEVER = "Never"


class ReclaimLent(StrEnum):
    ANY = "Any"
    LOWER_PRIORITY = "LowerPriority"
    NEVER = "Never"


@dataclass(frozen=True)
class CenterSpec:
    """A site: its topology keys from tight to loose and whether it takes new placements."""

    name: str
    topology_keys: tuple[str, ...] = ()
    placement_policy: PlacementPolicy = PlacementPolicy.BIN_PACK
    maintenance: bool = False
    not_ready_grace_s: float = 60.0
    # How long a node may hold more GPUs than it has healthy (allocatable dropped: a device plugin or
    # kubelet restart shows 0 for a moment) before work on it is evicted.
    unhealthy_grace_s: float = 0.0


@dataclass(frozen=True)
class QuotaSpec:
    """An organisation's allocation in one centre, per GPU class."""

    name: str
    center: str
    guaranteed: dict[str, int]
    limit: dict[str, int]
    cohort: str | None = None
    weight: int = 1
    within_quota: WithinQuota = WithinQuota.LOWER_PRIORITY
    reclaim_lent: ReclaimLent = ReclaimLent.ANY

    def classes(self) -> list[str]:
        return sorted(set(self.guaranteed) | set(self.limit))


@dataclass(frozen=True)
class Node:
    """A GPU node as the shell sees it: its centre and class are already resolved.

    ``other_gpus`` counts GPUs requested by the node's bound, live pods that no placement of ours
    claims (other schedulers' pods, our orphans, pods still terminating): they hold room until they
    are gone. ``draining_gpus`` is the part of them that must never cause an eviction (pods being
    deleted, pods the kubelet has not admitted yet). ``topology`` maps the centre's topology label
    keys to this node's values (absent keys are simply missing). ``facts`` are the labels, taints and
    non-GPU allocatable that pod constraints are judged against; ``other_requests`` what the other
    pods request of those resources. A node whose ``center`` is empty is unmanaged: its work keeps
    running, it takes no new work.
    """

    name: str
    center: str
    gpu_class: str
    capacity: int
    allocatable: int
    ready: bool = True
    schedulable: bool = True
    not_ready_since: float | None = None
    topology: dict[str, str] = field(default_factory=dict)
    other_gpus: int = 0
    draining_gpus: int = 0
    facts: NodeFacts = NO_FACTS
    other_requests: dict[str, int] = field(default_factory=dict)


@dataclass
class Workload:
    """A unit the core schedules all-or-nothing: ``replicas`` × ``gpus_per_replica`` GPUs.

    A gang job is one workload; an independent job is one workload per replica. ``placement``
    (one node per replica) is set while the workload holds GPUs.
    """

    key: str
    quota: str
    replicas: int
    gpus_per_replica: int
    created: float
    gpu_class: str | None = None
    topology_key: str | None = None
    topology_mode: TopologyMode = TopologyMode.REQUIRED
    priority: int = 0
    preemptible: bool = True
    placement: tuple[str, ...] | None = None
    placed_class: str | None = None
    started: float | None = None
    constraints: Constraints = NO_CONSTRAINTS

    @property
    def gpus(self) -> int:
        return self.replicas * self.gpus_per_replica

    @property
    def running(self) -> bool:
        return self.placement is not None


@dataclass(frozen=True)
class Admit:
    """Run ``key`` on ``nodes`` (one per replica). ``after`` lists victims that must release first."""

    key: str
    gpu_class: str
    nodes: tuple[str, ...]
    borrowed: int = 0
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class Preempt:
    """Stop ``key`` and requeue it, so that ``preemptor`` can run."""

    key: str
    preemptor: str
    reason: str
    message: str


@dataclass(frozen=True)
class Evict:
    """Stop ``key`` because its nodes became unhealthy; the shell restarts it (counts as a retry)."""

    key: str
    reason: str
    message: str


@dataclass(frozen=True)
class Pending:
    """``key`` stays queued, with a short reason and a plain-language message."""

    key: str
    reason: str
    message: str


Decision = Admit | Preempt | Evict | Pending


@dataclass
class CycleResult:
    admitted: list[Admit] = field(default_factory=list)
    preempted: list[Preempt] = field(default_factory=list)
    evicted: list[Evict] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)

    def decisions(self) -> list[Decision]:
        return [*self.evicted, *self.preempted, *self.admitted, *self.pending]
