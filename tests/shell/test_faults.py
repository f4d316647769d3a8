"""The shell under API faults: one test per way it used to sell a GPU twice, hide GPUs, kill work for
no reason, ignore constraints, get stuck or drift. Each runs the real Controller against the fake
API server and judges the outcome from the fake's state after quiescence."""

from __future__ import annotations

import asyncio

import pytest
from fakeapi import Fault
from harness import Harness

from aicenter import api

NS = "lab"


def run(coro):
    return asyncio.run(coro)


def fleet(h: Harness, nodes: int = 3, gpus: int = 8, guaranteed: int | None = None, **center) -> None:
    h.cluster.add_center("c", **center)
    h.cluster.add_namespace(NS)
    h.cluster.add_quota("q", NS, guaranteed if guaranteed is not None else nodes * gpus)
    for i in range(nodes):
        h.cluster.add_node(f"n{i}", gpus=gpus, rack=f"r{i // 4}")


def fail_once(method: str, fragment: str, fault: Fault):
    """A fault for the first request whose path (or pod name) contains ``fragment``."""
    state = {"done": False}

    def policy(m: str, path: str, body):
        name = ((body or {}).get("metadata") or {}).get("name", "")
        if m == method and not state["done"] and (fragment in path or fragment in name):
            state["done"] = True
            return fault
        return None

    return policy


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=429),
        Fault(status=503),
        Fault(status=403, message='pods "x" is forbidden: exceeded quota: compute, requested: pods=1'),
        Fault(lost=True),
    ],
    ids=["429", "503", "403-resourcequota", "lost-response"],
)
def test_a_failed_pod_create_rolls_the_whole_gang_back(fault):
    async def scenario():
        h = Harness(faults=fail_once("POST", "g-1-2", fault))
        fleet(h)
        h.cluster.submit(NS, "g", replicas=3)
        h.start()
        await h.run(5)
        # pods 0 and 1 of attempt 1 were created; 2 failed: they must not stay (nor be adopted)
        await h.quiesce()
        h.check()
        st = h.status(NS, "g")
        assert st["phase"] == "Running" and st["attempt"] == 2, st
        assert h.live_pods(NS) == ["lab/g-2-0", "lab/g-2-1", "lab/g-2-2"]
        assert h.cluster.rejected == []

    run(scenario())


def test_a_permanent_rejection_fails_the_job_and_removes_what_was_created():
    async def scenario():
        h = Harness(faults=fail_once("POST", "g-1-1", Fault(status=422, message="spec.containers: Invalid")))
        fleet(h)
        h.cluster.submit(NS, "g", replicas=3)
        h.start()
        await h.run(5)
        await h.quiesce()
        h.check()
        st = h.status(NS, "g")
        assert st["phase"] == "Failed" and st["reason"] == "PodCreateFailed", st
        assert h.live_pods(NS) == []

    run(scenario())


def test_a_preemption_racing_slow_creates_leaves_no_orphan_and_waits_for_room():
    async def scenario():
        slow = {"on": True}

        def policy(m, path, body):
            name = ((body or {}).get("metadata") or {}).get("name", "")
            if m == "POST" and slow["on"] and name.startswith("low-"):
                return Fault(delay=6.0)  # lands six seconds later: after the preemption
            return None

        h = Harness(faults=policy)
        fleet(h, nodes=2)
        h.cluster.terminate_after = 5.0
        h.cluster.submit(NS, "low", replicas=2, priority=0)
        h.start()
        await h.run(2)
        h.cluster.submit(NS, "high", replicas=2, priority=100)
        await h.run(3)
        slow["on"] = False
        await h.quiesce()
        h.check()
        assert h.phase(NS, "high") == "Running"
        assert h.phase(NS, "low") == "Pending"
        assert all(k.startswith("lab/high-") for k in h.live_pods(NS))
        assert h.cluster.rejected == []

    run(scenario())


def test_an_independent_job_past_its_backoff_limit_stops_every_replica():
    async def scenario():
        h = Harness()
        fleet(h, nodes=3)
        # replica pods fail after 2 s; four replicas, backoffLimit 1
        h.cluster.submit(
            NS, "sweep", replicas=3, run_s=2, fail=True, backoffLimit=1, gang={"policy": "Independent"}
        )
        h.start()
        await h.quiesce()
        h.check()
        assert h.phase(NS, "sweep") == "Failed"
        assert h.live_pods(NS) == []

    run(scenario())


def test_gpus_are_not_released_before_the_pods_are_gone():
    async def scenario():
        h = Harness()
        fleet(h, nodes=1)
        h.cluster.terminate_after = 20.0
        h.cluster.submit(NS, "first")
        h.start()
        await h.run(3)
        assert h.phase(NS, "first") == "Running"
        h.cluster.delete_job(f"{NS}/first")  # its pod terminates for 20 s
        h.cluster.submit(NS, "second")
        await h.run(10)
        assert h.phase(NS, "second") == "Pending"  # the node's GPUs are still held by a live pod
        assert h.live_pods(NS) == ["lab/first-1-0"]
        await h.quiesce()
        h.check()
        assert h.phase(NS, "second") == "Running"

    run(scenario())


def test_a_pod_of_ours_that_no_placement_claims_holds_gpus_until_deleted():
    async def scenario():
        h = Harness()
        fleet(h, nodes=1)
        job = h.cluster.submit(NS, "j", replicas=1, gpus=4)
        stray = {
            "metadata": {
                "name": "j-77-0",
                "labels": {
                    api.LABEL_MANAGED_BY: api.MANAGED_BY,
                    api.LABEL_JOB: "j",
                    api.LABEL_JOB_UID: job["metadata"]["uid"],
                    api.LABEL_ATTEMPT: "77",
                    api.LABEL_REPLICA: "0",
                },
            },
            "spec": {
                "nodeName": "n0",
                "containers": [{"name": "m", "resources": {"limits": {"nvidia.com/gpu": "6"}}}],
            },
        }
        h.cluster.handle("POST", f"/api/v1/namespaces/{NS}/pods", stray)
        h.cluster.terminate_after = 10.0
        h.start()
        await h.run(4)
        assert h.phase(NS, "j") == "Pending"  # 6 of 8 GPUs held by the stray pod: 4 do not fit
        await h.quiesce()
        h.check()
        assert h.phase(NS, "j") == "Running" and "lab/j-77-0" not in h.cluster.pods

    run(scenario())


def test_a_job_created_again_under_the_same_name_does_not_adopt_the_old_pods():
    async def scenario():
        h = Harness()
        fleet(h, nodes=2)
        h.cluster.terminate_after = 8.0
        h.cluster.submit(NS, "j")
        h.start()
        await h.run(3)
        old_uid = h.cluster.jobs[f"{NS}/j"]["metadata"]["uid"]
        h.cluster.delete_job(f"{NS}/j")
        h.cluster.submit(NS, "j")  # same name, new uid; the old pod j-1-0 is still terminating
        await h.quiesce()
        h.check()
        new = h.cluster.jobs[f"{NS}/j"]
        live = [h.cluster.pods[k] for k in h.live_pods(NS)]
        assert len(live) == 1
        assert live[0]["metadata"]["labels"][api.LABEL_JOB_UID] == new["metadata"]["uid"] != old_uid

    run(scenario())


def test_gpus_of_every_container_of_other_pods_count():
    async def scenario():
        h = Harness()
        fleet(h, nodes=1)
        # 1 + 2 in containers, a sidecar with 1: 4 GPUs held although the first container asks 1
        h.cluster.foreign_pod(
            "other",
            "p",
            "n0",
            1,
            initContainers=[
                {"name": "s", "restartPolicy": "Always", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
            ],
        )
        h.cluster.pods["other/p"]["spec"]["containers"].append(
            {"name": "b", "resources": {"limits": {"nvidia.com/gpu": "2"}}}
        )
        h.cluster.submit(NS, "five", gpus=5)
        h.cluster.submit(NS, "four", gpus=4)
        h.start()
        await h.quiesce()
        h.check()
        assert h.phase(NS, "five") == "Pending" and h.phase(NS, "four") == "Running"

    run(scenario())


def test_a_template_asking_for_gpus_itself_is_refused_with_a_reason():
    async def scenario():
        h = Harness()
        fleet(h, nodes=1)
        h.cluster.submit(
            NS,
            "sneaky",
            gpus=1,
            pod_spec={
                "containers": [
                    {"name": "a", "image": "x"},
                    {"name": "b", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "7"}}},
                ]
            },
        )
        h.cluster.submit(
            NS, "dra", gpus=1, pod_spec={"containers": [{"name": "a"}], "resourceClaims": [{"name": "g"}]}
        )
        h.start()
        await h.quiesce()
        h.check()
        assert h.status(NS, "sneaky")["reason"] == "Unsupported"
        assert "GPUs come only from spec.gpusPerReplica" in h.status(NS, "sneaky")["message"]
        assert (
            h.status(NS, "dra")["reason"] == "Unsupported"
            and "resourceClaims" in h.status(NS, "dra")["message"]
        )
        assert h.live_pods() == []

    run(scenario())


def test_an_allocatable_flap_does_not_evict_and_a_lasting_drop_does():
    async def scenario():
        h = Harness()
        fleet(h, nodes=2, unhealthyGPUGraceSeconds=30)
        h.cluster.submit(NS, "keep", preemptible=False)
        h.start()
        await h.run(3)
        node = h.cluster.pods[h.live_pods(NS)[0]]["spec"]["nodeName"]
        h.cluster.set_allocatable(node, 0)  # a device plugin restart
        await h.run(10)
        h.cluster.set_allocatable(node, 8)
        await h.run(40)
        st = h.status(NS, "keep")
        assert st["phase"] == "Running" and st["restarts"] == 0, st
        h.cluster.set_allocatable(node, 4)  # GPUs really lost
        await h.quiesce()
        h.check()
        st = h.status(NS, "keep")
        assert st["restarts"] == 1 and st["phase"] == "Running" and st["placements"][0]["node"] != node, st

    run(scenario())


def test_a_stray_pending_pod_bound_by_someone_else_evicts_nothing():
    async def scenario():
        h = Harness()
        fleet(h, nodes=1, unhealthyGPUGraceSeconds=0)
        h.cluster.submit(NS, "j", preemptible=False)
        h.start()
        await h.run(3)
        h.cluster.foreign_pod("other", "stray", "n0", 8, phase="Pending")  # set nodeName by hand
        await h.run(20)
        assert h.status(NS, "j")["restarts"] == 0 and h.phase(NS, "j") == "Running"

    run(scenario())


def test_a_node_leaving_its_centre_keeps_its_work_and_takes_no_more():
    async def scenario():
        h = Harness()
        fleet(h, nodes=2)
        h.cluster.submit(NS, "a")
        h.start()
        await h.run(3)
        node = h.status(NS, "a")["placements"][0]["node"]
        h.cluster.update_node(node, lambda o: o["metadata"]["labels"].update({api.LABEL_CENTER: "elsewhere"}))
        await h.run(5)
        h.cluster.submit(NS, "b")
        h.cluster.submit(NS, "c")
        await h.quiesce()
        h.check()
        assert h.status(NS, "a")["restarts"] == 0 and h.phase(NS, "a") == "Running"
        ran = [h.status(NS, j)["placements"][0]["node"] for j in ("b", "c") if h.phase(NS, j) == "Running"]
        assert len(ran) == 1 and node not in ran

    run(scenario())


def test_a_centre_deleted_keeps_its_running_work():
    async def scenario():
        h = Harness()
        fleet(h, nodes=2)
        h.cluster.submit(NS, "a")
        h.start()
        await h.run(3)
        h.cluster.delete_center("c")
        await h.run(10)
        h.cluster.submit(NS, "b")
        await h.quiesce()
        h.check()
        assert h.status(NS, "a")["restarts"] == 0 and h.phase(NS, "a") == "Running"
        assert h.status(NS, "b")["reason"] == "CenterNotFound"

    run(scenario())


def test_a_failed_pod_delete_is_retried_until_the_pod_is_gone():
    async def scenario():
        failures = {"n": 0}

        def policy(m, path, body):
            if m == "DELETE" and "/pods/" in path and failures["n"] < 4:
                failures["n"] += 1
                return Fault(status=500)
            return None

        h = Harness(faults=policy)
        fleet(h, nodes=2)
        h.cluster.submit(NS, "victim", replicas=2, priority=0)
        h.start()
        await h.run(3)
        h.cluster.submit(NS, "boss", replicas=2, priority=10)
        await h.run(20)
        await h.quiesce()
        h.check()
        assert failures["n"] == 4
        assert h.phase(NS, "boss") == "Running" and h.phase(NS, "victim") == "Pending"

    run(scenario())


def test_a_deletion_the_watch_never_reported_is_swept():
    async def scenario():
        h = Harness()
        fleet(h, nodes=1)
        h.cluster.hide_job_deletions = True
        h.cluster.submit(NS, "gone")
        h.cluster.submit(NS, "waiting")
        h.start()
        await h.run(3)
        h.cluster.delete_job(f"{NS}/gone")  # kopf relisted after 410: no DELETED event
        await h.run(10)
        assert f"{NS}/gone" in h.cache.jobs
        t = h.cluster.now()
        h.cache.sweep_deleted(api.KIND_GPUJOB, set(h.cluster.jobs), t)  # what main's sweep does
        await h.quiesce()
        h.check()
        assert f"{NS}/gone" not in h.cache.jobs and h.phase(NS, "waiting") == "Running"

    run(scenario())


def test_spec_edits_on_pending_and_busy_jobs_are_honoured():
    async def scenario():
        slow = {"on": True}

        def policy(m, path, body):
            if m == "PATCH" and path.endswith("/gpujobs/busy/status") and slow["on"]:
                return Fault(delay=5.0)
            return None

        h = Harness(faults=policy)
        h.cluster.add_center("c")
        h.cluster.add_namespace(NS)
        h.cluster.add_quota("q1", NS, 8)
        h.cluster.add_quota("q2", NS, 8)  # two quotas serve the namespace: spec.quota must say which
        h.cluster.add_node("n0")
        h.cluster.add_node("n1")
        h.cluster.submit(NS, "pending")
        h.cluster.submit(NS, "busy", quota="q2")
        h.start()
        await h.run(2)
        assert h.status(NS, "pending")["reason"] == "NoQuota"
        h.cluster.edit_job(f"{NS}/pending", lambda o: o["spec"].update(quota="q1"))
        h.cluster.edit_job(f"{NS}/busy", lambda o: o["spec"].update(priority=42))  # while its write is slow
        await h.run(3)
        slow["on"] = False
        await h.quiesce()
        h.check()
        assert h.phase(NS, "pending") == "Running" and h.status(NS, "pending")["quota"] == "q1"
        (w,) = [w for k, w in h.ctl.sched.workloads.items() if k == f"{NS}/busy"]
        assert w.priority == 42

    run(scenario())


def test_pending_statuses_are_rewritten_only_when_their_reason_changes():
    async def scenario():
        h = Harness()
        fleet(h, nodes=1)
        h.cluster.submit(NS, "runner", run_s=5)
        for i in range(30):
            h.cluster.submit(NS, f"w{i:02d}")
        h.start()
        await h.run(3)
        before = {f"w{i:02d}": h.writes("PATCH", f"/gpujobs/w{i:02d}/status") for i in range(30)}
        assert all(n == 1 for n in before.values()), before  # one write each: the reason
        await h.run(20)  # runner finishes, w00 runs; the others wait on, reason unchanged
        after = {f"w{i:02d}": h.writes("PATCH", f"/gpujobs/w{i:02d}/status") for i in range(1, 30)}
        assert after == {k: 1 for k in after}, after

    run(scenario())


def test_with_watched_namespaces_pods_elsewhere_are_not_ours_to_delete_but_hold_room():
    async def scenario():
        from aicenter.controller.config import Settings

        h = Harness(settings=Settings(namespaces=[NS], room_timeout=30.0))
        fleet(h, nodes=1)
        other = {
            "metadata": {
                "name": "theirs-1-0",
                "labels": {
                    api.LABEL_MANAGED_BY: api.MANAGED_BY,
                    api.LABEL_JOB: "theirs",
                    api.LABEL_JOB_UID: "another-operators-job",
                    api.LABEL_ATTEMPT: "1",
                    api.LABEL_REPLICA: "0",
                },
            },
            "spec": {
                "nodeName": "n0",
                "containers": [{"name": "m", "resources": {"limits": {"nvidia.com/gpu": "6"}}}],
            },
        }
        h.cluster.add_namespace("elsewhere")
        h.cluster.handle("POST", "/api/v1/namespaces/elsewhere/pods", other)
        h.cluster.submit(NS, "j", gpus=4)
        h.start()
        await h.run(10)
        assert "elsewhere/theirs-1-0" in h.cluster.pods  # another operator's pod: not an orphan of ours
        assert h.phase(NS, "j") == "Pending"  # 6 of 8 GPUs are held by it
        assert h.writes("DELETE", "/namespaces/elsewhere/") == 0

    run(scenario())


def test_an_independent_job_partly_placed_says_how_many_wait_and_why():
    async def scenario():
        h = Harness()
        fleet(h, nodes=2, guaranteed=64)  # 16 GPUs: two of four 8-GPU replicas fit
        h.cluster.submit(NS, "sweep", replicas=4, gang={"policy": "Independent"})
        h.start()
        await h.run(6)
        st = h.status(NS, "sweep")
        assert st["phase"] == "Running", st
        assert st["message"].startswith("2 of 4 replica(s) placed, 2 waiting — InsufficientGPUs: "), st
        writes = h.writes("PATCH", "/gpujobs/sweep/status")
        await h.run(10)  # nothing changes: no rewrite
        assert h.writes("PATCH", "/gpujobs/sweep/status") == writes

    run(scenario())
