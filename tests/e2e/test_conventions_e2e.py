"""The conventions Kubernetes users expect, on the real control plane: conditions as metav1.Condition
with observedGeneration, Events through events.k8s.io/v1 with the reporting controller and an action,
and messages that say what will happen to a job that can never be admitted as it stands."""

from __future__ import annotations

import pytest
from e2e_kit import G, call, get_job, job_manifest, make_center, make_quota, submit, wait_phase

from aicenter.controller.events import REPORTING_CONTROLLER
from aicenter_testbed.waiting import wait_for

pytestmark = pytest.mark.cluster

CONDITION_KEYS = {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}


def _events(cluster, namespace: str, name: str) -> list[dict]:
    doc = call(cluster, "GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")
    return [e for e in doc["items"] if (e.get("regarding") or {}).get("name") == name]


def _conditions(job: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (job.get("status") or {}).get("conditions") or ()}


def test_conditions_carry_observed_generation_and_events_name_the_controller(cluster, operator, namespace):
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=1)
    make_quota(cluster, f"{namespace}-q", c.name, namespace, "B200", 16)
    submit(cluster, namespace, job_manifest("runs", 1, 8, run_seconds=600, priority=100))
    job = wait_phase(cluster, namespace, "runs", "Running")
    conds = _conditions(job)
    assert {"Admitted", "Running"} <= set(conds), conds
    for cond in conds.values():
        assert set(cond) == CONDITION_KEYS, cond
        assert cond["observedGeneration"] == job["metadata"]["generation"] == 1
    assert conds["Admitted"]["status"] == "True" and conds["Admitted"]["reason"] == "Admitted"

    # A second job waits (the node is full, and it may not preempt the first); editing its spec
    # moves its conditions' generation.
    submit(cluster, namespace, job_manifest("waits", 1, 8))
    wait_for(lambda: _conditions(get_job(cluster, namespace, "waits")).get("Admitted"), 30, "waiting reason")
    call(cluster, "PATCH", f"{G}/namespaces/{namespace}/gpujobs/waits", {"spec": {"priority": 7}})

    def regenerated() -> dict | None:
        j = get_job(cluster, namespace, "waits")
        st = j.get("status") or {}
        cond = _conditions(j).get("Admitted") or {}
        gens = (j["metadata"]["generation"], st.get("observedGeneration"), cond.get("observedGeneration"))
        return j if gens == (2, 2, 2) else None

    waiting = wait_for(regenerated, 30, "observedGeneration 2 on the waiting job's status and condition")
    admitted = _conditions(waiting)["Admitted"]
    assert admitted["status"] == "False" and admitted["reason"] == "InsufficientGPUs", admitted

    def scheduled() -> list[dict]:
        return [e for e in _events(cluster, namespace, "runs") if e["reason"] == "Scheduled"]

    (event,) = wait_for(scheduled, 30, "the Scheduled event of the running job")
    assert event["reportingController"] == REPORTING_CONTROLLER
    assert event["reportingInstance"]
    assert event["action"] == "Schedule"
    assert event["type"] == "Normal"
    assert event["regarding"]["kind"] == "GPUJob" and event["regarding"]["uid"] == job["metadata"]["uid"]
    assert event["note"].startswith(f"admitted to {c.name}: 1 × 8 B200 on 1 node(s)")
