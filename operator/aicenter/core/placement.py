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

Two paths give the same kind of answer:
- the **indexed path** (:func:`feasible_level`, :func:`select`) works on the pool's free-GPU indices
  and serves every workload whose constraints do not tell the pool's nodes apart (it tolerates the
  taints every node has and none of the others, its selector matches every node, no preferences):
  the common case, O(1) to decide and O(R log n) to choose. Its choice is then checked against the
  replicas' non-GPU requests (cpu, memory, pods, …);
- the **exact path** (:func:`find_exact`) scans the pool, counting on each node the replicas its
  taints, labels and free resources allow, for every other workload and whenever that check fails.
:func:`find` picks the path; :func:`explain` says why a workload does not fit, naming the constraint
that kept it off nodes with free GPUs ("3 nodes have taint …, 1 lacks 64 CPU").
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .constraints import NO_CONSTRAINTS, Constraints, tolerates_all
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


SlotsOf = Callable[[NodeState], int]  # replicas a node can take
FreeOf = Callable[[NodeState], int]  # its free GPUs, for best-fit order


def _indexed_slots(g: int) -> SlotsOf:
    return lambda ns: ns.indexed_free // g if ns.indexed_free > 0 else 0


def _indexed_free(ns: NodeState) -> int:
    return ns.indexed_free


def _fill(
    nodes: list[NodeState],
    r: int,
    spread: bool,
    slots_of: SlotsOf,
    free_of: FreeOf,
    score: Callable[[NodeState], int] | None = None,
) -> list[str]:
    """Choose nodes for r replicas among ``nodes``; a node takes several replicas when it can.

    BinPack takes the nodes with the fewest free GPUs first, Spread the most; a ``score`` (preferred
    affinity, PreferNoSchedule taints) comes before either.
    """
    if score is None:
        key = (lambda s: (-free_of(s), s.sort_key)) if spread else (lambda s: (free_of(s), s.sort_key))
    else:
        sc = score
        key = (
            (lambda s: (-sc(s), -free_of(s), s.sort_key))
            if spread
            else (lambda s: (-sc(s), free_of(s), s.sort_key))
        )
    order = sorted((ns for ns in nodes if slots_of(ns) > 0), key=key)
    out: list[str] = []
    for ns in order:
        k = 1 if spread else slots_of(ns)
        out.extend([ns.name] * min(k, r - len(out)))
        if len(out) == r:
            return out
    if spread:  # a second pass packs the rest where more than one replica fits
        taken: dict[str, int] = {}
        for n in out:
            taken[n] = taken.get(n, 0) + 1
        for ns in order:
            room = slots_of(ns) - taken.get(ns.name, 0)
            out.extend([ns.name] * max(0, min(room, r - len(out))))
            if len(out) == r:
                return out
    raise AssertionError("domain promised enough slots")


def _select_in_domain(
    pool: Pool,
    lvl: int,
    members: list[NodeState],
    r: int,
    slots_of: SlotsOf,
    free_of: FreeOf,
    score: Callable[[NodeState], int] | None = None,
) -> list[str]:
    """Pack the gang into as few sub-domains (the next tighter level) as possible."""
    spread = pool.center.placement_policy == PlacementPolicy.SPREAD
    if lvl == 0 or spread:
        return _fill(members, r, spread, slots_of, free_of, score)
    groups: dict[str | None, list[NodeState]] = {}
    slots: dict[str | None, int] = {}
    for ns in members:
        n = slots_of(ns)
        if n > 0:
            d = ns.domains[lvl - 1]
            group = groups.get(d)
            if group is None:
                groups[d] = [ns]
                slots[d] = n
            else:
                group.append(ns)
                slots[d] += n
    out: list[str] = []
    while len(out) < r:
        need = r - len(out)
        fitting = [k for k in groups if slots[k] >= need]
        if fitting:  # best fit: the smallest sub-domain that holds the rest
            k = min(fitting, key=lambda k: (slots[k], k or ""))
        else:  # else the largest one first
            k = max(groups, key=lambda k: (slots[k], "" if k is None else k))
        take = min(need, slots[k])
        out.extend(_fill(groups.pop(k), take, spread, slots_of, free_of, score))
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
        nodes = _select_in_domain(
            pool, lvl, _pick_domain(pool, lvl, g, r), r, _indexed_slots(g), _indexed_free
        )
    return tuple(sorted(nodes, key=lambda n: pool.nodes[n].sort_key))


# -- choosing a path ---------------------------------------------------------------------------


def indexed_path(pool: Pool, w: Workload) -> bool:
    """Whether the pool's indices see exactly the nodes ``w``'s constraints allow (cached per shape)."""
    c = w.constraints
    if c is NO_CONSTRAINTS and not pool.common_taints and not pool.soft_tainted:
        return True
    hit = pool.path_cache.get(c)
    if hit is not None and hit[0] == pool.shape_version:
        return hit[1]
    common = pool.common_taints
    ok = (
        not c.preferred
        and not pool.soft_tainted
        and tolerates_all(c.tolerations, common)
        and not any(tolerates_all(c.tolerations, t) for t in pool.taint_sets if t != common)
        and (not c.selects or all(c.selector_ok(ns.name, ns.node.facts.labels) for ns in pool.nodes.values()))
    )
    pool.path_cache[c] = (pool.shape_version, ok)
    return ok


def indexed_explain(pool: Pool, w: Workload) -> bool:
    """Whether ``explain`` answers for ``w`` from the pool's indices (not a scan of its nodes).

    Such a reason depends only on the pool's shape and on how much room it has: a workload that
    does not fit keeps the same reason (with other numbers) until the pool gains room.
    """
    return indexed_path(pool, w) and len(pool.taint_sets) <= 1 and not w.constraints.requests


def _requests_fit(pool: Pool, nodes: tuple[str, ...], c: Constraints) -> bool:
    if not c.requests:
        return True
    return all(pool.nodes[name].fits(c.requests) >= count for name, count in Counter(nodes).items())


def find(pool: Pool, w: Workload) -> tuple[str, ...] | None:
    """Nodes, one per replica (in topology order), for ``w`` now; None when it does not fit."""
    if indexed_path(pool, w):
        lvl = feasible_level(pool, w)
        if lvl is None:
            return None  # the index is an upper bound: not even GPUs alone fit
        nodes = select(pool, w, lvl)
        if _requests_fit(pool, nodes, w.constraints):
            return nodes
    return find_exact(pool, w)


def fits(pool: Pool, w: Workload) -> bool:
    """``find(pool, w) is not None``, cheaply where the index alone can tell."""
    if indexed_path(pool, w):
        if feasible_level(pool, w) is None:
            return False
        if not w.constraints.requests:
            return True
    return find(pool, w) is not None


# -- the exact path ----------------------------------------------------------------------------


def _amount(name: str, amount: int) -> str:
    if name == "cpu":
        return f"{amount / 1000:g} CPU"
    if name == "pods":
        return "room for another pod"
    if name in ("memory", "ephemeral-storage") or name.startswith("hugepages-"):
        gib = amount / (1 << 30)
        return f"{gib:.3g}Gi {name}" if gib >= 1 else f"{amount / (1 << 20):.3g}Mi {name}"
    return f"{fmt(amount)} {name}"


@dataclass
class _Scan:
    slots: dict[str, int]  # node name → replicas it can take now
    excluded: Counter[str]  # why nodes with free GPUs were left out, as phrases
    static_ok: int  # nodes whose taints and labels allow the workload at all
    ever_fits: int  # of those, nodes whose allocatable could hold one replica
    ever_slots: dict[str, int]  # with ``whole``: node name → replicas it could take were it empty


def _scan(pool: Pool, w: Workload, whole: bool = False) -> _Scan:
    """Count, on every node of the pool, the replicas ``w`` may take there now (and, with ``whole``,
    those it could take were it empty)."""
    g, c = w.gpus_per_replica, w.constraints
    slots: dict[str, int] = {}
    ever_slots: dict[str, int] = {}
    excluded: Counter[str] = Counter()
    static_ok = ever = 0
    for ns in pool.nodes.values():
        facts = ns.node.facts
        bad = next((t for t in facts.taints if not tolerates_all(c.tolerations, (t,))), None)
        labels_ok = c.selector_ok(ns.name, facts.labels) if c.selects else True
        if bad is None and labels_ok:
            static_ok += 1
            if ns.node.allocatable >= g and all(facts.allocatable.get(n, 0) >= a for n, a in c.requests):
                ever += 1
                if whole:
                    ever_slots[ns.name] = min(
                        [max(ns.node.allocatable, ns.node.capacity) // g]
                        + [facts.allocatable.get(n, 0) // a for n, a in c.requests if a > 0]
                    )
        if not pool.usable(ns):
            continue
        k = max(0, ns.free) // g
        if k == 0:
            continue
        if bad is not None:
            excluded[f"taint {bad}"] += 1
            continue
        if not labels_ok:
            excluded["a node selector or affinity that does not match"] += 1
            continue
        if c.requests:
            room = ns.fits(c.requests)
            if room == 0:
                short = next(
                    (n, a)
                    for n, a in c.requests
                    if facts.allocatable.get(n, 0) - ns.node.other_requests.get(n, 0) - ns.used_res.get(n, 0)
                    < a
                )
                excluded[f"lack {_amount(*short)} free"] += 1
                continue
            k = min(k, room)
        slots[ns.name] = k
    return _Scan(slots, excluded, static_ok, ever, ever_slots)


def _score_fn(pool: Pool, c: Constraints) -> Callable[[NodeState], int] | None:
    if not c.preferred and not pool.soft_tainted:
        return None
    return lambda ns: c.score(ns.name, ns.node.facts.labels, ns.node.facts.soft_taints)


def find_exact(pool: Pool, w: Workload) -> tuple[str, ...] | None:
    """The same choice rules as the indexed path, over the nodes ``w`` may use (a full scan)."""
    plan = candidate_levels(pool, w)
    if plan is None:
        return None
    scan = _scan(pool, w)
    r = w.replicas
    if sum(scan.slots.values()) < r:
        return None
    spread = pool.center.placement_policy == PlacementPolicy.SPREAD
    members = [pool.nodes[n] for n in scan.slots]
    slots_of: SlotsOf = lambda ns: scan.slots.get(ns.name, 0)  # noqa: E731
    free_of: FreeOf = lambda ns: max(0, ns.free)  # noqa: E731
    score = _score_fn(pool, w.constraints)
    levels, anywhere = plan
    for lvl in levels:
        sums: dict[str, int] = {}
        for ns in members:
            d = ns.domains[lvl]
            if d is not None:
                sums[d] = sums.get(d, 0) + scan.slots[ns.name]
        fitting = [(v, d) for d, v in sums.items() if v >= r]
        if not fitting:
            continue
        _, best = min(fitting, key=lambda x: (-x[0], x[1])) if spread else min(fitting)
        inside = [ns for ns in members if ns.domains[lvl] == best]
        nodes = _select_in_domain(pool, lvl, inside, r, slots_of, free_of, score)
        return tuple(sorted(nodes, key=lambda n: pool.nodes[n].sort_key))
    if not anywhere:
        return None
    nodes = _fill(members, r, spread, slots_of, free_of, score)
    return tuple(sorted(nodes, key=lambda n: pool.nodes[n].sort_key))


def _exclusions(scan: _Scan) -> str:
    if not scan.excluded:
        return ""
    parts = [
        f"{n} node{'s' if n > 1 else ''} {'have' if n > 1 else 'has'} {why}"
        if why.startswith("taint") or why.startswith("a node")
        else f"{n} node{'s' if n > 1 else ''} {why if n > 1 else why.replace('lack ', 'lacks ', 1)}"
        for why, n in sorted(scan.excluded.items(), key=lambda x: (-x[1], x[0]))
    ]
    return "; of the nodes with free GPUs, " + ", ".join(parts)


def explain_exact(pool: Pool, w: Workload) -> Miss:
    """Why ``w`` does not fit, counting the nodes its constraints kept it off."""
    c, cls = pool.center.name, pool.gpu_class
    g, r = w.gpus_per_replica, w.replicas
    scan = _scan(pool, w, whole=True)
    if scan.static_ok == 0:
        return Miss(
            "NoMatchingNodes",
            f"no {cls} node in {c} passes this job's node selector, affinity and tolerations",
            never=True,
        )
    if scan.ever_fits == 0:
        need = " and ".join(
            [f"{g} GPU{'s' if g > 1 else ''}"]
            + [_amount(n, a) for n, a in w.constraints.requests if n != "pods"]
        )
        return Miss(
            "NoNodeLargeEnough",
            f"no {cls} node in {c} that this job may use has {need} allocatable for one replica",
            never=True,
        )
    plan = candidate_levels(pool, w)
    if plan is None:
        return _unknown_key(pool, w)
    levels, anywhere = plan
    tail = _exclusions(scan)
    lvl = levels[-1] if levels and not anywhere else None
    whole: dict[str | None, int] = {}
    for name, k in scan.ever_slots.items():
        d = None if lvl is None else pool.nodes[name].domains[lvl]
        if lvl is None or d is not None:
            whole[d] = whole.get(d, 0) + k
    never = _never(pool, w, lvl, max(whole.values(), default=0), " on the nodes it may use")
    if never is not None:
        return never
    if lvl is not None:
        noun = key_noun(pool.center.topology_keys[lvl])
        sums: dict[str, int] = {}
        for name, k in scan.slots.items():
            d = pool.nodes[name].domains[lvl]
            if d is not None:
                sums[d] = sums.get(d, 0) + k
        largest = max(sums.values(), default=0) * g
        return Miss(
            "NoTopologyDomain",
            f"no {noun} in {c} has {fmt(r * g)} free {cls} in {g}-GPU slots on nodes this job may use; "
            f"largest such block {fmt(largest)}{tail}",
        )
    room = sum(scan.slots.values())
    return Miss(
        "InsufficientResources" if scan.excluded else "InsufficientGPUs",
        f"{c} has room for {fmt(room)} of this job's {fmt(r)} replica(s) ({g} {cls} each) on nodes it may use"
        f"{tail}",
    )


def _never(pool: Pool, w: Workload, lvl: int | None, most: int, may_use: str = "") -> Miss | None:
    """The Miss of a job more replicas than ``most`` (the most its domains of ``lvl``, or its whole
    pool, hold with every node empty and healthy): it can never be admitted as it stands."""
    g, r, c, cls = w.gpus_per_replica, w.replicas, pool.center.name, pool.gpu_class
    if r <= most:
        return None
    each = f"{fmt(r)} replica(s) of {g} {cls}"
    if lvl is None:
        return Miss(
            "CenterTooSmall",
            f"{c} could hold only {fmt(most)} of this job's {each}{may_use} with every node empty — it can "
            f"never be admitted as it stands",
            never=True,
        )
    noun = key_noun(pool.center.topology_keys[lvl])
    return Miss(
        "NoDomainLargeEnough",
        f"no {noun} in {c} could hold this job's {each} ({fmt(r * g)} GPUs): the largest holds "
        f"{fmt(most)}{may_use} with every node empty — it can never be admitted as it stands",
        never=True,
    )


def _unknown_key(pool: Pool, w: Workload) -> Miss:
    keys = ", ".join(pool.center.topology_keys) or "none"
    return Miss(
        "UnknownTopologyKey",
        f"centre {pool.center.name} has no topology key {w.topology_key} (it has: {keys})",
        never=True,
    )


def explain(pool: Pool, w: Workload) -> Miss:
    """A plain-language reason why ``w`` does not fit ``pool`` now."""
    c, cls = pool.center.name, pool.gpu_class
    g, r = w.gpus_per_replica, w.replicas
    if pool.center.maintenance:
        return Miss("Maintenance", f"centre {c} is in maintenance: no new placements")
    if (
        not indexed_path(pool, w)
        or len(pool.taint_sets) > 1  # some nodes are off the index for their taints: say so
        or (w.constraints.requests and feasible_level(pool, w) is not None)
    ):
        return explain_exact(pool, w)
    biggest = pool.biggest_node()
    if g > biggest:
        return Miss(
            "NoNodeLargeEnough",
            f"no node in {c} has {g} healthy {cls} GPUs (largest has {biggest})",
            never=True,
        )
    plan = candidate_levels(pool, w)
    if plan is None:
        return _unknown_key(pool, w)
    levels, anywhere = plan
    lvl = levels[-1] if levels and not anywhere else None
    never = _never(pool, w, lvl, pool.whole_slots(lvl, g))
    if never is not None:
        return never
    if lvl is not None:
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
    if not indexed_path(pool, w):
        return _reserve_among(pool, w, plan)
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


def _reserve_among(pool: Pool, w: Workload, plan: tuple[list[int], bool]) -> list[NodeState]:
    """``reservation`` for a workload that may use only some nodes (a scan of the pool)."""
    g, r, c = w.gpus_per_replica, w.replicas, w.constraints

    def usable(ns: NodeState) -> bool:
        f = ns.node.facts
        return (
            pool.usable(ns)
            and tolerates_all(c.tolerations, f.taints)
            and (not c.selects or c.selector_ok(ns.name, f.labels))
        )

    levels, anywhere = plan
    if levels and not anywhere:
        groups = [d.nodes for _, d in sorted(pool.domains[levels[-1]].items())]
    else:
        groups = [pool.ordered_nodes()]
    best: tuple[int, list[NodeState]] | None = None
    for nodes in groups:
        ok = [ns for ns in nodes if usable(ns)]
        if sum(ns.healthy_capacity // g for ns in ok) < r:
            continue
        now = sum(max(0, ns.free) // g for ns in ok)
        if best is None or now > best[0]:
            best = (now, ok)
    if best is None:
        return []
    chosen, slots = [], 0
    for ns in sorted(best[1], key=lambda s: (-max(0, s.free), s.sort_key)):
        chosen.append(ns)
        slots += ns.healthy_capacity // g
        if slots >= r:
            break
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
