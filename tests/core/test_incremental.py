"""Incremental cycles decide what a full re-check decides.

Two schedulers — ``incremental=True`` (the default) and ``incremental=False`` (every pending workload
examined in full, every cycle) — are fed the same random fleet, quotas and job stream, and the same
changes between cycles: completions, cancellations, forgotten admissions, node faults, taints, labels
and non-GPU resources that change, quotas changed, removed and restored, centres in and out of
maintenance, removed and restored, pending jobs replaced with another priority, jobs like others
(groups of several), jobs with tolerations, node selectors and CPU requests. Small preemption budgets
(so that skipped work would have spent attempts) and starvation reservations are drawn too. After
every cycle the two results must agree as ``tests/core/equivalence.py`` defines (admissions,
preemptions, evictions, pending order and reasons identical; only a lack-of-room message may carry
other numbers), the two states must be the same, and the incremental one must pass the independent
replay of ``oracle.py``.
"""

from __future__ import annotations

import dataclasses

from hypothesis import event, given
from hypothesis import strategies as st

from aicenter.core import (
    CenterSpec,
    CycleResult,
    Pending,
    QuotaSpec,
    Scheduler,
    SchedulerConfig,
    Workload,
)
from aicenter.core.constraints import NO_CONSTRAINTS, Constraints, NodeFacts, Taint, Toleration
from aicenter.core.invariants import violations

from .builders import RACK, center, job, quota, rack_nodes
from .equivalence import differences, masked
from .oracle import check_cycle, snapshot
from .test_properties import (
    NO_STARVATION,
    OPS,
    SETTINGS,
    T0,
    Sim,
    contended_fleets,
    fleets,
    queue_errors,
)

TAINT = Taint("example.com/dedicated", "ml", "NoSchedule")
CONSTRAINTS = [
    NO_CONSTRAINTS,
    Constraints(tolerations=(Toleration("example.com/dedicated", "Exists"),)),
    Constraints(node_selector=(("pool", "a"),)),
    Constraints(requests=(("cpu", 24_000),)),
    Constraints(tolerations=(Toleration("example.com/dedicated", "Exists"),), requests=(("cpu", 8_000),)),
]
FEEDS = frozenset(
    {
        "set_center",
        "remove_center",
        "set_quota",
        "remove_quota",
        "set_node",
        "remove_node",
        "add_workload",
        "remove_workload",
        "forget",
    }
)


class Tee:
    """Looks like one scheduler: every change goes to both (workloads copied), reads come from the
    incremental one."""

    def __init__(self, incremental: Scheduler, full: Scheduler) -> None:
        self.inc = incremental
        self.full = full

    def __getattr__(self, name: str):
        if name not in FEEDS:
            return getattr(self.inc, name)

        def both(*args):
            getattr(self.full, name)(
                *(dataclasses.replace(a) if isinstance(a, Workload) else a for a in args)
            )
            return getattr(self.inc, name)(*args)

        return both


def facts(data, labels: dict[str, str]) -> NodeFacts:
    return NodeFacts(
        labels={**labels, "pool": data.draw(st.sampled_from(["a", "b"]))},
        taints=(TAINT,) if data.draw(st.integers(0, 3)) == 0 else (),
        allocatable={"cpu": data.draw(st.sampled_from([16_000, 64_000, 128_000])), "pods": 110},
    )


class Pair(Sim):
    """The property tests' simulated shell, feeding an incremental and a full scheduler in step."""

    def scheduler(self, config: SchedulerConfig) -> Tee:
        return Tee(
            Scheduler(dataclasses.replace(config, incremental=True)),
            Scheduler(dataclasses.replace(config, incremental=False)),
        )

    constrained = False  # whether nodes carry taints, labels and resources and jobs constraints

    def submit(self, data) -> None:
        super().submit(data)
        if not self.constrained:
            return
        key = f"j{self.seq:03d}"
        c = data.draw(st.sampled_from([NO_CONSTRAINTS] * 4 + CONSTRAINTS[1:]))
        if c is not NO_CONSTRAINTS:
            self.s.add_workload(dataclasses.replace(self.s.workloads[key], constraints=c))

    def fault_anywhere(self, data) -> None:
        self.fault(data, anywhere=True)

    def clone(self, data) -> None:
        """A job like one already known (same quota, shape and priority): groups of several."""
        if self.s.workloads:
            w = self.s.workloads[data.draw(st.sampled_from(sorted(self.s.workloads)))]
            self.seq += 1
            self.s.add_workload(
                dataclasses.replace(
                    w,
                    key=f"j{self.seq:03d}",
                    created=self.now,
                    placement=None,
                    placed_class=None,
                    started=None,
                )
            )

    def replace_pending(self, data) -> None:
        """The shell re-presents a pending job (another priority, or as it was)."""
        waiting = sorted(k for k, w in self.s.workloads.items() if w.placement is None)
        if waiting:
            w = self.s.workloads[data.draw(st.sampled_from(waiting))]
            self.s.add_workload(
                dataclasses.replace(w, priority=data.draw(st.sampled_from([w.priority, 0, 3])))
            )

    def requota(self, data) -> None:
        q = data.draw(st.sampled_from(self.quotas))
        what = data.draw(st.sampled_from(["change", "change", "remove", "restore"]))
        if what == "remove":
            if self.s.ledger.lent(q.name, "A") or self.s.ledger.lent(q.name, "B"):
                return  # what it lends would be over its cohort's guarantees
            self.s.remove_quota(q.name)
            return
        if what == "change":  # guarantees grow; a limit may shrink, not below what the quota uses
            g = {c: v + data.draw(st.sampled_from([0, 4, 8, 16])) for c, v in q.guaranteed.items()}
            lim = {
                c: max(
                    g.get(c, 0), self.s.ledger.used(q.name, c), v + data.draw(st.sampled_from([-8, 0, 8, 32]))
                )
                for c, v in q.limit.items()
            }
            q = dataclasses.replace(q, guaranteed=g, limit=lim)
            self.quotas = [q if x.name == q.name else x for x in self.quotas]
        self.s.set_quota(q)

    def recentre(self, data) -> None:
        """A centre goes away (one running nothing: its work would run on unmanaged) or comes back."""
        gone = sorted(set(self.centers) - set(self.s.inventory.centers))
        if gone:
            self.s.set_center(self.centers[data.draw(st.sampled_from(gone))])
            return
        busy = {
            self.s.inventory.nodes[n].node.center
            for w in self.s.workloads.values()
            for n in w.placement or ()
            if n in self.s.inventory.nodes
        }
        idle = sorted(set(self.centers) - busy)
        if idle:
            self.s.remove_center(data.draw(st.sampled_from(idle)))

    def refacts(self, data) -> None:
        if not self.nodes or not self.constrained:
            return
        n = self.nodes[data.draw(st.sampled_from(sorted(self.nodes)))]
        if data.draw(st.booleans()):
            n = dataclasses.replace(n, facts=facts(data, n.topology))
        else:
            n = dataclasses.replace(n, other_requests={"cpu": data.draw(st.sampled_from([0, 8_000, 60_000]))})
        self.nodes[n.name] = n
        self.s.set_node(n)

    def cycle(self, data, exact: bool) -> None:
        self.now += data.draw(st.sampled_from([0.0, 5.0, 30.0, 61.0, 400.0]))
        inc, full = self.s.inc, self.s.full
        snap = snapshot(inc, self.now)
        want = full.cycle(self.now)
        got = inc.cycle(self.now)
        assert differences(want, got) == [], "\n".join(differences(want, got))
        # The replay's best-fit check counts every placeable node: exact only without constraints.
        assert check_cycle(inc, snap, got, exact and not self.constrained) == []
        for s in (inc, full):
            assert violations(s) == []
            assert queue_errors(s) == []
        assert {k: (w.placement, w.placed_class) for k, w in inc.workloads.items()} == {
            k: (w.placement, w.placed_class) for k, w in full.workloads.items()
        }
        for a in got.admitted:
            inc.workloads[a.key].started = self.now
            full.workloads[a.key].started = self.now
        self.last_admitted = [a.key for a in got.admitted]
        self.cycles += 1
        self.admissions += len(got.admitted)
        self.preemptions += len(got.preempted)
        self.reservations += sum(1 for p in got.pending if "reserved" in p.message)
        self.remembered += inc.remembered
        self.stale += sum(1 for p, q in zip(want.pending, got.pending, strict=True) if p.message != q.message)


PAIR_OPS = [
    *OPS,
    "fault_anywhere",
    "fault_anywhere",
    "clone",
    "clone",
    "replace_pending",
    "requota",
    "refacts",
    "recentre",
    "submit",
    "submit",
]


def run_pair(fleet, data) -> None:
    centers, quotas, nodes = fleet
    constrained = data.draw(st.booleans())
    if constrained:
        nodes = [
            dataclasses.replace(n, facts=facts(data, n.topology)) if data.draw(st.booleans()) else n
            for n in nodes
        ]
    config = SchedulerConfig(
        starvation_s=data.draw(st.sampled_from([NO_STARVATION, NO_STARVATION, 0.0, 100.0])),
        max_preemption_attempts=data.draw(st.sampled_from([0, 1, 2, 64])),
        max_victim_candidates=data.draw(st.sampled_from([1, 3, 512])),
    )
    sim = Pair((centers, quotas, nodes), config)
    sim.constrained = constrained
    sim.remembered = sim.stale = 0
    for _ in range(data.draw(st.integers(3, 14))):
        sim.submit(data)
    for _ in range(data.draw(st.integers(2, 8))):
        for _ in range(data.draw(st.integers(0, 6))):
            getattr(sim, data.draw(st.sampled_from(PAIR_OPS)))(data)
        if sim.contended:  # keep the queue full: high-priority arrivals preempt
            for _ in range(data.draw(st.integers(0, 3))):
                sim.submit(data)
        sim.cycle(data, exact=config.starvation_s == NO_STARVATION)
    for what in ("admissions", "preemptions", "reservations", "remembered", "stale"):
        event(f"{what}: {'some' if getattr(sim, what) else 'none'}")


@SETTINGS
@given(fleet=fleets(), data=st.data())
def test_incremental_cycles_decide_what_a_full_recheck_decides(fleet, data):
    run_pair(fleet, data)


@SETTINGS
@given(fleet=contended_fleets(), data=st.data())
def test_incremental_cycles_decide_what_a_full_recheck_decides_under_contention(fleet, data):
    run_pair(fleet, data)


# -- the definition itself, and a case the pair above must meet ------------------------------------


def test_only_a_lack_of_room_or_a_quota_refusal_may_carry_other_numbers():
    def one(reason: str, message: str) -> CycleResult:
        return CycleResult(pending=[Pending("a", reason, message)])

    full = one("InsufficientGPUs", "c has 8 free B200; job needs 16")
    assert differences(full, one("InsufficientGPUs", "c has 4 free B200; job needs 16")) == []
    assert differences(full, one("InsufficientGPUs", "c has 4 free B300; job needs 16")) != []
    assert differences(full, one("NoTopologyDomain", full.pending[0].message)) != []
    refused = one("QuotaExceeded", "quota q: limit 8 B200 reached — 8 used")
    assert differences(refused, one("QuotaExceeded", "quota q: limit 8 B200 reached — 0 used")) == []
    never = one("NoMatchingNodes", "no B200 node in c0 passes this job's node selector (1 node)")
    assert differences(
        never, one("NoMatchingNodes", "no B200 node in c0 passes this job's node selector (2 node)")
    )
    assert masked("c0 has 1,024 of 2,048 B200 in 8-GPU slots") == "c0 has # of # B200 in #-GPU slots"


def test_a_remembered_failure_is_dropped_when_the_pool_gains_room():
    """A gang that did not fit is skipped while its pool only fills, and admitted as soon as a
    completion frees room — in the same cycle as a full re-check admits it."""
    s = Scheduler(SchedulerConfig(starvation_s=NO_STARVATION))
    full = Scheduler(SchedulerConfig(starvation_s=NO_STARVATION, incremental=False))
    for x in (s, full):
        x.set_center(center())
        x.set_quota(quota("q", guaranteed=64))
        for n in rack_nodes(racks=1, per_rack=4):
            x.set_node(n)
        for i in range(4):
            x.add_workload(job(f"small{i}", "q", created=float(i)))
        x.add_workload(job("gang", "q", replicas=2, created=10.0))
    for now in (T0, T0 + 1):
        want, got = full.cycle(now), s.cycle(now)
        assert differences(want, got) == []
        assert "gang" not in {a.key for a in got.admitted}
    assert s.remembered >= 1  # the second cycle answered the gang from memory
    for x in (s, full):
        x.remove_workload("small0")
        x.remove_workload("small1")
    want, got = full.cycle(T0 + 2), s.cycle(T0 + 2)
    assert differences(want, got) == []
    assert [a.key for a in got.admitted] == ["gang"]


def test_quota_changes_are_seen_at_once():
    s = Scheduler(SchedulerConfig(starvation_s=NO_STARVATION))
    s.set_center(center())
    s.set_quota(quota("q", guaranteed=8))
    for n in rack_nodes(racks=1, per_rack=2):
        s.set_node(n)
    s.add_workload(job("big", "q", replicas=2))
    assert s.cycle(T0).pending[0].reason == "QuotaExceeded"
    assert s.cycle(T0 + 1).pending[0].reason == "QuotaExceeded"
    s.set_quota(quota("q", guaranteed=16))
    assert [a.key for a in s.cycle(T0 + 2).admitted] == ["big"]


def test_a_new_pool_is_seen_at_once():
    s = Scheduler(SchedulerConfig(starvation_s=NO_STARVATION))
    s.set_center(center())
    s.set_quota(quota("q", guaranteed={"B200": 8, "B300": 8}))
    for n in rack_nodes(racks=1, per_rack=1):
        s.set_node(n)
    s.add_workload(job("w", "q", cls="B300"))
    assert s.cycle(T0).pending[0].reason == "NoSuchGPUClass"
    assert s.cycle(T0 + 1).pending[0].reason == "NoSuchGPUClass"
    for n in rack_nodes(cls="B300", racks=1, per_rack=1):
        s.set_node(n)
    assert [a.key for a in s.cycle(T0 + 2).admitted] == ["w"]


def test_centre_and_quota_specs_used_by_the_answer_are_current():
    s = Scheduler(SchedulerConfig(starvation_s=NO_STARVATION))
    c = center()
    s.set_center(dataclasses.replace(c, maintenance=True))
    s.set_quota(QuotaSpec("q", "c", {"B200": 8}, {"B200": 8}))
    for n in rack_nodes(racks=1, per_rack=1):
        s.set_node(n)
    s.add_workload(job("w", "q"))
    assert s.cycle(T0).pending[0].reason == "Maintenance"
    assert s.cycle(T0 + 1).pending[0].reason == "Maintenance"
    s.set_center(CenterSpec(c.name, c.topology_keys))
    assert [a.key for a in s.cycle(T0 + 2).admitted] == ["w"]


def _running(key: str, q: str, node: str, gpus: int, priority: int = 0, preemptible: bool = True) -> Workload:
    w = job(key, q, gpus=gpus, priority=priority, preemptible=preemptible)
    w.placement, w.placed_class, w.started = (node,), "B200", 0.0
    return w


def _both(build) -> tuple[Scheduler, Scheduler]:
    pair = []
    for incremental in (True, False):
        s = Scheduler(SchedulerConfig(starvation_s=NO_STARVATION, incremental=incremental, **build.config))
        build(s)
        pair.append(s)
    return pair[0], pair[1]


def test_a_preemption_attempt_answered_from_memory_still_spends_the_budget():
    """Two identical gangs whose preemption attempts fail spend the budget of two; the job behind
    them, which could preempt, waits — whether the second attempt is made or remembered."""

    def build(s: Scheduler) -> None:
        s.set_center(center())
        s.set_quota(quota("q", guaranteed=16))
        for n in rack_nodes(racks=2, per_rack=1):  # two racks of one node
            s.set_node(n)
        s.add_workload(_running("low1", "q", "c-b200-r0-n0", 8))
        s.add_workload(_running("low2", "q", "c-b200-r1-n0", 8))
        for i in (1, 2):  # one rack can never hold them: every attempt fails
            s.add_workload(job(f"gang{i}", "q", replicas=2, created=float(i), key_=RACK, priority=5))
        s.add_workload(job("single", "q", created=3.0, priority=5))

    build.config = {"max_preemption_attempts": 2}
    inc, full = _both(build)
    want, got = full.cycle(T0), inc.cycle(T0)
    assert differences(want, got) == []
    assert got.admitted == [] and [p.key for p in got.pending] == ["gang1", "gang2", "single"]


def test_a_failed_preemption_is_tried_again_once_another_cohort_freed_room():
    """A gang's attempt fails; another quota's preemption then leaves room in the same pool (its
    victim was bigger than its job); the next identical gang must try again, and now succeeds."""

    def build(s: Scheduler) -> None:
        s.set_center(center())
        s.set_quota(quota("a", guaranteed=16))
        s.set_quota(quota("b", guaranteed=16))
        for n in rack_nodes(racks=1, per_rack=2):
            s.set_node(n)
        s.add_workload(_running("a-low", "a", "c-b200-r0-n0", 4))
        s.add_workload(_running("a-keep", "a", "c-b200-r0-n0", 4, priority=9))
        s.add_workload(_running("b-big", "b", "c-b200-r0-n1", 8))
        s.add_workload(job("a-gang1", "a", replicas=2, gpus=4, created=1.0, priority=5))
        s.add_workload(job("b-small", "b", gpus=4, created=2.0, priority=5))
        s.add_workload(job("a-gang2", "a", replicas=2, gpus=4, created=3.0, priority=5))

    build.config = {}
    inc, full = _both(build)
    want, got = full.cycle(T0), inc.cycle(T0)
    assert differences(want, got) == []
    assert [(a.key, a.after) for a in got.admitted] == [("b-small", ("b-big",)), ("a-gang2", ("a-low",))]


def test_room_a_reservation_held_back_is_seen_once_it_ends():
    """A job that did not fit beside a starving gang's reservation fits once the gang is gone."""
    s = Scheduler(SchedulerConfig(starvation_s=0.0))
    s.set_center(center())
    s.set_quota(quota("q", guaranteed=32))
    for n in rack_nodes(racks=1, per_rack=2):
        s.set_node(n)
    s.add_workload(_running("busy", "q", "c-b200-r0-n0", 8, preemptible=False))
    s.add_workload(job("gang", "q", replicas=2, created=1.0, priority=5))
    s.add_workload(job("small", "q", created=2.0))
    res = s.cycle(T0)
    assert res.admitted == [] and res.pending[0].message.endswith(
        "2 nodes reserved for it so that they drain"
    )
    s.remove_workload("gang")
    assert [a.key for a in s.cycle(T0 + 1).admitted] == ["small"]


def test_a_node_that_comes_back_is_seen_at_once():
    s = Scheduler(SchedulerConfig(starvation_s=NO_STARVATION))
    s.set_center(center())
    s.set_quota(quota("q", guaranteed=32))
    n0, n1 = rack_nodes(racks=1, per_rack=2)
    s.set_node(n0)
    s.set_node(dataclasses.replace(n1, ready=False, not_ready_since=0.0))
    s.add_workload(_running("busy", "q", n0.name, 8))
    s.add_workload(job("w", "q"))
    assert s.cycle(T0).pending[0].reason == "InsufficientGPUs"
    assert s.cycle(T0 + 1).pending[0].reason == "InsufficientGPUs"
    s.set_node(n1)
    assert [a.key for a in s.cycle(T0 + 2).admitted] == ["w"]
