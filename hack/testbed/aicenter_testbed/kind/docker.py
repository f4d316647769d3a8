"""Docker: install Debian's docker.io and start dockerd when needed; image labels, import, build.

This project's machines have no systemd as PID 1, so dockerd is started here (in its own session,
so it outlives the run; PID in ``<cache>/dockerd.pid``). When the capability bounding set lacks
``CAP_SYS_RESOURCE`` (a sandboxed VM), privileged containers, and so kind nodes, fail in runc with
"unable to apply caps"; dockerd then gets ``hack/kind/runc-nocap.py`` as its default runtime.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from aicenter_testbed.kind import HACK_KIND
from aicenter_testbed.kind.cache import cache_root
from aicenter_testbed.kind.shell import Skip, log, out, run

INPUTS_LABEL = "dev.aicenter.kind.inputs"  # the hash of an image's inputs, on every image built here
CAP_SYS_RESOURCE = 24


def bounding_set_lacks(cap: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return not int(line.split()[1], 16) & (1 << cap)
    return False


def docker_ok() -> bool:
    return (
        shutil.which("docker") is not None
        and run(["docker", "info"], check=False, capture=True).returncode == 0
    )


def ensure_docker(start: bool = True, probe_image: str | None = None) -> None:
    """Install docker.io (and debootstrap) from Debian when missing; start dockerd when not running.

    ``probe_image``, when it exists, is used to check that privileged containers start.
    """
    if docker_ok():
        check_privileged(probe_image)
        return
    if not start:
        raise Skip("docker is not running")
    if os.geteuid() != 0:
        raise Skip("docker is not running and this is not root: cannot install or start dockerd")
    if not shutil.which("dockerd"):
        if not shutil.which("apt-get"):
            raise Skip("no dockerd and no apt-get to install docker.io")
        log("installing docker.io from Debian")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-q"], capture=True, env=env)
        run(["apt-get", "install", "-y", "-q", "docker.io", "debootstrap"], capture=True, env=env)
    args = ["dockerd"]
    if bounding_set_lacks(CAP_SYS_RESOURCE):
        wrapper = cache_root() / "bin" / "runc-nocap"
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(HACK_KIND / "runc-nocap.py", wrapper)
        wrapper.chmod(0o755)
        log("capability bounding set lacks CAP_SYS_RESOURCE: runc-nocap wrapper as default runtime")
        args += ["--add-runtime", f"aicenter-runc={wrapper}", "--default-runtime", "aicenter-runc"]
    logf = cache_root() / "dockerd.log"
    logf.parent.mkdir(parents=True, exist_ok=True)
    log(f"starting {' '.join(args)} (log {logf})")
    with open(logf, "ab") as lf:
        proc = subprocess.Popen(args, stdout=lf, stderr=lf, stdin=subprocess.DEVNULL, start_new_session=True)
    (cache_root() / "dockerd.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 60
    while not docker_ok():
        if proc.poll() is not None:
            raise Skip(f"dockerd exited with {proc.returncode}; see {logf}: {logf.read_text()[-1500:]}")
        if time.monotonic() > deadline:
            raise Skip(f"dockerd did not answer within 60 s; see {logf}")
        time.sleep(1)
    check_privileged(probe_image)


def check_privileged(image: str | None) -> None:
    """kind nodes are privileged containers: fail early, with runc's reason, if those cannot start.

    Needs an image with ``/bin/busybox`` (the workload image); without one yet, nothing is checked.
    """
    if not image or image_inputs(image) is None:
        return
    p = run(
        ["docker", "run", "--rm", "--privileged", "--entrypoint", "/bin/busybox", image, "true"],
        check=False,
        capture=True,
    )
    if p.returncode != 0:
        raise Skip(
            "docker cannot start privileged containers (kind nodes are privileged): "
            + (p.stderr or "").strip()[-600:]
        )


def image_inputs(image: str) -> str | None:
    """The inputs hash an image was built from ("" for a foreign image), None when it does not exist."""
    p = run(
        ["docker", "image", "inspect", "-f", f'{{{{index .Config.Labels "{INPUTS_LABEL}"}}}}', image],
        check=False,
        capture=True,
    )
    return p.stdout.strip() if p.returncode == 0 else None


def image_id(image: str) -> str | None:
    p = run(["docker", "image", "inspect", "-f", "{{.Id}}", image], check=False, capture=True)
    return p.stdout.strip() if p.returncode == 0 else None


def _drop_replaced(image: str, old_id: str | None) -> None:
    """Remove the image ``image`` named before a rebuild, now untagged (kept if something uses it)."""
    if old_id and old_id != image_id(image):
        run(["docker", "rmi", old_id], check=False, capture=True)


def docker_import(tar: Path, image: str, inputs: str, changes: list[str]) -> None:
    """A one-layer image from a root file system tar, with Dockerfile ``changes`` and the inputs label."""
    old = image_id(image)
    args = ["docker", "import"]
    for c in [*changes, f"LABEL {INPUTS_LABEL}={inputs}"]:
        args += ["--change", c]
    run([*args, tar, image], capture=True)
    _drop_replaced(image, old)


def docker_build(context: Path, image: str, inputs: str, dockerfile: str) -> None:
    """``docker build`` of ``dockerfile`` (text) in ``context``, which holds everything it needs.

    The classic builder: it needs no registry as long as ``FROM`` names a local image, and works with
    the Docker 20.10 daemon Debian ships (BuildKit would want its frontend image).
    """
    old = image_id(image)
    (context / "Dockerfile").write_text(dockerfile + f"LABEL {INPUTS_LABEL}={inputs}\n")
    run(
        ["docker", "build", "--quiet", "--pull=false", "-t", image, context],
        capture=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    _drop_replaced(image, old)


def image_size_mib(image: str) -> int:
    return int(out(["docker", "image", "inspect", "-f", "{{.Size}}", image]).strip()) >> 20
