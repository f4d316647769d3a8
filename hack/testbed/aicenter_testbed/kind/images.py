"""The images the kind cluster runs besides its nodes: operator, device plugin, workload.

* ``aicenter-python:kind`` — the shared base layer: debootstrapped bookworm with Debian's
  ``python3`` and ``python3-venv`` and the user 65532 (``docker import``).
* ``aicenter-operator:kind`` — the base plus a venv ``/opt/aicenter`` holding the operator's wheel
  (:func:`operator_wheel`: ``pip wheel --no-deps`` of the repository root, i.e. ``operator/aicenter``)
  and its runtime dependencies from PyPI (kopf, kubernetes, pyyaml and theirs); entrypoint
  ``aicenter-operator run``. It holds neither the test bed nor the device plugin (checked).
* ``aicenter-deviceplugin:kind`` — the base plus ``/opt/aicenter-deviceplugin`` with the device
  plugin's wheel (:func:`deviceplugin_wheel`, ``hack/deviceplugin``) and its dependencies
  (grpcio, protobuf, kubernetes); entrypoint ``aicenter-deviceplugin``. It holds neither the
  operator nor the test bed (checked).
* ``aicenter-workload:kind`` — Debian's static busybox and a few applet links, for the GPUJob pods.

Each venv is built in a chroot of the base from wheels only (no index), then added as one layer
on the base with ``docker build`` (classic builder, no registry, no container run), so both Python
images share the base layer when kind loads them. The wheels are built and fetched with this
machine's Python, which must match the image's (bookworm: 3.11).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from aicenter_testbed.kind import REPO
from aicenter_testbed.kind.cache import hash_inputs, workdir
from aicenter_testbed.kind.docker import docker_build, docker_import, image_inputs, image_size_mib
from aicenter_testbed.kind.node import node_rootfs
from aicenter_testbed.kind.rootfs import SUITE, ensure_rootfs, tar_dir, untar
from aicenter_testbed.kind.shell import log, out, run

PYTHON_BASE_IMAGE = "aicenter-python:kind"
OPERATOR_IMAGE = "aicenter-operator:kind"
DEVICEPLUGIN_IMAGE = "aicenter-deviceplugin:kind"
WORKLOAD_IMAGE = "aicenter-workload:kind"

PYTHON_PACKAGES = ("python3", "python3-venv", "ca-certificates")
NONROOT = 65532
# Bumped whenever a recipe below changes in a way the hashed inputs do not show.
PYTHON_BASE_RECIPE = 1
APP_RECIPE = 1
WORKLOAD_RECIPE = 1

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


@dataclass(frozen=True)
class PythonApp:
    """A Python distribution in this repository, and the image that runs it."""

    image: str
    project: Path  # the directory of its pyproject.toml
    sources: tuple[str, ...]  # what its wheel is built from, relative to ``project``
    venv: str  # where the image installs it
    entrypoint: tuple[str, ...]
    smoke: tuple[str, ...]  # a command (in the venv's bin) that must succeed in the built image
    forbidden: tuple[str, ...]  # top-level modules the image must not be able to import

    @property
    def distribution(self) -> str:
        import tomllib

        return tomllib.loads((self.project / "pyproject.toml").read_text())["project"]["name"]

    def inputs(self, base_inputs: str) -> str:
        return hash_inputs(
            self.image,
            APP_RECIPE,
            base_inputs,
            self.venv,
            *self.entrypoint,
            *(self.project / s for s in self.sources if (self.project / s).exists()),
        )


OPERATOR = PythonApp(
    image=OPERATOR_IMAGE,
    project=REPO,
    sources=("pyproject.toml", "README.md", "LICENSE", "operator"),
    venv="/opt/aicenter",
    entrypoint=("aicenter-operator", "run"),
    smoke=("aicenter-operator", "run", "--help"),
    forbidden=("aicenter_testbed", "aicenter_deviceplugin"),
)
DEVICEPLUGIN = PythonApp(
    image=DEVICEPLUGIN_IMAGE,
    project=REPO / "hack" / "deviceplugin",
    sources=("pyproject.toml", "aicenter_deviceplugin"),
    venv="/opt/aicenter-deviceplugin",
    entrypoint=("aicenter-deviceplugin",),
    smoke=("aicenter-deviceplugin", "--help"),
    forbidden=("aicenter", "aicenter_testbed", "kopf"),
)


# ---------------------------------------------------------------------------------------------
# wheels


def build_wheel(app: PythonApp, dest: Path) -> Path:
    """``pip wheel --no-deps`` of ``app`` from a clean copy of its sources; returns the wheel's path.

    The copy keeps the build's by-products (``build/``, ``*.egg-info``) out of the checkout and the
    editable install's stale metadata out of the wheel.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aicenter-wheel-") as tmp:
        src, built = Path(tmp) / "src", Path(tmp) / "wheel"
        src.mkdir()
        for name in app.sources:
            path = app.project / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=_IGNORE)
            elif path.is_file():
                shutil.copy2(path, src / name)
        run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", built, src],
            capture=True,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
        (wheel,) = built.glob("*.whl")
        target = dest / wheel.name
        shutil.move(wheel, target)
    return target


def operator_wheel(dest: Path) -> Path:
    """The operator's wheel (``aicenter-operator``: ``operator/aicenter`` only) in ``dest``."""
    return build_wheel(OPERATOR, dest)


def deviceplugin_wheel(dest: Path) -> Path:
    """The simulated device plugin's wheel (``aicenter-deviceplugin``) in ``dest``."""
    return build_wheel(DEVICEPLUGIN, dest)


def wheel_console_scripts(wheel: Path) -> set[str]:
    """The console scripts a wheel declares (``entry_points.txt``)."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = zf.read(names[0]).decode() if names else ""
    scripts, section = set(), ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "console_scripts" and "=" in line:
            scripts.add(line.split("=", 1)[0].strip())
    return scripts


def app_wheels(app: PythonApp, dest: Path) -> Path:
    """``app``'s wheel and the wheels of its dependencies (PyPI) in ``dest``; returns the app's."""
    wheel = build_wheel(app, dest)
    run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", dest, "--find-links", dest, wheel],
        capture=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    return wheel


# ---------------------------------------------------------------------------------------------
# images


def python_rootfs() -> Path:
    return ensure_rootfs("python", PYTHON_PACKAGES)


def python_base_inputs() -> str:
    return hash_inputs("python-base", PYTHON_BASE_RECIPE, SUITE, python_rootfs().name)


def ensure_python_base(force: bool = False) -> str:
    """The shared base: Debian's python3 and the user 65532 (imported; the apps' first layer)."""
    inputs = python_base_inputs()
    if not force and image_inputs(PYTHON_BASE_IMAGE) == inputs:
        return PYTHON_BASE_IMAGE
    t0 = time.monotonic()
    with workdir("python-base-") as w:
        root = w / "root"
        untar(python_rootfs(), root)
        with open(root / "etc/passwd", "a") as f:
            f.write(f"nonroot:x:{NONROOT}:{NONROOT}:nonroot:/nonexistent:/usr/sbin/nologin\n")
        with open(root / "etc/group", "a") as f:
            f.write(f"nonroot:x:{NONROOT}:\n")
        tar = w / "base.tar"
        tar_dir(root, tar)
        docker_import(tar, PYTHON_BASE_IMAGE, inputs, ["ENV HOME=/tmp", "WORKDIR /tmp"])
    size = image_size_mib(PYTHON_BASE_IMAGE)
    log(f"base image {PYTHON_BASE_IMAGE} built in {time.monotonic() - t0:.0f}s ({size} MiB)")
    return PYTHON_BASE_IMAGE


def ensure_app_image(app: PythonApp, force: bool = False) -> str:
    """``app``'s image: a venv with its wheel and dependencies, one layer on the Python base."""
    ensure_python_base()
    inputs = app.inputs(python_base_inputs())
    if not force and image_inputs(app.image) == inputs:
        log(f"{app.image} up to date ({inputs})")
        return app.image
    t0 = time.monotonic()
    with workdir(app.image.split(":")[0] + "-") as w:
        wheels = w / "wheels"
        log(f"{app.image}: building {app.distribution}'s wheel, fetching its dependencies' wheels")
        app_wheels(app, wheels)
        root = w / "root"
        untar(python_rootfs(), root)
        _same_python(root)
        shutil.copytree(wheels, root / "tmp/wheels")
        venv = app.venv.lstrip("/")
        run(["chroot", root, "python3", "-m", "venv", app.venv], capture=True)
        pip = ["chroot", root, f"{app.venv}/bin/python", "-m", "pip"]
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        run(
            [
                *pip,
                "install",
                "-q",
                "--no-index",
                "--no-cache-dir",
                "--find-links",
                "/tmp/wheels",
                app.distribution,
            ],
            capture=True,
            env=env,
        )
        # nothing installs at run time: drop pip and setuptools from the venv (~20 MiB)
        run([*pip, "uninstall", "-y", "-q", "pip", "setuptools"], capture=True, env=env, check=False)
        run(["chroot", root, f"{app.venv}/bin/{app.smoke[0]}", *app.smoke[1:]], capture=True)
        present = out(
            [
                "chroot",
                root,
                f"{app.venv}/bin/python",
                "-c",
                "import importlib.util, sys; "
                "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))",
                *app.forbidden,
            ]
        ).split()
        if present:
            raise RuntimeError(f"{app.image} must not contain {', '.join(present)}")
        tar_dir(root, w / "venv.tar", venv)
        layer_mib = (w / "venv.tar").stat().st_size >> 20
        ctx = w / "context"
        ctx.mkdir()
        shutil.move(w / "venv.tar", ctx / "venv.tar")
        entrypoint = ", ".join(f'"{a}"' for a in app.entrypoint)
        docker_build(
            ctx,
            app.image,
            inputs,
            f"FROM {PYTHON_BASE_IMAGE}\n"
            "ADD venv.tar /\n"
            f"ENV PATH={app.venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            " PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp\n"
            f"USER {NONROOT}:{NONROOT}\n"
            "WORKDIR /tmp\n"
            f"ENTRYPOINT [{entrypoint}]\n",
        )
    log(
        f"{app.image} built in {time.monotonic() - t0:.0f}s"
        f" ({image_size_mib(app.image)} MiB, of which its own layer {layer_mib} MiB)"
    )
    return app.image


def _same_python(root: Path) -> None:
    """The wheels were resolved by this Python; the image's must be the same minor version."""
    theirs = out(
        ["chroot", root, "python3", "-c", "import sys; print('{}.{}'.format(*sys.version_info[:2]))"]
    ).strip()
    ours = "{}.{}".format(*sys.version_info[:2])
    if theirs != ours:
        raise RuntimeError(
            f"the image's python3 is {theirs} but the wheels are fetched with {ours} ({sys.executable});"
            f" run with a Python {theirs} virtualenv"
        )


def ensure_operator_image(force: bool = False) -> str:
    return ensure_app_image(OPERATOR, force)


def ensure_deviceplugin_image(force: bool = False) -> str:
    return ensure_app_image(DEVICEPLUGIN, force)


def ensure_workload_image(force: bool = False) -> str:
    """A tiny image: Debian's static busybox (from the node's rootfs), for the e2e's GPUJob pods."""
    base = node_rootfs()
    inputs = hash_inputs("workload", WORKLOAD_RECIPE, base.name)
    if not force and image_inputs(WORKLOAD_IMAGE) == inputs:
        return WORKLOAD_IMAGE
    with workdir("workload-") as w:
        run(["tar", "-C", w, "-xf", base, "./usr/bin/busybox"], capture=True)  # merged /usr
        root = w / "root"
        (root / "bin").mkdir(parents=True)
        shutil.move(w / "usr/bin/busybox", root / "bin/busybox")
        for applet in ("sh", "echo", "env", "sleep", "cat", "ls", "true", "false", "printenv"):
            (root / "bin" / applet).symlink_to("busybox")
        for d in ("tmp", "etc", "proc", "sys", "dev"):
            (root / d).mkdir()
        (root / "tmp").chmod(0o1777)
        tar = w / "workload.tar"
        tar_dir(root, tar)
        docker_import(tar, WORKLOAD_IMAGE, inputs, ["ENV PATH=/bin", 'CMD ["/bin/sh"]'])
    log(f"workload image {WORKLOAD_IMAGE} built ({image_size_mib(WORKLOAD_IMAGE)} MiB)")
    return WORKLOAD_IMAGE


def ensure_images(force: bool = False) -> list[str]:
    """The operator, device plugin and workload images (built when their inputs changed)."""
    ensure_python_base(force)  # once: both Python images then sit on the same base
    return [ensure_operator_image(force), ensure_deviceplugin_image(force), ensure_workload_image(force)]


def image_sizes(images: list[str]) -> dict[str, int]:
    """image → size in MiB (with the layers it shares), for the report; missing images are left out."""
    sizes = {}
    for image in images:
        p = run(["docker", "image", "inspect", "-f", "{{.Size}}", image], check=False, capture=True)
        if p.returncode == 0:
            sizes[image] = int(p.stdout.strip()) >> 20
    return sizes
