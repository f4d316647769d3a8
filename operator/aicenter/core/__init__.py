"""The pure scheduling core: inventory, quota ledger, queue, gang/topology placement, preemption.

Imports nothing from Kubernetes or kopf (enforced by import-linter); deterministic; decisions are
data the shell applies.
"""

from .ledger import QuotaLedger
from .model import (
    Admit,
    CenterSpec,
    CycleResult,
    Decision,
    Evict,
    Node,
    Pending,
    PlacementPolicy,
    Preempt,
    QuotaSpec,
    ReclaimLent,
    TopologyMode,
    WithinQuota,
    Workload,
)
from .scheduler import Scheduler, SchedulerConfig

__all__ = [
    "Admit",
    "CenterSpec",
    "CycleResult",
    "Decision",
    "Evict",
    "Node",
    "Pending",
    "PlacementPolicy",
    "Preempt",
    "QuotaLedger",
    "QuotaSpec",
    "ReclaimLent",
    "Scheduler",
    "SchedulerConfig",
    "TopologyMode",
    "WithinQuota",
    "Workload",
]
