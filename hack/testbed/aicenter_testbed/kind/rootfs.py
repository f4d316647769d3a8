"""Debian root file systems made with debootstrap, cached as tarballs by suite and package list."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from aicenter_testbed import tools as tb
from aicenter_testbed.kind.cache import cache_root, hash_inputs
from aicenter_testbed.kind.shell import Skip, log, run

SUITE = "bookworm"
ROOTFS_RECIPE = 2  # bumped whenever the recipe below changes in a way the hashed inputs do not show


def ensure_rootfs(name: str, packages: tuple[str, ...]) -> Path:
    """``debootstrap --variant=minbase`` of :data:`SUITE` plus ``packages``, as a tar (cached)."""
    key = hash_inputs(ROOTFS_RECIPE, SUITE, *packages)
    d = cache_root() / "rootfs"
    tar = d / f"{name}-{SUITE}-{key}.tar"
    if tar.is_file():
        return tar
    if os.geteuid() != 0:
        raise Skip("building the offline images needs root (debootstrap, chroot); run as root")
    if not shutil.which("debootstrap"):
        run(["apt-get", "install", "-y", "-q", "debootstrap"], capture=True)
    d.mkdir(parents=True, exist_ok=True)
    debs = cache_root() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"rootfs-{name}-", dir=d) as tmp:
        root = Path(tmp) / "root"
        t0 = time.monotonic()
        log(f"debootstrap {SUITE} for the {name} images ({len(packages)} extra packages)")
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--cache-dir={debs}",
                f"--include={','.join(packages)}",
                SUITE,
                root,
                tb.debian_mirror(),
            ],
            capture=True,
        )
        # the rootfs must not carry this machine's apt cache or logs
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (root / sub).glob("*"):
                if f.is_file():
                    f.unlink()
        for sub in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
            shutil.rmtree(root / sub, ignore_errors=True)
            (root / sub).mkdir(parents=True, exist_ok=True)
        tar_dir(root, tar.with_suffix(".part"))
        tar.with_suffix(".part").rename(tar)
        log(f"rootfs {tar.name} in {time.monotonic() - t0:.0f}s")
    for old in d.glob(f"{name}-*.tar"):
        if old != tar:
            old.unlink()
    return tar


def tar_dir(root: Path, dest: Path, *members: str) -> None:
    """Tar ``root`` (or only ``members`` of it) with numeric owners and extended attributes."""
    run(
        ["tar", "--numeric-owner", "--xattrs", "-C", root, "-cf", dest, *(members or ["."])],
        capture=True,
    )


def untar(tar: Path, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    run(["tar", "--numeric-owner", "--xattrs", "-C", root, "-xf", tar], capture=True)
