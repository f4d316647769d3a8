"""OCI image-layout archives written without Docker: the node's preloaded control-plane images.

Each image is one gzip layer of a few files (static binaries), named by the annotation
``io.containerd.image.name`` so that ``ctr images import`` tags it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from aicenter_testbed.kind.cache import sha256_file, workdir
from aicenter_testbed.kind.shell import run


@dataclass
class OciImage:
    names: list[str]
    files: dict[str, Path]  # path in the image → file on this machine
    entrypoint: list[str] | None = None
    env: list[str] = field(default_factory=lambda: ["PATH=/usr/local/bin:/usr/bin:/bin"])


def _layer(files: dict[str, Path], dest: Path) -> tuple[str, str, int]:
    """Write a gzip layer (fixed mtimes and modes); return (diff_id, digest, size)."""
    raw = dest.with_suffix(".tar")
    with tarfile.open(raw, "w", format=tarfile.PAX_FORMAT) as tf:
        dirs: set[str] = set()
        for name in sorted(files):
            parts = name.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
                    tf.addfile(ti)
            src = files[name]
            ti = tarfile.TarInfo(name.strip("/"))
            ti.size, ti.mode, ti.mtime = src.stat().st_size, 0o755, 0
            with open(src, "rb") as f:
                tf.addfile(ti, f)
    diff_id = "sha256:" + sha256_file(raw)
    with open(raw, "rb") as fi, gzip.GzipFile(dest, "wb", compresslevel=6, mtime=0) as fo:
        shutil.copyfileobj(fi, fo, 1 << 20)
    raw.unlink()
    return diff_id, "sha256:" + sha256_file(dest), dest.stat().st_size


def write_oci_archive(images: list[OciImage], dest: Path) -> None:
    """An OCI image-layout tar holding ``images``, each named by io.containerd.image.name."""
    with workdir("oci-") as w:
        blobs = w / "blobs" / "sha256"
        blobs.mkdir(parents=True)

        def put(data: bytes) -> tuple[str, int]:
            digest = hashlib.sha256(data).hexdigest()
            (blobs / digest).write_bytes(data)
            return "sha256:" + digest, len(data)

        manifests = []
        for img in images:
            tmp = w / "layer.gz"
            diff_id, ldigest, lsize = _layer(img.files, tmp)
            tmp.rename(blobs / ldigest.split(":")[1])
            cfg: dict = {"Env": img.env}
            if img.entrypoint:
                cfg["Entrypoint"] = img.entrypoint
            config = {
                "architecture": "amd64",
                "os": "linux",
                "config": cfg,
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "history": [{"created_by": "aicenter_testbed.kind.oci"}],
            }
            cdigest, csize = put(json.dumps(config, sort_keys=True).encode())
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": cdigest,
                    "size": csize,
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": ldigest,
                        "size": lsize,
                    }
                ],
            }
            mdigest, msize = put(json.dumps(manifest, sort_keys=True).encode())
            for name in img.names:
                manifests.append(
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": mdigest,
                        "size": msize,
                        "platform": {"architecture": "amd64", "os": "linux"},
                        "annotations": {
                            "io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                        },
                    }
                )
        (w / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        (w / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))
        run(["tar", "-C", w, "-cf", dest, "oci-layout", "index.json", "blobs"], capture=True)


def shared_libs(binary: Path) -> dict[str, Path]:
    """The dynamic libraries ``binary`` needs (from ldd): path in the image → real file."""
    p = run(["ldd", binary], check=False, capture=True)
    libs: dict[str, Path] = {}
    for line in p.stdout.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            path = m.group(1)
            libs[path] = Path(path).resolve()
    return libs
