"""Quota ledger: GPUs used, borrowed and lent per quota and class, within cohorts.

Rules, per GPU class:
- a quota never uses more than its ``limit``;
- usage up to ``guaranteed`` is the quota's own; above it is borrowed from idle guarantees of
  quotas in the same cohort of the same centre, so a cohort never uses more than the sum of its
  members' guarantees (Σ used ≤ Σ guaranteed; total borrowed ≤ total idle guarantee);
- a quota without a cohort is a cohort of one: it cannot borrow.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from .model import QuotaSpec


def fmt(n: int) -> str:
    return f"{n:,}"


@dataclass
class ClassUsage:
    guaranteed: int
    limit: int
    used: int = 0

    @property
    def borrowed(self) -> int:
        return max(0, self.used - self.guaranteed)

    @property
    def idle(self) -> int:
        return max(0, self.guaranteed - self.used)


#: Refusal kinds (``QuotaLedger.refusal_kind``) that no change of usage can lift: no such quota, no
#: GPUs of the class in it, or more than it could ever hold.
NEVER_KINDS = frozenset({"unknown", "none", "never"})


class QuotaLedger:
    """Usage bookkeeping for every quota; O(1) admission checks."""

    def __init__(self) -> None:
        self.specs: dict[str, QuotaSpec] = {}
        self.usage: dict[str, dict[str, ClassUsage]] = {}
        # (centre, cohort id, class) → [Σ guaranteed, Σ used, changes]: the last counts every charge
        # to a member, so that a cached answer about the cohort can tell it is still current.
        self._cohorts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        # GPUs charged to quotas not (or no longer) known, kept until the quota arrives: the shell
        # may feed running workloads before their quota (e.g. when it rebuilds after a restart).
        self._unknown: dict[str, dict[str, int]] = {}
        # Memos for a saturated queue, which asks the same questions many times per cycle: refusal
        # messages by every number they depend on (cleared when a quota changes), and dominant
        # shares (dropped when the quota's usage or spec changes).
        self._refusals: dict[tuple[str, str, int, int, int], str] = {}
        self._shares: dict[str, float] = {}
        self.layout = 0  # bumped when a quota or a quota's class usage appears, changes or goes

    @staticmethod
    def cohort_id(spec: QuotaSpec) -> str:
        return spec.cohort if spec.cohort else f"quota:{spec.name}"

    def _cohort(self, spec: QuotaSpec, cls: str) -> list[int]:
        return self._cohorts[(spec.center, self.cohort_id(spec), cls)]

    def cohort_of(self, spec: QuotaSpec, cls: str) -> list[int]:
        """The live counters of the quota's cohort for ``cls``: [Σ guaranteed, Σ used, changes]."""
        return self._cohort(spec, cls)

    def set_quota(self, spec: QuotaSpec) -> None:
        """Add or replace a quota, keeping the usage it already has."""
        self.layout += 1
        self._refusals.clear()
        self._shares.pop(spec.name, None)
        if spec.name in self.specs:
            self.remove_quota(spec.name)
        old_usage = self._unknown.pop(spec.name, {})
        self.specs[spec.name] = spec
        cls_usage = {}
        for cls in sorted(set(spec.classes()) | set(old_usage)):
            g = spec.guaranteed.get(cls, 0)
            lim = max(g, spec.limit.get(cls, g))
            used = old_usage.get(cls, 0)
            cls_usage[cls] = ClassUsage(g, lim, used)
            c = self._cohort(spec, cls)
            c[0] += g
            c[1] += used
        self.usage[spec.name] = cls_usage

    def remove_quota(self, name: str) -> None:
        spec = self.specs.pop(name, None)
        if spec is None:
            return
        self.layout += 1
        self._refusals.clear()
        self._shares.pop(name, None)
        kept = {}
        for cls, u in self.usage.pop(name, {}).items():
            c = self._cohort(spec, cls)
            c[0] -= u.guaranteed
            c[1] -= u.used
            if u.used:
                kept[cls] = u.used
        if kept:
            self._unknown[name] = kept

    def charge(self, quota: str, cls: str, gpus: int) -> None:
        """Add (or with a negative number, release) usage; kept aside for quotas not known yet."""
        spec = self.specs.get(quota)
        if spec is None:
            held = self._unknown.setdefault(quota, {})
            held[cls] = held.get(cls, 0) + gpus
            if not held[cls]:
                del held[cls]
            if not held:
                del self._unknown[quota]
            return
        u = self.usage[quota].get(cls)
        if u is None:
            u = self.usage[quota][cls] = ClassUsage(0, 0)
            self.layout += 1
        u.used += gpus
        cohort = self._cohort(spec, cls)
        cohort[1] += gpus
        cohort[2] += 1
        self._shares.pop(quota, None)

    def used(self, quota: str, cls: str) -> int:
        u = self.usage.get(quota, {}).get(cls)
        return u.used if u else 0

    def is_borrowing(self, quota: str, cls: str) -> bool:
        u = self.usage.get(quota, {}).get(cls)
        return bool(u and u.borrowed > 0)

    def within_guarantee(self, quota: str, cls: str, gpus: int) -> bool:
        u = self.usage.get(quota, {}).get(cls)
        return bool(u and u.used + gpus <= u.guaranteed)

    def check(self, quota: str, cls: str, gpus: int) -> str | None:
        """None when ``gpus`` more of ``cls`` fit the quota, else a plain-language reason."""
        spec = self.specs.get(quota)
        if spec is None:
            return f"quota {quota} does not exist"
        u = self.usage[quota].get(cls)
        if u is None or u.limit == 0:
            return f"quota {quota} has no {cls} GPUs in its allocation"
        cohort = self._cohort(spec, cls)
        if u.used + gpus <= u.limit and cohort[1] + gpus <= cohort[0]:
            return None
        key = (quota, cls, gpus, u.used, cohort[1])
        msg = self._refusals.get(key)
        if msg is None:
            if len(self._refusals) >= 4096:
                self._refusals.clear()
            msg = self._refusals[key] = self._refusal(spec, u, cls, gpus, cohort)
        return msg

    def refusal_kind(self, quota: str, cls: str, gpus: int) -> str | None:
        """Which refusal ``check`` gives (None: none); two refusals of one kind for the same quota, class
        and request differ only in their numbers."""
        spec = self.specs.get(quota)
        if spec is None:
            return "unknown"
        u = self.usage[quota].get(cls)
        if u is None or u.limit == 0:
            return "none"
        cohort = self._cohort(spec, cls)
        if u.used + gpus <= u.limit and cohort[1] + gpus <= cohort[0]:
            return None
        return self._kind(spec, u, gpus, cohort)

    def never(self, quota: str, cls: str, gpus: int) -> bool:
        """Whether ``gpus`` of ``cls`` are more than the quota could ever hold as it stands: above its
        limit, or above what its cohort guarantees in all (a quota alone: its own guarantee)."""
        return self.refusal_kind(quota, cls, gpus) in NEVER_KINDS

    @staticmethod
    def _kind(spec: QuotaSpec, u: ClassUsage, gpus: int, cohort: list[int]) -> str:
        if gpus > u.limit or gpus > cohort[0]:
            return "never"
        if u.used + gpus > u.limit:
            return "limit"
        if u.used + gpus <= u.guaranteed:
            return "lent"
        return "alone" if spec.cohort is None else "borrow"

    def _refusal(self, spec: QuotaSpec, u: ClassUsage, cls: str, gpus: int, cohort: list[int]) -> str:
        quota = spec.name
        kind = self._kind(spec, u, gpus, cohort)
        if kind == "never":
            if gpus > u.limit:
                bound = f"its limit is {fmt(u.limit)} {cls}"
            elif spec.cohort is None:
                bound = f"it may use only its guarantee of {fmt(cohort[0])} {cls} (it is in no cohort)"
            else:
                bound = f"cohort {spec.cohort} guarantees only {fmt(cohort[0])} {cls} in all"
            return (
                f"quota {quota}: {fmt(gpus)} {cls} requested but {bound} — it can never be admitted as "
                f"it stands; ask for less or raise the quota"
            )
        if kind == "limit":
            return (
                f"quota {quota}: limit {fmt(u.limit)} {cls} reached — "
                f"{fmt(u.used)} used, {fmt(gpus)} requested"
            )
        g_sum, used_sum = cohort[0], cohort[1]
        if kind == "lent":
            # Within its own guarantee, but other quotas still borrow part of it: it gets the GPUs
            # back by reclaim (preemption), not by pushing the cohort past Σ guaranteed.
            return (
                f"quota {quota}: {fmt(gpus)} {cls} requested within its guarantee ({fmt(u.used)} used of "
                f"{fmt(u.guaranteed)}) but {fmt(used_sum + gpus - g_sum)} of it is lent to other quotas of "
                f"cohort {spec.cohort} until they give it back"
            )
        others_idle = max(0, g_sum - used_sum - u.idle)
        if kind == "alone":
            return (
                f"quota {quota}: guarantee {fmt(u.guaranteed)} {cls} reached — {fmt(u.used)} used, "
                f"{fmt(gpus)} requested, and it is in no cohort to borrow from"
            )
        return (
            f"quota {quota}: would borrow {fmt(u.used + gpus - u.guaranteed)} {cls} "
            f"({fmt(u.used)} used of {fmt(u.guaranteed)} guaranteed, {fmt(gpus)} requested) but the "
            f"other quotas of cohort {spec.cohort} have only {fmt(others_idle)} idle"
        )

    def borrowed_by(self, quota: str, cls: str, gpus: int) -> int:
        """GPUs of ``gpus`` more that would be borrowed (above the guarantee)."""
        u = self.usage.get(quota, {}).get(cls)
        if u is None:
            return gpus
        return max(0, u.used + gpus - max(u.guaranteed, u.used))

    def guaranteed_in(self, center: str) -> int:
        """The sum of the guarantees of a centre's quotas, every class."""
        return sum(g for q in self.specs.values() if q.center == center for g in q.guaranteed.values())

    def lent(self, quota: str, cls: str) -> int:
        """This quota's share of what its cohort borrows, split over idle guarantees."""
        spec = self.specs.get(quota)
        u = self.usage.get(quota, {}).get(cls)
        if spec is None or u is None or u.idle == 0:
            return 0
        cid = self.cohort_id(spec)
        members = [
            self.usage[q][cls]
            for q, s in self.specs.items()
            if s.center == spec.center and self.cohort_id(s) == cid and cls in self.usage[q]
        ]
        borrowed = sum(m.borrowed for m in members)
        idle = sum(m.idle for m in members)
        return min(u.idle, borrowed * u.idle // idle) if idle else 0

    def dominant_share(self, quota: str) -> float:
        """Weighted dominant share: max over classes of used / guaranteed (or limit), / weight."""
        share = self._shares.get(quota)
        if share is not None:
            return share
        spec = self.specs.get(quota)
        if spec is None:
            return 0.0
        share = 0.0
        for u in self.usage[quota].values():
            base = u.guaranteed or u.limit
            if base:
                share = max(share, u.used / base)
        share = self._shares[quota] = share / max(1, spec.weight)
        return share
