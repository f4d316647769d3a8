"""A thin, fast REST layer over the kubernetes client: raw JSON in and out, a bounded worker pool.

Deserialising into the client's model classes costs more than the API round trip at fleet scale,
so the operator speaks JSON dicts. Calls are synchronous; ``Kube.run`` runs one in the pool and
returns an awaitable.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON = "application/json"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


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
    """Raw JSON calls; ``gate`` (when set) must allow every write: a leader that may have lost its
    lease stops writing at once, before a standby can take over."""

    def __init__(
        self, api: kubernetes.client.ApiClient, workers: int = 32, gate: Callable[[], bool] | None = None
    ) -> None:
        self.api = api
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube")
        self.gate = gate

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
        accept: str = JSON,
    ) -> dict[str, Any]:
        if method != "GET" and self.gate is not None and not self.gate():
            raise ApiError(0, "NotLeader", f"{method} {path}: this replica may no longer hold the lease")
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            resp = self._call(method, path, query or [], headers, body, timeout)
            data = resp.read()
        except ApiException as e:
            try:
                msg = json.loads(e.body or "{}").get("message") or str(e.body)
            except (ValueError, AttributeError):
                msg = str(e.body)
            raise ApiError(e.status or 0, e.reason or "", msg) from None
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

    def list_pages(
        self, path: str, query: list[tuple[str, Any]], limit: int = 500, accept: str = JSON
    ) -> Iterator[tuple[list[dict], str]]:
        """Pages of the objects at ``path`` (and, with the last page, the list's resourceVersion; ""
        before). A big list is never held whole: each page can be trimmed before the next comes."""
        cont = None
        while True:
            q = [*query, ("limit", limit)] + ([("continue", cont)] if cont else [])
            doc = self.request("GET", path, query=q, timeout=120, accept=accept)
            cont = doc.get("metadata", {}).get("continue")
            yield doc.get("items") or [], "" if cont else doc.get("metadata", {}).get("resourceVersion", "")
            if not cont:
                return

    def list_all(self, path: str, query: list[tuple[str, Any]]) -> tuple[list[dict], str]:
        """Every object at ``path`` (paginated) and the list's resourceVersion."""
        items: list[dict] = []
        rv = ""
        for page, page_rv in self.list_pages(path, query, limit=1000):
            items.extend(page)
            rv = page_rv
        return items, rv

    def list_names(self, path: str) -> set[str]:
        """Names (``namespace/name`` for namespaced kinds) from a metadata-only list: cheap to repeat."""
        out: set[str] = set()
        for page, _ in self.list_pages(path, [], limit=5000, accept=METADATA_LIST):
            for o in page:
                md = o.get("metadata") or {}
                out.add(f"{md['namespace']}/{md['name']}" if md.get("namespace") else md["name"])
        return out

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
