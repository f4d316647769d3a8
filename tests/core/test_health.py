"""Health: evictions for nodes NotReady past the grace period, degraded or removed."""

from __future__ import annotations

import dataclasses

from aicenter.core import Workload

from .builders import admitted, center, job, quota, rack_nodes, run, scheduler


def setup(grace: float = 60.0):
    nodes = rack_nodes(racks=1, per_rack=3)
    s = scheduler([center(grace=grace)], [quota("q", guaranteed=24)], nodes)
    return s, {n.name: n for n in nodes}


def place(
    s, key: str, nodes: tuple[str, ...], gpus: int, priority: int = 0, started: float = 0.0
) -> Workload:
    w = job(key, "q", replicas=len(nodes), gpus=gpus, priority=priority)
    w.placement, w.placed_class, w.started = nodes, "B200", started
    s.add_workload(w)
    return w


N0, N1, N2 = "c-b200-r0-n0", "c-b200-r0-n1", "c-b200-r0-n2"


def test_not_ready_within_grace_keeps_the_work_past_grace_evicts_it():
    s, nodes = setup(grace=60.0)
    place(s, "gang", (N0, N1), 8)
    s.set_node(dataclasses.replace(nodes[N0], ready=False, not_ready_since=100.0))
    res = run(s, 150.0)
    assert res.evicted == [] and s.workloads["gang"].placement == (N0, N1)
    res = run(s, 160.0)
    assert [(e.key, e.reason, e.message) for e in res.evicted] == [
        ("gang", "NodeNotReady", f"node {N0} has been NotReady for 60s")
    ]
    # The whole gang is released and requeued; it is placed again next cycle, not on N0.
    assert s.workloads["gang"].placement is None
    assert s.inventory.nodes[N1].used == 0
    res = run(s, 170.0)
    assert [(a.key, a.nodes) for a in res.admitted] == [("gang", (N1, N2))]


def test_a_node_that_recovers_within_grace_keeps_its_work():
    s, nodes = setup(grace=60.0)
    place(s, "j", (N0,), 8)
    s.set_node(dataclasses.replace(nodes[N0], ready=False, not_ready_since=100.0))
    run(s, 120.0)
    s.set_node(nodes[N0])
    assert run(s, 200.0).evicted == []
    assert s.workloads["j"].placement == (N0,)


def test_allocatable_drop_evicts_lowest_priority_first_and_only_what_is_needed():
    s, nodes = setup()
    place(s, "high", (N0,), 4, priority=5)
    place(s, "low-old", (N0,), 2, priority=0, started=1.0)
    place(s, "low-young", (N0,), 2, priority=0, started=2.0)
    s.set_node(dataclasses.replace(nodes[N0], allocatable=6))
    res = run(s, 10.0)
    assert [(e.key, e.reason) for e in res.evicted] == [("low-young", "GPUUnhealthy")]
    assert res.evicted[0].message == f"node {N0} has 6 healthy of 8 GPUs, fewer than in use"
    s.set_node(dataclasses.replace(nodes[N0], allocatable=3))
    res = run(s, 20.0)
    assert [e.key for e in res.evicted] == ["low-old", "high"]


def test_foreign_pods_taking_gpus_count_as_lost_capacity():
    s, nodes = setup()
    place(s, "j", (N0,), 8)
    s.set_node(dataclasses.replace(nodes[N0], other_gpus=1))
    assert [e.key for e in run(s, 10.0).evicted] == ["j"]


def test_a_removed_node_evicts_its_work_and_frees_the_rest_of_the_gang():
    s, _ = setup()
    place(s, "gang", (N0, N1), 8)
    place(s, "other", (N2,), 8)
    s.remove_node(N1)
    res = run(s, 10.0)
    assert [(e.key, e.reason, e.message) for e in res.evicted] == [
        ("gang", "NodeGone", f"node {N1} was removed")
    ]
    assert s.inventory.nodes[N0].used == 0
    assert s.workloads["other"].placement == (N2,)


def test_cordoned_nodes_keep_their_work_but_take_no_more():
    s, nodes = setup()
    place(s, "j", (N0,), 4)
    for n in (N0, N1, N2):
        s.set_node(dataclasses.replace(nodes[n], schedulable=False))
    s.add_workload(job("new", "q", replicas=1, gpus=1, created=5.0))
    res = run(s, 10.0)
    assert res.evicted == [] and admitted(res) == set()
    assert s.workloads["j"].placement == (N0,)


def test_evicted_work_is_placed_again_on_healthy_nodes_next_cycle():
    s, nodes = setup(grace=0.0)
    place(s, "j", (N0,), 8)
    s.set_node(dataclasses.replace(nodes[N0], ready=False, not_ready_since=10.0))
    res = run(s, 10.0)
    assert [e.key for e in res.evicted] == ["j"] and admitted(res) == set()  # not in the same cycle
    res = run(s, 11.0)
    assert admitted(res) == {"j"} and N0 not in res.admitted[0].nodes
