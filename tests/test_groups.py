"""Which group a pod belongs to, on pods as their controllers label them (JobSet, Kubeflow training
and Trainer, LeaderWorkerSet cannot run here: their labels and owners are written out as they set
them), and how big the group is."""

from __future__ import annotations

from aicenter.controller.groups import Owner, identity, size_from_owner


def pod(name: str, labels=None, annotations=None, owners=None, ns: str = "lab") -> dict:
    md = {"name": name, "namespace": ns, "labels": labels or {}, "annotations": annotations or {}}
    if owners:
        md["ownerReferences"] = owners
    return {"metadata": md, "spec": {}}


def owner(kind: str, name: str, api_version: str = "batch/v1", uid: str = "u1") -> dict:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": True}


def test_an_explicit_pod_group():
    i = identity(pod("a", {"aicenter.dev/pod-group": "g1", "aicenter.dev/pod-group-size": "4"}))
    assert (i.key, i.kind, i.size, i.owner) == ("lab/group:g1", "PodGroup", 4, None)
    j = identity(
        pod(
            "b",
            {"aicenter.dev/pod-group": "g1"},
            {"aicenter.dev/pod-group-size": "4", "aicenter.dev/pod-group-min-available": "2"},
        )
    )
    assert (j.key, j.size, j.min_available) == ("lab/group:g1", 4, 2)


def test_a_batch_job_is_one_group_sized_by_its_parallelism():
    indexed = pod(
        "train-0-abcde",
        {"batch.kubernetes.io/job-name": "train", "batch.kubernetes.io/job-completion-index": "0"},
        owners=[owner("Job", "train")],
    )
    i = identity(indexed)
    assert (i.key, i.kind, i.size) == ("lab/job:train", "Job", None)
    assert i.owner == Owner("batch/v1", "Job", "train", "u1")
    assert i.owner.path("lab") == "/apis/batch/v1/namespaces/lab/jobs/train"
    assert size_from_owner(i, {"spec": {"parallelism": 4, "completions": 4}}) == 4
    assert size_from_owner(i, {"spec": {"parallelism": 4, "completions": 2}}) == 2


def test_a_jobset_replicated_job_is_replicas_times_parallelism():
    p = pod(
        "trainer-node-0-0-x",
        {
            "jobset.sigs.k8s.io/jobset-name": "trainer",
            "jobset.sigs.k8s.io/replicatedjob-name": "node",
            "jobset.sigs.k8s.io/job-index": "0",
            "batch.kubernetes.io/job-name": "trainer-node-0",
        },
        {"jobset.sigs.k8s.io/replicatedjob-replicas": "2"},
        owners=[owner("Job", "trainer-node-0")],
    )
    i = identity(p)
    assert (i.key, i.kind, i.factor) == ("lab/jobset:trainer/node", "JobSet", 2)
    assert size_from_owner(i, {"spec": {"parallelism": 4}}) == 8


def test_a_kubeflow_trainjob_runs_as_a_jobset():
    """Kubeflow Trainer's TrainJob creates a JobSet of the same name; its trainer step is a group."""
    p = pod(
        "llm-node-0-0-x",
        {"jobset.sigs.k8s.io/jobset-name": "llm", "jobset.sigs.k8s.io/replicatedjob-name": "node"},
        {"jobset.sigs.k8s.io/replicatedjob-replicas": "1"},
        owners=[owner("Job", "llm-node-0")],
    )
    i = identity(p)
    assert i.key == "lab/jobset:llm/node" and size_from_owner(i, {"spec": {"parallelism": 16}}) == 16


def test_a_pytorchjob_is_one_group_of_all_its_replicas():
    p = pod(
        "bert-worker-1",
        {"training.kubeflow.org/job-name": "bert", "training.kubeflow.org/replica-type": "worker"},
        owners=[owner("PyTorchJob", "bert", "kubeflow.org/v1")],
    )
    i = identity(p)
    assert (i.key, i.kind) == ("lab/kubeflow:bert", "Kubeflow")
    assert i.owner.path("lab") == "/apis/kubeflow.org/v1/namespaces/lab/pytorchjobs/bert"
    spec = {"pytorchReplicaSpecs": {"Master": {"replicas": 1}, "Worker": {"replicas": 3}}}
    assert size_from_owner(i, {"spec": spec}) == 4


def test_a_leaderworkerset_group():
    leader = pod(
        "vllm-1",
        {"leaderworkerset.sigs.k8s.io/name": "vllm", "leaderworkerset.sigs.k8s.io/group-index": "1"},
        {"leaderworkerset.sigs.k8s.io/size": "4"},
    )
    worker = pod(
        "vllm-1-3",
        {
            "leaderworkerset.sigs.k8s.io/name": "vllm",
            "leaderworkerset.sigs.k8s.io/group-index": "1",
            "leaderworkerset.sigs.k8s.io/worker-index": "3",
        },
        {"leaderworkerset.sigs.k8s.io/size": "4"},
    )
    assert identity(leader) == identity(worker)
    assert (identity(leader).key, identity(leader).size) == ("lab/lws:vllm-1", 4)


def test_a_deployments_pods_are_single():
    p = pod("web-7d9-abcde", {"app": "web"}, owners=[owner("ReplicaSet", "web-7d9", "apps/v1")])
    i = identity(p)
    assert (i.key, i.kind, i.size) == ("lab/pod:web-7d9-abcde", "Pod", 1)
