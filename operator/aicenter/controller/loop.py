"""The one scheduling loop: events feed the cache; one loop decides, assumes, writes, forgets on failure.

All state lives on the asyncio loop's thread: informer threads and kopf handlers only post events
to it, so nothing races over GPUs. A step:

1. feeds the core the nodes whose facts or usage changed;
2. advances the lifecycle of the jobs whose pods changed (and of every unfinished job now and then,
   to heal a missed event), deletes orphans and expired jobs;
3. runs one core cycle and hands its decisions to the writers: evictions and preemptions stop work
   at once (their pods hold their room until gone), admissions are assumed and applied;
4. writes the statuses that changed (a pending job's only when its reason changed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aicenter import api
from aicenter.api import Obj
from aicenter.core import Pending, Scheduler

from .apply import Applier
from .cache import Cache
from .config import Settings
from .events import Events
from .groups import group_of_unit, is_group_unit
from .kube import Kube
from .lifecycle import Lifecycle
from .metrics import Metrics
from .records import JobRecord
from .status import StatusWriter

log = logging.getLogger("aicenter.loop")
RESYNC_S = 5.0  # every unfinished job is reconciled at least this often


class Controller:
    def __init__(
        self, settings: Settings, kube: Kube, metrics: Metrics, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings, self.kube, self.metrics, self.clock = settings, kube, metrics, clock
        self.sched = Scheduler()
        self.wake = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()
        self.cache = Cache(
            self.sched, on_dirty=self.wake.set, clock=clock, watched=frozenset(settings.namespaces)
        )
        self.events = Events(kube, settings.identity, clock, self.spawn)
        self.applier = Applier(
            self.cache, kube, settings, metrics, self.events, clock, self.spawn, self.wake.set
        )
        self.lifecycle = Lifecycle(self.cache, self.applier, self.events, metrics, settings, clock)
        self.status = StatusWriter(self.cache, kube, metrics, self.spawn, self.events, clock)
        self.leader = False
        self.last_cycle = clock()
        self.queue: list[Pending] = []  # the last cycle's pending units, in the order it considered them
        self._last_resync = 0.0

    # -- tasks ----------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self._done)
        return t

    def _done(self, t: asyncio.Task) -> None:
        self.tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("a write task failed", exc_info=t.exception())
            self.metrics.loop_errors.inc()

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait until no write is in flight (tests)."""
        deadline = time.monotonic() + timeout
        while self.tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self.tasks), timeout=max(0.0, deadline - time.monotonic()))

    # -- leadership -----------------------------------------------------------------------------

    def lead(self, jobs: list[Obj] | None = None, listed_at: float = 0.0) -> None:
        """Become the leader: from now on the records are this replica's own truth."""
        self.cache.leading = True
        if jobs is not None:
            self.cache.rebuild(jobs, listed_at)
        self.leader = True
        self.wake.set()

    # -- the loop ---------------------------------------------------------------------------------

    def ready(self) -> bool:
        return self.cache.ready()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=self.settings.cycle_interval)
                await asyncio.sleep(0.02)  # let a burst of events land in one cycle
            except TimeoutError:
                pass
            self.wake.clear()
            self.last_cycle = self.clock()
            if not self.leader or not self.ready():
                continue
            try:
                self.step(self.clock())
            except Exception:
                log.exception("scheduling step failed")
                self.metrics.loop_errors.inc()

    def step(self, now: float) -> None:
        cache = self.cache
        cache.notify()  # writers waiting for room or a retry look again every cycle
        cache.expire_inflight(now)
        cache.flush()
        dirty, cache.dirty = cache.dirty, set()
        if now - self._last_resync >= RESYNC_S:  # self-heal any missed event
            self._last_resync = now
            dirty |= {k for k, r in cache.jobs.items() if not r.finished}
        for key in sorted(dirty):
            rec = cache.jobs.get(key)
            if rec is None:
                continue
            if rec.busy:
                cache.dirty.add(key)  # look again once its writes are done
                continue
            self.lifecycle.reconcile(rec, now)
            self._unschedulable(rec, now)
        self.lifecycle.sweep(now)
        # Sizes that live on an owning object are read once. A group is dirty from its creation until
        # synced (and again when its owner's read ends), so only dirty groups can still need one.
        for key in list(cache.dirty_groups):
            g = cache.groups.get(key)
            if (
                g is not None
                and g.ident.size is None
                and g.ident.owner is not None
                and g.ident.owner.uid not in cache.owner_sizes
            ):
                self.applier.read_owner(g)
        cache.sync_groups(now)
        cache.flush()
        t0 = time.perf_counter()
        res = self.sched.cycle(now)
        self.metrics.cycle_seconds.observe(time.perf_counter() - t0)
        for ev in res.evicted:
            if is_group_unit(ev.key):
                self._group_stop(ev.key, ev.reason, ev.message)
                continue
            rec = self._rec_of(ev.key)
            if rec is not None:
                self.lifecycle.evicted(rec, ev, now)
        preempting: dict[str, asyncio.Task] = {}
        for p in res.preempted:
            if is_group_unit(p.key):
                self._group_stop(p.key, p.reason, p.message)
                continue
            rec = self._rec_of(p.key)
            if rec is not None:
                preempting[p.key] = self.applier.preempt(rec, p, now)
        for a in res.admitted:
            if is_group_unit(a.key):
                g = cache.groups.get(group_of_unit(a.key))
                if g is None:
                    self.sched.forget(a.key)
                else:
                    self.applier.bind_group(g, a, now)
                continue
            rec = self._rec_of(a.key)
            if rec is None:
                self.sched.forget(a.key)
                continue
            self.applier.admit(rec, a, now, [preempting[k] for k in a.after if k in preempting])
        partly: dict[str, Pending] = {}  # independent jobs with some replicas placed: first unit's reason
        for p in res.pending:
            self._pending(p, now, partly)
        for key, p in partly.items():
            self._partly_waiting(self.cache.jobs[key], p)
        self.queue = res.pending
        self.status.flush_jobs()
        self.status.flush_pods()

    def _rec_of(self, unit_key: str) -> JobRecord | None:
        return self.cache.jobs.get(unit_key.split("#", 1)[0])

    def _set_pending(self, rec: JobRecord, reason: str, message: str, now: float) -> None:
        """A pending job's status says why; it is rewritten only when the reason changes."""
        if rec.phase == api.PHASE_PENDING and rec.reason == reason:
            return
        rec.phase, rec.reason, rec.message = api.PHASE_PENDING, reason, message
        rec.set_condition("Admitted", False, reason, message, now)
        self.cache.status_dirty.add(rec.key)

    def _group_stop(self, key: str, reason: str, message: str) -> None:
        g = self.cache.groups.get(group_of_unit(key))
        if g is None:
            self.sched.remove_workload(key)
        else:
            self.applier.evict_group(g, key, reason, message)

    def _pending(self, p: Pending, now: float, partly: dict[str, Pending]) -> None:
        if is_group_unit(p.key):
            g = self.cache.groups.get(group_of_unit(p.key))
            if g is not None and not g.busy:
                g.reason, g.message = p.reason, p.message
            return
        rec = self._rec_of(p.key)
        if rec is None or rec.busy or rec.finished:
            return
        if rec.placements:
            partly.setdefault(rec.key, p)  # an independent job, part of it placed
            return
        self._set_pending(rec, p.reason, p.message, now)

    def _partly_waiting(self, rec: JobRecord, p: Pending) -> None:
        """An independent job with replicas placed and others waiting says how many wait and why
        (rewritten when that count or the reason changes, not when only the numbers in it do)."""
        waiting = rec.replicas - len(rec.placements) - len(rec.done)
        if waiting <= 0:
            return
        head = f"{len(rec.placements)} of {rec.replicas} replica(s) placed, {waiting} waiting — {p.reason}"
        if rec.message.startswith(head) and rec.message == rec.waiting_text:
            return
        rec.message = rec.waiting_text = f"{head}: {p.message}"
        self.cache.status_dirty.add(rec.key)

    def _unschedulable(self, rec: JobRecord, now: float) -> None:
        """Jobs the core never sees: no quota resolved, or a template the operator refuses."""
        if rec.placements or rec.finished:
            return
        if rec.refusal:
            self._set_pending(rec, "Unsupported", rec.refusal, now)
        elif rec.quota is None and rec.quota_error:
            self._set_pending(rec, "NoQuota", rec.quota_error, now)
