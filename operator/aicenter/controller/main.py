"""Wiring: kopf handlers for the CRs, our own informers for nodes and pods, the loop, leadership,
status refresh, and the /metrics, /healthz, /readyz endpoints."""

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
from aiohttp import web

from aicenter import api

from .config import Settings
from .engine import GROUP_PATH, Engine
from .informer import Informer
from .kube import MERGE, ApiError, Kube, load_client
from .leader import LeaderElector
from .metrics import Metrics
from .summary import center_status, quota_status

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


def make_registry(engine: Engine, kube: Kube) -> kopf.OperatorRegistry:
    """kopf event handlers only: they feed the cache and never write finalizers or annotations."""
    reg = kopf.OperatorRegistry()

    @kopf.on.login(registry=reg)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(kube)

    @kopf.on.startup(registry=reg)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 60

    for plural, handler in (
        (api.PLURAL_AICENTERS, engine.on_center),
        (api.PLURAL_GPUQUOTAS, engine.on_quota),
        (api.PLURAL_GPUJOBS, engine.on_job),
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


async def seed(engine: Engine, kube: Kube) -> None:
    """List every AICenter, GPUQuota and GPUJob before deciding anything (restart safety)."""
    loop = asyncio.get_running_loop()
    for plural, handler in (
        (api.PLURAL_AICENTERS, engine.on_center),
        (api.PLURAL_GPUQUOTAS, engine.on_quota),
    ):
        items, _ = await loop.run_in_executor(kube.pool, kube.list_all, f"{GROUP_PATH}/{plural}", [])
        for o in items:
            handler("ADDED", o)
    await rebuild_jobs(engine, kube)


async def rebuild_jobs(engine: Engine, kube: Kube) -> None:
    """Rebuild every job record from a fresh list: the statuses are the durable decisions."""
    loop = asyncio.get_running_loop()
    paths = [f"{GROUP_PATH}/namespaces/{n}/{api.PLURAL_GPUJOBS}" for n in engine.settings.namespaces] or [
        f"{GROUP_PATH}/{api.PLURAL_GPUJOBS}"
    ]
    fresh: list[dict] = []
    for p in paths:
        items, _ = await loop.run_in_executor(kube.pool, kube.list_all, p, [])
        fresh += items
    for rec in list(engine.jobs.values()):
        engine._drop(rec)
    for o in fresh:
        engine.on_job("ADDED", o)


async def refresh_status(engine: Engine, kube: Kube) -> None:
    """Centre and quota status every few seconds (batched; written only when changed)."""
    written: dict[str, dict] = {}
    while True:
        await asyncio.sleep(engine.settings.status_interval)
        engine.metrics.observe_queue(engine)
        if not engine.leader or not engine.ready():
            continue
        now = time.time()
        per_q: dict[str, list[int]] = {}
        for rec in engine.jobs.values():
            if rec.quota and not rec.finished:
                per_q.setdefault(rec.quota, [0, 0])[0 if rec.placements else 1] += 1
        todo = [
            (f"{GROUP_PATH}/{api.PLURAL_AICENTERS}/{n}/status", center_status(engine, n, now))
            for n in sorted(engine.center_objs)
            if n in engine.centers
        ]
        todo += [
            (f"{GROUP_PATH}/{api.PLURAL_GPUQUOTAS}/{n}/status", quota_status(engine, n, now, per_q))
            for n in sorted(engine.quotas)
        ]
        for path, st in todo:
            cmp = (
                {k: v for k, v in st.items() if k != "conditions"},
                [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in st["conditions"]],
            )
            if written.get(path) == cmp:
                continue
            try:
                await kube.run("PATCH", path, body={"status": st}, content_type=MERGE)
                written[path] = cmp
            except ApiError as e:
                log.info("status %s: %s", path, e)


async def serve_http(engine: Engine, host: str, port: int) -> web.AppRunner | None:
    if not port:
        return None

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=engine.metrics.render(), content_type="text/plain")

    async def healthz(_: web.Request) -> web.Response:
        ok = time.time() - engine.last_cycle < max(30.0, 10 * engine.settings.cycle_interval)
        return web.Response(status=200 if ok else 503, text="ok" if ok else "loop stalled")

    async def readyz(_: web.Request) -> web.Response:
        ok = engine.ready()
        return web.Response(status=200 if ok else 503, text="ok" if ok else "caches not synced")

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz), web.get("/readyz", readyz)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def amain(s: Settings) -> int:
    kube = Kube(load_client(s.kubeconfig, pool=s.api_workers * 2), workers=s.api_workers)
    metrics = Metrics()
    engine = Engine(s, kube, metrics)
    loop = asyncio.get_running_loop()
    runner = await serve_http(engine, s.metrics_host, s.metrics_port)
    informers = [
        Informer(
            kube,
            "nodes",
            "/api/v1/nodes",
            [("labelSelector", s.node_selector)] if s.node_selector else [],
            engine.on_informer,
            loop,
        ),
        Informer(
            kube,
            "pods",
            "/api/v1/pods",
            [("labelSelector", f"{api.LABEL_MANAGED_BY}={api.MANAGED_BY}")],
            engine.on_informer,
            loop,
        ),
        Informer(
            kube,
            "foreign",
            "/api/v1/pods",
            [
                ("fieldSelector", "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"),
                ("labelSelector", f"{api.LABEL_MANAGED_BY}!={api.MANAGED_BY}"),
            ],
            engine.on_informer,
            loop,
        ),
        Informer(kube, "namespaces", "/api/v1/namespaces", [], engine.on_informer, loop),
    ]
    for inf in informers:
        inf.start()
    await seed(engine, kube)
    stop = asyncio.Event()
    exit_code = 0

    async def lead() -> None:
        nonlocal exit_code
        while not engine.ready():
            await asyncio.sleep(0.1)

        async def start() -> None:
            await rebuild_jobs(engine, kube)
            engine.leader = True
            engine.wake.set()

        if not s.leader_election:
            await start()
            return
        elector = LeaderElector(kube, s.lease_namespace, s.lease_name, s.identity, s.lease_seconds)

        def lost() -> None:
            nonlocal exit_code
            engine.leader = False
            exit_code = 1
            stop.set()

        try:
            await elector.run(start, lost)
        finally:
            if exit_code == 0:
                await elector.release()

    kopf_task = loop.create_task(
        kopf.operator(
            registry=make_registry(engine, kube),
            standalone=True,
            clusterwide=not s.namespaces,
            namespaces=s.namespaces or (),
            stop_flag=stop,
            memo=kopf.Memo(),
        )
    )
    tasks = [
        kopf_task,
        loop.create_task(engine.run()),
        loop.create_task(lead()),
        loop.create_task(refresh_status(engine, kube)),
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
        for inf in informers:
            inf.stop()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
        if runner:
            await runner.cleanup()
        kube.close()
    return exit_code
