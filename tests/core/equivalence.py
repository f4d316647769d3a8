"""What an incremental cycle must give that a full re-check gives too, precisely.

``SchedulerConfig(incremental=True)`` re-examines a pending workload only when something its last
answer depended on changed. Against a full re-check of the same state (``incremental=False``) its
cycle result must have

- the same admissions: the same ``Admit`` objects (key, class, nodes, borrowed GPUs, victims) in the
  same order;
- the same preemptions and the same evictions, in the same order;
- the same pending workloads in the same order (the queue positions the shell shows), each with
  the same reason;
- the same pending message, except that a message whose reason is a lack of room
  (``InsufficientGPUs``, ``NoTopologyDomain``) or a quota's refusal (``QuotaExceeded``) may carry
  other numbers: a workload that took a remembered placement failure shows the free GPUs of the
  examination that gave it, and a workload keeps its message while only its numbers move. With its
  numbers masked such a message is the same too (same wording, same reserved-nodes suffix).
"""

from __future__ import annotations

import re

from aicenter.core import CycleResult

NUMBER = re.compile(r"(?<!\w)\d[\d,]*")  # a number on its own, not the digits of a name (B200, c0)
NUMBERS_MAY_DIFFER = frozenset({"InsufficientGPUs", "NoTopologyDomain", "QuotaExceeded"})


def masked(message: str) -> str:
    return NUMBER.sub("#", message)


def differences(full: CycleResult, incremental: CycleResult) -> list[str]:
    """Every way ``incremental`` departs from ``full`` beyond what is allowed above (empty: none)."""
    out: list[str] = []
    for what in ("admitted", "preempted", "evicted"):
        a, b = getattr(full, what), getattr(incremental, what)
        if a != b:
            out.append(f"{what} differ:\n  full        {a}\n  incremental {b}")
    a = [(p.key, p.reason) for p in full.pending]
    b = [(p.key, p.reason) for p in incremental.pending]
    if a != b:
        out.append(f"pending keys or reasons differ:\n  full        {a}\n  incremental {b}")
        return out
    for p, q in zip(full.pending, incremental.pending, strict=True):
        if p.message == q.message:
            continue
        if p.reason not in NUMBERS_MAY_DIFFER:
            out.append(f"{p.key} ({p.reason}): message {q.message!r}, a full re-check says {p.message!r}")
        elif masked(p.message) != masked(q.message):
            out.append(f"{p.key} ({p.reason}): message {q.message!r} is not {p.message!r} but for numbers")
    return out
