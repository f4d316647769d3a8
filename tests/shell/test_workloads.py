"""Others' pods that name the operator as their scheduler: grouped, placed together, bound, told why
they wait, preempted through the Eviction API — against the fake API server."""

from __future__ import annotations

import asyncio

from harness import Harness

from aicenter.controller.groups import ANN_TOPOLOGY_KEY

NS = "lab"
RACK = "topology.aicenter.dev/rack"


def run(coro):
    return asyncio.run(coro)


def fleet(h: Harness, racks: int = 2, per_rack: int = 4, guaranteed: int = 64) -> None:
    h.cluster.add_center("c")
    h.cluster.add_namespace(NS)
    h.cluster.add_quota("q", NS, guaranteed)
    for r in range(racks):
        for i in range(per_rack):
            h.cluster.add_node(f"r{r}n{i}", rack=f"r{r}")


def job_pods(h: Harness, name: str, n: int, gpus: int = 8, parallelism: int | None = None, **kw) -> None:
    uid = f"uid-{name}"
    h.cluster.owners[f"{NS}/{name}"] = {
        "spec": {"parallelism": parallelism or n, "completions": parallelism or n}
    }
    for i in range(n):
        h.cluster.workload_pod(
            NS,
            f"{name}-{i}",
            gpus,
            labels={"batch.kubernetes.io/job-name": name},
            owner={"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": True},
            **kw,
        )


def node_of(h: Harness, key: str) -> str | None:
    return h.cluster.pods[key]["spec"].get("nodeName")


def condition(h: Harness, key: str) -> dict:
    return next(
        (c for c in h.cluster.pods[key]["status"].get("conditions") or () if c["type"] == "PodScheduled"), {}
    )


def test_an_indexed_job_is_placed_as_one_gang_in_one_rack():
    async def scenario():
        h = Harness()
        fleet(h)
        h.cluster.add_node("r0n4", rack="r0")  # rack 0 has 5 nodes: the gang of 4 fits either rack
        job_pods(h, "train", 4, annotations={ANN_TOPOLOGY_KEY: RACK})
        h.start()
        await h.quiesce()
        h.check()
        nodes = [node_of(h, f"{NS}/train-{i}") for i in range(4)]
        assert all(nodes) and len({n[:2] for n in nodes}) == 1, nodes
        assert h.writes("POST", "/binding") == 4
        assert any(e.get("reason") == "Scheduled" for e in h.cluster.events)

    run(scenario())


def test_a_group_waits_whole_for_its_members_and_says_so():
    async def scenario():
        h = Harness()
        fleet(h)
        job_pods(h, "train", 3, parallelism=4)  # the fourth pod is not created yet
        h.start()
        await h.run(5)
        assert all(node_of(h, f"{NS}/train-{i}") is None for i in range(3))
        c = condition(h, f"{NS}/train-0")
        assert c.get("status") == "False" and "WaitingForMembers" in c.get("message", ""), c
        job_pods_more = h.cluster.workload_pod
        job_pods_more(
            NS,
            "train-3",
            8,
            labels={"batch.kubernetes.io/job-name": "train"},
            owner={
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": "train",
                "uid": "uid-train",
                "controller": True,
            },
        )
        await h.quiesce()
        h.check()
        assert all(node_of(h, f"{NS}/train-{i}") for i in range(4))

    run(scenario())


def test_single_pods_of_a_deployment_and_a_quota_that_is_full():
    async def scenario():
        h = Harness()
        fleet(h, racks=1, per_rack=1, guaranteed=2)
        for i in range(3):
            h.cluster.workload_pod(NS, f"web-{i}", 1, labels={"app": "web"})
        h.start()
        await h.quiesce()
        h.check()
        bound = [i for i in range(3) if node_of(h, f"{NS}/web-{i}")]
        assert len(bound) == 2
        waiting = next(i for i in range(3) if i not in bound)
        c = condition(h, f"{NS}/web-{waiting}")
        assert "QuotaExceeded" in c.get("message", "") and "limit 2" in c["message"], c
        assert any(e.get("reason") == "FailedScheduling" for e in h.cluster.events)

    run(scenario())


def test_a_gpujob_preempts_a_lower_priority_group_through_the_eviction_api():
    async def scenario():
        h = Harness()
        fleet(h, racks=1, per_rack=2, guaranteed=16)
        job_pods(h, "low", 2, priority=0)
        h.start()
        await h.run(3)
        assert node_of(h, f"{NS}/low-0") and node_of(h, f"{NS}/low-1")
        h.cluster.submit(NS, "high", replicas=2, priority=100)
        await h.quiesce()
        h.check()
        assert h.phase(NS, "high") == "Running"
        assert h.writes("POST", "/eviction") >= 2
        assert f"{NS}/low-0" not in h.cluster.pods  # evicted (its controller would make a new one)

    run(scenario())


def test_an_eviction_a_disruption_budget_refuses_is_retried():
    async def scenario():
        h = Harness()
        fleet(h, racks=1, per_rack=1, guaranteed=8)
        h.cluster.workload_pod(NS, "svc-0", 8, priority=0)
        h.start()
        await h.run(3)
        h.cluster.pods[f"{NS}/svc-0"]["metadata"]["_pdb_blocks"] = True
        h.cluster.submit(NS, "urgent", priority=100)
        await h.run(20)
        assert h.phase(NS, "urgent") != "Running" and f"{NS}/svc-0" in h.cluster.pods
        h.cluster.pods[f"{NS}/svc-0"]["metadata"]["_pdb_blocks"] = False  # the budget allows it now
        await h.quiesce()
        h.check()
        assert h.phase(NS, "urgent") == "Running" and f"{NS}/svc-0" not in h.cluster.pods

    run(scenario())


def test_a_pod_with_dynamic_resource_claims_is_told_it_is_not_supported():
    async def scenario():
        h = Harness()
        fleet(h, racks=1, per_rack=1)
        h.cluster.workload_pod(NS, "dra", 1, resourceClaims=[{"name": "gpu"}])
        h.start()
        await h.quiesce()
        h.check()
        c = condition(h, f"{NS}/dra")
        assert node_of(h, f"{NS}/dra") is None and "Unsupported" in c.get("message", ""), c

    run(scenario())


def test_an_explicit_group_waits_for_its_second_member():
    async def scenario():
        h = Harness()
        fleet(h, racks=1, per_rack=2)
        labels = {"aicenter.dev/pod-group": "pair", "aicenter.dev/pod-group-size": "2"}
        h.cluster.workload_pod(NS, "pair-0", 4, labels=labels)
        h.start()
        await h.run(5)
        assert node_of(h, f"{NS}/pair-0") is None
        assert "needs 2 pod(s)" in condition(h, f"{NS}/pair-0").get("message", "")
        h.cluster.workload_pod(NS, "pair-1", 4, labels=labels)
        await h.quiesce()
        h.check()
        assert node_of(h, f"{NS}/pair-0") and node_of(h, f"{NS}/pair-1")

    run(scenario())
