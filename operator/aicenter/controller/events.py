"""Kubernetes Events through events.k8s.io/v1, with the reporting controller and an action.

Fire and forget: an Event that cannot be written is logged at debug level and dropped (Events are
best effort in Kubernetes too); the number in flight is bounded so a burst cannot starve the
scheduling writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aicenter import api
from aicenter.api import Obj

from .kube import ApiError, Kube
from .objects import rfc3339_micro

log = logging.getLogger("aicenter.events")
REPORTING_CONTROLLER = "aicenter.dev/operator"
MAX_IN_FLIGHT = 64


class Events:
    def __init__(self, kube: Kube, instance: str, clock: Callable[[], float], spawn: Callable) -> None:
        self.kube, self.instance, self.clock, self.spawn = kube, instance, clock, spawn
        self.in_flight = 0
        self.dropped = 0
        self.count = 0

    def job(
        self, namespace: str, name: str, uid: str, etype: str, reason: str, action: str, note: str
    ) -> None:
        ref = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND_GPUJOB,
            "namespace": namespace,
            "name": name,
            "uid": uid,
        }
        self.emit(namespace, ref, etype, reason, action, note)

    def pod(self, namespace: str, name: str, etype: str, reason: str, action: str, note: str) -> None:
        self.emit(
            namespace,
            {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": name},
            etype,
            reason,
            action,
            note,
        )

    def emit(self, namespace: str, regarding: Obj, etype: str, reason: str, action: str, note: str) -> None:
        if self.in_flight >= MAX_IN_FLIGHT:
            self.dropped += 1
            return
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            # events.k8s.io/v1 refuses a generateName ending in '.': name it as kubectl shows events
            "metadata": {
                "name": f"{regarding['name']}.{int(self.clock() * 1e9):x}{self.count:x}",
                "namespace": namespace,
            },
            "eventTime": rfc3339_micro(self.clock()),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self.instance[:128],
            "action": action,
            "reason": reason,
            "regarding": regarding,
            "note": note[:1024],
            "type": etype,
        }
        self.in_flight += 1
        self.count += 1

        async def post() -> None:
            try:
                await self.kube.run(
                    "POST", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events", body=body
                )
            except ApiError as e:
                log.debug("event %s for %s/%s: %s", reason, namespace, regarding["name"], e)
            finally:
                self.in_flight -= 1

        try:
            self.spawn(post())
        except RuntimeError:  # no running loop (unit tests of pure parts)
            self.in_flight -= 1
