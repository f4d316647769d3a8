"""What a pod asks of its node besides GPUs, and the node facts it is judged against.

The kubelet and kube-scheduler enforce these; a scheduler that binds pods must honour them too:

- **taints and tolerations**: a node's ``NoSchedule``/``NoExecute`` taints keep off every pod that does
  not tolerate them; ``PreferNoSchedule`` taints only make a node less attractive;
- **node selector and required node affinity**: the pod's ``nodeSelector`` (all pairs) and the terms
  of ``requiredDuringSchedulingIgnoredDuringExecution`` (any one term; all expressions of a term);
  preferred terms add their weight to a node's score;
- **resources**: every resource a replica requests (cpu in millicores, memory and storage in bytes,
  ``pods`` = 1, hugepages, any extended resource) must fit the node's allocatable minus what its pods
  already request.

Plain data, as the shell converts it from pod templates and nodes; no Kubernetes types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

NO_SCHEDULE = "NoSchedule"
NO_EXECUTE = "NoExecute"
PREFER_NO_SCHEDULE = "PreferNoSchedule"
HARD_EFFECTS = (NO_SCHEDULE, NO_EXECUTE)

Resources = tuple[tuple[str, int], ...]  # sorted (name, amount) pairs


def resources(d: Mapping[str, int]) -> Resources:
    """A canonical, hashable resource list (zero amounts dropped)."""
    return tuple(sorted((k, v) for k, v in d.items() if v))


@dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: str = NO_SCHEDULE

    def __str__(self) -> str:
        return f"{self.key}{'=' + self.value if self.value else ''}:{self.effect}"


@dataclass(frozen=True)
class Toleration:
    """``key`` empty with ``Exists`` tolerates everything; ``effect`` empty matches every effect."""

    key: str = ""
    operator: str = "Equal"  # Equal | Exists
    value: str = ""
    effect: str = ""

    def tolerates(self, t: Taint) -> bool:
        if self.effect and self.effect != t.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == t.key
        return self.key == t.key and self.value == t.value


def tolerates_all(tolerations: tuple[Toleration, ...], taints: frozenset[Taint] | tuple[Taint, ...]) -> bool:
    return all(any(tol.tolerates(t) for tol in tolerations) for t in taints)


@dataclass(frozen=True)
class Requirement:
    """A node selector requirement: In, NotIn, Exists, DoesNotExist, Gt, Lt."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.key)
        op = self.operator
        if op == "In":
            return v is not None and v in self.values
        if op == "NotIn":
            return v is None or v not in self.values
        if op == "Exists":
            return v is not None
        if op == "DoesNotExist":
            return v is None
        if op in ("Gt", "Lt") and v is not None and self.values:
            try:
                a, b = int(v), int(self.values[0])
            except ValueError:
                return False
            return a > b if op == "Gt" else a < b
        return False


@dataclass(frozen=True)
class Term:
    """One node selector term: all its label expressions and field expressions (``metadata.name``)."""

    expressions: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if not self.expressions and not self.fields:
            return False  # an empty term matches nothing (Kubernetes' rule)
        return all(r.matches(labels) for r in self.expressions) and all(
            r.matches({"metadata.name": name}) for r in self.fields
        )


@dataclass(frozen=True)
class Preferred:
    weight: int
    term: Term


@dataclass(frozen=True)
class Constraints:
    """What every replica of a workload asks of its node, besides GPUs."""

    tolerations: tuple[Toleration, ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    required: tuple[Term, ...] = ()  # any one term must match; empty: no requirement
    preferred: tuple[Preferred, ...] = ()
    requests: Resources = ()  # per replica, besides GPUs

    @property
    def selects(self) -> bool:
        """Whether it restricts nodes by labels or name at all."""
        return bool(self.node_selector or self.required)

    def selector_ok(self, name: str, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.node_selector):
            return False
        return not self.required or any(t.matches(name, labels) for t in self.required)

    def score(self, name: str, labels: Mapping[str, str], soft_taints: tuple[Taint, ...]) -> int:
        """Preferred affinity weights met, less 100 for each PreferNoSchedule taint not tolerated."""
        s = sum(p.weight for p in self.preferred if p.term.matches(name, labels))
        return s - 100 * sum(1 for t in soft_taints if not tolerates_all(self.tolerations, (t,)))


NO_CONSTRAINTS = Constraints()


@dataclass(frozen=True)
class NodeFacts:
    """A node's labels, taints and non-GPU resources, as constraints are judged against them."""

    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()  # NoSchedule / NoExecute
    soft_taints: tuple[Taint, ...] = ()  # PreferNoSchedule
    allocatable: Mapping[str, int] = field(default_factory=dict)  # besides GPUs; "pods" included

    def __hash__(self) -> int:  # labels/allocatable are dicts: hash what identifies the facts cheaply
        return hash((self.taints, self.soft_taints, len(self.labels), len(self.allocatable)))


NO_FACTS = NodeFacts()
