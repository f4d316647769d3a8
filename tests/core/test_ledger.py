"""The quota ledger: limits, guarantees, borrowing within a cohort, lending, fair-share inputs."""

from __future__ import annotations

from aicenter.core import QuotaLedger

from .builders import quota


def ledger(*specs) -> QuotaLedger:
    lg = QuotaLedger()
    for s in specs:
        lg.set_quota(s)
    return lg


def test_within_guarantee_needs_no_cohort():
    lg = ledger(quota("solo", guaranteed=16, limit=32))
    assert lg.check("solo", "B200", 16) is None
    assert lg.within_guarantee("solo", "B200", 16)
    assert lg.borrowed_by("solo", "B200", 16) == 0


def test_a_quota_without_a_cohort_cannot_borrow():
    lg = ledger(quota("solo", guaranteed=16, limit=32))
    lg.charge("solo", "B200", 16)
    assert lg.check("solo", "B200", 8) == (
        "quota solo: guarantee 16 B200 reached — 16 used, 8 requested, and it is in no cohort to borrow from"
    )


def test_limit_message_in_plain_language():
    lg = ledger(
        quota("universities", guaranteed=10_000, limit=20_000, cohort="public"),
        quota("startups", guaranteed=40_000, cohort="public"),
    )
    lg.charge("universities", "B200", 19_992)
    assert lg.check("universities", "B200", 16) == (
        "quota universities: limit 20,000 B200 reached — 19,992 used, 16 requested"
    )
    assert lg.check("universities", "B200", 8) is None


def test_more_than_a_quota_could_ever_hold_is_never():
    lg = ledger(
        quota("solo", guaranteed=16, limit=32),
        quota("a", guaranteed=8, limit=64, cohort="k"),
        quota("b", guaranteed=16, limit=16, cohort="k"),
    )
    assert lg.check("solo", "B200", 40) == (
        "quota solo: 40 B200 requested but its limit is 32 B200 — it can never be admitted as it stands; "
        "ask for less or raise the quota"
    )
    assert lg.check("solo", "B200", 24) == (
        "quota solo: 24 B200 requested but it may use only its guarantee of 16 B200 (it is in no cohort) — "
        "it can never be admitted as it stands; ask for less or raise the quota"
    )
    assert lg.check("a", "B200", 32) == (
        "quota a: 32 B200 requested but cohort k guarantees only 24 B200 in all — it can never be "
        "admitted as it stands; ask for less or raise the quota"
    )
    assert [lg.never(q, "B200", n) for q, n in [("solo", 40), ("solo", 16), ("a", 32), ("a", 24)]] == [
        True,
        False,
        True,
        False,
    ]
    lg.charge("solo", "B200", 16)  # usage makes a refusal, never a "never"
    assert not lg.never("solo", "B200", 16)
    assert lg.refusal_kind("solo", "B200", 16) == "alone"
    assert lg.refusal_kind("solo", "B200", 40) == "never"


def test_borrowing_takes_idle_guarantees_of_the_cohort_only():
    lg = ledger(
        quota("a", guaranteed=16, limit=64, cohort="k"),
        quota("b", guaranteed=16, limit=16, cohort="k"),
        quota("c", guaranteed=100, limit=100, cohort="other"),
    )
    lg.charge("a", "B200", 16)
    assert lg.check("a", "B200", 16) is None  # b is idle: a may borrow all of it
    assert lg.borrowed_by("a", "B200", 16) == 16
    assert not lg.within_guarantee("a", "B200", 16)
    lg.charge("a", "B200", 8)
    lg.charge("b", "B200", 4)
    assert lg.is_borrowing("a", "B200")
    assert lg.lent("b", "B200") == 8
    assert lg.lent("a", "B200") == 0
    # Σ used may not pass Σ guaranteed (32): 28 used, 8 more would make 36.
    assert lg.check("a", "B200", 8) == (
        "quota a: would borrow 16 B200 (24 used of 16 guaranteed, 8 requested) but the other quotas of "
        "cohort k have only 4 idle"
    )
    assert lg.check("a", "B200", 4) is None
    # The other cohort's idle guarantee does not count.
    assert lg.check("c", "B200", 101) is not None


def test_lent_is_split_over_idle_guarantees():
    lg = ledger(
        quota("a", guaranteed=0, limit=100, cohort="k"),
        quota("b", guaranteed=30, cohort="k"),
        quota("c", guaranteed=10, cohort="k"),
    )
    lg.charge("a", "B200", 20)
    assert lg.lent("b", "B200") == 15
    assert lg.lent("c", "B200") == 5


def test_unknown_class_and_quota_messages():
    lg = ledger(quota("a", guaranteed=8))
    assert lg.check("a", "GB200", 1) == "quota a has no GB200 GPUs in its allocation"
    assert lg.check("ghost", "B200", 1) == "quota ghost does not exist"


def test_replacing_a_quota_keeps_its_usage_and_moves_it_between_cohorts():
    lg = ledger(
        quota("a", guaranteed=16, limit=32, cohort="k"), quota("b", guaranteed=16, limit=32, cohort="k")
    )
    lg.charge("a", "B200", 12)
    assert lg.check("b", "B200", 20) is None  # b may borrow 4 of a's idle 4
    lg.set_quota(quota("a", guaranteed=8, limit=32, cohort="k"))
    assert lg.used("a", "B200") == 12
    assert lg.is_borrowing("a", "B200")
    assert lg.check("b", "B200", 12) is None
    # b's own guarantee is 16, but a borrows 4 of it: b gets them back by reclaim, not by pushing
    # the cohort past Σ guaranteed (24).
    assert lg.check("b", "B200", 16) == (
        "quota b: 16 B200 requested within its guarantee (0 used of 16) but 4 of it is lent to other "
        "quotas of cohort k until they give it back"
    )
    lg.set_quota(quota("a", guaranteed=8, limit=32, cohort="other"))
    assert lg.used("a", "B200") == 12
    assert lg.check("b", "B200", 16) is None  # a left the cohort: b's guarantee is its own again
    assert lg.check("b", "B200", 17) is not None  # and b is alone in k: no one to borrow from
    assert lg.check("a", "B200", 1) is not None  # a is alone in other and over its guarantee


def test_usage_charged_before_the_quota_arrives_is_kept():
    """The shell may rebuild the state in any order: running work can arrive before its quota."""
    lg = QuotaLedger()
    lg.charge("late", "B200", 8)
    lg.set_quota(quota("late", guaranteed=16))
    assert lg.used("late", "B200") == 8
    assert lg.check("late", "B200", 16) is not None
    # Removing and re-adding a quota keeps its usage too.
    lg.remove_quota("late")
    lg.charge("late", "B200", -8)
    lg.charge("late", "B200", 4)
    lg.set_quota(quota("late", guaranteed=16))
    assert lg.used("late", "B200") == 4


def test_dominant_share_is_weighted():
    lg = ledger(
        quota("heavy", guaranteed={"B200": 100, "GB200": 10}, weight=1),
        quota("weighted", guaranteed={"B200": 100}, weight=4),
        quota("borrower", guaranteed={"B200": 0}, limit={"B200": 50}),
    )
    lg.charge("heavy", "B200", 10)
    lg.charge("heavy", "GB200", 5)
    lg.charge("weighted", "B200", 80)
    lg.charge("borrower", "B200", 25)
    assert lg.dominant_share("heavy") == 0.5  # the GB200 share dominates
    assert lg.dominant_share("weighted") == 0.2
    assert lg.dominant_share("borrower") == 0.5  # no guarantee: share of the limit
