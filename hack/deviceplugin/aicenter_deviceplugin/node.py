"""The plugin's own Node object: GPU Feature Discovery style labels, fault annotations, profile.

The plugin labels the node it runs on (``nvidia.com/gpu.product``, ``.count``, ``.memory``,
``.family``, ``.present=true``), which is what the operator and AICenters select GPU nodes by, and
reads two things from it: the annotation ``sim.aicenter.dev/unhealthy-gpus`` (fault injection) and
the label ``sim.aicenter.dev/profile`` (which simulated shape this node has). Needs get and patch
on nodes (the DaemonSet's ClusterRole grants exactly that).
"""

from __future__ import annotations

import logging
from typing import Any

from .discovery import Inventory

log = logging.getLogger("aicenter_deviceplugin")

ANNOTATION_UNHEALTHY = "sim.aicenter.dev/unhealthy-gpus"
# GPU Feature Discovery's label keys.
LABEL_PRODUCT = "nvidia.com/gpu.product"
LABEL_COUNT = "nvidia.com/gpu.count"
LABEL_MEMORY = "nvidia.com/gpu.memory"
LABEL_FAMILY = "nvidia.com/gpu.family"
LABEL_PRESENT = "nvidia.com/gpu.present"
LABEL_PROFILE = "sim.aicenter.dev/profile"
LABEL_BACKEND = "sim.aicenter.dev/backend"


def gfd_labels(inv: Inventory) -> dict[str, str]:
    """The labels GPU Feature Discovery would put on a node with ``inv``'s GPUs."""
    if not inv.devices:
        return {LABEL_PRESENT: "false", LABEL_BACKEND: inv.backend}
    return {
        LABEL_PRODUCT: inv.product,
        LABEL_COUNT: str(inv.count),
        LABEL_MEMORY: str(inv.memory_mib),
        LABEL_FAMILY: inv.family,
        LABEL_PRESENT: "true",
        LABEL_BACKEND: inv.backend,
    }


class NodeClient:
    """Reads and labels one Node through the Kubernetes API (in-cluster or a kubeconfig)."""

    def __init__(self, name: str, kubeconfig: str | None = None, api: Any = None):
        self.name = name
        if api is None:
            from kubernetes import client, config

            if kubeconfig:
                config.load_kube_config(config_file=kubeconfig)
            else:
                try:
                    config.load_incluster_config()
                except config.ConfigException:
                    config.load_kube_config()
            api = client.CoreV1Api()
        self.api = api

    def get(self) -> dict[str, Any]:
        """The node's metadata as plain dicts: ``{"labels": {...}, "annotations": {...}}``."""
        node = self.api.read_node(self.name)
        md = node.metadata
        return {"labels": dict(md.labels or {}), "annotations": dict(md.annotations or {})}

    def ensure_labels(self, want: dict[str, str], have: dict[str, str]) -> bool:
        """Patch the labels in ``want`` that ``have`` lacks or differs on; True when it patched."""
        diff = {k: v for k, v in want.items() if have.get(k) != v}
        if not diff:
            return False
        self.api.patch_node(self.name, {"metadata": {"labels": diff}})
        log.info("labelled node %s: %s", self.name, ", ".join(f"{k}={v}" for k, v in sorted(diff.items())))
        return True
