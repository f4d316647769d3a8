"""Helpers for the kubectl plugin's tests: run the CLI in-process, the fleet's facts, an operator on a
routable address, the operator's Service behind the API server's proxy, ServiceAccount kubeconfigs."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import re
import socket
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aicenter.plugin import cli
from aicenter_testbed.fleet import Fleet, iter_nodes, load_fleet, scale_fleet
from aicenter_testbed.operator import OperatorProcess

SCALE = 0.001  # the session's sim_fleet


def fleet() -> Fleet:
    return scale_fleet(load_fleet(), SCALE)


@dataclass
class Result:
    rc: int
    out: str
    err: str


def run_cli(*args: str) -> Result:
    """``kubectl aicenter ARGS`` in this process (the console script's ``main``)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(args))
    return Result(rc, out.getvalue(), err.getvalue())


def rows(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the first table whose header line starts with ``first_header``, each as
    {header: cell}. Columns are two or more spaces apart and no cell is empty ("-" stands for none)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(first_header))
    names = re.split(r" {2,}", lines[start].strip())
    out = []
    for line in lines[start + 1 :]:
        if not line.strip() or line.startswith(("USE:", "Queue", "Quota", "Centre")):
            break
        cells = re.split(r" {2,}", line.strip())
        assert len(cells) == len(names), f"{line!r} does not split into {names}"
        out.append(dict(zip(names, cells, strict=True)))
    return out


def racks_of(f: Fleet, center: str) -> set[tuple[str, str]]:
    """(GPU class, rack) of a centre's nodes: the racks the operator reports per class."""
    return {(n.gpu_class, n.rack) for n in iter_nodes(f) if n.center == center}


def cliques_of(f: Fleet, center: str) -> set[tuple[str, str]]:
    return {(n.gpu_class, n.clique) for n in iter_nodes(f) if n.center == center and n.clique}


def host_ip() -> str | None:
    """A non-loopback IPv4 address of this machine (the API server's proxy refuses loopback
    endpoints), or None."""
    candidates: list[str] = []
    with contextlib.suppress(OSError):
        candidates += [a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        candidates.append(s.getsockname()[0])
    for ip in candidates:
        addr = ipaddress.ip_address(ip)
        if not (addr.is_loopback or addr.is_link_local or addr.is_unspecified):
            return ip
    return None


@dataclass
class ReachableOperator(OperatorProcess):
    """The operator process listening on ``host`` (a routable address, so that an Endpoints object
    can point the API server's service proxy at it) instead of 127.0.0.1."""

    host: str = "127.0.0.1"
    args: list[str] = field(default_factory=lambda: ["--no-leader-election"])

    def command(self) -> list[str]:
        return [*super().command(), "--metrics-host", self.host]

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except OSError as e:
            return getattr(e, "code", 0) or 0, str(e)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"


def token_kubeconfig(cluster: Any, token: str, path: Path, namespace: str = "default") -> Path:
    """A kubeconfig for the cluster's API server that authenticates with a bearer token."""
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    ctx = next(c["context"] for c in admin["contexts"] if c["name"] == admin["current-context"])
    server = dict(next(c["cluster"] for c in admin["clusters"] if c["name"] == ctx["cluster"]))
    ca = server.get("certificate-authority")
    if ca and not Path(ca).is_absolute():
        server["certificate-authority"] = str((Path(cluster.kubeconfig).parent / ca).resolve())
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": server}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": namespace}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def sa_token(cluster: Any, namespace: str, name: str) -> str:
    status, doc = cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    assert status == 201, f"TokenRequest {namespace}/{name}: {status} {doc}"
    return doc["status"]["token"]
