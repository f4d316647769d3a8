"""Fleet descriptions: centres, node shapes, pools, quotas and a workload mix.

The shared national scenario ships as the ``korea-national-fleet`` preset. A fleet can be scaled
(``scale=0.001`` turns 41,250 nodes into ~41) and filtered by centre; node names, racks, NVLink
cliques and zones are derived deterministically so the simulator, the samples and the benchmarks
all see the same fleet. Pure Python: no Kubernetes imports.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from aicenter.core import CenterSpec, Node, Scheduler, SchedulerConfig, TopologyMode, Workload
from aicenter.core import QuotaSpec as CoreQuota

DEFAULT_PRESET = "korea-national-fleet"
RACKS_PER_ZONE = 64

# Label keys, GPU Feature Discovery's where one exists.
LABEL_PRODUCT = "nvidia.com/gpu.product"
LABEL_COUNT = "nvidia.com/gpu.count"
LABEL_MEMORY = "nvidia.com/gpu.memory"
LABEL_FAMILY = "nvidia.com/gpu.family"
LABEL_PRESENT = "nvidia.com/gpu.present"
LABEL_CLIQUE = "nvidia.com/gpu.clique"
LABEL_CENTER = "aicenter.dev/center"
LABEL_SHAPE = "aicenter.dev/node-shape"
LABEL_RACK = "topology.aicenter.dev/rack"
LABEL_ZONE = "topology.kubernetes.io/zone"
LABEL_REGION = "topology.kubernetes.io/region"
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_TOPOLOGY_KEYS = (LABEL_CLIQUE, LABEL_RACK, LABEL_ZONE)


@dataclass(frozen=True)
class Shape:
    name: str
    product: str
    gpus_per_node: int
    memory_mib: int
    family: str
    nodes_per_rack: int
    nvlink_domain: str | None = None

    @property
    def gpu_class(self) -> str:
        """Short class name used by quotas and jobs: ``NVIDIA-B200`` → ``B200``."""
        return self.product.removeprefix("NVIDIA-")


@dataclass(frozen=True)
class Pool:
    shape: Shape
    nodes: int


@dataclass(frozen=True)
class QuotaSpec:
    name: str
    cohort: str | None
    guaranteed: dict[str, int]
    limit: dict[str, int]


@dataclass(frozen=True)
class Center:
    name: str
    owner: str
    region: str
    pools: tuple[Pool, ...]
    quotas: tuple[QuotaSpec, ...]

    def gpus_by_class(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.pools:
            out[p.shape.gpu_class] = out.get(p.shape.gpu_class, 0) + p.nodes * p.shape.gpus_per_node
        return out

    @property
    def gpus(self) -> int:
        return sum(self.gpus_by_class().values())

    @property
    def nodes(self) -> int:
        return sum(p.nodes for p in self.pools)

    def products(self) -> dict[str, str]:
        """GPU class → GFD product label value."""
        return {p.shape.gpu_class: p.shape.product for p in self.pools}


@dataclass(frozen=True)
class WorkloadKind:
    kind: str
    share: float
    gpus: tuple[int, ...]
    minutes: tuple[int, int]


@dataclass(frozen=True)
class Fleet:
    centers: tuple[Center, ...]
    shapes: dict[str, Shape]
    workloads: tuple[WorkloadKind, ...] = field(default=())

    @property
    def gpus(self) -> int:
        return sum(c.gpus for c in self.centers)

    @property
    def nodes(self) -> int:
        return sum(c.nodes for c in self.centers)

    def center(self, name: str) -> Center:
        for c in self.centers:
            if c.name == name:
                return c
        raise KeyError(f"unknown centre {name!r}; fleet has {', '.join(c.name for c in self.centers)}")


def _split(total: int, weights: dict[str, int]) -> dict[str, int]:
    """Split ``total`` over classes proportionally to ``weights`` (largest remainder, exact sum)."""
    wsum = sum(weights.values())
    if wsum == 0:
        return dict.fromkeys(weights, 0)
    raw = {k: total * w / wsum for k, w in weights.items()}
    out = {k: math.floor(v) for k, v in raw.items()}
    rest = total - sum(out.values())
    for k in sorted(raw, key=lambda k: (out[k] - raw[k], k))[:rest]:
        out[k] += 1
    return out


def load_fleet(source: str | Path = DEFAULT_PRESET) -> Fleet:
    """Load a preset by name or a fleet YAML file by path."""
    if isinstance(source, Path) or "/" in str(source) or str(source).endswith((".yaml", ".yml")):
        text = Path(source).read_text()
    else:
        text = resources.files("aicenter_testbed.presets").joinpath(f"{source}.yaml").read_text()
    return parse_fleet(yaml.safe_load(text))


def parse_fleet(doc: dict) -> Fleet:
    shapes = {
        name: Shape(
            name=name,
            product=s["product"],
            gpus_per_node=int(s["gpusPerNode"]),
            memory_mib=int(s["memoryMiB"]),
            family=s.get("family", "unknown"),
            nodes_per_rack=int(s["nodesPerRack"]),
            nvlink_domain=s.get("nvlinkDomain"),
        )
        for name, s in doc["shapes"].items()
    }
    centers = []
    for c in doc["centers"]:
        pools = tuple(Pool(shapes[p["shape"]], int(p["nodes"])) for p in c["pools"])
        by_class: dict[str, int] = {}
        for p in pools:
            by_class[p.shape.gpu_class] = by_class.get(p.shape.gpu_class, 0) + p.nodes * p.shape.gpus_per_node
        quotas = tuple(
            QuotaSpec(
                name=q["name"],
                cohort=q.get("cohort"),
                guaranteed=_split(int(q["guaranteed"]), by_class),
                limit=_split(int(q.get("limit", q["guaranteed"])), by_class),
            )
            for q in c.get("quotas", [])
        )
        centers.append(Center(c["name"], c.get("owner", ""), c.get("region", ""), pools, quotas))
    workloads = tuple(
        WorkloadKind(w["kind"], float(w["share"]), tuple(w["gpus"]), tuple(w["minutes"]))
        for w in doc.get("workloads", [])
    )
    return Fleet(tuple(centers), shapes, workloads)


def scale_fleet(fleet: Fleet, scale: float = 1.0, centers: list[str] | None = None) -> Fleet:
    """Scale node counts (at least one node per pool) and the quotas with them; filter centres."""
    chosen = [fleet.center(n) for n in centers] if centers else list(fleet.centers)
    if scale == 1.0:
        return Fleet(tuple(chosen), fleet.shapes, fleet.workloads)
    out = []
    for c in chosen:
        pools = tuple(Pool(p.shape, max(1, round(p.nodes * scale))) for p in c.pools)
        new_caps: dict[str, int] = {}
        for p in pools:
            new_caps[p.shape.gpu_class] = new_caps.get(p.shape.gpu_class, 0) + p.nodes * p.shape.gpus_per_node
        old_caps = c.gpus_by_class()
        quotas = []
        for cls_quotas in [c.quotas]:
            # Guarantees scale with capacity and keep summing to at most the scaled capacity.
            g_scaled: dict[str, dict[str, int]] = {q.name: {} for q in cls_quotas}
            for cls, cap in new_caps.items():
                weights = {q.name: q.guaranteed.get(cls, 0) for q in cls_quotas}
                total_g = min(cap, math.floor(sum(weights.values()) * cap / max(1, old_caps.get(cls, 1))))
                for qn, v in _split(total_g, weights).items():
                    g_scaled[qn][cls] = v
            for q in cls_quotas:
                lim = {}
                for cls, cap in new_caps.items():
                    ratio = q.limit.get(cls, 0) / max(1, q.guaranteed.get(cls, 1) or 1)
                    lim[cls] = max(g_scaled[q.name][cls], min(cap, math.floor(g_scaled[q.name][cls] * ratio)))
                quotas.append(QuotaSpec(q.name, q.cohort, g_scaled[q.name], lim))
        out.append(Center(c.name, c.owner, c.region, pools, tuple(quotas)))
    return Fleet(tuple(out), fleet.shapes, fleet.workloads)


@dataclass(frozen=True)
class NodeSpec:
    """One simulated GPU node with its topology."""

    name: str
    center: str
    region: str
    shape: Shape
    rack: str
    zone: str
    clique: str | None

    @property
    def gpu_class(self) -> str:
        return self.shape.gpu_class

    def labels(self) -> dict[str, str]:
        s = self.shape
        labels = {
            LABEL_CENTER: self.center,
            LABEL_SHAPE: s.name,
            LABEL_PRODUCT: s.product,
            LABEL_COUNT: str(s.gpus_per_node),
            LABEL_MEMORY: str(s.memory_mib),
            LABEL_FAMILY: s.family,
            LABEL_PRESENT: "true",
            LABEL_RACK: self.rack,
            LABEL_ZONE: self.zone,
            LABEL_REGION: self.region,
        }
        if self.clique:
            labels[LABEL_CLIQUE] = self.clique
        return labels

    def topology(self) -> dict[str, str]:
        out = {LABEL_RACK: self.rack, LABEL_ZONE: self.zone}
        if self.clique:
            out[LABEL_CLIQUE] = self.clique
        return out


def iter_nodes(fleet: Fleet) -> Iterator[NodeSpec]:
    """Every node of the fleet, with deterministic names, racks, cliques and zones."""
    for c in fleet.centers:
        rack_base = 0
        for p in c.pools:
            s = p.shape
            for i in range(p.nodes):
                rack_no = rack_base + i // s.nodes_per_rack
                rack = f"{c.name}-r{rack_no:04d}"
                zone = f"{c.region or c.name}-z{rack_no // RACKS_PER_ZONE}"
                clique = f"{c.name}.nvl{rack_no:04d}" if s.nvlink_domain == "rack" else None
                yield NodeSpec(f"{c.name}-{s.name}-{i:05d}", c.name, c.region, s, rack, zone, clique)
            rack_base += math.ceil(p.nodes / s.nodes_per_rack)


@dataclass(frozen=True)
class JobSpec:
    """A generated job: a gang of ``replicas`` × ``gpus_per_replica`` in one centre and class."""

    name: str
    kind: str
    center: str
    quota: str
    gpu_class: str
    replicas: int
    gpus_per_replica: int
    duration_s: int
    priority: int
    topology_key: str | None
    topology_mode: str | None

    @property
    def gpus(self) -> int:
        return self.replicas * self.gpus_per_replica


PRIORITY_BY_KIND = {"inference": 100, "fine-tuning": 50, "simulation-twin": 50, "foundation-training": 10}


def job_stream(fleet: Fleet, count: int, seed: int = 0, max_gpus: int | None = None) -> Iterator[JobSpec]:
    """A deterministic stream of jobs following the fleet's workload mix.

    Each job picks a centre (weighted by GPUs), a class of that centre, a quota, a kind (by share),
    a size from the kind's sizes and a duration in the kind's range. Jobs of one node or less ask for
    no topology; multi-node jobs prefer a rack, or a zone when larger than a rack.
    """
    rng = random.Random(seed)
    kinds = list(fleet.workloads)
    centers = list(fleet.centers)
    cweights = [c.gpus for c in centers]
    for n in range(count):
        c = rng.choices(centers, cweights)[0]
        classes = c.gpus_by_class()
        cls = rng.choices(list(classes), list(classes.values()))[0]
        per_node = next(p.shape.gpus_per_node for p in c.pools if p.shape.gpu_class == cls)
        nodes_per_rack = next(p.shape.nodes_per_rack for p in c.pools if p.shape.gpu_class == cls)
        quota = rng.choice(c.quotas).name if c.quotas else ""
        k = rng.choices(kinds, [w.share for w in kinds])[0]
        gpus = rng.choice(k.gpus)
        if max_gpus is not None:
            gpus = min(gpus, max_gpus)
        if gpus <= per_node:
            replicas, gpr, key, mode = 1, gpus, None, None
        else:
            replicas, gpr = math.ceil(gpus / per_node), per_node
            key = LABEL_RACK if replicas <= nodes_per_rack else LABEL_ZONE
            mode = "Preferred"
        minutes = rng.randint(*k.minutes)
        yield JobSpec(
            name=f"{k.kind}-{n:06d}",
            kind=k.kind,
            center=c.name,
            quota=quota,
            gpu_class=cls,
            replicas=replicas,
            gpus_per_replica=gpr,
            duration_s=minutes * 60,
            priority=PRIORITY_BY_KIND.get(k.kind, 0),
            topology_key=key,
            topology_mode=mode,
        )


def build_scheduler(fleet: Fleet, config: SchedulerConfig | None = None) -> Scheduler:
    """A core scheduler loaded with every centre, quota and node of ``fleet``."""
    s = Scheduler(config)
    for c in fleet.centers:
        s.set_center(CenterSpec(c.name, DEFAULT_TOPOLOGY_KEYS))
        for q in c.quotas:
            s.set_quota(CoreQuota(q.name, c.name, dict(q.guaranteed), dict(q.limit), q.cohort))
    for n in iter_nodes(fleet):
        gpus = n.shape.gpus_per_node
        s.set_node(Node(n.name, n.center, n.gpu_class, gpus, gpus, topology=n.topology()))
    return s


def workload_of(job: JobSpec, created: float) -> Workload:
    """The core workload for a generated job (one gang)."""
    return Workload(
        key=job.name,
        quota=job.quota,
        replicas=job.replicas,
        gpus_per_replica=job.gpus_per_replica,
        created=created,
        gpu_class=job.gpu_class,
        topology_key=job.topology_key,
        topology_mode=TopologyMode(job.topology_mode) if job.topology_mode else TopologyMode.REQUIRED,
        priority=job.priority,
    )
