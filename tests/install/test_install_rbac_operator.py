"""RBAC proof, part 2: the operator runs its end-to-end scenario as the chart's ServiceAccount.

The process gets a kubeconfig holding only a TokenRequest token for the chart's ServiceAccount, so
every call it makes is checked against the chart's ClusterRole and Lease Role. The scenario touches
every right it needs: watches, leader election, job/centre/quota status, Services, pod create,
bind and delete (preemption), Events, and deleting a finished job (TTL). Any 403 fails the test.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from e2e_kit import (
    G,
    OperatorProcess,
    call,
    get_job,
    job_manifest,
    make_center,
    make_quota,
    submit,
    wait_phase,
)

from aicenter_testbed.waiting import wait_for

pytestmark = pytest.mark.cluster


def test_operator_scenario_under_the_chart_service_account(
    cluster, chart_release, operator_sa_kubeconfig, tmp_path
):
    ns_a, ns_b = (f"t-{uuid.uuid4().hex[:10]}" for _ in range(2))
    for ns in (ns_a, ns_b):
        cluster.create_namespace(ns)
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=2)
    cohort = f"{c.name}-cohort"
    make_quota(cluster, f"{ns_a}-q", c.name, ns_a, "B200", 8, 16, cohort)
    make_quota(cluster, f"{ns_b}-q", c.name, ns_b, "B200", 8, 16, cohort)
    log = tmp_path / "operator-as-sa.log"
    op = OperatorProcess(
        cluster.kubeconfig,
        log,
        [
            "--kubeconfig",
            str(operator_sa_kubeconfig),
            "--lease-namespace",
            chart_release.namespace,
            "--lease-name",
            chart_release.lease_name,
            "--lease-seconds",
            "6",
        ],
    ).start()
    try:
        # a gang (headless Service, two pods, bindings) borrowing the idle guarantee of quota b
        submit(cluster, ns_a, job_manifest("gang", 2, 8))
        wait_phase(cluster, ns_a, "gang", "Running")
        # quota b reclaims: the gang is preempted (pods deleted), b's job runs
        submit(cluster, ns_b, job_manifest("owner", 1, 8, run_seconds=2, ttlSecondsAfterFinished=1))
        wait_phase(cluster, ns_b, "owner", ("Running", "Succeeded"))
        st = get_job(cluster, ns_a, "gang")["status"]
        assert st["preemptions"] and st["phase"] in ("Pending", "Admitted", "Running")
        # completion, then TTL deletes the finished job
        wait_for(
            lambda: cluster.request("GET", f"{G}/namespaces/{ns_b}/gpujobs/owner")[0] == 404,
            90,
            "the finished job deleted after its TTL",
        )
        wait_phase(cluster, ns_a, "gang", "Running")  # room again: the gang comes back
        # centre and quota status written, Events posted
        wait_for(
            lambda: (
                (call(cluster, "GET", f"{G}/aicenters/{c.name}").get("status") or {}).get("totalGPUs") == 16
            ),
            30,
            "centre status",
        )
        events = call(cluster, "GET", f"/api/v1/namespaces/{ns_a}/events")["items"]
        assert {"Scheduled", "Preempted"} <= {e["reason"] for e in events}
        lease = call(
            cluster,
            "GET",
            f"/apis/coordination.k8s.io/v1/namespaces/{chart_release.namespace}/leases/{chart_release.lease_name}",
        )
        assert lease["spec"]["holderIdentity"]
    finally:
        op.stop()
    text = log.read_text()
    assert "403" not in text and "orbidden" not in text, text[-3000:]
