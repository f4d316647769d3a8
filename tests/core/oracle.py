"""An independent model of what a scheduling cycle may decide, for the property tests.

``snapshot`` records the inputs before a cycle; ``check_cycle`` replays the cycle's decisions in
order (evictions, then each admission after releasing its victims) on plain counters built from the
snapshot — none of the scheduler's indices — and returns every rule a decision broke, in words.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from dataclasses import dataclass

from aicenter.core import (
    CenterSpec,
    CycleResult,
    Node,
    PlacementPolicy,
    QuotaSpec,
    ReclaimLent,
    Scheduler,
    TopologyMode,
    WithinQuota,
    Workload,
)


@dataclass
class Snapshot:
    now: float
    centers: dict[str, CenterSpec]
    quotas: dict[str, QuotaSpec]
    nodes: dict[str, Node]  # attached nodes
    running: dict[str, Workload]  # copies
    pending: set[str]
    workloads: dict[str, Workload]  # copies of every workload


def snapshot(s: Scheduler, now: float) -> Snapshot:
    copies = {k: dataclasses.replace(w) for k, w in s.workloads.items()}
    return Snapshot(
        now=now,
        centers=dict(s.inventory.centers),
        quotas=dict(s.ledger.specs),
        nodes={n: ns.node for n, ns in s.inventory.nodes.items()},
        running={k: w for k, w in copies.items() if w.placement is not None},
        pending={k for k, w in copies.items() if w.placement is None},
        workloads=copies,
    )


def limit_of(spec: QuotaSpec, cls: str) -> int:
    g = spec.guaranteed.get(cls, 0)
    return max(g, spec.limit.get(cls, g))


def cohort_of(spec: QuotaSpec) -> tuple[str, str]:
    return (spec.center, spec.cohort or f"quota:{spec.name}")


def past_grace(node: Node, center: CenterSpec, now: float) -> bool:
    return (
        not node.ready
        and node.not_ready_since is not None
        and now - node.not_ready_since >= center.not_ready_grace_s
    )


class Replay:
    """Node and quota usage rebuilt from workloads, moved decision by decision."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.running: dict[str, tuple[tuple[str, ...], str]] = {}  # key → (nodes, class)
        self.node_used: Counter[str] = Counter()
        self.usage: Counter[tuple[str, str]] = Counter()
        for k, w in snap.running.items():
            self.hold(k, w.placement, w.placed_class)

    def hold(self, key: str, nodes: tuple[str, ...], cls: str) -> None:
        w = self.snap.workloads[key]
        self.running[key] = (nodes, cls)
        for n in nodes:
            self.node_used[n] += w.gpus_per_replica
        self.usage[(w.quota, cls)] += w.gpus

    def release(self, key: str) -> None:
        w = self.snap.workloads[key]
        nodes, cls = self.running.pop(key)
        for n in nodes:
            self.node_used[n] -= w.gpus_per_replica
        self.usage[(w.quota, cls)] -= w.gpus

    def free(self, name: str) -> int:
        n = self.snap.nodes[name]
        return n.allocatable - n.other_gpus - self.node_used[name]

    def placeable(self, name: str) -> bool:
        n = self.snap.nodes[name]
        return n.ready and n.schedulable and not self.snap.centers[n.center].maintenance

    def cohort_used(self, spec: QuotaSpec, cls: str) -> tuple[int, int]:
        """(Σ guaranteed, Σ used) of ``cls`` over the quota's cohort."""
        g = used = 0
        for q, other in self.snap.quotas.items():
            if cohort_of(other) == cohort_of(spec):
                g += other.guaranteed.get(cls, 0)
                used += self.usage[(q, cls)]
        return g, used

    def domain_slots(self, center: str, cls: str, key: str, g: int) -> dict[str, int]:
        """Free ``g``-GPU slots per domain of ``key`` over placeable nodes of one pool."""
        out: dict[str, int] = defaultdict(int)
        for name, n in self.snap.nodes.items():
            if n.center != center or n.gpu_class != cls or not self.placeable(name):
                continue
            dom = n.topology.get(key)
            if dom is not None:
                out[dom] += max(0, self.free(name)) // g
        return out


def _topology_errors(rp: Replay, w: Workload, cls: str, nodes: tuple[str, ...], exact: bool) -> list[str]:
    snap = rp.snap
    spec = snap.quotas[w.quota]
    center = snap.centers[spec.center]
    keys = center.topology_keys
    out: list[str] = []
    if w.topology_key is None:
        return out
    if w.topology_key not in keys:
        if w.topology_mode == TopologyMode.REQUIRED:
            out.append(f"{w.key}: admitted with required key {w.topology_key} the centre does not have")
        return out
    k = keys.index(w.topology_key)
    if w.topology_mode == TopologyMode.REQUIRED:
        values = {snap.nodes[n].topology.get(w.topology_key) for n in nodes}
        if len(values) != 1 or None in values:
            out.append(f"{w.key}: required {w.topology_key} but spans {sorted(map(str, values))}")
    if not exact:
        return out
    levels = range(k + 1) if w.topology_mode == TopologyMode.REQUIRED else range(len(keys))
    g, r = w.gpus_per_replica, w.replicas
    for lvl in levels:
        slots = rp.domain_slots(spec.center, cls, keys[lvl], g)
        fitting = {d: v for d, v in slots.items() if v >= r}
        if not fitting:
            continue
        values = {snap.nodes[n].topology.get(keys[lvl]) for n in nodes}
        if len(values) != 1 or None in values:
            out.append(
                f"{w.key}: a {keys[lvl]} domain had room ({fitting}) "
                f"but the gang spans {sorted(map(str, values))}"
            )
            return out
        chosen = slots[next(iter(values))]
        if center.placement_policy == PlacementPolicy.SPREAD:
            best = max(slots.values())
        else:
            best = min(fitting.values())
        if chosen != best:
            out.append(f"{w.key}: chose a {keys[lvl]} with {chosen} free slots, best fit had {best}")
        return out
    if w.topology_mode == TopologyMode.REQUIRED:
        out.append(f"{w.key}: admitted though no {w.topology_key} domain had {r} free {g}-GPU slots")
    return out


def check_cycle(s: Scheduler, snap: Snapshot, res: CycleResult, exact_topology: bool) -> list[str]:
    """Every rule the cycle's decisions broke (empty when sound).

    ``exact_topology``: no reservations can have hidden nodes (starvation off), so the tightest
    fitting topology level and the best-fit domain can be checked exactly.
    """
    out: list[str] = []
    now = snap.now
    rp = Replay(snap)

    # -- bookkeeping of keys -------------------------------------------------------------------
    adm = [a.key for a in res.admitted]
    pend = [p.key for p in res.pending]
    ev = [e.key for e in res.evicted]
    pre = [p.key for p in res.preempted]
    for name, keys in (("admitted", adm), ("pending", pend), ("evicted", ev), ("preempted", pre)):
        if len(keys) != len(set(keys)):
            out.append(f"duplicate keys in {name}: {keys}")
    if set(adm) & set(pend):
        out.append(f"both admitted and pending: {set(adm) & set(pend)}")
    if set(adm) | set(pend) != snap.pending:
        out.append(
            f"queue not fully decided: pending before {sorted(snap.pending)}, "
            f"admitted {sorted(adm)}, pending {sorted(pend)}"
        )
    for p in res.pending:
        if not p.reason or not p.message:
            out.append(f"{p.key}: pending without a reason or message")

    # -- evictions -----------------------------------------------------------------------------
    for e in res.evicted:
        w = snap.running.get(e.key)
        if w is None:
            out.append(f"{e.key}: evicted but was not running")
            continue
        nodes = set(w.placement)
        if e.reason == "NodeGone":
            ok = any(n not in snap.nodes for n in nodes)
        elif e.reason == "NodeNotReady":
            ok = any(
                n in snap.nodes and past_grace(snap.nodes[n], snap.centers[snap.nodes[n].center], now)
                for n in nodes
            )
        elif e.reason == "GPUUnhealthy":
            ok = any(n in snap.nodes and rp.free(n) < 0 for n in nodes)
        else:
            ok = False
        if not ok:
            out.append(f"{e.key}: evicted for {e.reason} without cause ({e.message})")
    for e in res.evicted:
        if e.key in rp.running:
            rp.release(e.key)

    # -- admissions and their preemptions, in order --------------------------------------------
    by_victim = {p.key: p for p in res.preempted}
    claimed: set[str] = set()
    for a in res.admitted:
        w = snap.workloads.get(a.key)
        if w is None:
            out.append(f"{a.key}: admitted but unknown")
            continue
        spec = snap.quotas.get(w.quota)
        if spec is None:
            out.append(f"{a.key}: admitted in unknown quota {w.quota}")
            continue
        for v in a.after:
            p = by_victim.get(v)
            claimed.add(v)
            if p is None or p.preemptor != a.key:
                out.append(f"{a.key}: waits for {v} that was not preempted for it")
            vw = snap.running.get(v)
            if vw is None or v not in rp.running:
                out.append(f"{a.key}: victim {v} was not running before the cycle")
                continue
            if not vw.preemptible:
                out.append(f"{v}: preempted but not preemptible")
            if vw.placed_class != a.gpu_class:
                out.append(f"{v}: preempted from class {vw.placed_class} for a {a.gpu_class} job")
            vspec = snap.quotas[vw.quota]
            if p is not None and p.reason == "PreemptedByPriority":
                if vw.quota != w.quota or vw.priority >= w.priority:
                    out.append(f"{v}: priority preemption by {a.key} breaks quota/priority rules")
                if spec.within_quota != WithinQuota.LOWER_PRIORITY:
                    out.append(f"{v}: priority preemption though quota {spec.name} says Never")
            elif p is not None and p.reason == "Reclaimed":
                if vw.quota == w.quota or cohort_of(vspec) != cohort_of(spec) or spec.cohort is None:
                    out.append(f"{v}: reclaimed by {a.key} from outside its cohort")
                if spec.reclaim_lent == ReclaimLent.NEVER:
                    out.append(f"{v}: reclaimed though quota {spec.name} says Never")
                if spec.reclaim_lent == ReclaimLent.LOWER_PRIORITY and vw.priority >= w.priority:
                    out.append(f"{v}: reclaimed with priority {vw.priority} ≥ {w.priority}")
                # The victim's quota must have been borrowing when the victim was taken. The
                # scheduler takes victims cheapest first; the replay cannot see that order, so it
                # checks the most lenient one: this quota's other victims of this admission first.
                same = [
                    x
                    for x in a.after
                    if by_victim.get(x) is not None
                    and by_victim[x].reason == "Reclaimed"
                    and (snap.workloads.get(x) or snap.running[x]).quota == vw.quota
                ]
                others = sum((snap.workloads.get(x) or snap.running[x]).gpus for x in same if x != v)
                largest = max((snap.workloads.get(x) or snap.running[x]).gpus for x in same)
                before = sum(
                    (snap.workloads.get(k) or snap.running[k]).gpus
                    for k, (_, c) in rp.running.items()
                    if (snap.workloads.get(k) or snap.running[k]).quota == vw.quota and c == vw.placed_class
                )
                released = sum((snap.workloads.get(x) or snap.running[x]).gpus for x in same[: same.index(v)])
                before += released  # as it stood before this admission's victims
                taken_before_last = others + vw.gpus - largest
                if before - taken_before_last <= vspec.guaranteed.get(vw.placed_class, 0):
                    out.append(f"{v}: reclaimed though quota {vw.quota} was not borrowing")
            elif p is not None:
                out.append(f"{v}: unknown preemption reason {p.reason}")
            rp.release(v)
        if a.key in rp.running or a.key not in snap.pending:
            out.append(f"{a.key}: admitted but was not pending")
            continue
        cls, nodes = a.gpu_class, a.nodes
        if len(nodes) != w.replicas:
            out.append(f"{a.key}: {len(nodes)} nodes for {w.replicas} replicas")
        if w.gpu_class is not None and cls != w.gpu_class:
            out.append(f"{a.key}: asked for {w.gpu_class}, admitted on {cls}")
        per_node = Counter(nodes)
        for n, count in per_node.items():
            node = snap.nodes.get(n)
            if node is None:
                out.append(f"{a.key}: admitted on unknown node {n}")
                continue
            if node.center != spec.center or node.gpu_class != cls:
                out.append(f"{a.key}: node {n} is {node.center}/{node.gpu_class}, wanted {spec.center}/{cls}")
            if not rp.placeable(n):
                out.append(f"{a.key}: node {n} not ready/schedulable (or centre in maintenance)")
            if count * w.gpus_per_replica > rp.free(n):
                out.append(f"{a.key}: {count}×{w.gpus_per_replica} GPUs on {n} with {rp.free(n)} free")
        used = rp.usage[(w.quota, cls)]
        g = spec.guaranteed.get(cls, 0)
        if used + w.gpus > limit_of(spec, cls):
            out.append(f"{a.key}: quota {w.quota} {used}+{w.gpus} over limit {limit_of(spec, cls)}")
        cg, cused = rp.cohort_used(spec, cls)
        if cused + w.gpus > cg:
            out.append(f"{a.key}: cohort of {w.quota} {cused}+{w.gpus} over Σ guaranteed {cg}")
        if a.borrowed != max(0, used + w.gpus - max(g, used)):
            out.append(f"{a.key}: borrowed {a.borrowed}, expected {max(0, used + w.gpus - max(g, used))}")
        reclaimed = any(by_victim[v].reason == "Reclaimed" for v in a.after if v in by_victim)
        if reclaimed and used + w.gpus > g:
            out.append(f"{a.key}: reclaimed GPUs though it would exceed its guarantee")
        out.extend(_topology_errors(rp, w, cls, nodes, exact_topology))
        rp.hold(a.key, nodes, cls)
    for p in res.preempted:
        if p.key not in claimed:
            out.append(f"{p.key}: preempted for {p.preemptor}, whose admission does not wait for it")

    # -- the state after the cycle matches the decisions ---------------------------------------
    for k, w in s.workloads.items():
        want = rp.running.get(k)
        got = (w.placement, w.placed_class) if w.placement is not None else None
        if k in snap.workloads and got != want:
            out.append(f"{k}: state {got} but decisions say {want}")
    for name, node in snap.nodes.items():
        if rp.free(name) < 0 and not (
            not node.ready and not past_grace(node, snap.centers[node.center], now)
        ):
            out.append(
                f"node {name}: {rp.node_used[name]} used > {node.allocatable - node.other_gpus} healthy"
            )
    for k, (nodes, _) in rp.running.items():
        for n in nodes:
            node = snap.nodes.get(n)
            if node is None:
                out.append(f"{k}: still running on removed node {n}")
            elif past_grace(node, snap.centers[node.center], now):
                out.append(f"{k}: still running on {n}, NotReady past grace")
    cohorts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for q, spec in snap.quotas.items():
        for cls in set(spec.classes()) | {c for (qq, c) in rp.usage if qq == q}:
            used = rp.usage[(q, cls)]
            if used > limit_of(spec, cls):
                out.append(f"quota {q}/{cls}: {used} used > limit {limit_of(spec, cls)}")
            if spec.cohort is None and used > spec.guaranteed.get(cls, 0):
                out.append(f"quota {q}/{cls}: borrows {used} > guaranteed without a cohort")
            c = cohorts[(*cohort_of(spec), cls)]
            c[0] += spec.guaranteed.get(cls, 0)
            c[1] += used
    for key, (g, used) in cohorts.items():
        if used > g:
            out.append(f"cohort {key}: {used} used > {g} guaranteed")
    return out
