"""GPU inventory: nodes grouped into pools (centre × GPU class) with indices for fast placement.

Each pool keeps, over its *placeable* nodes (ready, schedulable, centre not in maintenance, not
reserved, no hard taint beyond the pool's common ones), a histogram of free-GPU counts for the whole
pool and for every topology domain, and a lazy min-heap of nodes per free count. Feasibility of a
gang of R × G is then O(max GPUs per node) (slots = Σ count[f] · ⌊f / G⌋) and best-fit selection is
O(R log n). Every change to a node goes through ``update`` so the indices never drift from the nodes.

The *common taints* of a pool are the hard taints every node of it carries (none in most clusters;
kwok's own taint on a simulated fleet). A node with more than those (maintenance, a disruption
taint) is left out of the index; placement sees it only through the exact path, for workloads that
tolerate it (see :mod:`aicenter.core.placement`).
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from .constraints import Resources, Taint
from .model import CenterSpec, Node


@dataclass(eq=False)
class NodeState:
    node: Node
    sort_key: tuple[str, ...]
    domains: tuple[str | None, ...]
    used: int = 0  # GPUs held by workloads the core placed
    reserved: bool = False  # held back this cycle for a starving workload
    indexed_free: int = -1  # free count under which the node is indexed; -1 = not indexed
    workloads: dict[str, int] = field(default_factory=dict)  # workload key → GPUs on this node
    used_res: dict[str, int] = field(default_factory=dict)  # non-GPU requests of our workloads here
    pool: Pool | None = None  # the pool it is in (set by the pool)
    doms: tuple[Domain | None, ...] = ()  # its domains level by level, None where it has no label

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def free(self) -> int:
        return self.node.allocatable - self.node.other_gpus - self.used

    @property
    def healthy_capacity(self) -> int:
        """GPUs that could be ours if every workload of ours finished."""
        return max(0, self.node.allocatable - self.node.other_gpus)

    @property
    def over(self) -> int:
        """GPUs held beyond what is healthy, not counting pods that are draining away."""
        n = self.node
        return self.used + n.other_gpus - n.draining_gpus - n.allocatable

    def fits(self, requests: Resources) -> int:
        """How many replicas with these non-GPU ``requests`` the node's free resources hold."""
        best = 1 << 30
        alloc, other, used = self.node.facts.allocatable, self.node.other_requests, self.used_res
        for name, amount in requests:
            free = alloc.get(name, 0) - other.get(name, 0) - used.get(name, 0)
            best = min(best, free // amount if free > 0 else 0)
            if not best:
                return 0
        return best


@dataclass
class PoolTotals:
    """Counters over a pool's nodes, kept as nodes come, go and change (status and metrics read these)."""

    nodes: int = 0
    ready: int = 0
    schedulable: int = 0  # ready and not cordoned
    capacity: int = 0  # GPUs
    healthy: int = 0  # allocatable GPUs on ready nodes
    used: int = 0  # GPUs held by our placements
    other: int = 0  # GPUs held by pods no placement claims

    def count(self, ns: NodeState, sign: int) -> None:
        n = ns.node
        self.nodes += sign
        self.ready += sign * n.ready
        self.schedulable += sign * (n.ready and n.schedulable)
        self.capacity += sign * n.capacity
        self.healthy += sign * (n.allocatable if n.ready else 0)
        self.used += sign * ns.used
        self.other += sign * n.other_gpus

    @property
    def allocated(self) -> int:
        return min(self.capacity, self.used + self.other)

    @property
    def unhealthy(self) -> int:
        return max(0, self.capacity - self.healthy)


@dataclass
class Domain:
    name: str
    hist: list[int]
    members: list[NodeState] = field(default_factory=list)
    _sorted: bool = True
    _slots: dict[int, int] = field(default_factory=dict)  # GPUs per slot → free slots (cache)

    @property
    def nodes(self) -> list[NodeState]:
        """Member nodes in topology order (sorted lazily after membership changes)."""
        if not self._sorted:
            self.members.sort(key=lambda s: s.sort_key)
            self._sorted = True
        return self.members

    def slots(self, gpus: int) -> int:
        s = self._slots.get(gpus)
        if s is None:
            s = self._slots[gpus] = slots_of(self.hist, gpus)
        return s

    def potential(self, gpus: int) -> int:
        """Slots if every workload of ours on its nodes finished."""
        return sum(ns.healthy_capacity // gpus for ns in self.members)


class LevelIndex:
    """Domains of one topology level bucketed by their free ``gpus``-slots.

    ``max_slots`` and ``best_fit`` are a bisect away; domains changed since the last query are
    marked dirty by the pool and refreshed lazily, so a cycle pays only for what it touched.
    """

    def __init__(self, domains: list[Domain], gpus: int) -> None:
        self.gpus = gpus
        self.current: dict[str, int] = {}
        self.buckets: dict[int, dict[str, Domain]] = {}
        self.keys: list[int] = []  # sorted non-empty slot counts
        self.dirty: dict[str, Domain] = {}
        for d in domains:
            self._put(d, d.slots(gpus))

    def _put(self, d: Domain, slots: int) -> None:
        self.current[d.name] = slots
        b = self.buckets.get(slots)
        if b is None:
            b = self.buckets[slots] = {}
            bisect.insort(self.keys, slots)
        b[d.name] = d

    def _refresh(self) -> None:
        for name, d in self.dirty.items():
            new = d.slots(self.gpus)
            old = self.current[name]
            if new == old:
                continue
            b = self.buckets[old]
            del b[name]
            if not b:
                del self.buckets[old]
                del self.keys[bisect.bisect_left(self.keys, old)]
            self._put(d, new)
        self.dirty.clear()

    def max_slots(self) -> int:
        self._refresh()
        return self.keys[-1] if self.keys else 0

    def best_fit(self, need: int, spread: bool = False) -> Domain | None:
        """The domain with the fewest slots ≥ ``need`` (most, for spread); ties by name."""
        self._refresh()
        if not self.keys or self.keys[-1] < need:
            return None
        slots = self.keys[-1] if spread else self.keys[bisect.bisect_left(self.keys, need)]
        b = self.buckets[slots]
        return b[min(b)]


def slots_of(hist: list[int], gpus: int) -> int:
    total = 0
    for f in range(gpus, len(hist)):
        c = hist[f]
        if c:
            total += c * (f // gpus)
    return total


class Pool:
    """Nodes of one GPU class in one centre."""

    def __init__(self, center: CenterSpec, gpu_class: str) -> None:
        self.center = center
        self.gpu_class = gpu_class
        self.levels = len(center.topology_keys)
        self.nodes: dict[str, NodeState] = {}
        self.width = 1  # max allocatable seen: histogram size - 1
        self.hist: list[int] = [0, 0]
        self.buckets: list[list[tuple[tuple[str, ...], str]]] = [[], []]
        self.domains: list[dict[str, Domain]] = [{} for _ in range(self.levels)]
        self.version = 0  # bumped on every change to a node's free GPUs or placeability
        # Bumped whenever the pool may have gained room for some workload: a node's usage or
        # reservation dropped, or a node joined, left or changed (a change of shape). While it stays,
        # a workload that did not fit still does not, for the same reason (the incremental cycle).
        self.gains = 0
        self._indices: dict[tuple[int, int], LevelIndex] = {}  # (level, gpus) → index
        self._level_indices: list[list[LevelIndex]] = [[] for _ in range(self.levels)]
        self._biggest: int | None = None  # largest healthy node capacity; reset on add/remove
        self._whole: dict[tuple[int | None, int], int] = {}  # see whole_slots; reset likewise
        self._order: list[list[Domain]] | None = None  # domains per level by name; reset on add/remove
        self._potential: dict[tuple[int, int], int] = {}  # (level, gpus) → best domain potential
        self._sorted_nodes: list[NodeState] | None = None  # every node in topology order; reset on add/remove
        self.taint_sets: Counter[frozenset[Taint]] = Counter()  # hard taint sets of the nodes
        self.soft_tainted = 0  # nodes with a PreferNoSchedule taint
        self.common_taints: frozenset[Taint] = frozenset()  # hard taints every node carries
        self.shape_version = 0  # bumped when a node joins or leaves (labels, taints, allocatable)
        self.path_cache: dict[object, tuple[int, bool]] = {}  # constraints → (shape version, indexed path?)
        self.totals = PoolTotals()

    # -- membership -------------------------------------------------------------------------

    def placeable(self, ns: NodeState) -> bool:
        """Could take new work now (the fast index holds exactly these, when they have free GPUs)."""
        n = ns.node
        return (
            n.ready
            and n.schedulable
            and not self.center.maintenance
            and not ns.reserved
            and len(n.facts.taints) == len(self.common_taints)
        )

    def usable(self, ns: NodeState) -> bool:
        """Could take new work from a workload that tolerates its taints (the exact path's test)."""
        n = ns.node
        return n.ready and n.schedulable and not self.center.maintenance and not ns.reserved

    def _grow(self, width: int) -> None:
        if width <= self.width:
            return
        extra = width - self.width
        self.hist.extend([0] * extra)
        self.buckets.extend([] for _ in range(extra))
        for level in self.domains:
            for d in level.values():
                d.hist.extend([0] * extra)
        self.width = width

    def _index(self, ns: NodeState) -> None:
        f = ns.free
        if f <= 0 or not self.placeable(ns):
            ns.indexed_free = -1
            return
        if f > self.width:
            f = self.width
        ns.indexed_free = f
        self.hist[f] += 1
        heapq.heappush(self.buckets[f], (ns.sort_key, ns.name))
        for d, indices in zip(ns.doms, self._level_indices, strict=True):
            if d is not None:
                d.hist[f] += 1
                d._slots.clear()
                for idx in indices:
                    idx.dirty[d.name] = d

    def _unindex(self, ns: NodeState) -> None:
        f = ns.indexed_free
        if f < 0:
            return
        self.hist[f] -= 1
        for d, indices in zip(ns.doms, self._level_indices, strict=True):
            if d is not None:
                d.hist[f] -= 1
                d._slots.clear()
                for idx in indices:
                    idx.dirty[d.name] = d
        ns.indexed_free = -1  # the heap entry goes stale and is skipped lazily

    def _count_taints(self, ns: NodeState, delta: int) -> None:
        """Track taint sets; a change of the common taints re-indexes the pool (rare)."""
        key = frozenset(ns.node.facts.taints)
        self.taint_sets[key] += delta
        if not self.taint_sets[key]:
            del self.taint_sets[key]
        self.soft_tainted += delta if ns.node.facts.soft_taints else 0
        common = frozenset.intersection(*self.taint_sets) if self.taint_sets else frozenset()
        if common != self.common_taints:
            self.common_taints = common
            for other in self.nodes.values():
                if other is not ns:
                    self._unindex(other)
                    self._index(other)

    def add(self, ns: NodeState) -> None:
        self._grow(max(ns.node.allocatable, ns.node.capacity))
        self.nodes[ns.name] = ns
        self.totals.count(ns, +1)
        self._count_taints(ns, +1)
        doms: list[Domain | None] = []
        for lvl, dom in enumerate(ns.domains):
            if dom is None:
                doms.append(None)
                continue
            d = self.domains[lvl].get(dom)
            if d is None:
                d = self.domains[lvl][dom] = Domain(dom, [0] * (self.width + 1))
            d.members.append(ns)
            d._sorted = False
            doms.append(d)
        ns.doms = tuple(doms)
        ns.pool = self
        self._index(ns)
        self.version += 1
        self._shape_changed()

    def _shape_changed(self) -> None:
        self.shape_version += 1
        self.gains += 1
        self._indices.clear()
        self._level_indices = [[] for _ in range(self.levels)]
        self._biggest = None
        self._whole.clear()
        self._order = None
        self._potential.clear()
        self._sorted_nodes = None

    def remove(self, name: str) -> NodeState | None:
        ns = self.nodes.pop(name, None)
        if ns is None:
            return None
        self._unindex(ns)
        self.totals.count(ns, -1)
        self._count_taints(ns, -1)
        for lvl, dom in enumerate(ns.domains):
            if dom is None:
                continue
            d = self.domains[lvl][dom]
            d.members.remove(ns)
            if not d.members:
                del self.domains[lvl][dom]
        self.version += 1
        self._shape_changed()
        return ns

    def update(self, ns: NodeState, *, used_delta: int = 0, reserved: bool | None = None) -> None:
        """The one way node usage or reservation changes; keeps every index in step."""
        self._unindex(ns)
        if used_delta < 0 or (reserved is False and ns.reserved):
            self.gains += 1
        ns.used += used_delta
        self.totals.used += used_delta
        if reserved is not None:
            ns.reserved = reserved
        self._index(ns)
        self.version += 1

    def reindex_all(self) -> None:
        """Recompute placeability of every node (e.g. after maintenance changed)."""
        for ns in self.nodes.values():
            self._unindex(ns)
            self._index(ns)
        self.version += 1
        self._shape_changed()

    def ordered_nodes(self) -> list[NodeState]:
        """Every node of the pool in topology order."""
        if self._sorted_nodes is None:
            self._sorted_nodes = sorted(self.nodes.values(), key=lambda s: s.sort_key)
        return self._sorted_nodes

    def ordered_domains(self, level: int) -> list[Domain]:
        if self._order is None:
            self._order = [[lv[k] for k in sorted(lv)] for lv in self.domains]
        return self._order[level]

    def level_potential(self, level: int, gpus: int) -> int:
        """The most slots any one domain of ``level`` could ever offer (all our work finished)."""
        key = (level, gpus)
        if key not in self._potential:
            self._potential[key] = max((d.potential(gpus) for d in self.ordered_domains(level)), default=0)
        return self._potential[key]

    # -- queries ----------------------------------------------------------------------------

    def slots(self, gpus: int) -> int:
        return slots_of(self.hist, gpus)

    def whole_slots(self, level: int | None, gpus: int) -> int:
        """The most ``gpus``-slots one domain of ``level`` (None: the whole pool) would have with
        every node empty and every GPU healthy: more replicas than this can never fit."""
        got = self._whole.get((level, gpus))
        if got is None:
            per: dict[str | None, int] = {}
            for ns in self.nodes.values():
                d = None if level is None else ns.domains[level]
                if level is None or d is not None:
                    per[d] = per.get(d, 0) + max(ns.node.allocatable, ns.node.capacity) // gpus
            got = self._whole[(level, gpus)] = max(per.values(), default=0)
        return got

    def biggest_node(self) -> int:
        """The most healthy GPUs any one node of the pool has."""
        if self._biggest is None:
            self._biggest = max((ns.healthy_capacity for ns in self.nodes.values()), default=0)
        return self._biggest

    def free_gpus(self) -> int:
        return sum(f * c for f, c in enumerate(self.hist))

    def level_index(self, level: int, gpus: int) -> LevelIndex:
        idx = self._indices.get((level, gpus))
        if idx is None:
            idx = self._indices[(level, gpus)] = LevelIndex(self.ordered_domains(level), gpus)
            self._level_indices[level].append(idx)
        return idx

    def max_domain_slots(self, level: int, gpus: int) -> int:
        """Largest number of free ``gpus``-slots in any one domain of ``level``."""
        return self.level_index(level, gpus).max_slots()

    def peek_bucket(self, f: int) -> NodeState | None:
        """The first node (by topology order) indexed with exactly ``f`` free GPUs."""
        heap = self.buckets[f]
        while heap:
            _, name = heap[0]
            ns = self.nodes.get(name)
            if ns is not None and ns.indexed_free == f:
                return ns
            heapq.heappop(heap)
        return None

    def compact(self) -> None:
        """Drop stale heap entries when they pile up (amortised, keeps memory bounded)."""
        for f, heap in enumerate(self.buckets):
            if len(heap) > 2 * self.hist[f] + 64:
                live = [(ns.sort_key, ns.name) for ns in self.nodes.values() if ns.indexed_free == f]
                heapq.heapify(live)
                self.buckets[f] = live


class Inventory:
    """Every node of every centre, grouped into pools.

    GPU holdings are kept per node *name*, apart from the nodes themselves, so that nodes, centres
    and workloads can arrive in any order (as they do when the shell rebuilds after a restart).
    """

    def __init__(self) -> None:
        self.centers: dict[str, CenterSpec] = {}
        self.pools: dict[tuple[str, str], Pool] = {}
        self.nodes: dict[str, NodeState] = {}
        self.holdings: dict[str, dict[str, int]] = {}  # node name → workload key → GPUs
        self.requests: dict[str, tuple[int, Resources]] = {}  # workload key → (GPUs, non-GPU) a replica
        self._known: dict[str, Node] = {}  # every node the shell told us of, attached or not
        self.layout = 0  # bumped when a pool is created or removed

    def pool(self, center: str, gpu_class: str) -> Pool | None:
        return self.pools.get((center, gpu_class))

    def pools_of(self, center: str) -> Iterator[Pool]:
        for (c, _), p in sorted(self.pools.items()):
            if c == center:
                yield p

    def set_center(self, spec: CenterSpec) -> None:
        old = self.centers.get(spec.name)
        self.centers[spec.name] = spec
        if old is not None and old.topology_keys == spec.topology_keys:
            for p in self.pools_of(spec.name):
                p.center = spec
                p.reindex_all()
            return
        # New centre or new topology keys: (re)attach its nodes.
        for n in self._known.values():
            if n.center == spec.name:
                self._detach(n.name)
                self._attach(n)

    def remove_center(self, name: str) -> None:
        self.centers.pop(name, None)
        for n in self._known.values():
            if n.center == name:
                self._detach(n.name)

    def _attach(self, node: Node) -> NodeState | None:
        spec = self.centers.get(node.center)
        if spec is None:
            return None
        domains = tuple(node.topology.get(k) for k in spec.topology_keys)
        sort_key = (*(d or "" for d in reversed(domains)), node.name)
        held = self.holdings.setdefault(node.name, {})
        used_res: dict[str, int] = {}
        for key, gpus in held.items():
            per, req = self.requests.get(key, (0, ()))
            for r, amount in req:
                used_res[r] = used_res.get(r, 0) + amount * (gpus // per if per else 1)
        ns = NodeState(node, sort_key, domains, used=sum(held.values()), workloads=held, used_res=used_res)
        key = (node.center, node.gpu_class)
        p = self.pools.get(key)
        if p is None:
            p = self.pools[key] = Pool(spec, node.gpu_class)
            self.layout += 1
        p.add(ns)
        self.nodes[node.name] = ns
        return ns

    def _detach(self, name: str) -> NodeState | None:
        ns = self.nodes.pop(name, None)
        if ns is None:
            return None
        key = (ns.node.center, ns.node.gpu_class)
        p = self.pools[key]
        p.remove(name)
        if not p.nodes:
            del self.pools[key]
            self.layout += 1
        return ns

    def set_node(self, node: Node) -> NodeState | None:
        """Add or replace a node; GPUs already held on it stay held."""
        self._detach(node.name)
        self._known[node.name] = node
        return self._attach(node)

    def known(self, name: str) -> bool:
        """Whether the shell reported this node (managed by a centre or not)."""
        return name in self._known

    def remove_node(self, name: str) -> None:
        self._known.pop(name, None)
        self._detach(name)

    def pool_of(self, ns: NodeState) -> Pool:
        return self.pools[(ns.node.center, ns.node.gpu_class)]

    def _change(self, node: str, key: str, delta: int, requests: Resources) -> None:
        held = self.holdings.setdefault(node, {})
        left = held.get(key, 0) + delta
        if left > 0:
            held[key] = left
        else:
            held.pop(key, None)
        if not held and node not in self._known:
            del self.holdings[node]
        ns = self.nodes.get(node)
        if ns is not None:
            if requests:
                sign = 1 if delta > 0 else -1
                for r, amount in requests:
                    ns.used_res[r] = ns.used_res.get(r, 0) + sign * amount
            ns.pool.update(ns, used_delta=delta)

    def hold(self, key: str, nodes: tuple[str, ...], gpus_per_replica: int, requests: Resources = ()) -> None:
        """Charge a workload's GPUs (and per-replica non-GPU requests) to its nodes, seen or not."""
        self.requests[key] = (gpus_per_replica, requests)
        for name in nodes:
            self._change(name, key, gpus_per_replica, requests)

    def release(self, key: str, nodes: tuple[str, ...], gpus_per_replica: int) -> None:
        _, requests = self.requests.pop(key, (0, ()))
        for name in nodes:
            if key in self.holdings.get(name, {}):
                self._change(name, key, -gpus_per_replica, requests)
