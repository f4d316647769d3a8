"""List-then-watch of one resource with server-side selectors, in a thread, into the event loop.

Each (re)list is streamed page by page and every object is trimmed on this thread to what the cache
keeps (a 41,250-node list is never held as whole JSON objects); it is delivered as one ``RESYNC``
with every trimmed object, so deletions missed while the watch was down are not lost. Then
``ADDED``/``MODIFIED``/``DELETED`` events follow, trimmed the same way. A 410 Gone (or any error)
relists after a short back-off.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .kube import ApiError, Kube

log = logging.getLogger("aicenter.informer")

Deliver = Callable[[str, Any], None]  # (event type, trimmed object or list of them)


class Informer:
    def __init__(
        self,
        kube: Kube,
        resource: str,
        path: str,
        query: list[tuple[str, Any]],
        deliver: Deliver,
        loop: asyncio.AbstractEventLoop,
        trim: Callable[[dict], Any] = lambda o: o,
    ) -> None:
        self.kube, self.resource, self.path, self.query = kube, resource, path, query
        self.deliver, self.loop, self.trim = deliver, loop, trim
        self.synced = threading.Event()
        self.relists = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"informer-{resource}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _post(self, kind: str, obj: Any) -> None:
        self.loop.call_soon_threadsafe(self.deliver, kind, obj)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                items: list[Any] = []
                rv = ""
                t0, pages = time.monotonic(), 0
                for page, page_rv in self.kube.list_pages(self.path, self.query):
                    items.extend(self.trim(o) for o in page)
                    rv = page_rv
                    pages += 1
                self.relists += 1
                log.info(
                    "informer %s listed %d in %.1f s (%d pages)",
                    self.resource,
                    len(items),
                    time.monotonic() - t0,
                    pages,
                )
                self._post("RESYNC", items)
                del items
                self.synced.set()
                backoff = 0.5
                while not self._stop.is_set():
                    for ev in self.kube.watch(self.path, self.query, rv):
                        t, obj = ev.get("type"), ev.get("object", {})
                        if t == "ERROR":
                            raise ApiError(obj.get("code", 0), obj.get("reason", ""), obj.get("message", ""))
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if t != "BOOKMARK":
                            self._post(t, self.trim(obj))
                        if self._stop.is_set():
                            return
            except Exception as e:  # relist on anything: 410 Gone, connection loss, …
                if self._stop.is_set():
                    return
                log.info("informer %s relisting after: %s", self.resource, e)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
