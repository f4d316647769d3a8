"""The scheduling cycle: state in, decisions out.

The shell feeds the ``Scheduler`` with centres, quotas, nodes and workloads as the cluster changes,
then calls ``cycle(now)``. A cycle:

1. evicts workloads from nodes that are gone, NotReady past the centre's grace period, or have held
   more GPUs than are healthy for longer than the centre's unhealthy grace (lowest priority first;
   pods that are draining away never count); a node that left its centre keeps its work;
2. walks the pending queue in order — priority, then weighted dominant share of the quota (lowest
   first), then FIFO — and admits what fits the quota ledger and a placement;
3. when a workload does not fit, tries preemption (reclaim of lent GPUs when its quota is under
   its guarantee, or lower-priority work of its own quota, per the quota's policy);
4. otherwise leaves it pending with a plain-language reason, and lets smaller work behind it
   backfill — except that a workload pending longer than ``starvation_s`` reserves the nodes it
   needs (they take no new work this cycle), so big gangs are not starved by a stream of small jobs.

Every decision is assumed in the state at once; the shell calls ``forget`` when it fails to apply
an admission. Given the same state and ``now``, a cycle makes the same decisions.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from dataclasses import dataclass

from . import placement
from .inventory import Inventory, NodeState, Pool
from .ledger import QuotaLedger, fmt
from .model import (
    Admit,
    CenterSpec,
    CycleResult,
    Evict,
    Node,
    Pending,
    Preempt,
    QuotaSpec,
    ReclaimLent,
    WithinQuota,
    Workload,
)


@dataclass(frozen=True)
class SchedulerConfig:
    starvation_s: float = 300.0  # pending this long → the workload reserves nodes
    max_preemption_attempts: int = 64  # per cycle
    max_victim_candidates: int = 512  # per attempt


@dataclass
class _Outcome:
    admit: Admit | None = None
    reason: str = ""
    message: str = ""
    cls: str | None = None
    pool: Pool | None = None
    quota_blocked: bool = False  # the ledger said no (vs. no room on nodes)
    never: bool = False
    deferred: bool = False  # would borrow: retried after every non-borrowing workload


class Scheduler:
    """Holds the scheduling state and makes decisions. Not thread-safe: one loop owns it."""

    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self.config = config or SchedulerConfig()
        self.inventory = Inventory()
        self.ledger = QuotaLedger()
        self.workloads: dict[str, Workload] = {}
        self.running: dict[str, dict[str, Workload]] = defaultdict(dict)  # quota → key → workload
        # (quota, class) → priority → running preemptible workloads: lets a preemption attempt see
        # at once that its quota has no lower-priority work, without scanning all it runs.
        self._priorities: dict[tuple[str, str], Counter[int]] = defaultdict(Counter)
        self._suspect: set[str] = set()  # nodes that may need evictions
        self._over_since: dict[str, float] = {}  # node → when it first held more GPUs than healthy
        self._admitted_now: set[str] = set()  # admitted this cycle: not preemption victims yet
        # Placement misses this cycle: (pool, GPUs per replica, replicas, topology key, mode) →
        # (pool version, miss). A pool's version changes with any change to it, so a hit is exactly
        # what feasible_level and explain would say again; a saturated queue asks this many times.
        self._misses: dict[tuple, tuple[int, placement.Miss]] = {}

    # -- state feed -------------------------------------------------------------------------

    def set_center(self, spec: CenterSpec) -> None:
        self.inventory.set_center(spec)

    def remove_center(self, name: str) -> None:
        self.inventory.remove_center(name)

    def set_quota(self, spec: QuotaSpec) -> None:
        self.ledger.set_quota(spec)

    def remove_quota(self, name: str) -> None:
        self.ledger.remove_quota(name)

    def set_node(self, node: Node) -> None:
        self.inventory.set_node(node)
        self._suspect.add(node.name)

    def remove_node(self, name: str) -> None:
        self.inventory.remove_node(name)
        self._suspect.add(name)

    def add_workload(self, w: Workload) -> None:
        """Add or replace a workload; one with a placement holds its GPUs from now on."""
        self.remove_workload(w.key)
        self.workloads[w.key] = w
        if w.placement is not None:
            cls = w.placed_class or w.gpu_class
            if cls is None:
                raise ValueError(f"running workload {w.key} needs placed_class")
            w.placed_class = cls
            self._hold(w)

    def remove_workload(self, key: str) -> Workload | None:
        w = self.workloads.pop(key, None)
        if w is not None and w.placement is not None:
            self._release(w)
        return w

    def forget(self, key: str) -> None:
        """Undo an admission the shell could not apply: the workload is pending again."""
        w = self.workloads.get(key)
        if w is not None and w.placement is not None:
            self._release(w)
            w.placement = None
            w.placed_class = None

    def _hold(self, w: Workload) -> None:
        assert w.placement is not None and w.placed_class is not None
        self.inventory.hold(w.key, w.placement, w.gpus_per_replica, w.constraints.requests)
        self.ledger.charge(w.quota, w.placed_class, w.gpus)
        self.running[w.quota][w.key] = w
        if w.preemptible:
            self._priorities[(w.quota, w.placed_class)][w.priority] += 1
        for n in set(w.placement):
            self._suspect.add(n)

    def _release(self, w: Workload) -> None:
        assert w.placement is not None and w.placed_class is not None
        self.inventory.release(w.key, w.placement, w.gpus_per_replica)
        self.ledger.charge(w.quota, w.placed_class, -w.gpus)
        self.running[w.quota].pop(w.key, None)
        if w.preemptible:
            counts = self._priorities[(w.quota, w.placed_class)]
            counts[w.priority] -= 1
            if not counts[w.priority]:
                del counts[w.priority]

    def _requeue(self, w: Workload) -> None:
        self._release(w)
        w.placement = None
        w.placed_class = None
        w.started = None

    # -- the cycle --------------------------------------------------------------------------

    def cycle(self, now: float) -> CycleResult:
        res = CycleResult()
        stopped: set[str] = set()  # evicted or preempted this cycle: back in the queue next cycle
        self._evict_unhealthy(now, res, stopped)
        self._reserved: list[NodeState] = []
        self._reserved_pools: set[tuple[str, str]] = set()
        self._preempt_budget = self.config.max_preemption_attempts
        self._admitted_now = set()
        self._misses = {}
        try:
            # Pass 1 admits what fits within guarantees; work that must borrow waits for pass 2, so
            # nothing borrows GPUs that an owner later in the same queue is entitled to.
            deferred = [
                w for w in self._ordered_pending(stopped) if not self._process(w, now, res, stopped, False)
            ]
            for w in deferred:
                self._process(w, now, res, stopped, True)
        finally:
            for ns in self._reserved:
                self.inventory.pool_of(ns).update(ns, reserved=False)
            for p in self.inventory.pools.values():
                p.compact()
        return res

    def _process(
        self, w: Workload, now: float, res: CycleResult, stopped: set[str], allow_borrow: bool
    ) -> bool:
        """Admit, preempt for, or leave pending one workload; False when deferred to pass 2."""
        out = self._try_admit(w, allow_borrow)
        if out.deferred:
            return False
        if out.admit is not None:
            res.admitted.append(out.admit)
            return True
        if not out.never and out.cls is not None and out.pool is not None and self._preempt_budget > 0:
            self._preempt_budget -= 1
            plan = self._preempt_for(w, out.cls, out.pool, res, stopped)
            if plan is not None:
                res.admitted.append(plan)
                return True
        if (
            not out.quota_blocked
            and not out.never
            and out.pool is not None
            and now - w.created >= self.config.starvation_s
        ):
            pkey = (out.pool.center.name, out.pool.gpu_class)
            if pkey not in self._reserved_pools:
                self._reserved_pools.add(pkey)
                held = placement.reservation(out.pool, w)
                for ns in held:
                    out.pool.update(ns, reserved=True)
                self._reserved.extend(held)
                if held:
                    out.message += f"; {len(held)} nodes reserved for it so that they drain"
        res.pending.append(Pending(w.key, out.reason, out.message))
        return True

    def _ordered_pending(self, skip: set[str]):
        """Pending workloads by priority, then quota fair share (updated as we admit), then FIFO."""
        per_quota: dict[str, list[Workload]] = defaultdict(list)
        for w in self.workloads.values():
            if w.placement is None and w.key not in skip:
                per_quota[w.quota].append(w)
        heads: list[tuple] = []
        cursor: dict[str, int] = {}
        for q, lst in per_quota.items():
            lst.sort(key=lambda w: (-w.priority, w.created, w.key))
            cursor[q] = 0
            h = lst[0]
            heapq.heappush(heads, (-h.priority, self.ledger.dominant_share(q), h.created, h.key, q))
        while heads:
            *_, q = heapq.heappop(heads)
            lst = per_quota[q]
            i = cursor[q]
            yield lst[i]
            cursor[q] = i + 1
            if i + 1 < len(lst):
                h = lst[i + 1]
                heapq.heappush(heads, (-h.priority, self.ledger.dominant_share(q), h.created, h.key, q))

    def _try_admit(self, w: Workload, allow_borrow: bool = True) -> _Outcome:
        spec = self.ledger.specs.get(w.quota)
        if spec is None:
            return _Outcome(reason="QuotaNotFound", message=f"quota {w.quota} does not exist", never=True)
        center = self.inventory.centers.get(spec.center)
        if center is None:
            return _Outcome(
                reason="CenterNotFound",
                message=f"centre {spec.center} of quota {spec.name} does not exist",
                never=True,
            )
        classes = [w.gpu_class] if w.gpu_class else spec.classes()
        first: _Outcome | None = None
        for cls in classes:
            out = self._try_class(w, spec, center, cls, allow_borrow)
            if out.admit is not None or out.deferred:
                return out
            if first is None:
                first = out
        return first or _Outcome(
            reason="NoGPUClass", message=f"quota {spec.name} lists no GPU class", never=True
        )

    def _try_class(
        self, w: Workload, spec: QuotaSpec, center: CenterSpec, cls: str, allow_borrow: bool = True
    ) -> _Outcome:
        pool = self.inventory.pool(center.name, cls)
        if pool is None:
            return _Outcome(
                reason="NoSuchGPUClass",
                message=f"centre {center.name} has no {cls} GPUs",
                cls=cls,
                never=True,
            )
        # Pass 1 only handles work within its quota's guarantee: anything else — admitted, or admitted
        # through preemption — would borrow, and waits for pass 2.
        if not allow_borrow and not self.ledger.within_guarantee(spec.name, cls, w.gpus):
            return _Outcome(deferred=True)
        reason = self.ledger.check(spec.name, cls, w.gpus)
        if reason is not None:
            return _Outcome(reason="QuotaExceeded", message=reason, cls=cls, pool=pool, quota_blocked=True)
        shape = (pool, w.gpus_per_replica, w.replicas, w.topology_key, w.topology_mode, w.constraints)
        seen = self._misses.get(shape)
        if seen is not None and seen[0] == pool.version:
            miss = seen[1]
            return _Outcome(reason=miss.reason, message=miss.message, cls=cls, pool=pool, never=miss.never)
        nodes = placement.find(pool, w)
        if nodes is None:
            miss = placement.explain(pool, w)
            self._misses[shape] = (pool.version, miss)
            return _Outcome(reason=miss.reason, message=miss.message, cls=cls, pool=pool, never=miss.never)
        return _Outcome(admit=self._commit(w, spec, pool, nodes))

    def _commit(
        self, w: Workload, spec: QuotaSpec, pool: Pool, nodes: tuple[str, ...], after: tuple[str, ...] = ()
    ) -> Admit:
        borrowed = self.ledger.borrowed_by(spec.name, pool.gpu_class, w.gpus)
        w.placement = nodes
        w.placed_class = pool.gpu_class
        self._hold(w)
        self._admitted_now.add(w.key)
        return Admit(w.key, pool.gpu_class, nodes, borrowed, after)

    # -- preemption -------------------------------------------------------------------------

    def _victim_candidates(self, w: Workload, spec: QuotaSpec, cls: str) -> list[tuple[Workload, bool]]:
        """(victim, is_reclaim) pairs, cheapest first: lowest priority, then fewest GPUs, then youngest.

        Work admitted earlier in this cycle is not a candidate: its admission is a decision already
        made (the shell has not even started it); a preemptor that needs it tries again next cycle.
        """
        out: list[tuple[Workload, bool]] = []
        fresh = self._admitted_now
        if spec.within_quota == WithinQuota.LOWER_PRIORITY and any(
            p < w.priority for p in self._priorities.get((spec.name, cls), ())
        ):
            for v in self.running[spec.name].values():
                if v.preemptible and v.placed_class == cls and v.priority < w.priority and v.key not in fresh:
                    out.append((v, False))
        if spec.reclaim_lent != ReclaimLent.NEVER and self.ledger.within_guarantee(spec.name, cls, w.gpus):
            cohort = self.ledger.cohort_id(spec)
            for q, qspec in self.ledger.specs.items():
                if (
                    q == spec.name
                    or qspec.center != spec.center
                    or self.ledger.cohort_id(qspec) != cohort
                    or not self.ledger.is_borrowing(q, cls)
                ):
                    continue
                for v in self.running[q].values():
                    if (
                        v.preemptible
                        and v.placed_class == cls
                        and (spec.reclaim_lent == ReclaimLent.ANY or v.priority < w.priority)
                        and v.key not in fresh
                    ):
                        out.append((v, True))
        out.sort(key=lambda p: (p[0].priority, p[0].gpus, -(p[0].started or 0.0), p[0].key))
        return out[: self.config.max_victim_candidates]

    def _worth_trying(
        self, w: Workload, spec: QuotaSpec, pool: Pool, cands: list[tuple[Workload, bool]]
    ) -> bool:
        """Cheap bounds: could even all candidates together make room?"""
        cls = pool.gpu_class
        own = sum(v.gpus for v, is_reclaim in cands if not is_reclaim)
        u = self.ledger.usage[spec.name].get(cls)
        if u is None or u.used - own + w.gpus > u.limit:
            return False
        freeable = sum(v.gpus for v, _ in cands)
        return pool.free_gpus() + freeable >= w.gpus

    def _fits(self, w: Workload, spec: QuotaSpec, pool: Pool) -> bool:
        return self.ledger.check(spec.name, pool.gpu_class, w.gpus) is None and placement.fits(pool, w)

    def _preempt_for(
        self, w: Workload, cls: str, pool: Pool, res: CycleResult, stopped: set[str]
    ) -> Admit | None:
        """Free GPUs for ``w`` with the cheapest set of victims, or change nothing."""
        spec = self.ledger.specs[w.quota]
        candidates = self._victim_candidates(w, spec, cls)
        if not candidates or not self._worth_trying(w, spec, pool, candidates):
            return None
        victims: list[tuple[Workload, bool]] = []
        ok = False
        for v, is_reclaim in candidates:
            if is_reclaim and not self.ledger.is_borrowing(v.quota, cls):
                continue  # that quota is back within its guarantee: leave it alone
            victims.append((v, is_reclaim))
            self._release(v)
            ok = self._fits(w, spec, pool)
            if ok:
                break
        if not ok:
            for v, _ in victims:
                self._hold(v)
            return None
        # Minimise: give back every victim the plan does not need, most expensive first.
        kept: list[tuple[Workload, bool]] = []
        for item in reversed(victims):
            self._hold(item[0])
            if not self._fits(w, spec, pool):
                self._release(item[0])
                kept.append(item)
        nodes = placement.find(pool, w)
        assert nodes is not None
        for v, is_reclaim in kept:
            v.placement = None
            v.placed_class = None
            v.started = None
            stopped.add(v.key)
            if is_reclaim:
                msg = (
                    f"preempted: quota {spec.name} reclaimed {fmt(v.gpus)} {cls} it lent to quota "
                    f"{v.quota}, for job {w.key}"
                )
                res.preempted.append(Preempt(v.key, w.key, "Reclaimed", msg))
            else:
                msg = (
                    f"preempted by higher-priority job {w.key} ({w.priority} > {v.priority}) "
                    f"in quota {spec.name}"
                )
                res.preempted.append(Preempt(v.key, w.key, "PreemptedByPriority", msg))
        return self._commit(w, spec, pool, nodes, after=tuple(sorted(v.key for v, _ in kept)))

    # -- health -----------------------------------------------------------------------------

    def _evict_unhealthy(self, now: float, res: CycleResult, stopped: set[str]) -> None:
        for name in sorted(self._suspect):
            held = dict(self.inventory.holdings.get(name, {}))
            ns = self.inventory.nodes.get(name)
            if not held:
                self._suspect.discard(name)
                self._over_since.pop(name, None)
                continue
            victims: list[tuple[str, str, str]] = []
            if ns is None:
                if self.inventory.known(name):
                    self._suspect.discard(name)
                    continue  # unmanaged (left its centre, or the centre is unknown): work keeps running
                victims = [(k, "NodeGone", f"node {name} was removed") for k in sorted(held)]
            elif not ns.node.ready:
                since = ns.node.not_ready_since
                grace = self.inventory.centers[ns.node.center].not_ready_grace_s
                if since is not None and now - since >= grace:
                    victims = [
                        (k, "NodeNotReady", f"node {name} has been NotReady for {now - since:.0f}s")
                        for k in sorted(held)
                    ]
                else:
                    continue  # within grace: check again next cycle
            elif ns.over > 0:
                since = self._over_since.setdefault(name, now)
                grace = self.inventory.centers[ns.node.center].unhealthy_grace_s
                if now - since < grace:
                    continue  # a device plugin or kubelet restart shows 0 for a moment: look again
                over = ns.over
                order = sorted(
                    (self.workloads[k] for k in held if k in self.workloads),
                    key=lambda w: (w.priority, -(w.started or 0.0), w.key),
                )
                for w in order:
                    if over <= 0:
                        break
                    victims.append(
                        (
                            w.key,
                            "GPUUnhealthy",
                            f"node {name} has {ns.node.allocatable} healthy of {ns.node.capacity} GPUs, "
                            f"fewer than in use" + (f", for {now - since:.0f}s" if grace else ""),
                        )
                    )
                    over -= held[w.key]
            self._over_since.pop(name, None)
            for key, reason, msg in victims:
                w = self.workloads.get(key)
                if w is None or w.placement is None or key in stopped:
                    continue
                self._requeue(w)
                stopped.add(key)
                res.evicted.append(Evict(key, reason, msg))
            self._suspect.discard(name)

    # -- summaries for status ---------------------------------------------------------------

    def pending_count(self) -> int:
        return sum(1 for w in self.workloads.values() if w.placement is None)
