"""``kubectl aicenter dashboard``: a live picture of the centres, quotas and queue on a local web page.

A small aiohttp server (127.0.0.1 by default) serves one page (``web/index.html``, ``app.css``,
``app.js``: plain HTML/CSS/JS in the package, no external assets) and ``GET /api/snapshot``: the
operator's ``centers``, ``quotas`` and ``queue`` documents in one JSON object, fetched from the same
source as the CLI's. The page polls it every ``--refresh`` seconds and redraws.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from importlib import resources
from typing import Any

from aiohttp import web

from . import views
from .source import PluginError, Source

ASSETS = {
    "/": ("index.html", "text/html"),
    "/app.css": ("app.css", "text/css"),
    "/app.js": ("app.js", "application/javascript"),
}
# Everything the page loads comes from this server; nothing from elsewhere.
CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:"


def asset(name: str) -> bytes:
    return resources.files("aicenter.plugin").joinpath("web", name).read_bytes()


def snapshot(source: Source, refresh: float) -> dict[str, Any]:
    """The page's data: centres (with racks and cliques), quotas and the queue, in one document."""
    centers = source.get("centers")
    quotas = source.get("quotas")
    queue = source.get("queue")
    classes = views.quota_classes(quotas)
    pending = [{**e, "gpuClass": views.class_of(e, classes)} for e in queue.get("pending") or []]
    return {
        "generatedAt": centers.get("generatedAt"),
        "fetchedAt": time.time(),
        "source": source.describe(),
        "refreshSeconds": refresh,
        "centers": centers.get("centers") or [],
        "quotas": quotas.get("quotas") or [],
        "pending": pending,
    }


def make_app(source: Source, refresh: float = 5.0) -> web.Application:
    lock = asyncio.Lock()  # one fetch at a time: several open tabs share the operator's attention

    async def page(request: web.Request) -> web.Response:
        name, ctype = ASSETS[request.path]
        return web.Response(
            body=asset(name),
            content_type=ctype,
            charset="utf-8",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
        )

    async def snap(_: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        async with lock:
            try:
                doc = await loop.run_in_executor(None, snapshot, source, refresh)
            except PluginError as e:
                return web.json_response({"error": str(e)}, status=502)
        return web.Response(
            text=json.dumps(doc), content_type="application/json", headers={"Cache-Control": "no-store"}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.add_routes([web.get(p, page) for p in ASSETS])
    app.add_routes([web.get("/api/snapshot", snap), web.get("/healthz", healthz)])
    return app


def serve(source: Source, address: str, port: int, refresh: float) -> int:
    """Serve until interrupted (Ctrl-C or SIGTERM); prints the page's URL once it listens."""

    async def run() -> None:
        runner = web.AppRunner(make_app(source, refresh), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, address, port).start()
        except OSError as e:
            await runner.cleanup()
            raise PluginError(f"cannot listen on {address}:{port}: {e.strerror or e}") from None
        bound = runner.addresses[0][1] if runner.addresses else port
        host = f"[{address}]" if ":" in address else address
        print(f"dashboard: http://{host}:{bound}/ (data from {source.describe()}; Ctrl-C stops)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    print("dashboard stopped", file=sys.stderr)
    return 0
