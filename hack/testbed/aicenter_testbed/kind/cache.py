"""The kind cache (``~/.cache/aicenter-kind``), scratch directories in it, and hashes of inputs."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("AICENTER_KIND_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "aicenter-kind"
    )
    return Path(base)


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A scratch directory under the cache (same file system as the results), removed afterwards."""
    base = cache_root() / "work"
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=base) as tmp:
        yield Path(tmp)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def hash_inputs(*parts: object) -> str:
    """A short hash of strings, bytes and files or directories (by content), in order."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, Path):
            if p.is_dir():
                for f in sorted(p.rglob("*")):
                    if f.is_file() and "__pycache__" not in f.parts and not f.name.endswith(".pyc"):
                        h.update(str(f.relative_to(p)).encode())
                        h.update(sha256_file(f).encode())
            else:
                h.update(p.name.encode())
                h.update(sha256_file(p).encode())
        elif isinstance(p, bytes):
            h.update(p)
        else:
            h.update(str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def stamp_of_binary(path: Path) -> str:
    """Cheap identity of a large built binary: name, size and mtime (a rebuilt binary changes it)."""
    st = path.stat()
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"
