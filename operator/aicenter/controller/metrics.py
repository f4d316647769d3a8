"""Prometheus metrics in the text exposition format, with no extra dependency."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict


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

    def __init__(self, name: str, help_: str, buckets: tuple[float, ...] | None = None) -> None:
        self.name, self.help = name, help_
        self.buckets = buckets or self.BUCKETS
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.n = 0
        self.lock = threading.Lock()

    def observe(self, v: float) -> None:
        with self.lock:
            self.counts[bisect.bisect_left(self.buckets, v)] += 1
            self.sum += v
            self.n += 1

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        acc = 0
        for b, c in zip(self.buckets, self.counts, strict=False):
            acc += c
            out.append(f'{self.name}_bucket{{le="{b}"}} {acc}')
        out.append(f'{self.name}_bucket{{le="+Inf"}} {self.n}')
        out += [f"{self.name}_sum {self.sum}", f"{self.name}_count {self.n}"]
        return out


class Metrics:
    """The operator's counters and histograms; gauges are set from outside (``set_gauges``)."""

    def __init__(self) -> None:
        self.admitted = Counter("aicenter_admissions_total", "Workloads admitted by the scheduler")
        self.pods_created = Counter(
            "aicenter_pods_created_total", "Replica pods created (bound to their node)"
        )
        self.pods_bound = Counter("aicenter_pods_bound_total", "Others' pods bound (the Binding subresource)")
        self.pods_deleted = Counter("aicenter_pods_deleted_total", "Pod deletions the API server accepted")
        self.delete_errors = Counter(
            "aicenter_pod_delete_errors_total", "Pod deletions that failed (retried)"
        )
        self.admission_errors = Counter(
            "aicenter_admission_errors_total", "Admissions whose writes failed (rolled back)"
        )
        self.preemptions = Counter("aicenter_preemptions_total", "Workloads preempted")
        self.restarts = Counter("aicenter_restarts_total", "Replica/gang restarts (failures, evictions)")
        self.orphans = Counter(
            "aicenter_orphan_pods_deleted_total", "Pods of ours no placement claimed, deleted"
        )
        self.finished = Counter("aicenter_jobs_finished_total", "Jobs finished, by phase", labelled=True)
        self.status_writes = Counter("aicenter_status_writes_total", "Status subresource writes")
        self.loop_errors = Counter(
            "aicenter_loop_errors_total", "Scheduling steps or write tasks that raised"
        )
        self.cycle_seconds = Histogram("aicenter_scheduling_cycle_seconds", "Duration of one core cycle")
        self.admission_seconds = Histogram(
            "aicenter_time_to_admission_seconds",
            "From a workload's creation to its admission being applied",
            (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
        )
        self.gauges: list[str] = []

    def set_gauges(self, lines: list[str]) -> None:
        self.gauges = lines

    def render(self) -> str:
        lines: list[str] = []
        for m in (
            self.admitted,
            self.pods_created,
            self.pods_bound,
            self.pods_bound,
            self.pods_deleted,
            self.delete_errors,
            self.admission_errors,
            self.preemptions,
            self.restarts,
            self.orphans,
            self.finished,
            self.status_writes,
            self.loop_errors,
            self.cycle_seconds,
            self.admission_seconds,
        ):
            lines += m.render()
        lines += self.gauges
        return "\n".join(lines) + "\n"
