"""Independent checks of the scheduler's state, recomputed from the workloads alone.

Used by the property tests and the benchmark: they do not trust the indices the scheduler keeps.
"""

from __future__ import annotations

from collections import defaultdict

from .inventory import PoolTotals
from .scheduler import Scheduler


def violations(s: Scheduler) -> list[str]:
    """Every broken invariant, in words; empty when the state is sound."""
    out: list[str] = []
    per_node: dict[str, int] = defaultdict(int)
    per_quota: dict[tuple[str, str], int] = defaultdict(int)
    for w in s.workloads.values():
        if w.placement is None:
            continue
        if len(w.placement) != w.replicas:
            out.append(f"{w.key}: {len(w.placement)} nodes for {w.replicas} replicas (gang broken)")
        for n in w.placement:
            per_node[n] += w.gpus_per_replica
            ns = s.inventory.nodes.get(n)
            if ns is not None and ns.node.gpu_class != w.placed_class:
                out.append(
                    f"{w.key}: replica on {n} of class {ns.node.gpu_class}, job placed as {w.placed_class}"
                )
        per_quota[(w.quota, w.placed_class or "")] += w.gpus
    for name, ns in s.inventory.nodes.items():
        if per_node.get(name, 0) != ns.used:
            out.append(f"node {name}: index says {ns.used} used, workloads hold {per_node.get(name, 0)}")
    for (q, cls), used in per_quota.items():
        u = s.ledger.usage.get(q, {}).get(cls)
        if u is None:
            continue
        if u.used != used:
            out.append(f"quota {q}/{cls}: ledger {u.used}, workloads {used}")
        if used > u.limit:
            out.append(f"quota {q}/{cls}: {used} used > limit {u.limit}")
    cohorts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for q, spec in s.ledger.specs.items():
        for cls, u in s.ledger.usage[q].items():
            c = cohorts[(spec.center, s.ledger.cohort_id(spec), cls)]
            c[0] += u.guaranteed
            c[1] += u.used
    for key, (g, used) in cohorts.items():
        if used > g:
            out.append(f"cohort {key}: {used} used > {g} guaranteed in total")
    for key, pool in s.inventory.pools.items():
        t = PoolTotals()
        for ns in pool.nodes.values():
            t.count(ns, +1)
        if t != pool.totals:
            out.append(f"pool {key}: counters {pool.totals} drifted from the nodes {t}")
    return out


def over_allocated_nodes(s: Scheduler) -> list[str]:
    """Nodes whose GPUs in use exceed what is healthy on them (allowed only until eviction)."""
    return [n for n, ns in s.inventory.nodes.items() if ns.free < 0]
