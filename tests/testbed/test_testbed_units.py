"""Pure unit tests: node manifests, kwok stages, faults' API calls, the wait helper. No cluster."""

from __future__ import annotations

import itertools
import time

import pytest
import yaml

from aicenter_testbed.fleet import (
    GPU_RESOURCE,
    LABEL_CENTER,
    LABEL_CLIQUE,
    LABEL_COUNT,
    LABEL_FAMILY,
    LABEL_MEMORY,
    LABEL_PRESENT,
    LABEL_PRODUCT,
    LABEL_RACK,
    LABEL_ZONE,
    iter_nodes,
    load_fleet,
    scale_fleet,
)
from aicenter_testbed.sim import faults
from aicenter_testbed.sim.nodes import (
    KWOK_TAINT,
    CreateResult,
    create_nodes,
    fleet_manifests,
    node_ip,
    node_is_ready,
    node_manifest,
)
from aicenter_testbed.sim.pods import gpu_pod_manifest
from aicenter_testbed.sim.stages import (
    ANN_FAULT,
    ANN_OUTCOME,
    ANN_RUN_SECONDS,
    RUN_END_JQ,
    all_stages,
    kwok_config_documents,
)
from aicenter_testbed.waiting import WaitTimeout, wait_for

GFD_LABELS = (LABEL_PRODUCT, LABEL_COUNT, LABEL_MEMORY, LABEL_FAMILY, LABEL_PRESENT)


@pytest.fixture(scope="module")
def small_fleet():
    return scale_fleet(load_fleet(), 0.001)


def test_one_manifest_per_fleet_node_with_unique_names(small_fleet):
    manifests = fleet_manifests(small_fleet)
    specs = list(iter_nodes(small_fleet))
    assert len(manifests) == len(specs) == small_fleet.nodes
    names = [m["metadata"]["name"] for m in manifests]
    assert names == [s.name for s in specs]
    assert len(set(names)) == len(names)


def test_manifest_carries_gfd_labels_gpu_capacity_and_kwok_markers(small_fleet):
    for spec in iter_nodes(small_fleet):
        m = node_manifest(spec)
        labels = m["metadata"]["labels"]
        for key in GFD_LABELS:
            assert labels[key] == spec.labels()[key]
        assert labels[LABEL_CENTER] == spec.center
        assert labels[LABEL_RACK] == spec.rack
        assert labels[LABEL_ZONE] == spec.zone
        assert (LABEL_CLIQUE in labels) == (spec.clique is not None)
        assert labels["kubernetes.io/hostname"] == spec.name
        gpus = str(spec.shape.gpus_per_node)
        assert labels[LABEL_COUNT] == gpus
        assert m["status"]["capacity"][GPU_RESOURCE] == gpus
        assert m["status"]["allocatable"][GPU_RESOURCE] == gpus
        for r in ("cpu", "memory", "pods"):
            assert m["status"]["capacity"][r] == m["status"]["allocatable"][r]
        assert m["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert KWOK_TAINT in m["spec"]["taints"]
        assert node_is_ready(m)


def test_the_demo_jobs_may_use_the_test_beds_nodes(small_fleet):
    """hack/demo.sh applies ``testbed_jobs()``: the operator must find their templates tolerating every
    hard taint of a kwok node (the samples themselves are for real clusters)."""
    from aicenter.controller.objects import constraints_of, node_view
    from aicenter.core.constraints import tolerates_all
    from aicenter_testbed.samples import example_jobs, testbed_jobs

    node = node_view(node_manifest(next(iter_nodes(small_fleet))))
    assert node.taints
    jobs = testbed_jobs()
    assert [j["metadata"]["name"] for j in jobs] == [
        j["metadata"]["name"] for _, j in example_jobs().values()
    ]
    for job in jobs:
        tolerations = constraints_of(job["spec"]["template"]["spec"], GPU_RESOURCE).tolerations
        assert tolerates_all(tolerations, node.taints), job["metadata"]["name"]
    assert all("tolerations" not in j["spec"]["template"]["spec"] for _, j in example_jobs().values())


def test_manifest_shapes_differ_where_the_fleet_does(small_fleet):
    by_product = {}
    for spec in iter_nodes(small_fleet):
        m = node_manifest(spec)
        by_product[m["metadata"]["labels"][LABEL_PRODUCT]] = m["status"]["capacity"][GPU_RESOURCE]
    assert by_product == {"NVIDIA-B200": "8", "NVIDIA-GB200": "4", "NVIDIA-B300": "8"}


def test_node_ip_is_stable_and_private():
    assert node_ip("a") == node_ip("a")
    ips = {node_ip(f"n-{i}") for i in range(2000)}
    assert len(ips) > 1990  # collisions are harmless but should be rare
    assert all(ip.startswith("10.") for ip in ips)


def test_node_is_ready_rejects_not_ready_and_lifecycle_taints():
    spec = next(iter_nodes(scale_fleet(load_fleet(), 0.001)))
    m = node_manifest(spec)
    tainted = {**m, "spec": {"taints": [*m["spec"]["taints"], {"key": "node.kubernetes.io/not-ready"}]}}
    assert not node_is_ready(tainted)
    m["status"]["conditions"][0]["status"] = "False"
    assert not node_is_ready(m)


def test_stages_are_well_formed_and_named_uniquely():
    stages = all_stages()
    names = [s["metadata"]["name"] for s in stages]
    assert len(names) == len(set(names))
    for s in stages:
        assert s["apiVersion"] == "kwok.x-k8s.io/v1alpha1"
        assert s["kind"] == "Stage"
        assert s["spec"]["resourceRef"]["kind"] in ("Node", "Pod")
        assert s["spec"]["selector"]["matchExpressions"], s["metadata"]["name"]
        for e in s["spec"]["selector"]["matchExpressions"]:
            assert e["jq"]["operator"] in ("In", "NotIn", "Exists", "DoesNotExist")
        assert s["spec"]["steps"]
    kinds = {s["metadata"]["name"]: s["spec"]["resourceRef"]["kind"] for s in stages}
    assert {
        "aicenter-pod-running",
        "aicenter-pod-succeeded",
        "aicenter-pod-failed",
        "aicenter-pod-delete",
    } <= set(kinds)


def test_completion_stages_key_on_the_run_seconds_and_outcome_annotations():
    stages = {s["metadata"]["name"]: s for s in all_stages()}
    ok = yaml.safe_dump(stages["aicenter-pod-succeeded"])
    failed = yaml.safe_dump(stages["aicenter-pod-failed"])
    assert ANN_RUN_SECONDS in ok and ANN_RUN_SECONDS in failed
    assert ANN_OUTCOME in ok and ANN_OUTCOME in failed
    assert "phase: Succeeded" in stages["aicenter-pod-succeeded"]["spec"]["steps"][0]["patch"]["template"]
    assert "phase: Failed" in stages["aicenter-pod-failed"]["spec"]["steps"][0]["patch"]["template"]
    assert stages["aicenter-pod-succeeded"]["spec"]["delay"]["durationFrom"]["jq"]["expression"] == RUN_END_JQ
    assert stages["aicenter-pod-delete"]["spec"]["steps"] == [{"delete": True}]
    # Node healing must leave faulted nodes alone.
    init = yaml.safe_dump(stages["aicenter-node-initialize"])
    assert ANN_FAULT in init


def test_kwok_config_file_round_trips_as_yaml():
    docs = kwok_config_documents(90)
    text = yaml.safe_dump_all(docs)
    back = list(yaml.safe_load_all(text))
    assert back[0]["kind"] == "KwokConfiguration"
    assert back[0]["options"]["nodeLeaseDurationSeconds"] == 90
    assert sum(d["kind"] == "Stage" for d in back) == len(all_stages())


def test_gpu_pod_manifest_tolerates_kwok_and_selects_product():
    p = gpu_pod_manifest("p", 8, namespace="ns", product="NVIDIA-B200", run_seconds=2.5, outcome="Failed")
    assert p["metadata"]["annotations"] == {ANN_RUN_SECONDS: "2.5", ANN_OUTCOME: "Failed"}
    assert p["spec"]["nodeSelector"] == {LABEL_PRODUCT: "NVIDIA-B200"}
    assert p["spec"]["tolerations"][0]["key"] == "kwok.x-k8s.io/node"
    c = p["spec"]["containers"][0]
    assert c["resources"]["limits"][GPU_RESOURCE] == "8" == c["resources"]["requests"][GPU_RESOURCE]
    assert "annotations" in gpu_pod_manifest("q", 1)["metadata"]


class FakeClient:
    """Records requests; answers from a table of (method, path) → (status, body)."""

    def __init__(self, answers=None, default=(200, {})):
        self.calls = []
        self.answers = answers or {}
        self.default = default

    def request(self, method, path, body=None, content_type="application/json", timeout=60):
        self.calls.append((method, path, body, content_type))
        ans = self.answers.get((method, path), self.default)
        return ans(body) if callable(ans) else ans


def test_create_nodes_sorts_created_existing_and_failed(small_fleet):
    manifests = fleet_manifests(small_fleet)[:6]
    statuses = itertools.cycle([201, 409, 422])

    def answer(body):
        return next(statuses), {"message": "nope"}

    client = FakeClient({("POST", "/api/v1/nodes"): answer})
    res = create_nodes(client, manifests, workers=1)
    assert isinstance(res, CreateResult)
    assert len(res.created) == len(res.existed) == len(res.failed) == 2
    assert not res.ok
    assert all(v.startswith("HTTP 422") for v in res.failed.values())


def test_fault_calls_patch_the_right_subresources():
    node = {"metadata": {"annotations": {}}, "status": {"capacity": {GPU_RESOURCE: "8"}}, "spec": {}}
    c = FakeClient({("GET", "/api/v1/nodes/n1"): (200, node)})
    faults.node_not_ready(c, "n1")
    assert c.calls[0][1] == "/api/v1/nodes/n1"
    assert c.calls[0][2]["metadata"]["annotations"][ANN_FAULT] == "NotReady"
    assert c.calls[1][1] == "/api/v1/nodes/n1/status"
    assert (
        c.calls[1][2]["status"]["conditions"][0] | {"status": "False"}
        == c.calls[1][2]["status"]["conditions"][0]
    )

    c.calls.clear()
    faults.gpus_unhealthy(c, "n1", 3)
    status_patch = next(b for m, p, b, _ in c.calls if p.endswith("/status"))
    assert status_patch == {"status": {"allocatable": {GPU_RESOURCE: "5"}}}

    c.calls.clear()
    faults.gpus_unhealthy(c, "n1", 99)
    status_patch = next(b for m, p, b, _ in c.calls if p.endswith("/status"))
    assert status_patch["status"]["allocatable"][GPU_RESOURCE] == "0"

    with pytest.raises(faults.FaultError):
        faults.inject(c, "melt", "n1")
    with pytest.raises(faults.FaultError):
        faults.gpus_unhealthy(c, "n1", 0)


def test_fault_errors_carry_the_api_message():
    c = FakeClient(default=(404, {"message": 'nodes "ghost" not found'}))
    with pytest.raises(faults.FaultError, match="ghost"):
        faults.cordon(c, "ghost")


def test_wait_for_returns_the_truthy_value():
    seen = iter([0, None, "", "done"])
    assert wait_for(lambda: next(seen), timeout=5, what="x", interval=0.001) == "done"


def test_wait_for_times_out_naming_what_and_the_last_error():
    def boom():
        raise KeyError("pod-7")

    t0 = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"waiting for the pod to exist.*KeyError.*pod-7"):
        wait_for(boom, timeout=0.2, what="the pod to exist", interval=0.01)
    assert time.monotonic() - t0 < 2


def test_components_die_with_the_process_that_started_them(tmp_path):
    """A component gets SIGTERM when its parent is killed (no orphaned control plane)."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys, pathlib\n"
        "from aicenter_testbed.cluster import Process\n"
        "p = Process('sleeper', ['sleep', '600'], pathlib.Path(sys.argv[1]) / 'sleeper.log')\n"
        "p.start()\n"
        "print(p.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(parent.stdout.readline())
    assert Path(f"/proc/{child}").exists()
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)

    def gone():
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        return state in ("Z", "X")

    wait_for(gone, timeout=10, what=f"orphaned child {child} to die")
