"""Leader election over a coordination.k8s.io Lease: only the holder schedules.

The lease is renewed on a thread of its own with an HTTP client of its own, so a renewal never waits
behind the operator's bulk writes. The leader counts its lease from the moment it *sent* the last
successful renewal (a monotonic clock) and stops writing — every write passes :meth:`may_write` —
a safety margin before a standby could take the lease over; then it steps down and the process
exits (it restarts clean and rebuilds from the API). Standby replicas keep their caches warm.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from .kube import MERGE, ApiError, Kube
from .objects import parse_time, rfc3339_micro

log = logging.getLogger("aicenter.leader")


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        lease_s: float,
        loop: asyncio.AbstractEventLoop,
        on_started: Callable[[], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.kube, self.ns, self.name, self.identity, self.lease_s = kube, namespace, name, identity, lease_s
        self.loop, self.on_started, self.on_lost = loop, on_started, on_lost
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.margin = max(1.0, lease_s / 4)  # stop writing this long before the lease could expire
        self.leading = False
        self.valid_until = 0.0  # monotonic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def may_write(self) -> bool:
        return self.leading and time.monotonic() < self.valid_until - self.margin

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _spec(self, now: float, transitions: int, acquire: float) -> dict:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_s),
            "acquireTime": rfc3339_micro(acquire),
            "renewTime": rfc3339_micro(now),
            "leaseTransitions": transitions,
        }

    def try_acquire(self) -> bool:
        now = time.time()
        timeout = max(1.0, self.lease_s / 4)
        try:
            lease = self.kube.request("GET", f"{self.path}/{self.name}", timeout=timeout)
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
                self.kube.request("POST", self.path, body=body, timeout=timeout)
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
            self.kube.request("PUT", f"{self.path}/{self.name}", body=lease, timeout=timeout)
            return True
        except ApiError as e:
            if e.status == 409:
                return False
            raise

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                ok = self.try_acquire()
            except Exception as e:
                log.warning("lease %s/%s: %s", self.ns, self.name, e)
                ok = False
            if ok:
                self.valid_until = sent + self.lease_s
                if not self.leading:
                    self.leading = True
                    log.info("became leader (%s)", self.identity)
                    self.loop.call_soon_threadsafe(self.on_started)
            elif self.leading and time.monotonic() >= self.valid_until - self.margin:
                self.leading = False
                log.error("could not renew the lease in time; stopped writing, stepping down")
                self.loop.call_soon_threadsafe(self.on_lost)
                return
            self._stop.wait(self.lease_s / 5)

    def release(self) -> None:
        """Give the lease up on a clean shutdown (the standby need not wait for it to expire)."""
        if not self.leading:
            return
        self.leading = False
        try:
            lease = self.kube.request("GET", f"{self.path}/{self.name}", timeout=5)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                self.kube.request(
                    "PATCH",
                    f"{self.path}/{self.name}",
                    body={"spec": {"holderIdentity": None, "renewTime": None}},
                    content_type=MERGE,
                    timeout=5,
                )
        except ApiError:
            pass
