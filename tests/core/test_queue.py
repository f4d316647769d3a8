"""Queue order (priority → weighted dominant share → FIFO), the two passes, backfill, starvation."""

from __future__ import annotations

from aicenter.core import SchedulerConfig

from .builders import admitted, center, job, pending, quota, rack_nodes, run, scheduler


def one_rack(nodes: int = 1, **kw) -> list:
    return rack_nodes(racks=1, per_rack=nodes, **kw)


def test_higher_priority_goes_first_whatever_its_age():
    s = scheduler([center()], [quota("a", guaranteed=8), quota("b", guaranteed=8)], one_rack())
    s.add_workload(job("old", "a", created=0.0, priority=0))
    s.add_workload(job("urgent", "b", created=50.0, priority=5))
    assert admitted(run(s, 60.0)) == {"urgent"}


def test_equal_priority_goes_to_the_quota_with_the_lowest_dominant_share():
    s = scheduler([center()], [quota("a", guaranteed=32), quota("b", guaranteed=32)], one_rack(4))
    s.add_workload(job("a-running", "a", replicas=3))
    run(s, 0.0)
    s.add_workload(job("a-next", "a", created=1.0))
    s.add_workload(job("b-next", "b", created=2.0))
    s.add_workload(job("b-later", "b", created=3.0))
    # One node left: b (share 0) goes before a (share 24/32) although a's job is older.
    assert admitted(run(s, 4.0)) == {"b-next"}


def test_weights_scale_the_share():
    s = scheduler(
        [center()],
        [quota("a", guaranteed=32, weight=4), quota("b", guaranteed=32)],
        one_rack(5),
    )
    s.add_workload(job("a-running", "a", replicas=3))
    s.add_workload(job("b-running", "b", replicas=1))
    run(s, 0.0)
    s.add_workload(job("b-next", "b", created=1.0))
    s.add_workload(job("a-next", "a", created=2.0))
    # a: 24/32/4 = 0.1875 < b: 8/32 = 0.25.
    assert admitted(run(s, 3.0)) == {"a-next"}


def test_fifo_within_a_quota_and_shares_updated_as_jobs_are_admitted():
    s = scheduler([center()], [quota("a", guaranteed=64), quota("b", guaranteed=64)], one_rack(4))
    for i in range(4):
        s.add_workload(job(f"a{i}", "a", created=float(i)))
    for i in range(4):
        s.add_workload(job(f"b{i}", "b", created=10.0 + i))
    res = run(s, 20.0)
    # Four nodes shared two by two (not four to the older quota), oldest first within each.
    assert [a.key for a in res.admitted] == ["a0", "b0", "a1", "b1"]


def test_borrowing_waits_for_owners_later_in_the_queue():
    """Pass 1 admits work within guarantees; a borrower ahead in the queue cannot take the GPUs."""
    s = scheduler(
        [center()],
        [
            quota("owner", guaranteed=8, cohort="k"),
            quota("idle", guaranteed=8, cohort="k"),
            quota("borrower", guaranteed=0, limit=16, cohort="k"),
        ],
        one_rack(1),
    )
    s.add_workload(job("borrow", "borrower", created=0.0, priority=10))
    s.add_workload(job("own", "owner", created=5.0, priority=0))
    res = run(s, 10.0)
    assert admitted(res) == {"own"}
    assert pending(res)["borrow"][0] == "InsufficientGPUs"
    # With the owner's job gone, the borrower gets the node, and says it borrows.
    s.remove_workload("own")
    res = run(s, 20.0)
    assert [(a.key, a.borrowed) for a in res.admitted] == [("borrow", 8)]


def test_backfill_admits_small_work_behind_a_blocked_gang():
    s = scheduler([center()], [quota("q", guaranteed=64), quota("other", guaranteed=8)], one_rack(4))
    s.add_workload(job("busy", "other", replicas=1))
    run(s, 0.0)
    s.add_workload(job("big", "q", replicas=4, created=1.0, priority=5))
    s.add_workload(job("small", "q", replicas=1, created=2.0))
    res = run(s, 3.0)
    assert admitted(res) == {"small"}
    assert pending(res)["big"][0] == "InsufficientGPUs"


def _starvation_run(starvation_s: float):
    s = scheduler(
        [center()],
        [quota("q", guaranteed=64)],
        one_rack(4),
        SchedulerConfig(starvation_s=starvation_s),
    )
    for i in range(4):
        s.add_workload(job(f"s{i}", "q", created=0.0))
    s.add_workload(job("big", "q", replicas=4, created=1.0))
    steps = []
    steps.append(run(s, 1.0))  # s0–s3 fill the rack; big waits
    s.remove_workload("s0")
    s.add_workload(job("s4", "q", created=100.0))
    steps.append(run(s, 100.0))  # not starving yet: s4 backfills
    s.remove_workload("s1")
    s.add_workload(job("s5", "q", created=400.0))
    steps.append(run(s, 400.0))  # starving: the nodes drain for big
    for k in ("s2", "s3", "s4"):
        s.remove_workload(k)
    steps.append(run(s, 500.0))
    return s, steps


def test_a_starving_gang_reserves_nodes_so_that_they_drain_for_it():
    s, (first, second, third, fourth) = _starvation_run(starvation_s=300.0)
    assert admitted(first) == {"s0", "s1", "s2", "s3"}
    assert admitted(second) == {"s4"}
    assert admitted(third) == set()
    _, message = pending(third)["big"]
    assert message.endswith("; 4 nodes reserved for it so that they drain")
    assert pending(third)["s5"][0] == "InsufficientGPUs"
    assert admitted(fourth) == {"big"}
    # Reservations last one cycle: nothing stays held back.
    assert not any(ns.reserved for ns in s.inventory.nodes.values())


def test_without_starvation_protection_small_jobs_keep_the_gang_out():
    _, (_, _, third, fourth) = _starvation_run(starvation_s=1e12)
    assert admitted(third) == {"s5"}
    assert admitted(fourth) == set()
