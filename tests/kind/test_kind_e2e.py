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
6. a GPUJob asking more CPU than a node has waits with the reason (NoNodeLargeEnough, naming the
   CPU) and no pod of it is ever made;
7. a worker tainted NoSchedule takes nothing that does not tolerate the taint (GPUJobs, a bare pod
   naming aicenter-scheduler), the waiting ones name the taint, a job tolerating it runs there, and
   removing the taint lets the waiting ones run;
8. bring your own workload: a batch/v1 Job naming aicenter-scheduler is bound by the operator as one
   group, its pods get their GPUs from the device plugin, and the Job completes;
9. ``helm uninstall`` removes what the chart installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
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
MAINTENANCE = "example.com/maintenance"  # the taint test's key
OPERATOR_EVENTS = "aicenter.dev/operator"  # the reportingController of the operator's Events
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


class PodWatch:
    """Every version of every new pod of a namespace the API server reports while it is open.

    A list (the pods already there are left out), then a watch from the list's resourceVersion, so a
    pod that was created and deleted between two polls is still seen. ``ever_on(node)`` names the
    pods that were ever bound to ``node``; ``seen(**labels)`` the pods that carried those labels. A
    watch that could not be resumed (its resourceVersion expired) sets ``error``: the tests then fail
    rather than miss something.
    """

    def __init__(self, kind: Kind, namespace: str):
        self.kind, self.namespace = kind, namespace
        self.pods: list = []  # V1Pod objects, in the order reported (not those there before)
        self.before: set[str] = set()  # uids of the pods there when the watch began
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rv = ""

    def __enter__(self) -> PodWatch:
        listed = self.kind.core.list_namespaced_pod(self.namespace)
        self.before = {p.metadata.uid for p in listed.items}
        self._rv = listed.metadata.resource_version
        self._thread = threading.Thread(target=self._run, name=f"podwatch-{self.namespace}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import ProtocolError, ReadTimeoutError

        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for ev in w.stream(
                    self.kind.core.list_namespaced_pod,
                    self.namespace,
                    resource_version=self._rv,
                    timeout_seconds=60,
                    _request_timeout=(10, 2),  # an idle stream times out: the stop flag is looked at
                ):
                    if ev["object"].metadata.uid not in self.before:
                        self.pods.append(ev["object"])
                    self._rv = ev["object"].metadata.resource_version
                    if self._stop.is_set():
                        break
            except (ReadTimeoutError, ProtocolError):
                pass  # resume from the last resourceVersion seen
            except ApiException as e:
                self.error = f"the pod watch of {self.namespace} broke: {e.status} {e.reason}"
                return
            except Exception as e:
                if "timed out" not in str(e).lower():
                    self.error = f"the pod watch of {self.namespace} broke: {type(e).__name__}: {e}"
                    return
            finally:
                w.stop()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def ok(self) -> None:
        assert self.error is None, self.error
        assert self._thread is not None and (self._thread.is_alive() or self._stop.is_set()), "watch ended"

    def ever_on(self, node: str) -> set[str]:
        self.ok()
        return {p.metadata.name for p in list(self.pods) if p.spec.node_name == node}

    def seen(self, **labels: str) -> set[str]:
        self.ok()
        return {
            p.metadata.name
            for p in list(self.pods)
            if all((p.metadata.labels or {}).get(k) == v for k, v in labels.items())
        }


def centre_all_free(kind: Kind) -> dict:
    """Wait until no GPU of the centre is held (the previous test's work is gone)."""
    total = 2 * GPUS_PER_WORKER
    return wait_for(
        lambda: (s := kind.get(api.PLURAL_AICENTERS, CENTER)["status"])["freeGPUs"] == total and s,
        timeout=180,
        what=f"all {total} GPUs of {CENTER} free",
    )


def wait_reason(kind: Kind, namespace: str, name: str, reason: str, timeout: float = 120) -> dict:
    """Wait until the GPUJob's status says ``reason``; returns the status."""
    try:
        return wait_for(
            lambda: (st := job_status(kind, namespace, name)).get("reason") == reason and st,
            timeout=timeout,
            what=f"GPUJob {namespace}/{name} to say {reason}",
        )
    except Exception:
        print(kind.diagnostics())
        raise


def with_requests(job: dict, **requests: str) -> dict:
    job["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": requests}
    return job


@contextlib.contextmanager
def cleanup(kind: Kind, namespace: str, kind_name: str, *names: str) -> Iterator[None]:
    """On a failure inside, delete what the test made (not waiting), so the next tests find room."""
    try:
        yield
    except BaseException:
        delete_now(kind, namespace, kind_name, *names)
        raise


def delete_now(kind: Kind, namespace: str, kind_name: str, *names: str) -> None:
    """Best effort, not waiting (a failed test's leftovers must not hold GPUs the next tests need)."""
    kind.kubectl(
        "delete", kind_name, "-n", namespace, "--ignore-not-found", "--wait=false", *names, check=False
    )


def delete_and_wait(kind: Kind, namespace: str, kind_name: str, *names: str, selector) -> None:
    """Delete objects of ``kind_name`` and wait until they and their pods are gone."""
    for n in names:
        kind.kubectl("delete", kind_name, n, "-n", namespace, "--ignore-not-found", "--wait=false")

    def gone():
        left = kind.kubectl(
            "get", kind_name, "-n", namespace, "-o", "name", *names, "--ignore-not-found"
        ).split()
        pods = [p.metadata.name for n in names for p in selector(n)]
        return not left and not pods

    wait_for(gone, timeout=180, what=f"{kind_name} {', '.join(names)} and their pods to be deleted")


def test_a_job_asking_more_cpu_than_a_node_has_waits_with_the_reason(kind, center, device_plugin):
    """9999 CPUs per replica: no worker has that allocatable, so the job waits, says why, and no pod of
    it is ever made, while a small job submitted after it runs (the operator went past it)."""
    ns = center
    for w in device_plugin:  # the premise: the kubelet reports far fewer CPUs
        cpu = kind.node(w).status.allocatable["cpu"]
        assert (int(cpu[:-1]) / 1000 if cpu.endswith("m") else int(cpu)) < 9999, cpu
    centre_all_free(kind)
    jobs = ["too-much-cpu", "after-too-much-cpu"]
    with PodWatch(kind, ns) as watch, cleanup(kind, ns, "gpujob", *jobs):
        submit(
            kind, ns, with_requests(gpujob("too-much-cpu", replicas=1, gpus=1, script=PRINT_GPUS), cpu="9999")
        )
        st = wait_reason(kind, ns, "too-much-cpu", "NoNodeLargeEnough")
        expected = (
            f"no B200 node in {CENTER} that this job may use"
            " has 1 GPU and 9999 CPU allocatable for one replica"
        )
        assert st["phase"] == api.PHASE_PENDING and st["message"] == expected, st
        # a later job that fits runs to the end meanwhile: the operator has had cycles to place the big one
        run_job(kind, ns, gpujob("after-too-much-cpu", replicas=1, gpus=1, script=PRINT_GPUS))
        st = job_status(kind, ns, "too-much-cpu")
        assert st["phase"] == api.PHASE_PENDING and st["reason"] == "NoNodeLargeEnough", st
        assert not job_pods(kind, ns, "too-much-cpu")
        assert not watch.seen(**{api.LABEL_JOB: "too-much-cpu"}), "a pod of the job was made"
        assert watch.seen(**{api.LABEL_JOB: "after-too-much-cpu"})  # the watch does see pods
    delete_and_wait(kind, ns, "gpujob", *jobs, selector=lambda n: job_pods(kind, ns, n))
    centre_all_free(kind)


def test_a_tainted_worker_takes_only_what_tolerates_the_taint(kind, center, device_plugin):
    """``example.com/maintenance=true:NoSchedule`` on one worker: GPUJobs and a bare pod of ours that
    do not tolerate it never land there, even with the other worker full, and say so; a job that
    tolerates it runs there; removing the taint lets the waiting ones run there."""
    ns = center
    tainted, other = device_plugin
    taint = f"{MAINTENANCE}=true:NoSchedule"
    centre_all_free(kind)
    # a probe pinned to the tainted worker that can never fit (9999 CPU): its reason turns from
    # NoNodeLargeEnough to NoMatchingNodes when the operator has seen the taint, and back when it is gone
    probe = with_requests(gpujob("taint-probe", replicas=1, gpus=1, script=PRINT_GPUS), cpu="9999")
    probe["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": tainted}
    tolerant = gpujob("tolerates-maintenance", replicas=1, gpus=1, script=PRINT_GPUS)
    tolerant["spec"]["template"]["spec"]["tolerations"] = [
        {"key": MAINTENANCE, "operator": "Exists", "effect": "NoSchedule"}
    ]
    byo_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "byo-waits-for-taint", "namespace": ns},
        "spec": byo_pod_spec(1, PRINT_GPUS),
    }
    jobs = ["taint-probe", "fills-the-other", "waits-for-taint", "tolerates-maintenance"]
    with (
        PodWatch(kind, ns) as watch,
        cleanup(kind, ns, "gpujob", *jobs),
        cleanup(kind, ns, "pod", byo_pod["metadata"]["name"]),
    ):
        submit(kind, ns, probe)
        wait_reason(kind, ns, "taint-probe", "NoNodeLargeEnough")
        kind.kubectl("taint", "node", tainted, taint, "--overwrite")
        try:
            st = wait_reason(kind, ns, "taint-probe", "NoMatchingNodes")
            assert st["message"] == (
                f"no B200 node in {CENTER} passes this job's node selector, affinity and tolerations"
            ), st
            # all 8 GPUs of one replica: only the untainted worker may take it
            submit(kind, ns, gpujob("fills-the-other", replicas=1, gpus=GPUS_PER_WORKER, script="sleep 3600"))
            wait_for(
                lambda: job_status(kind, ns, "fills-the-other").get("phase") == api.PHASE_RUNNING,
                timeout=180,
                what="GPUJob fills-the-other to run",
            )
            (fill,) = job_pods(kind, ns, "fills-the-other")
            assert fill.spec.node_name == other
            # the other worker is full: a 1-GPU job and a bare pod of ours wait, naming the taint
            submit(kind, ns, gpujob("waits-for-taint", replicas=1, gpus=1, script=PRINT_GPUS))
            st = wait_reason(kind, ns, "waits-for-taint", "InsufficientResources")
            assert st["phase"] == api.PHASE_PENDING, st
            assert f"of the nodes with free GPUs, 1 node has taint {taint}" in st["message"], st
            assert st["message"].startswith(f"{CENTER} has room for 0 of this job's 1 replica(s)"), st
            kind.apply([byo_pod])

            def pod_says_why():
                p = kind.core.read_namespaced_pod(byo_pod["metadata"]["name"], ns)
                cond = next((c for c in p.status.conditions or [] if c.type == "PodScheduled"), None)
                return p if cond is not None and cond.status == "False" and cond.message else None

            p = wait_for(pod_says_why, timeout=120, what="the bare pod's PodScheduled=False with a reason")
            cond = next(c for c in p.status.conditions if c.type == "PodScheduled")
            assert cond.reason == "Unschedulable" and f"1 node has taint {taint}" in cond.message, cond
            assert not p.spec.node_name
            # a job that tolerates the taint is placed there (backfilling past the waiting ones)
            run_job(kind, ns, tolerant)
            (tol,) = job_pods(kind, ns, "tolerates-maintenance")
            assert tol.spec.node_name == tainted
            # still waiting, and nothing but the tolerating job's pod ever went to the tainted worker
            assert job_status(kind, ns, "waits-for-taint")["phase"] == api.PHASE_PENDING
            assert not kind.core.read_namespaced_pod(byo_pod["metadata"]["name"], ns).spec.node_name
            assert watch.ever_on(tainted) == {tol.metadata.name}, watch.ever_on(tainted)
        finally:
            kind.kubectl("taint", "node", tainted, f"{MAINTENANCE}:NoSchedule-", check=False)
        assert not any(t.key == MAINTENANCE for t in kind.node(tainted).spec.taints or [])
        # untainted: the waiting job and pod run on the worker that has room, the probe waits as before
        wait_reason(kind, ns, "taint-probe", "NoNodeLargeEnough")
        wait_succeeded(kind, ns, "waits-for-taint")
        assert job_pods(kind, ns, "waits-for-taint")[0].spec.node_name == tainted
        p = wait_for(
            lambda: (
                (q := kind.core.read_namespaced_pod(byo_pod["metadata"]["name"], ns)).status.phase
                in ("Succeeded", "Failed")
                and q
            ),
            timeout=180,
            what="the bare pod to finish",
        )
        assert p.status.phase == "Succeeded" and p.spec.node_name == tainted, p.status
        assert len(visible_gpus(pod_log(kind, ns, p.metadata.name))) == 1
        assert not watch.seen(**{api.LABEL_JOB: "taint-probe"})
    kind.kubectl("delete", "pod", byo_pod["metadata"]["name"], "-n", ns, "--wait=true", "--timeout=120s")
    delete_and_wait(kind, ns, "gpujob", *jobs, selector=lambda n: job_pods(kind, ns, n))
    centre_all_free(kind)


def byo_pod_spec(gpus: int, script: str) -> dict:
    """A pod spec that names the operator's scheduler and asks for ``gpus`` GPUs itself."""
    return {
        "schedulerName": api.DEFAULT_SCHEDULER_NAME,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "main",
                "image": WORKLOAD_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", script],
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
            }
        ],
    }


def batch_job(name: str, parallelism: int, gpus: int, script: str) -> dict:
    """A plain batch/v1 Job whose pods name the operator's scheduler and ask for their GPUs."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "parallelism": parallelism,
            "completions": parallelism,
            "backoffLimit": 0,
            "template": {"spec": byo_pod_spec(gpus, script)},
        },
    }


def test_a_batch_job_of_our_own_runs_as_one_group_with_its_gpus(kind, center, device_plugin):
    """Bring your own workload: kube-controller-manager's Job controller makes the pods, the operator
    binds both (Binding subresource; its Scheduled Event names the Job as their group), the kubelet
    gets a GPU for each from the device plugin, and the Job completes."""
    ns, name = center, "byo-job"
    centre_all_free(kind)
    job = batch_job(
        name, parallelism=2, gpus=1, script='echo "NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES"'
    )
    job["metadata"]["namespace"] = ns
    with cleanup(kind, ns, "job", name):
        kind.apply([job])
        check_batch_job(kind, ns, name, device_plugin)
    delete_and_wait(
        kind,
        ns,
        "job",
        name,
        selector=lambda n: (
            kind.core.list_namespaced_pod(ns, label_selector=f"batch.kubernetes.io/job-name={n}").items
        ),
    )
    centre_all_free(kind)


def check_batch_job(kind: Kind, ns: str, name: str, workers: list[str]) -> None:
    from kubernetes import client

    batch = client.BatchV1Api(kind.api_client)

    def finished():
        j = batch.read_namespaced_job(name, ns)
        conds = {c.type: c.status for c in j.status.conditions or []}
        return j if "True" in (conds.get("Complete"), conds.get("Failed")) else None

    try:
        j = wait_for(finished, timeout=240, what=f"Job {ns}/{name} to finish")
    except Exception:
        print(kind.diagnostics())
        raise
    conds = {c.type: c.status for c in j.status.conditions or []}
    assert conds.get("Complete") == "True" and j.status.succeeded == 2, j.status
    pods = kind.core.list_namespaced_pod(ns, label_selector=f"batch.kubernetes.io/job-name={name}").items
    assert len(pods) == 2, [p.metadata.name for p in pods]

    def scheduled(pod: str) -> list[dict]:
        # kubectl's JSON: the client's models refuse the core/v1 Events (no eventTime) in the list
        events = json.loads(kind.kubectl("get", "events.events.k8s.io", "-n", ns, "-o", "json"))["items"]
        return [
            e
            for e in events
            if (e.get("regarding") or {}).get("name") == pod and e.get("reason") == "Scheduled"
        ]

    seen: set[str] = set()
    for p in pods:
        assert p.spec.scheduler_name == api.DEFAULT_SCHEDULER_NAME
        assert p.spec.node_name in workers
        assert p.status.phase == "Succeeded"
        cond = next(c for c in p.status.conditions if c.type == "PodScheduled")
        assert cond.status == "True", cond
        # bound by the operator (kube-scheduler leaves pods naming another scheduler alone), as the
        # Job's group
        evs = wait_for(lambda p=p: scheduled(p.metadata.name), timeout=60, what="the Scheduled Event")
        said = [(e.get("reportingController"), e.get("note")) for e in evs]
        assert said == [(OPERATOR_EVENTS, f"bound to {p.spec.node_name} (Job {name}, quota {QUOTA})")], said
        uuids = visible_gpus(pod_log(kind, ns, p.metadata.name))
        assert len(uuids) == 1 and re.fullmatch(UUID, uuids[0]), uuids
        seen |= set(uuids)
    assert len(seen) == 2  # two different GPUs


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
