"""The device plugin: a gRPC DevicePlugin server on a unix socket, registered with the kubelet.

:class:`GpuDevicePlugin` advertises an :class:`~aicenter_deviceplugin.discovery.Inventory` as the
extended resource ``nvidia.com/gpu``: ``ListAndWatch`` streams every device with its health and
sends the list again on each change (:meth:`GpuDevicePlugin.set_unhealthy`,
:meth:`GpuDevicePlugin.set_inventory`); ``Allocate`` returns the allocated GPUs' UUIDs in
``NVIDIA_VISIBLE_DEVICES`` (what the NVIDIA container runtime reads) and ``AICENTER_GPU_*``;
``GetPreferredAllocation`` keeps allocations on the lowest free indices.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent import futures
from pathlib import Path

import grpc

from . import protocol as pb
from .discovery import Inventory

log = logging.getLogger("aicenter_deviceplugin")

RESOURCE_NAME = "nvidia.com/gpu"
DEFAULT_SOCKET_NAME = "aicenter-gpu.sock"


def parse_unhealthy(spec: str | None, inventory: Inventory) -> set[str]:
    """Device IDs a fault spec marks unhealthy.

    ``"2"`` marks the last two devices (highest indices), ``"all"`` every device, and a comma
    list names devices by UUID (``GPU-…``) or index (``#0,#3``). Empty or missing: none.
    Unknown entries are ignored (logged).
    """
    spec = (spec or "").strip()
    if not spec:
        return set()
    ids = [d.uuid for d in inventory.devices]
    if spec.lower() == "all":
        return set(ids)
    if spec.isdigit():
        n = min(int(spec), len(ids))
        return set(ids[len(ids) - n :]) if n else set()
    out = set()
    for part in (p.strip() for p in spec.split(",")):
        if part.startswith("#") and part[1:].isdigit() and int(part[1:]) < len(ids):
            out.add(ids[int(part[1:])])
        elif part in ids:
            out.add(part)
        elif part:
            log.warning("fault spec names no device of this node: %r", part)
    return out


class GpuDevicePlugin:
    """DevicePlugin service implementation plus its server and kubelet registration."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        resource_name: str = RESOURCE_NAME,
        plugin_dir: str | os.PathLike = pb.DEVICE_PLUGIN_PATH,
        socket_name: str = DEFAULT_SOCKET_NAME,
        kubelet_socket: str | os.PathLike | None = None,
        device_specs: bool = False,
    ):
        self.resource_name = resource_name
        self.plugin_dir = Path(plugin_dir)
        self.socket_name = socket_name
        self.kubelet_socket = Path(kubelet_socket) if kubelet_socket else self.plugin_dir / "kubelet.sock"
        self.device_specs = device_specs  # add /dev/nvidia* DeviceSpecs (real GPUs)
        self._inventory = inventory
        self._unhealthy: set[str] = set()
        self._version = 0
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._server: grpc.Server | None = None
        self.allocations = 0

    # -- state -----------------------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        return self.plugin_dir / self.socket_name

    @property
    def inventory(self) -> Inventory:
        return self._inventory

    @property
    def unhealthy(self) -> set[str]:
        with self._cond:
            return set(self._unhealthy)

    def set_unhealthy(self, ids: Iterable[str]) -> bool:
        """Mark exactly ``ids`` unhealthy; True (and ListAndWatch resends) when that changed."""
        ids = set(ids) & set(self._inventory.by_id())
        with self._cond:
            if ids == self._unhealthy:
                return False
            log.info(
                "health change: %d of %d GPUs unhealthy%s",
                len(ids),
                self._inventory.count,
                f" ({', '.join(sorted(ids))})" if ids else "",
            )
            self._unhealthy = ids
            self._version += 1
            self._cond.notify_all()
            return True

    def set_inventory(self, inventory: Inventory) -> None:
        with self._cond:
            self._inventory = inventory
            self._unhealthy &= set(inventory.by_id())
            self._version += 1
            self._cond.notify_all()

    def devices(self) -> list:
        with self._cond:
            return self._devices_locked()

    def _devices_locked(self) -> list:
        out = []
        for d in self._inventory.devices:
            dev = pb.Device(ID=d.uuid, health=pb.UNHEALTHY if d.uuid in self._unhealthy else pb.HEALTHY)
            if d.numa_node is not None:
                dev.topology.nodes.add(ID=d.numa_node)
            out.append(dev)
        return out

    # -- DevicePlugin service ----------------------------------------------------------------

    def options(self):
        return pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)

    def GetDevicePluginOptions(self, request, context):
        return self.options()

    def ListAndWatch(self, request, context) -> Iterator:
        with self._cond:
            version = self._version
            devices = self._devices_locked()
        log.info("ListAndWatch: kubelet connected; sending %d devices", len(devices))
        yield pb.ListAndWatchResponse(devices=devices)
        while not self._stopping.is_set() and context.is_active():
            with self._cond:
                seen = version
                self._cond.wait_for(
                    lambda seen=seen: self._version != seen or self._stopping.is_set(), timeout=1.0
                )
                if self._version == version:
                    continue
                version = self._version
                devices = self._devices_locked()
            healthy = sum(d.health == pb.HEALTHY for d in devices)
            log.info("ListAndWatch: sending %d devices (%d healthy)", len(devices), healthy)
            yield pb.ListAndWatchResponse(devices=devices)

    def GetPreferredAllocation(self, request, context):
        order = {d.uuid: d.index for d in self._inventory.devices}
        unhealthy = self.unhealthy
        resp = pb.PreferredAllocationResponse()
        for creq in request.container_requests:
            chosen = list(dict.fromkeys(creq.must_include_deviceIDs))
            rest = sorted(
                (i for i in creq.available_deviceIDs if i not in chosen),
                key=lambda i: (i in unhealthy, order.get(i, 1 << 30), i),
            )
            chosen += rest[: max(0, creq.allocation_size - len(chosen))]
            resp.container_responses.add(deviceIDs=chosen)
        return resp

    def Allocate(self, request, context):
        known = self._inventory.by_id()
        resp = pb.AllocateResponse()
        for creq in request.container_requests:
            ids = list(creq.devices_ids)
            unknown = [i for i in ids if i not in known]
            if unknown:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown device IDs: {', '.join(unknown)}")
            devs = sorted((known[i] for i in ids), key=lambda d: d.index)
            uuids = ",".join(d.uuid for d in devs)
            cresp = resp.container_responses.add()
            cresp.envs["NVIDIA_VISIBLE_DEVICES"] = uuids
            cresp.envs["AICENTER_GPU_UUIDS"] = uuids
            cresp.envs["AICENTER_GPU_INDEXES"] = ",".join(str(d.index) for d in devs)
            cresp.envs["AICENTER_GPU_PRODUCT"] = self._inventory.product
            cresp.envs["AICENTER_GPU_MEMORY_MIB"] = str(self._inventory.memory_mib)
            cresp.envs["AICENTER_GPU_BACKEND"] = self._inventory.backend
            if self.device_specs:
                for d in devs:
                    if d.minor is not None and os.path.exists(f"/dev/nvidia{d.minor}"):
                        cresp.devices.add(
                            container_path=f"/dev/nvidia{d.minor}",
                            host_path=f"/dev/nvidia{d.minor}",
                            permissions="rw",
                        )
            self.allocations += 1
            log.info("Allocate: %s", uuids)
        return resp

    def PreStartContainer(self, request, context):
        return pb.PreStartContainerResponse()

    # -- server and registration -------------------------------------------------------------

    def start(self) -> None:
        """Serve on ``plugin_dir/socket_name`` (an old socket file there is removed first)."""
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists() or self.socket_path.is_symlink():
            self.socket_path.unlink()
        self._stopping.clear()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="deviceplugin"))
        server.add_generic_rpc_handlers((pb.generic_handler(pb.DEVICE_PLUGIN, self),))
        server.add_insecure_port(f"unix://{self.socket_path}")
        server.start()
        self._server = server
        log.info("serving %s on %s", self.resource_name, self.socket_path)

    def register(self, timeout: float = 10.0) -> None:
        """Register with the kubelet (Registration.Register on its socket)."""
        with grpc.insecure_channel(f"unix://{self.kubelet_socket}") as ch:
            grpc.channel_ready_future(ch).result(timeout=timeout)
            pb.Stub(ch, pb.REGISTRATION).Register(
                pb.RegisterRequest(
                    version=pb.VERSION,
                    endpoint=self.socket_name,
                    resource_name=self.resource_name,
                    options=self.options(),
                ),
                timeout=timeout,
            )
        log.info("registered %s with the kubelet at %s", self.resource_name, self.kubelet_socket)

    def stop(self, grace: float = 1.0) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        if self.socket_path.exists():
            self.socket_path.unlink()

    @property
    def serving(self) -> bool:
        return self._server is not None and self.socket_path.exists()
