"""The operator's HTTP endpoints: /metrics, /healthz, /readyz and the read-only /visibility API.

With ``--metrics-auth`` (the chart's default) /metrics answers only requests whose bearer token the
API server authenticates (TokenReview) and authorises (SubjectAccessReview of a ``get`` on the path,
as controller-runtime's metrics filter does). /visibility is reached through the API server's
service proxy (``.../services/<operator>:metrics/proxy/visibility/v1/...``), which authorises the
caller by RBAC (``get`` on ``services/proxy``) and strips its token before proxying, so the
operator cannot check a token there; it serves read-only data. The health probes stay open (the
kubelet calls them without a token).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .kube import ApiError, Kube

log = logging.getLogger("aicenter.http")
AUTH_CACHE_S = 60.0


class Authorizer:
    """Bearer token → allowed for a path, through the API server; answers are cached a minute."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._cache: dict[tuple[str, str], tuple[float, bool]] = {}

    async def allowed(self, token: str, path: str) -> bool:
        key = (token, path)
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < AUTH_CACHE_S:
            return hit[1]
        ok = False
        try:
            review = await self.kube.run(
                "POST",
                "/apis/authentication.k8s.io/v1/tokenreviews",
                body={
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "spec": {"token": token},
                },
            )
            st = review.get("status") or {}
            if st.get("authenticated"):
                user = st.get("user") or {}
                sar = await self.kube.run(
                    "POST",
                    "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                    body={
                        "apiVersion": "authorization.k8s.io/v1",
                        "kind": "SubjectAccessReview",
                        "spec": {
                            "user": user.get("username", ""),
                            "groups": user.get("groups") or [],
                            "uid": user.get("uid", ""),
                            "extra": user.get("extra") or {},
                            "nonResourceAttributes": {"path": path, "verb": "get"},
                        },
                    },
                )
                ok = bool((sar.get("status") or {}).get("allowed"))
        except ApiError as e:
            log.warning("authorising a request for %s: %s", path, e)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = (time.monotonic(), ok)
        return ok


def make_app(
    metrics: Callable[[], str],
    healthy: Callable[[], bool],
    ready: Callable[[], bool],
    visibility: Callable[[str, dict[str, str]], Any],
    authorizer: Authorizer | None,
) -> web.Application:
    async def guard(request: web.Request, path: str) -> web.Response | None:
        if authorizer is None:
            return None
        auth = request.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer "):
            return web.Response(status=401, text="a bearer token is required")
        if not await authorizer.allowed(auth[7:].strip(), path):
            return web.Response(status=403, text=f"not allowed to get {path}")
        return None

    async def metrics_h(request: web.Request) -> web.Response:
        denied = await guard(request, "/metrics")
        return denied or web.Response(text=metrics(), content_type="text/plain")

    async def healthz(_: web.Request) -> web.Response:
        ok = healthy()
        return web.Response(status=200 if ok else 503, text="ok" if ok else "loop stalled")

    async def readyz(_: web.Request) -> web.Response:
        ok = ready()
        return web.Response(status=200 if ok else 503, text="ok" if ok else "caches not synced")

    async def visibility_h(request: web.Request) -> web.Response:
        what = request.match_info["what"]
        try:
            doc = visibility(what, dict(request.query))
        except KeyError as e:
            return web.Response(status=404, text=f"not found: {e}")
        except Exception as e:
            if type(e).__name__ != "NotLeader":
                raise
            return web.Response(status=421, text=str(e))  # misdirected: the Service picked a standby
        return web.Response(text=json.dumps(doc), content_type="application/json")

    app = web.Application()
    app.add_routes(
        [
            web.get("/metrics", metrics_h),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/visibility/v1/{what}", visibility_h),
        ]
    )
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner | None:
    if not port:
        return None
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
