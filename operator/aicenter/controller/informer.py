"""List-then-watch of one resource with server-side selectors, in a thread, into the event loop.

Each (re)list is delivered as one ``RESYNC`` with every object, so deletions missed while the watch
was down are not lost; then ``ADDED``/``MODIFIED``/``DELETED`` events follow. A 410 Gone (or any
error) relists after a short back-off.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from .kube import ApiError, Kube

log = logging.getLogger("aicenter.informer")

Deliver = Callable[[str, str, Any], None]  # (resource, event type, object or list)


class Informer:
    def __init__(
        self,
        kube: Kube,
        resource: str,
        path: str,
        query: list[tuple[str, Any]],
        deliver: Deliver,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.kube, self.resource, self.path, self.query = kube, resource, path, query
        self.deliver, self.loop = deliver, loop
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"informer-{resource}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _post(self, kind: str, obj: Any) -> None:
        self.loop.call_soon_threadsafe(self.deliver, self.resource, kind, obj)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                items, rv = self.kube.list_all(self.path, self.query)
                self._post("RESYNC", items)
                self.synced.set()
                backoff = 0.5
                while not self._stop.is_set():
                    for ev in self.kube.watch(self.path, self.query, rv):
                        t, obj = ev.get("type"), ev.get("object", {})
                        if t == "ERROR":
                            raise ApiError(obj.get("code", 0), obj.get("reason", ""), obj.get("message", ""))
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if t != "BOOKMARK":
                            self._post(t, obj)
                        if self._stop.is_set():
                            return
            except Exception as e:  # relist on anything: 410 Gone, connection loss, …
                if self._stop.is_set():
                    return
                log.info("informer %s relisting after: %s", self.resource, e)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
