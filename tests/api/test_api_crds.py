"""The CRDs built by aicenter.api.crds: shape, descriptions, printer columns, CEL rules."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from aicenter import api
from aicenter.api import crds
from aicenter_testbed import fleet
from aicenter_testbed.schema import validate

KINDS = [api.KIND_AICENTER, api.KIND_GPUQUOTA, api.KIND_GPUJOB]
SCHEMA_TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def walk(schema: dict, path: str = ""):
    """(path, schema node) for every node under ``schema``; '[]' marks array items."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def resolve(schema: dict, json_path: str) -> dict | None:
    node = schema
    for part in json_path.strip(".").split("."):
        node = node.get("properties", {}).get(part)
        if node is None:
            return None
    return node


@pytest.fixture(params=KINDS)
def crd(request):
    return crds.crd_for(request.param)


def test_three_crds_in_one_group_and_version():
    all_ = crds.all_crds()
    assert [c["spec"]["names"]["kind"] for c in all_] == KINDS
    for c in all_:
        assert c["apiVersion"] == "apiextensions.k8s.io/v1"
        assert c["kind"] == "CustomResourceDefinition"
        assert c["spec"]["group"] == api.GROUP == "aicenter.dev"
        assert c["metadata"]["name"] == f"{c['spec']['names']['plural']}.{api.GROUP}"
        (version,) = c["spec"]["versions"]
        assert version["name"] == api.VERSION == "v1alpha1"
        assert version["served"] and version["storage"]


def test_names_scope_and_short_names():
    expect = {
        api.KIND_AICENTER: ("aicenters", "aic", "Cluster"),
        api.KIND_GPUQUOTA: ("gpuquotas", "gq", "Cluster"),
        api.KIND_GPUJOB: ("gpujobs", "gj", "Namespaced"),
    }
    for kind, (plural, short, scope) in expect.items():
        spec = crds.crd_for(kind)["spec"]
        assert spec["names"]["plural"] == plural == api.PLURALS[kind]
        assert spec["names"]["shortNames"] == [short]
        assert spec["names"]["categories"] == ["aicenter-all"]
        assert spec["names"]["listKind"] == f"{kind}List"
        assert spec["scope"] == scope
        assert (scope == "Namespaced") == api.NAMESPACED[kind]


def test_status_subresource(crd):
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}
    schema = crds.openapi_schema(crd["spec"]["names"]["kind"])
    assert schema["properties"]["status"]["type"] == "object"
    assert "conditions" in schema["properties"]["status"]["properties"]


def test_printer_columns_resolve_in_the_schema(crd):
    kind = crd["spec"]["names"]["kind"]
    schema = crds.openapi_schema(kind)
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert columns and columns[-1]["name"] == "Age"
    for col in columns:
        assert col["description"]
        if col["jsonPath"] == ".metadata.creationTimestamp":
            assert col["type"] == "date"
            continue
        node = resolve(schema, col["jsonPath"])
        assert node is not None, f"{kind} column {col['name']}: {col['jsonPath']} not in the schema"
        assert node["type"] == col["type"], f"{kind} column {col['name']}"


def test_printer_column_names():
    def names(kind):
        return [c["name"] for c in crds.crd_for(kind)["spec"]["versions"][0]["additionalPrinterColumns"]]

    assert names(api.KIND_AICENTER) == [
        "Total",
        "Allocated",
        "Free",
        "Healthy",
        "Ready Nodes",
        "Maintenance",
        "Age",
    ]
    assert names(api.KIND_GPUQUOTA) == [
        "Center",
        "Cohort",
        "Guaranteed",
        "Used",
        "Admitted",
        "Pending",
        "Age",
    ]
    assert names(api.KIND_GPUJOB) == ["Phase", "GPUs", "Replicas", "Quota", "Reason", "Age"]
    reason = crds.crd_for(api.KIND_GPUJOB)["spec"]["versions"][0]["additionalPrinterColumns"][4]
    assert reason["priority"] == 1


def test_selectable_fields_resolve(crd):
    schema = crds.openapi_schema(crd["spec"]["names"]["kind"])
    for f in crd["spec"]["versions"][0].get("selectableFields", []):
        node = resolve(schema, f["jsonPath"])
        assert node is not None and node["type"] in ("string", "integer", "boolean"), f["jsonPath"]


def test_every_field_has_a_description_and_a_type(crd):
    schema = crds.openapi_schema(crd["spec"]["names"]["kind"])
    missing, untyped = [], []
    for path, node in walk(schema):
        # Items of string lists and values of string maps are described by their parent.
        leaf_item = path.endswith(("[]", "{}")) and node.get("type") != "object"
        if path == "metadata":  # the API server forbids anything but the type on the root metadata
            assert node == {"type": "object"}
        elif not leaf_item and not node.get("description", "").strip():
            missing.append(path or "<root>")
        if node.get("type") not in SCHEMA_TYPES and not node.get("x-kubernetes-int-or-string"):
            untyped.append(path)  # int-or-string (resource quantities) is the one typeless kind
    assert not missing, f"fields without a description: {missing}"
    assert not untyped, f"nodes without a structural type: {untyped}"


def test_preserve_unknown_fields_only_in_the_pod_template():
    for kind in KINDS:
        for path, node in walk(crds.openapi_schema(kind)):
            if node.get("x-kubernetes-preserve-unknown-fields"):
                assert kind == api.KIND_GPUJOB and path.startswith("spec.template.spec"), path


def test_defaults_are_valid_against_their_own_schema(crd):
    for path, node in walk(crds.openapi_schema(crd["spec"]["names"]["kind"])):
        if "default" in node:
            assert validate(node["default"], node, path) == [], path


def test_list_map_keys_are_required_or_defaulted(crd):
    for path, node in walk(crds.openapi_schema(crd["spec"]["names"]["kind"])):
        for key in node.get("x-kubernetes-list-map-keys", []):
            items = node["items"]
            assert key in items.get("required", []) or "default" in items["properties"][key], path


def test_required_fields_have_schemas(crd):
    for path, node in walk(crds.openapi_schema(crd["spec"]["names"]["kind"])):
        for name in node.get("required", []):
            assert name in node.get("properties", {}), f"{path}.{name}"


# Defaults the task asked for, by kind and schema path.
DEFAULTS = {
    api.KIND_AICENTER: {
        "spec.gpuResource": "nvidia.com/gpu",
        "spec.topologyKeys": [
            "nvidia.com/gpu.clique",
            "topology.aicenter.dev/rack",
            "topology.kubernetes.io/zone",
        ],
        "spec.placementPolicy": "BinPack",
        "spec.maintenance": False,
        "spec.nodeNotReadyGraceSeconds": 60,
    },
    api.KIND_GPUQUOTA: {
        "spec.weight": 1,
        "spec.preemption.withinQuota": "LowerPriority",
        "spec.preemption.reclaimLent": "Any",
    },
    api.KIND_GPUJOB: {
        "spec.replicas": 1,
        "spec.gang.policy": "AllOrNothing",
        "spec.topology.mode": "Required",
        "spec.priority": 0,
        "spec.preemptible": True,
        "spec.backoffLimit": 3,
    },
}


@pytest.mark.parametrize("kind", KINDS)
def test_defaults(kind):
    nodes = dict(walk(crds.openapi_schema(kind)))
    for path, value in DEFAULTS[kind].items():
        assert nodes[path].get("default") == value, path


def test_enums_and_bounds():
    def nodes(kind):
        return dict(walk(crds.openapi_schema(kind)))

    aic, gq, gj = nodes(api.KIND_AICENTER), nodes(api.KIND_GPUQUOTA), nodes(api.KIND_GPUJOB)
    assert aic["spec.placementPolicy"]["enum"] == ["BinPack", "Spread"]
    assert aic["spec.nodeNotReadyGraceSeconds"]["minimum"] == 0
    assert aic["spec.gpuClasses"]["x-kubernetes-list-map-keys"] == ["name"]
    assert aic["status.conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert set(aic["spec"]["required"]) == {"nodeSelector"}
    assert gq["spec.resources"]["minItems"] == 1
    assert gq["spec.resources"]["x-kubernetes-list-map-keys"] == ["gpuClass"]
    assert (gq["spec.weight"]["minimum"], gq["spec.weight"]["maximum"]) == (1, 1000)
    assert gq["spec.preemption.withinQuota"]["enum"] == ["LowerPriority", "Never"]
    assert gq["spec.preemption.reclaimLent"]["enum"] == ["Any", "LowerPriority", "Never"]
    assert set(gq["spec"]["required"]) == {"center", "namespaceSelector", "resources"}
    assert gj["spec.replicas"]["minimum"] == 1
    assert gj["spec.gpusPerReplica"]["minimum"] == 1
    assert (gj["spec.priority"]["minimum"], gj["spec.priority"]["maximum"]) == (-1_000_000, 1_000_000)
    assert gj["spec.activeDeadlineSeconds"]["minimum"] == 1
    assert gj["spec.ttlSecondsAfterFinished"]["minimum"] == 0
    assert gj["spec.gang.policy"]["enum"] == ["AllOrNothing", "Independent"]
    assert gj["spec.topology.mode"]["enum"] == ["Required", "Preferred"]
    assert gj["status.phase"]["enum"] == ["Pending", "Admitted", "Running", "Succeeded", "Failed"]
    assert set(gj["spec"]["required"]) == {"gpusPerReplica", "template"}
    assert gj["spec.template.spec.containers"]["minItems"] == 1


# --------------------------------------------------------------------------------------------------
# CEL rules


def test_limit_rule_present():
    rules = crds.cel_rules(api.KIND_GPUQUOTA)
    assert (
        "spec.resources[]",
        "!has(self.limit) || self.limit >= self.guaranteed",
        "spec.resources[].limit must be >= guaranteed",
    ) in rules


def test_job_rules_present():
    rules = {(p, r): m for p, r, m in crds.cel_rules(api.KIND_GPUJOB)}
    assert rules[("spec", "self.replicas * self.gpusPerReplica <= 100000")].startswith(
        "spec.replicas * spec.gpusPerReplica (total GPUs)"
    )
    for field in ("replicas", "gpusPerReplica", "gpuClass", "quota"):
        assert any(p == "spec" and f"oldSelf.{field}" in r for p, r in rules), field


def test_gpu_class_uniqueness_rules_present():
    messages = [m for _, _, m in crds.cel_rules(api.KIND_AICENTER)]
    assert "spec.gpuClasses[].name must be unique" in messages
    assert "spec.gpuClasses[].product must be unique" in messages


@pytest.mark.parametrize("kind", KINDS)
def test_cel_rules_are_sound(kind):
    """Messages name a field; rules only use declared fields; transition rules are not in lists;
    rules inside or over lists have bounded lists (the API server estimates CEL cost)."""
    schema = crds.openapi_schema(kind)
    nodes = dict(walk(schema))
    for path, rule, message in crds.cel_rules(kind):
        assert message.startswith(("spec.", "status.", "metadata.")), message
        node = nodes[path]
        for field in re.findall(r"\b(?:self|oldSelf)\.(\w+)\b(?!\()", rule):
            assert field in node.get("properties", {}), f"{kind} {path}: {rule} uses undeclared {field}"
        if "oldSelf" in rule:
            assert "[]" not in path, f"transition rule inside a list: {path}"
        prefixes = [path[: m.end()] for m in re.finditer(r"\[\]", path)]
        for p in prefixes:
            assert "maxItems" in nodes[p[:-2]], f"{kind} {path}: unbounded list {p[:-2]}"
        if re.search(r"self\.(all|exists|exists_one|map|filter)\(", rule):
            assert "maxItems" in node, f"{kind} {path}: comprehension over an unbounded list"
        for v in node["x-kubernetes-validations"]:
            if "fieldPath" in v:
                assert v["fieldPath"].lstrip(".") in node["properties"], v


# --------------------------------------------------------------------------------------------------
# Constants


def test_constants():
    assert api.API_VERSION == "aicenter.dev/v1alpha1"
    assert api.LABEL_JOB == "aicenter.dev/job"
    assert api.LABEL_REPLICA == "aicenter.dev/replica"
    assert api.LABEL_JOB_UID == "aicenter.dev/job-uid"
    assert api.LABEL_MANAGED_BY == "aicenter.dev/managed-by"
    assert api.MANAGED_BY == "aicenter-operator"
    assert api.LABEL_CENTER == "aicenter.dev/center"
    assert api.DEFAULT_SCHEDULER_NAME == "aicenter-scheduler"
    assert api.FINALIZER == "aicenter.dev/cleanup"


def test_constants_agree_with_the_fleet_module():
    assert api.LABEL_CENTER == fleet.LABEL_CENTER
    assert api.LABEL_GPU_PRODUCT == fleet.LABEL_PRODUCT
    assert api.DEFAULT_GPU_RESOURCE == fleet.GPU_RESOURCE
    assert api.DEFAULT_TOPOLOGY_KEYS == fleet.DEFAULT_TOPOLOGY_KEYS


def test_api_package_is_pure():
    code = (
        "import sys, aicenter.api, aicenter.api.crds, aicenter_testbed.schema, aicenter_testbed.samples,"
        " aicenter_testbed.generate;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'kopf')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
