"""Gang placement in one pool: all replicas or none, topology-aware, best fit or spread.

A workload asks for R replicas of G GPUs. Topology is a label key of the centre's hierarchy
(tight → loose, e.g. NVLink clique → rack → zone):
- Required key K: every replica inside one domain of K; the tightest level at or below K that has a
  fitting domain is used (a job that fits one clique lands in one clique even if it only asked for
  a rack).
- Preferred key K: the same, then any looser level, then anywhere in the pool.
- No key: anywhere in the pool.
Within a level, BinPack picks the fitting domain with the fewest free slots (keeps big domains whole)
and nodes with the fewest free GPUs first; Spread picks the most free.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from .inventory import NodeState, Pool
from .ledger import fmt
from .model import PlacementPolicy, TopologyMode, Workload


def key_noun(key: str) -> str:
    """A readable noun for a topology label key: ``topology.aicenter.dev/rack`` → ``rack``."""
    return key.rsplit("/", 1)[-1].rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Miss:
    """Why a workload does not fit a pool right now; ``never`` when it cannot fit even empty."""

    reason: str
    message: str
    never: bool = False


def candidate_levels(pool: Pool, w: Workload) -> tuple[list[int], bool] | None:
    """Levels to try, tight to loose, and whether the whole pool is an acceptable last resort.

    None when the workload names a topology key this centre does not have (and requires it).
    """
    keys = pool.center.topology_keys
    if w.topology_key is None:
        return [], True
    if w.topology_key not in keys:
        if w.topology_mode == TopologyMode.REQUIRED:
            return None
        return [], True
    k = keys.index(w.topology_key)
    if w.topology_mode == TopologyMode.REQUIRED:
        return list(range(k + 1)), False
    return list(range(len(keys))), True


def feasible_level(pool: Pool, w: Workload) -> int | None:
    """The tightest level whose best domain fits the gang now; -1 for 'anywhere'; None if none."""
    plan = candidate_levels(pool, w)
    if plan is None:
        return None
    levels, anywhere = plan
    g, r = w.gpus_per_replica, w.replicas
    if pool.slots(g) < r:
        return None  # not even the whole pool has room
    for lvl in levels:
        if pool.level_potential(lvl, g) >= r and pool.max_domain_slots(lvl, g) >= r:
            return lvl
    return -1 if anywhere else None


def _pick_domain(pool: Pool, lvl: int, g: int, r: int) -> list[NodeState]:
    spread = pool.center.placement_policy == PlacementPolicy.SPREAD
    d = pool.level_index(lvl, g).best_fit(r, spread)
    assert d is not None, "feasible_level promised a fitting domain"
    return d.nodes


def _fill(nodes: list[NodeState], g: int, r: int, spread: bool) -> list[str]:
    """Choose nodes for r replicas among ``nodes``; a node takes several replicas when it can."""
    order = sorted(
        (ns for ns in nodes if ns.indexed_free >= g),
        key=(lambda s: (-s.indexed_free, s.sort_key)) if spread else (lambda s: (s.indexed_free, s.sort_key)),
    )
    out: list[str] = []
    for ns in order:
        k = 1 if spread else ns.indexed_free // g
        out.extend([ns.name] * min(k, r - len(out)))
        if len(out) == r:
            return out
    if spread:  # a second pass packs the rest where more than one replica fits
        taken: dict[str, int] = {}
        for n in out:
            taken[n] = taken.get(n, 0) + 1
        for ns in order:
            room = ns.indexed_free // g - taken.get(ns.name, 0)
            out.extend([ns.name] * max(0, min(room, r - len(out))))
            if len(out) == r:
                return out
    raise AssertionError("domain promised enough slots")


def _select_in_domain(pool: Pool, lvl: int, members: list[NodeState], g: int, r: int) -> list[str]:
    """Pack the gang into as few sub-domains (the next tighter level) as possible."""
    spread = pool.center.placement_policy == PlacementPolicy.SPREAD
    if lvl == 0 or spread:
        return _fill(members, g, r, spread)
    groups: dict[str | None, list[NodeState]] = {}
    for ns in members:
        if ns.indexed_free >= g:
            groups.setdefault(ns.domains[lvl - 1], []).append(ns)
    slots = {k: sum(ns.indexed_free // g for ns in v) for k, v in groups.items()}
    out: list[str] = []
    while len(out) < r:
        need = r - len(out)
        fitting = [k for k in groups if slots[k] >= need]
        if fitting:  # best fit: the smallest sub-domain that holds the rest
            k = min(fitting, key=lambda k: (slots[k], k or ""))
        else:  # else the largest one first
            k = max(groups, key=lambda k: (slots[k], "" if k is None else k))
        take = min(need, slots[k])
        out.extend(_fill(groups.pop(k), g, take, spread))
    return out


def _select_anywhere(pool: Pool, g: int, r: int) -> list[str]:
    """Best fit (or spread) over the whole pool through the free-count buckets."""
    spread = pool.center.placement_policy == PlacementPolicy.SPREAD
    out: list[str] = []
    chosen: list[NodeState] = []
    taken: set[str] = set()
    # Entries taken off the bucket heaps so that the next peek sees the next node; put back below.
    # (Cheaper than unindexing and re-indexing each chosen node; a node may have duplicate entries.)
    aside: list[tuple[int, tuple[tuple[str, ...], str]]] = []
    frees = range(pool.width, g - 1, -1) if spread else range(g, pool.width + 1)
    try:
        for f in frees:
            while len(out) < r:
                ns = pool.peek_bucket(f)
                if ns is None:
                    break
                aside.append((f, heapq.heappop(pool.buckets[f])))  # ns's entry: the heap's top
                if ns.name in taken:
                    continue
                taken.add(ns.name)
                chosen.append(ns)
                k = 1 if spread else f // g
                out.extend([ns.name] * min(k, r - len(out)))
            if len(out) == r:
                break
        if spread and len(out) < r:  # more replicas than nodes: pack the rest
            for ns in chosen:
                room = ns.free // g - out.count(ns.name)
                out.extend([ns.name] * max(0, min(room, r - len(out))))
    finally:
        for f, entry in aside:
            heapq.heappush(pool.buckets[f], entry)
    if len(out) < r:
        raise AssertionError("pool promised enough slots")
    return out


def select(pool: Pool, w: Workload, lvl: int) -> tuple[str, ...]:
    """Nodes, one per replica, for a workload known to fit at ``lvl`` (from ``feasible_level``)."""
    g, r = w.gpus_per_replica, w.replicas
    if lvl < 0:
        nodes = _select_anywhere(pool, g, r)
    else:
        nodes = _select_in_domain(pool, lvl, _pick_domain(pool, lvl, g, r), g, r)
    return tuple(sorted(nodes, key=lambda n: pool.nodes[n].sort_key))


def explain(pool: Pool, w: Workload) -> Miss:
    """A plain-language reason why ``w`` does not fit ``pool`` now."""
    c, cls = pool.center.name, pool.gpu_class
    g, r = w.gpus_per_replica, w.replicas
    if pool.center.maintenance:
        return Miss("Maintenance", f"centre {c} is in maintenance: no new placements")
    biggest = pool.biggest_node()
    if g > biggest:
        return Miss(
            "NoNodeLargeEnough",
            f"no node in {c} has {g} healthy {cls} GPUs (largest has {biggest})",
            never=True,
        )
    plan = candidate_levels(pool, w)
    if plan is None:
        keys = ", ".join(pool.center.topology_keys) or "none"
        return Miss(
            "UnknownTopologyKey",
            f"centre {c} has no topology key {w.topology_key} (it has: {keys})",
            never=True,
        )
    levels, anywhere = plan
    if levels and not anywhere:
        lvl = levels[-1]
        noun = key_noun(pool.center.topology_keys[lvl])
        largest = pool.max_domain_slots(lvl, g) * g
        return Miss(
            "NoTopologyDomain",
            f"no {noun} in {c} has {fmt(r * g)} free {cls} in {g}-GPU slots; "
            f"largest free block {fmt(largest)}",
        )
    usable = pool.slots(g) * g
    return Miss(
        "InsufficientGPUs",
        f"{c} has {fmt(pool.free_gpus())} free {cls} ({fmt(usable)} usable in {g}-GPU slots); "
        f"job needs {fmt(r * g)}",
    )


def reservation(pool: Pool, w: Workload) -> list[NodeState]:
    """Nodes to hold back for a starving gang so that they drain for it.

    Chooses the domain (at the workload's required level, else the whole pool) whose healthy
    capacity can hold the gang, preferring the one with the most free slots now, and takes its
    nodes with the most free GPUs first until their healthy capacity holds every replica.
    """
    g, r = w.gpus_per_replica, w.replicas
    plan = candidate_levels(pool, w)
    if plan is None:
        return []
    levels, anywhere = plan
    if not levels or anywhere:
        return _reserve_anywhere(pool, g, r)
    # One pass per domain: its capacity, its free slots now, and its placeable nodes bucketed by free
    # GPUs (each bucket stays in topology order, so no sort is needed to take the freest first).
    best: tuple[int, dict[int, list[NodeState]]] | None = None
    for _, d in sorted(pool.domains[levels[-1]].items()):
        capacity = now = 0
        by_free: dict[int, list[NodeState]] = {}
        for ns in d.nodes:
            if not pool.placeable(ns):
                continue
            free = max(0, ns.free)
            capacity += ns.healthy_capacity // g
            now += free // g
            bucket = by_free.get(free)
            if bucket is None:
                by_free[free] = [ns]
            else:
                bucket.append(ns)
        if capacity < r:
            continue
        if best is None or now > best[0]:
            best = (now, by_free)
    if best is None:
        return []
    chosen, slots = [], 0
    for free in sorted(best[1], reverse=True):
        for ns in best[1][free]:
            chosen.append(ns)
            slots += ns.healthy_capacity // g
            if slots >= r:
                return chosen
    return chosen


def _reserve_anywhere(pool: Pool, g: int, r: int) -> list[NodeState]:
    """``reservation`` over the whole pool, without visiting every node.

    The same choice as sorting every placeable node by (most free first, topology order): nodes with
    free GPUs come from the pool's free-count index, then busy ones in topology order — only until
    the healthy capacity taken holds the gang (none if the whole pool cannot).
    """
    chosen: list[NodeState] = []
    slots = 0
    for f in range(pool.width, 0, -1):
        live = {name: pool.nodes[name] for _, name in pool.buckets[f] if name in pool.nodes}
        for ns in sorted((ns for ns in live.values() if ns.indexed_free == f), key=lambda s: s.sort_key):
            chosen.append(ns)
            slots += ns.healthy_capacity // g
            if slots >= r:
                return chosen
    for ns in pool.ordered_nodes():
        if ns.indexed_free > 0 or not pool.placeable(ns):
            continue  # taken above, or not placeable
        chosen.append(ns)
        slots += ns.healthy_capacity // g
        if slots >= r:
            return chosen
    return []
