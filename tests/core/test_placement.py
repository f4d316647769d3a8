"""Gang placement: all-or-nothing, best fit, tight topology first, Required/Preferred, Spread."""

from __future__ import annotations

from aicenter.core import PlacementPolicy, TopologyMode, Workload

from .builders import (
    CLIQUE,
    RACK,
    ZONE,
    admitted,
    center,
    job,
    nodes_by_topology,
    pending,
    quota,
    rack_nodes,
    run,
    scheduler,
)


def running(key: str, q: str, nodes: tuple[str, ...], gpus: int = 8, cls: str = "B200") -> Workload:
    w = job(key, q, replicas=len(nodes), gpus=gpus)
    w.placement = nodes
    w.placed_class = cls
    w.started = 0.0
    return w


def test_best_fit_keeps_whole_racks_free():
    s = scheduler([center()], [quota("q", guaranteed=1000)], rack_nodes(racks=3, per_rack=4))
    # r1 is half used: a 2-node job fits there and leaves r0 and r2 whole.
    s.add_workload(running("old", "q", ("c-b200-r1-n0", "c-b200-r1-n1")))
    s.add_workload(job("two", "q", replicas=2, key_=RACK))
    res = run(s, 1.0)
    assert nodes_by_topology(s, res.admitted[0].nodes, RACK) == {"c-r1"}
    s.add_workload(job("four", "q", replicas=4, key_=RACK))
    res = run(s, 2.0)
    assert admitted(res) == {"four"}
    assert len(nodes_by_topology(s, res.admitted[0].nodes, RACK)) == 1


def test_best_fit_without_topology_fills_the_fullest_nodes_first():
    s = scheduler([center()], [quota("q", guaranteed=1000)], rack_nodes(racks=1, per_rack=3))
    s.add_workload(running("old", "q", ("c-b200-r0-n1",), gpus=6))
    s.add_workload(job("small", "q", replicas=1, gpus=2))
    res = run(s, 1.0)
    assert res.admitted[0].nodes == ("c-b200-r0-n1",)
    s.add_workload(job("pair", "q", replicas=2, gpus=4))
    res = run(s, 2.0)
    assert res.admitted[0].nodes == ("c-b200-r0-n0", "c-b200-r0-n0")  # both replicas on one node


def test_required_clique_keeps_the_gang_in_one_nvlink_domain():
    s = scheduler(
        [center()],
        [quota("q", guaranteed=1000, cls="GB200")],
        rack_nodes(cls="GB200", racks=3, per_rack=4, gpus=4),
    )
    s.add_workload(running("old", "q", ("c-gb200-r0-n0",), gpus=4, cls="GB200"))
    s.add_workload(job("fits", "q", replicas=3, gpus=4, key_=CLIQUE))
    s.add_workload(job("too-big", "q", replicas=5, gpus=4, key_=CLIQUE, created=1.0))
    res = run(s, 2.0)
    assert admitted(res) == {"fits"}
    assert nodes_by_topology(s, res.admitted[0].nodes, CLIQUE) == {"c.nvl0"}  # best fit: the used one
    reason, message = pending(res)["too-big"]
    assert (reason, message) == (
        "NoDomainLargeEnough",
        "no clique in c could hold this job's 5 replica(s) of 4 GB200 (20 GPUs): the largest holds 4 "
        "with every node empty — it can never be admitted as it stands",
    )


def test_preferred_falls_back_to_the_next_level_only_when_no_domain_fits():
    s = scheduler(
        [center()],
        [quota("q", guaranteed=1000, cls="GB200")],
        rack_nodes(cls="GB200", racks=4, per_rack=4, gpus=4, racks_per_zone=2),
    )
    s.add_workload(job("fits", "q", replicas=4, gpus=4, key_=CLIQUE, mode=TopologyMode.PREFERRED))
    s.add_workload(job("wide", "q", replicas=6, gpus=4, key_=CLIQUE, mode=TopologyMode.PREFERRED, created=1))
    res = run(s, 2.0)
    assert admitted(res) == {"fits", "wide"}
    by_key = {a.key: a.nodes for a in res.admitted}
    assert len(nodes_by_topology(s, by_key["fits"], CLIQUE)) == 1
    # No clique has 6 free nodes: the gang spans two cliques of one zone, packed (4 + 2).
    wide = by_key["wide"]
    assert len(nodes_by_topology(s, wide, ZONE)) == 1
    cliques = [s.inventory.nodes[n].node.topology[CLIQUE] for n in wide]
    assert sorted(cliques.count(c) for c in set(cliques)) == [2, 4]


def test_preferred_goes_anywhere_when_no_zone_fits():
    s = scheduler(
        [center()],
        [quota("q", guaranteed=1000)],
        rack_nodes(racks=2, per_rack=2, racks_per_zone=1),
    )
    s.add_workload(job("all", "q", replicas=4, key_=RACK, mode=TopologyMode.PREFERRED))
    res = run(s, 1.0)
    assert admitted(res) == {"all"}
    assert nodes_by_topology(s, res.admitted[0].nodes, ZONE) == {"c-z0", "c-z1"}


def test_a_gang_that_fits_a_clique_lands_in_one_clique_even_when_it_asked_for_a_zone():
    s = scheduler(
        [center()],
        [quota("q", guaranteed=1000, cls="GB200")],
        rack_nodes(cls="GB200", racks=4, per_rack=4, gpus=4, racks_per_zone=4),
    )
    s.add_workload(running("old", "q", ("c-gb200-r2-n0", "c-gb200-r2-n1"), gpus=4, cls="GB200"))
    s.add_workload(job("z", "q", replicas=2, gpus=4, key_=ZONE))
    res = run(s, 1.0)
    assert nodes_by_topology(s, res.admitted[0].nodes, CLIQUE) == {"c.nvl2"}


def test_required_key_the_centre_does_not_have_never_fits():
    s = scheduler([center(keys=(RACK, ZONE))], [quota("q", guaranteed=100)], rack_nodes(racks=1))
    s.add_workload(job("j", "q", replicas=1, key_=CLIQUE))
    s.add_workload(job("p", "q", replicas=1, key_=CLIQUE, mode=TopologyMode.PREFERRED))
    res = run(s, 1.0)
    assert admitted(res) == {"p"}
    assert pending(res)["j"] == (
        "UnknownTopologyKey",
        f"centre c has no topology key {CLIQUE} (it has: {RACK}, {ZONE})",
    )


def test_spread_puts_replicas_on_the_emptiest_nodes():
    s = scheduler(
        [center(policy=PlacementPolicy.SPREAD)],
        [quota("q", guaranteed=1000)],
        rack_nodes(racks=2, per_rack=2),
    )
    s.add_workload(running("old", "q", ("c-b200-r0-n0",), gpus=2))
    s.add_workload(job("gang", "q", replicas=3, gpus=2))
    res = run(s, 1.0)
    assert len(set(res.admitted[0].nodes)) == 3
    assert "c-b200-r0-n0" not in res.admitted[0].nodes


def test_spread_picks_the_domain_with_the_most_free_slots():
    s = scheduler(
        [center(policy=PlacementPolicy.SPREAD)],
        [quota("q", guaranteed=1000)],
        rack_nodes(racks=2, per_rack=2),
    )
    s.add_workload(running("old", "q", ("c-b200-r0-n0",), gpus=6))
    s.add_workload(job("rack", "q", replicas=2, gpus=2, key_=RACK))
    res = run(s, 1.0)
    assert nodes_by_topology(s, res.admitted[0].nodes, RACK) == {"c-r1"}
    assert len(set(res.admitted[0].nodes)) == 2


def test_spread_packs_when_there_are_more_replicas_than_nodes():
    s = scheduler(
        [center(policy=PlacementPolicy.SPREAD)],
        [quota("q", guaranteed=1000)],
        rack_nodes(racks=1, per_rack=2),
    )
    s.add_workload(job("gang", "q", replicas=5, gpus=2))
    res = run(s, 1.0)
    nodes = res.admitted[0].nodes
    # One replica per node first, then the rest packed where they fit (not balanced).
    assert len(nodes) == 5 and set(nodes) == {"c-b200-r0-n0", "c-b200-r0-n1"}


def test_a_gang_is_all_or_nothing():
    s = scheduler([center()], [quota("q", guaranteed=1000)], rack_nodes(racks=1, per_rack=4))
    s.add_workload(running("busy", "q", ("c-b200-r0-n3",)))
    s.add_workload(job("four", "q", replicas=4))
    s.add_workload(job("three", "q", replicas=3, created=1.0))
    res = run(s, 2.0)
    assert admitted(res) == {"three"}
    assert pending(res)["four"] == (
        "InsufficientGPUs",
        "c has 24 free B200 (24 usable in 8-GPU slots); job needs 32",
    )
    assert s.workloads["four"].placement is None


def test_a_gang_larger_than_its_pool_can_never_be_admitted():
    s = scheduler([center()], [quota("q", guaranteed=1000)], rack_nodes(racks=1, per_rack=3))
    s.add_workload(job("four", "q", replicas=4))
    assert pending(run(s, 1.0))["four"] == (
        "CenterTooSmall",
        "c could hold only 3 of this job's 4 replica(s) of 8 B200 with every node empty — it can never be "
        "admitted as it stands",
    )


def test_pending_messages_in_plain_language():
    s = scheduler(
        [center("national-ai-center", keys=(RACK, ZONE))],
        [quota("universities", center="national-ai-center", guaranteed=1000)],
        rack_nodes("national-ai-center", racks=2, per_rack=8),
    )
    s.add_workload(running("a", "universities", ("national-ai-center-b200-r0-n0",)))
    s.add_workload(
        running("b", "universities", ("national-ai-center-b200-r1-n0", "national-ai-center-b200-r1-n1"))
    )
    s.add_workload(job("rack-64", "universities", replicas=8, key_=RACK))
    s.add_workload(job("huge-node", "universities", replicas=1, gpus=16))
    res = run(s, 1.0)
    msgs = pending(res)
    assert msgs["rack-64"] == (
        "NoTopologyDomain",
        "no rack in national-ai-center has 64 free B200 in 8-GPU slots; largest free block 56",
    )
    assert msgs["huge-node"] == (
        "NoNodeLargeEnough",
        "no node in national-ai-center has 16 healthy B200 GPUs (largest has 8)",
    )


def test_maintenance_and_missing_class_messages():
    s = scheduler(
        [center("a", maintenance=True), center("b")],
        [quota("qa", center="a", guaranteed=8), quota("qb", center="b", guaranteed=8, cls="GB200")],
        [*rack_nodes("a", racks=1, per_rack=1), *rack_nodes("b", racks=1, per_rack=1)],
    )
    s.add_workload(job("m", "qa", replicas=1))
    s.add_workload(job("n", "qb", replicas=1, gpus=4))
    res = run(s, 1.0)
    assert pending(res) == {
        "m": ("Maintenance", "centre a is in maintenance: no new placements"),
        "n": ("NoSuchGPUClass", "centre b has no GB200 GPUs"),
    }
