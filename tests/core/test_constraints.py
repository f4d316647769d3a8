"""Pod constraints in the core: taints, node selectors and affinity, every resource's fit, and why.

The exact path (a scan) must make the indexed path's choice wherever both apply: a property over
random pools. The rest are unit tests of each constraint and of the reasons a job waits.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aicenter.core import Node, PlacementPolicy, Scheduler, TopologyMode, Workload, placement
from aicenter.core.constraints import (
    Constraints,
    NodeFacts,
    Preferred,
    Requirement,
    Taint,
    Term,
    Toleration,
    resources,
)

from .builders import CLIQUE, KEYS, RACK, ZONE, center, job, pending, quota, rack_nodes, run, scheduler
from .test_properties import SCALE, pool_nodes

GIB = 1 << 30
MAINT = Taint("example.com/maintenance", "", "NoSchedule")
KWOK = Taint("kwok.x-k8s.io/node", "fake", "NoSchedule")
TOLERATE_KWOK = Toleration("kwok.x-k8s.io/node", "Exists", "", "NoSchedule")


def with_facts(n: Node, *, taints=(), labels=None, cpu=64_000, mem=512 * GIB, pods=110, soft=()) -> Node:
    facts = NodeFacts(
        labels=dict(labels or n.topology),
        taints=tuple(taints),
        soft_taints=tuple(soft),
        allocatable={"cpu": cpu, "memory": mem, "pods": pods},
    )
    return dataclasses.replace(n, facts=facts)


def constrained(w: Workload, **kw) -> Workload:
    w.constraints = Constraints(**kw)
    return w


@settings(max_examples=60 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nodes=pool_nodes("c", "A"),
    policy=st.sampled_from(list(PlacementPolicy)),
    replicas=st.integers(1, 6),
    gpus=st.sampled_from([1, 2, 4, 8]),
    topo=st.sampled_from(
        [None, (CLIQUE, "Required"), (RACK, "Required"), (ZONE, "Preferred"), (RACK, "Preferred")]
    ),
)
def test_exact_path_makes_the_indexed_choice(nodes, policy, replicas, gpus, topo):
    s = Scheduler()
    s.set_center(dataclasses.replace(center("c", KEYS), placement_policy=policy))
    for n in nodes:
        s.set_node(n)
    pool = s.inventory.pool("c", "A")
    if pool is None:
        return
    w = job("w", "q", replicas=replicas, gpus=gpus, cls="A")
    if topo:
        w.topology_key, w.topology_mode = topo[0], TopologyMode(topo[1])
    assert placement.indexed_path(pool, w)
    lvl = placement.feasible_level(pool, w)
    indexed = None if lvl is None else placement.select(pool, w, lvl)
    assert placement.find_exact(pool, w) == indexed


def test_tainted_node_is_skipped_unless_tolerated():
    nodes = rack_nodes(racks=1, per_rack=2)
    nodes = [with_facts(nodes[0], taints=[MAINT]), with_facts(nodes[1])]
    s = scheduler([center()], [quota("q", guaranteed=16)], nodes)
    s.add_workload(job("a", "q"))
    s.add_workload(job("b", "q"))
    res = run(s, 1.0)
    assert [a.nodes for a in res.admitted] == [(nodes[1].name,)]
    reason, msg = pending(res)["b"]
    assert reason == "InsufficientResources"
    assert "1 node has taint example.com/maintenance:NoSchedule" in msg
    s.add_workload(constrained(job("c", "q"), tolerations=(Toleration(MAINT.key, "Exists"),)))
    res = run(s, 2.0)
    assert [(a.key, a.nodes) for a in res.admitted] == [("c", (nodes[0].name,))]


def test_common_taints_keep_the_indexed_path():
    """A simulated fleet: every node carries kwok's taint; tolerating it is the common case."""
    nodes = [with_facts(n, taints=[KWOK]) for n in rack_nodes(racks=2, per_rack=2)]
    nodes[0] = with_facts(nodes[0], taints=[KWOK, MAINT])
    s = scheduler([center()], [quota("q", guaranteed=64)], nodes)
    pool = s.inventory.pool("c", "B200")
    w = constrained(job("a", "q", replicas=3), tolerations=(TOLERATE_KWOK,))
    assert pool.common_taints == frozenset({KWOK})
    assert placement.indexed_path(pool, w)
    s.add_workload(w)
    res = run(s, 1.0)
    assert nodes[0].name not in res.admitted[0].nodes
    everything = constrained(job("b", "q"), tolerations=(Toleration("", "Exists"),))
    assert not placement.indexed_path(pool, everything)  # it may use the maintenance node too
    untolerating = job("c", "q")
    s.add_workload(untolerating)
    res = run(s, 2.0)
    assert pending(res)["c"][0] == "NoMatchingNodes"


def test_node_selector_and_required_affinity():
    nodes = [with_facts(n) for n in rack_nodes(racks=2, per_rack=2)]
    s = scheduler([center()], [quota("q", guaranteed=64)], nodes)
    s.add_workload(constrained(job("sel", "q"), node_selector=((RACK, "c-r1"),)))
    term = Term(expressions=(Requirement(RACK, "NotIn", ("c-r1",)),), fields=())
    s.add_workload(constrained(job("aff", "q", replicas=2), required=(term,)))
    by_name = Term(fields=(Requirement("metadata.name", "In", (nodes[3].name,)),))
    s.add_workload(constrained(job("pin", "q"), required=(by_name,)))
    res = run(s, 1.0)
    got = {a.key: a.nodes for a in res.admitted}
    assert got["sel"][0].startswith("c-b200-r1")
    assert all(n.startswith("c-b200-r0") for n in got["aff"])
    assert got["pin"] == (nodes[3].name,)
    s.add_workload(constrained(job("none", "q"), node_selector=((RACK, "nowhere"),)))
    res = run(s, 2.0)
    assert pending(res)["none"][0] == "NoMatchingNodes"


def test_cpu_and_memory_fit_counts_other_pods_and_our_own_replicas():
    nodes = [with_facts(n, cpu=64_000, mem=256 * GIB) for n in rack_nodes(racks=1, per_rack=2)]
    nodes[0] = dataclasses.replace(nodes[0], other_requests={"cpu": 40_000})  # a CPU job of someone else
    s = scheduler([center()], [quota("q", guaranteed=64)], nodes)
    # two replicas of 1 GPU and 30 CPUs: node 0 has 24 CPUs left, node 1 takes both (60 of 64)
    s.add_workload(
        constrained(job("a", "q", replicas=2, gpus=1), requests=resources({"cpu": 30_000, "pods": 1}))
    )
    res = run(s, 1.0)
    assert res.admitted[0].nodes == (nodes[1].name, nodes[1].name)
    s.add_workload(constrained(job("b", "q", gpus=1), requests=resources({"cpu": 30_000})))
    res = run(s, 2.0)
    reason, msg = pending(res)["b"]
    assert reason == "InsufficientResources"
    assert "2 nodes lack 30 CPU free" in msg
    s.add_workload(constrained(job("big", "q", gpus=1), requests=resources({"memory": 300 * GIB})))
    res = run(s, 3.0)
    assert pending(res)["big"][0] == "NoNodeLargeEnough"


def test_rack_reason_names_the_constraint():
    nodes = [with_facts(n) for n in rack_nodes(racks=1, per_rack=4)]
    nodes[0] = with_facts(nodes[0], taints=[MAINT])
    nodes[1] = dataclasses.replace(with_facts(nodes[1], cpu=16_000), other_requests={"cpu": 8_000})
    s = scheduler([center()], [quota("q", guaranteed=64)], nodes)
    w = constrained(job("g", "q", replicas=3, key_=RACK), requests=resources({"cpu": 16_000}))
    s.add_workload(w)
    assert pending(run(s, 1.0))["g"] == (
        "NoTopologyDomain",
        "no rack in c has 24 free B200 in 8-GPU slots on nodes this job may use; largest such block 16; "
        "of the nodes with free GPUs, 1 node lacks 16 CPU free, "
        "1 node has taint example.com/maintenance:NoSchedule",
    )


def test_a_rack_too_small_for_the_nodes_a_job_may_use_is_never():
    """Only two of the rack's nodes could ever take a replica (a taint, too little CPU allocatable):
    a gang of three there can never be admitted, and is no preemptor."""
    nodes = [with_facts(n) for n in rack_nodes(racks=1, per_rack=4)]
    nodes[0] = with_facts(nodes[0], taints=[MAINT])
    nodes[1] = with_facts(nodes[1], cpu=8_000)
    s = scheduler([center()], [quota("q", guaranteed=64)], nodes)
    s.add_workload(constrained(job("g", "q", replicas=3, key_=RACK), requests=resources({"cpu": 16_000})))
    assert pending(run(s, 1.0))["g"] == (
        "NoDomainLargeEnough",
        "no rack in c could hold this job's 3 replica(s) of 8 B200 (24 GPUs): the largest holds 2 on the "
        "nodes it may use with every node empty — it can never be admitted as it stands",
    )


def test_preferred_affinity_and_prefer_no_schedule_order_nodes():
    nodes = [with_facts(n) for n in rack_nodes(racks=1, per_rack=3, clique=False)]
    nodes[0] = with_facts(nodes[0], soft=[Taint("spot", "", "PreferNoSchedule")])
    s = scheduler([center(keys=())], [quota("q", guaranteed=64)], nodes)
    pref = Preferred(10, Term(expressions=(Requirement("kubernetes.io/hostname", "DoesNotExist"),)))
    target = Preferred(50, Term(fields=(Requirement("metadata.name", "In", (nodes[2].name,)),)))
    s.add_workload(constrained(job("a", "q"), preferred=(pref, target)))
    s.add_workload(constrained(job("b", "q", created=1.0)))
    res = run(s, 1.0)
    got = {a.key: a.nodes[0] for a in res.admitted}
    assert got["a"] == nodes[2].name
    assert got["b"] == nodes[1].name  # the PreferNoSchedule node comes last


def test_allocatable_drop_waits_out_the_grace_and_draining_pods_never_evict():
    c = dataclasses.replace(center(), unhealthy_grace_s=30.0)
    nodes = rack_nodes(racks=1, per_rack=1)
    s = scheduler([c], [quota("q", guaranteed=8)], nodes)
    s.add_workload(job("a", "q", preemptible=False))
    run(s, 1.0)
    flap = dataclasses.replace(nodes[0], allocatable=0)
    s.set_node(flap)
    assert run(s, 2.0).evicted == []
    s.set_node(nodes[0])  # the device plugin is back within the grace
    assert run(s, 40.0).evicted == []
    s.set_node(flap)
    assert run(s, 41.0).evicted == []
    assert [e.key for e in run(s, 72.0).evicted] == ["a"]
    # a preemption victim's pod still terminating (draining) while its preemptor holds the GPUs
    s2 = scheduler([c], [quota("q", guaranteed=8)], rack_nodes(racks=1, per_rack=1))
    s2.add_workload(job("p", "q"))
    run(s2, 1.0)
    s2.set_node(dataclasses.replace(nodes[0], other_gpus=8, draining_gpus=8))
    assert run(s2, 100.0).evicted == []


def test_a_node_that_leaves_its_centre_keeps_its_work():
    nodes = rack_nodes(racks=1, per_rack=2)
    s = scheduler([center()], [quota("q", guaranteed=16)], nodes)
    s.add_workload(job("a", "q"))
    res = run(s, 1.0)
    node = res.admitted[0].nodes[0]
    left = next(dataclasses.replace(n, center="") for n in nodes if n.name == node)
    s.set_node(left)
    res = run(s, 2.0)
    assert res.evicted == []
    s.add_workload(job("b", "q"))
    s.add_workload(job("c", "q"))
    res = run(s, 3.0)
    assert [a.nodes for a in res.admitted] == [tuple(n.name for n in nodes if n.name != node)]
    s.remove_node(node)
    assert [(e.key, e.reason) for e in run(s, 4.0).evicted] == [("a", "NodeGone")]


def test_a_constrained_job_with_a_required_key_the_centre_lacks_never_fits():
    """The exact path's reason (the job's tolerations tell the nodes apart) names the missing key."""
    nodes = rack_nodes(racks=1, per_rack=2)
    nodes = [with_facts(nodes[0], taints=[MAINT]), with_facts(nodes[1])]
    s = scheduler([center()], [quota("q", guaranteed=16)], nodes)
    w = constrained(
        job("w", "q", key_="example.com/pod"), tolerations=(Toleration("example.com/maintenance", "Exists"),)
    )
    s.add_workload(w)
    assert pending(run(s, 0.0))["w"][0] == "UnknownTopologyKey"
