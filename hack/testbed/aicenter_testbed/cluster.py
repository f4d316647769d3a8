"""A local Kubernetes control plane on 127.0.0.1 with simulated (kwok) GPU nodes.

:class:`LocalCluster` runs etcd, kube-apiserver (TLS, client-certificate auth, ``Node,RBAC``
authorization, service-account token signing), kube-controller-manager, kube-scheduler and the kwok
controller as child processes, each logging to ``<data dir>/logs/<component>.log``. Every file it
makes (certificates, kubeconfigs, the etcd data, the kwok stages) lives in the data directory, a
temporary one unless given. :class:`ClusterClient` is what tests and tools hold: a kubeconfig with
a ``kubernetes`` API client factory and a kubectl helper; it works against any cluster, including
one reused through ``AICENTER_KUBECONFIG``.

``LocalCluster(audit=True)`` also writes the kube-apiserver's audit log (JSON lines, one per request
at ``ResponseStarted``/``ResponseComplete``) to ``<data dir>/audit/audit.log`` (``.audit_log``): level
``Metadata`` for ServiceAccounts (group ``system:serviceaccounts``), nothing for anyone else. Off by
default: it costs the apiserver a write per request.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aicenter_testbed.procs import free_port
from aicenter_testbed.sim.tuning import Tuning, tuning_for
from aicenter_testbed.tools import KUBERNETES, Tools, ensure_tools
from aicenter_testbed.waiting import WaitTimeout, wait_for

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMISSION_PLUGINS = (
    "NamespaceLifecycle,LimitRanger,ServiceAccount,TaintNodesByCondition,PodSecurity,Priority,"
    "DefaultTolerationSeconds,DefaultStorageClass,StorageObjectInUseProtection,PersistentVolumeClaimResize,"
    "RuntimeClass,CertificateApproval,CertificateSigning,CertificateSubjectRestriction,NodeRestriction,"
    "MutatingAdmissionWebhook,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook,ResourceQuota"
)
#: kwok renews each node's Lease every quarter of this; the node lifecycle controller's grace period
#: is set well above the renew interval so a busy 2-core machine does not flap 1,000 nodes. These
#: are the small-fleet values; a cluster started for more nodes stretches them
#: (:func:`aicenter_testbed.sim.tuning.tuning_for`, ``LocalCluster(expected_nodes=...)``).
NODE_LEASE_SECONDS = 120
NODE_MONITOR_GRACE = "150s"
#: kube-controller-manager's controllers: all but the TTL controller, which re-annotates every Node
#: (``node.alpha.kubernetes.io/ttl``, a hint for kubelets' secret caches) each time the cluster
#: grows past a size boundary: ~55,000 Node patches while a 41,250-node fleet is created, for no
#: kubelet to read.
CONTROLLERS = "*,-ttl-controller"
PORT_CLASH_MARKERS = ("address already in use", "bind: address", "failed to listen")
#: The audit policy of ``LocalCluster(audit=True)``: who did what (user, verb, resource, namespace,
#: name, response code) for every ServiceAccount, without request or response bodies.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}


class ClusterError(RuntimeError):
    """The control plane could not be started, or a component died."""


def _log(msg: str) -> None:
    print(f"[testbed] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Ports and processes


def _load_prctl():  # resolved once in the parent: nothing is loaded between fork and exec
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    # The component gets SIGTERM if the process that started it dies, so a killed test run or
    # supervisor leaves no control plane behind.
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Process:
    """One component: its command line, process and log file."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self, die_with_parent: bool = True) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"# {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,  # its own process group: a terminal's Ctrl-C reaches us, not it
                preexec_fn=_set_pdeathsig if die_with_parent else None,
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def port_clash(self) -> bool:
        tail = self.log_tail(6000).lower()
        return any(m in tail for m in PORT_CLASH_MARKERS)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps the child."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait(timeout=30)
        else:
            p.wait()


# ---------------------------------------------------------------------------------------------
# Certificates (openssl CLI)


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args)} failed:\n{proc.stderr[-2000:]}")


def make_pki(pki: Path) -> None:
    """A CA, the apiserver serving cert, client certs and the service-account key pair, via openssl."""
    if shutil.which("openssl") is None:
        raise ClusterError(
            "the openssl CLI is needed to make the test bed's certificates (apt-get install openssl)"
        )
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=pki)
    _openssl(
        "req", "-x509", "-new", "-nodes", "-key", "ca.key", "-sha256", "-days", "3650",
        "-subj", "/CN=aicenter-testbed-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out", "ca.crt", cwd=pki,
    )  # fmt: skip
    sans = ",".join(
        [
            "IP:127.0.0.1",
            f"IP:{SERVICE_IP}",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ]
    )
    certs = {
        # name: (subject, extended key usage, subjectAltName)
        "apiserver": ("/CN=kube-apiserver", "serverAuth", sans),
        "admin": ("/O=system:masters/CN=kubernetes-admin", "clientAuth", None),
        "controller-manager": ("/CN=system:kube-controller-manager", "clientAuth", None),
        "scheduler": ("/CN=system:kube-scheduler", "clientAuth", None),
        "kwok": ("/O=system:masters/CN=kwok-controller", "clientAuth", None),
    }
    for name, (subject, eku, san) in certs.items():
        _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=pki)
        _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=pki)
        ext = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={eku}",
        ]
        if san:
            ext.append(f"subjectAltName={san}")
        (pki / f"{name}.ext").write_text("\n".join(ext) + "\n")
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-sha256", "-days", "3650", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=pki,
        )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for p in pki.iterdir():
        if p.suffix == ".key":
            p.chmod(0o600)


def write_kubeconfig(
    path: Path, server: str, pki: Path, user: str, cluster_name: str = "aicenter-testbed"
) -> Path:
    """A kubeconfig with the CA and the client certificate embedded (portable, no file references)."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {"server": server, "certificate-authority-data": b64(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(pki / f"{user}.crt"),
                    "client-key-data": b64(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": cluster_name,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


# ---------------------------------------------------------------------------------------------
# Talking to a cluster


def _kubectl_path() -> Path | None:
    p = KUBERNETES.path("kubectl")
    if p.is_file():
        return p
    found = shutil.which("kubectl")
    return Path(found) if found else None


@dataclass
class ClusterClient:
    """A handle on a running cluster: kubeconfig, API clients, kubectl.

    ``api_client()`` returns a new ``kubernetes.client.ApiClient`` for the kubeconfig (thread-safe to
    share; make one per thread pool if you like). ``kubectl(*args)`` runs the pinned kubectl against
    it and returns the completed process (``check=True`` raises with stderr on failure).
    """

    kubeconfig: Path
    kubectl_bin: Path | None = None
    _api: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.kubeconfig = Path(self.kubeconfig)
        if self.kubectl_bin is None:
            self.kubectl_bin = _kubectl_path()

    @property
    def server(self) -> str:
        doc = yaml.safe_load(self.kubeconfig.read_text())
        ctx_name = doc.get("current-context")
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
        return next(c["cluster"]["server"] for c in doc["clusters"] if c["name"] == ctx["cluster"])

    def api_client(self, pool_size: int = 32) -> Any:
        """A new ``kubernetes.client.ApiClient`` for this cluster (connection pool of ``pool_size``)."""
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = pool_size
        return client.ApiClient(configuration=cfg)

    @property
    def api(self) -> Any:
        """A shared ApiClient (made on first use)."""
        if self._api is None:
            self._api = self.api_client()
        return self._api

    def core_v1(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        if self.kubectl_bin is None:
            raise ClusterError("kubectl not found: run `aicenter-testbed tools` or put kubectl on PATH")
        proc = subprocess.run(
            [str(self.kubectl_bin), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 60,
    ) -> tuple[int, Any]:
        """A raw API request: ``(status, decoded JSON body or text)``; never raises on HTTP errors.

        Fast path for bulk work and for APIs without a generated model (CRDs, ``/version``); auth
        comes from the kubeconfig through the ApiClient's configuration.
        """
        api = self.api
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        api.update_params_for_auth(headers, [], ["BearerToken"], path, method, body)
        r = api.rest_client.request(
            method, api.configuration.host + path, headers=headers, body=body, _request_timeout=timeout
        )
        raw = r.read()
        try:
            return r.status, json.loads(raw) if raw else None
        except ValueError:
            return r.status, raw.decode(errors="replace")

    def version(self) -> dict[str, str]:
        """The apiserver's ``/version`` document."""
        status, doc = self.request("GET", "/version")
        if status != 200:
            raise ClusterError(f"GET /version answered {status}: {doc}")
        return doc

    def create_namespace(self, name: str, labels: dict[str, str] | None = None, timeout: float = 60) -> str:
        """Create a namespace and wait until its ``default`` ServiceAccount exists (pods need it)."""
        from kubernetes.client.exceptions import ApiException

        core = self.core_v1()
        try:
            core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
        except ApiException as e:
            if e.status != 409:
                raise
        wait_for(
            lambda: core.read_namespaced_service_account("default", name),
            timeout=timeout,
            what=f"ServiceAccount default in namespace {name}",
        )
        return name

    def delete_namespace(self, name: str, wait: bool = False, timeout: float = 120) -> None:
        from kubernetes.client.exceptions import ApiException

        core = self.core_v1()
        try:
            core.delete_namespace(name)
        except ApiException as e:
            if e.status != 404:
                raise
            return
        if wait:

            def gone() -> bool:
                try:
                    core.read_namespace(name)
                except ApiException as e:
                    return e.status == 404
                return False

            wait_for(gone, timeout=timeout, what=f"namespace {name} to be deleted")

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None


# ---------------------------------------------------------------------------------------------
# The launcher


class _Https:
    """Minimal HTTPS GETs for readiness probes (no kubernetes client needed)."""

    def __init__(self, pki: Path | None) -> None:
        if pki is None:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
            ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.ctx = ctx

    def get(self, url: str, timeout: float = 3.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, context=self.ctx, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


def _http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class LocalCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on 127.0.0.1.

    ``with LocalCluster() as c: c.client().core_v1().list_node()``. ``start()`` returns a
    :class:`ClusterClient`; ``stop()`` terminates and reaps every process (SIGTERM, then SIGKILL)
    and removes a temporary data directory (a directory you passed is kept, with its logs).
    """

    COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

    def __init__(
        self,
        data_dir: str | Path | None = None,
        tools: Tools | None = None,
        *,
        with_kwok: bool = True,
        start_timeout: float = 240.0,
        die_with_parent: bool = True,
        verbosity: int = 1,
        keep_data: bool | None = None,
        audit: bool = False,
        expected_nodes: int | None = None,
        tuning: Tuning | None = None,
    ) -> None:
        self._tmp = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="aicenter-testbed-")).resolve()
        self.keep_data = (not self._tmp) if keep_data is None else keep_data
        self._tools = tools
        self.with_kwok = with_kwok
        self.start_timeout = start_timeout
        self.die_with_parent = die_with_parent
        self.verbosity = verbosity
        #: kwok's lease and heartbeat intervals and the node lifecycle controller's periods, sized for
        #: the number of simulated nodes the cluster will hold (the defaults below ~1,500 nodes).
        self.tuning = tuning or tuning_for(expected_nodes)
        self.procs: dict[str, Process] = {}
        self.ports: dict[str, int] = {}
        self.pki = self.data_dir / "pki"
        self.logs = self.data_dir / "logs"
        self.kubeconfig = self.data_dir / "kubeconfig"
        #: the apiserver's audit log (``AUDIT_POLICY``, JSON lines) with ``audit=True``, else None
        self.audit_log: Path | None = self.data_dir / "audit" / "audit.log" if audit else None
        self._client: ClusterClient | None = None
        self._stopped = False

    # -- public --------------------------------------------------------------------------------

    @property
    def tools(self) -> Tools:
        if self._tools is None:
            self._tools = ensure_tools()
        return self._tools

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ClusterClient:
        t0 = time.monotonic()
        deadline = t0 + self.start_timeout
        _ = self.tools  # resolve (and build if needed) before anything starts
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        try:
            make_pki(self.pki)
            self._start_with_retry("etcd", self._etcd, self._etcd_ready, deadline)
            self._start_with_retry("kube-apiserver", self._apiserver, self._apiserver_ready, deadline)
            write_kubeconfig(self.kubeconfig, self.server, self.pki, "admin")
            for user in ("controller-manager", "scheduler", "kwok"):
                write_kubeconfig(self.data_dir / f"{user}.kubeconfig", self.server, self.pki, user)
            # The three clients of the apiserver start together and are waited for together.
            rest = [
                ("kube-controller-manager", self._controller_manager, self._controller_manager_ready),
                ("kube-scheduler", self._scheduler, self._scheduler_ready),
            ]
            if self.with_kwok:
                self._write_kwok_config()
                rest.append(("kwok", self._kwok, self._kwok_ready))
            self._start_many_with_retry(rest, deadline)
            self._write_state()
            _log(f"cluster up in {time.monotonic() - t0:.1f}s at {self.server}; kubeconfig {self.kubeconfig}")
        except BaseException:
            self.stop(remove=False)
            _log(f"cluster start failed; logs kept in {self.logs}")
            raise
        self._client = ClusterClient(self.kubeconfig, self.tools.kubectl)
        return self._client

    def client(self) -> ClusterClient:
        if self._client is None:
            self._client = ClusterClient(self.kubeconfig, self.tools.kubectl)
        return self._client

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.procs.items() if p.pid is not None}

    def check_alive(self) -> None:
        """Raise :class:`ClusterError` naming any component that has exited."""
        dead = [n for n, p in self.procs.items() if not p.running()]
        if dead:
            tails = "\n".join(f"--- {n} ---\n{self.procs[n].log_tail(1500)}" for n in dead)
            raise ClusterError(f"component(s) exited: {', '.join(dead)}\n{tails}")

    def stop(self, remove: bool | None = None) -> None:
        """Stop every component (clients of the apiserver first, etcd last) and reap them all."""
        if self._client is not None:
            self._client.close()
        order = ["kwok", "kube-scheduler", "kube-controller-manager"]
        first = [self.procs[n] for n in order if n in self.procs]
        for p in first:  # signal together, then wait each: a parallel SIGTERM
            if p.running():
                with contextlib.suppress(ProcessLookupError):
                    p.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for p in first:
            p.stop()
        for n in ("kube-apiserver", "etcd"):
            if n in self.procs:
                self.procs[n].stop(grace=15.0)
        self._stopped = True
        (self.data_dir / "cluster.json").unlink(missing_ok=True)
        if remove is None:
            remove = not self.keep_data
        if remove:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill_and_restart(self, name: str, down_s: float = 0.0, timeout: float = 90.0) -> None:
        """SIGKILL one component (``etcd``, ``kube-apiserver``, …) and start it again as it was: the same
        ports, flags and data (a crash and a supervisor's restart). Returns once it is ready."""
        proc = self.procs[name]
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGKILL)
            proc.proc.wait(30)
        if down_s:
            time.sleep(down_s)  # how long the component stays down: the fault itself, not a wait
        proc.start(die_with_parent=self.die_with_parent)
        ready = {
            "etcd": self._etcd_ready,
            "kube-apiserver": self._apiserver_ready,
            "kube-controller-manager": self._controller_manager_ready,
            "kube-scheduler": self._scheduler_ready,
            "kwok": self._kwok_ready,
        }[name]

        def up() -> bool:
            try:
                return ready()
            except (OSError, ssl.SSLError, ValueError, KeyError):
                return False

        wait_for(up, timeout, f"{name} ready again after a restart")

    # -- starting ------------------------------------------------------------------------------

    def _start_with_retry(
        self, name: str, make: Callable[[], Process], ready: Callable[[], bool], deadline: float
    ) -> None:
        self._start_many_with_retry([(name, make, ready)], deadline)

    def _start_many_with_retry(
        self, specs: Iterable[tuple[str, Callable[[], Process], Callable[[], bool]]], deadline: float
    ) -> None:
        pending = list(specs)
        attempts = dict.fromkeys((n for n, _, _ in pending), 0)
        for name, make, _ in pending:
            self._launch(name, make)
        while pending:
            still = []
            for name, make, ready in pending:
                proc = self.procs[name]
                if not proc.running():
                    attempts[name] += 1
                    if proc.port_clash() and attempts[name] < 5:
                        _log(f"{name}: port clash, retrying on fresh ports")
                        proc.stop()
                        self._launch(name, make)
                        still.append((name, make, ready))
                        continue
                    raise ClusterError(
                        f"{name} exited with code {proc.proc.returncode if proc.proc else '?'}; "  # type: ignore[union-attr]
                        f"log {proc.log_path}:\n{proc.log_tail()}"
                    )
                try:
                    ok = ready()
                except (OSError, ssl.SSLError, ValueError, KeyError):
                    ok = False
                if not ok:
                    still.append((name, make, ready))
            pending = still
            if not pending:
                break
            if time.monotonic() > deadline:
                names = ", ".join(n for n, _, _ in pending)
                tails = "\n".join(f"--- {n} ---\n{self.procs[n].log_tail(1500)}" for n, _, _ in pending)
                raise ClusterError(f"timed out waiting for {names} to become ready\n{tails}")
            time.sleep(0.25)  # readiness poll interval; the loop re-checks each component's state

    def _launch(self, name: str, make: Callable[[], Process]) -> None:
        proc = make()
        self.procs[name] = proc
        proc.start(die_with_parent=self.die_with_parent)

    # -- components ----------------------------------------------------------------------------

    def _etcd(self) -> Process:
        self.ports["etcd"] = free_port()
        self.ports["etcd-peer"] = free_port()
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        data = self.data_dir / "etcd"
        shutil.rmtree(data, ignore_errors=True)  # a retry after a port clash starts a fresh member
        return Process(
            "etcd",
            [
                str(self.tools.etcd),
                "--name=testbed",
                f"--data-dir={data}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=testbed={peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",  # a throw-away test store: durability is not wanted, speed is
                "--quota-backend-bytes=8589934592",
                # Snapshot (and trim the in-memory raft log) every 10,000 writes, not 100,000: creating
                # 41,250 Nodes of ~4 KiB otherwise keeps ~0.5 GiB of log entries in memory.
                "--snapshot-count=10000",
                "--log-level=warn",
            ],
            self.logs / "etcd.log",
        )

    def _etcd_ready(self) -> bool:
        status, body = _http_get(f"http://127.0.0.1:{self.ports['etcd']}/health", timeout=2)
        return status == 200 and json.loads(body).get("health") == "true"

    def _audit_args(self) -> list[str]:
        if self.audit_log is None:
            return []
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        policy = self.audit_log.parent / "policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY, sort_keys=False))
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",  # unbuffered: each entry is written as its request ends
        ]

    def _apiserver(self) -> Process:
        self.ports["apiserver"] = free_port()
        pki = self.pki
        return Process(
            "kube-apiserver",
            [
                str(self.tools.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--cert-dir={self.data_dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=Node,RBAC",
                *self._admission_plugin_flags(),
                *self._request_timeout_flags(),
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--api-audiences={SA_ISSUER}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--endpoint-reconciler-type=none",  # 127.0.0.1 is not a valid Endpoints address
                "--allow-privileged=true",
                "--profiling=false",
                "--max-requests-inflight=800",
                "--max-mutating-requests-inflight=400",
                *self._audit_args(),
                f"--v={self.verbosity}",
            ],
            self.logs / "kube-apiserver.log",
        )

    def _admission_plugin_flags(self) -> list[str]:
        """``--enable-admission-plugins=ADMISSION_PLUGINS``; when the tuning says new nodes start
        untainted (large fleets: lifting 41,250 not-ready taints was the bring-up's critical path),
        ``TaintNodesByCondition`` is left out of it and disabled (it is on by default)."""
        if self.tuning.taint_new_nodes:
            return [f"--enable-admission-plugins={ADMISSION_PLUGINS}"]
        plugins = ",".join(p for p in ADMISSION_PLUGINS.split(",") if p != "TaintNodesByCondition")
        return [f"--enable-admission-plugins={plugins}", "--disable-admission-plugins=TaintNodesByCondition"]

    def _request_timeout_flags(self) -> list[str]:
        """A longer ``--request-timeout`` on large fleets: the watch cache keeps this plus 15 s of
        history, so a slow LIST of the whole fleet can be followed by a WATCH from its version."""
        t = self.tuning.request_timeout_seconds
        return [] if t == 60 else [f"--request-timeout={t}s"]

    def _apiserver_ready(self) -> bool:
        status, _ = _Https(self.pki).get(f"https://127.0.0.1:{self.ports['apiserver']}/readyz", timeout=3)
        return status == 200

    def _leader(self, lease: str) -> str | None:
        status, body = _Https(self.pki).get(
            f"{self.server}/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{lease}", timeout=3
        )
        if status != 200:
            return None
        return json.loads(body).get("spec", {}).get("holderIdentity") or None

    def _controller_manager(self) -> Process:
        self.ports["controller-manager"] = free_port()
        kc = self.data_dir / "controller-manager.kubeconfig"
        pki = self.pki
        return Process(
            "kube-controller-manager",
            [
                str(self.tools.kube_controller_manager),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['controller-manager']}",
                f"--cert-dir={self.data_dir / 'controller-manager-certs'}",
                "--leader-elect=true",
                "--use-service-account-credentials=true",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--cluster-name=aicenter-testbed",
                f"--controllers={CONTROLLERS}",
                "--enable-garbage-collector=true",
                f"--node-monitor-grace-period={self.tuning.node_monitor_grace_seconds}s",
                f"--node-monitor-period={self.tuning.node_monitor_period_seconds}s",
                # Each controller has its own client (service-account credentials) and rate limit. The
                # node lifecycle controller spends three requests on each new node (read, lift the
                # not-ready taint, a RegisteredNode event): at 200 QPS that caps a fleet's bring-up
                # at ~66 nodes/s. The machine's CPU is the limit that should bind, not this.
                "--kube-api-qps=1000",
                "--kube-api-burst=2000",
                f"--v={self.verbosity}",
            ],
            self.logs / "kube-controller-manager.log",
        )

    def _controller_manager_ready(self) -> bool:
        status, _ = _Https(None).get(f"https://127.0.0.1:{self.ports['controller-manager']}/healthz")
        return status == 200 and self._leader("kube-controller-manager") is not None

    def _scheduler(self) -> Process:
        self.ports["scheduler"] = free_port()
        kc = self.data_dir / "scheduler.kubeconfig"
        return Process(
            "kube-scheduler",
            [
                str(self.tools.kube_scheduler),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['scheduler']}",
                f"--cert-dir={self.data_dir / 'scheduler-certs'}",
                "--leader-elect=true",
                f"--v={self.verbosity}",
            ],
            self.logs / "kube-scheduler.log",
        )

    def _scheduler_ready(self) -> bool:
        status, _ = _Https(None).get(f"https://127.0.0.1:{self.ports['scheduler']}/readyz")
        return status == 200 and self._leader("kube-scheduler") is not None

    def _write_kwok_config(self) -> Path:
        from aicenter_testbed.sim.stages import kwok_config_documents

        path = self.data_dir / "kwok.yaml"
        docs = kwok_config_documents(tuning=self.tuning)
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return path

    def _kwok(self) -> Process:
        self.ports["kwok"] = free_port()
        home = self.data_dir / "kwok-home"  # kwok also reads ~/.kwok/kwok.yaml: keep the user's out
        home.mkdir(exist_ok=True)
        return Process(
            "kwok",
            [
                str(self.tools.kwok),
                f"--kubeconfig={self.data_dir / 'kwok.kubeconfig'}",
                f"--config={self.data_dir / 'kwok.yaml'}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--server-address=127.0.0.1:{self.ports['kwok']}",
                f"--node-lease-duration-seconds={self.tuning.node_lease_seconds}",
                f"--v={self.tuning.kwok_log_level}",
            ],
            self.logs / "kwok.log",
            env={"HOME": str(home)},
        )

    def _kwok_ready(self) -> bool:
        status, _ = _http_get(f"http://127.0.0.1:{self.ports['kwok']}/healthz", timeout=2)
        return status == 200

    def _write_state(self) -> None:
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "pids": self.pids(),
            "ports": self.ports,
            "logs": str(self.logs),
            "tuning": self.tuning.as_dict(),
        }
        (self.data_dir / "cluster.json").write_text(json.dumps(state, indent=2) + "\n")


def wait_apiserver(client: ClusterClient, timeout: float = 60) -> None:
    """Wait until the apiserver behind a kubeconfig answers ``/readyz``."""

    def ready() -> bool:
        return client.request("GET", "/readyz", timeout=5)[0] == 200

    try:
        wait_for(ready, timeout=timeout, what=f"apiserver at {client.server} to be ready")
    except WaitTimeout as e:
        raise ClusterError(str(e)) from None
