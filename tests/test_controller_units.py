"""Unit tests of the operator's pure parts: object conversion, replica pods, job records."""

from __future__ import annotations

from aicenter import api
from aicenter.api.specs import GPUJobSpec
from aicenter.controller import pods
from aicenter.controller.objects import (
    NodeUsage,
    center_info,
    core_node,
    node_view,
    pod_requests,
    quantity,
    quota_spec,
    selector_matches,
)
from aicenter.controller.records import JobRecord, Placement, record_from
from aicenter.core import ReclaimLent, TopologyMode


def _job(**spec) -> dict:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "GPUJob",
        "metadata": {
            "name": "train",
            "namespace": "lab",
            "uid": "u-1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "replicas": 2,
            "gpusPerReplica": 8,
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "m", "image": "i"}]},
            },
            **spec,
        },
    }


def test_selector_semantics():
    labels = {"a": "1", "b": "2"}
    assert selector_matches(None, labels) and selector_matches({}, labels)
    assert selector_matches({"matchLabels": {"a": "1"}}, labels)
    assert not selector_matches({"matchLabels": {"a": "2"}}, labels)
    assert selector_matches(
        {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "3"]}]}, labels
    )
    assert not selector_matches(
        {"matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["2"]}]}, labels
    )
    assert selector_matches({"matchExpressions": [{"key": "c", "operator": "DoesNotExist"}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "c", "operator": "Exists"}]}, labels)


def test_center_and_node_conversion():
    info = center_info({"metadata": {"name": "c"}, "spec": {"nodeSelector": {}, "maintenance": True}})
    assert info.spec.topology_keys == api.DEFAULT_TOPOLOGY_KEYS and info.spec.maintenance
    node = {
        "metadata": {
            "name": "n1",
            "labels": {api.LABEL_GPU_PRODUCT: "NVIDIA-B200", "topology.aicenter.dev/rack": "r1"},
        },
        "spec": {"unschedulable": True},
        "status": {
            "capacity": {"nvidia.com/gpu": "8"},
            "allocatable": {"nvidia.com/gpu": "6"},
            "conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:10Z"}
            ],
        },
    }
    usage = NodeUsage()
    usage.add({"nvidia.com/gpu": 1, "cpu": 500}, False, +1)
    n = core_node(node_view(node), info, usage)
    assert (n.gpu_class, n.capacity, n.allocatable, n.other_gpus) == ("B200", 8, 6, 1)
    assert n.other_requests == {"cpu": 500}
    assert not n.ready and not n.schedulable and n.not_ready_since is not None
    assert n.topology == {"topology.aicenter.dev/rack": "r1"}
    mapped = center_info(
        {"metadata": {"name": "c"}, "spec": {"gpuClasses": [{"name": "X", "product": "NVIDIA-B200"}]}}
    )
    assert core_node(node_view(node), mapped, None).gpu_class == "X"
    node["metadata"]["labels"][api.LABEL_GPU_PRODUCT] = "NVIDIA-H100"
    assert core_node(node_view(node), mapped, None) is None  # a product the centre does not map
    unmanaged = core_node(node_view(node), None, None)
    assert unmanaged.center == "" and unmanaged.allocatable == 6


def test_quota_conversion_defaults_limit_to_guarantee():
    q = quota_spec(
        {
            "metadata": {"name": "q"},
            "spec": {
                "center": "c",
                "resources": [
                    {"gpuClass": "B200", "guaranteed": 8},
                    {"gpuClass": "B300", "guaranteed": 4, "limit": 12},
                ],
                "preemption": {"reclaimLent": "Never"},
            },
        }
    )
    assert q.limit == {"B200": 8, "B300": 12} and q.reclaim_lent == ReclaimLent.NEVER and q.cohort is None


def test_effective_requests_follow_kubernetes_rule():
    """Every container counts; init containers run before (the max), sidecars alongside (the sum)."""
    spec = {
        "containers": [
            {"resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "2"}}},
            {"resources": {"requests": {"nvidia.com/gpu": 7, "memory": "1Gi"}}},
            {},
        ],
        "initContainers": [
            {"resources": {"requests": {"nvidia.com/gpu": "8", "cpu": "500m"}}},
            {"restartPolicy": "Always", "resources": {"requests": {"cpu": "1", "nvidia.com/gpu": "1"}}},
            {"resources": {"requests": {"cpu": "4"}}},
        ],
        "overhead": {"cpu": "100m"},
    }
    req = pod_requests(spec)
    # GPUs: containers 1+7 plus the sidecar's 1 = 9, vs the first init container's 8 → 9
    assert req["nvidia.com/gpu"] == 9
    # cpu: containers 2 + sidecar 1 = 3 vs the last init container 4 + sidecar 1 = 5 → 5, + overhead
    assert req["cpu"] == 5100
    assert req["memory"] == 1 << 30 and req["pods"] == 1


def test_quantities():
    assert quantity("500m", milli=True) == 500 and quantity("2", milli=True) == 2000
    assert quantity("1Gi") == 1 << 30 and quantity("1.5k") == 1500 and quantity("1e3") == 1000
    assert quantity("0.1") == 1  # rounded up: never under-count a request
    assert quantity("garbage") == 0


def test_replica_pod_has_gpus_identity_env_and_owner():
    p = pods.replica_pod(_job(), 1, 3, "node-a", 8, "aicenter-scheduler", "nvidia.com/gpu")
    md, spec = p["metadata"], p["spec"]
    assert md["name"] == "train-3-1" and md["labels"][api.LABEL_REPLICA] == "1" and md["labels"]["app"] == "x"
    assert md["annotations"][pods.ANNOTATION_NODE] == "node-a"
    assert md["ownerReferences"][0]["uid"] == "u-1" and md["ownerReferences"][0]["controller"]
    assert spec["schedulerName"] == "aicenter-scheduler" and spec["nodeName"] == "node-a"
    assert md["labels"][api.LABEL_ATTEMPT] == "3"
    delegated = pods.replica_pod(
        _job(), 1, 3, "node-a", 8, "aicenter-scheduler", "nvidia.com/gpu", "default-scheduler"
    )
    dspec = delegated["spec"]
    assert "nodeName" not in dspec and dspec["schedulerName"] == "default-scheduler"
    terms = dspec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}]
    c = spec["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["RANK"] == "1" and env["WORLD_SIZE"] == "2" and env["MASTER_ADDR"] == "train-0.train.lab.svc"
    assert spec["subdomain"] == "train" and spec["hostname"] == "train-1"


def test_long_names_stay_valid_dns_labels():
    name = "x" * 80
    assert len(pods.pod_name(name, 12, 1023)) <= 63
    assert pods.pod_name(name, 1, 2) != pods.pod_name(name + "y", 1, 2)


def test_job_record_round_trips_through_status():
    rec = record_from(_job(topology={"key": "topology.aicenter.dev/rack", "mode": "Preferred"}, priority=5))
    assert rec.phase == "Pending" and rec.spec.gang and rec.unit_keys() == ["lab/train"]
    (w,) = rec.workloads()
    assert w.placement is None and w.topology_mode == TopologyMode.PREFERRED and w.priority == 5
    rec.quota, rec.gpu_class, rec.phase = "q", "B200", "Admitted"
    reps = rec.place("lab/train", ("n0", "n1"))
    assert reps == [0, 1] and rec.attempt == 1
    assert rec.placements == {0: Placement("n0", "train-1-0", 1), 1: Placement("n1", "train-1-1", 1)}
    obj = _job()
    obj["status"] = rec.status()
    again = record_from(obj)  # as a restarted operator sees it
    (w2,) = again.workloads()
    assert w2.placement == ("n0", "n1") and w2.placed_class == "B200" and again.quota == "q"
    assert again.attempt == 1 and again.placements == rec.placements
    assert again.claims("u-1", 1, 0, "train-1-0") and not again.claims("u-1", 0, 0, "train-1-0")
    assert not again.claims("other-uid", 1, 0, "train-1-0")  # never by name alone


def test_independent_job_has_one_unit_per_replica():
    obj = _job(gang={"policy": "Independent"})
    rec = JobRecord("lab", "sweep", "u", 0.0, obj, GPUJobSpec.parse(obj))
    assert rec.unit_keys() == ["lab/sweep#0", "lab/sweep#1"]
    assert [w.replicas for w in rec.workloads()] == [1, 1]
    rec.done.add(0)
    assert [w.key for w in rec.workloads()] == ["lab/sweep#1"]
    rec.place("lab/sweep#1", ("n0",))
    rec.place("lab/sweep#1", ("n1",))  # placed again (after a failure): a new attempt, a new name
    assert rec.placements[1] == Placement("n1", "sweep-2-1", 2)
