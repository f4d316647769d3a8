"""Simulated GPU nodes: kwok Node manifests for a fleet, and creating them fast in bulk.

A manifest carries the fleet's labels (GPU Feature Discovery's ``nvidia.com/gpu.*``, centre, rack,
zone, clique), ``nvidia.com/gpu`` capacity and allocatable equal to the GPUs per node, CPU, memory
and pod capacity for the shape, kwok's annotation and taint (so only pods that tolerate it land
there, and only kwok manages the node) and a Ready status, so a node is schedulable as soon as the
node lifecycle controller has seen it.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aicenter_testbed.fleet import GPU_RESOURCE, Fleet, NodeSpec, iter_nodes
from aicenter_testbed.sim.stages import KWOK_NODE_ANNOTATION, KWOK_NODE_VALUE

KWOK_TAINT = {"key": KWOK_NODE_ANNOTATION, "value": KWOK_NODE_VALUE, "effect": "NoSchedule"}
#: A pod needs this toleration to be scheduled onto a simulated node.
KWOK_TOLERATION = {
    "key": KWOK_NODE_ANNOTATION,
    "operator": "Equal",
    "value": KWOK_NODE_VALUE,
    "effect": "NoSchedule",
}
LABEL_SIMULATED = "sim.aicenter.dev/simulated"
KUBELET_VERSION = "v1.34.4"

# Host resources per shape (illustrative, like the shapes themselves): CPU cores and memory per node.
HOST_RESOURCES: dict[str, tuple[int, str]] = {
    "hgx-b200": (224, "2Ti"),
    "hgx-b300": (224, "4Ti"),
    "gb200-nvl72": (144, "960Gi"),
}
DEFAULT_PODS = 110


def host_resources(spec: NodeSpec) -> tuple[int, str]:
    return HOST_RESOURCES.get(
        spec.shape.name, (28 * spec.shape.gpus_per_node, f"{256 * spec.shape.gpus_per_node}Gi")
    )


def node_ip(name: str) -> str:
    """A stable address in 10.64.0.0/10 derived from the node name (kwok reports it as InternalIP)."""
    base = int(ipaddress.IPv4Address("10.64.0.0"))
    offset = zlib.crc32(name.encode()) % (1 << 22)
    return str(ipaddress.IPv4Address(base + max(1, offset)))


def node_manifest(spec: NodeSpec, now: str | None = None) -> dict[str, Any]:
    """The Node object for one simulated GPU node, status included (a Node may be created with it)."""
    cpu, memory = host_resources(spec)
    gpus = str(spec.shape.gpus_per_node)
    resources = {
        "cpu": str(cpu),
        "memory": memory,
        "pods": str(DEFAULT_PODS),
        "ephemeral-storage": "30Ti",
        GPU_RESOURCE: gpus,
    }
    now = now or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    conditions = [
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("NetworkUnavailable", "False", "RouteCreated", "RouteController created a route"),
    ]
    labels = {
        **spec.labels(),
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        # The beta twins a kubelet also sets: without them the node lifecycle controller patches each
        # new Node to add them (a read and a write per node, 82,500 requests for the full fleet).
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": spec.shape.name,
        "type": "kwok",
        LABEL_SIMULATED: "true",
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "labels": labels,
            "annotations": {
                KWOK_NODE_ANNOTATION: KWOK_NODE_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": {"taints": [dict(KWOK_TAINT)]},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": r,
                    "message": m,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
                for t, s, r, m in conditions
            ],
            "addresses": [
                {"type": "InternalIP", "address": node_ip(spec.name)},
                {"type": "Hostname", "address": spec.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "aicenter simulated GPU node",
                "kernelVersion": "6.12.0-sim",
                "containerRuntimeVersion": "sim://0.1.0",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
            "phase": "Running",
        },
    }


def fleet_manifests(fleet: Fleet) -> list[dict[str, Any]]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return [node_manifest(s, now) for s in iter_nodes(fleet)]


@dataclass
class CreateResult:
    created: list[str] = field(default_factory=list)
    existed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def create_nodes(
    client: Any,
    manifests: Iterable[dict[str, Any]],
    workers: int = 16,
    on_done: Callable[[str, int], None] | None = None,
) -> CreateResult:
    """POST every Node (with its status) from a thread pool; an existing node is left as it is.

    ``client`` is a :class:`aicenter_testbed.cluster.ClusterClient` (anything with
    ``request(method, path, body)``). Returns which nodes were created, already existed or failed.
    ``on_done(name, http_status)`` is called from the pool's threads after each node (progress).
    """
    items = list(manifests)
    result = CreateResult()
    t0 = time.monotonic()

    def one(m: dict[str, Any]) -> tuple[str, int, Any]:
        status, body = client.request("POST", "/api/v1/nodes", m)
        if status == 429 or status >= 500:  # throttled or a hiccup: one more try after a moment
            time.sleep(0.5)  # back-off before a retry, not synchronisation
            status, body = client.request("POST", "/api/v1/nodes", m)
        if on_done is not None:
            on_done(m["metadata"]["name"], status)
        return m["metadata"]["name"], status, body

    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        for name, status, body in pool.map(one, items):
            if status == 201:
                result.created.append(name)
            elif status == 409:
                result.existed.append(name)
            else:
                msg = body.get("message") if isinstance(body, dict) else body
                result.failed[name] = f"HTTP {status}: {msg}"
    except BaseException:  # Ctrl-C or a failing request: do not POST the rest of a 41,250-node fleet
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    result.seconds = time.monotonic() - t0
    return result


def node_is_ready(node: dict[str, Any]) -> bool:
    """Ready=True and free of the taints the node lifecycle controller puts on nodes it has not cleared."""
    conds = node.get("status", {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
    taints = node.get("spec", {}).get("taints") or []
    blocking = any(t.get("key", "").startswith("node.kubernetes.io/") for t in taints)
    return ready and not blocking


def list_nodes(client: Any, label_selector: str = f"{LABEL_SIMULATED}=true") -> list[dict[str, Any]]:
    """Every node matching the selector, paged."""
    from urllib.parse import quote

    out: list[dict[str, Any]] = []
    cont = ""
    while True:
        path = f"/api/v1/nodes?limit=500&labelSelector={quote(label_selector)}"
        if cont:
            path += f"&continue={quote(cont)}"
        status, body = client.request("GET", path)
        if status != 200:
            raise RuntimeError(f"listing nodes answered {status}: {body}")
        out.extend(body.get("items", []))
        cont = body.get("metadata", {}).get("continue") or ""
        if not cont:
            return out


def wait_nodes_ready(client: Any, names: Iterable[str], timeout: float = 300) -> float:
    """Wait until every named node is Ready and schedulable; returns the seconds it took."""
    from aicenter_testbed.waiting import WaitTimeout, wait_for

    want = set(names)
    t0 = time.monotonic()
    missing: list[str] = sorted(want)

    def done() -> bool:
        ready = {n["metadata"]["name"] for n in list_nodes(client) if node_is_ready(n)}
        missing[:] = sorted(want - ready)
        return not missing

    try:
        wait_for(
            done, timeout=timeout, what=f"{len(want)} simulated nodes to be Ready and untainted", interval=0.5
        )
    except WaitTimeout as e:
        raise WaitTimeout(f"{e}; {len(missing)} not ready, e.g. {missing[:5]}") from None
    return time.monotonic() - t0


# ---------------------------------------------------------------------------------------------
# Watching a large fleet


def _ready_condition(node: dict[str, Any]) -> bool:
    conds = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def watch_events(client: Any, path: str, timeout_s: int = 240) -> Iterator[dict[str, Any]]:
    """The events of one WATCH request (``path`` with ``watch=1`` and a ``resourceVersion``), decoded.

    Streams the chunked response of ``client`` (a :class:`aicenter_testbed.cluster.ClusterClient`)
    line by line; ends when the server closes the watch (after ``timeoutSeconds``).
    """
    api = client.api
    headers = {"Accept": "application/json"}
    api.update_params_for_auth(headers, [], ["BearerToken"], path, "GET", None)
    r = api.rest_client.request(
        "GET", api.configuration.host + path, headers=headers, _request_timeout=(10, timeout_s + 30)
    )
    resp = r.response  # the urllib3 response, not yet read
    if r.status != 200:
        raise RuntimeError(f"watch {path} answered {r.status}: {resp.data[:500]!r}")
    buf = b""
    try:
        for chunk in resp.stream(None, decode_content=True):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
    finally:
        resp.release_conn()


class NodeTracker:
    """Which simulated nodes exist, are Ready, and are schedulable, from one LIST and then a WATCH.

    A thread keeps the state (re-listing after a ``410 Gone``), so counting 41,250 nodes costs one
    decoded event per node change instead of a LIST per poll. ``counts(names)`` →
    ``{"seen", "ready", "schedulable"}`` over ``names`` (or all nodes); ``not_ready()`` names the seen
    nodes whose Ready condition is not True.
    """

    def __init__(self, client: Any, label_selector: str = f"{LABEL_SIMULATED}=true") -> None:
        self.client = client
        self.label_selector = label_selector
        self._lock = threading.Lock()
        self._nodes: dict[str, tuple[bool, bool]] = {}  # name → (Ready condition, schedulable)
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.events = 0
        self.relists = 0

    # -- state ------------------------------------------------------------------------------------

    def apply(self, event: dict[str, Any]) -> str | None:
        """Apply one watch event; returns its object's resourceVersion (None for an ERROR)."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            return None
        meta = obj.get("metadata", {})
        if kind in ("ADDED", "MODIFIED"):
            with self._lock:
                self._nodes[meta["name"]] = (_ready_condition(obj), node_is_ready(obj))
        elif kind == "DELETED":
            with self._lock:
                self._nodes.pop(meta["name"], None)
        self.events += 1
        return meta.get("resourceVersion")

    def counts(self, names: Iterable[str] | None = None) -> dict[str, int]:
        with self._lock:
            if names is None:
                states = list(self._nodes.values())
            else:
                states = [s for s in map(self._nodes.get, names) if s is not None]
        return {
            "seen": len(states),
            "ready": sum(1 for r, _ in states if r),
            "schedulable": sum(1 for _, sched in states if sched),
        }

    def not_ready(self) -> list[str]:
        with self._lock:
            return sorted(n for n, (r, _) in self._nodes.items() if not r)

    def unschedulable(self, names: Iterable[str]) -> list[str]:
        with self._lock:
            return [n for n in names if not self._nodes.get(n, (False, False))[1]]

    # -- the thread -------------------------------------------------------------------------------

    def start(self, timeout: float = 120) -> NodeTracker:
        """Start watching; returns once the first LIST is in."""
        self._thread = threading.Thread(target=self._run, name="node-tracker", daemon=True)
        self._thread.start()
        from aicenter_testbed.waiting import wait_for

        wait_for(lambda: self._synced.is_set() or self.error, timeout, "the first LIST of nodes")
        if self.error is not None:
            raise RuntimeError(f"node tracker failed: {self.error}") from self.error
        return self

    def stop(self) -> None:
        self._stop.set()  # the watch ends at its next event or server timeout; the thread is a daemon

    def _list(self) -> str:
        from urllib.parse import quote

        nodes: dict[str, tuple[bool, bool]] = {}
        cont, rv = "", ""
        while True:
            path = f"/api/v1/nodes?limit=2000&labelSelector={quote(self.label_selector)}"
            if cont:
                path += f"&continue={quote(cont)}"
            status, body = self.client.request("GET", path)
            if status != 200:
                raise RuntimeError(f"listing nodes answered {status}: {body}")
            for n in body.get("items", []):
                nodes[n["metadata"]["name"]] = (_ready_condition(n), node_is_ready(n))
            rv = body["metadata"].get("resourceVersion") or rv
            cont = body["metadata"].get("continue") or ""
            if not cont:
                break
        with self._lock:
            self._nodes = nodes
        self.relists += 1
        return rv

    def _run(self) -> None:
        from urllib.parse import quote

        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    rv = self._list()
                    self._synced.set()
                path = (
                    f"/api/v1/nodes?watch=1&allowWatchBookmarks=true&timeoutSeconds=240"
                    f"&resourceVersion={rv}&labelSelector={quote(self.label_selector)}"
                )
                for ev in watch_events(self.client, path, timeout_s=240):
                    if ev.get("type") == "ERROR":  # 410 Gone: the resourceVersion is too old
                        rv = ""
                        break
                    rv = self.apply(ev) or rv
                    if self._stop.is_set():
                        return
            except Exception as e:  # a dropped watch resumes from rv; a refused one lists again
                if not self._synced.is_set():
                    self.error = e
                    return
                if isinstance(e, RuntimeError):
                    rv = ""
                self._stop.wait(1.0)  # back-off before retrying, not synchronisation
