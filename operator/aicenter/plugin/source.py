"""Where the visibility documents come from: the API server's service proxy, or a URL.

``connect(...)`` returns a :class:`Source`; ``source.get("queue", {"quota": "q"})`` is the operator's
``GET /visibility/v1/queue?quota=q`` as a dict. Errors come back as :class:`PluginError` with a
message that says what to do (which RBAC right is missing, which flag picks a service).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

import kubernetes

from aicenter.controller.kube import ApiError, Kube

SERVICE_LABEL = "app.kubernetes.io/name=aicenter-operator"
PORT_NAME = "metrics"
STANDBY_RETRIES = 12
API_PREFIX = "/visibility/v1"
WHAT = ("queue", "job", "centers", "quotas")


class PluginError(Exception):
    """Something the user can act on; the CLI prints it and exits 1."""


class Source(Protocol):
    def get(self, what: str, query: dict[str, str] | None = None) -> dict[str, Any]: ...

    def describe(self) -> str: ...


@dataclass
class EndpointSource:
    """The operator's HTTP port at ``base`` (``http://127.0.0.1:8080``, e.g. via port-forward)."""

    base: str
    timeout: float = 15.0
    token: str | None = None  # a bearer token, for an operator run with --metrics-auth

    def __post_init__(self) -> None:
        self.base = self.base.rstrip("/")
        if not self.base.startswith(("http://", "https://")):
            raise PluginError(f"--endpoint {self.base!r}: give a URL, e.g. http://127.0.0.1:8080")

    def describe(self) -> str:
        return self.base

    def get(self, what: str, query: dict[str, str] | None = None) -> dict[str, Any]:
        url = f"{self.base}{API_PREFIX}/{what}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        req = urllib.request.Request(url, headers={"Accept": "application/json"})
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")[:500]
            raise _http_error(e.code, body, what, query, self.describe()) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise PluginError(f"cannot reach the operator at {self.base}: {reason}") from None
        except ValueError as e:
            raise PluginError(f"{url} did not answer JSON: {e}") from None


@dataclass
class ProxySource:
    """The operator's Service through the API server: ``.../services/<name>:<port>/proxy/...``."""

    kube: Kube
    namespace: str
    service: str
    port: str = PORT_NAME
    timeout: float = 15.0

    def describe(self) -> str:
        return f"service {self.namespace}/{self.service}:{self.port} (API server proxy)"

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/services/{self.service}:{self.port}/proxy{API_PREFIX}"

    def get(self, what: str, query: dict[str, str] | None = None) -> dict[str, Any]:
        for _ in range(STANDBY_RETRIES):
            try:
                return self.kube.request(
                    "GET", f"{self.path}/{what}", query=list((query or {}).items()), timeout=self.timeout
                )
            except ApiError as e:
                if e.status != 421:
                    return self._fail(e, what, query)
                # the Service picked a standby replica: ask again (the Service spreads requests)
        raise PluginError(
            f"{STANDBY_RETRIES} answers in a row came from standby replicas of {self.describe()}: "
            "port-forward the leader's pod and use --endpoint (docs/admin.md)"
        )

    def _fail(self, e: ApiError, what: str, query: dict[str, str] | None) -> NoReturn:
        """Say plainly why the proxy path failed."""
        if e.status == 401:
            raise PluginError(
                "the operator asks for a bearer token on its visibility API (--metrics-auth), and "
                "the API server's service proxy does not pass yours on: port-forward the operator's "
                "Service and use --endpoint with --token-file (docs/admin.md)"
            ) from None
        if e.status == 403 and "services/proxy" not in e.message:
            raise PluginError(f"the operator refused {API_PREFIX}/{what}: {e.message}") from None
        if e.status == 403:
            raise PluginError(
                f"forbidden: reading the operator's visibility API through the API server needs "
                f'"get" on "services/proxy" for service {self.service} in namespace {self.namespace} '
                f"(docs/admin.md has a Role), or use --endpoint. The API server said: {e.message}"
            ) from None
        if e.status == 503:
            raise PluginError(
                f"the operator's service {self.namespace}/{self.service} has no ready endpoint "
                f"(is the operator running?): {e.message}"
            ) from None
        if e.status == 0:
            raise PluginError(f"cannot reach the API server: {e.reason}: {e.message}") from None
        raise _http_error(e.status, e.message, what, query, self.describe()) from None


def _http_error(status: int, body: str, what: str, query: dict[str, str] | None, where: str) -> PluginError:
    q = query or {}
    if status == 404 and what == "job":
        return PluginError(
            f"the operator does not know GPUJob {q.get('namespace')}/{q.get('name')} "
            f"(kubectl get gpujob -n {q.get('namespace')} {q.get('name')})"
        )
    if status == 404:
        return PluginError(f"{where} has no {API_PREFIX}/{what} (an older operator?): {body.strip()}")
    if status in (401, 403):
        return PluginError(f"{where} refused {API_PREFIX}/{what} ({status}): {body.strip()}")
    return PluginError(f"{where} answered {status} for {API_PREFIX}/{what}: {body.strip()}")


# -- the Kubernetes client -------------------------------------------------------------------------


def kube_client(kubeconfig: str | None = None, context: str | None = None, timeout: float = 15.0) -> Kube:
    """A :class:`Kube` for the kubeconfig (``--kubeconfig``, ``KUBECONFIG``, ``~/.kube/config``) or,
    with none of those, the in-cluster ServiceAccount."""
    cfg = kubernetes.client.Configuration()
    default = Path(os.path.expanduser(kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION))
    have_file = kubeconfig or os.environ.get("KUBECONFIG") or default.exists()
    try:
        if have_file or context:
            kubernetes.config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=cfg
            )
        else:
            kubernetes.config.load_incluster_config(client_configuration=cfg)
    except (kubernetes.config.ConfigException, OSError) as e:
        raise PluginError(f"no usable kubeconfig ({e}); set KUBECONFIG, --kubeconfig or --endpoint") from None
    cfg.connection_pool_maxsize = 4
    return Kube(kubernetes.client.ApiClient(cfg), workers=2)


def find_service(kube: Kube, namespace: str | None, service: str | None) -> tuple[str, str, str]:
    """(namespace, name, port name) of the operator's metrics Service.

    With ``service`` given (and ``namespace``), that Service; otherwise the one Service labelled
    ``app.kubernetes.io/name=aicenter-operator`` with a port named ``metrics`` in ``namespace`` or,
    without one, in any namespace."""
    if service:
        if not namespace:
            raise PluginError("--service needs --namespace (-n)")
        try:
            svc = kube.request("GET", f"/api/v1/namespaces/{namespace}/services/{service}")
        except ApiError as e:
            raise PluginError(f"service {namespace}/{service}: {e}") from None
        return namespace, service, _port_of(svc) or PORT_NAME
    path = f"/api/v1/namespaces/{namespace}/services" if namespace else "/api/v1/services"
    where = f"namespace {namespace}" if namespace else "any namespace"
    try:
        items = kube.request("GET", path, query=[("labelSelector", SERVICE_LABEL)]).get("items") or []
    except ApiError as e:
        if e.status == 403:
            raise PluginError(
                f"cannot list services in {where} to find the operator ({e.message}); name it with "
                "--namespace and --service, or use --endpoint"
            ) from None
        raise PluginError(f"listing services in {where}: {e}") from None
    found = [
        (s["metadata"]["namespace"], s["metadata"]["name"], port)
        for s in items
        if (port := _port_of(s)) is not None
    ]
    if not found:
        raise PluginError(
            f"no Service labelled {SERVICE_LABEL} with a port named {PORT_NAME!r} in {where}; is the "
            "operator installed (helm chart charts/aicenter-operator)? Or use --endpoint URL"
        )
    if len(found) > 1:
        names = ", ".join(f"{ns}/{name}" for ns, name, _ in sorted(found))
        raise PluginError(f"several operator services in {where} ({names}); pick one with -n/--service")
    return found[0]


def _port_of(svc: dict) -> str | None:
    for p in (svc.get("spec") or {}).get("ports") or []:
        if p.get("name") == PORT_NAME:
            return PORT_NAME
    return None


def connect(
    endpoint: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    namespace: str | None = None,
    service: str | None = None,
    token: str | None = None,
) -> Source:
    """The source the flags name: ``endpoint`` as it is (with ``token`` as a bearer token), else the
    operator's Service by proxy."""
    if endpoint:
        return EndpointSource(endpoint, token=token)
    if token:
        raise PluginError("a token is for --endpoint only: the API server's proxy authorises you by RBAC")
    kube = kube_client(kubeconfig, context)
    ns, name, port = find_service(kube, namespace, service)
    return ProxySource(kube, ns, name, port)


def close(source: Source) -> None:
    kube = getattr(source, "kube", None)
    if kube is not None:
        kube.close()
