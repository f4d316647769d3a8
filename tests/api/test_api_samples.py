"""The national-fleet samples: valid against the CRD schemas and consistent with the fleet preset."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from aicenter import api
from aicenter.api.crds import openapi_schema
from aicenter_testbed import samples
from aicenter_testbed.fleet import LABEL_CLIQUE, load_fleet, scale_fleet
from aicenter_testbed.schema import apply_defaults, validate_object

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manifests" / "samples"


def load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def fleet():
    return load_fleet()


@pytest.fixture(scope="module")
def fleet_docs():
    return load(SAMPLES / "korea-national-fleet.yaml")


@pytest.fixture(scope="module")
def jobs():
    return {p.name: load(p)[0] for p in sorted((SAMPLES / "jobs").glob("*.yaml"))}


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_file_matches_fleet_manifests(fleet, fleet_docs):
    assert fleet_docs == samples.fleet_manifests(fleet)


def test_fleet_samples_validate(fleet_docs):
    for doc in fleet_docs:
        assert validate_object(doc) == [], doc["metadata"]["name"]


def test_five_centres_and_260k_gpus(fleet, fleet_docs):
    centers = by_kind(fleet_docs, api.KIND_AICENTER)
    assert len(centers) == 5
    assert fleet.gpus == 260_000
    for c in centers:
        center = fleet.center(c["metadata"]["name"])
        assert c["spec"]["nodeSelector"] == {"matchLabels": {api.LABEL_CENTER: center.name}}
        assert {g["name"]: g["product"] for g in c["spec"]["gpuClasses"]} == center.products()


def test_quotas_sum_to_each_centres_gpus(fleet, fleet_docs):
    quotas = by_kind(fleet_docs, api.KIND_GPUQUOTA)
    assert len(quotas) == sum(len(c.quotas) for c in fleet.centers) == 18
    guaranteed: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for q in quotas:
        for r in q["spec"]["resources"]:
            guaranteed[q["spec"]["center"]][r["gpuClass"]] += r["guaranteed"]
            assert r["limit"] >= r["guaranteed"]  # mirrors the CEL rule
    for c in fleet.centers:
        assert dict(guaranteed[c.name]) == c.gpus_by_class(), c.name
    assert sum(sum(v.values()) for v in guaranteed.values()) == 260_000


def test_each_quota_selects_its_own_namespace(fleet_docs):
    namespaces = {d["metadata"]["name"]: d for d in load(SAMPLES / "namespaces.yaml")}
    quotas = by_kind(fleet_docs, api.KIND_GPUQUOTA)
    assert set(namespaces) == {q["metadata"]["name"] for q in quotas}
    for q in quotas:
        name = q["metadata"]["name"]
        assert q["spec"]["namespaceSelector"] == {
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": [name]}]
        }
        assert namespaces[name]["kind"] == "Namespace"
        assert namespaces[name]["metadata"]["labels"][api.LABEL_CENTER] == q["spec"]["center"]


def test_jobs_validate(jobs):
    assert len(jobs) >= 4
    for name, job in jobs.items():
        assert validate_object(job) == [], name


def test_jobs_fit_their_quota_and_centre(fleet, fleet_docs, jobs):
    quotas = {q["metadata"]["name"]: q for q in by_kind(fleet_docs, api.KIND_GPUQUOTA)}
    centers = {c["metadata"]["name"]: c for c in by_kind(fleet_docs, api.KIND_AICENTER)}
    aic_schema = openapi_schema(api.KIND_AICENTER)
    job_schema = openapi_schema(api.KIND_GPUJOB)
    for name, raw in jobs.items():
        job = apply_defaults(raw, job_schema)
        spec = job["spec"]
        ns = job["metadata"]["namespace"]
        serving = [
            q
            for q in quotas.values()
            if ns in q["spec"]["namespaceSelector"]["matchExpressions"][0]["values"]
        ]
        assert len(serving) == 1, name
        quota = serving[0]
        assert spec.get("quota", quota["metadata"]["name"]) == quota["metadata"]["name"], name
        classes = [r["gpuClass"] for r in quota["spec"]["resources"]]
        if "gpuClass" not in spec:
            assert len(classes) == 1, f"{name}: gpuClass needed, the quota has {classes}"
        gpu_class = spec.get("gpuClass", classes[0])
        assert gpu_class in classes, name
        total = spec["replicas"] * spec["gpusPerReplica"]
        assert total <= api.MAX_JOB_GPUS
        limit = next(r["limit"] for r in quota["spec"]["resources"] if r["gpuClass"] == gpu_class)
        assert total <= limit, name
        center = apply_defaults(centers[quota["spec"]["center"]], aic_schema)
        shape = next(
            p.shape for p in fleet.center(center["metadata"]["name"]).pools if p.shape.gpu_class == gpu_class
        )
        assert spec["gpusPerReplica"] <= shape.gpus_per_node, name
        if "topology" in spec:
            assert spec["topology"]["key"] in center["spec"]["topologyKeys"], name
            if spec["topology"]["key"] == LABEL_CLIQUE and spec["topology"]["mode"] == api.TOPOLOGY_REQUIRED:
                assert shape.nvlink_domain == "rack", f"{name}: no NVLink cliques for {gpu_class}"
                assert spec["replicas"] <= shape.nodes_per_rack, (
                    f"{name}: more replicas than a clique has nodes"
                )


def test_job_examples_cover_the_brief(jobs):
    specs = [apply_defaults(j, openapi_schema(api.KIND_GPUJOB))["spec"] for j in jobs.values()]
    assert any(s["replicas"] == 1 and s["gpusPerReplica"] == 8 for s in specs)
    assert any(
        s["replicas"] == 4
        and s["gpusPerReplica"] == 8
        and s.get("gpuClass") == "B200"
        and s.get("topology", {}).get("key") == "topology.aicenter.dev/rack"
        for s in specs
    )
    assert any(
        s.get("gpuClass") == "GB200"
        and s.get("topology") == {"key": LABEL_CLIQUE, "mode": "Required"}
        and s["replicas"] <= 18
        for s in specs
    )
    assert any(
        s.get("gpuClass") == "GB200" and s["replicas"] == 64 and s["gpusPerReplica"] == 4 for s in specs
    )
    assert any(s["gang"]["policy"] == "Independent" for s in specs)


@pytest.mark.parametrize("scale", [0.001, 0.01])
def test_scaled_fleet_manifests_validate(fleet, scale):
    small = scale_fleet(fleet, scale)
    docs = samples.fleet_manifests(small, namespaces=True)
    assert docs[0]["kind"] == "Namespace"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert validate_object(doc) == [], doc["metadata"]["name"]
    for c in small.centers:
        g: dict[str, int] = defaultdict(int)
        for q in by_kind(docs, api.KIND_GPUQUOTA):
            if q["spec"]["center"] == c.name:
                for r in q["spec"]["resources"]:
                    g[r["gpuClass"]] += r["guaranteed"]
        for cls, cap in c.gpus_by_class().items():
            assert g[cls] <= cap, (c.name, cls)


def test_filtered_fleet(fleet):
    docs = samples.fleet_manifests(scale_fleet(fleet, 0.001, ["samsung-ai-megafactory"]))
    assert [d["metadata"]["name"] for d in by_kind(docs, api.KIND_AICENTER)] == ["samsung-ai-megafactory"]
    assert {d["spec"]["center"] for d in by_kind(docs, api.KIND_GPUQUOTA)} == {"samsung-ai-megafactory"}


def test_duplicate_quota_names_rejected(fleet):
    from dataclasses import replace

    a, b = fleet.centers[0], fleet.centers[1]
    clash = replace(b, quotas=(replace(b.quotas[0], name=a.quotas[0].name), *b.quotas[1:]))
    with pytest.raises(ValueError, match="unique across the fleet"):
        samples.fleet_manifests(replace(fleet, centers=(a, clash)))


def test_print_cli(capsys):
    assert (
        samples.main(["--print", "--scale", "0.001", "--centers", "national-ai-center", "--namespaces"]) == 0
    )
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs].count(api.KIND_AICENTER) == 1
    assert docs[0]["kind"] == "Namespace"
