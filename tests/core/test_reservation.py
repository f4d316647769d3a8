"""Starvation reservations: the indexed implementation makes exactly the straightforward choice."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aicenter.core import Scheduler, TopologyMode, Workload, placement
from aicenter.core.inventory import NodeState, Pool

from .builders import CLIQUE, KEYS, RACK, ZONE, center
from .test_properties import SCALE, pool_nodes


def reference(pool: Pool, w: Workload) -> list[NodeState]:
    """The definition: among candidate groups whose placeable capacity holds the gang, the one with
    the most free slots now; its placeable nodes sorted by (most free, topology order) until their
    healthy capacity holds every replica."""
    g, r = w.gpus_per_replica, w.replicas
    plan = placement.candidate_levels(pool, w)
    if plan is None:
        return []
    levels, anywhere = plan
    if levels and not anywhere:
        groups = [d.nodes for _, d in sorted(pool.domains[levels[-1]].items())]
    else:
        groups = [list(pool.nodes.values())]
    best = None
    for nodes in groups:
        usable = [ns for ns in nodes if pool.placeable(ns)]
        if sum(ns.healthy_capacity // g for ns in usable) < r:
            continue
        now = sum(max(0, ns.free) // g for ns in usable)
        if best is None or now > best[0]:
            best = (now, usable)
    if best is None:
        return []
    chosen, slots = [], 0
    for ns in sorted(best[1], key=lambda s: (-max(0, s.free), s.sort_key)):
        chosen.append(ns)
        slots += ns.healthy_capacity // g
        if slots >= r:
            break
    return chosen


@settings(max_examples=80 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=pool_nodes("c", "A"), data=st.data())
def test_reservation_matches_its_definition(nodes, data):
    s = Scheduler()
    s.set_center(center(keys=data.draw(st.sampled_from([KEYS, (RACK, ZONE)]))))
    for n in nodes:
        s.set_node(dataclasses.replace(n, center="c"))
    # Random usage, some of it placed and released again (stale index entries), some nodes reserved.
    for i, n in enumerate(nodes):
        held = data.draw(st.integers(0, n.capacity))
        if held:
            s.inventory.hold(f"w{i}", (n.name,), held)
            if data.draw(st.booleans()):
                s.inventory.release(f"w{i}", (n.name,), held)
    pool = s.inventory.pool("c", "A")
    if pool is None:
        return
    for ns in list(pool.nodes.values()):
        if data.draw(st.integers(0, 9)) == 0:
            pool.update(ns, reserved=True)
    w = Workload(
        "starving",
        "q",
        data.draw(st.integers(1, 12)),
        data.draw(st.sampled_from([1, 2, 4, 8])),
        0.0,
        topology_key=data.draw(st.sampled_from([None, CLIQUE, RACK, ZONE])),
        topology_mode=data.draw(st.sampled_from(list(TopologyMode))),
    )
    assert [ns.name for ns in placement.reservation(pool, w)] == [ns.name for ns in reference(pool, w)]
