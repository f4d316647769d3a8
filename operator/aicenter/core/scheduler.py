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

By default cycles are incremental: the queue is kept in order as workloads come and go, and a
pending workload whose group's last answer still holds takes it without being examined again (see
"incremental cycles" below and docs/scheduling.md); ``SchedulerConfig(incremental=False)`` examines
every pending workload in full every cycle, with the same decisions.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import Counter, defaultdict
from dataclasses import dataclass

from . import placement
from .inventory import Inventory, NodeState, Pool
from .ledger import NEVER_KINDS, QuotaLedger, fmt
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
    # Re-examine a pending workload only when something its last answer depended on changed (see
    # docs/scheduling.md, "Incremental cycles"); False re-checks every pending workload in full. Both
    # make the same admissions, preemptions and evictions, and give every pending workload the same
    # reason; a skipped workload's message may carry the numbers of its last examination.
    incremental: bool = True


@dataclass
class _Outcome:
    admit: Admit | None = None
    reason: str = ""
    message: str = ""
    cls: str | None = None
    pool: Pool | None = None
    quota_blocked: bool = False  # the ledger said no (vs. no room on nodes)
    never: bool = False
    refusal: str | None = None  # the quota's refusal kind (QuotaLedger.refusal_kind), when it said no
    deferred: bool = False  # would borrow: retried after every non-borrowing workload
    # What fixes the message's wording when only its numbers vary (incremental cycles): the reason and
    # pool of a lack of room answered from the pool's indices, or the quota, class, request and kind
    # of a quota's refusal (with the cycle epoch: specs the wording names may change)
    template: tuple | None = None


class _Queued:
    """A pending workload in the kept queue, with what a cycle's walk reads of it: its group, and the
    Pending it was last given with the template of its message."""

    __slots__ = ("created", "group", "k", "key", "pending", "template", "w")

    def __init__(self, w: Workload, k: tuple, group: _Group) -> None:
        self.w = w
        self.key = w.key
        self.created = w.created
        self.k = k  # (-priority, created, key): its place in its quota's queue
        self.group = group
        self.pending: Pending | None = None
        self.template: tuple | None = None


class _QuotaQueue:
    """One quota's pending workloads in queue order: priority (highest first), creation, key."""

    __slots__ = ("items", "keys")

    def __init__(self) -> None:
        self.keys: list[tuple] = []  # (-priority, created, key), sorted
        self.items: list[_Queued] = []  # in the same order

    def add(self, k: tuple, e: _Queued) -> None:
        i = bisect.bisect_left(self.keys, k)
        self.keys.insert(i, k)
        self.items.insert(i, e)

    def remove(self, k: tuple) -> None:
        i = bisect.bisect_left(self.keys, k)
        if i < len(self.keys) and self.keys[i] == k:
            del self.keys[i]
            del self.items[i]


class _Group:
    """Pending workloads that ask the same of the same quota: quota, class, shape, topology and
    constraints (everything ``_try_admit`` looks at). ``memo[allow_borrow]`` is the last answer that
    was not an admission: [cycle epoch, what it depended on, the outcome, the count of changes when
    it was last found to hold, whether it may try preemption, whether it may reserve nodes, whether
    it defers to pass 2, its pool, the template of its message]."""

    __slots__ = ("key", "members", "memo")

    def __init__(self, key: tuple) -> None:
        self.key = key
        self.members = 0
        self.memo: list[list | None] = [None, None]


_DEFERRED, _REFUSED, _NO_ROOM = 0, 1, 2
# Reasons whose indexed message (placement.explain) differs from another of the same workload and
# pool in its numbers only.
_NUMBERS_ONLY = frozenset({"InsufficientGPUs", "NoTopologyDomain"})


def _still_holds(deps: tuple[tuple, ...]) -> bool:
    """Whether a remembered answer still holds (see ``Scheduler._remembered``)."""
    for d in deps:
        kind = d[0]
        if kind == _NO_ROOM:
            _, u, cohort, pool, exact, token, gpus, bound = d
            if (
                (pool.version if exact else pool.gains) != token
                or u.used + gpus > bound
                or cohort[1] + gpus > cohort[0]
            ):
                return False
        elif kind == _REFUSED:
            _, u, cohort, used, cohort_used = d
            if u is not None and (u.used != used or cohort[1] != cohort_used):
                return False
        else:  # _DEFERRED
            _, u, gpus = d
            if u is not None and u.used + gpus <= u.guaranteed:
                return False
    return True


def _remembered_pending(e: _Queued, m: list) -> Pending:
    """The Pending of queue entry ``e`` from its group's remembered answer ``m``: the one it had while
    the answer's template (reason and wording) is the same, so only numbers may lag."""
    p = e.pending
    t = m[8]
    if p is None or (
        (t is None or e.template is not t) and (p.message != m[2].message or p.reason != m[2].reason)
    ):
        p = e.pending = Pending(e.key, m[2].reason, m[2].message)
        e.template = t
    return p


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
        # The queue, kept as workloads come and go: quota → its pending workloads in queue order.
        self._queue: dict[str, _QuotaQueue] = {}
        self._queued: dict[str, _Queued] = {}  # every pending workload's entry in the queue
        # Pending workloads that ask the same of the same quota share a group, and the group keeps
        # its last answer with what it depended on (incremental cycles).
        self._groups: dict[tuple, _Group] = {}
        # A queued workload's entry keeps the Pending it was last given and the template of its message:
        # it is given again while the answer has the same reason and message — or, in incremental
        # cycles, the same template (a lack of room or a quota's refusal whose numbers moved: the
        # workload keeps the numbers it had when it got that answer; the shell writes a status only
        # when a reason changes). A saturated queue would otherwise get thousands of new messages
        # every cycle.
        self._templates: dict[tuple, tuple] = {}  # interned templates: compared by identity
        self._epoch = 0  # bumped when a centre or quota changes
        self._cycle_epoch = -1
        # Bumped by every change a remembered answer may depend on (usage, nodes, centres, quotas,
        # reservations): an answer checked at the current count needs no checking again.
        self._changes = 0
        # Failed preemption attempts this cycle: (group, priority, class) → (pool version, cohort
        # changes) after the attempt; the same attempt in the same state fails the same way.
        self._preempt_fails: dict[tuple, tuple[int, int]] = {}
        # The last cycle's pending answers worked out in full, and those taken from a group's memory.
        self.examined = 0
        self.remembered = 0

    # -- state feed -------------------------------------------------------------------------

    def set_center(self, spec: CenterSpec) -> None:
        self._epoch += 1
        self._changes += 1
        self.inventory.set_center(spec)

    def remove_center(self, name: str) -> None:
        self._epoch += 1
        self._changes += 1
        self.inventory.remove_center(name)

    def set_quota(self, spec: QuotaSpec) -> None:
        self._epoch += 1
        self._changes += 1
        self.ledger.set_quota(spec)

    def remove_quota(self, name: str) -> None:
        self._epoch += 1
        self._changes += 1
        self.ledger.remove_quota(name)

    def set_node(self, node: Node) -> None:
        self._changes += 1
        self.inventory.set_node(node)
        self._suspect.add(node.name)

    def remove_node(self, name: str) -> None:
        self._changes += 1
        self.inventory.remove_node(name)
        self._suspect.add(name)

    def add_workload(self, w: Workload) -> None:
        """Add or replace a workload; one with a placement holds its GPUs from now on."""
        self.remove_workload(w.key)
        self.workloads[w.key] = w
        if w.placement is None:
            self._enqueue(w)
            return
        cls = w.placed_class or w.gpu_class
        if cls is None:
            raise ValueError(f"running workload {w.key} needs placed_class")
        w.placed_class = cls
        self._hold(w)

    def remove_workload(self, key: str) -> Workload | None:
        w = self.workloads.pop(key, None)
        if w is not None:
            if w.placement is not None:
                self._release(w)
            self._dequeue(key)
        return w

    def forget(self, key: str) -> None:
        """Undo an admission the shell could not apply: the workload is pending again."""
        w = self.workloads.get(key)
        if w is not None and w.placement is not None:
            self._release(w)
            w.placement = None
            w.placed_class = None
            self._enqueue(w)

    # -- the queue --------------------------------------------------------------------------
    #
    # Pending workloads are kept per quota in queue order (priority, then FIFO) as they come and go,
    # so that a cycle merges the quotas' queues without sorting them. A workload is replaced with
    # add_workload, never changed in place while the scheduler holds it.

    def _enqueue(self, w: Workload) -> None:
        k = (-w.priority, w.created, w.key)
        gk = (
            w.quota,
            w.gpu_class,
            w.gpus_per_replica,
            w.replicas,
            w.topology_key,
            w.topology_mode,
            w.constraints,
        )
        g = self._groups.get(gk)
        if g is None:
            g = self._groups[gk] = _Group(gk)
        g.members += 1
        e = self._queued[w.key] = _Queued(w, k, g)
        q = self._queue.get(w.quota)
        if q is None:
            q = self._queue[w.quota] = _QuotaQueue()
        q.add(k, e)

    def _dequeue(self, key: str) -> None:
        e = self._queued.pop(key, None)
        if e is None:
            return
        quota = e.group.key[0]
        q = self._queue[quota]
        q.remove(e.k)
        if not q.items:
            del self._queue[quota]
        g = e.group
        g.members -= 1
        if not g.members:
            del self._groups[g.key]

    def _hold(self, w: Workload) -> None:
        assert w.placement is not None and w.placed_class is not None
        self._changes += 1
        self.inventory.hold(w.key, w.placement, w.gpus_per_replica, w.constraints.requests)
        self.ledger.charge(w.quota, w.placed_class, w.gpus)
        self.running[w.quota][w.key] = w
        if w.preemptible:
            self._priorities[(w.quota, w.placed_class)][w.priority] += 1
        for n in set(w.placement):
            self._suspect.add(n)

    def _release(self, w: Workload) -> None:
        assert w.placement is not None and w.placed_class is not None
        self._changes += 1
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
        self._reserved_pools: set[Pool] = set()  # pools where a starving workload reserved nodes
        self._preempt_budget = self.config.max_preemption_attempts
        self._admitted_now = set()
        self._misses = {}
        self._preempt_fails = {}
        self._incremental = self.config.incremental
        self.examined = self.remembered = 0
        # Every counter here only grows, so their sum changes exactly when one of them does.
        self._cycle_epoch = self._epoch + self.inventory.layout + self.ledger.layout
        try:
            # Pass 1 admits what fits within guarantees; work that must borrow waits for pass 2, so
            # nothing borrows GPUs that an owner later in the same queue is entitled to.
            if self._incremental:
                self._second_pass(self._first_pass(now, res, stopped), now, res, stopped)
            else:
                deferred = [
                    w
                    for w in self._ordered_pending(stopped)
                    if not self._process(w, now, res, stopped, False)
                ]
                for w in deferred:
                    self._process(w, now, res, stopped, True)
        finally:
            self._changes += 1
            for ns in self._reserved:
                self.inventory.pool_of(ns).update(ns, reserved=False)
            for p in self.inventory.pools.values():
                p.compact()
            for key in stopped:  # evicted and preempted work queues again from the next cycle
                w = self.workloads.get(key)
                if w is not None and w.placement is None and key not in self._queued:
                    self._enqueue(w)
        return res

    def _first_pass(self, now: float, res: CycleResult, stopped: set[str]) -> list[Workload]:
        """Pass 1 of an incremental cycle over the kept queue; the deferred workloads, in order.

        The order is exactly ``_ordered_pending``'s: the quotas' queues merged by a heap of quota
        heads keyed by (priority, fair share when pushed, FIFO), a quota's next head pushed once its
        previous workload was processed. While the quota on top keeps its share, the run of its
        workloads that come before every other head is found by bisection and walked without the
        heap; after any change that may have moved its share, the run is worked out again. The
        queues are walked as they were when the cycle began: admissions leave them, preempted work
        joins them after the cycle.

        A workload whose group's answer was found to hold at the current count of changes is decided
        here at once — deferred, or pending with the remembered reason — unless it may try
        preemption (budget left) or reserve nodes (starving, its pool not reserved yet), which
        ``_process`` works out in full. (``_second_pass`` repeats this fast path: the walk of every
        pending workload is the hot loop of a saturated cycle.)
        """
        share = self.ledger.dominant_share
        # A head is (-priority, share, created, key, the quota's walk): as in _ordered_pending but for
        # the last element, which no comparison reaches (keys are unique). A walk is [its queue's
        # keys, its entries, the next index, the quota].
        heads: list[tuple] = []
        for q, qq in self._queue.items():
            k = qq.keys[0]
            heads.append((k[0], share(q), k[1], k[2], [qq.keys[:], qq.items[:], 0, q]))
        heapq.heapify(heads)
        deferred: list[_Queued] = []
        pending = res.pending
        starvation = self.config.starvation_s
        reserved = self._reserved_pools
        process = self._process
        changes = self._changes
        budget = self._preempt_budget > 0
        remembered = 0
        entry = heapq.heappop(heads) if heads else None
        while entry is not None:
            walk = entry[4]
            keys, items, i, q = walk
            n = len(items)
            j = i + 1  # the head just popped comes first
            while True:
                while i < j:
                    e = items[i]
                    i += 1
                    m = e.group.memo[0]
                    if m is not None and m[3] == changes:
                        if m[6]:
                            remembered += 1
                            deferred.append(e)
                            continue
                        if not (budget and m[4]) and not (
                            m[5] and m[7] not in reserved and now - e.created >= starvation
                        ):
                            remembered += 1
                            pending.append(_remembered_pending(e, m))
                            continue
                    if not process(e.w, now, res, stopped, False):
                        deferred.append(e)
                    budget = self._preempt_budget > 0
                    if self._changes != changes:
                        changes = self._changes
                        break  # q's share may have moved: work the run out again
                if i == n:
                    entry = heapq.heappop(heads) if heads else None
                    break
                s = share(q)
                if not heads:
                    j = n
                    continue
                k = keys[i]
                head = (k[0], s, k[1], k[2], walk)
                top = heads[0]
                if top < head:  # another quota's head comes first: q's next head waits in the heap
                    entry = heapq.heapreplace(heads, head)
                    break
                # q's workloads whose (priority, s, created, key) come before the next head: a
                # prefix of q's queue, since q's keys are sorted and s is the same for all. Its end
                # is found by galloping from i (runs between quotas of equal shares are short).
                tp, ts, tc, tk, _ = top
                bound = (tp, math.inf) if s < ts else (tp,) if s > ts else (tp, tc, tk)
                lo = hi = i + 1
                step = 1
                while hi < n and keys[hi] < bound:
                    lo = hi + 1
                    hi += step
                    step += step
                if hi > n:
                    hi = n
                j = lo if lo == hi else bisect.bisect_left(keys, bound, lo, hi)
            walk[2] = i
        self.remembered += remembered
        return deferred

    def _second_pass(self, deferred: list[_Queued], now: float, res: CycleResult, stopped: set[str]) -> None:
        """Pass 2 of an incremental cycle: the deferred workloads in order, with the fast path of
        ``_first_pass``."""
        pending = res.pending
        starvation = self.config.starvation_s
        reserved = self._reserved_pools
        process = self._process
        changes = self._changes
        budget = self._preempt_budget > 0
        remembered = 0
        for e in deferred:
            m = e.group.memo[1]
            if (
                m is not None
                and m[3] == changes
                and not (budget and m[4])
                and not (m[5] and m[7] not in reserved and now - e.created >= starvation)
            ):
                remembered += 1
                pending.append(_remembered_pending(e, m))
                continue
            process(e.w, now, res, stopped, True)
            budget = self._preempt_budget > 0
            changes = self._changes
        self.remembered += remembered

    def _process(
        self, w: Workload, now: float, res: CycleResult, stopped: set[str], allow_borrow: bool
    ) -> bool:
        """Admit, preempt for, or leave pending one workload; False when deferred to pass 2."""
        if self._incremental:
            out = self._remembered(w, allow_borrow)
        else:
            self.examined += 1
            out = self._try_admit(w, allow_borrow)
        if out.deferred:
            return False
        if out.admit is not None:
            res.admitted.append(out.admit)
            return True
        if not out.never and out.cls is not None and out.pool is not None and self._preempt_budget > 0:
            self._preempt_budget -= 1
            plan = self._preempt_once(w, out.cls, out.pool, res, stopped)
            if plan is not None:
                res.admitted.append(plan)
                return True
        message = out.message
        if (
            not out.quota_blocked
            and not out.never
            and out.pool is not None
            and now - w.created >= self.config.starvation_s
            and out.pool not in self._reserved_pools
        ):
            self._reserved_pools.add(out.pool)
            self._changes += 1
            held = placement.reservation(out.pool, w)
            for ns in held:
                out.pool.update(ns, reserved=True)
            self._reserved.extend(held)
            if held:
                message += f"; {len(held)} nodes reserved for it so that they drain"
        template = out.template if message is out.message else None
        e = self._queued[w.key]
        p = e.pending
        if p is None or (
            (template is None or e.template is not template)
            and (p.message != message or p.reason != out.reason)
        ):
            p = e.pending = Pending(w.key, out.reason, message)
            e.template = template
        res.pending.append(p)
        return True

    # -- incremental cycles -----------------------------------------------------------------
    #
    # A pending workload's answer (admit, defer to pass 2, or why not) depends on its quota and
    # centre, its quota's and cohort's usage, and its pool. A group of workloads asking the same keeps
    # its last answer that was not an admission, with what it depended on; a later member takes it
    # as long as that still holds:
    # - no centre, quota, pool or class usage appeared, changed or went (the cycle epoch);
    # - for a class refused by the quota: the quota's and cohort's usage are what they were (the
    #   refusal's numbers are exact);
    # - for a class deferred to pass 2: the quota would still go above its guarantee;
    # - for a class whose placement failed: the quota would still take it (and, in pass 1, within
    #   its guarantee), and the pool has not gained room since (``Pool.gains``) — a pool that only
    #   lost room (admissions, reservations) cannot fit what it could not, and the indexed reasons
    #   do not change without a change of shape. Where the reason counts nodes the constraints kept
    #   out (the exact path), any change to the pool (``Pool.version``) counts instead.
    # A member that takes a remembered placement failure may see the numbers of the examination
    # that gave it (free GPUs then); everything else — whether it is admitted, deferred, its reason —
    # is what a full examination would give. Preemption, starvation reservations and the queue order
    # are worked out for every workload exactly as in a full cycle.

    def _remembered(self, w: Workload, allow_borrow: bool) -> _Outcome:
        g = self._queued[w.key].group
        m = g.memo[allow_borrow]
        if m is not None and (m[3] == self._changes or (m[0] == self._cycle_epoch and _still_holds(m[1]))):
            m[3] = self._changes
            self.remembered += 1
            return m[2]
        self.examined += 1
        out = self._try_admit(w, allow_borrow)
        if out.admit is None:
            preempts = not out.never and out.cls is not None and out.pool is not None
            reserves = not out.quota_blocked and not out.never and out.pool is not None
            deps = self._dependencies(w, allow_borrow)
            t: tuple | None = None
            if out.reason in _NUMBERS_ONLY and deps and deps[0][0] == _NO_ROOM and not deps[0][4]:
                t = (self._cycle_epoch, out.reason, out.pool)  # answered from the pool's indices
            elif out.reason == "QuotaExceeded" and out.cls is not None:
                t = (self._cycle_epoch, out.reason, w.quota, out.cls, w.gpus, out.refusal)
            if t is not None:
                if len(self._templates) >= 4096:
                    self._templates.clear()  # only interning: an entry holding an old one renews once
                out.template = self._templates.setdefault(t, t)
            g.memo[allow_borrow] = [
                self._cycle_epoch,
                deps,
                out,
                self._changes,
                preempts,
                reserves,
                out.deferred,
                out.pool,
                out.template,
            ]
        return out

    def _dependencies(self, w: Workload, allow_borrow: bool) -> tuple[tuple, ...]:
        """What ``_try_admit(w, allow_borrow)`` just answered from, class by class (see above)."""
        spec = self.ledger.specs.get(w.quota)
        center = self.inventory.centers.get(spec.center) if spec is not None else None
        if spec is None or center is None:
            return ()
        out: list[tuple] = []
        gpus = w.gpus
        for cls in [w.gpu_class] if w.gpu_class else spec.classes():
            pool = self.inventory.pool(center.name, cls)
            if pool is None:
                continue  # no such class here: the inventory's layout says when that changes
            u = self.ledger.usage[spec.name].get(cls)
            cohort = self.ledger.cohort_of(spec, cls)
            if not allow_borrow and not self.ledger.within_guarantee(spec.name, cls, gpus):
                out.append((_DEFERRED, u, gpus))
                break
            if u is None or self.ledger.check(spec.name, cls, gpus) is not None:
                out.append((_REFUSED, u, cohort, u.used if u is not None else 0, cohort[1]))
                continue
            exact = not placement.indexed_explain(pool, w)
            token = pool.version if exact else pool.gains
            bound = u.limit if allow_borrow else u.guaranteed
            out.append((_NO_ROOM, u, cohort, pool, exact, token, gpus, bound))
        return tuple(out)

    def _preempt_once(
        self, w: Workload, cls: str, pool: Pool, res: CycleResult, stopped: set[str]
    ) -> Admit | None:
        """``_preempt_for``, skipping an attempt that already failed this cycle in the same state."""
        if not self._incremental:
            return self._preempt_for(w, cls, pool, res, stopped)
        key = (self._queued[w.key].group, w.priority, cls)
        cohort = self.ledger.cohort_of(self.ledger.specs[w.quota], cls)
        if self._preempt_fails.get(key) == (pool.version, cohort[2]):
            return None
        plan = self._preempt_for(w, cls, pool, res, stopped)
        if plan is None:
            self._preempt_fails[key] = (pool.version, cohort[2])
        return plan

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
            kind = self.ledger.refusal_kind(spec.name, cls, w.gpus)
            return _Outcome(
                reason="QuotaExceeded",
                message=reason,
                cls=cls,
                pool=pool,
                quota_blocked=True,
                never=kind in NEVER_KINDS,
                refusal=kind,
            )
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
        self._dequeue(w.key)
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
        gains = pool.gains
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
            pool.gains = gains  # every node is as it was: the pool gained nothing
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
        return len(self._queued)
