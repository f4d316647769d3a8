"""End to end on kind: the Helm chart, the simulated GPU device plugin, real pods on real kubelets.

Runs only against the cluster ``hack/kind/e2e.sh`` creates (1 control plane + 2 workers), which
sets ``AICENTER_KIND_KUBECONFIG`` and the locally built images; anywhere else every test here is
skipped, saying so. In order, sharing one module-scoped setup:

1. the device plugin DaemonSet (hack/kind/deviceplugin.yaml) gives each worker 8 simulated B200
   GPUs and GPU Feature Discovery labels;
2. ``helm install`` of charts/aicenter-operator with the local operator image (pullPolicy Never);
3. an AICenter over the two workers (labelled ``aicenter.dev/center``) and a GPUQuota;
4. GPUJobs: one replica that prints the GPUs it got and Succeeds; a 2-replica gang of 8 GPUs each,
   which only fits across both workers;
5. fault injection: an unhealthy-GPU annotation shrinks the node's allocatable nvidia.com/gpu and
   the AICenter's healthy GPUs, a gang needing every GPU waits meanwhile, and recovery restores the
   GPUs and lets the gang run;
6. ``helm uninstall`` removes what the chart installed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from aicenter import api
from aicenter_testbed.fleet import LABEL_CENTER
from aicenter_testbed.waiting import wait_for

pytestmark = pytest.mark.kind

REPO = Path(__file__).resolve().parents[2]
KUBECONFIG = os.environ.get("AICENTER_KIND_KUBECONFIG", "")
OPERATOR_IMAGE = os.environ.get("AICENTER_KIND_OPERATOR_IMAGE", "aicenter-operator:kind")
DEVICEPLUGIN_IMAGE = os.environ.get("AICENTER_KIND_DEVICEPLUGIN_IMAGE", "aicenter-deviceplugin:kind")
WORKLOAD_IMAGE = os.environ.get("AICENTER_KIND_WORKLOAD_IMAGE", "aicenter-workload:kind")
PLUGIN_MANIFEST = REPO / "hack" / "kind" / "deviceplugin.yaml"
CHART = REPO / "charts" / "aicenter-operator"

CENTER = "kind-e2e"
QUOTA = "kind-e2e-team"
TENANT_LABEL = "aicenter.dev/tenant"
RELEASE = "aicenter-operator"
RELEASE_NS = "aicenter-system"
GPUS_PER_WORKER = 8  # the B200 profile
UNHEALTHY = "sim.aicenter.dev/unhealthy-gpus"
UUID = r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

if not KUBECONFIG:
    pytest.skip(
        "the kind e2e needs the cluster hack/kind/e2e.sh creates (AICENTER_KIND_KUBECONFIG is not set);"
        " run hack/kind/e2e.sh",
        allow_module_level=True,
    )


class Kind:
    """kubectl, helm and a Kubernetes client for the kind cluster."""

    def __init__(self, kubeconfig: str):
        from kubernetes import client, config

        self.kubeconfig = kubeconfig
        self.kubectl_bin = os.environ.get("AICENTER_KIND_KUBECTL", "kubectl")
        self.helm_bin = os.environ.get("AICENTER_KIND_HELM", "helm")
        self.api_client = config.new_client_from_config(config_file=kubeconfig)
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        p = subprocess.run(
            [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {p.stderr}")
        return p.stdout

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(
            [self.helm_bin, f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {p.stderr}\n{p.stdout}")
        return p

    def apply(self, objs: list[dict]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))

    def workers(self) -> list[str]:
        nodes = self.core.list_node().items
        return sorted(
            n.metadata.name
            for n in nodes
            if "node-role.kubernetes.io/control-plane" not in (n.metadata.labels or {})
        )

    def node(self, name: str):
        return self.core.read_node(name)

    def get(self, plural: str, name: str, namespace: str | None = None) -> dict:
        if namespace:
            return self.custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, plural, name)
        return self.custom.get_cluster_custom_object(api.GROUP, api.VERSION, plural, name)

    def diagnostics(self) -> str:
        out = [self.kubectl("get", "nodes,pods", "-A", "-o", "wide", check=False)]
        out.append(
            self.kubectl("get", "gpujobs,aicenters,gpuquotas", "-A", "-o", "yaml", check=False)[-6000:]
        )
        out.append(self.kubectl("logs", "-n", RELEASE_NS, "deploy/" + RELEASE, "--tail=80", check=False))
        out.append(
            self.kubectl(
                "logs", "-n", "aicenter-sim", "ds/aicenter-gpu-device-plugin", "--tail=40", check=False
            )
        )
        return "\n".join(out)


@pytest.fixture(scope="module")
def kind() -> Iterator[Kind]:
    k = Kind(KUBECONFIG)
    yield k
    k.api_client.close()


def allocatable_gpus(node) -> int:
    return int((node.status.allocatable or {}).get("nvidia.com/gpu", "0"))


def capacity_gpus(node) -> int:
    return int((node.status.capacity or {}).get("nvidia.com/gpu", "0"))


@pytest.fixture(scope="module")
def device_plugin(kind) -> Iterator[list[str]]:
    """The DaemonSet from hack/kind/deviceplugin.yaml with the local plugin image; yields the workers."""
    docs = [d for d in yaml.safe_load_all(PLUGIN_MANIFEST.read_text()) if d]
    for d in docs:
        if d["kind"] == "DaemonSet":
            c = d["spec"]["template"]["spec"]["containers"][0]
            c["image"], c["imagePullPolicy"] = DEVICEPLUGIN_IMAGE, "Never"
    kind.apply(docs)
    workers = kind.workers()
    assert len(workers) == 2, workers

    def plugged():
        nodes = [kind.node(w) for w in workers]
        return all(
            allocatable_gpus(n) == GPUS_PER_WORKER
            and (n.metadata.labels or {}).get("nvidia.com/gpu.present") == "true"
            for n in nodes
        )

    try:
        wait_for(plugged, timeout=180, what="8 nvidia.com/gpu allocatable and GFD labels on both workers")
    except Exception:
        print(kind.diagnostics())
        raise
    yield workers
    kind.kubectl("delete", "-f", "-", "--wait=false", input=yaml.safe_dump_all(docs), check=False)


@pytest.fixture(scope="module")
def release(kind, device_plugin) -> Iterator[str]:
    """``helm install`` the chart with the local operator image; uninstalled at the end."""
    repo, tag = OPERATOR_IMAGE.rsplit(":", 1)
    kind.kubectl("create", "namespace", RELEASE_NS, check=False)  # fresh cluster: absent
    kind.kubectl(
        "label", "namespace", RELEASE_NS, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"
    )
    try:
        kind.helm(
            "install",
            RELEASE,
            str(CHART),
            "-n",
            RELEASE_NS,
            "--set",
            f"image.repository={repo}",
            "--set",
            f"image.tag={tag}",
            "--set",
            "image.pullPolicy=Never",
            "--set",
            "logFormat=text",
            "--wait",
            "--timeout",
            "5m",
        )
    except AssertionError:
        print(kind.diagnostics())
        raise
    yield RELEASE
    kind.helm("uninstall", RELEASE, "-n", RELEASE_NS, "--wait", "--timeout", "2m", check=False)
    kind.kubectl("delete", "namespace", RELEASE_NS, "--wait=false", check=False)


@pytest.fixture(scope="module")
def center(kind, release, device_plugin) -> Iterator[str]:
    """An AICenter over both workers, a GPUQuota for all 16 GPUs and its tenant namespace."""
    for w in device_plugin:
        kind.kubectl("label", "node", w, f"{LABEL_CENTER}={CENTER}", "--overwrite")
    total = GPUS_PER_WORKER * len(device_plugin)
    tenant = f"kind-e2e-{uuid.uuid4().hex[:6]}"
    kind.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": tenant, "labels": {TENANT_LABEL: QUOTA}},
            },
            {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND_AICENTER,
                "metadata": {"name": CENTER},
                "spec": {
                    "nodeSelector": {"matchLabels": {LABEL_CENTER: CENTER}},
                    "gpuClasses": [{"name": "B200", "product": "NVIDIA-B200"}],
                    "placementPolicy": "BinPack",
                },
            },
            {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND_GPUQUOTA,
                "metadata": {"name": QUOTA},
                "spec": {
                    "center": CENTER,
                    "namespaceSelector": {"matchLabels": {TENANT_LABEL: QUOTA}},
                    "resources": [{"gpuClass": "B200", "guaranteed": total, "limit": total}],
                },
            },
        ]
    )

    def centre_ready():
        st = kind.get(api.PLURAL_AICENTERS, CENTER).get("status") or {}
        return st if st.get("totalGPUs") == total and st.get("healthyGPUs") == total else None

    try:
        wait_for(centre_ready, timeout=120, what=f"AICenter {CENTER} with {total} healthy GPUs")
    except Exception:
        print(kind.diagnostics())
        raise
    yield tenant
    kind.kubectl("delete", "namespace", tenant, "--wait=true", "--timeout=120s", check=False)
    kind.kubectl("delete", "gpuquota", QUOTA, "--ignore-not-found", check=False)
    kind.kubectl("delete", "aicenter", CENTER, "--ignore-not-found", check=False)


def gpujob(name: str, replicas: int, gpus: int, script: str) -> dict:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND_GPUJOB,
        "metadata": {"name": name},
        "spec": {
            "quota": QUOTA,
            "gpuClass": "B200",
            "replicas": replicas,
            "gpusPerReplica": gpus,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": WORKLOAD_IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["sh", "-c", script],
                        }
                    ],
                    "terminationGracePeriodSeconds": 1,
                }
            },
        },
    }


PRINT_GPUS = (
    'echo "replica=$AICENTER_REPLICA_INDEX world=$AICENTER_WORLD_SIZE";'
    ' echo "NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES";'
    ' echo "AICENTER_GPU_PRODUCT=$AICENTER_GPU_PRODUCT"'
)


def submit(kind: Kind, namespace: str, job: dict) -> str:
    job["metadata"]["namespace"] = namespace
    kind.apply([job])
    return job["metadata"]["name"]


def job_status(kind: Kind, namespace: str, name: str) -> dict:
    return kind.get(api.PLURAL_GPUJOBS, name, namespace).get("status") or {}


def wait_succeeded(kind: Kind, namespace: str, name: str, timeout: float = 240) -> dict:
    def finished():
        st = job_status(kind, namespace, name)
        return st if st.get("phase") in (api.PHASE_SUCCEEDED, api.PHASE_FAILED) else None

    try:
        st = wait_for(finished, timeout=timeout, what=f"GPUJob {namespace}/{name} to finish")
    except Exception:
        print(kind.diagnostics())
        raise
    assert st["phase"] == api.PHASE_SUCCEEDED, json.dumps(st, indent=1)
    return st


def run_job(kind: Kind, namespace: str, job: dict, timeout: float = 240) -> dict:
    return wait_succeeded(kind, namespace, submit(kind, namespace, job), timeout)


def pod_log(kind: Kind, namespace: str, pod: str) -> str:
    return kind.core.read_namespaced_pod_log(pod, namespace)


def test_device_plugin_advertises_gpus_and_labels_nodes(kind, device_plugin):
    for w in device_plugin:
        n = kind.node(w)
        labels = n.metadata.labels
        assert capacity_gpus(n) == allocatable_gpus(n) == GPUS_PER_WORKER
        assert labels["nvidia.com/gpu.product"] == "NVIDIA-B200"
        assert labels["nvidia.com/gpu.count"] == "8"
        assert labels["nvidia.com/gpu.memory"] == "183359"
        assert labels["nvidia.com/gpu.family"] == "blackwell"
        assert labels["sim.aicenter.dev/backend"] == "simulated"


def test_operator_deployed_by_helm(kind, release):
    dep = kind.apps.read_namespaced_deployment(release, RELEASE_NS)
    assert dep.status.ready_replicas == 1
    assert dep.spec.template.spec.containers[0].image == OPERATOR_IMAGE


def test_center_counts_the_kind_workers(kind, center):
    st = kind.get(api.PLURAL_AICENTERS, CENTER)["status"]
    assert st["nodes"]["total"] == 2 and st["nodes"]["ready"] == 2
    assert st["totalGPUs"] == st["healthyGPUs"] == st["freeGPUs"] == 2 * GPUS_PER_WORKER


def job_pods(kind: Kind, namespace: str, job: str) -> list:
    """The job's replica pods (the operator clears status.placements once the job has finished)."""
    pods = kind.core.list_namespaced_pod(namespace, label_selector=f"{api.LABEL_JOB}={job}").items
    return sorted(pods, key=lambda p: p.metadata.name)


def visible_gpus(log: str) -> list[str]:
    m = re.search(r"NVIDIA_VISIBLE_DEVICES=(\S*)", log)
    assert m, log
    return [u for u in m.group(1).split(",") if u]


def test_single_replica_job_runs_with_its_gpus(kind, center, device_plugin):
    run_job(kind, center, gpujob("hello-gpus", replicas=1, gpus=2, script=PRINT_GPUS))
    (pod,) = job_pods(kind, center, "hello-gpus")
    assert pod.spec.scheduler_name == api.DEFAULT_SCHEDULER_NAME
    assert pod.spec.node_name in device_plugin
    assert pod.status.phase == "Succeeded"
    log = pod_log(kind, center, pod.metadata.name)
    uuids = visible_gpus(log)
    assert len(uuids) == 2 and all(re.fullmatch(UUID, u) for u in uuids), log
    assert "AICENTER_GPU_PRODUCT=NVIDIA-B200" in log


def test_gang_spans_both_workers(kind, center, device_plugin):
    run_job(kind, center, gpujob("gang-16", replicas=2, gpus=GPUS_PER_WORKER, script=PRINT_GPUS))
    pods = job_pods(kind, center, "gang-16")
    assert sorted(p.spec.node_name for p in pods) == device_plugin
    seen: set[str] = set()
    for p in pods:
        assert p.status.phase == "Succeeded"
        log = pod_log(kind, center, p.metadata.name)
        uuids = visible_gpus(log)
        assert len(uuids) == GPUS_PER_WORKER, log
        assert "world=2" in log
        seen |= set(uuids)
    assert len(seen) == 2 * GPUS_PER_WORKER  # different GPUs on the two nodes


def test_unhealthy_gpus_shrink_allocatable_and_the_centre(kind, center, device_plugin):
    worker = device_plugin[0]
    total = 2 * GPUS_PER_WORKER
    kind.kubectl("annotate", "node", worker, f"{UNHEALTHY}=2", "--overwrite")
    try:
        wait_for(
            lambda: allocatable_gpus(kind.node(worker)) == GPUS_PER_WORKER - 2,
            timeout=60,
            what=f"{worker} allocatable nvidia.com/gpu to drop to 6",
        )
        assert capacity_gpus(kind.node(worker)) == GPUS_PER_WORKER
        st = wait_for(
            lambda: (s := kind.get(api.PLURAL_AICENTERS, CENTER)["status"])["healthyGPUs"] == total - 2 and s,
            timeout=60,
            what="AICenter healthyGPUs to drop by 2",
        )
        assert st["totalGPUs"] == total
        # a gang needing all 8 GPUs of both workers must now wait: the operator does not place on
        # GPUs the kubelet no longer offers
        gang = submit(
            kind, center, gpujob("gang-after-fault", replicas=2, gpus=GPUS_PER_WORKER, script=PRINT_GPUS)
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            phase = job_status(kind, center, gang).get("phase")
            assert phase in (None, api.PHASE_PENDING), f"gang admitted on degraded capacity: {phase}"
            time.sleep(1)
        assert not job_pods(kind, center, gang)
    finally:
        kind.kubectl("annotate", "node", worker, f"{UNHEALTHY}-", check=False)
    wait_for(
        lambda: allocatable_gpus(kind.node(worker)) == GPUS_PER_WORKER,
        timeout=60,
        what=f"{worker} allocatable back to 8",
    )
    wait_for(
        lambda: kind.get(api.PLURAL_AICENTERS, CENTER)["status"]["healthyGPUs"] == total,
        timeout=60,
        what="AICenter healthyGPUs back to 16",
    )
    # recovered: the waiting gang runs across both workers
    wait_succeeded(kind, center, "gang-after-fault")
    assert sorted(p.spec.node_name for p in job_pods(kind, center, "gang-after-fault")) == device_plugin


def test_helm_uninstall_cleans_up(kind, release, center):
    """Last: uninstall and check the release's objects are gone (the fixture's uninstall is then a no-op)."""
    kind.helm("uninstall", release, "-n", RELEASE_NS, "--wait", "--timeout", "2m")
    assert release not in kind.helm("list", "-n", RELEASE_NS, "-q").stdout.split()

    def gone():
        left = kind.kubectl(
            "get",
            "deployments,serviceaccounts,services,roles,rolebindings",
            "-n",
            RELEASE_NS,
            "-l",
            f"app.kubernetes.io/instance={release}",
            "-o",
            "name",
        ).split()
        left += kind.kubectl(
            "get",
            "clusterroles,clusterrolebindings",
            "-l",
            f"app.kubernetes.io/instance={release}",
            "-o",
            "name",
        ).split()
        left += [
            p.metadata.name
            for p in kind.core.list_namespaced_pod(RELEASE_NS).items
            if p.metadata.labels.get("app.kubernetes.io/instance") == release
        ]
        return not left or None

    wait_for(gone, timeout=120, what="the release's objects to be deleted")
