"""The kind binary, built from the Go module proxy, and the source of its module."""

from __future__ import annotations

import json
import time
from pathlib import Path

from aicenter_testbed import tools as tb
from aicenter_testbed.kind.cache import cache_root, workdir
from aicenter_testbed.kind.shell import log, out

KIND_VERSION = "v0.30.0"  # the kind release made for Kubernetes 1.34; builds with Go 1.26


def ensure_kind() -> Path:
    dest = cache_root() / "tools" / KIND_VERSION
    kind = dest / "kind"
    if not kind.is_file():
        t0 = time.monotonic()
        tb.build_go_tool("sigs.k8s.io/kind", KIND_VERSION, dest)
        log(f"built kind {KIND_VERSION} in {time.monotonic() - t0:.0f}s")
    return kind


def kind_cmd(*args: str) -> list[str]:
    return [str(ensure_kind()), *args]


def kind_module_dir() -> Path:
    """The sigs.k8s.io/kind module source (its node base-image files)."""
    with workdir("gomod-") as w:
        (w / "go.mod").write_text("module aicenter.dev/kind-files\n\ngo 1.22\n")
        info = json.loads(out(["go", "mod", "download", "-json", f"sigs.k8s.io/kind@{KIND_VERSION}"], cwd=w))
    return Path(info["Dir"])
