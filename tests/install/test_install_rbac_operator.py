"""RBAC proof, part 2: the operator runs its end-to-end scenario as the chart's ServiceAccount, and the
API server's audit log shows that it uses every right the table grants and tries nothing else.

This module runs a control plane of its own with the audit log on (``LocalCluster(audit=True)``: level
Metadata for ServiceAccounts): the session's cluster keeps none, and may be one reused through
``AICENTER_KUBECONFIG``. The chart is installed there, and the operator gets a kubeconfig holding only a
TokenRequest token for the chart's ServiceAccount, so every call it makes is checked against the chart's
RBAC. The scenario touches every right: watches and metadata-only lists, leader election (create, renew,
release), job/centre/quota status, a headless Service, pod create and delete (preemption), Events,
deleting a finished job (TTL), and, with ``--metrics-auth``, a TokenReview and a SubjectAccessReview
for a scrape of ``/metrics`` by a ServiceAccount bound to the chart's metrics-reader ClusterRole.

From the audit log: the ``(group, resource, verb)`` the ServiceAccount used must be exactly the table's
(``aicenter.api.rbac``: the operator ClusterRole, the workload rules, the Lease Role), and no request may
have been refused (403). Run once cluster-wide and once with ``watchNamespaces`` (workload rights by
RoleBindings in the watched namespaces only).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
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
from install_helpers import Audited, Release, audit_entries, service_account_token, write_sa_kubeconfig

from aicenter import api
from aicenter.api import rbac
from aicenter_testbed.cluster import LocalCluster
from aicenter_testbed.sim.nodes import KWOK_TOLERATION
from aicenter_testbed.waiting import wait_for

pytestmark = pytest.mark.cluster

#: Rights the table grants that the scenario cannot exercise, each with the reason. Empty: the scenario
#: uses every one (the test fails on a grant it never uses that is not listed here).
NOT_EXERCISED: dict[tuple[str, str, str], str] = {
    ("kubeflow.org", kind, "get"): "no Kubeflow training operator (nor its CRDs) on the test bed; the"
    " rule is read by the same code path as batch Jobs' (tests/test_groups.py covers the sizes)"
    for kind in ("pytorchjobs", "tfjobs", "mpijobs", "xgboostjobs", "paddlejobs", "jaxjobs")
}

SCRAPER = "metrics-scraper"  # a ServiceAccount bound to <fullname>-metrics-reader by metrics.readers


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("audited"), audit=True)  # kept: logs, audit log
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def cluster(audited):
    """This module's own audited cluster in place of the session's (for every fixture it uses)."""
    return audited.client()


def _install(cluster, helm_home, namespace: str, values: dict[str, str]) -> Release:
    suffix = uuid.uuid4().hex[:6]
    release = Release(
        name=f"aic-{suffix}",
        namespace=namespace,
        home=helm_home,
        kubeconfig=cluster.kubeconfig,
        values={
            "metrics.readers[0].kind": "ServiceAccount",
            "metrics.readers[0].name": SCRAPER,
            "metrics.readers[0].namespace": namespace,
            **values,
        },
    )
    release.install()
    return release


def _scrape(port: int, path: str, token: str | None) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read().decode()
            assert path != "/metrics" or "aicenter_" in body, body[:500]
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _scenario(cluster, release: Release, sa_kubeconfig: Path, namespaces: tuple[str, ...], log: Path) -> None:
    """Gang, reclaim (preemption), completion, TTL delete, status, Events, metrics with a token; the
    operator stopped cleanly at the end (it releases the Lease)."""
    ns_a, ns_b = namespaces
    c = make_center(cluster, "hgx-b200", racks=1, nodes_per_rack=2)
    cohort = f"{c.name}-cohort"
    make_quota(cluster, f"{ns_a}-q", c.name, ns_a, "B200", 8, 16, cohort)
    make_quota(cluster, f"{ns_b}-q", c.name, ns_b, "B200", 8, 16, cohort)
    args = [
        "--kubeconfig",
        str(sa_kubeconfig),
        "--lease-namespace",
        release.namespace,
        "--lease-name",
        release.lease_name,
        "--lease-seconds",
        "6",
        "--metrics-auth",
    ]
    if "watchNamespaces" in release.values:
        args += [a for ns in namespaces for a in ("--namespace", ns)]
    op = OperatorProcess(cluster.kubeconfig, log, args).start()
    try:
        # a gang (headless Service, two pods on their nodes) borrowing the idle guarantee of quota b
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
        wait_for(
            lambda: call(cluster, "GET", f"{G}/gpuquotas/{ns_a}-q").get("status") or {},
            30,
            "quota status",
        )
        events = call(cluster, "GET", f"/apis/events.k8s.io/v1/namespaces/{ns_a}/events")["items"]
        assert {"Scheduled", "Preempted"} <= {e["reason"] for e in events}
        lease = call(
            cluster,
            "GET",
            f"/apis/coordination.k8s.io/v1/namespaces/{release.namespace}/leases/{release.lease_name}",
        )
        assert lease["spec"]["holderIdentity"]
        # others' workloads: a batch Job whose pods name the operator as their scheduler (it reads the
        # Job's parallelism and binds the pods; quota b reclaims from the borrowing gang, by deletion),
        # a pod too big for any node (it says why in PodScheduled), and a GPUJob of higher priority that
        # preempts the Job's pods within quota b (the Eviction API)
        call(cluster, "POST", f"/apis/batch/v1/namespaces/{ns_b}/jobs", _batch_job("wl", 2, 4))
        wait_for(lambda: len(_bound(cluster, ns_b, "app=wl")) == 2, 90, "the Job's pods bound")
        call(cluster, "POST", f"/api/v1/namespaces/{ns_b}/pods", _pod("huge", 16))
        wait_for(lambda: _scheduled_message(cluster, ns_b, "huge"), 60, "the waiting pod to say why")
        submit(cluster, ns_b, job_manifest("boss", 2, 8, priority=100))
        wait_phase(cluster, ns_b, "boss", "Running", timeout=90)
        # --metrics-auth: no token, 401; a token not allowed the path, 403; the metrics reader's, 200
        scraper = service_account_token(cluster, release.namespace, SCRAPER)
        operator = service_account_token(cluster, release.namespace, release.service_account)
        assert _scrape(op.port, "/metrics", None) == 401
        assert _scrape(op.port, "/metrics", operator) == 403
        assert _scrape(op.port, "/metrics", scraper) == 200
        assert _scrape(op.port, "/visibility/v1/queue", scraper) == 200
        assert _scrape(op.port, "/readyz", None) == 200  # the probes stay open
    finally:
        op.stop()
    assert op.proc is not None and op.proc.returncode == 0, log.read_text()[-3000:]
    lease = call(
        cluster,
        "GET",
        f"/apis/coordination.k8s.io/v1/namespaces/{release.namespace}/leases/{release.lease_name}",
    )
    assert not lease["spec"].get("holderIdentity"), "the Lease was not released on a clean exit"


def _pod_spec(gpus: int) -> dict:
    return {
        "schedulerName": api.DEFAULT_SCHEDULER_NAME,
        "restartPolicy": "Never",
        "tolerations": [dict(KWOK_TOLERATION)],
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "m", "image": "x", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
    }


def _batch_job(name: str, n: int, gpus: int) -> dict:
    tmpl = {"metadata": {"labels": {"app": name}}, "spec": _pod_spec(gpus)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"parallelism": n, "completions": n, "backoffLimit": 0, "template": tmpl},
    }


def _pod(name: str, gpus: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": _pod_spec(gpus)}


def _bound(cluster, ns: str, selector: str) -> list[dict]:
    items = call(cluster, "GET", f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}")["items"]
    return [p for p in items if p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")]


def _scheduled_message(cluster, ns: str, name: str) -> str | None:
    pod = call(cluster, "GET", f"/api/v1/namespaces/{ns}/pods/{name}")
    cond = next((c for c in pod["status"].get("conditions") or () if c["type"] == "PodScheduled"), {})
    return cond.get("message") if cond.get("status") == "False" else None


def _wait_no_operator_pods(cluster) -> None:
    """No pod of the operator's is left anywhere (an operator sees those of every namespace)."""
    sel = f"{api.LABEL_MANAGED_BY}%3D{api.MANAGED_BY}"
    wait_for(
        lambda: not call(cluster, "GET", f"/api/v1/pods?labelSelector={sel}")["items"],
        120,
        "the operator's pods of earlier scenarios to be gone",
    )


def _granted() -> set[tuple[str, str, str]]:
    return rbac.operator_permissions(metrics_auth=True)


def _check_audit(log: Path, user: str, watched: tuple[str, ...] = ()) -> list[Audited]:
    """Wait until the audit log shows every granted right used (the last entries are written as their
    requests end), then: nothing used outside the table, nothing refused, and with ``watched`` the
    workload rights used in those namespaces only."""
    want = _granted() - set(NOT_EXERCISED)

    def used() -> list[Audited] | None:
        entries = audit_entries(log, user)
        return entries if want <= {e.right for e in entries if e.resource} else None

    try:
        entries = wait_for(used, 30, f"every granted right in the audit log of {user}")
    except Exception:
        seen = {e.right for e in audit_entries(log, user) if e.resource}
        raise AssertionError(
            f"granted but never used by the scenario (drop the grant, or list it in NOT_EXERCISED with "
            f"the reason): {sorted(want - seen)}"
        ) from None
    rights = {e.right for e in entries if e.resource}
    assert rights <= _granted(), f"used outside the table: {sorted(rights - _granted())}"
    refused = [e for e in entries if e.code == 403]
    assert not refused, f"refused requests of {user}: {refused[:20]}"
    assert all(e.code < 400 or e.code in (404, 409, 410) for e in entries), [
        e for e in entries if e.code >= 400 and e.code not in (404, 409, 410)
    ][:20]
    if watched:
        workload = rbac.permissions(rbac.WORKLOAD_RULES)
        outside = [e for e in entries if e.right in workload and e.namespace not in watched]
        assert not outside, f"workload rights used outside {watched}: {outside[:20]}"
    return entries


def test_operator_uses_exactly_its_rights_cluster_wide(cluster, audited, helm_home, tmp_path):
    ns = cluster.create_namespace(f"aic-install-{uuid.uuid4().hex[:6]}")
    cluster.kubectl("create", "serviceaccount", SCRAPER, "-n", ns)
    namespaces = tuple(cluster.create_namespace(f"t-{uuid.uuid4().hex[:10]}") for _ in range(2))
    release = _install(cluster, helm_home, ns, {})
    try:
        kubeconfig = write_sa_kubeconfig(cluster, ns, release.service_account, tmp_path / "sa-kubeconfig")
        _scenario(cluster, release, kubeconfig, namespaces, tmp_path / "operator.log")
        entries = _check_audit(audited.audit_log, release.user)
        watches = {e.resource for e in entries if e.verb == "watch"}
        assert {"nodes", "pods", "namespaces", "aicenters", "gpuquotas", "gpujobs"} <= watches
    finally:
        release.uninstall(check=False)
        for n in (*namespaces, ns):
            cluster.delete_namespace(n)


def test_operator_uses_exactly_its_rights_in_watched_namespaces(cluster, audited, helm_home, tmp_path):
    """``watchNamespaces``: the workload rights come from RoleBindings in the two watched namespaces; the
    operator (``--namespace`` twice) needs nothing more, and writes nowhere else."""
    ns = cluster.create_namespace(f"aic-install-{uuid.uuid4().hex[:6]}")
    cluster.kubectl("create", "serviceaccount", SCRAPER, "-n", ns)
    namespaces = tuple(cluster.create_namespace(f"t-{uuid.uuid4().hex[:10]}") for _ in range(2))
    release = _install(cluster, helm_home, ns, {"watchNamespaces": "{" + ",".join(namespaces) + "}"})
    try:
        _wait_no_operator_pods(cluster)
        kubeconfig = write_sa_kubeconfig(cluster, ns, release.service_account, tmp_path / "sa-kubeconfig")
        _scenario(cluster, release, kubeconfig, namespaces, tmp_path / "operator.log")
        entries = _check_audit(audited.audit_log, release.user, watched=namespaces)
        jobs = {e.namespace for e in entries if e.resource == "gpujobs" and e.verb in ("list", "watch")}
        assert jobs == set(namespaces), jobs  # never all namespaces
    finally:
        release.uninstall(check=False)
        for n in (*namespaces, ns):
            cluster.delete_namespace(n)
