"""The GPUQuota → Kueue mapping and the Kueue side of a trace job (pure; no cluster).

The last tests read Kueue's webhooks, CRDs and configuration from the downloaded module; they skip
(saying why) where the go command is missing.
"""

from __future__ import annotations

import shutil

import pytest

from aicenter import api
from aicenter_testbed import manifests
from aicenter_testbed.fleet import (
    LABEL_CENTER,
    LABEL_CLIQUE,
    LABEL_PRODUCT,
    LABEL_RACK,
    LABEL_ZONE,
    iter_nodes,
    load_fleet,
    scale_fleet,
)
from aicenter_testbed.kueue.mapping import (
    ANN_PREFERRED_TOPOLOGY,
    ANN_REQUIRED_TOPOLOGY,
    KUEUE_API,
    LABEL_HOSTNAME,
    LABEL_PRIORITY_CLASS,
    LABEL_QUEUE_NAME,
    MappingError,
    batch_job,
    kueue_objects,
    priority_class_name,
    selector_matches,
    topology_levels,
)
from aicenter_testbed.samples import fleet_manifests
from aicenter_testbed.sim.nodes import KWOK_TOLERATION
from aicenter_testbed.sim.stages import ANN_RUN_SECONDS


@pytest.fixture(scope="module")
def fleet():
    return scale_fleet(load_fleet(), 0.025)


@pytest.fixture(scope="module")
def mapped(fleet):
    docs = fleet_manifests(fleet, namespaces=True)
    nodes = [{**n.labels(), LABEL_HOSTNAME: n.name} for n in iter_nodes(fleet)]
    objs = kueue_objects(
        [d for d in docs if d["kind"] == api.KIND_AICENTER],
        [d for d in docs if d["kind"] == api.KIND_GPUQUOTA],
        [d for d in docs if d["kind"] == "Namespace"],
        nodes,
        priorities=[100, 50, 10, 50],
    )
    return docs, objs


def _by_name(objs):
    return {o["metadata"]["name"]: o for o in objs}


def test_one_cluster_queue_per_gpuquota_with_guarantee_as_nominal_and_room_as_borrowing(fleet, mapped):
    _, objs = mapped
    cqs = _by_name(objs.cluster_queues)
    quotas = {(c.name, q.name): q for c in fleet.centers for q in c.quotas}
    assert set(cqs) == {q for _, q in quotas}
    for (center, qname), q in quotas.items():
        cq = cqs[qname]
        assert cq["apiVersion"] == KUEUE_API and cq["kind"] == "ClusterQueue"
        assert cq["spec"]["cohortName"] == q.cohort
        (group,) = cq["spec"]["resourceGroups"]
        assert group["coveredResources"] == [api.DEFAULT_GPU_RESOURCE]
        got = {}
        for f in group["flavors"]:
            (res,) = f["resources"]
            got[f["name"]] = (res["nominalQuota"], res["borrowingLimit"])
        want = {}
        for cls, g in q.guaranteed.items():
            limit = max(q.limit.get(cls, 0), g)
            want[objs.flavor_of[(center, cls)]] = (g, limit - g)
        assert got == want, qname
        assert cq["spec"]["namespaceSelector"]["matchExpressions"][0]["values"] == [qname]


def test_a_quota_of_the_fleet_maps_to_the_numbers_it_states(mapped):
    _, objs = mapped
    cq = _by_name(objs.cluster_queues)["sk-hynix-memory-ai"]
    flavors = {f["name"]: f["resources"][0] for f in cq["spec"]["resourceGroups"][0]["flavors"]}
    assert flavors == {
        "sk-industrial-ai-cloud-b200": {"name": "nvidia.com/gpu", "nominalQuota": 187, "borrowingLimit": 124},
        "sk-industrial-ai-cloud-b300": {"name": "nvidia.com/gpu", "nominalQuota": 187, "borrowingLimit": 124},
    }


def test_cohorts_local_queues_and_priority_classes(fleet, mapped):
    docs, objs = mapped
    assert [c["metadata"]["name"] for c in objs.cohorts] == sorted(
        {q.cohort for c in fleet.centers for q in c.quotas}
    )
    assert all(c["kind"] == "Cohort" and c["spec"] == {} for c in objs.cohorts)
    lqs = {(q["metadata"]["namespace"], q["metadata"]["name"]): q for q in objs.local_queues}
    namespaces = [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"]
    assert set(lqs) == {(n, n) for n in namespaces}  # the samples name each namespace like its quota
    assert all(q["spec"] == {"clusterQueue": name} for (_, name), q in lqs.items())
    assert {p["metadata"]["name"]: p["value"] for p in objs.priority_classes} == {
        "aicenter-priority-10": 10,
        "aicenter-priority-50": 50,
        "aicenter-priority-100": 100,
    }
    assert priority_class_name(-5) == "aicenter-priority-m5"


def test_a_flavor_per_centre_and_product_with_kwok_toleration_and_its_topology(fleet, mapped):
    _, objs = mapped
    flavors = _by_name(objs.flavors)
    pairs = {(c.name, cls) for c in fleet.centers for cls in c.gpus_by_class()}
    assert set(objs.flavor_of) == pairs and len(flavors) == len(pairs)
    for (center, cls), name in objs.flavor_of.items():
        spec = flavors[name]["spec"]
        product = fleet.center(center).products()[cls]
        assert spec["nodeLabels"] == {LABEL_CENTER: center, LABEL_PRODUCT: product}
        assert spec["tolerations"] == [KWOK_TOLERATION]
        assert objs.product_of[(center, cls)] == product
    topologies = {
        t["metadata"]["name"]: [lv["nodeLabel"] for lv in t["spec"]["levels"]] for t in objs.topologies
    }
    assert topologies == {
        "aicenter-zone-rack-host": [LABEL_ZONE, LABEL_RACK, LABEL_HOSTNAME],
        "aicenter-zone-rack-clique-host": [LABEL_ZONE, LABEL_RACK, LABEL_CLIQUE, LABEL_HOSTNAME],
    }
    # only GB200 nodes carry an NVLink clique: only their flavors use the clique level
    for (_, cls), name in objs.flavor_of.items():
        want = "aicenter-zone-rack-clique-host" if cls == "GB200" else "aicenter-zone-rack-host"
        assert flavors[name]["spec"]["topologyName"] == want, name


def test_topology_levels_keep_only_keys_every_node_has():
    keys = [LABEL_CLIQUE, LABEL_RACK, LABEL_ZONE]
    gb200 = {LABEL_ZONE: "z", LABEL_RACK: "r", LABEL_CLIQUE: "c"}
    hgx = {LABEL_ZONE: "z", LABEL_RACK: "r"}
    assert topology_levels(keys, [gb200, gb200]) == [LABEL_ZONE, LABEL_RACK, LABEL_CLIQUE, LABEL_HOSTNAME]
    assert topology_levels(keys, [gb200, hgx]) == [LABEL_ZONE, LABEL_RACK, LABEL_HOSTNAME]
    assert topology_levels(keys, []) == [LABEL_HOSTNAME]


def _center():
    return manifests.aicenter("c1", classes={"B200": "NVIDIA-B200", "B300": "NVIDIA-B300"})


def test_preemption_policies_map_to_kueue_names():
    quotas = [
        manifests.gpuquota("default", "c1", manifests.namespace_selector("a"), {"B200": (8, 16)}, cohort="x"),
        manifests.gpuquota(
            "never",
            "c1",
            manifests.namespace_selector("b"),
            {"B200": (8, None)},
            cohort="x",
            preemption={"withinQuota": api.PREEMPT_NEVER, "reclaimLent": api.PREEMPT_LOWER_PRIORITY},
        ),
        manifests.gpuquota(
            "nothing-to-reclaim",
            "c1",
            manifests.namespace_selector("c"),
            {"B200": (8, None)},
            cohort="x",
            preemption={"reclaimLent": api.PREEMPT_NEVER},
        ),
    ]
    cqs = _by_name(kueue_objects([_center()], quotas).cluster_queues)
    assert cqs["default"]["spec"]["preemption"] == {
        "withinClusterQueue": "LowerPriority",
        "reclaimWithinCohort": "Any",
        "borrowWithinCohort": {"policy": "Never"},
    }
    assert cqs["never"]["spec"]["preemption"]["withinClusterQueue"] == "Never"
    assert cqs["never"]["spec"]["preemption"]["reclaimWithinCohort"] == "LowerPriority"
    assert cqs["nothing-to-reclaim"]["spec"]["preemption"]["reclaimWithinCohort"] == "Never"
    assert cqs["never"]["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["borrowingLimit"] == 0


def test_without_a_cohort_there_is_no_borrowing_limit_and_a_note_says_why():
    q = manifests.gpuquota("solo", "c1", manifests.namespace_selector("a"), {"B300": (8, 24)})
    objs = kueue_objects([_center()], [q])
    (cq,) = objs.cluster_queues
    assert "cohortName" not in cq["spec"]
    assert cq["spec"]["resourceGroups"][0]["flavors"] == [
        {"name": "c1-b300", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 8}]}
    ]
    assert objs.cohorts == []
    assert any("solo" in n and "without a cohort" in n for n in objs.notes)


def test_fair_sharing_weight_only_when_asked():
    q = manifests.gpuquota("w", "c1", manifests.namespace_selector("a"), {"B200": (8, None)}, weight=3)
    assert "fairSharing" not in kueue_objects([_center()], [q]).cluster_queues[0]["spec"]
    cq = kueue_objects([_center()], [q], fair_sharing=True).cluster_queues[0]
    assert cq["spec"]["fairSharing"] == {"weight": "3"}


def test_errors_name_the_quota_and_the_problem():
    bad_class = manifests.gpuquota("q1", "c1", manifests.namespace_selector("a"), {"H100": (8, None)})
    with pytest.raises(MappingError, match=r"q1.*no GPU class 'H100'"):
        kueue_objects([_center()], [bad_class])
    no_center = manifests.gpuquota("q2", "elsewhere", manifests.namespace_selector("a"), {"B200": (8, None)})
    with pytest.raises(MappingError, match=r"q2.*AICenter 'elsewhere' not found"):
        kueue_objects([_center()], [no_center])
    q3 = manifests.gpuquota("q3", "c1", manifests.namespace_selector("a"), {"B200": (8, None)})
    q3["spec"]["resources"][0]["limit"] = 4
    with pytest.raises(MappingError, match=r"q3: limit 4 < guaranteed 8"):
        kueue_objects([_center()], [q3])


def test_a_centre_without_gpu_classes_takes_the_product_from_its_nodes():
    center = manifests.aicenter("c2")
    q = manifests.gpuquota("q", "c2", manifests.namespace_selector("a"), {"GB200": (4, None)})
    nodes = [{LABEL_CENTER: "c2", LABEL_PRODUCT: "NVIDIA-GB200", LABEL_ZONE: "z", LABEL_RACK: "r"}]
    objs = kueue_objects([center], [q], nodes=nodes)
    assert objs.flavors[0]["spec"]["nodeLabels"] == {LABEL_CENTER: "c2", LABEL_PRODUCT: "NVIDIA-GB200"}


def test_label_selector_semantics():
    labels = {"a": "1", "b": "2"}
    assert selector_matches({}, labels)
    assert not selector_matches(None, labels)
    assert selector_matches({"matchLabels": {"a": "1"}}, labels)
    assert not selector_matches({"matchLabels": {"a": "2"}}, labels)
    expr = [{"key": "a", "operator": "In", "values": ["1", "3"]}, {"key": "c", "operator": "DoesNotExist"}]
    assert selector_matches({"matchExpressions": expr}, labels)
    assert not selector_matches(
        {"matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["2"]}]}, labels
    )
    assert not selector_matches({"matchExpressions": [{"key": "c", "operator": "Exists"}]}, labels)
    with pytest.raises(MappingError):
        selector_matches({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["0"]}]}, labels)


def test_batch_job_is_an_indexed_gang_with_the_topology_annotation():
    job = batch_job(
        "ft-1",
        "robotics",
        "robotics",
        4,
        8,
        product="NVIDIA-B200",
        topology=(LABEL_RACK, api.TOPOLOGY_PREFERRED),
        priority=50,
        run_seconds=30,
        labels={"bench": "x"},
    )
    spec = job["spec"]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["labels"] == {
        LABEL_QUEUE_NAME: "robotics",
        LABEL_PRIORITY_CLASS: "aicenter-priority-50",
        "bench": "x",
    }
    assert spec["suspend"] is True and spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] == 4
    tmpl = spec["template"]
    assert tmpl["metadata"]["annotations"] == {ANN_RUN_SECONDS: "30", ANN_PREFERRED_TOPOLOGY: LABEL_RACK}
    assert tmpl["metadata"]["labels"] == {"bench": "x"}
    pod = tmpl["spec"]
    assert pod["nodeSelector"] == {LABEL_PRODUCT: "NVIDIA-B200"}
    assert pod["tolerations"] == [KWOK_TOLERATION]
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "8"}
    required = batch_job("g", "ns", "q", 2, 8, topology=(LABEL_CLIQUE, api.TOPOLOGY_REQUIRED))
    assert required["spec"]["template"]["metadata"]["annotations"] == {ANN_REQUIRED_TOPOLOGY: LABEL_CLIQUE}
    assert LABEL_PRIORITY_CLASS not in required["metadata"]["labels"]
    with pytest.raises(MappingError):
        batch_job("g", "ns", "q", 2, 8, topology=(LABEL_RACK, "Sometimes"))


# --------------------------------------------------------------------------------------------------
# what the runner applies, read from Kueue's module


@pytest.fixture(scope="module")
def kueue_module():
    if shutil.which("go") is None:
        pytest.skip(
            "the go command is not on PATH: Kueue's module (CRDs, webhooks, config) cannot be located"
        )
    from aicenter_testbed.kueue.runner import module_dir

    return module_dir()


def test_webhooks_are_url_based_on_loopback_and_only_for_kueue_objects_and_jobs(kueue_module, tmp_path):
    from aicenter_testbed.kueue.mapping import LABEL_MANAGED_NAMESPACE
    from aicenter_testbed.kueue.runner import webhook_configurations

    base = "https://127.0.0.1:12345"
    docs = webhook_configurations(kueue_module, base, "Q0E=")
    assert [d["kind"] for d in docs] == ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
    resources = set()
    for d in docs:
        for w in d["webhooks"]:
            assert w["clientConfig"]["url"].startswith(base + "/")
            assert w["clientConfig"]["caBundle"] == "Q0E="
            assert "service" not in w["clientConfig"]
            groups = {g for r in w["rules"] for g in r["apiGroups"]}
            res = {x for r in w["rules"] for x in r["resources"]}
            resources |= res
            if groups == {"batch"}:
                assert w["namespaceSelector"] == {"matchLabels": {LABEL_MANAGED_NAMESPACE: "true"}}
            else:
                assert groups == {"kueue.x-k8s.io"}
    assert {"jobs", "workloads", "clusterqueues", "resourceflavors"} <= resources
    assert not resources & {"pods", "deployments", "statefulsets", "rayjobs", "jobsets"}


def test_crds_and_configuration_come_from_the_module(kueue_module, tmp_path):
    from aicenter_testbed.kueue.runner import configuration, crd_documents

    crds = {c["metadata"]["name"]: c for c in crd_documents(kueue_module, "https://127.0.0.1:1", "Q0E=")}
    assert {"clusterqueues.kueue.x-k8s.io", "topologies.kueue.x-k8s.io", "workloads.kueue.x-k8s.io"} <= set(
        crds
    )
    conv = crds["workloads.kueue.x-k8s.io"]["spec"]["conversion"]
    assert conv["webhook"]["clientConfig"] == {"url": "https://127.0.0.1:1/convert", "caBundle": "Q0E="}
    assert "conversion" not in crds["topologies.kueue.x-k8s.io"]["spec"] or (
        crds["topologies.kueue.x-k8s.io"]["spec"]["conversion"].get("strategy") != "Webhook"
    )
    cfg = configuration(
        kueue_module, webhook_port=1, health_port=2, metrics_port=3, cert_dir=tmp_path, qps=50, burst=100
    )
    assert cfg["featureGates"]["TopologyAwareScheduling"] is True
    assert cfg["integrations"] == {"frameworks": ["batch/job"]}
    assert cfg["webhook"] == {"port": 1, "host": "127.0.0.1", "certDir": str(tmp_path)}
    assert cfg["health"]["healthProbeBindAddress"] == "127.0.0.1:2"
    assert cfg["leaderElection"] == {"leaderElect": False}
    assert cfg["clientConnection"] == {"qps": 50, "burst": 100}
    assert cfg["controller"]["groupKindConcurrency"]["Job.batch"] == 5  # Kueue's own defaults stay
