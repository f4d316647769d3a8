"""``manifests/install/aicenter-operator.yaml`` on the real control plane: ``kubectl apply --server-side``
creates the namespace (restricted Pod Security), the CRDs (Established) and the operator, whose pod
is admitted; ``kubectl delete -f`` removes it all again.

The CRDs are shared by the whole test session (other tests' AICenters, GPUQuotas and GPUJobs live in
them), so the real delete leaves them out; a server-side dry run of ``kubectl delete -f`` over the
whole file shows the CRDs would go too.
"""

from __future__ import annotations

import pytest
import yaml
from install_helpers import INSTALL_MANIFEST, INSTALL_NAMESPACE, docs

from aicenter_testbed.waiting import wait_for

pytestmark = pytest.mark.cluster

CRDS = ("aicenters.aicenter.dev", "gpuquotas.aicenter.dev", "gpujobs.aicenter.dev")


def _get(cluster, path):
    status, body = cluster.request("GET", path)
    return body if status == 200 else None


def _established(cluster, name) -> bool:
    crd = _get(cluster, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    conds = (crd or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Established" and c["status"] == "True" for c in conds)


def _resource(doc: dict) -> tuple[str, ...]:
    """``kubectl get`` arguments for a document of the manifest."""
    kind, name = doc["kind"], doc["metadata"]["name"]
    group = doc["apiVersion"].rpartition("/")[0]
    kind_arg = f"{kind.lower()}.{group}" if group else kind.lower()
    ns = doc["metadata"].get("namespace")
    return (kind_arg, name, *(("-n", ns) if ns else ()))


def test_install_manifest_applies_server_side_and_deletes(cluster, tmp_path):
    items = docs(INSTALL_MANIFEST.read_text())
    rest = [d for d in items if d["kind"] != "CustomResourceDefinition"]
    without_crds = tmp_path / "install-without-crds.yaml"
    without_crds.write_text(yaml.safe_dump_all(rest))
    if _get(cluster, f"/api/v1/namespaces/{INSTALL_NAMESPACE}"):
        pytest.fail(f"namespace {INSTALL_NAMESPACE} exists already: this test installs and removes it")
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(INSTALL_MANIFEST))
        for doc in items:
            cluster.kubectl("get", *_resource(doc))
        for name in CRDS:
            wait_for(lambda n=name: _established(cluster, n), timeout=60, what=f"CRD {name} Established")
        ns = _get(cluster, f"/api/v1/namespaces/{INSTALL_NAMESPACE}")
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

        def operator_pods():
            sel = "app.kubernetes.io/instance=aicenter-operator"
            body = _get(cluster, f"/api/v1/namespaces/{INSTALL_NAMESPACE}/pods?labelSelector={sel}")
            return (body or {}).get("items")

        pods = wait_for(operator_pods, timeout=60, what="the operator's pod (admitted by Pod Security)")
        assert pods[0]["spec"]["serviceAccountName"] == "aicenter-operator"

        # Applying again changes nothing and conflicts with nothing.
        again = cluster.kubectl("apply", "--server-side", "-f", str(INSTALL_MANIFEST)).stdout
        assert "serverside-applied" in again

        dry = cluster.kubectl("delete", "--dry-run=server", "-f", str(INSTALL_MANIFEST)).stdout
        for name in CRDS:
            assert f'customresourcedefinition.apiextensions.k8s.io "{name}" deleted' in dry
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", str(without_crds), check=False)
    wait_for(
        lambda: not any(_get(cluster, p) for p in _paths(rest)),
        timeout=180,
        what=f"the install manifest's objects and namespace {INSTALL_NAMESPACE} to be deleted",
    )
    for name in CRDS:
        assert _established(cluster, name)


def _paths(items: list[dict]) -> list[str]:
    paths = []
    for d in items:
        kind, name, ns = d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")
        plural = {
            "Namespace": "namespaces",
            "ServiceAccount": "serviceaccounts",
            "Service": "services",
            "Deployment": "deployments",
            "ClusterRole": "clusterroles",
            "ClusterRoleBinding": "clusterrolebindings",
            "Role": "roles",
            "RoleBinding": "rolebindings",
        }[kind]
        prefix = "/api/v1" if d["apiVersion"] == "v1" else f"/apis/{d['apiVersion']}"
        paths.append(f"{prefix}/" + (f"namespaces/{ns}/" if ns else "") + f"{plural}/{name}")
    return paths
