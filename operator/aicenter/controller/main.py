"""Wiring: our informers for nodes, pods and namespaces, kopf event handlers for the CRs, periodic
metadata-only sweeps of the CRs, the loop, leadership, status refresh and the HTTP endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from typing import Any

import kopf

from aicenter import __version__, api

from .cache import trim_pod
from .config import Settings
from .http import Authorizer, make_app, serve
from .informer import Informer
from .kube import Kube, load_client
from .leader import LeaderElector
from .loop import Controller
from .metrics import Metrics
from .objects import node_view
from .status import gauge_lines
from .visibility import snapshot

log = logging.getLogger("aicenter.operator")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup_logging(s: Settings) -> None:
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(
        JsonFormatter()
        if s.log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [h]
    root.setLevel(s.log_level)
    logging.getLogger("kopf").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def make_registry(ctl: Controller, kube: Kube) -> kopf.OperatorRegistry:
    """kopf event handlers only: they feed the cache and never write finalizers or annotations."""
    reg = kopf.OperatorRegistry()

    @kopf.on.login(registry=reg)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(kube)

    @kopf.on.startup(registry=reg)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # the operator writes its own Events (events.k8s.io)
        settings.scanning.disabled = True  # its resources are named exactly: no CRD or namespace scans
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 60

    for plural, handler in (
        (api.PLURAL_AICENTERS, ctl.cache.on_center),
        (api.PLURAL_GPUQUOTAS, ctl.cache.on_quota),
        (api.PLURAL_GPUJOBS, ctl.cache.on_job),
    ):

        def make(h: Any) -> Any:
            async def on_event(event: dict, **_: Any) -> None:
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED", None):
                    h(event.get("type") or "ADDED", event["object"])

            return on_event

        kopf.on.event(api.GROUP, api.VERSION, plural, registry=reg, id=f"cache-{plural}")(make(handler))
    return reg


def connection_info(kube: Kube) -> kopf.ConnectionInfo:
    cfg = kube.api.configuration
    token = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    if token and token.lower().startswith("bearer "):
        token = token[7:]
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        token=token,
        scheme="Bearer" if token else None,
    )


def job_paths(s: Settings) -> list[str]:
    return [f"{api.GROUP_PATH}/namespaces/{n}/{api.PLURAL_GPUJOBS}" for n in s.namespaces] or [
        f"{api.GROUP_PATH}/{api.PLURAL_GPUJOBS}"
    ]


async def list_jobs(ctl: Controller, kube: Kube) -> tuple[list[dict], float]:
    """Every GPUJob (a consistent list) and the local time the list started."""
    loop = asyncio.get_running_loop()
    t = ctl.clock()
    items: list[dict] = []
    for p in job_paths(ctl.settings):
        got, _ = await loop.run_in_executor(kube.pool, kube.list_all, p, [])
        items += got
    return items, t


async def seed(ctl: Controller, kube: Kube) -> None:
    """List every AICenter, GPUQuota and GPUJob before deciding anything (restart safety)."""
    loop = asyncio.get_running_loop()
    for plural, handler in (
        (api.PLURAL_AICENTERS, ctl.cache.on_center),
        (api.PLURAL_GPUQUOTAS, ctl.cache.on_quota),
    ):
        items, _ = await loop.run_in_executor(kube.pool, kube.list_all, f"{api.GROUP_PATH}/{plural}", [])
        for o in items:
            handler("ADDED", o)
    jobs, t = await list_jobs(ctl, kube)
    ctl.cache.rebuild(jobs, t)


async def sweep_deleted(ctl: Controller, kube: Kube) -> None:
    """Metadata-only lists of the CRs now and then: a watch relisting after 410 Gone reports no
    deletions, so objects seen before a list and missing from it are dropped here."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(ctl.settings.sweep_interval)
        try:
            for kind, paths in (
                (api.KIND_AICENTER, [f"{api.GROUP_PATH}/{api.PLURAL_AICENTERS}"]),
                (api.KIND_GPUQUOTA, [f"{api.GROUP_PATH}/{api.PLURAL_GPUQUOTAS}"]),
                (api.KIND_GPUJOB, job_paths(ctl.settings)),
            ):
                t = ctl.clock()
                names: set[str] = set()
                for p in paths:
                    names |= await loop.run_in_executor(kube.pool, kube.list_names, p)
                ctl.cache.sweep_deleted(kind, names, t)
        except Exception as e:
            log.info("sweep of deleted objects: %s", e)


async def refresh(ctl: Controller) -> None:
    """Gauges, and centre and quota status, every few seconds (written only when changed)."""
    while True:
        await asyncio.sleep(ctl.settings.status_interval)
        ctl.metrics.set_gauges(gauge_lines(ctl.cache, ctl.leader, __version__))
        if ctl.leader and ctl.ready():
            try:
                await ctl.status.refresh_sites(ctl.clock())
            except Exception:
                log.exception("refreshing centre and quota status")


def informers(ctl: Controller, kube: Kube, loop: asyncio.AbstractEventLoop) -> list[Informer]:
    s, cache = ctl.settings, ctl.cache
    node_q = [("labelSelector", s.node_selector)] if s.node_selector else []
    ours = [("labelSelector", f"{api.LABEL_MANAGED_BY}={api.MANAGED_BY}")]
    # others' pods that name this operator as their scheduler (every phase: it places and binds them)
    workload = [
        ("fieldSelector", f"spec.schedulerName={s.scheduler_name}"),
        ("labelSelector", f"{api.LABEL_MANAGED_BY}!={api.MANAGED_BY}"),
    ]
    # every other bound, live pod: it holds room on its node
    others = [
        (
            "fieldSelector",
            f"spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed,spec.schedulerName!={s.scheduler_name}",
        ),
        ("labelSelector", f"{api.LABEL_MANAGED_BY}!={api.MANAGED_BY}"),
    ]

    def pods(source: str):
        return lambda kind, obj: cache.on_pods(f"RESYNC:{source}" if kind == "RESYNC" else kind, obj)

    def ns_trim(o: dict) -> dict:
        md = o["metadata"]
        return {"metadata": {"name": md["name"], "labels": md.get("labels") or {}}}

    return [
        Informer(kube, "nodes", "/api/v1/nodes", node_q, cache.on_nodes, loop, node_view),
        Informer(kube, "pods", "/api/v1/pods", ours, pods("ours"), loop, lambda o: trim_pod(o, "ours")),
        Informer(
            kube,
            "workload",
            "/api/v1/pods",
            workload,
            pods("workload"),
            loop,
            lambda o: trim_pod(o, "workload"),
        ),
        Informer(
            kube, "foreign", "/api/v1/pods", others, pods("others"), loop, lambda o: trim_pod(o, "others")
        ),
        Informer(kube, "namespaces", "/api/v1/namespaces", [], cache.on_namespaces, loop, ns_trim),
    ]


async def amain(s: Settings) -> int:
    started = time.monotonic()
    kube = Kube(load_client(s.kubeconfig, pool=s.api_workers * 2), workers=s.api_workers)
    metrics = Metrics()
    ctl = Controller(s, kube, metrics)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    exit_code = 0

    def healthy() -> bool:
        return time.time() - ctl.last_cycle < max(30.0, 10 * s.cycle_interval)

    app = make_app(
        metrics.render,
        healthy,
        ctl.ready,
        lambda what, q: snapshot(ctl, what, q),
        Authorizer(kube) if s.metrics_auth else None,
    )
    runner = await serve(app, s.metrics_host, s.metrics_port)
    infs = informers(ctl, kube, loop)
    for inf in infs:
        inf.start()
    await seed(ctl, kube)

    async def take_over() -> None:
        while not ctl.ready():
            await asyncio.sleep(0.1)
        jobs, t = await list_jobs(ctl, kube)
        ctl.lead(jobs, t)
        log.info(
            "scheduling (%d jobs, %d nodes), %.1f s after start",
            len(ctl.cache.jobs),
            len(ctl.cache.views),
            time.monotonic() - started,
        )

    elector: LeaderElector | None = None
    if s.leader_election:
        lease_kube = Kube(load_client(s.kubeconfig, pool=2), workers=1)

        def lost() -> None:
            nonlocal exit_code
            ctl.leader = False
            exit_code = 1
            stop.set()

        elector = LeaderElector(
            lease_kube,
            s.lease_namespace,
            s.lease_name,
            s.identity,
            s.lease_seconds,
            loop,
            lambda: ctl.spawn(take_over()),
            lost,
        )
        kube.gate = elector.may_write
        elector.start()
    else:
        ctl.spawn(take_over())

    kopf_task = loop.create_task(
        kopf.operator(
            registry=make_registry(ctl, kube),
            standalone=True,
            clusterwide=not s.namespaces,
            namespaces=s.namespaces or (),
            stop_flag=stop,
            memo=kopf.Memo(),
        )
    )
    tasks = [
        kopf_task,
        loop.create_task(ctl.run()),
        loop.create_task(refresh(ctl)),
        loop.create_task(sweep_deleted(ctl, kube)),
    ]
    # Stop on SIGTERM/SIGINT, and whenever kopf stops (it handles those signals itself when it can).
    kopf_task.add_done_callback(lambda _: stop.set())
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    try:
        await stop.wait()
    finally:
        for t in tasks:
            t.cancel()
        for inf in infs:
            inf.stop()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
        if elector is not None:
            elector.stop()
            if exit_code == 0:
                await loop.run_in_executor(None, elector.release)
        if runner:
            await runner.cleanup()
        kube.close()
    return exit_code
