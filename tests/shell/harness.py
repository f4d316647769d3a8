"""Runs the operator's shell (the real Controller: cache, loop, writers) against the fake API server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fakeapi import FakeCluster, FakeKube, FaultPolicy, no_faults

from aicenter.controller.config import Settings
from aicenter.controller.loop import Controller
from aicenter.controller.metrics import Metrics
from aicenter.core.invariants import violations


@dataclass
class Harness:
    faults: FaultPolicy = no_faults
    settings: Settings = field(
        default_factory=lambda: Settings(room_timeout=30.0, bind_timeout=20.0, sweep_interval=30.0)
    )
    cluster: FakeCluster = field(default_factory=FakeCluster)

    def __post_init__(self) -> None:
        self.kube = FakeKube(self.cluster, self.faults)
        self.ctl = Controller(self.settings, self.kube, Metrics(), clock=self.cluster.now)  # type: ignore[arg-type]

    @property
    def cache(self):
        return self.ctl.cache

    def start(self) -> None:
        """The informers' first lists, then leadership (as after a fresh start)."""
        self.cluster.attach(self.ctl.cache)
        self.ctl.lead(list(self.cluster.jobs.values()), self.cluster.now())

    async def spin(self, n: int = 60) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    async def tick(self, dt: float = 1.0) -> None:
        self.cluster.advance(dt)
        self.cluster.deliver()
        self.ctl.step(self.cluster.now())
        await self.spin()
        self.cluster.deliver()
        await self.spin(10)

    async def run(self, seconds: float, dt: float = 1.0) -> None:
        for _ in range(int(seconds / dt)):
            await self.tick(dt)

    def busy(self) -> bool:
        c = self.cluster
        return bool(
            self.ctl.tasks
            or c._queue
            or c._later
            or any(p["metadata"].get("deletionTimestamp") for p in c.pods.values())
            or self.cache.status_dirty
            or self.cache.orphans
            or any(ns.over > 0 for ns in self.ctl.sched.inventory.nodes.values())  # an eviction is due
        )

    async def quiesce(self, max_s: float = 900.0) -> None:
        """Faults off, watches whole again; run until nothing is in flight, then a little more."""
        self.kube.faults = no_faults
        self.cluster.drop_watch = 0.0
        self.cluster.watch_delay = (0.0, 0.0)
        self.cluster.hide_job_deletions = False
        for source in ("nodes", "ours", "others", "workload", "namespaces"):
            self.cluster.relist(source)
        t0 = self.cluster.now()
        quiet = 0
        while self.cluster.now() - t0 < max_s:
            await self.tick(1.0)
            quiet = 0 if self.busy() else quiet + 1
            if quiet >= 15:
                return
        raise AssertionError(
            f"no quiescence in {max_s}s: tasks {len(self.ctl.tasks)}, orphans {self.cache.orphans}"
        )

    def check(self) -> None:
        """The invariants, from the fake API server's state (not the operator's word)."""
        bad = self.cluster.violations()
        bad += [f"core: {v}" for v in violations(self.ctl.sched)]
        for key, rec in self.cache.jobs.items():
            st = (self.cluster.jobs.get(key) or {}).get("status") or {}
            if st.get("phase") != rec.phase:
                bad.append(f"job {key}: status says {st.get('phase')}, the operator {rec.phase}")
        assert not bad, "\n".join(bad)

    def phase(self, ns: str, name: str) -> str | None:
        return ((self.cluster.jobs.get(f"{ns}/{name}") or {}).get("status") or {}).get("phase")

    def status(self, ns: str, name: str) -> dict:
        return (self.cluster.jobs.get(f"{ns}/{name}") or {}).get("status") or {}

    def live_pods(self, ns: str | None = None) -> list[str]:
        return sorted(
            k
            for k, p in self.cluster.pods.items()
            if (ns is None or k.startswith(ns + "/")) and p["status"]["phase"] not in ("Succeeded", "Failed")
        )

    def writes(self, method: str, fragment: str) -> int:
        return sum(1 for m, p in self.cluster.requests if m == method and fragment in p)
