"""A thin, fast REST layer over the kubernetes client: raw JSON in and out, a bounded worker pool.

Deserialising into the client's model classes costs more than the API round trip at fleet scale,
so the operator speaks JSON dicts. Calls are synchronous; ``Kube.run`` runs one in the pool and
returns an awaitable.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

MERGE = "application/merge-patch+json"
JSON = "application/json"


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def load_client(kubeconfig: str | None = None, pool: int = 64) -> kubernetes.client.ApiClient:
    cfg = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = pool
    return kubernetes.client.ApiClient(cfg)


class Kube:
    def __init__(self, api: kubernetes.client.ApiClient, workers: int = 32) -> None:
        self.api = api
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube")

    def _call(self, method: str, path: str, query: list, headers: dict, body: Any, timeout: float) -> Any:
        m, url, hdrs, b, post = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        return self.api.call_api(
            m, url, header_params=hdrs, body=b, post_params=post, _request_timeout=timeout
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = JSON,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            resp = self._call(method, path, query or [], headers, body, timeout)
            data = resp.read()
        except ApiException as e:
            raise ApiError(e.status or 0, e.reason or "", str(e.body)) from None
        except Exception as e:  # connection errors, timeouts
            raise ApiError(0, type(e).__name__, str(e)) from None
        if resp.status >= 400:
            try:
                doc = json.loads(data or b"{}")
            except ValueError:
                doc = {}
            raise ApiError(
                resp.status, doc.get("reason", resp.reason or ""), doc.get("message", str(data[:500]))
            )
        return json.loads(data) if data else {}

    async def run(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: self.request(method, path, **kw))

    def list_all(self, path: str, query: list[tuple[str, Any]]) -> tuple[list[dict], str]:
        """Every object at ``path`` (paginated) and the list's resourceVersion."""
        items: list[dict] = []
        cont = None
        while True:
            q = [*query, ("limit", 1000)] + ([("continue", cont)] if cont else [])
            doc = self.request("GET", path, query=q, timeout=120)
            items.extend(doc.get("items", []))
            cont = doc.get("metadata", {}).get("continue")
            if not cont:
                return items, doc.get("metadata", {}).get("resourceVersion", "")

    def watch(self, path: str, query: list[tuple[str, Any]], rv: str, timeout_s: int = 300) -> Iterator[dict]:
        q = [
            *query,
            ("watch", "true"),
            ("resourceVersion", rv),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", timeout_s),
        ]
        resp = self._call("GET", path, q, {"Accept": JSON}, None, timeout_s + 30)
        raw = resp.response
        try:
            if resp.status >= 400:
                raise ApiError(resp.status, resp.reason or "", raw.data[:500].decode(errors="replace"))
            for line in iter_resp_lines(raw):
                if line:
                    yield json.loads(line)
        finally:
            raw.release_conn()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
