"""How the test bed sizes its simulation and control plane to the number of simulated nodes.

Every simulated node costs the machine a steady stream of writes that a real kubelet would make:
its Lease renewed by kwok, its status heartbeat (a kwok Stage), and a look by the node lifecycle
controller each monitor period. At 1,000 nodes the kubelet-like defaults cost little; at the full
fleet (41,250 nodes) on two cores they do not fit: 120 s leases are renewed every 30 s, 1,375
writes/s, kwok falls behind, leases expire and nodes go NotReady in a growing wave.

:func:`tuning_for` keeps the defaults below about 1,500 nodes (so small test beds behave exactly
as before) and above that stretches the intervals so that the whole fleet costs a fixed budget of
writes per second:

* lease renewals: kwok renews at a quarter of the lease duration; the renew interval grows so that
  all leases together stay at :data:`LEASE_RENEWALS_PER_S`;
* the node lifecycle controller's ``--node-monitor-grace-period`` stays a full renew interval (and
  at least 120 s) above the renew interval, so a renewal that is late by a whole interval still
  keeps its node Ready;
* node status heartbeats (the ``aicenter-node-heartbeat`` Stage, kubelet-like every 4–9 min) stretch
  so that all nodes together post :data:`HEARTBEATS_PER_S`;
* ``--node-monitor-period`` (5 s by default; each pass deep-copies every Node) grows so the
  controller checks at most :data:`MONITORED_NODES_PER_S` nodes a second;
* new nodes are not tainted ``node.kubernetes.io/not-ready`` on creation (the
  ``TaintNodesByCondition`` admission plugin is left out): they are created Ready, and lifting
  41,250 such taints is two requests and a Node update each, done by eight workers of the node
  lifecycle controller: it, not creating the nodes, was the bring-up's critical path. The controller
  still taints a node that turns NotReady later (faults);
* kwok renews and creates leases with more workers and logs only warnings (not a line per lease
  renewal);
* the apiserver keeps 315 s of watch history instead of 75 s (``--request-timeout=300s``; the
  history is the request timeout plus 15 s): a client that takes more than 75 s to list 41,250
  nodes on a busy machine (the operator, in Python) can then watch on from its list instead of
  getting ``410 Gone`` and listing all over again.

A faulted node (``sim.aicenter.dev/fault``) is still NotReady at once: faults set the Ready
condition themselves and do not wait for a lease to expire. What the stretched intervals delay is
only the detection of a simulator that stopped (kwok killed): at the full fleet it takes the grace
period, about half an hour, instead of 150 s.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

#: Node Lease writes per second (all nodes together) the tuning aims for on large fleets.
LEASE_RENEWALS_PER_S = 50
#: Node status heartbeats per second (all nodes together) on large fleets.
HEARTBEATS_PER_S = 20
#: Nodes the node lifecycle controller looks at per second in its health pass.
MONITORED_NODES_PER_S = 2000

#: The small-fleet defaults (kubelet-like, and what the test bed always used).
MIN_RENEW_SECONDS = 30  # 120 s leases
MIN_GRACE_MARGIN_SECONDS = 120  # grace 150 s
HEARTBEAT_MS = 240_000
HEARTBEAT_JITTER_MS = 300_000
MONITOR_PERIOD_SECONDS = 5
#: Up to this many nodes the defaults hold (120 s leases renewed every 30 s at LEASE_RENEWALS_PER_S).
SMALL_FLEET_NODES = MIN_RENEW_SECONDS * LEASE_RENEWALS_PER_S


@dataclass(frozen=True)
class Tuning:
    """Intervals for kwok and the node lifecycle controller, sized for ``nodes`` simulated nodes."""

    nodes: int
    node_lease_seconds: int  # kwok's Lease duration; it renews at a quarter of it
    node_monitor_grace_seconds: int  # kube-controller-manager --node-monitor-grace-period
    node_monitor_period_seconds: int  # kube-controller-manager --node-monitor-period
    heartbeat_ms: int  # the heartbeat Stage's delay ...
    heartbeat_jitter_ms: int  # ... plus up to this much jitter
    taint_new_nodes: bool = True  # the TaintNodesByCondition admission plugin on (new nodes not-ready)
    kwok_lease_parallelism: int = 8  # kwok's workers creating and renewing leases
    kwok_log_level: str = "INFO"
    request_timeout_seconds: int = 60  # kube-apiserver --request-timeout; watch history is this + 15 s

    @property
    def renew_seconds(self) -> float:
        return self.node_lease_seconds / 4

    @property
    def lease_writes_per_s(self) -> float:
        """Lease renewals per second once every node has its Lease."""
        return self.nodes / self.renew_seconds if self.nodes else 0.0

    @property
    def heartbeats_per_s(self) -> float:
        mean_s = (self.heartbeat_ms + self.heartbeat_jitter_ms / 2) / 1000
        return self.nodes / mean_s if self.nodes else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            **asdict(self),
            "renew_seconds": self.renew_seconds,
            "lease_writes_per_s": round(self.lease_writes_per_s, 1),
            "heartbeats_per_s": round(self.heartbeats_per_s, 1),
        }


def tuning_for(nodes: int | None) -> Tuning:
    """The intervals for a test bed that will hold ``nodes`` simulated nodes (None or 0: a small one)."""
    n = max(0, int(nodes or 0))
    small = n <= SMALL_FLEET_NODES
    renew = max(MIN_RENEW_SECONDS, math.ceil(n / LEASE_RENEWALS_PER_S))
    grace = renew + max(MIN_GRACE_MARGIN_SECONDS, renew)
    mean_heartbeat_s = (HEARTBEAT_MS + HEARTBEAT_JITTER_MS / 2) / 1000
    stretch = max(1.0, n / (HEARTBEATS_PER_S * mean_heartbeat_s))
    return Tuning(
        nodes=n,
        node_lease_seconds=4 * renew,
        node_monitor_grace_seconds=grace,
        node_monitor_period_seconds=max(MONITOR_PERIOD_SECONDS, math.ceil(n / MONITORED_NODES_PER_S)),
        heartbeat_ms=round(HEARTBEAT_MS * stretch),
        heartbeat_jitter_ms=round(HEARTBEAT_JITTER_MS * stretch),
        taint_new_nodes=small,
        kwok_lease_parallelism=8 if small else 16,
        kwok_log_level="INFO" if small else "WARN",
        request_timeout_seconds=60 if small else 300,
    )
