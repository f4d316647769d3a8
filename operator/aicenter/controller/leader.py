"""Leader election over a coordination.k8s.io Lease: only the holder schedules.

Standby replicas keep their caches warm. A leader that fails to renew before the lease would
expire steps down at once (and the process exits, so it restarts clean and rebuilds from the API).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from .convert import parse_time
from .kube import MERGE, ApiError, Kube

log = logging.getLogger("aicenter.leader")


def _micro(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, lease_s: float = 15.0) -> None:
        self.kube, self.ns, self.name, self.identity, self.lease_s = kube, namespace, name, identity, lease_s
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

    def _spec(self, now: float, transitions: int, acquire: float) -> dict:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_s),
            "acquireTime": _micro(acquire),
            "renewTime": _micro(now),
            "leaseTransitions": transitions,
        }

    async def try_acquire(self) -> bool:
        now = time.time()
        try:
            lease = await self.kube.run("GET", f"{self.path}/{self.name}")
        except ApiError as e:
            if e.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.ns},
                "spec": self._spec(now, 0, now),
            }
            try:
                await self.kube.run("POST", self.path, body=body)
                return True
            except ApiError as e2:
                if e2.status == 409:
                    return False
                raise
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renew = parse_time(spec.get("renewTime")) or 0.0
        duration = float(spec.get("leaseDurationSeconds") or self.lease_s)
        if holder and holder != self.identity and now < renew + duration:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        acquire = parse_time(spec.get("acquireTime")) if holder == self.identity else now
        lease["spec"] = self._spec(now, transitions, acquire or now)
        try:  # a PUT with the read resourceVersion: a concurrent taker gets 409 and loses
            await self.kube.run("PUT", f"{self.path}/{self.name}", body=lease)
            return True
        except ApiError as e:
            if e.status == 409:
                return False
            raise

    async def run(self, on_start: Callable[[], Awaitable[None]], on_stop: Callable[[], None]) -> None:
        leading = False
        last_renew = 0.0
        while True:
            try:
                ok = await self.try_acquire()
            except Exception as e:
                log.warning("lease %s/%s: %s", self.ns, self.name, e)
                ok = False
            now = time.monotonic()
            if ok:
                last_renew = now
                if not leading:
                    leading = True
                    log.info("became leader (%s)", self.identity)
                    await on_start()
            elif leading and now - last_renew > self.lease_s * 2 / 3:
                log.error("lost the lease; stepping down")
                on_stop()
                return
            await asyncio.sleep(self.lease_s / 3 if leading else self.lease_s / 5)

    async def release(self) -> None:
        try:
            lease = await self.kube.run("GET", f"{self.path}/{self.name}")
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                await self.kube.run(
                    "PATCH",
                    f"{self.path}/{self.name}",
                    body={"spec": {"holderIdentity": None, "renewTime": None}},
                    content_type=MERGE,
                )
        except ApiError:
            pass
