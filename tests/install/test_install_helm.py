"""The chart on the real control plane: ``helm install`` into a namespace enforcing the "restricted"
Pod Security Standard, the CRDs Established, the samples applied, the ServiceAccount allowed exactly
what ``aicenter.api.rbac`` grants (impersonation, SubjectAccessReviews and a TokenRequest token), with
``watchNamespaces`` only there, the aggregated view/edit/admin rights, then ``helm upgrade`` and
``helm uninstall``.

The operator's pod cannot run here (no kubelet pulls its image; kwok's nodes are tainted), so it stays
Pending: its existence proves the ReplicaSet's pod passed Pod Security admission.
"""

from __future__ import annotations

import copy
import json
import uuid

import pytest
from install_helpers import (
    CHART,
    ROOT,
    Release,
    access_review,
    docs,
    render,
    sa_groups,
)

from aicenter.api import rbac
from aicenter_testbed.cluster import ClusterClient
from aicenter_testbed.waiting import wait_for

pytestmark = pytest.mark.cluster

CRDS = ("aicenters.aicenter.dev", "gpuquotas.aicenter.dev", "gpujobs.aicenter.dev")
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
SAMPLES = ROOT / "manifests" / "samples"


def _get(cluster, path):
    status, body = cluster.request("GET", path)
    return body if status == 200 else None


def _exists(cluster, path) -> bool:
    return cluster.request("GET", path)[0] == 200


def _established(cluster, name) -> bool:
    crd = _get(cluster, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    conds = (crd or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Established" and c["status"] == "True" for c in conds)


RBAC = "/apis/rbac.authorization.k8s.io/v1"


def _object_paths(release) -> dict[str, str]:
    ns, name = release.namespace, release.fullname
    return {
        "ServiceAccount": f"/api/v1/namespaces/{ns}/serviceaccounts/{name}",
        "Service": f"/api/v1/namespaces/{ns}/services/{name}-metrics",
        "Deployment": f"/apis/apps/v1/namespaces/{ns}/deployments/{name}",
        "ClusterRole": f"{RBAC}/clusterroles/{name}",
        "ClusterRoleBinding": f"{RBAC}/clusterrolebindings/{name}",
        "ClusterRole workload": f"{RBAC}/clusterroles/{name}-workload",
        "ClusterRoleBinding workload": f"{RBAC}/clusterrolebindings/{name}-workload",
        "ClusterRole metrics-reader": f"{RBAC}/clusterroles/{name}-metrics-reader",
        "ClusterRole view": f"{RBAC}/clusterroles/{name}-view",
        "ClusterRole edit": f"{RBAC}/clusterroles/{name}-edit",
        "Role": f"{RBAC}/namespaces/{ns}/roles/{name}-leader-election",
        "RoleBinding": f"{RBAC}/namespaces/{ns}/rolebindings/{name}-leader-election",
    }


def _operator_pods(cluster, release) -> list[dict]:
    sel = f"app.kubernetes.io/instance={release.name}"
    body = _get(cluster, f"/api/v1/namespaces/{release.namespace}/pods?labelSelector={sel}")
    return (body or {}).get("items", [])


# --------------------------------------------------------------------------------------------------


def test_helm_install_creates_every_object_and_prints_next_steps(cluster, chart_release):
    for kind, path in _object_paths(chart_release).items():
        assert _exists(cluster, path), f"{kind} missing after helm install: {path}"
    status = json.loads(
        chart_release.helm("status", chart_release.name, "-n", chart_release.namespace, "-o", "json").stdout
    )
    assert status["info"]["status"] == "deployed"
    role = _get(cluster, _object_paths(chart_release)["ClusterRole"])
    assert role["rules"] == rbac.cluster_role_rules()
    workload = _get(cluster, _object_paths(chart_release)["ClusterRole workload"])
    assert workload["rules"] == rbac.workload_role_rules()
    dep = _get(cluster, _object_paths(chart_release)["Deployment"])
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--lease-namespace={chart_release.namespace}" in args and "--metrics-auth" in args
    for text in (
        f"kubectl -n {chart_release.namespace} rollout status deployment/{chart_release.fullname}",
        "kubectl get aicenters,gpuquotas",
        "kubectl get gpujobs --all-namespaces",
        "kubectl apply --server-side -f manifests/samples/korea-national-fleet.yaml",
        f"http://{chart_release.fullname}-metrics.{chart_release.namespace}.svc:8080/metrics",
        f"need a bearer token allowed by the ClusterRole {chart_release.fullname}-metrics-reader",
    ):
        assert text in chart_release.notes


def test_crds_become_established(cluster, chart_release):
    for name in CRDS:
        wait_for(lambda n=name: _established(cluster, n), timeout=60, what=f"CRD {name} Established")


def test_operator_pod_passes_restricted_pod_security(cluster, chart_release):
    """The namespace enforces "restricted": the ReplicaSet's pod exists (Pending: it cannot run here), and
    a Pod made from the Deployment's template is accepted by a server-side dry run, while the same pod
    without its security contexts is refused (the check is live)."""
    ns = chart_release.namespace
    labels = _get(cluster, f"/api/v1/namespaces/{ns}")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = wait_for(lambda: _operator_pods(cluster, chart_release), timeout=60, what="the operator's pod")
    assert pods[0]["spec"]["securityContext"]["runAsUser"] == 65532

    template = _get(cluster, _object_paths(chart_release)["Deployment"])["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "psa-"}, "spec": template["spec"]}
    status, body = cluster.request("POST", f"/api/v1/namespaces/{ns}/pods?dryRun=All", pod)
    assert status == 201, f"restricted namespace refused the operator's pod spec: {body}"

    loose = copy.deepcopy(pod)
    del loose["spec"]["securityContext"]
    del loose["spec"]["containers"][0]["securityContext"]
    status, body = cluster.request("POST", f"/api/v1/namespaces/{ns}/pods?dryRun=All", loose)
    assert status == 403 and "violates PodSecurity" in body["message"], (status, body)


def _can_i_list(cluster, user, namespace) -> set[tuple[str, str, str]]:
    """``kubectl auth can-i --list --as <user> -n <namespace>`` as ``(group, resource, verb)``, without the
    self-review rules every authenticated user has and without non-resource URLs."""
    out = cluster.kubectl("auth", "can-i", "--list", "--as", user, "-n", namespace).stdout
    got = set()
    for line in out.splitlines()[1:]:
        resource, _, rest = line.partition(" ")
        if not resource or resource.startswith("selfsubject"):
            continue
        verbs = rest[rest.rindex("[") + 1 : rest.rindex("]")].split()
        kind, _, group = resource.partition(".")
        if "/" in resource:  # subresources print as plural/sub or plural.group/sub
            base, sub = resource.split("/", 1)
            kind, _, group = base.partition(".")
            kind = f"{kind}/{sub}"
        got |= {(group, kind, v) for v in verbs}
    return got


def test_service_account_has_exactly_the_table_rights_by_impersonation(cluster, chart_release):
    """RBAC proof, part 1: impersonating the chart's ServiceAccount, ``kubectl auth can-i --list`` shows
    exactly the table's rules (plus the Lease rules in the Lease's namespace only), single checks agree,
    and requests outside the role are refused."""
    user, ns = chart_release.user, chart_release.namespace
    everywhere = rbac.operator_permissions() - rbac.permissions(rbac.LEASE_RULES)
    assert _can_i_list(cluster, user, ns) == rbac.operator_permissions()
    assert _can_i_list(cluster, user, "default") == everywhere

    def can_i(*args):
        proc = cluster.kubectl("auth", "can-i", *args, "--as", user, check=False)
        return proc.stdout.strip()

    assert can_i("create", "pods", "-A") == "yes"
    assert can_i("delete", "gpujobs.aicenter.dev", "-A") == "yes"
    assert can_i("patch", "gpuquotas.aicenter.dev", "--subresource=status") == "yes"
    assert can_i("update", "leases.coordination.k8s.io", "-n", ns) == "yes"
    assert can_i("create", "tokenreviews.authentication.k8s.io") == "yes"
    assert can_i("create", "pods", "--subresource=binding", "-A") == "yes"  # others' pods it schedules
    assert can_i("create", "pods", "--subresource=eviction", "-A") == "yes"
    for denied in (
        ("list", "secrets", "-A"),
        ("delete", "nodes"),
        ("get", "nodes"),
        ("get", "pods", "-A"),
        ("create", "deployments.apps", "-n", ns),
        ("update", "pods", "-A"),
        ("update", "pods", "--subresource=binding", "-A"),
        ("create", "pods", "--subresource=exec", "-A"),
        ("update", "pods", "--subresource=status", "-A"),
        ("list", "jobs.batch", "-A"),
        ("list", "services", "-A"),
        ("create", "events", "-A"),
        ("patch", "events.events.k8s.io", "-A"),
        ("create", "aicenters.aicenter.dev"),
        ("delete", "gpuquotas.aicenter.dev"),
        ("update", "gpujobs.aicenter.dev", "-A"),
        ("update", "gpujobs.aicenter.dev", "--subresource=status", "-A"),
        ("update", "leases.coordination.k8s.io", "-n", "default"),
        ("get", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ):
        assert can_i(*denied) == "no", denied

    assert "NAME" in cluster.kubectl("get", "namespaces", "--as", user).stdout
    refused = cluster.kubectl("get", "secrets", "-A", "--as", user, check=False)
    assert refused.returncode != 0 and "Forbidden" in refused.stderr


def test_service_account_access_matrix(cluster, chart_release):
    """Every verb on every resource the table names is allowed exactly when the table grants it
    (SubjectAccessReviews with the ServiceAccount's groups), and neighbouring rights are refused."""
    user, ns, groups = chart_release.user, chart_release.namespace, sa_groups(chart_release.namespace)
    lease_granted = rbac.permissions(rbac.LEASE_RULES)
    granted = rbac.operator_permissions() - lease_granted
    wrong = []

    def check(group, resource, verb, namespace, want):
        base, _, sub = resource.partition("/")
        got = access_review(
            cluster, user, verb, base, group=group, subresource=sub, namespace=namespace, groups=groups
        )
        if got != want:
            wrong.append(f"{verb} {resource}.{group or 'core'} in {namespace or '*'}: {got}, want {want}")

    resources = {(g, r) for g, r, _ in granted}
    for group, resource in sorted(resources):
        for verb in VERBS:
            check(group, resource, verb, "", (group, resource, verb) in granted)
    for group, resource, _ in sorted(lease_granted):
        for verb in VERBS:
            check(group, resource, verb, ns, (group, resource, verb) in lease_granted)
            check(group, resource, verb, "default", False)
            check(group, resource, verb, "", False)
    for group, resource in [
        ("", "secrets"),
        ("", "configmaps"),
        ("", "events"),
        ("", "endpoints"),
        ("", "serviceaccounts/token"),
        ("", "pods/exec"),
        ("", "pods/log"),
        ("", "nodes/status"),
        ("", "persistentvolumeclaims"),
        ("apps", "deployments"),
        ("batch", "cronjobs"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("authorization.k8s.io", "localsubjectaccessreviews"),
    ]:
        for verb in VERBS:
            check(group, resource, verb, "", False)
    for verb in ("get", "create", "update", "patch", "delete"):
        check("apiextensions.k8s.io", "customresourcedefinitions", verb, "", False)
    assert not wrong, "\n".join(wrong)


def test_watch_namespaces_grant_the_workload_rights_there_only(cluster, helm_home):
    """A release with ``watchNamespaces``: its ServiceAccount may write pods, Services, Events and GPUJobs
    in the watched namespaces only (RoleBindings), and still lists every pod, node and namespace (the
    ledger) and the AICenters and GPUQuotas; without leader election it has no Lease rights at all."""
    suffix = uuid.uuid4().hex[:6]
    ns = cluster.create_namespace(f"aic-ns-{suffix}")
    watched = [cluster.create_namespace(f"t-w{i}-{suffix}") for i in range(2)]
    other = cluster.create_namespace(f"t-other-{suffix}")
    rel = Release(
        name=f"aicns-{suffix}",
        namespace=ns,
        home=helm_home,
        kubeconfig=cluster.kubeconfig,
        values={"watchNamespaces": "{" + ",".join(watched) + "}", "leaderElection.enabled": "false"},
    )
    rel.install()
    try:
        user, groups = rel.user, sa_groups(ns)
        workload = rbac.permissions(rbac.WORKLOAD_RULES)
        cluster_wide = rbac.operator_permissions() - workload - rbac.permissions(rbac.LEASE_RULES)
        wrong = []

        def check(group, resource, verb, namespace, want):
            base, _, sub = resource.partition("/")
            got = access_review(
                cluster, user, verb, base, group=group, subresource=sub, namespace=namespace, groups=groups
            )
            if got != want:
                wrong.append(f"{verb} {resource}.{group or 'core'} in {namespace or '*'}: {got}, want {want}")

        for group, resource, verb in sorted(workload):
            for w in watched:
                check(group, resource, verb, w, True)
            check(group, resource, verb, other, False)
            check(group, resource, verb, "", (group, resource, verb) in cluster_wide)  # pods list/watch
        for group, resource, verb in sorted(cluster_wide):
            check(group, resource, verb, "", True)
        for group, resource, verb in sorted(rbac.permissions(rbac.LEASE_RULES)):
            check(group, resource, verb, ns, False)
        assert not wrong, "\n".join(wrong)
        assert _can_i_list(cluster, user, watched[0]) == rbac.operator_permissions() - rbac.permissions(
            rbac.LEASE_RULES
        )
        assert _can_i_list(cluster, user, other) == cluster_wide
    finally:
        rel.uninstall(check=False)
        for n in (ns, *watched, other):
            cluster.delete_namespace(n)


def _bind(cluster, kind: str, name: str, role: str, user: str, namespace: str = "") -> str:
    path = f"{RBAC}/namespaces/{namespace}/rolebindings" if namespace else f"{RBAC}/clusterrolebindings"
    body = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    status, doc = cluster.request("POST", path, body)
    assert status == 201, doc
    return f"{path}/{name}"


def test_aggregated_roles_let_view_edit_and_admin_use_gpujobs(cluster, chart_release):
    """The chart's aggregated ClusterRoles reach the built-in roles (the clusterrole-aggregation
    controller copies their rules): a namespace's ``edit`` and ``admin`` may create and delete GPUJobs
    there and only there, ``view`` may read them but not create them; ``view`` bound cluster-wide reads
    AICenters and GPUQuotas. Nobody but the operator may write their status."""
    suffix = uuid.uuid4().hex[:6]
    ns, other = (cluster.create_namespace(f"t-agg{i}-{suffix}") for i in range(2))
    users = {role: f"{role}-{suffix}@example.com" for role in ("view", "edit", "admin")}
    made = [_bind(cluster, "RoleBinding", f"t-{r}", r, u, ns) for r, u in users.items()]
    made.append(
        _bind(cluster, "ClusterRoleBinding", f"t-view-{suffix}", "view", f"reader-{suffix}@example.com")
    )
    try:

        def can(user, verb, resource, namespace="", subresource=""):
            groups = ("system:authenticated",)
            return access_review(
                cluster,
                user,
                verb,
                resource,
                group="aicenter.dev",
                subresource=subresource,
                namespace=namespace,
                groups=groups,
            )

        wait_for(
            lambda: can(users["edit"], "create", "gpujobs", ns) and can(users["view"], "list", "gpujobs", ns),
            timeout=60,
            what="the aggregated rules in the built-in edit and view roles",
        )
        for role in ("edit", "admin"):
            for verb in ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"):
                assert can(users[role], verb, "gpujobs", ns), (role, verb)
            assert can(users[role], "get", "gpujobs", ns, "status")
            assert not can(users[role], "patch", "gpujobs", ns, "status"), role
            assert not can(users[role], "create", "gpujobs", other), role
        for verb in ("get", "list", "watch"):
            assert can(users["view"], verb, "gpujobs", ns)
            assert can(users["view"], verb, "gpujobs", ns, "status")
        for verb in ("create", "update", "patch", "delete"):
            assert not can(users["view"], verb, "gpujobs", ns), verb
        assert not can(users["view"], "list", "gpujobs", other)
        reader = f"reader-{suffix}@example.com"
        for plural in ("aicenters", "gpuquotas", "gpujobs"):
            assert can(reader, "list", plural) and can(reader, "get", plural, subresource="status")
            assert not can(reader, "patch", plural, subresource="status")
        assert not can(users["admin"], "create", "aicenters") and not can(users["admin"], "list", "aicenters")
    finally:
        for path in made:
            cluster.request("DELETE", path)
        for n in (ns, other):
            cluster.delete_namespace(n)


def test_service_account_kubeconfig_authenticates_as_the_service_account(
    cluster, chart_release, operator_sa_kubeconfig
):
    """The helper for the RBAC proof, part 2: a TokenRequest token in a kubeconfig acts as the SA."""
    sa = ClusterClient(operator_sa_kubeconfig)
    try:
        status, review = sa.request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        assert status == 201 and review["status"]["userInfo"]["username"] == chart_release.user
        assert sa.request("GET", "/api/v1/nodes")[0] == 200
        assert sa.request("GET", "/apis/aicenter.dev/v1alpha1/gpujobs")[0] == 200
        assert sa.request("GET", "/api/v1/secrets")[0] == 403
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": chart_release.lease_name},
            "spec": {"holderIdentity": "install-test", "leaseDurationSeconds": 15},
        }
        ns = chart_release.namespace
        assert sa.request("POST", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases", lease)[0] == 201
        assert sa.request("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases", lease)[0] == 403
        sa.kubectl("get", "pods", "--all-namespaces")  # kubectl works with the kubeconfig too
        refused = sa.kubectl("get", "configmaps", "--all-namespaces", check=False)
        assert refused.returncode != 0 and "Forbidden" in refused.stderr
    finally:
        sa.close()


def _sample_groups() -> list[tuple[str, list[dict]]]:
    """The sample files in the order they apply: tenant namespaces, the fleet, the example jobs."""
    jobs = [d for p in sorted((SAMPLES / "jobs").glob("*.yaml")) for d in docs(p.read_text())]
    return [
        ("namespaces.yaml", docs((SAMPLES / "namespaces.yaml").read_text())),
        ("korea-national-fleet.yaml", docs((SAMPLES / "korea-national-fleet.yaml").read_text())),
        ("jobs", jobs),
    ]


def _path(doc: dict) -> str:
    kind, name = doc["kind"], doc["metadata"]["name"]
    if kind == "Namespace":
        return f"/api/v1/namespaces/{name}"
    plural = {"AICenter": "aicenters", "GPUQuota": "gpuquotas", "GPUJob": "gpujobs"}[kind]
    ns = doc["metadata"].get("namespace")
    return f"/apis/{doc['apiVersion']}/" + (f"namespaces/{ns}/" if ns else "") + f"{plural}/{name}"


def test_samples_apply_after_the_crds_are_established(cluster, chart_release):
    """``manifests/samples`` (tenant namespaces, the national fleet, the example GPUJobs) apply once the
    CRDs are Established, and ``kubectl get aicenters,gpuquotas,gpujobs`` lists them; then they are
    deleted again. A file whose objects another test of this session already created (the e2e tests
    make fleet centres of the same names) is applied as a server-side dry run instead, which runs the
    same validation (schema, CEL, admission) and leaves that test's objects alone."""
    for name in CRDS:
        wait_for(lambda n=name: _established(cluster, n), timeout=60, what=f"CRD {name} Established")
    created: list[tuple[str, list[dict]]] = []
    try:
        for f, objs in _sample_groups():
            if any(_exists(cluster, _path(d)) for d in objs):
                cluster.kubectl(
                    "apply", "--server-side", "--dry-run=server", "--force-conflicts", "-f", str(SAMPLES / f)
                )
                continue
            cluster.kubectl("apply", "--server-side", "-f", str(SAMPLES / f))
            created.append((f, objs))
        listed = json.loads(cluster.kubectl("get", "aicenters,gpuquotas,gpujobs", "-A", "-o", "json").stdout)
        got = {(o["kind"], o["metadata"]["name"]) for o in listed["items"]}
        want = {(d["kind"], d["metadata"]["name"]) for _, objs in created for d in objs}
        assert {w for w in want if w[0] != "Namespace"} <= got
        assert any(f == "jobs" for f, _ in created), "the example GPUJobs were not created"
    finally:
        for f, _ in reversed(created):
            cluster.kubectl(
                "delete", "--ignore-not-found", "--wait=false", "-f", str(SAMPLES / f), check=False
            )
        mine = [_path(d) for _, objs in created for d in objs]
        wait_for(
            lambda: not any(_exists(cluster, p) for p in mine),
            timeout=180,
            what="the sample objects and namespaces to be deleted",
        )


def test_chart_samples_pass_server_side_validation(cluster, chart_release, helm_home):
    """``samples.enabled=true`` renders AICenters and GPUQuotas the real CRDs (schema and CEL) accept."""
    rendered = render(helm_home, {"samples.enabled": "true"}, namespace=chart_release.namespace).stdout
    objs = [d for d in docs(rendered) if d["kind"] in ("AICenter", "GPUQuota", "Namespace")]
    assert len([d for d in objs if d["kind"] == "AICenter"]) == 5
    stream = "".join(f"---\n{json.dumps(d)}\n" for d in objs)
    cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--force-conflicts", "-f", "-", input=stream
    )


def test_helm_upgrade_then_uninstall(cluster, chart_release):
    """``helm upgrade`` to two replicas adds the PodDisruptionBudget; ``helm uninstall`` removes every
    object of the release and leaves the CRDs (Helm never deletes crds/)."""
    rel, ns = chart_release, chart_release.namespace
    rel.helm("upgrade", rel.name, str(CHART), "-n", ns, "--reuse-values", "--set", "replicas=2")
    assert _get(cluster, _object_paths(rel)["Deployment"])["spec"]["strategy"]["type"] == "RollingUpdate"
    pdb = f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{rel.fullname}"
    assert _get(cluster, pdb)["spec"]["minAvailable"] == 1
    assert _get(cluster, _object_paths(rel)["Deployment"])["spec"]["replicas"] == 2

    rel.uninstall()
    paths = [*_object_paths(rel).values(), pdb]
    wait_for(
        lambda: not [p for p in paths if _exists(cluster, p)], timeout=60, what="the release's objects to go"
    )
    assert rel.helm("list", "-n", ns, "-q").stdout.strip() == ""
    for name in CRDS:
        assert _established(cluster, name), f"CRD {name} was removed by helm uninstall"
