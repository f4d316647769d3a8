"""Unit tests of the operator's pure parts: object conversion, replica pods, job records."""

from __future__ import annotations

from aicenter import api
from aicenter.controller import pods
from aicenter.controller.convert import center_info, core_node, pod_gpus, quota_spec, selector_matches
from aicenter.controller.jobs import JobRecord, Placement, record_from
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
    n = core_node(node, info, foreign_used=1)
    assert (n.gpu_class, n.capacity, n.allocatable, n.foreign_used) == ("B200", 8, 6, 1)
    assert not n.ready and not n.schedulable and n.not_ready_since is not None
    assert n.topology == {"topology.aicenter.dev/rack": "r1"}
    mapped = center_info(
        {"metadata": {"name": "c"}, "spec": {"gpuClasses": [{"name": "X", "product": "NVIDIA-B200"}]}}
    )
    assert core_node(node, mapped).gpu_class == "X"
    node["metadata"]["labels"][api.LABEL_GPU_PRODUCT] = "NVIDIA-H100"
    assert core_node(node, mapped) is None  # a product the centre does not map is not its GPU


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


def test_pod_gpus_sums_containers():
    pod = {
        "spec": {
            "containers": [
                {"resources": {"limits": {"nvidia.com/gpu": "2"}}},
                {"resources": {"requests": {"nvidia.com/gpu": 1}}},
                {},
            ]
        }
    }
    assert pod_gpus(pod) == 3


def test_replica_pod_has_gpus_identity_env_and_owner():
    p = pods.replica_pod(_job(), 1, 3, "node-a", 8, "aicenter-scheduler", "nvidia.com/gpu")
    md, spec = p["metadata"], p["spec"]
    assert md["name"] == "train-3-1" and md["labels"][api.LABEL_REPLICA] == "1" and md["labels"]["app"] == "x"
    assert md["annotations"][pods.ANNOTATION_NODE] == "node-a"
    assert md["ownerReferences"][0]["uid"] == "u-1" and md["ownerReferences"][0]["controller"]
    assert spec["schedulerName"] == "aicenter-scheduler" and "nodeName" not in spec
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
    assert rec.phase == "Pending" and rec.gang and rec.unit_keys() == ["lab/train"]
    (w,) = rec.workloads()
    assert w.placement is None and w.topology_mode == TopologyMode.PREFERRED and w.priority == 5
    rec.quota, rec.gpu_class, rec.phase = "q", "B200", "Admitted"
    rec.placements = {0: Placement("n0", "train-0-0"), 1: Placement("n1", "train-0-1")}
    obj = _job()
    obj["status"] = rec.status()
    again = record_from(obj)  # as a restarted operator sees it
    (w2,) = again.workloads()
    assert w2.placement == ("n0", "n1") and w2.placed_class == "B200" and again.quota == "q"


def test_independent_job_has_one_unit_per_replica():
    rec = JobRecord("lab", "sweep", "u", 0.0, _job(gang={"policy": "Independent"}))
    assert rec.unit_keys() == ["lab/sweep#0", "lab/sweep#1"]
    assert [w.replicas for w in rec.workloads()] == [1, 1]
    rec.done.add(0)
    assert [w.key for w in rec.workloads()] == ["lab/sweep#1"]
    assert rec.attempt == 0
    rec.restarts, rec.preemptions = 1, [{"time": "t", "preemptor": "p", "reason": "r"}]
    assert rec.attempt == 2  # new pod names after every restart or preemption
