"""Prometheus metrics in the text exposition format, with no extra dependency."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Engine


def _labels(d: dict[str, str]) -> str:
    if not d:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(d.items()))
    return "{" + inner + "}"


class Counter:
    def __init__(self, name: str, help_: str, labelled: bool = False) -> None:
        self.name, self.help, self.labelled = name, help_, labelled
        self.values: dict[tuple, float] = defaultdict(float)
        self._key: tuple = ()

    def labels(self, **kw: str) -> Counter:
        child = Counter.__new__(Counter)
        child.name, child.help, child.values, child._key = (
            self.name,
            self.help,
            self.values,
            tuple(sorted(kw.items())),
        )
        return child

    def inc(self, n: float = 1.0) -> None:
        self.values[self._key] += n

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for k, v in sorted(self.values.items()) or [((), 0.0)]:
            out.append(f"{self.name}{_labels(dict(k))} {v}")
        return out


class Histogram:
    BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

    def __init__(self, name: str, help_: str) -> None:
        self.name, self.help = name, help_
        self.counts = [0] * (len(self.BUCKETS) + 1)
        self.sum = 0.0
        self.n = 0
        self.lock = threading.Lock()

    def observe(self, v: float) -> None:
        with self.lock:
            self.counts[bisect.bisect_left(self.BUCKETS, v)] += 1
            self.sum += v
            self.n += 1

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        acc = 0
        for b, c in zip(self.BUCKETS, self.counts, strict=False):
            acc += c
            out.append(f'{self.name}_bucket{{le="{b}"}} {acc}')
        out.append(f'{self.name}_bucket{{le="+Inf"}} {self.n}')
        out += [f"{self.name}_sum {self.sum}", f"{self.name}_count {self.n}"]
        return out


class Metrics:
    def __init__(self) -> None:
        self.admitted = Counter("aicenter_admissions_total", "Workloads admitted by the scheduler")
        self.pods_bound = Counter("aicenter_pods_bound_total", "Pods bound through the Binding subresource")
        self.bind_errors = Counter("aicenter_binding_errors_total", "Admissions whose writes failed")
        self.preemptions = Counter("aicenter_preemptions_total", "Workloads preempted")
        self.restarts = Counter("aicenter_restarts_total", "Replica/gang restarts (failures, evictions)")
        self.finished = Counter("aicenter_jobs_finished_total", "Jobs finished, by phase", labelled=True)
        self.jobs_deleted = Counter("aicenter_jobs_deleted_total", "GPUJobs deleted")
        self.loop_errors = Counter("aicenter_loop_errors_total", "Scheduling steps that raised")
        self.cycle_seconds = Histogram("aicenter_scheduling_cycle_seconds", "Duration of one core cycle")
        self.gauges: list[str] = []
        self.leader = 0

    def observe_queue(self, e: Engine) -> None:
        """Refresh the gauges from the engine (cheap: counts kept by the core and the records)."""
        lines = [
            "# HELP aicenter_leader 1 if this replica holds the scheduling lease",
            "# TYPE aicenter_leader gauge",
            f"aicenter_leader {1 if e.leader else 0}",
        ]
        lines += [
            "# HELP aicenter_queue_depth Pending workloads",
            "# TYPE aicenter_queue_depth gauge",
            f"aicenter_queue_depth {e.sched.pending_count()}",
        ]
        per_q: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for rec in e.jobs.values():
            if rec.quota is None or rec.finished:
                continue
            g = rec.replicas * rec.gpus_per_replica
            i = 0 if rec.placements else 2
            per_q[rec.quota][i] += 1
            per_q[rec.quota][i + 1] += g
        lines += ["# TYPE aicenter_quota_jobs gauge", "# TYPE aicenter_quota_gpus gauge"]
        for q, (aj, ag, pj, pg) in sorted(per_q.items()):
            lines += [
                f'aicenter_quota_jobs{{quota="{q}",state="admitted"}} {aj}',
                f'aicenter_quota_jobs{{quota="{q}",state="pending"}} {pj}',
                f'aicenter_quota_gpus{{quota="{q}",state="admitted"}} {ag}',
                f'aicenter_quota_gpus{{quota="{q}",state="pending"}} {pg}',
            ]
        lines += ["# TYPE aicenter_center_gpus gauge"]
        for (c, cls), pool in sorted(e.sched.inventory.pools.items()):
            alloc = sum(ns.used + ns.node.foreign_used for ns in pool.nodes.values())
            unhealthy = sum(
                ns.node.capacity - (ns.node.allocatable if ns.node.ready else 0) for ns in pool.nodes.values()
            )
            lab = f'center="{c}",gpu_class="{cls}"'
            lines += [
                f'aicenter_center_gpus{{{lab},state="allocated"}} {alloc}',
                f'aicenter_center_gpus{{{lab},state="free"}} {pool.free_gpus()}',
                f'aicenter_center_gpus{{{lab},state="unhealthy"}} {unhealthy}',
            ]
        self.gauges = lines

    def render(self) -> str:
        lines: list[str] = []
        for m in (
            self.admitted,
            self.pods_bound,
            self.bind_errors,
            self.preemptions,
            self.restarts,
            self.finished,
            self.jobs_deleted,
            self.loop_errors,
            self.cycle_seconds,
        ):
            lines += m.render()
        lines += self.gauges
        return "\n".join(lines) + "\n"
