"""The kind test bed: Docker, offline images, a 3-node kind cluster and the kind e2e run.

Everything is built from what this project's machines reach (Debian's archive, the Go module proxy,
PyPI), never from a container registry, and cached under ``~/.cache/aicenter-kind``
(``AICENTER_KIND_CACHE``); each image carries a hash of its inputs as a label and is rebuilt only
when they change. ``python -m aicenter_testbed.kind e2e|docker|images|create|delete``; docs/kind.md.

* :mod:`.shell` — logging, commands, :class:`~.shell.Skip`;
* :mod:`.cache` — the cache directory, scratch directories, input hashes;
* :mod:`.docker` — install and start dockerd, image labels, ``docker import``/``build``;
* :mod:`.rootfs` — debootstrapped Debian root file systems;
* :mod:`.oci` — the OCI archive writer (the node's preloaded control-plane images);
* :mod:`.kindtool` — the kind binary and its module source;
* :mod:`.node` — the kind node image;
* :mod:`.images` — the operator, device plugin and workload images, and the wheels they hold;
* :mod:`.cluster` — create, network, load, delete;
* :mod:`.e2e` — the e2e run and its verdict.
"""

from __future__ import annotations

from pathlib import Path

# The checkout the images are built from (the test bed is installed editable from hack/testbed).
REPO = Path(__file__).resolve().parents[4]
HACK_KIND = REPO / "hack" / "kind"  # runc-nocap.py, node/, deviceplugin.yaml, cluster-stock.yaml
