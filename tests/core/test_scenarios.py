"""Scenarios on the shared national fleet (full-size centres, in the pure core)."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from aicenter.core import SchedulerConfig, TopologyMode, Workload
from aicenter.core.invariants import violations
from aicenter_testbed.fleet import (
    LABEL_CLIQUE,
    LABEL_RACK,
    LABEL_ZONE,
    build_scheduler,
    load_fleet,
    scale_fleet,
)

NATIONAL = "national-ai-center"
SAMSUNG = "samsung-ai-megafactory"


@pytest.fixture(scope="module")
def fleet():
    return load_fleet()


def centre(fleet, name: str):
    return build_scheduler(scale_fleet(fleet, 1.0, [name]), SchedulerConfig(starvation_s=1e12))


def gang(key: str, quota: str, nodes: int, gpus: int = 8, created: float = 0.0, **kw) -> Workload:
    return Workload(
        key,
        quota,
        nodes,
        gpus,
        created,
        topology_key=kw.pop("topology_key", LABEL_RACK),
        topology_mode=kw.pop("topology_mode", TopologyMode.PREFERRED),
        **kw,
    )


def used(s, quota: str, cls: str = "B200") -> int:
    return s.ledger.used(quota, cls)


def test_the_public_centre_fills_to_its_four_guarantees(fleet):
    s = centre(fleet, NATIONAL)
    guarantees = {q.name: q.guaranteed["B200"] for q in fleet.center(NATIONAL).quotas}
    assert sum(guarantees.values()) == 50_000
    n = 0
    for q, g in guarantees.items():
        for _ in range(g // 200):  # 25-node gangs divide every guarantee
            n += 1
            s.add_workload(gang(f"{q}-{n:04d}", q, 25, created=float(n % 7)))
    res = s.cycle(10.0)
    assert len(res.admitted) == n == 250 and res.pending == []
    assert all(a.borrowed == 0 for a in res.admitted)
    assert {q: used(s, q) for q in guarantees} == guarantees
    assert all(ns.free == 0 for ns in s.inventory.nodes.values())
    assert violations(s) == []
    # Nothing is idle, so nobody can borrow.
    s.add_workload(gang("one-more", "startups", 1, created=11.0))
    res = s.cycle(12.0)
    assert [(p.key, p.reason) for p in res.pending] == [("one-more", "QuotaExceeded")]
    assert res.pending[0].message == (
        "quota startups: would borrow 8 B200 (10,000 used of 10,000 guaranteed, 8 requested) but the "
        "other quotas of cohort public have only 0 idle"
    )


def test_borrowing_then_reclaim_preempts_only_borrowed_work(fleet):
    s = centre(fleet, NATIONAL)
    plan = {"sovereign-foundation-models": 100, "public-research-institutes": 50, "startups": 80}
    n = 0
    for q, count in plan.items():
        for _ in range(count):
            n += 1
            s.add_workload(gang(f"{q}-{n:04d}", q, 25, created=float(n)))
    res = s.cycle(1000.0)
    for a in res.admitted:
        s.workloads[a.key].started = 1000.0
    # Universities are idle: startups borrow up to their limit (15,000 = 10,000 + 5,000 borrowed).
    assert used(s, "startups") == 15_000
    assert sum(a.borrowed for a in res.admitted) == 5_000
    assert {p.key.split("-0")[0] for p in res.pending} == {"startups"}
    assert res.pending[0].message == "quota startups: limit 15,000 B200 reached — 15,000 used, 200 requested"
    # Universities submit their whole guarantee: 5,000 GPUs are free, 5,000 must come back.
    for i in range(50):
        s.add_workload(gang(f"universities-{i:04d}", "universities", 25, created=2000.0 + i))
    res = s.cycle(2000.0)
    assert {a.key for a in res.admitted} == {f"universities-{i:04d}" for i in range(50)}
    assert all(a.borrowed == 0 for a in res.admitted)
    assert len(res.preempted) == 25
    assert {(p.key.split("-0")[0], p.reason) for p in res.preempted} == {("startups", "Reclaimed")}
    assert used(s, "startups") == 10_000  # back to its guarantee, not below
    assert used(s, "sovereign-foundation-models") == 20_000
    assert used(s, "public-research-institutes") == 10_000
    assert used(s, "universities") == 10_000
    assert violations(s) == []


def cliques_used(s, nodes: tuple[str, ...]) -> Counter:
    return Counter(s.inventory.nodes[n].node.topology[LABEL_CLIQUE] for n in nodes)


def test_a_4096_gpu_training_gang_packs_whole_nvl72_cliques(fleet):
    s = centre(fleet, SAMSUNG)
    s.add_workload(
        gang("samsung-foundation", "semiconductor-fab-ai", 1024, 4, topology_key=LABEL_CLIQUE, priority=10)
    )
    res = s.cycle(1.0)
    (a,) = res.admitted
    per_clique = cliques_used(s, a.nodes)
    minimum = math.ceil(1024 / 18)  # 18 four-GPU nodes per NVL72 clique
    assert minimum == 57
    assert len(per_clique) == minimum
    assert sorted(per_clique.values()) == [16] + [18] * 56  # 56 whole cliques and one mostly used
    assert len({s.inventory.nodes[n].node.topology[LABEL_ZONE] for n in a.nodes}) == 1
    assert violations(s) == []


def test_the_training_gang_takes_the_fewest_cliques_on_a_busy_centre(fleet):
    """One GPU in use in every other clique: the gang takes the whole cliques first, then as few
    of the 17-slot ones as it needs."""
    s = centre(fleet, SAMSUNG)
    first_node: dict[str, str] = {}
    for name in sorted(s.inventory.nodes):
        first_node.setdefault(s.inventory.nodes[name].node.topology[LABEL_CLIQUE], name)
    for i, clique in enumerate(sorted(first_node)):
        if i % 2:
            w = Workload(f"small-{i:04d}", "mobile-and-robotics", 1, 1, 0.0)
            w.placement, w.placed_class, w.started = (first_node[clique],), "GB200", 0.0
            s.add_workload(w)
    s.add_workload(
        gang("samsung-foundation", "semiconductor-fab-ai", 1024, 4, created=1.0, topology_key=LABEL_CLIQUE)
    )
    res = s.cycle(2.0)
    (a,) = res.admitted
    zone = {s.inventory.nodes[n].node.topology[LABEL_ZONE] for n in a.nodes}
    assert len(zone) == 1
    # The fewest cliques of that zone that hold 1,024 four-GPU slots (as free before the gang).
    free_slots: Counter = Counter()
    for n, ns in s.inventory.nodes.items():
        topo = ns.node.topology
        if topo[LABEL_ZONE] in zone:
            free_slots[topo[LABEL_CLIQUE]] += (ns.free + 4 * a.nodes.count(n)) // 4
    need, minimum = 1024, 0
    for slots in sorted(free_slots.values(), reverse=True):
        if need <= 0:
            break
        need -= slots
        minimum += 1
    assert sorted(set(free_slots.values())) == [17, 18]
    assert minimum == 32 + math.ceil((1024 - 32 * 18) / 17) == 59
    assert len(cliques_used(s, a.nodes)) == minimum
    assert violations(s) == []
