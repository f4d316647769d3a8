"""Small builders for core tests: centres, racks of nodes, quotas and workloads."""

from __future__ import annotations

from aicenter.core import (
    CenterSpec,
    Node,
    PlacementPolicy,
    QuotaSpec,
    ReclaimLent,
    Scheduler,
    SchedulerConfig,
    TopologyMode,
    WithinQuota,
    Workload,
)

CLIQUE = "nvidia.com/gpu.clique"
RACK = "topology.aicenter.dev/rack"
ZONE = "topology.kubernetes.io/zone"
KEYS = (CLIQUE, RACK, ZONE)


def center(
    name: str = "c",
    keys: tuple[str, ...] = KEYS,
    policy: PlacementPolicy = PlacementPolicy.BIN_PACK,
    grace: float = 60.0,
    maintenance: bool = False,
) -> CenterSpec:
    return CenterSpec(name, keys, policy, maintenance, grace)


def rack_nodes(
    center: str = "c",
    cls: str = "B200",
    racks: int = 2,
    per_rack: int = 4,
    gpus: int = 8,
    clique: bool = True,
    racks_per_zone: int = 64,
    prefix: str | None = None,
) -> list[Node]:
    """``racks`` racks of ``per_rack`` nodes; each rack is one NVLink clique when ``clique``."""
    prefix = prefix or f"{center}-{cls.lower()}"
    out = []
    for r in range(racks):
        topo = {RACK: f"{center}-r{r}", ZONE: f"{center}-z{r // racks_per_zone}"}
        if clique:
            topo[CLIQUE] = f"{center}.nvl{r}"
        for i in range(per_rack):
            out.append(Node(f"{prefix}-r{r}-n{i}", center, cls, gpus, gpus, topology=dict(topo)))
    return out


def quota(
    name: str,
    center: str = "c",
    guaranteed: int | dict[str, int] = 0,
    limit: int | dict[str, int] | None = None,
    cohort: str | None = None,
    cls: str = "B200",
    weight: int = 1,
    within: WithinQuota = WithinQuota.LOWER_PRIORITY,
    reclaim: ReclaimLent = ReclaimLent.ANY,
) -> QuotaSpec:
    g = guaranteed if isinstance(guaranteed, dict) else {cls: guaranteed}
    lim = dict(g) if limit is None else limit if isinstance(limit, dict) else {cls: limit}
    return QuotaSpec(name, center, g, lim, cohort, weight, within, reclaim)


def job(
    key: str,
    quota: str,
    replicas: int = 1,
    gpus: int = 8,
    created: float = 0.0,
    cls: str | None = None,
    key_: str | None = None,
    mode: TopologyMode = TopologyMode.REQUIRED,
    priority: int = 0,
    preemptible: bool = True,
) -> Workload:
    return Workload(
        key=key,
        quota=quota,
        replicas=replicas,
        gpus_per_replica=gpus,
        created=created,
        gpu_class=cls,
        topology_key=key_,
        topology_mode=mode,
        priority=priority,
        preemptible=preemptible,
    )


def scheduler(
    centers: list[CenterSpec],
    quotas: list[QuotaSpec],
    nodes: list[Node],
    config: SchedulerConfig | None = None,
) -> Scheduler:
    s = Scheduler(config)
    for c in centers:
        s.set_center(c)
    for q in quotas:
        s.set_quota(q)
    for n in nodes:
        s.set_node(n)
    return s


def run(s: Scheduler, now: float, started: bool = True):
    """One cycle; admitted workloads get ``started`` as the shell would set it."""
    res = s.cycle(now)
    if started:
        for a in res.admitted:
            s.workloads[a.key].started = now
    return res


def admitted(res) -> set[str]:
    return {a.key for a in res.admitted}


def pending(res) -> dict[str, tuple[str, str]]:
    return {p.key: (p.reason, p.message) for p in res.pending}


def nodes_by_topology(s: Scheduler, nodes: tuple[str, ...], key: str) -> set[str | None]:
    return {s.inventory.nodes[n].node.topology.get(key) for n in nodes}
