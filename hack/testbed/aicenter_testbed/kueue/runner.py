"""Run Kueue's manager on the host against the test bed's control plane, like its other components.

Kueue normally runs in a pod behind a Service, with a certificate for that Service's DNS name. Here it
is a process on 127.0.0.1, so:

* its CRDs and default configuration come from the downloaded module (``GOMODCACHE``, the same
  version the binary is built from); the CRDs are applied with ``kubectl apply --server-side``;
* a CA and a serving certificate for ``IP:127.0.0.1`` are made with openssl; the webhooks (and the CRD
  conversion webhooks Kueue's kustomization enables) are configured with ``clientConfig.url:
  https://127.0.0.1:<port>/…`` and that CA;
* only the integrations asked for are kept (default ``batch/job``) and their webhooks, with the Job
  webhooks limited to namespaces labelled ``kueue.aicenter.dev/managed=true`` (also Kueue's
  ``managedJobsNamespaceSelector``), so the Jobs of other tests never call a Kueue that is not there;
* leader election is off, the internal certificate manager is off (our certificates are used), the
  visibility API server is off (``VisibilityOnDemand=false``) and topology-aware scheduling is on;
* the client QPS/burst default to the test bed's kube-controller-manager's (200/400) instead of
  Kueue's 50/100, so Kueue is not the one client held back.

::

    kq = KueueProcess(cluster_client, workdir)      # workdir: certs, config, log
    kq.install_crds(); kq.start(); kq.install_webhooks()
    kq.apply(kueue_objects(...).all())
    ...
    kq.stop(); kq.uninstall_webhooks()
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from aicenter_testbed.cluster import ClusterClient, Process
from aicenter_testbed.kueue.mapping import KUEUE_API, KUEUE_GROUP, LABEL_MANAGED_NAMESPACE
from aicenter_testbed.procs import free_port
from aicenter_testbed.tools import KUEUE_MODULE, KUEUE_VERSION, ensure_kueue
from aicenter_testbed.waiting import wait_for

Manifest = dict[str, Any]

FIELD_MANAGER = "aicenter-testbed-kueue"
WEBHOOK_CONFIG_NAME = "aicenter-testbed-kueue"
KUEUE_NAMESPACE = "kueue-system"
DEFAULT_FRAMEWORKS = ("batch/job",)
#: webhook paths of each integration framework, as Kueue's generated manifests name them
_FRAMEWORK_PATHS = {"batch/job": ("-batch-v1-job",), "pod": ("--v1-pod",)}


class KueueError(RuntimeError):
    """Kueue could not be built, installed or started (the message says which and why)."""


@cache
def module_dir(version: str = KUEUE_VERSION) -> Path:
    """The downloaded ``sigs.k8s.io/kueue@version`` in the Go module cache (downloads it if needed)."""
    if shutil.which("go") is None:
        raise KueueError("the go command is needed to locate Kueue's module (CRDs, configuration)")
    with tempfile.TemporaryDirectory(prefix="kueue-mod-") as tmp:
        (Path(tmp) / "go.mod").write_text("module aicenter.dev/kueue-locate\n\ngo 1.24\n")
        proc = subprocess.run(
            ["go", "mod", "download", "-json", f"{KUEUE_MODULE}@{version}"],
            cwd=tmp,
            capture_output=True,
            text=True,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
        )
    if proc.returncode != 0:
        raise KueueError(f"go mod download {KUEUE_MODULE}@{version} failed:\n{proc.stderr[-2000:]}")
    return Path(json.loads(proc.stdout)["Dir"])


def _yaml_docs(path: Path) -> list[Manifest]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# --------------------------------------------------------------------------------------------------
# what gets applied: CRDs, webhook configurations, Kueue's configuration


def crd_documents(mod: Path, base_url: str | None = None, ca_bundle: str | None = None) -> list[Manifest]:
    """Kueue's CRDs; with ``base_url``, the conversion webhooks its kustomization enables, URL-based."""
    crd_dir = mod / "config/components/crd"
    kustomization = yaml.safe_load((crd_dir / "kustomization.yaml").read_text())
    crds = [doc for rel in kustomization["resources"] for doc in _yaml_docs(crd_dir / rel)]
    if base_url is None:
        return crds
    converted = set()
    for patch in kustomization.get("patches") or []:
        doc = _yaml_docs(crd_dir / patch["path"])[0]
        if (doc.get("spec") or {}).get("conversion", {}).get("strategy") == "Webhook":
            converted.add(doc["metadata"]["name"])
    for crd in crds:
        if crd["metadata"]["name"] in converted:
            crd["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {"url": f"{base_url}/convert", "caBundle": ca_bundle},
                    "conversionReviewVersions": ["v1"],
                },
            }
    return crds


def _keeps(webhook: Manifest, frameworks: tuple[str, ...]) -> bool:
    rules = webhook.get("rules") or []
    if all(KUEUE_GROUP in (r.get("apiGroups") or []) for r in rules):
        return True  # Kueue's own objects (ClusterQueues, Workloads, …)
    path = webhook["clientConfig"]["service"]["path"]
    return any(path.endswith(suffix) for f in frameworks for suffix in _FRAMEWORK_PATHS.get(f, ()))


def webhook_configurations(
    mod: Path, base_url: str, ca_bundle: str, frameworks: tuple[str, ...] = DEFAULT_FRAMEWORKS
) -> list[Manifest]:
    """Kueue's Mutating/ValidatingWebhookConfigurations, URL-based, only for ``frameworks``."""
    unknown = [f for f in frameworks if f not in _FRAMEWORK_PATHS]
    if unknown:
        raise KueueError(f"no webhook paths known for integration(s) {unknown}")
    out = []
    for doc in _yaml_docs(mod / "config/components/webhook/manifests.yaml"):
        kind = doc["kind"]
        hooks = []
        for w in doc["webhooks"]:
            if not _keeps(w, frameworks):
                continue
            w = dict(w)
            path = w["clientConfig"]["service"]["path"]
            w["clientConfig"] = {"url": base_url + path, "caBundle": ca_bundle}
            if not all(KUEUE_GROUP in (r.get("apiGroups") or []) for r in w.get("rules") or []):
                w["namespaceSelector"] = {"matchLabels": {LABEL_MANAGED_NAMESPACE: "true"}}
            hooks.append(w)
        suffix = "mutating" if kind.startswith("Mutating") else "validating"
        out.append(
            {
                "apiVersion": doc["apiVersion"],
                "kind": kind,
                "metadata": {"name": f"{WEBHOOK_CONFIG_NAME}-{suffix}"},
                "webhooks": hooks,
            }
        )
    return out


def configuration(
    mod: Path,
    *,
    webhook_port: int,
    health_port: int,
    metrics_port: int,
    cert_dir: Path,
    frameworks: tuple[str, ...] = DEFAULT_FRAMEWORKS,
    qps: float = 200,
    burst: int = 400,
    fair_sharing: bool = False,
) -> Manifest:
    """Kueue's default configuration from the module, set up for a process on 127.0.0.1."""
    cfg = yaml.safe_load((mod / "config/components/manager/controller_manager_config.yaml").read_text())
    cfg["namespace"] = KUEUE_NAMESPACE
    cfg["health"] = {"healthProbeBindAddress": f"127.0.0.1:{health_port}"}
    cfg["metrics"] = {**(cfg.get("metrics") or {}), "bindAddress": f"127.0.0.1:{metrics_port}"}
    cfg["webhook"] = {"port": webhook_port, "host": "127.0.0.1", "certDir": str(cert_dir)}
    cfg["leaderElection"] = {"leaderElect": False}
    cfg["internalCertManagement"] = {"enable": False}
    cfg["clientConnection"] = {"qps": qps, "burst": burst}
    cfg["integrations"] = {"frameworks": list(frameworks)}
    cfg["managedJobsNamespaceSelector"] = {"matchLabels": {LABEL_MANAGED_NAMESPACE: "true"}}
    cfg["featureGates"] = {"TopologyAwareScheduling": True, "VisibilityOnDemand": False}
    if fair_sharing:
        cfg["fairSharing"] = {"enable": True}
    return cfg


def make_certs(pki: Path) -> str:
    """A CA and a serving certificate for 127.0.0.1 (``tls.crt``/``tls.key``); returns the CA, base64."""
    pki.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        proc = subprocess.run(["openssl", *args], cwd=pki, capture_output=True, text=True)
        if proc.returncode != 0:
            raise KueueError(f"openssl {' '.join(args)} failed:\n{proc.stderr[-2000:]}")

    openssl("genrsa", "-out", "ca.key", "2048")
    openssl(
        "req", "-x509", "-new", "-nodes", "-key", "ca.key", "-sha256", "-days", "3650",
        "-subj", "/CN=aicenter-testbed-kueue-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out", "ca.crt",
    )  # fmt: skip
    openssl("genrsa", "-out", "tls.key", "2048")
    openssl("req", "-new", "-key", "tls.key", "-subj", "/CN=kueue-webhook", "-out", "tls.csr")
    (pki / "tls.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    openssl(
        "x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-sha256", "-days", "3650", "-extfile", "tls.ext", "-out", "tls.crt",
    )  # fmt: skip
    for p in pki.glob("*.key"):
        p.chmod(0o600)
    return base64.b64encode((pki / "ca.crt").read_bytes()).decode()


# --------------------------------------------------------------------------------------------------
# the process


@dataclass
class KueueProcess:
    """Kueue's manager as a host process against ``client``'s cluster; files live in ``workdir``."""

    client: ClusterClient
    workdir: Path
    frameworks: tuple[str, ...] = DEFAULT_FRAMEWORKS
    qps: float = 200
    burst: int = 400
    log_level: int = 2  # Kueue's shipped manager runs with --zap-log-level=2
    fair_sharing: bool = False
    binary: Path | None = None
    ports: dict[str, int] = field(default_factory=dict)
    proc: Process | None = None
    ca_bundle: str = ""
    start_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mod = module_dir()
        for name in ("webhook", "health", "metrics"):
            self.ports.setdefault(name, free_port())
        pki = self.workdir / "pki"
        if (pki / "tls.crt").exists():
            self.ca_bundle = base64.b64encode((pki / "ca.crt").read_bytes()).decode()
        else:
            self.ca_bundle = make_certs(pki)

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['webhook']}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "kueue.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None and self.proc.pid is not None
        return self.proc.pid

    # -- cluster objects -------------------------------------------------------------------------

    def _apply(self, docs: list[Manifest]) -> None:
        text = "".join(f"---\n{yaml.safe_dump(d, sort_keys=False)}" for d in docs)
        self.client.kubectl(
            "apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}", "-f", "-",
            input=text, timeout=300,
        )  # fmt: skip

    def install_crds(self, timeout: float = 120) -> None:
        """Kueue's CRDs (conversion webhooks at this process's URL) applied server-side, Established."""
        self._apply(crd_documents(self.mod, self.base_url, self.ca_bundle))
        self.client.kubectl(
            "wait", "--for=condition=Established", "--timeout", f"{int(timeout)}s",
            *[f"crd/{d['metadata']['name']}" for d in crd_documents(self.mod)],
            timeout=timeout + 30,
        )  # fmt: skip
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KUEUE_NAMESPACE}}
        self._apply([ns])

    def install_webhooks(self, timeout: float = 60) -> None:
        """Kueue's webhooks at this process's URL; returns once the API server reaches them."""
        self._apply(webhook_configurations(self.mod, self.base_url, self.ca_bundle, self.frameworks))
        probe = {
            "apiVersion": KUEUE_API,
            "kind": "ResourceFlavor",
            "metadata": {"name": "aicenter-testbed-webhook-probe"},
            "spec": {},
        }

        def answered() -> bool:  # a dry-run create goes through Kueue's ResourceFlavor webhooks
            status, body = self.client.request(
                "POST", f"/apis/{KUEUE_API}/resourceflavors?dryRun=All", body=probe, timeout=15
            )
            if status in (200, 201, 409):
                return True
            raise KueueError(f"dry-run ResourceFlavor answered {status}: {str(body)[:300]}")

        wait_for(answered, timeout, f"Kueue's webhooks at {self.base_url} (log {self.log_path})")

    def uninstall_webhooks(self) -> None:
        """Remove the webhook configurations and the CRDs' conversion webhooks (Kueue is stopped)."""
        for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
            suffix = "mutating" if kind.startswith("mutating") else "validating"
            self.client.request(
                "DELETE", f"/apis/admissionregistration.k8s.io/v1/{kind}/{WEBHOOK_CONFIG_NAME}-{suffix}"
            )
        patch = {"spec": {"conversion": {"strategy": "None", "webhook": None}}}
        for crd in crd_documents(self.mod, self.base_url, self.ca_bundle):
            if crd["spec"].get("conversion", {}).get("strategy") == "Webhook":
                self.client.request(
                    "PATCH",
                    f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}",
                    body=patch,
                    content_type="application/merge-patch+json",
                )

    def apply(self, docs: list[Manifest]) -> None:
        """Apply Kueue objects (server-side), e.g. ``kueue_objects(...).all()``."""
        if docs:
            self._apply(docs)

    # -- the process -----------------------------------------------------------------------------

    def config_path(self) -> Path:
        cfg = configuration(
            self.mod,
            webhook_port=self.ports["webhook"],
            health_port=self.ports["health"],
            metrics_port=self.ports["metrics"],
            cert_dir=self.workdir / "pki",
            frameworks=self.frameworks,
            qps=self.qps,
            burst=self.burst,
            fair_sharing=self.fair_sharing,
        )
        path = self.workdir / "config.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def ready(self) -> bool:
        if self.proc is None or not self.proc.running():
            code = self.proc.proc.returncode if self.proc and self.proc.proc else "?"
            tail = self.proc.log_tail(3000) if self.proc else ""
            raise KueueError(f"Kueue exited ({code}); log {self.log_path}:\n{tail}")
        try:
            url = f"http://127.0.0.1:{self.ports['health']}/readyz"
            with urllib.request.urlopen(url, timeout=3) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 120) -> KueueProcess:
        binary = self.binary or ensure_kueue()
        self.proc = Process(
            "kueue",
            [
                str(binary),
                f"--config={self.config_path()}",
                f"--zap-log-level={self.log_level}",
            ],
            self.log_path,
            env={
                "KUBECONFIG": str(self.client.kubeconfig),
                "KUEUE_METRICS_CERT_DIR": str(self.workdir / "pki"),
            },
        )
        t0 = time.monotonic()
        self.proc.start()
        try:
            wait_for(
                self.ready, timeout, f"Kueue ready on 127.0.0.1:{self.ports['health']} (log {self.log_path})"
            )
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.stop(grace=15)
