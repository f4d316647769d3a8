"""Operator settings from flags, with environment variables as defaults."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field

from aicenter.api import DEFAULT_SCHEDULER_NAME


def _env_bool(name: str, default: bool) -> bool:
    v = os.environ.get(name)
    return default if v is None else v.strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Settings:
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    metrics_port: int = 8080
    metrics_host: str = "0.0.0.0"
    log_level: str = "INFO"
    log_format: str = "text"
    leader_election: bool = True
    lease_namespace: str = "default"
    lease_name: str = "aicenter-operator"
    lease_seconds: float = 15.0
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    node_selector: str = "nvidia.com/gpu.present=true"
    cycle_interval: float = 1.0  # a cycle runs at least this often (and at once on changes)
    status_interval: float = 2.0  # centre and quota status refresh
    api_workers: int = 32  # concurrent API writes
    kubeconfig: str | None = None
    delegate_scheduler: str = "default-scheduler"  # binds pods whose templates we cannot evaluate
    room_timeout: float = 120.0  # how long a pod's create waits for its node to have room
    bind_timeout: float = 60.0  # how long a delegated pod may stay unbound before it is placed again
    sweep_interval: float = 30.0  # metadata-only lists of the CRs that catch missed deletions
    metrics_auth: bool = False  # /metrics and /visibility need a token the API server authorises


def add_arguments(ap: argparse.ArgumentParser) -> None:
    e = os.environ.get
    ap.add_argument(
        "--namespace",
        dest="namespaces",
        action="append",
        default=[n for n in e("AICENTER_NAMESPACES", "").split(",") if n],
        help="watch GPUJobs in this namespace (repeatable; default: all) [AICENTER_NAMESPACES]",
    )
    ap.add_argument(
        "--scheduler-name",
        default=e("AICENTER_SCHEDULER_NAME", DEFAULT_SCHEDULER_NAME),
        help="schedulerName set on the pods the operator places [AICENTER_SCHEDULER_NAME]",
    )
    ap.add_argument(
        "--metrics-port",
        type=int,
        default=int(e("AICENTER_METRICS_PORT", "8080")),
        help="port for /metrics, /healthz, /readyz; 0 disables [AICENTER_METRICS_PORT]",
    )
    ap.add_argument("--metrics-host", default=e("AICENTER_METRICS_HOST", "0.0.0.0"))
    ap.add_argument(
        "--log-level",
        default=e("AICENTER_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"],
    )
    ap.add_argument("--log-format", default=e("AICENTER_LOG_FORMAT", "text"), choices=["text", "json"])
    ap.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=_env_bool("AICENTER_LEADER_ELECTION", True),
        help="only the holder of a Lease schedules [AICENTER_LEADER_ELECTION]",
    )
    ap.add_argument(
        "--lease-namespace", default=e("AICENTER_LEASE_NAMESPACE") or e("POD_NAMESPACE") or "default"
    )
    ap.add_argument("--lease-name", default=e("AICENTER_LEASE_NAME", "aicenter-operator"))
    ap.add_argument("--lease-seconds", type=float, default=float(e("AICENTER_LEASE_SECONDS", "15")))
    ap.add_argument("--identity", default=e("AICENTER_IDENTITY") or f"{socket.gethostname()}-{os.getpid()}")
    ap.add_argument(
        "--node-selector",
        default=e("AICENTER_NODE_SELECTOR", "nvidia.com/gpu.present=true"),
        help="server-side label selector for the GPU nodes to watch [AICENTER_NODE_SELECTOR]",
    )
    ap.add_argument("--cycle-interval", type=float, default=float(e("AICENTER_CYCLE_INTERVAL", "1.0")))
    ap.add_argument("--api-workers", type=int, default=int(e("AICENTER_API_WORKERS", "32")))
    ap.add_argument("--kubeconfig", default=e("KUBECONFIG"))
    ap.add_argument(
        "--delegate-scheduler",
        default=e("AICENTER_DELEGATE_SCHEDULER", "default-scheduler"),
        help="scheduler that binds pods whose templates use what the operator does not evaluate "
        "(PVCs, inter-pod affinity, spread constraints), pinned to the chosen node",
    )
    ap.add_argument("--room-timeout", type=float, default=float(e("AICENTER_ROOM_TIMEOUT", "120")))
    ap.add_argument("--bind-timeout", type=float, default=float(e("AICENTER_BIND_TIMEOUT", "60")))
    ap.add_argument("--sweep-interval", type=float, default=float(e("AICENTER_SWEEP_INTERVAL", "30")))
    ap.add_argument(
        "--metrics-auth",
        action=argparse.BooleanOptionalAction,
        default=_env_bool("AICENTER_METRICS_AUTH", False),
        help="serve /metrics only to bearer tokens the API server authenticates (TokenReview) and "
        "authorises (SubjectAccessReview); /visibility is read through the API server's service proxy, "
        "which checks RBAC itself [AICENTER_METRICS_AUTH]",
    )


def from_args(ns: argparse.Namespace) -> Settings:
    return Settings(
        namespaces=list(dict.fromkeys(ns.namespaces)),
        scheduler_name=ns.scheduler_name,
        metrics_port=ns.metrics_port,
        metrics_host=ns.metrics_host,
        log_level=ns.log_level.upper(),
        log_format=ns.log_format,
        leader_election=ns.leader_election,
        lease_namespace=ns.lease_namespace,
        lease_name=ns.lease_name,
        lease_seconds=ns.lease_seconds,
        identity=ns.identity,
        node_selector=ns.node_selector,
        cycle_interval=ns.cycle_interval,
        api_workers=ns.api_workers,
        kubeconfig=ns.kubeconfig,
        delegate_scheduler=ns.delegate_scheduler,
        room_timeout=ns.room_timeout,
        bind_timeout=ns.bind_timeout,
        sweep_interval=ns.sweep_interval,
        metrics_auth=ns.metrics_auth,
    )
