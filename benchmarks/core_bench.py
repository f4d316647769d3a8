"""Scheduling-core benchmark on the full national fleet (260,000 GPUs, 41,250 nodes).

    python benchmarks/core_bench.py [--jobs N] [--seed S] [--cycles C] [--interval SECONDS]
                                    [--pending P] [--arrivals A] [--starvation S] [--profile]
                                    [--full] [--compare ROUNDS]

Loads the whole fleet into one core ``Scheduler`` and runs a job stream drawn from the fleet's
workload mix through simulated time: jobs arrive, run for their durations, finish and free their
GPUs; a cycle runs every ``--interval`` simulated seconds. Before every cycle the queue is topped up
to at least ``--pending`` + ``--margin`` waiting jobs, and at least ``--arrivals`` new jobs arrive
even when it is full (small jobs keep coming, as in a real stream). The same stream then goes
through a naive placer (same quota ledger, priority-then-FIFO queue, each replica on the node with
the most free GPUs, no topology, no preemption, no reservations), and the figures are printed side
by side with the targets. Timings are wall-clock seconds of ``cycle()`` only (feeding jobs,
completions and the simulation's bookkeeping are not counted).

The core runs with incremental cycles (the default); ``--full`` makes it re-check every pending job
every cycle (``SchedulerConfig(incremental=False)``). Every core run prints the **fingerprint** of its
decisions: a SHA-256 over every cycle's admissions (key, class, nodes, borrowed GPUs, victims),
preemptions (key, preemptor, reason), evictions (key, reason) and pending jobs (key and reason, in
queue order) — the same in both modes when an optimisation keeps the decisions. ``--compare N`` runs
the core N times in each mode, interleaved (incremental first in odd rounds, full first in even
ones), prints every run with the load average and the medians per mode, and fails if the
fingerprints differ.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import heapq
import io
import os
import pstats
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

from aicenter.core import QuotaLedger, QuotaSpec, Scheduler, SchedulerConfig
from aicenter.core.invariants import violations
from aicenter_testbed.fleet import (
    LABEL_RACK,
    LABEL_ZONE,
    Fleet,
    JobSpec,
    build_scheduler,
    iter_nodes,
    job_stream,
    load_fleet,
    workload_of,
)
from aicenter_testbed.procs import rss_mib

TARGET_PLACEMENTS_S = 5_000
TARGET_P99_S = 1.0
TARGET_ALLOCATED = 0.98
TARGET_RSS_GIB = 1.0
SATURATED = 10_000  # pending jobs at the start of a cycle for it to count as saturated
WARM = 0.95  # cycles before the fleet first starts a cycle this full are the initial fill


# -- the two placers behind one small interface ---------------------------------------------------


class CorePlacer:
    name = "core"

    def __init__(self, fleet: Fleet, config: SchedulerConfig) -> None:
        self.s: Scheduler = build_scheduler(fleet, config)
        self.capacity = fleet.gpus
        self.name = "core" if config.incremental else "core (full)"
        self.digest = hashlib.sha256()
        self.examined: list[int] = []  # per cycle: pending answers worked out in full
        self.remembered: list[int] = []  # and taken from a group's memory

    def fingerprint(self) -> str:
        return self.digest.hexdigest()[:16]

    def add(self, job: JobSpec, now: float) -> None:
        self.s.add_workload(workload_of(job, now))

    def remove(self, key: str) -> None:
        self.s.remove_workload(key)

    def cycle(self, now: float) -> tuple[list[tuple[str, tuple[str, ...]]], list[str]]:
        res = self.s.cycle(now)
        self.examined.append(self.s.examined)
        self.remembered.append(self.s.remembered)
        d = self.digest
        d.update(repr([(a.key, a.gpu_class, a.nodes, a.borrowed, a.after) for a in res.admitted]).encode())
        d.update(repr([(p.key, p.preemptor, p.reason) for p in res.preempted]).encode())
        d.update(repr([(e.key, e.reason) for e in res.evicted]).encode())
        d.update("\n".join(f"{p.key}\t{p.reason}" for p in res.pending).encode())
        return [(a.key, a.nodes) for a in res.admitted], [p.key for p in res.preempted] + [
            e.key for e in res.evicted
        ]

    def started(self, key: str, now: float) -> None:
        self.s.workloads[key].started = now

    def pending(self) -> int:
        return self.s.pending_count()

    def allocated(self) -> int:
        return sum(u.used for q in self.s.ledger.usage.values() for u in q.values())


class NaivePlacer:
    """A baseline: same quota ledger, priority → FIFO, spread to the node with the most free GPUs."""

    name = "naive spread"

    def __init__(self, fleet: Fleet) -> None:
        self.ledger = QuotaLedger()
        for c in fleet.centers:
            for q in c.quotas:
                self.ledger.set_quota(QuotaSpec(q.name, c.name, dict(q.guaranteed), dict(q.limit), q.cohort))
        self.center_of = {q.name: c.name for c in fleet.centers for q in c.quotas}
        self.free: dict[str, int] = {}
        self.heaps: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for n in iter_nodes(fleet):
            self.free[n.name] = n.shape.gpus_per_node
            self.heaps.setdefault((n.center, n.gpu_class), []).append((-n.shape.gpus_per_node, n.name))
        for h in self.heaps.values():
            heapq.heapify(h)
        self.waiting: dict[str, tuple[JobSpec, float]] = {}
        self.running: dict[str, tuple[JobSpec, list[str]]] = {}
        self.capacity = fleet.gpus
        self.used = 0

    def add(self, job: JobSpec, now: float) -> None:
        self.waiting[job.name] = (job, now)

    def _put(self, pool: tuple[str, str], node: str, delta: int) -> None:
        self.free[node] += delta
        heapq.heappush(self.heaps[pool], (-self.free[node], node))

    def remove(self, key: str) -> None:
        if self.waiting.pop(key, None) is not None:
            return
        job, nodes = self.running.pop(key)
        pool = (job.center, job.gpu_class)
        for n in nodes:
            self._put(pool, n, job.gpus_per_replica)
        self.ledger.charge(job.quota, job.gpu_class, -job.gpus)
        self.used -= job.gpus

    def _place(self, job: JobSpec) -> list[str] | None:
        pool = (job.center, job.gpu_class)
        heap, g = self.heaps[pool], job.gpus_per_replica
        out: list[str] = []
        while len(out) < job.replicas:
            while heap and -heap[0][0] != self.free[heap[0][1]]:
                heapq.heappop(heap)  # stale entry
            if not heap or -heap[0][0] < g:
                break
            _, node = heapq.heappop(heap)
            out.append(node)
            self._put(pool, node, -g)
        if len(out) < job.replicas:
            for node in out:
                self._put(pool, node, g)
            return None
        return out

    def cycle(self, now: float) -> tuple[list[tuple[str, tuple[str, ...]]], list[str]]:
        admitted = []
        order = sorted(self.waiting.items(), key=lambda kv: (-kv[1][0].priority, kv[1][1], kv[0]))
        for key, (job, _) in order:
            if self.ledger.check(job.quota, job.gpu_class, job.gpus) is not None:
                continue
            nodes = self._place(job)
            if nodes is None:
                continue
            del self.waiting[key]
            self.running[key] = (job, nodes)
            self.ledger.charge(job.quota, job.gpu_class, job.gpus)
            self.used += job.gpus
            admitted.append((key, tuple(nodes)))
        return admitted, []

    def started(self, key: str, now: float) -> None:
        pass

    def pending(self) -> int:
        return len(self.waiting)

    def allocated(self) -> int:
        return self.used


# -- the simulation -----------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    cycle_s: list[float] = field(default_factory=list)
    cycle_cpu_s: list[float] = field(default_factory=list)
    admitted: list[int] = field(default_factory=list)
    pending_at_start: list[int] = field(default_factory=list)
    alloc_before: list[float] = field(default_factory=list)
    alloc_after: list[float] = field(default_factory=list)
    requeued: int = 0
    requeued_by_kind: Counter = field(default_factory=Counter)
    requeued_gpus: int = 0
    completed: int = 0
    submitted: int = 0
    gpus_by_kind: Counter = field(default_factory=Counter)
    jobs_by_kind: Counter = field(default_factory=Counter)
    gangs: int = 0
    gangs_in_domain: int = 0
    gang_gpus: int = 0
    gang_gpus_in_domain: int = 0

    def fill(self) -> list[int]:
        """The initial fill: cycles before the first one that starts with the fleet ≥ 95% allocated."""
        first = next((i for i, a in enumerate(self.alloc_before) if a >= WARM), len(self.alloc_before))
        return list(range(first))

    def steady(self) -> list[int]:
        """Saturated cycles after the initial fill."""
        first = len(self.fill())
        return [i for i in range(first, len(self.cycle_s)) if self.pending_at_start[i] >= SATURATED]


def simulate(placer, fleet: Fleet, args, topo_of: dict[str, dict[str, str]], profile: bool = False) -> Run:
    run = Run(placer.name)
    stream = job_stream(fleet, args.jobs, args.seed)
    jobs: dict[str, JobSpec] = {}
    finish: list[tuple[float, str]] = []
    ends: dict[str, float] = {}
    prof = cProfile.Profile() if profile else None
    now = 0.0
    for i in range(args.cycles):
        while finish and finish[0][0] <= now:
            t, key = heapq.heappop(finish)
            if ends.get(key) == t:
                del ends[key]
                placer.remove(key)
                run.completed += 1
        for _ in range(max(args.arrivals, args.pending + args.margin - placer.pending())):
            job = next(stream, None)
            if job is None:
                break
            jobs[job.name] = job
            placer.add(job, now)
            run.submitted += 1
        run.pending_at_start.append(placer.pending())
        run.alloc_before.append(placer.allocated() / placer.capacity)
        if prof is not None and i > 0:
            prof.enable()
        c0, t0 = time.process_time(), time.perf_counter()
        admitted, requeued = placer.cycle(now)
        dt = time.perf_counter() - t0
        run.cycle_cpu_s.append(time.process_time() - c0)
        if prof is not None:
            prof.disable()
        run.cycle_s.append(dt)
        run.admitted.append(len(admitted))
        run.alloc_after.append(placer.allocated() / placer.capacity)
        for key in requeued:
            ends.pop(key, None)
            run.requeued += 1
            run.requeued_by_kind[jobs[key].kind] += 1
            run.requeued_gpus += jobs[key].gpus
        for key, nodes in admitted:
            job = jobs[key]
            placer.started(key, now)
            ends[key] = now + job.duration_s
            heapq.heappush(finish, (ends[key], key))
            run.gpus_by_kind[job.kind] += job.gpus
            run.jobs_by_kind[job.kind] += 1
            if job.topology_key in (LABEL_RACK, LABEL_ZONE):
                inside = len({topo_of[n][job.topology_key] for n in nodes}) == 1
                run.gangs += 1
                run.gangs_in_domain += inside
                run.gang_gpus += job.gpus
                run.gang_gpus_in_domain += job.gpus * inside
        if args.check_every and isinstance(placer, CorePlacer) and (i + 1) % args.check_every == 0:
            bad = violations(placer.s)
            assert not bad, bad[:5]
        if args.verbose:
            print(
                f"  [{placer.name}] t={now:>7.0f}s cycle {dt * 1000:7.1f} ms  admitted {len(admitted):>6}  "
                f"pending {run.pending_at_start[-1]:>6}  allocated {run.alloc_after[-1]:.4f}",
                flush=True,
            )
        now += args.interval
    if prof is not None:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())
    return run


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def verdict(ok: bool, measured: bool = True) -> str:
    if not measured:
        return "not measured"
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=80_000, help="length of the job stream (default 80,000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cycles", type=int, default=150, help="scheduling cycles to simulate (default 150)")
    ap.add_argument("--interval", type=float, default=60.0, help="simulated seconds between cycles")
    ap.add_argument("--pending", type=int, default=SATURATED, help="keep at least this many jobs pending")
    ap.add_argument("--margin", type=int, default=2_000, help="top the queue up to pending + margin")
    ap.add_argument(
        "--arrivals",
        type=int,
        default=60,
        help="jobs arriving every cycle even when the queue is full (default 60: one per simulated second)",
    )
    ap.add_argument("--starvation", type=float, default=SchedulerConfig().starvation_s)
    ap.add_argument("--check-every", type=int, default=25, help="check invariants every N cycles (0: never)")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    ap.add_argument("--full", action="store_true", help="the core re-checks every pending job every cycle")
    ap.add_argument(
        "--compare",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="run the core ROUNDS times incremental and ROUNDS times full, interleaved; print medians",
    )
    ap.add_argument("--profile", action="store_true", help="cProfile the core's cycles (after the first)")
    ap.add_argument("--verbose", "-v", action="store_true", help="print every cycle")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    fleet = load_fleet()
    probe = CorePlacer(fleet, SchedulerConfig(starvation_s=args.starvation, incremental=not args.full))
    load_s = time.perf_counter() - t0
    topo_of = {n.name: n.topology() for n in iter_nodes(fleet)}
    print(
        f"fleet: {fleet.gpus:,} GPUs on {fleet.nodes:,} nodes in {len(fleet.centers)} centres, "
        f"loaded into the core in {load_s:.2f} s"
    )
    print(
        f"stream: up to {args.jobs:,} jobs (seed {args.seed}), {args.cycles} cycles every "
        f"{args.interval:.0f} simulated s, ≥ {args.arrivals} arrivals per cycle and the queue topped up "
        f"to ≥ {args.pending + args.margin:,} pending",
        flush=True,
    )

    if args.compare:
        del probe
        return compare(fleet, args, topo_of)
    core = simulate(probe, fleet, args, topo_of, profile=args.profile)
    bad = violations(probe.s)
    core_rss = rss_mib()
    naive = None if args.no_naive else simulate(NaivePlacer(fleet), fleet, args, topo_of)

    steady = core.steady()
    total_adm = sum(core.admitted)
    total_s = sum(core.cycle_s)
    st_times = [core.cycle_s[i] for i in steady]
    st_adm = sum(core.admitted[i] for i in steady)
    fill = core.fill()
    fill_adm = sum(core.admitted[i] for i in fill)
    fill_s = sum(core.cycle_s[i] for i in fill)
    placements_s = total_adm / total_s
    p50, p99 = pct(st_times, 0.50), pct(st_times, 0.99)
    alloc = statistics.fmean(core.alloc_after[i] for i in steady) if steady else float("nan")
    alloc_min = min((core.alloc_after[i] for i in steady), default=float("nan"))

    print()
    print(f"{'':44}{probe.name:>16}{'naive spread':>16}")

    def row(label: str, a: str, b: str = "") -> None:
        print(f"{label:44}{a:>16}{b:>16}")

    n_steady = [i for i in naive.steady()] if naive else []
    n_alloc = statistics.fmean(naive.alloc_after[i] for i in n_steady) if n_steady else float("nan")
    row("cycles (saturated, after the initial fill)", f"{len(steady)}", f"{len(n_steady)}" if naive else "")
    row("jobs submitted / admitted / completed", f"{core.submitted:,}/{total_adm:,}/{core.completed:,}")
    if naive:
        row("", "", f"{naive.submitted:,}/{sum(naive.admitted):,}/{naive.completed:,}")
    row("requeued (preempted or evicted)", f"{core.requeued:,}", f"{naive.requeued:,}" if naive else "")
    row("  their GPUs", f"{core.requeued_gpus:,}")
    row(
        "  by kind",
        ", ".join(f"{k.split('-')[0]} {v}" for k, v in sorted(core.requeued_by_kind.items())) or "-",
    )
    row("time in cycle(), total", f"{total_s:.2f} s", f"{sum(naive.cycle_s):.2f} s" if naive else "")
    row("  CPU time of this process in cycle()", f"{sum(core.cycle_cpu_s):.2f} s")
    row(
        "initial fill (empty fleet)",
        f"{fill_adm:,} in {fill_s:.2f} s",
        f"{sum(naive.admitted[i] for i in naive.fill()):,}" if naive else "",
    )
    row("  placements/s in the fill", f"{fill_adm / fill_s:,.0f}" if fill_s else "-")
    row("steady: admitted per saturated cycle (mean)", f"{st_adm / max(1, len(steady)):,.0f}")
    row(
        "steady: p50 / p99 cycle",
        f"{p50 * 1000:.0f} / {p99 * 1000:.0f} ms",
        f"{pct([naive.cycle_s[i] for i in n_steady], 0.5) * 1000:.0f} / "
        f"{pct([naive.cycle_s[i] for i in n_steady], 0.99) * 1000:.0f} ms"
        if naive
        else "",
    )
    row(
        "steady: p50 / p99 cycle, CPU time",
        f"{pct([core.cycle_cpu_s[i] for i in steady], 0.5) * 1000:.0f} / "
        f"{pct([core.cycle_cpu_s[i] for i in steady], 0.99) * 1000:.0f} ms",
    )
    slowest = sorted(steady, key=lambda i: -core.cycle_s[i])[:3]
    row(
        "steady: slowest cycles (ms: admitted)",
        ", ".join(f"{core.cycle_s[i] * 1000:.0f}: {core.admitted[i]:,}" for i in slowest) or "-",
    )
    row(
        "steady: pending at cycle start (min/max)",
        f"{min(core.pending_at_start[i] for i in steady):,}/{max(core.pending_at_start[i] for i in steady):,}"
        if steady
        else "-",
    )
    row(
        "steady: GPUs allocated (mean, min)",
        f"{alloc:.4f}, {alloc_min:.4f}",
        f"{n_alloc:.4f}, {min(naive.alloc_after[i] for i in n_steady):.4f}" if n_steady else "",
    )
    if naive:
        row("allocation ratio core / naive", f"{alloc / n_alloc:.4f}")
    row(
        "multi-node gangs inside their rack/zone",
        f"{core.gangs_in_domain / max(1, core.gangs):.1%}",
        f"{naive.gangs_in_domain / max(1, naive.gangs):.1%}" if naive else "",
    )
    row(
        "  GPU-weighted",
        f"{core.gang_gpus_in_domain / max(1, core.gang_gpus):.1%}",
        f"{naive.gang_gpus_in_domain / max(1, naive.gang_gpus):.1%}" if naive else "",
    )
    for kind in ("inference", "fine-tuning", "simulation-twin", "foundation-training"):
        row(
            f"started {kind} jobs (GPUs)",
            f"{core.jobs_by_kind[kind]:,} ({core.gpus_by_kind[kind]:,})",
            f"{naive.jobs_by_kind[kind]:,} ({naive.gpus_by_kind[kind]:,})" if naive else "",
        )
    row(
        "steady: pending answers examined / remembered",
        f"{statistics.fmean(probe.examined[i] for i in steady):,.0f} / "
        f"{statistics.fmean(probe.remembered[i] for i in steady):,.0f}"
        if steady
        else "-",
    )
    row("fingerprint of the decisions", probe.fingerprint())
    row("invariants (violations) at the end", "none" if not bad else f"{len(bad)}!")
    row("peak RSS after the core run", f"{core_rss:,.0f} MiB")
    row("peak RSS at the end (both runs)", f"{rss_mib():,.0f} MiB")

    row("load average (1 min) before / after", f"{load_before:.2f} / {os.getloadavg()[0]:.2f}")
    print()
    print("targets (wall-clock; a busy machine shows as wall time above CPU time)")
    print(
        f"  placements/s (admissions / time in cycle(), whole run)  {placements_s:>9,.0f}   "
        f"≥ {TARGET_PLACEMENTS_S:,}   {verdict(placements_s >= TARGET_PLACEMENTS_S)}"
    )
    fill_rate = fill_adm / fill_s if fill_s else float("nan")
    print(
        f"  placements/s in the initial fill (empty fleet)          {fill_rate:>9,.0f}   "
        f"≥ {TARGET_PLACEMENTS_S:,}   {verdict(fill_rate >= TARGET_PLACEMENTS_S, bool(fill_s))}"
    )
    print(
        f"  p99 cycle with ≥ {SATURATED:,} pending (steady)          {p99 * 1000:>7.0f} ms  "
        f"< {TARGET_P99_S * 1000:.0f} ms  {verdict(p99 < TARGET_P99_S, bool(steady))}"
    )
    print(
        f"  GPUs allocated at saturation (mean)                     {alloc:>9.2%}   "
        f"≥ {TARGET_ALLOCATED:.0%}      {verdict(alloc >= TARGET_ALLOCATED, bool(steady))}"
    )
    print(
        f"  peak RSS (core run)                                     {core_rss / 1024:>7.2f} GiB "
        f"< {TARGET_RSS_GIB:.0f} GiB    {verdict(core_rss / 1024 < TARGET_RSS_GIB)}"
    )
    return 1 if bad else 0


def compare(fleet: Fleet, args, topo_of: dict[str, dict[str, str]]) -> int:
    """Core runs in both modes, interleaved; one line per run, then the medians per mode."""
    runs: dict[bool, list[tuple]] = {True: [], False: []}
    fingerprints: set[str] = set()
    print()
    print(
        f"{'round':>5}  {'mode':<12}{'placements/s':>13}{'CPU/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'alloc':>8}{'gangs':>7}{'examined':>10}  {'fingerprint':<17}{'load 1m':>8}"
    )
    for r in range(args.compare):
        for incremental in (True, False) if r % 2 == 0 else (False, True):
            placer = CorePlacer(fleet, SchedulerConfig(starvation_s=args.starvation, incremental=incremental))
            load = os.getloadavg()[0]
            run = simulate(placer, fleet, args, topo_of)
            bad = violations(placer.s)
            steady = run.steady()
            adm = sum(run.admitted)
            figures = (
                adm / sum(run.cycle_s),
                adm / sum(run.cycle_cpu_s),
                pct([run.cycle_s[i] for i in steady], 0.5) * 1000,
                pct([run.cycle_s[i] for i in steady], 0.99) * 1000,
                statistics.fmean(run.alloc_after[i] for i in steady) if steady else float("nan"),
                run.gangs_in_domain / max(1, run.gangs),
                statistics.fmean(placer.examined[i] for i in steady) if steady else float("nan"),
            )
            runs[incremental].append(figures)
            fingerprints.add(placer.fingerprint())
            mode = "incremental" if incremental else "full"
            print(
                f"{r + 1:>5}  {mode:<12}{figures[0]:>13,.0f}{figures[1]:>9,.0f}{figures[2]:>8.0f}"
                f"{figures[3]:>8.0f}{figures[4]:>8.2%}{figures[5]:>7.1%}{figures[6]:>10,.0f}  "
                f"{placer.fingerprint():<17}{load:>5.2f}→{os.getloadavg()[0]:.2f}"
                + (f"  {len(bad)} invariant violations!" if bad else ""),
                flush=True,
            )
            del placer
    print()
    for incremental in (True, False):
        med = [statistics.median(f[k] for f in runs[incremental]) for k in range(7)]
        mode = "incremental" if incremental else "full"
        print(
            f"{'median':>5}  {mode:<12}{med[0]:>13,.0f}{med[1]:>9,.0f}{med[2]:>8.0f}{med[3]:>8.0f}"
            f"{med[4]:>8.2%}{med[5]:>7.1%}{med[6]:>10,.0f}"
        )
    same = len(fingerprints) == 1
    print(
        f"decisions: {'the same fingerprint in every run' if same else 'DIFFERENT fingerprints'} "
        f"({', '.join(sorted(fingerprints))}); placements/s = admissions / wall time in cycle(), "
        f"CPU/s = admissions / CPU time of this process in cycle()"
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
