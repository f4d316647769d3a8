"""``python -m aicenter_deviceplugin``: run the GPU device plugin on a node (a DaemonSet pod).

The loop: discover (NVML or simulated), serve and register, then every ``--poll-seconds`` read the
fault sources (the node annotation and the fault file) into device health, keep the node's GFD
labels right, and re-register when the kubelet restarted (it deletes every plugin socket and
recreates its own).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading
from pathlib import Path

from . import protocol as pb
from .discovery import BACKEND_AUTO, BACKENDS, Inventory, find_profile, select_inventory
from .node import ANNOTATION_UNHEALTHY, LABEL_PROFILE, NodeClient, gfd_labels
from .server import DEFAULT_SOCKET_NAME, RESOURCE_NAME, GpuDevicePlugin, parse_unhealthy

log = logging.getLogger("aicenter_deviceplugin")

DEFAULT_FAULT_FILE = "/var/run/aicenter-sim/unhealthy-gpus"


def build_parser() -> argparse.ArgumentParser:
    e = os.environ.get
    ap = argparse.ArgumentParser(prog="python -m aicenter_deviceplugin", description=__doc__.split("\n\n")[0])
    ap.add_argument("--node-name", default=e("NODE_NAME", ""), help="this node [NODE_NAME]")
    ap.add_argument(
        "--backend",
        default=e("AICENTER_GPU_BACKEND", BACKEND_AUTO),
        choices=BACKENDS,
        help="auto: NVML when it sees GPUs, else simulated [AICENTER_GPU_BACKEND]",
    )
    ap.add_argument(
        "--profile",
        default=e("AICENTER_SIM_PROFILE", "B200"),
        help=f"simulated shape (hgx-b200, B200, NVIDIA-GB200, ...); the node label {LABEL_PROFILE}"
        " overrides it [AICENTER_SIM_PROFILE]",
    )
    ap.add_argument(
        "--count", type=int, default=_int(e("AICENTER_SIM_COUNT")), help="simulated GPUs per node"
    )
    ap.add_argument("--memory-mib", type=int, default=_int(e("AICENTER_SIM_MEMORY_MIB")))
    ap.add_argument("--resource-name", default=e("AICENTER_GPU_RESOURCE", RESOURCE_NAME))
    ap.add_argument("--plugin-dir", default=pb.DEVICE_PLUGIN_PATH)
    ap.add_argument("--socket-name", default=DEFAULT_SOCKET_NAME)
    ap.add_argument(
        "--fault-file",
        default=e("AICENTER_SIM_FAULT_FILE", DEFAULT_FAULT_FILE),
        help="its content, like the annotation, marks GPUs unhealthy: N (the last N), all, or IDs",
    )
    ap.add_argument(
        "--fault-annotation",
        default=ANNOTATION_UNHEALTHY,
        help="node annotation read for fault injection; empty disables",
    )
    ap.add_argument(
        "--label-node",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="label the node like GPU Feature Discovery (needs nodes get/patch)",
    )
    ap.add_argument("--device-specs", action="store_true", help="also pass /dev/nvidia<minor> (real GPUs)")
    ap.add_argument("--poll-seconds", type=float, default=float(e("AICENTER_SIM_POLL_SECONDS", "2")))
    ap.add_argument("--kubeconfig", default=e("KUBECONFIG"))
    ap.add_argument("--log-level", default=e("AICENTER_LOG_LEVEL", "INFO"))
    return ap


def _int(v: str | None) -> int | None:
    return int(v) if v else None


class Agent:
    """The plugin plus its node: one :meth:`tick` per poll."""

    def __init__(self, args: argparse.Namespace, node_client: NodeClient | None):
        self.args = args
        self.node = node_client
        self.node_obj: dict = {"labels": {}, "annotations": {}}
        self.profile_name = args.profile
        self._read_node()
        self.plugin = GpuDevicePlugin(
            self.discover(),
            resource_name=args.resource_name,
            plugin_dir=args.plugin_dir,
            socket_name=args.socket_name,
            device_specs=args.device_specs,
        )
        self._kubelet_id: tuple[int, int] | None = None
        self.registered = False

    def discover(self) -> Inventory:
        name = self.node_obj["labels"].get(LABEL_PROFILE) or self.args.profile
        self.profile_name = name
        inv = select_inventory(
            self.args.backend,
            self.args.node_name,
            find_profile(name),
            count=self.args.count,
            memory_mib=self.args.memory_mib,
        )
        log.info(
            "%s GPUs: %d x %s (%d MiB, %s)%s",
            inv.backend,
            inv.count,
            inv.product,
            inv.memory_mib,
            inv.family,
            f", profile {inv.profile}" if inv.profile else "",
        )
        return inv

    def _read_node(self) -> bool:
        if self.node is None:
            return False
        try:
            self.node_obj = self.node.get()
            return True
        except Exception as e:
            log.warning("reading node %s failed: %s", self.args.node_name, e)
            return False

    def fault_specs(self) -> list[str]:
        """The fault specs of both sources: the node annotation and the fault file."""
        specs = []
        if self.args.fault_annotation:
            specs.append(self.node_obj["annotations"].get(self.args.fault_annotation, ""))
        if self.args.fault_file:
            with contextlib.suppress(OSError):
                specs.append(Path(self.args.fault_file).read_text())
        return [s.strip() for s in specs if s and s.strip()]

    def unhealthy(self) -> set[str]:
        inv = self.plugin.inventory
        return set().union(*(parse_unhealthy(spec, inv) for spec in self.fault_specs()))

    def kubelet_id(self) -> tuple[int, int] | None:
        try:
            st = self.plugin.kubelet_socket.stat()
            return (st.st_ino, st.st_ctime_ns)
        except OSError:
            return None

    def ensure_registered(self) -> None:
        kid = self.kubelet_id()
        if self.registered and kid == self._kubelet_id and self.plugin.serving:
            return
        if kid is None:
            if self.registered:
                log.warning("kubelet socket %s is gone; waiting for it", self.plugin.kubelet_socket)
            self.registered = False
            return
        if self.registered:
            log.info("kubelet restarted (socket recreated or ours deleted): serving and registering again")
        self.plugin.stop()
        self.plugin.start()
        try:
            self.plugin.register()
        except Exception as e:
            log.warning("registration failed (%s); retrying", e)
            self.registered = False
            return
        self._kubelet_id = kid
        self.registered = True

    def tick(self) -> None:
        if self._read_node():
            profile = self.node_obj["labels"].get(LABEL_PROFILE) or self.args.profile
            if profile != self.profile_name:
                log.info("profile changed to %s", profile)
                self.plugin.set_inventory(self.discover())
            if self.args.label_node and self.node is not None:
                try:
                    self.node.ensure_labels(gfd_labels(self.plugin.inventory), self.node_obj["labels"])
                except Exception as e:
                    log.warning("labelling node %s failed: %s", self.args.node_name, e)
        self.plugin.set_unhealthy(self.unhealthy())
        self.ensure_registered()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.node_name:
        log.error("--node-name (or NODE_NAME) is required")
        return 2
    needs_api = args.label_node or bool(args.fault_annotation)
    node_client = NodeClient(args.node_name, args.kubeconfig) if needs_api else None
    agent = Agent(args, node_client)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.is_set():
            try:
                agent.tick()
            except Exception:
                log.exception("device plugin loop")
            stop.wait(args.poll_seconds)
    finally:
        agent.plugin.stop()
        log.info("stopped")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
