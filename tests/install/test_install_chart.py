"""The Helm chart, the install manifest and the Dockerfile, without a cluster: lint, render, schema,
RBAC generated from one table without wildcards (namespaced with watchNamespaces, aggregated roles, the
metrics reader), a restricted pod spec, one scheduler through every rollout, metrics behind a token,
generated files up to date."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from install_helpers import CHART, INSTALL_MANIFEST, ROOT, docs, helm, objects, render

from aicenter import api
from aicenter.api import rbac
from aicenter_testbed.fleet import load_fleet, scale_fleet
from aicenter_testbed.generate import crd_files
from aicenter_testbed.samples import fleet_manifests


@pytest.fixture(scope="module")
def default_render(helm_home) -> dict:
    return objects(render(helm_home).stdout)


def _deployment(rendered: dict) -> dict:
    return next(o for (kind, _), o in rendered.items() if kind == "Deployment")


def _container(rendered: dict) -> dict:
    (container,) = _deployment(rendered)["spec"]["template"]["spec"]["containers"]
    return container


# --------------------------------------------------------------------------------------------------
# lint, render, generated files


def test_helm_lint_passes_strict(helm_home):
    out = helm("lint", str(CHART), "--strict", home=helm_home).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == "0.1.0" and chart["appVersion"] == "0.1.0"
    assert chart["kubeVersion"] == ">=1.29.0-0"


def test_default_render_has_every_object(default_render):
    assert sorted(default_render) == [
        ("ClusterRole", "aicenter-operator"),
        ("ClusterRole", "aicenter-operator-edit"),
        ("ClusterRole", "aicenter-operator-metrics-reader"),
        ("ClusterRole", "aicenter-operator-view"),
        ("ClusterRole", "aicenter-operator-workload"),
        ("ClusterRoleBinding", "aicenter-operator"),
        ("ClusterRoleBinding", "aicenter-operator-workload"),
        ("Deployment", "aicenter-operator"),
        ("Role", "aicenter-operator-leader-election"),
        ("RoleBinding", "aicenter-operator-leader-election"),
        ("Service", "aicenter-operator-metrics"),
        ("ServiceAccount", "aicenter-operator"),
    ]
    for (kind, name), obj in default_render.items():
        assert name.startswith("aicenter-operator"), (kind, name)
        if kind not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "aicenter-system", (kind, name)


def test_install_manifest_and_rbac_templates_are_up_to_date():
    """``hack/render_install.py --check``: the RBAC templates, the values' samples block and the install
    manifest match what the pinned helm renders from the chart and the tables."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "render_install.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, f"run python hack/render_install.py\n{proc.stdout[-6000:]}{proc.stderr}"


def test_chart_crds_are_the_generated_crds_once_each(helm_home):
    """crds/ holds the generated files; Helm reads each CRD once (.helmignore leaves all.yaml out)."""
    for name, text in crd_files().items():
        assert (CHART / "crds" / name).read_text() == text, (
            f"run python -m aicenter_testbed.generate ({name})"
        )
    crds = [
        d
        for d in docs(render(helm_home, include_crds=True).stdout)
        if d["kind"] == "CustomResourceDefinition"
    ]
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "aicenters.aicenter.dev",
        "gpujobs.aicenter.dev",
        "gpuquotas.aicenter.dev",
    ]


def test_install_manifest_is_namespace_crds_and_default_render(default_render):
    """One file for ``kubectl apply --server-side``: the Namespace first (restricted Pod Security), the
    three CRDs, then the chart's objects with its default values."""
    items = docs(INSTALL_MANIFEST.read_text())
    assert items[0]["kind"] == "Namespace" and items[0]["metadata"]["name"] == "aicenter-system"
    assert items[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert [d["kind"] for d in items[1:4]] == ["CustomResourceDefinition"] * 3
    assert {(d["kind"], d["metadata"]["name"]): d for d in items[4:]} == default_render


# --------------------------------------------------------------------------------------------------
# values.schema.json


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("replicas=0", "at '/replicas': minimum: got 0, want 1"),
        ("logLevel=loud", "at '/logLevel': value must be one of 'debug', 'info', 'warning', 'error'"),
        ("typo=1", "additional properties 'typo' not allowed"),
        ("logFormat=xml", "at '/logFormat': value must be one of 'json', 'text'"),
        ("metrics.port=0", "at '/metrics/port': minimum: got 0, want 1"),
        ("metrics.port=65536", "at '/metrics/port': maximum"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("watchNamespaces[0]=Not_A_Namespace", "at '/watchNamespaces/0'"),
        ("leaderElection.enable=false", "additional properties 'enable' not allowed"),
        ("metrics.auth=yes", "at '/metrics/auth': got string, want boolean"),
        ("metrics.readers[0].kind=Robot", "at '/metrics/readers/0/kind'"),
        ("rbac.aggregate=false", "additional properties 'aggregate' not allowed"),
        ("networkPolicy.enable=true", "additional properties 'enable' not allowed"),
    ],
)
def test_schema_rejects_bad_values_clearly(helm_home, setting, message):
    proc = render(helm_home, dict([setting.split("=", 1)]), check=False)
    assert proc.returncode != 0, f"--set {setting} was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


def test_schema_is_draft7_and_closed_at_the_top():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"]), "values.yaml keys missing from the schema"
    assert set(schema["properties"]) == set(values), "schema properties without a default in values.yaml"


# --------------------------------------------------------------------------------------------------
# RBAC: one table, no wildcards


def _all_rendered_rbac(helm_home) -> list[dict]:
    return [
        d
        for d in docs(render(helm_home).stdout)
        if d["kind"] in ("ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding")
    ]


def test_cluster_role_is_the_rbac_table_without_wildcards(default_render, helm_home):
    role = default_render[("ClusterRole", "aicenter-operator")]
    assert role["rules"] == rbac.cluster_role_rules(metrics_auth=True)
    workload = default_render[("ClusterRole", "aicenter-operator-workload")]
    assert workload["rules"] == rbac.workload_role_rules()
    lease_role = default_render[("Role", "aicenter-operator-leader-election")]
    assert lease_role["metadata"]["namespace"] == "aicenter-system"
    assert lease_role["rules"] == rbac.lease_role_rules()
    reader = default_render[("ClusterRole", "aicenter-operator-metrics-reader")]
    assert reader["rules"] == [r.policy_rule() for r in rbac.METRICS_READER_RULES]
    for obj in _all_rendered_rbac(helm_home):
        for rule in obj.get("rules", []):  # the one wildcard: a path prefix of the visibility API
            urls = [u for u in rule.get("nonResourceURLs", []) if u != "/visibility/v1/*"]
            assert "*" not in json.dumps({**rule, "nonResourceURLs": urls}), (obj["metadata"]["name"], rule)
    tables = (
        rbac.CLUSTER_RULES,
        rbac.METRICS_AUTH_RULES,
        rbac.WORKLOAD_RULES,
        rbac.LEASE_RULES,
        rbac.VIEW_RULES,
        rbac.EDIT_RULES,
    )
    for r in (rule for table in tables for rule in table):
        assert "*" not in (r.api_group, *r.resources, *r.verbs)
        assert len(set(r.verbs)) == len(r.verbs) and r.why
    granted = rbac.operator_permissions()
    assert len(granted) == sum(len(r.resources) * len(r.verbs) for t in tables[:4] for r in t), "overlap"


def test_operator_rights_are_least_privilege():
    """What the operator no longer needs stays out: it creates its own pods with spec.nodeName (the
    Binding is only for others' pods it schedules), never reads single pods, nodes or CRs, nor the CRDs
    (kopf's scanning is off), writes Events through events.k8s.io only, and changes no CR but GPUJobs
    (deleted after their TTL) and the status subresources (merge patches)."""
    granted = rbac.operator_permissions()
    for right in (
        [
            ("", "pods", "get"),
            ("", "pods", "update"),
            ("", "pods", "patch"),
            ("", "nodes", "get"),
            ("", "namespaces", "get"),
            ("", "services", "get"),
            ("", "services", "list"),
            ("", "services", "watch"),
            ("", "services", "delete"),
            ("", "events", "create"),
            ("", "events", "patch"),
            ("events.k8s.io", "events", "patch"),
            ("apiextensions.k8s.io", "customresourcedefinitions", "get"),
            ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
            ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
            ("coordination.k8s.io", "leases", "list"),
            ("coordination.k8s.io", "leases", "watch"),
        ]
        + [
            (api.GROUP, res, verb)
            for res in ("aicenters", "gpuquotas", "gpujobs")
            for verb in ("get", "create", "update", "patch")
        ]
        + [
            (api.GROUP, f"{res}/status", verb)
            for res in ("aicenters", "gpuquotas", "gpujobs")
            for verb in ("get", "update")
        ]
        + [(api.GROUP, "aicenters", "delete"), (api.GROUP, "gpuquotas", "delete")]
    ):
        assert right not in granted, right
    assert rbac.permissions(rbac.LEASE_RULES) == {
        ("coordination.k8s.io", "leases", v) for v in ("get", "create", "update", "patch")
    }


def _bindings(rendered: dict) -> dict[tuple[str, str], dict]:
    return {k: o for k, o in rendered.items() if k[0] in ("ClusterRoleBinding", "RoleBinding")}


def test_role_bindings_name_the_chart_service_account(default_render):
    sa = [{"kind": "ServiceAccount", "name": "aicenter-operator", "namespace": "aicenter-system"}]
    bindings = _bindings(default_render)
    assert sorted(bindings) == [
        ("ClusterRoleBinding", "aicenter-operator"),
        ("ClusterRoleBinding", "aicenter-operator-workload"),
        ("RoleBinding", "aicenter-operator-leader-election"),
    ]
    for (kind, name), binding in bindings.items():
        assert binding["subjects"] == sa, (kind, name)
        role = binding["roleRef"]
        assert (role["kind"], role["name"]) in default_render, (kind, name)
        assert role["name"] == name


def test_watch_namespaces_bind_the_workload_rights_in_those_namespaces_only(helm_home):
    """With watchNamespaces the workload ClusterRole (pods, Services, Events, GPUJobs) is bound by a
    RoleBinding in each watched namespace instead of a ClusterRoleBinding; the cluster-wide reads (every
    pod for the ledger, nodes, namespaces, AICenters, GPUQuotas) keep their ClusterRoleBinding."""
    text = render(helm_home, {"watchNamespaces": "{team-a,team-b}"}).stdout
    out = objects(text)
    bindings = _bindings(out)
    assert ("ClusterRoleBinding", "aicenter-operator-workload") not in bindings
    assert ("ClusterRoleBinding", "aicenter-operator") in bindings
    per_ns = [d for d in docs(text) if d["kind"] == "RoleBinding" and "workload" in d["metadata"]["name"]]
    assert sorted(o["metadata"]["namespace"] for o in per_ns) == ["team-a", "team-b"]
    for o in per_ns:
        assert o["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "aicenter-operator-workload",
        }
        assert o["subjects"] == [
            {"kind": "ServiceAccount", "name": "aicenter-operator", "namespace": "aicenter-system"}
        ]
    assert out[("ClusterRole", "aicenter-operator")]["rules"] == rbac.cluster_role_rules()
    # the ledger reads every pod, in all namespaces; only writing pods is namespaced
    assert {("", "pods", "list"), ("", "pods", "watch")} <= rbac.permissions(rbac.CLUSTER_RULES)
    workload = {(g, r) for g, r, _ in rbac.permissions(rbac.WORKLOAD_RULES)}
    assert workload & {(g, r) for g, r, _ in rbac.permissions(rbac.CLUSTER_RULES)} == {("", "pods")}
    assert (api.GROUP, "gpujobs") in workload and ("", "services") in workload


def test_aggregated_roles_extend_view_edit_and_admin(default_render, helm_home):
    view = default_render[("ClusterRole", "aicenter-operator-view")]
    edit = default_render[("ClusterRole", "aicenter-operator-edit")]

    def aggregates(role):
        prefix = "rbac.authorization.k8s.io/aggregate-to-"
        return {
            k.removeprefix(prefix)
            for k, v in role["metadata"]["labels"].items()
            if k.startswith(prefix) and v == "true"
        }

    assert aggregates(view) == {"view", "edit", "admin"}
    assert aggregates(edit) == {"edit", "admin"}
    assert view["rules"] == [r.policy_rule() for r in rbac.VIEW_RULES]
    assert edit["rules"] == [r.policy_rule() for r in rbac.EDIT_RULES]
    assert rbac.permissions(rbac.VIEW_RULES) == {
        (api.GROUP, res, v)
        for p in ("aicenters", "gpuquotas", "gpujobs")
        for res in (p, f"{p}/status")
        for v in ("get", "list", "watch")
    }
    assert rbac.permissions(rbac.EDIT_RULES) == {
        (api.GROUP, "gpujobs", v) for v in ("create", "update", "patch", "delete", "deletecollection")
    }
    off = objects(render(helm_home, {"rbac.aggregateToDefaultRoles": "false"}).stdout)
    assert not {("ClusterRole", "aicenter-operator-view"), ("ClusterRole", "aicenter-operator-edit")} & set(
        off
    )


def test_lease_role_follows_the_lease_namespace_and_leader_election(helm_home):
    moved = objects(render(helm_home, {"leaderElection.namespace": "kube-system"}).stdout)
    role = moved[("Role", "aicenter-operator-leader-election")]
    assert role["metadata"]["namespace"] == "kube-system"
    assert "--lease-namespace=kube-system" in _container(moved)["args"]
    off = objects(render(helm_home, {"leaderElection.enabled": "false"}).stdout)
    assert not any(kind == "Role" for kind, _ in off)
    assert "--no-leader-election" in _container(off)["args"]
    none = objects(render(helm_home, {"rbac.create": "false"}).stdout)
    assert not any("Role" in kind for kind, _ in none)


@pytest.mark.parametrize("strategy", [None, "RollingUpdate"])
def test_rollout_never_runs_two_schedulers(helm_home, strategy):
    """Without leader election a rollout must not overlap the old pod and the new one (two schedulers
    placing GPUs at once): the Deployment is Recreate whatever updateStrategy says, and more than one
    replica is refused. With leader election a rolling update is safe (the new pod stands by)."""
    values = {"leaderElection.enabled": "false"}
    if strategy:
        values |= {"updateStrategy.type": strategy, "updateStrategy.rollingUpdate.maxSurge": "1"}
    off = _deployment(objects(render(helm_home, values).stdout))
    assert off["spec"]["strategy"] == {"type": "Recreate"}
    assert off["spec"]["replicas"] == 1
    proc = render(helm_home, {**values, "replicas": "2"}, check=False)
    assert proc.returncode != 0
    assert "replicas > 1 needs leaderElection.enabled=true" in proc.stderr
    on = _deployment(objects(render(helm_home, {"replicas": "2"}).stdout))
    assert on["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert "--leader-election" in on["spec"]["template"]["spec"]["containers"][0]["args"]


# --------------------------------------------------------------------------------------------------
# The Deployment


def test_deployment_pod_is_restricted_and_probed(default_render):
    dep = _deployment(default_render)
    pod = dep["spec"]["template"]["spec"]
    c = _container(default_render)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in c[
        "env"
    ]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert pod["serviceAccountName"] == "aicenter-operator"
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"  # with leader election (the default)


def test_default_args(default_render):
    assert _container(default_render)["args"] == [
        "--scheduler-name=aicenter-scheduler",
        "--metrics-port=8080",
        "--log-level=info",
        "--log-format=json",
        "--node-selector=nvidia.com/gpu.present=true",
        "--metrics-auth",
        "--leader-election",
        "--lease-namespace=aicenter-system",
        "--lease-name=aicenter-operator",
    ]
    assert _container(default_render)["image"] == "aicenter-operator:0.1.0"


def test_values_reach_args_and_pod(helm_home):
    out = objects(
        render(
            helm_home,
            {
                "replicas": "3",
                "logLevel": "debug",
                "logFormat": "text",
                "schedulerName": "gpu-sched",
                "watchNamespaces": "{team-a,team-b}",
                "nodeSelectorForGPUNodes": "gpu=yes",
                "metrics.port": "9090",
                "image.repository": "example/aicenter-operator",
                "image.tag": "v9",
                "nodeSelector.role": "infra",
                "tolerations[0].key": "infra",
                "tolerations[0].operator": "Exists",
                "extraArgs[0]": "--cycle-interval=2",
            },
        ).stdout
    )
    dep = _deployment(out)
    c = _container(out)
    assert dep["spec"]["replicas"] == 3
    assert c["image"] == "example/aicenter-operator:v9"
    for arg in (
        "--log-level=debug",
        "--log-format=text",
        "--scheduler-name=gpu-sched",
        "--namespace=team-a",
        "--namespace=team-b",
        "--node-selector=gpu=yes",
        "--metrics-port=9090",
        "--cycle-interval=2",
    ):
        assert arg in c["args"]
    assert c["ports"][0]["containerPort"] == 9090
    assert out[("Service", "aicenter-operator-metrics")]["spec"]["ports"][0]["port"] == 9090
    assert dep["spec"]["template"]["spec"]["nodeSelector"] == {"role": "infra"}
    assert dep["spec"]["template"]["spec"]["tolerations"] == [{"key": "infra", "operator": "Exists"}]
    pdb = out[("PodDisruptionBudget", "aicenter-operator")]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


def test_pdb_only_with_more_than_one_replica_and_service_monitor_only_when_enabled(default_render, helm_home):
    assert not any(kind in ("PodDisruptionBudget", "ServiceMonitor") for kind, _ in default_render)
    out = objects(render(helm_home, {"metrics.serviceMonitor.enabled": "true"}).stdout)
    sm = out[("ServiceMonitor", "aicenter-operator")]
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    service = out[("Service", "aicenter-operator-metrics")]
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_metrics_need_an_authorised_token_by_default(default_render, helm_home):
    """``metrics.auth`` (on by default) passes --metrics-auth, grants the operator TokenReviews and
    SubjectAccessReviews, ships the metrics-reader ClusterRole (bound to ``metrics.readers``) and has the
    ServiceMonitor send Prometheus' token; off, none of that."""
    assert "--metrics-auth" in _container(default_render)["args"]
    assert not any(kind == "ClusterRoleBinding" and "metrics" in name for kind, name in default_render)
    readers = objects(
        render(
            helm_home,
            {
                "metrics.serviceMonitor.enabled": "true",
                "metrics.readers[0].kind": "ServiceAccount",
                "metrics.readers[0].name": "prometheus-k8s",
                "metrics.readers[0].namespace": "monitoring",
            },
        ).stdout
    )
    binding = readers[("ClusterRoleBinding", "aicenter-operator-metrics-reader")]
    assert binding["roleRef"]["name"] == "aicenter-operator-metrics-reader"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}
    ]
    endpoint = readers[("ServiceMonitor", "aicenter-operator")]["spec"]["endpoints"][0]
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"

    off = objects(
        render(helm_home, {"metrics.auth": "false", "metrics.serviceMonitor.enabled": "true"}).stdout
    )
    assert "--no-metrics-auth" in _container(off)["args"]
    assert off[("ClusterRole", "aicenter-operator")]["rules"] == rbac.cluster_role_rules(metrics_auth=False)
    assert not any("metrics-reader" in name for _, name in off)
    assert "bearerTokenFile" not in off[("ServiceMonitor", "aicenter-operator")]["spec"]["endpoints"][0]


MONITORING = r"kubernetes\.io/metadata\.name"  # a --set key with dots in it


def test_network_policy_only_when_enabled_and_only_the_metrics_port(default_render, helm_home):
    assert not any(kind == "NetworkPolicy" for kind, _ in default_render)
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    out = objects(
        render(
            helm_home,
            {
                "networkPolicy.enabled": "true",
                "metrics.port": "9090",
                "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels." + MONITORING: "monitoring",
            },
        ).stdout
    )
    np = out[("NetworkPolicy", "aicenter-operator")]["spec"]
    assert np["podSelector"]["matchLabels"] == _deployment(out)["spec"]["selector"]["matchLabels"]
    assert np["policyTypes"] == ["Ingress"]
    assert np["ingress"] == [{"ports": [{"port": 9090, "protocol": "TCP"}], "from": [peer]}]
    anyone = objects(render(helm_home, {"networkPolicy.enabled": "true"}).stdout)
    assert anyone[("NetworkPolicy", "aicenter-operator")]["spec"]["ingress"] == [
        {"ports": [{"port": 8080, "protocol": "TCP"}]}
    ]


def test_existing_service_account_must_be_named(helm_home):
    proc = render(helm_home, {"serviceAccount.create": "false"}, check=False)
    assert proc.returncode != 0
    assert "serviceAccount.name is required when serviceAccount.create is false" in proc.stderr
    out = objects(render(helm_home, {"serviceAccount.create": "false", "serviceAccount.name": "ops"}).stdout)
    assert not any(kind == "ServiceAccount" for kind, _ in out)
    assert _deployment(out)["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


# --------------------------------------------------------------------------------------------------
# Samples


def test_samples_are_the_scaled_national_fleet(helm_home):
    """``samples.enabled=true`` renders the AICenters, GPUQuotas and namespaces that
    ``fleet_manifests`` makes of the korea-national-fleet preset at scale 0.001 (plus chart labels)."""
    rendered = [
        d
        for d in docs(render(helm_home, {"samples.enabled": "true"}).stdout)
        if d["kind"] in ("AICenter", "GPUQuota", "Namespace")
    ]
    for d in rendered:  # the chart's own labels, then compare the rest
        labels = d["metadata"]["labels"]
        assert labels.pop("app.kubernetes.io/instance") == "aicenter-operator"
        for key in [k for k in labels if k.startswith(("app.kubernetes.io/", "helm.sh/"))]:
            del labels[key]
        if not labels:
            del d["metadata"]["labels"]
    expected = fleet_manifests(scale_fleet(load_fleet(), 0.001), namespaces=True)

    def key(d):
        return (d["kind"], d["metadata"]["name"])

    assert sorted(rendered, key=key) == sorted(expected, key=key)
    no_ns = docs(render(helm_home, {"samples.enabled": "true", "samples.createNamespaces": "false"}).stdout)
    assert not any(d["kind"] == "Namespace" for d in no_ns)


# --------------------------------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_is_multistage_non_root_with_the_run_entrypoint():
    text = (ROOT / "Dockerfile").read_text()
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(froms) == 2 and "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert "pip wheel --wheel-dir /wheels ." in text
    assert "--no-index --find-links=/wheels aicenter-operator" in text
    assert "USER 65532:65532" in text
    assert text.rstrip().splitlines()[-1] == 'ENTRYPOINT ["aicenter-operator", "run"]'
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[1] == "*" and "!operator/" in ignore and "!pyproject.toml" in ignore
