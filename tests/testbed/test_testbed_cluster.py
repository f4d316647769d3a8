"""The control plane is real: version, CRD validation, RBAC, scheduling GPU pods onto kwok nodes."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from datetime import datetime

import pytest
import yaml

from aicenter_testbed.fleet import GPU_RESOURCE, LABEL_COUNT, LABEL_PRODUCT
from aicenter_testbed.sim.nodes import LABEL_SIMULATED
from aicenter_testbed.sim.pods import gpu_pod_manifest
from aicenter_testbed.waiting import wait_for

pytestmark = pytest.mark.cluster

CRD_GROUP = "testbed.aicenter.dev"


def _ok(status_body, *expected):
    status, body = status_body
    assert status in (expected or (200, 201)), f"HTTP {status}: {body}"
    return body


def get_pod(cluster, ns, name):
    return _ok(cluster.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}"))


def create_pod(cluster, ns, manifest):
    return _ok(cluster.request("POST", f"/api/v1/namespaces/{ns}/pods", manifest), 201)


def phase_is(cluster, ns, name, phase):
    def check():
        pod = get_pod(cluster, ns, name)
        return pod if pod.get("status", {}).get("phase") == phase else None

    return check


def test_version_is_the_pinned_kubernetes(cluster):
    assert cluster.version()["gitVersion"] == "v1.34.4"
    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == "v1.34.4"
    assert out["clientVersion"]["gitVersion"] == "v1.34.4"


def test_kubernetes_api_client_factory_works(cluster):
    from kubernetes import client

    api = cluster.api_client()
    try:
        names = [ns.metadata.name for ns in client.CoreV1Api(api).list_namespace().items]
    finally:
        api.close()
    assert {"default", "kube-system", "kube-node-lease"} <= set(names)


def test_control_plane_components_hold_their_leader_leases(cluster):
    for name in ("kube-controller-manager", "kube-scheduler"):
        lease = _ok(
            cluster.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}")
        )
        assert lease["spec"]["holderIdentity"]


def test_crd_is_served_and_validates_with_the_field_named(cluster, namespace):
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"gpuwidgets.{CRD_GROUP}"},
        "spec": {
            "group": CRD_GROUP,
            "scope": "Namespaced",
            "names": {"plural": "gpuwidgets", "singular": "gpuwidget", "kind": "GpuWidget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["gpus"],
                                    "properties": {
                                        "gpus": {"type": "integer", "minimum": 1, "maximum": 8},
                                        "product": {
                                            "type": "string",
                                            "enum": ["NVIDIA-B200", "NVIDIA-GB200"],
                                        },
                                    },
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    status, body = cluster.request("POST", path, crd)
    assert status in (201, 409), body
    try:

        def established():
            got = _ok(cluster.request("GET", f"{path}/gpuwidgets.{CRD_GROUP}"))
            conds = got.get("status", {}).get("conditions", [])
            return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

        wait_for(established, timeout=30, what="the GpuWidget CRD to be Established")
        objs = f"/apis/{CRD_GROUP}/v1/namespaces/{namespace}/gpuwidgets"

        def widget(name, spec):
            return {
                "apiVersion": f"{CRD_GROUP}/v1",
                "kind": "GpuWidget",
                "metadata": {"name": name},
                "spec": spec,
            }

        # Discovery can lag Established by a moment: the first create is retried until served.
        good = wait_for(
            lambda: (r := cluster.request("POST", objs, widget("good", {"gpus": 8})))[0] == 201 and r,
            timeout=30,
            what="a valid GpuWidget to be accepted",
        )
        assert good[1]["spec"]["gpus"] == 8

        status, err = cluster.request("POST", objs, widget("too-many", {"gpus": 9, "product": "NVIDIA-B200"}))
        assert status == 422, err
        assert "spec.gpus" in err["message"]
        assert any(c.get("field") == "spec.gpus" for c in err["details"]["causes"])

        status, err = cluster.request("POST", objs, widget("bad-product", {"gpus": 1, "product": "H100"}))
        assert status == 422 and "spec.product" in err["message"], err

        status, err = cluster.request("POST", objs, widget("missing", {}))
        assert status == 422 and "spec.gpus" in err["message"], err
    finally:
        cluster.request("DELETE", f"{path}/gpuwidgets.{CRD_GROUP}")


def _ssl_for(kubeconfig) -> ssl.SSLContext:
    doc = yaml.safe_load(kubeconfig.read_text())
    ca = base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
    return ssl.create_default_context(cadata=ca)


def test_rbac_and_service_account_tokens(cluster, namespace):
    """A signed ServiceAccount token authenticates, and RBAC (no bindings) forbids it everything."""
    _ok(
        cluster.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "nobody"}}
        )
    )
    tr = _ok(
        cluster.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/nobody/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 600},
            },
        )
    )
    token = tr["status"]["token"]
    req = urllib.request.Request(
        cluster.server + "/api/v1/nodes", headers={"Authorization": f"Bearer {token}"}
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, context=_ssl_for(cluster.kubeconfig), timeout=10)
    assert e.value.code == 403
    assert f"system:serviceaccount:{namespace}:nobody" in e.value.read().decode()


def test_simulated_nodes_list_with_gfd_labels_and_gpu_capacity(cluster, sim_fleet):
    core = cluster.core_v1()
    nodes = {n.metadata.name: n for n in core.list_node(label_selector=f"{LABEL_SIMULATED}=true").items}
    for spec in sim_fleet:
        node = nodes[spec.name]
        for key, value in spec.labels().items():
            assert node.metadata.labels[key] == value
        assert node.metadata.labels[LABEL_COUNT] == str(spec.shape.gpus_per_node)
        assert node.status.capacity[GPU_RESOURCE] == str(spec.shape.gpus_per_node)
        assert node.status.allocatable[GPU_RESOURCE] == str(spec.shape.gpus_per_node)
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True"
    # kubectl sees the same (other tests may add nodes of their own to a shared cluster)
    out = cluster.kubectl("get", "nodes", "-l", f"{LABEL_PRODUCT}=NVIDIA-GB200", "-o", "name").stdout.split()
    ours = {f"node/{s.name}" for s in sim_fleet}
    assert set(out) & ours == {f"node/{s.name}" for s in sim_fleet if s.shape.product == "NVIDIA-GB200"}


def test_gpu_pod_is_bound_runs_and_succeeds_after_its_duration(cluster, sim_fleet, namespace):
    create_pod(cluster, namespace, gpu_pod_manifest("train", 8, product="NVIDIA-B200", run_seconds=3))
    # An unannotated pod created alongside: it must still be Running after the timed one finished.
    create_pod(cluster, namespace, gpu_pod_manifest("serve", 1, product="NVIDIA-GB200"))

    running = wait_for(phase_is(cluster, namespace, "train", "Running"), timeout=60, what="pod train Running")
    node_name = running["spec"]["nodeName"]
    node = _ok(cluster.request("GET", f"/api/v1/nodes/{node_name}"))
    assert node["metadata"]["labels"][LABEL_PRODUCT] == "NVIDIA-B200"
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert any(c["type"] == "PodScheduled" and c["status"] == "True" for c in running["status"]["conditions"])

    done = wait_for(
        phase_is(cluster, namespace, "train", "Succeeded"), timeout=60, what="pod train Succeeded"
    )
    term = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    ran = datetime.fromisoformat(term["finishedAt"]) - datetime.fromisoformat(done["status"]["startTime"])
    assert 2 <= ran.total_seconds() <= 6, ran  # declared 3 s; timestamps have 1 s resolution

    serve = get_pod(cluster, namespace, "serve")
    assert serve["status"]["phase"] == "Running"
    assert serve["status"]["containerStatuses"][0]["ready"] is True

    # Deleting a running pod completes: kwok finishes the graceful deletion, the object goes away.
    _ok(cluster.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/serve"))
    wait_for(
        lambda: cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/serve")[0] == 404,
        timeout=30,
        what="pod serve to be gone",
    )


def test_declared_failure_ends_failed(cluster, sim_fleet, namespace):
    create_pod(
        cluster,
        namespace,
        gpu_pod_manifest("crash", 4, product="NVIDIA-GB200", run_seconds=1, outcome="Failed"),
    )
    pod = wait_for(phase_is(cluster, namespace, "crash", "Failed"), timeout=60, what="pod crash Failed")
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1


def test_over_request_stays_pending_unschedulable(cluster, sim_fleet, namespace):
    create_pod(cluster, namespace, gpu_pod_manifest("greedy", 9, product="NVIDIA-B200"))

    def unschedulable():
        pod = get_pod(cluster, namespace, "greedy")
        conds = pod.get("status", {}).get("conditions", [])
        hit = [c for c in conds if c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"]
        return (pod, hit[0]) if hit else None

    pod, cond = wait_for(unschedulable, timeout=60, what="pod greedy to be marked Unschedulable")
    assert cond["status"] == "False"
    assert f"Insufficient {GPU_RESOURCE}" in cond["message"]
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")


def test_job_completes_and_garbage_collection_removes_its_pods(cluster, sim_fleet, namespace):
    pod = gpu_pod_manifest("x", 2, product="NVIDIA-B300", run_seconds=1)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "finetune"},
        "spec": {
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 0,
            "template": {"metadata": {"annotations": pod["metadata"]["annotations"]}, "spec": pod["spec"]},
        },
    }
    jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    _ok(cluster.request("POST", jobs, job), 201)

    def complete():
        j = _ok(cluster.request("GET", f"{jobs}/finetune"))
        return any(
            c["type"] == "Complete" and c["status"] == "True"
            for c in j.get("status", {}).get("conditions", [])
        )

    wait_for(complete, timeout=90, what="job finetune Complete")
    pods_path = f"/api/v1/namespaces/{namespace}/pods?labelSelector=job-name%3Dfinetune"
    assert len(_ok(cluster.request("GET", pods_path))["items"]) == 2

    _ok(cluster.request("DELETE", f"{jobs}/finetune", {"propagationPolicy": "Background"}))
    wait_for(
        lambda: not _ok(cluster.request("GET", pods_path))["items"],
        timeout=60,
        what="the garbage collector to delete the job's pods",
    )


def test_kwok_renews_the_simulated_nodes_leases(cluster, sim_fleet):
    """Each simulated node has a Lease held by kwok: the liveness signal that keeps it Ready."""
    leases = _ok(cluster.request("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"))
    held = {lease["metadata"]["name"] for lease in leases["items"] if lease["spec"].get("holderIdentity")}
    missing = [s.name for s in sim_fleet if s.name not in held]
    assert not missing, f"no lease for {missing[:5]}"
