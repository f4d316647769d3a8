"""Helpers for the install tests: the pinned helm, rendering the chart, installing it into the test
bed, and acting as the chart's ServiceAccount.

For the RBAC proof (part 2: the operator's scenario run under the ServiceAccount's identity), with
the fixtures of ``tests/install/conftest.py``::

    def test_operator_under_its_service_account(cluster, chart_release, operator_sa_kubeconfig):
        # operator_sa_kubeconfig: a kubeconfig whose user is a TokenRequest token of the chart's
        # ServiceAccount (system:serviceaccount:<chart_release.namespace>:<chart_release.service_account>)
        run `aicenter-operator run --kubeconfig {operator_sa_kubeconfig}
             --lease-namespace {chart_release.namespace} --lease-name {chart_release.lease_name}`

or, without the fixtures, ``write_sa_kubeconfig(cluster, namespace, service_account, path)`` for any
ServiceAccount, and ``sa_client(...)`` for a :class:`ClusterClient` on it. ``audit_entries(log, user)``
reads what a user did from the audit log of ``LocalCluster(audit=True)``.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aicenter_testbed.cluster import ClusterClient
from aicenter_testbed.tools import HELM, KUBERNETES_VERSION, ensure_tools

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "aicenter-operator"
INSTALL_MANIFEST = ROOT / "manifests" / "install" / "aicenter-operator.yaml"
INSTALL_NAMESPACE = "aicenter-system"
CHART_NAME = "aicenter-operator"


def helm_path() -> Path:
    """The pinned helm binary (built into the test-bed cache when absent)."""
    if HELM.missing():
        ensure_tools()
    return HELM.path("helm")


def helm_env(home: Path) -> dict[str, str]:
    """Environment for helm with its cache, config and data under ``home`` (nothing in ~)."""
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def helm(
    *args: str, home: Path, check: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm; ``check`` raises with its output when it fails."""
    proc = subprocess.run(
        [str(helm_path()), *args], capture_output=True, text=True, env=helm_env(home), timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def set_args(values: dict[str, str] | None) -> list[str]:
    return [a for k, v in (values or {}).items() for a in ("--set", f"{k}={v}")]


def render(
    home: Path,
    values: dict[str, str] | None = None,
    *,
    release: str = CHART_NAME,
    namespace: str = INSTALL_NAMESPACE,
    include_crds: bool = False,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart (for the pinned Kubernetes version)."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBERNETES_VERSION]
    if include_crds:
        args.append("--include-crds")
    return helm(*args, *set_args(values), home=home, check=check)


def docs(text: str) -> list[dict[str, Any]]:
    """The objects of a multi-document YAML stream (empty documents dropped)."""
    return [d for d in yaml.safe_load_all(text) if d]


def objects(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``(kind, name) -> object`` of a multi-document YAML stream."""
    return {(d["kind"], d["metadata"]["name"]): d for d in docs(text)}


def fullname(release: str) -> str:
    """The chart's full name for a release (see ``_helpers.tpl``)."""
    return release if CHART_NAME in release else f"{release}-{CHART_NAME}"[:63].rstrip("-")


# --------------------------------------------------------------------------------------------------
# A release installed into the test bed


@dataclass
class Release:
    """A helm release of the chart in the test bed."""

    name: str
    namespace: str
    home: Path  # helm's cache/config/data
    kubeconfig: Path
    values: dict[str, str] = field(default_factory=dict)
    notes: str = ""  # the NOTES helm printed on install

    @property
    def fullname(self) -> str:
        return fullname(self.name)

    @property
    def service_account(self) -> str:
        return self.fullname

    @property
    def user(self) -> str:
        """The ServiceAccount's user name, for impersonation and SubjectAccessReviews."""
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    @property
    def lease_name(self) -> str:
        return self.fullname

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return helm(*args, "--kubeconfig", str(self.kubeconfig), home=self.home, check=check)

    def install(self) -> subprocess.CompletedProcess[str]:
        # No --wait: the operator's pod cannot run in the kwok test bed (no kubelet pulls its image).
        proc = self.helm(
            "install", self.name, str(CHART), "--namespace", self.namespace, *set_args(self.values)
        )
        self.notes = proc.stdout.split("NOTES:", 1)[-1]
        return proc

    def uninstall(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.helm(
            "uninstall", self.name, "--namespace", self.namespace, "--ignore-not-found", check=check
        )

    def manifest(self) -> str:
        return self.helm("get", "manifest", self.name, "--namespace", self.namespace).stdout


# --------------------------------------------------------------------------------------------------
# Acting as a ServiceAccount


def service_account_token(
    cluster: ClusterClient, namespace: str, service_account: str, expiration_seconds: int = 3600
) -> str:
    """A bound token for the ServiceAccount from the TokenRequest API (``.../serviceaccounts/<sa>/token``)."""
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": expiration_seconds},
    }
    status, doc = cluster.request(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token", body
    )
    if status != 201:
        raise AssertionError(f"TokenRequest for {namespace}/{service_account} answered {status}: {doc}")
    return doc["status"]["token"]


def write_sa_kubeconfig(
    cluster: ClusterClient,
    namespace: str,
    service_account: str,
    path: str | Path,
    *,
    expiration_seconds: int = 3600,
) -> Path:
    """Write a kubeconfig at ``path`` that authenticates as the ServiceAccount (a TokenRequest token,
    valid ``expiration_seconds``, at least 600) to the same apiserver as ``cluster``; its context's
    namespace is ``namespace``. Returns the path (mode 0600)."""
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    ctx = next(c["context"] for c in admin["contexts"] if c["name"] == admin["current-context"])
    server = dict(next(c["cluster"] for c in admin["clusters"] if c["name"] == ctx["cluster"]))
    ca = server.get("certificate-authority")
    if ca and not os.path.isabs(ca):  # file references are relative to the kubeconfig that holds them
        server["certificate-authority"] = str((Path(cluster.kubeconfig).parent / ca).resolve())
    user = f"system:serviceaccount:{namespace}:{service_account}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "aicenter-testbed", "cluster": server}],
        "users": [
            {
                "name": user,
                "user": {
                    "token": service_account_token(cluster, namespace, service_account, expiration_seconds)
                },
            }
        ],
        "contexts": [
            {
                "name": service_account,
                "context": {"cluster": "aicenter-testbed", "user": user, "namespace": namespace},
            }
        ],
        "current-context": service_account,
    }
    path = Path(path)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


def sa_client(
    cluster: ClusterClient, namespace: str, service_account: str, path: str | Path
) -> ClusterClient:
    """A :class:`ClusterClient` (``.request``, ``.kubectl``, ``.api_client()``) as the ServiceAccount."""
    return ClusterClient(write_sa_kubeconfig(cluster, namespace, service_account, path))


def access_review(
    cluster: ClusterClient,
    user: str,
    verb: str,
    resource: str,
    *,
    group: str = "",
    subresource: str = "",
    namespace: str = "",
    groups: tuple[str, ...] = (),
) -> bool:
    """Whether ``user`` (with ``groups``) may ``verb`` the resource: a SubjectAccessReview, the check
    ``kubectl auth can-i --as`` makes. An empty ``namespace`` means all namespaces (or cluster scope)."""
    attrs = {"verb": verb, "group": group, "resource": resource}
    if subresource:
        attrs["subresource"] = subresource
    if namespace:
        attrs["namespace"] = namespace
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": list(groups), "resourceAttributes": attrs},
    }
    status, doc = cluster.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body)
    if status != 201:
        raise AssertionError(f"SubjectAccessReview answered {status}: {doc}")
    return bool(doc["status"].get("allowed"))


def sa_groups(namespace: str) -> tuple[str, ...]:
    """The groups every token of a ServiceAccount in ``namespace`` carries."""
    return ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated")


# --------------------------------------------------------------------------------------------------
# The apiserver's audit log (``LocalCluster(audit=True)``)


@dataclass(frozen=True)
class Audited:
    """One audited request of a user: ``resource`` is ``plural`` or ``plural/subresource`` ("" for a
    non-resource request, whose ``path`` is then set); ``group`` is "" for the core group."""

    group: str
    resource: str
    verb: str
    namespace: str
    code: int
    path: str = ""

    @property
    def right(self) -> tuple[str, str, str]:
        return (self.group, self.resource, self.verb)


def audit_entries(log: Path, user: str) -> list[Audited]:
    """The requests ``user`` made, from a JSON-lines audit log (one line per stage; a watch shows as
    ``watch``, a metadata-only list as ``list``)."""
    out = []
    if not log.exists():
        return out
    with log.open() as f:
        for line in f:
            if not line.strip():
                continue
            try:
                e = json.loads(line)
            except ValueError:  # a line being written right now
                continue
            if (e.get("user") or {}).get("username") != user:
                continue
            ref = e.get("objectRef")
            code = int((e.get("responseStatus") or {}).get("code") or 0)
            if ref is None:
                out.append(Audited("", "", e["verb"], "", code, e.get("requestURI", "").split("?")[0]))
                continue
            resource = ref.get("resource", "")
            if ref.get("subresource"):
                resource += f"/{ref['subresource']}"
            out.append(Audited(ref.get("apiGroup", ""), resource, e["verb"], ref.get("namespace", ""), code))
    return out
