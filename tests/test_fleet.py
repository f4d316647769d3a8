"""The fleet preset, scaling, node topology, the job stream and the core scheduler built from it."""

from __future__ import annotations

from collections import Counter

import pytest

from aicenter.core import TopologyMode
from aicenter.core.invariants import violations
from aicenter_testbed.fleet import (
    LABEL_CLIQUE,
    LABEL_RACK,
    LABEL_ZONE,
    RACKS_PER_ZONE,
    build_scheduler,
    iter_nodes,
    job_stream,
    load_fleet,
    scale_fleet,
    workload_of,
)


@pytest.fixture(scope="module")
def fleet():
    return load_fleet()


@pytest.fixture(scope="module")
def nodes(fleet):
    return list(iter_nodes(fleet))


def test_preset_totals(fleet):
    assert fleet.gpus == 260_000
    assert fleet.nodes == 41_250
    assert {c.name: c.gpus for c in fleet.centers} == {
        "national-ai-center": 50_000,
        "samsung-ai-megafactory": 50_000,
        "sk-industrial-ai-cloud": 50_000,
        "hyundai-physical-ai": 50_000,
        "naver-cloud-physical-ai": 60_000,
    }
    for c in fleet.centers:
        caps = c.gpus_by_class()
        for cls, cap in caps.items():
            assert sum(q.guaranteed.get(cls, 0) for q in c.quotas) == cap, (c.name, cls)
            for q in c.quotas:
                assert q.limit.get(cls, 0) >= q.guaranteed.get(cls, 0)
    assert abs(sum(w.share for w in fleet.workloads) - 1.0) < 1e-9


def test_quotas_are_split_over_classes_by_capacity(fleet):
    sk = fleet.center("sk-industrial-ai-cloud")
    hynix = next(q for q in sk.quotas if q.name == "sk-hynix-memory-ai")
    assert hynix.guaranteed == {"B200": 7_500, "B300": 7_500}
    naver = fleet.center("naver-cloud-physical-ai")
    energy = next(q for q in naver.quotas if q.name == "energy")
    assert energy.guaranteed == {"B200": 10_000, "GB200": 5_000}
    assert sum(energy.limit.values()) == 30_000


def test_nodes_have_unique_names_and_nested_topology(fleet, nodes):
    assert len(nodes) == 41_250
    assert len({n.name for n in nodes}) == len(nodes)
    per_rack = Counter((n.center, n.rack) for n in nodes)
    shape_of_rack = {(n.center, n.rack): n.shape for n in nodes}
    for key, count in per_rack.items():
        assert count <= shape_of_rack[key].nodes_per_rack
    for n in nodes:
        topo = n.topology()
        assert topo[LABEL_RACK] == n.rack and topo[LABEL_ZONE] == n.zone
        if n.shape.nvlink_domain == "rack":
            assert topo[LABEL_CLIQUE] == n.clique and n.clique.endswith(n.rack[-4:])
        else:
            assert LABEL_CLIQUE not in topo
    zone_of_rack = {(n.center, n.rack): n.zone for n in nodes}
    racks_per_zone = Counter((center, zone) for (center, _), zone in zone_of_rack.items())
    assert max(racks_per_zone.values()) == RACKS_PER_ZONE


def test_nvl72_cliques_are_18_nodes(nodes):
    cliques = Counter(n.clique for n in nodes if n.center == "samsung-ai-megafactory")
    sizes = Counter(cliques.values())
    assert sizes == {18: 694, 8: 1}  # 12,500 nodes: 694 full NVLink domains and 8 nodes


def test_racks_of_two_pools_in_one_centre_do_not_collide(nodes):
    naver = [n for n in nodes if n.center == "naver-cloud-physical-ai"]
    shapes_per_rack: dict[str, set] = {}
    for n in naver:
        shapes_per_rack.setdefault(n.rack, set()).add(n.shape.name)
    assert all(len(s) == 1 for s in shapes_per_rack.values())


def test_scale_fleet_keeps_every_pool_and_quotas_within_capacity(fleet):
    small = scale_fleet(fleet, 0.001)
    assert [c.name for c in small.centers] == [c.name for c in fleet.centers]
    assert all(p.nodes >= 1 for c in small.centers for p in c.pools)
    for c in small.centers:
        for cls, cap in c.gpus_by_class().items():
            assert sum(q.guaranteed[cls] for q in c.quotas) <= cap
            for q in c.quotas:
                assert q.guaranteed[cls] <= q.limit[cls] <= cap
    one = scale_fleet(fleet, 1.0, ["samsung-ai-megafactory"])
    assert [c.name for c in one.centers] == ["samsung-ai-megafactory"]
    assert one.gpus == 50_000
    with pytest.raises(KeyError):
        scale_fleet(fleet, 1.0, ["nowhere"])


def test_job_stream_is_deterministic_and_follows_the_mix(fleet):
    a = list(job_stream(fleet, 4000, seed=7))
    b = list(job_stream(fleet, 4000, seed=7))
    c = list(job_stream(fleet, 4000, seed=8))
    assert a == b and a != c
    kinds = Counter(j.kind for j in a)
    for w in fleet.workloads:
        assert abs(kinds[w.kind] / len(a) - w.share) < 0.03
    for j in a:
        center = fleet.center(j.center)
        assert j.quota in {q.name for q in center.quotas}
        assert j.gpu_class in center.gpus_by_class()
        per_node = next(p.shape.gpus_per_node for p in center.pools if p.shape.gpu_class == j.gpu_class)
        if j.replicas == 1:
            assert j.topology_key is None and j.gpus_per_replica <= per_node
        else:
            assert j.gpus_per_replica == per_node and j.topology_mode == "Preferred"
            assert j.topology_key in (LABEL_RACK, LABEL_ZONE)
    capped = list(job_stream(fleet, 500, seed=7, max_gpus=16))
    assert max(j.gpus for j in capped) <= 16


def test_build_scheduler_and_workloads_on_a_small_fleet(fleet):
    small = scale_fleet(fleet, 0.002)
    s = build_scheduler(small)
    assert len(s.inventory.nodes) == small.nodes
    assert set(s.ledger.specs) == {q.name for c in small.centers for q in c.quotas}
    for c in small.centers:
        for cls, cap in c.gpus_by_class().items():
            assert s.inventory.pool(c.name, cls).free_gpus() == cap
    jobs = list(job_stream(small, 300, seed=3, max_gpus=64))
    for i, j in enumerate(jobs):
        w = workload_of(j, float(i))
        assert (w.key, w.quota, w.gpus, w.gpu_class) == (j.name, j.quota, j.gpus, j.gpu_class)
        assert w.topology_mode == (TopologyMode.PREFERRED if j.topology_mode else TopologyMode.REQUIRED)
        s.add_workload(w)
    res = s.cycle(1000.0)
    assert res.admitted and len(res.admitted) + len(res.pending) == len(jobs)
    assert violations(s) == []
