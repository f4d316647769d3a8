"""The structural validator and defaulter in aicenter_testbed.schema."""

from __future__ import annotations

import copy

import pytest

from aicenter import api
from aicenter.api.crds import openapi_schema
from aicenter_testbed.schema import apply_defaults, validate, validate_object


def job(**spec):
    base = {
        "gpusPerReplica": 8,
        "template": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}},
    }
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND_GPUJOB,
        "metadata": {"name": "j", "namespace": "universities"},
        "spec": {**base, **spec},
    }


def quota(resources):
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND_GPUQUOTA,
        "metadata": {"name": "q"},
        "spec": {"center": "c", "namespaceSelector": {"matchLabels": {"a": "b"}}, "resources": resources},
    }


def center(**spec):
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND_AICENTER,
        "metadata": {"name": "c"},
        "spec": {"nodeSelector": {}, **spec},
    }


def test_minimal_objects_are_valid():
    assert validate_object(job()) == []
    assert validate_object(quota([{"gpuClass": "B200", "guaranteed": 0}])) == []
    assert validate_object(center()) == []


def test_job_defaults():
    out = apply_defaults(job(topology={"key": "topology.aicenter.dev/rack"}), openapi_schema(api.KIND_GPUJOB))
    spec = out["spec"]
    assert spec["replicas"] == 1
    assert spec["gang"] == {"policy": "AllOrNothing"}
    assert spec["topology"] == {"key": "topology.aicenter.dev/rack", "mode": "Required"}
    assert (spec["priority"], spec["preemptible"], spec["backoffLimit"]) == (0, True, 3)
    assert "activeDeadlineSeconds" not in spec and "ttlSecondsAfterFinished" not in spec


def test_center_and_quota_defaults():
    c = apply_defaults(center(), openapi_schema(api.KIND_AICENTER))["spec"]
    assert c["gpuResource"] == "nvidia.com/gpu"
    assert c["topologyKeys"] == list(api.DEFAULT_TOPOLOGY_KEYS)
    assert (c["placementPolicy"], c["maintenance"], c["nodeNotReadyGraceSeconds"]) == ("BinPack", False, 60)
    q = apply_defaults(quota([{"gpuClass": "B200", "guaranteed": 1}]), openapi_schema(api.KIND_GPUQUOTA))[
        "spec"
    ]
    assert q["weight"] == 1
    assert q["preemption"] == {"withinQuota": "LowerPriority", "reclaimLent": "Any"}


def test_defaults_do_not_mutate_the_input():
    raw = job()
    before = copy.deepcopy(raw)
    apply_defaults(raw, openapi_schema(api.KIND_GPUJOB))
    assert raw == before


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        (job(replicas=0), "spec.replicas: 0 is less than the minimum 1"),
        (job(gpusPerReplica="8"), "spec.gpusPerReplica: expected integer"),
        (job(priority=2_000_000), "spec.priority: 2000000 is more than the maximum"),
        (job(gang={"policy": "Some"}), "spec.gang.policy: 'Some' is not one of"),
        (job(topology={"mode": "Required"}), "spec.topology.key: required"),
        (job(preemptible="yes"), "spec.preemptible: expected boolean"),
        (job(replica=2), "spec.replica: unknown field"),
        (job(template={"spec": {"containers": []}}), "spec.template.spec.containers: fewer than 1 items"),
        (job(template={"spec": {}}), "spec.template.spec.containers: required"),
        (job(activeDeadlineSeconds=0), "spec.activeDeadlineSeconds: 0 is less than the minimum 1"),
        (quota([]), "spec.resources: fewer than 1 items"),
        (quota([{"gpuClass": "B200", "guaranteed": -1}]), "spec.resources[0].guaranteed: -1 is less"),
        (
            quota([{"gpuClass": "B200", "guaranteed": 1}, {"gpuClass": "B200", "guaranteed": 2}]),
            "spec.resources: duplicate entry",
        ),
        (quota([{"gpuClass": "B 200", "guaranteed": 1}]), "does not match"),
        (center(placementPolicy="Random"), "spec.placementPolicy: 'Random' is not one of"),
        (center(topologyKeys=["a", "a"]), "spec.topologyKeys: duplicate value"),
        (center(nodeNotReadyGraceSeconds=-1), "spec.nodeNotReadyGraceSeconds: -1 is less"),
        (
            center(nodeSelector={"matchExpressions": [{"key": "k", "operator": "Near"}]}),
            "spec.nodeSelector.matchExpressions[0].operator",
        ),
    ],
)
def test_invalid_objects(obj, needle):
    errors = validate_object(obj)
    assert any(needle in e for e in errors), errors


def test_object_level_checks():
    bad = job()
    del bad["metadata"]["namespace"]
    assert any("metadata.namespace" in e for e in validate_object(bad))
    bad = center()
    bad["metadata"]["name"] = "Not_A_Name"
    assert any("metadata.name" in e for e in validate_object(bad))
    bad = center()
    bad["apiVersion"] = "aicenter.dev/v1"
    assert any("apiVersion" in e for e in validate_object(bad))
    assert validate_object({"kind": "Pod"}) == ["kind: 'Pod' is not an aicenter.dev kind"]


def test_status_is_validated():
    obj = job()
    obj["status"] = {
        "phase": "Pending",
        "reason": "QuotaExhausted",
        "message": "quota universities: limit 20,000 B200 reached - 19,992 used, 16 requested",
        "placements": [{"replica": 0, "node": "n1", "pod": "j-0"}],
        "admittedAt": "2026-01-02T15:04:05Z",
        "conditions": [
            {"type": "Admitted", "status": "False", "lastTransitionTime": "2026-01-02T15:04:05.123+09:00"}
        ],
    }
    assert validate_object(obj) == []
    obj["status"]["phase"] = "Queued"
    obj["status"]["admittedAt"] = "yesterday"
    errors = validate_object(obj)
    assert any("status.phase" in e for e in errors)
    assert any("status.admittedAt" in e for e in errors)


def test_null_and_nested_paths():
    schema = openapi_schema(api.KIND_GPUJOB)
    assert validate({"spec": None}, schema) == ["spec: must not be null"]
