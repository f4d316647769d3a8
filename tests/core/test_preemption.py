"""Preemption: cheapest victims, minimised; policies; reclaim of lent GPUs only."""

from __future__ import annotations

from aicenter.core import ReclaimLent, WithinQuota

from .builders import RACK, admitted, center, job, pending, quota, rack_nodes, run, scheduler


def two_nodes(**kw):
    return rack_nodes(racks=1, per_rack=2, **kw)


def place(
    s, key: str, q: str, nodes: tuple[str, ...], gpus: int, priority: int = 0, started: float = 0.0, **kw
) -> None:
    w = job(key, q, replicas=len(nodes), gpus=gpus, priority=priority, **kw)
    w.placement, w.placed_class, w.started = nodes, "B200", started
    s.add_workload(w)


def test_the_cheapest_victim_set_is_chosen_then_minimised():
    s = scheduler([center()], [quota("q", guaranteed=16)], two_nodes())
    place(s, "low-8", "q", ("c-b200-r0-n0",), 8, priority=0)
    place(s, "low-4", "q", ("c-b200-r0-n1",), 4, priority=0)
    place(s, "mid-4", "q", ("c-b200-r0-n1",), 4, priority=1)
    s.add_workload(job("urgent", "q", replicas=1, gpus=8, priority=5, created=1.0))
    res = run(s, 2.0)
    # Cheapest first: low-4 (lowest priority, fewest GPUs) is freed first but does not make room;
    # low-8 does, and low-4 is then given back: only low-8 is stopped.
    assert [(p.key, p.preemptor, p.reason) for p in res.preempted] == [
        ("low-8", "urgent", "PreemptedByPriority")
    ]
    assert res.preempted[0].message == "preempted by higher-priority job urgent (5 > 0) in quota q"
    (a,) = res.admitted
    assert (a.key, a.nodes, a.after) == ("urgent", ("c-b200-r0-n0",), ("low-8",))
    assert s.workloads["low-8"].placement is None and s.workloads["low-4"].placement is not None
    # The victim is back in the queue next cycle (and waits: there is no room).
    res = run(s, 3.0)
    assert pending(res)["low-8"][0] == "QuotaExceeded"


def test_no_preemption_of_equal_priority_non_preemptible_or_under_never():
    for within, victim_kw, urgent_priority in (
        (WithinQuota.LOWER_PRIORITY, {"preemptible": False}, 5),
        (WithinQuota.LOWER_PRIORITY, {}, 0),
        (WithinQuota.NEVER, {}, 5),
    ):
        s = scheduler([center()], [quota("q", guaranteed=8, within=within)], two_nodes())
        place(s, "victim", "q", ("c-b200-r0-n0",), 8, **victim_kw)
        s.add_workload(job("urgent", "q", replicas=1, gpus=8, priority=urgent_priority, created=1.0))
        res = run(s, 2.0)
        assert res.preempted == [] and admitted(res) == set(), (within, victim_kw)
        assert pending(res)["urgent"][0] == "QuotaExceeded"


def cohort(reclaim: ReclaimLent = ReclaimLent.ANY):
    return scheduler(
        [center()],
        [
            quota("owner", guaranteed=16, cohort="k", reclaim=reclaim),
            quota("borrower", guaranteed=0, limit=16, cohort="k"),
            quota("outsider", guaranteed=0, limit=16, cohort="other"),
        ],
        two_nodes(),
    )


def test_an_owner_within_its_guarantee_reclaims_what_it_lent():
    s = cohort()
    place(s, "b1", "borrower", ("c-b200-r0-n0",), 8, priority=9)
    place(s, "b2", "borrower", ("c-b200-r0-n1",), 8, priority=9, started=0.5)
    s.add_workload(job("mine", "owner", replicas=1, gpus=8, created=1.0))
    res = run(s, 2.0)
    assert [(p.key, p.reason) for p in res.preempted] == [("b2", "Reclaimed")]  # the younger one
    assert (
        res.preempted[0].message
        == "preempted: quota owner reclaimed 8 B200 it lent to quota borrower, for job mine"
    )
    assert admitted(res) == {"mine"}


def test_reclaim_lower_priority_and_never():
    s = cohort(ReclaimLent.LOWER_PRIORITY)
    place(s, "b1", "borrower", ("c-b200-r0-n0", "c-b200-r0-n1"), 8, priority=9)
    s.add_workload(job("mine", "owner", replicas=1, gpus=8, priority=1, created=1.0))
    res = run(s, 2.0)
    assert res.preempted == [] and admitted(res) == set()
    s = cohort(ReclaimLent.NEVER)
    place(s, "b1", "borrower", ("c-b200-r0-n0", "c-b200-r0-n1"), 8)
    s.add_workload(job("mine", "owner", replicas=1, gpus=8, priority=1, created=1.0))
    assert run(s, 2.0).preempted == []


def test_no_reclaim_beyond_the_guarantee_or_from_quotas_that_do_not_borrow():
    s = scheduler(
        [center()],
        [
            quota("owner", guaranteed=8, limit=16, cohort="k"),
            quota("member", guaranteed=8, limit=16, cohort="k"),
        ],
        two_nodes(),
    )
    place(s, "own", "owner", ("c-b200-r0-n0",), 8, priority=5)
    place(s, "m", "member", ("c-b200-r0-n1",), 8)  # within its guarantee: lends nothing
    s.add_workload(job("more", "owner", replicas=1, gpus=8, priority=5, created=1.0))
    res = run(s, 2.0)
    assert res.preempted == [] and admitted(res) == set()


def test_work_admitted_in_this_cycle_is_not_preempted_in_the_same_cycle():
    """A borrowing job waits for pass 2; it may not undo a pass-1 admission — it preempts next cycle."""
    s = scheduler(
        [center()],
        [quota("a", guaranteed=8, limit=16, cohort="k"), quota("b", guaranteed=32, cohort="k")],
        rack_nodes(racks=1, per_rack=4),
    )
    s.add_workload(job("big", "a", replicas=2, priority=5))
    s.add_workload(job("small", "a", replicas=1, priority=0))
    res = run(s, 1.0)
    assert admitted(res) == {"small"} and res.preempted == []
    assert s.workloads["small"].placement is not None
    res = run(s, 2.0)
    assert [(p.key, p.preemptor) for p in res.preempted] == [("small", "big")]
    assert [(a.key, a.after, a.borrowed) for a in res.admitted] == [("big", ("small",), 8)]


def test_a_job_that_can_never_fit_preempts_nothing():
    """Above its quota's limit, or larger than any rack its topology allows: stopping others would not
    make room, so nothing is stopped for it (a job that could fit does preempt)."""
    s = scheduler([center()], [quota("q", guaranteed=64)], two_nodes())
    place(s, "low", "q", ("c-b200-r0-n0", "c-b200-r0-n1"), 8)
    s.add_workload(job("over-limit", "q", replicas=9, gpus=8, priority=5, created=1.0))
    s.add_workload(job("over-rack", "q", replicas=3, gpus=8, key_=RACK, priority=5, created=2.0))
    res = run(s, 2.0)
    assert res.preempted == [] and admitted(res) == set()
    got = pending(res)
    assert got["over-limit"][1].endswith(
        "it can never be admitted as it stands; ask for less or raise the quota"
    )
    assert got["over-rack"][0] == "NoDomainLargeEnough"
    s.add_workload(job("fits", "q", replicas=2, gpus=8, key_=RACK, priority=5, created=3.0))
    assert [p.key for p in run(s, 3.0).preempted] == ["low"]
