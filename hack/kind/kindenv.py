"""The kind test bed: Docker, an offline kind node image, the operator image, a 3-node cluster, the e2e.

Everything is built from what this project's machines can reach (Debian's archive, the Go module
proxy, PyPI) and cached under ``~/.cache/aicenter-kind`` (``AICENTER_KIND_CACHE``); each image is
keyed by a hash of its inputs, recorded as a Docker image label, and rebuilt only when they change.

    .venv/bin/python hack/kind/kindenv.py e2e          # what hack/kind/e2e.sh runs
    .venv/bin/python hack/kind/kindenv.py docker       # install docker.io, start dockerd
    .venv/bin/python hack/kind/kindenv.py images       # node, operator and workload images
    .venv/bin/python hack/kind/kindenv.py create       # cluster (1 control plane + 2 workers)
    .venv/bin/python hack/kind/kindenv.py delete

The Kubernetes binaries come from ``aicenter_testbed.tools`` (built from the Go module proxy);
docs/kind.md explains every workaround.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "operator"))

from aicenter_testbed import tools as tb  # noqa: E402

KIND_VERSION = "v0.30.0"  # the kind release made for Kubernetes 1.34; builds with Go 1.26
K8S_VERSION = tb.KUBERNETES_VERSION
SUITE = "bookworm"
CLUSTER_NAME = os.environ.get("AICENTER_KIND_CLUSTER", "aicenter-e2e")

NODE_IMAGE = f"aicenter-kind-node:{K8S_VERSION}"
OPERATOR_IMAGE = "aicenter-operator:kind"
WORKLOAD_IMAGE = "aicenter-workload:kind"
INPUTS_LABEL = "dev.aicenter.kind.inputs"

# Packages of the node image: kind's base image list (images/base/Dockerfile) less curl, fuse,
# nfs and iscsi, plus Debian's containerd, runc and CNI plugins (kind builds those from source).
NODE_PACKAGES = (
    "systemd",
    "dbus",
    "conntrack",
    "iptables",
    "nftables",
    "iproute2",
    "ethtool",
    "util-linux",
    "mount",
    "kmod",
    "libseccomp2",
    "pigz",
    "bash",
    "ca-certificates",
    "jq",
    "procps",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "busybox-static",
)
OPERATOR_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Bumped whenever the assembly below changes in a way the hashed inputs do not show.
NODE_RECIPE = 2
OPERATOR_RECIPE = 2
WORKLOAD_RECIPE = 1
ROOTFS_RECIPE = 2

POD_SUBNET = "10.244.0.0/16"
SERVICE_SUBNET = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
CNI_CONF = "/etc/cni/net.d/10-aicenter-bridge.conflist"


# ---------------------------------------------------------------------------------------------
# small helpers


def log(msg: str) -> None:
    print(f"[kind] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    base = os.environ.get("AICENTER_KIND_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "aicenter-kind"
    )
    return Path(base)


def run(cmd: list[str], *, check: bool = True, capture: bool = False, **kw) -> subprocess.CompletedProcess:
    if capture:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.run(cmd, text=True, **kw)
    if check and proc.returncode != 0:
        err = (proc.stderr or "")[-4000:] if capture else ""
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}) {err}")
    return proc


def out(cmd: list[str], **kw) -> str:
    return run(cmd, capture=True, **kw).stdout


class Skip(Exception):
    """The kind e2e cannot run on this machine; the message says why."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def hash_inputs(*parts: object) -> str:
    """A short hash of strings, bytes and files (content), in order."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, Path):
            if p.is_dir():
                for f in sorted(p.rglob("*")):
                    if f.is_file() and "__pycache__" not in f.parts:
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
    """Cheap identity of a large built binary: path, size and mtime (rebuilt binaries change it)."""
    st = path.stat()
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


# ---------------------------------------------------------------------------------------------
# docker


def bounding_set_lacks(cap: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return not int(line.split()[1], 16) & (1 << cap)
    return False


CAP_SYS_RESOURCE = 24


def docker_ok() -> bool:
    return (
        shutil.which("docker") is not None
        and run(["docker", "info"], check=False, capture=True).returncode == 0
    )


def ensure_docker(start: bool = True) -> None:
    """Install docker.io from Debian when missing; start dockerd by hand when it is not running.

    When this machine's capability bounding set lacks CAP_SYS_RESOURCE (a sandboxed VM), privileged
    containers fail in runc ("unable to apply caps"); dockerd is then started with
    hack/kind/runc-nocap.py as its default runtime, which drops the missing capabilities.
    """
    if docker_ok():
        _check_privileged()
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
        shutil.copy2(HERE / "runc-nocap.py", wrapper)
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
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Skip(f"dockerd exited with {proc.returncode}; see {logf}: {logf.read_text()[-1500:]}")
        if docker_ok():
            break
        time.sleep(1)
    else:
        raise Skip(f"dockerd did not answer within 60 s; see {logf}")
    _check_privileged()


def _check_privileged() -> None:
    """kind nodes are privileged containers: fail early, with the reason, if those cannot start."""
    if run(["docker", "image", "inspect", WORKLOAD_IMAGE], check=False, capture=True).returncode != 0:
        return  # checked after the images exist (the first e2e run builds them)
    p = run(
        ["docker", "run", "--rm", "--privileged", "--entrypoint", "/bin/busybox", WORKLOAD_IMAGE, "true"],
        check=False,
        capture=True,
    )
    if p.returncode != 0:
        raise Skip(
            "docker cannot start privileged containers (kind nodes are privileged): "
            + (p.stderr or "").strip()[-600:]
        )


def docker_image_inputs(image: str) -> str | None:
    p = run(
        ["docker", "image", "inspect", "-f", f'{{{{index .Config.Labels "{INPUTS_LABEL}"}}}}', image],
        check=False,
        capture=True,
    )
    return p.stdout.strip() if p.returncode == 0 else None


def docker_import(tar: Path, image: str, inputs: str, changes: list[str]) -> None:
    args = ["docker", "import"]
    for c in [*changes, f"LABEL {INPUTS_LABEL}={inputs}"]:
        args += ["--change", c]
    run([*args, str(tar), image], capture=True)


# ---------------------------------------------------------------------------------------------
# root file systems


def ensure_rootfs(name: str, packages: tuple[str, ...]) -> Path:
    """A debootstrapped Debian rootfs as a tarball, cached by suite and package list."""
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
        log(f"debootstrap {SUITE} for the {name} image ({len(packages)} extra packages)")
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--cache-dir={debs}",
                f"--include={','.join(packages)}",
                SUITE,
                str(root),
                tb._debian_mirror(),
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


def tar_dir(root: Path, dest: Path) -> None:
    run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(dest), "."], capture=True)


def untar(tar: Path, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-xf", str(tar)], capture=True)


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    base = cache_root() / "work"
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=base) as tmp:
        yield Path(tmp)


# ---------------------------------------------------------------------------------------------
# OCI image archives (the node's preloaded control-plane images), written without Docker


@dataclass
class OciImage:
    names: list[str]
    files: dict[str, Path]  # path in the image → file on this machine
    entrypoint: list[str] | None = None
    env: list[str] = field(default_factory=lambda: ["PATH=/usr/local/bin:/usr/bin:/bin"])


def _layer(files: dict[str, Path], dest: Path) -> tuple[str, str, int]:
    """Write a gzip layer; return (diff_id, digest, size)."""
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
                "history": [{"created_by": "hack/kind/kindenv.py"}],
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
        run(["tar", "-C", str(w), "-cf", str(dest), "oci-layout", "index.json", "blobs"], capture=True)


def shared_libs(binary: Path) -> dict[str, Path]:
    """The dynamic libraries ``binary`` needs (from ldd): path in the image → real file."""
    p = run(["ldd", str(binary)], check=False, capture=True)
    libs: dict[str, Path] = {}
    for line in p.stdout.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            path = m.group(1)
            libs[path] = Path(path).resolve()
    return libs


def build_pause(dest: Path) -> None:
    with workdir("pause-") as w:
        shutil.copy(HERE / "node" / "pause.go", w / "main.go")
        (w / "go.mod").write_text("module aicenter.dev/kind-pause\n\ngo 1.22\n")
        run(
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(dest), "."],
            cwd=w,
            env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"},
            capture=True,
        )


def etcd_image_tag() -> str:
    """The tag our etcd image gets: its real version (kubeadm derives etcd's flags from the tag)."""
    text = out([str(tb.ETCD.path("etcd")), "--version"])
    m = re.search(r"etcd Version: (\d+\.\d+\.\d+)", text)
    if not m:
        raise RuntimeError(f"cannot read the etcd version: {text[:200]}")
    return f"{m.group(1)}-0"


def kubeadm_images(kubeadm: Path) -> dict[str, str]:
    """component → image reference, as kubeadm of this version names them."""
    refs = out([str(kubeadm), "config", "images", "list", "--kubernetes-version", K8S_VERSION]).split()
    return {r.rsplit("/", 1)[1].split(":")[0]: r for r in refs}


# ---------------------------------------------------------------------------------------------
# kind itself


def ensure_kind() -> Path:
    dest = cache_root() / "tools" / KIND_VERSION
    kind = dest / "kind"
    if not kind.is_file():
        t0 = time.monotonic()
        tb.build_go_tool("sigs.k8s.io/kind", KIND_VERSION, dest)
        log(f"built kind {KIND_VERSION} in {time.monotonic() - t0:.0f}s")
    return kind


def kind_module_dir() -> Path:
    """The sigs.k8s.io/kind module source (for its node base-image files)."""
    with workdir("gomod-") as w:
        (w / "go.mod").write_text("module aicenter.dev/kind-files\n\ngo 1.22\n")
        info = json.loads(out(["go", "mod", "download", "-json", f"sigs.k8s.io/kind@{KIND_VERSION}"], cwd=w))
    return Path(info["Dir"])


# ---------------------------------------------------------------------------------------------
# the node image


def node_image_inputs(t: tb.Tools, node_bins: dict[str, Path]) -> str:
    return hash_inputs(
        "node",
        NODE_RECIPE,
        KIND_VERSION,
        K8S_VERSION,
        SUITE,
        *NODE_PACKAGES,
        HERE / "node",
        *(
            stamp_of_binary(p)
            for p in (
                *node_bins.values(),
                t.kube_apiserver,
                t.kube_controller_manager,
                t.kube_scheduler,
                t.kubectl,
                t.etcd,
            )
        ),
    )


def ensure_node_image(force: bool = False) -> str:
    t = tb.ensure_tools(with_node=True)
    node_bins = {c: tb.KUBERNETES_NODE.path(c) for c in tb.NODE_COMMANDS}
    inputs = node_image_inputs(t, node_bins)
    if not force and docker_image_inputs(NODE_IMAGE) == inputs:
        log(f"node image {NODE_IMAGE} up to date ({inputs})")
        return NODE_IMAGE
    cached = cache_root() / "images" / f"node-{inputs}.tar"
    if not force and cached.is_file():
        log(f"importing cached node image {cached.name}")
        docker_import(cached, NODE_IMAGE, inputs, NODE_CHANGES)
        return NODE_IMAGE
    t0 = time.monotonic()
    base = ensure_rootfs("node", NODE_PACKAGES)
    kind_files = kind_module_dir() / "images" / "base" / "files"
    with workdir("node-") as w:
        root = w / "root"
        untar(base, root)
        _install_kind_base_files(kind_files, root)
        _configure_node_rootfs(root)
        for name in ("kubelet", "kubeadm"):
            shutil.copy2(node_bins[name], root / "usr/bin" / name)
        shutil.copy2(t.kubectl, root / "usr/bin/kubectl")
        (root / "kind/version").write_text(K8S_VERSION)
        _preload_images(t, node_bins["kubeadm"], root, w)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tar_dir(root, cached.with_suffix(".part"))
        cached.with_suffix(".part").rename(cached)
    for old in cached.parent.glob("node-*.tar"):
        if old != cached:
            old.unlink()
    docker_import(cached, NODE_IMAGE, inputs, NODE_CHANGES)
    log(f"node image {NODE_IMAGE} built in {time.monotonic() - t0:.0f}s ({cached.stat().st_size >> 20} MiB)")
    return NODE_IMAGE


# kind's image also sets STOPSIGNAL SIGRTMIN+3, which `docker import --change` (Docker 20.10) does
# not accept; kind removes its nodes with `docker rm -f`, so no stop signal is ever sent.
NODE_CHANGES = [
    "ENV container=docker",
    'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]',
]


def _install_kind_base_files(src: Path, root: Path) -> None:
    """kind's images/base/files, laid out as its Dockerfile does."""
    for f in src.rglob("*"):
        if f.is_dir():
            continue
        rel = f.relative_to(src)
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dest)
        executable = rel.parts[0] == "usr" or rel.parts[:2] == ("kind", "bin")
        dest.chmod(0o755 if executable else 0o644)
    (root / "kind/bin").chmod(0o755)


def _configure_node_rootfs(root: Path) -> None:
    node = HERE / "node"
    shutil.copyfile(node / "containerd-config.toml", root / "etc/containerd/config.toml")
    shutil.copyfile(node / "containerd.service", root / "etc/systemd/system/containerd.service")
    (root / "kind/manifests").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(node / "default-storage.yaml", root / "kind/manifests/default-storage.yaml")
    # the OCI runtime spec CRI starts from: ctr's default, plus kind's product-files hook, no rlimits
    spec = json.loads(out(["chroot", str(root), "ctr", "oci", "spec"]))
    spec.setdefault("hooks", {}).setdefault("createContainer", []).append(
        {"path": "/kind/bin/mount-product-files.sh"}
    )
    spec["process"].pop("rlimits", None)
    (root / "etc/containerd/cri-base.json").write_text(json.dumps(spec, indent=2))
    # kind's Dockerfile: trim systemd, keep journald off /dev/kmsg, systemd as /sbin/init
    sysd = root / "lib/systemd/system"
    for pattern in (
        "sysinit.target.wants/systemd-tmpfiles-setup.service",
        "multi-user.target.wants/*",
        "local-fs.target.wants/*",
        "sockets.target.wants/*udev*",
        "sockets.target.wants/*initctl*",
        "basic.target.wants/*",
    ):
        for p in sysd.glob(pattern):
            p.unlink()
    for p in (root / "etc/systemd/system").glob("*.wants/*"):
        p.unlink()
    with open(root / "etc/systemd/journald.conf", "a") as f:
        f.write("ReadKMsg=no\n")
    init = root / "sbin/init"
    if init.exists() or init.is_symlink():
        init.unlink()
    init.symlink_to("/lib/systemd/systemd")
    run(
        [
            "chroot",
            str(root),
            "systemctl",
            "enable",
            "kubelet.service",
            "containerd.service",
            "undo-mount-hacks.service",
        ],
        capture=True,
    )
    run(["chroot", str(root), "systemctl", "mask", "systemd-binfmt.service"], capture=True)
    (root / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)
    # CNI: Debian installs plugins in /usr/lib/cni; kind and most manifests expect /opt/cni/bin
    (root / "opt/cni").mkdir(parents=True, exist_ok=True)
    if not (root / "opt/cni/bin").exists():
        (root / "opt/cni/bin").symlink_to("/usr/lib/cni")
    (root / "etc/cni/net.d").mkdir(parents=True, exist_ok=True)
    # kind's entrypoint and containerd.service name /usr/local/bin/containerd; Debian's is /usr/bin
    (root / "usr/local/bin/containerd").symlink_to("/usr/bin/containerd")
    (root / "etc/machine-id").write_text("")


def _preload_images(t: tb.Tools, kubeadm: Path, root: Path, w: Path) -> None:
    """Import the control-plane images into the node's containerd store (k8s.io namespace).

    They are built here from the static binaries (etcd with its two libraries) and imported without
    unpacking by a private containerd whose root is the node's /var/lib/containerd: the node's
    containerd unpacks them when the static pods start. kube-proxy and coredns are not needed (the
    cluster runs without them, see docs/kind.md).
    """
    refs = kubeadm_images(kubeadm)
    pause = w / "pause"
    build_pause(pause)
    images = [
        OciImage([refs["kube-apiserver"]], {"usr/local/bin/kube-apiserver": t.kube_apiserver}),
        OciImage(
            [refs["kube-controller-manager"]],
            {"usr/local/bin/kube-controller-manager": t.kube_controller_manager},
        ),
        OciImage([refs["kube-scheduler"]], {"usr/local/bin/kube-scheduler": t.kube_scheduler}),
        # named for its real version: kubeadm 1.34 gives etcd >= 3.6 flags 3.5 rejects (--feature-gates)
        OciImage(
            [refs["etcd"].rsplit(":", 1)[0] + ":" + etcd_image_tag()],
            {"usr/local/bin/etcd": t.etcd, **shared_libs(t.etcd)},
        ),
        OciImage([refs["pause"], "registry.k8s.io/pause:3.10"], {"pause": pause}, entrypoint=["/pause"]),
    ]
    archive = w / "images.tar"
    write_oci_archive(images, archive)
    with private_containerd(root / "var/lib/containerd", w) as sock:
        run(
            [
                "ctr",
                "--address",
                str(sock),
                "--namespace=k8s.io",
                "images",
                "import",
                "--label=io.cri-containerd.pinned=pinned",
                "--all-platforms",
                "--no-unpack",
                str(archive),
            ],
            capture=True,
        )
        listed = out(["ctr", "--address", str(sock), "--namespace=k8s.io", "images", "list", "-q"])
    log("preloaded: " + ", ".join(sorted(n for n in listed.split() if not n.startswith("sha256:"))))


@contextlib.contextmanager
def private_containerd(root: Path, w: Path) -> Iterator[Path]:
    """A short-lived containerd (this machine's binary) over ``root``; yields its socket."""
    state, sock = w / "ctrd-state", w / "ctrd.sock"
    cfg = w / "ctrd.toml"
    cfg.write_text(
        "version = 2\n"
        f'root = "{root}"\nstate = "{state}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n'
        f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
    )
    root.mkdir(parents=True, exist_ok=True)
    logf = open(w / "ctrd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["containerd", "--config", str(cfg)], stdout=logf, stderr=logf)
    try:
        deadline = time.monotonic() + 30
        while run(["ctr", "--address", str(sock), "version"], check=False, capture=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"private containerd did not start: {(w / 'ctrd.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        yield sock
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logf.close()


# ---------------------------------------------------------------------------------------------
# operator and workload images


def operator_source_inputs() -> list[object]:
    return [
        REPO / "pyproject.toml",
        REPO / "operator" / "aicenter",
        HERE / "requirements-deviceplugin.txt",
    ]


def ensure_operator_image(force: bool = False) -> str:
    """Debian's python3 + a venv with the project's wheel and its dependencies (from PyPI)."""
    inputs = hash_inputs("operator", OPERATOR_RECIPE, SUITE, *OPERATOR_PACKAGES, *operator_source_inputs())
    if not force and docker_image_inputs(OPERATOR_IMAGE) == inputs:
        log(f"operator image {OPERATOR_IMAGE} up to date ({inputs})")
        return OPERATOR_IMAGE
    t0 = time.monotonic()
    base = ensure_rootfs("operator", OPERATOR_PACKAGES)
    with workdir("operator-") as w:
        wheels = w / "wheels"
        log("building the project's wheel and fetching its dependencies' wheels")
        src = w / "src"  # a copy: pip's build writes into the tree (build/, *.egg-info)
        shutil.copytree(
            REPO / "operator", src / "operator", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
        shutil.copy2(REPO / "pyproject.toml", src / "pyproject.toml")
        for extra in ("README.md", "LICENSE"):
            if (REPO / extra).is_file():
                shutil.copy2(REPO / extra, src / extra)
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--wheel-dir",
                str(wheels),
                str(src),
                "-r",
                str(HERE / "requirements-deviceplugin.txt"),
            ],
            capture=True,
        )
        root = w / "root"
        untar(base, root)
        shutil.copytree(wheels, root / "tmp/wheels")
        run(["chroot", str(root), "python3", "-m", "venv", "/opt/aicenter"], capture=True)
        reqs = [
            line.strip()
            for line in (HERE / "requirements-deviceplugin.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        run(
            [
                "chroot",
                str(root),
                "/opt/aicenter/bin/pip",
                "install",
                "-q",
                "--no-index",
                "--no-cache-dir",
                "--find-links",
                "/tmp/wheels",
                "aicenter-operator",
                *reqs,
            ],
            capture=True,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
        shutil.rmtree(root / "tmp/wheels")
        # nothing installs at run time: drop pip and setuptools from the venv (~20 MiB)
        run(
            [
                "chroot",
                str(root),
                "/opt/aicenter/bin/python",
                "-m",
                "pip",
                "uninstall",
                "-y",
                "-q",
                "pip",
                "setuptools",
            ],
            capture=True,
        )
        run(
            [
                "chroot",
                str(root),
                "/opt/aicenter/bin/python",
                "-c",
                "import aicenter.controller.main, aicenter_deviceplugin.server",
            ],
            capture=True,
        )
        with open(root / "etc/passwd", "a") as f:
            f.write("nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin\n")
        with open(root / "etc/group", "a") as f:
            f.write("nonroot:x:65532:\n")
        tar = w / "operator.tar"
        tar_dir(root, tar)
        docker_import(
            tar,
            OPERATOR_IMAGE,
            inputs,
            [
                "ENV PATH=/opt/aicenter/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV PYTHONUNBUFFERED=1",
                "ENV PYTHONDONTWRITEBYTECODE=1",
                "ENV HOME=/tmp",
                "USER 65532:65532",
                "WORKDIR /tmp",
                'ENTRYPOINT ["aicenter-operator", "run"]',
            ],
        )
    size = image_size_mib(OPERATOR_IMAGE)
    log(f"operator image {OPERATOR_IMAGE} built in {time.monotonic() - t0:.0f}s ({size} MiB)")
    return OPERATOR_IMAGE


def ensure_workload_image(force: bool = False) -> str:
    """A tiny image: Debian's static busybox, for the e2e's GPUJob pods."""
    base = ensure_rootfs("node", NODE_PACKAGES)
    inputs = hash_inputs("workload", WORKLOAD_RECIPE, base.name)
    if not force and docker_image_inputs(WORKLOAD_IMAGE) == inputs:
        return WORKLOAD_IMAGE
    with workdir("workload-") as w:
        run(["tar", "-C", str(w), "-xf", str(base), "./usr/bin/busybox"], capture=True)  # merged /usr
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


def image_size_mib(image: str) -> int:
    return int(out(["docker", "image", "inspect", "-f", "{{.Size}}", image]).strip()) >> 20


# ---------------------------------------------------------------------------------------------
# the cluster


def kubeconfig_path(name: str = CLUSTER_NAME) -> Path:
    return cache_root() / f"kubeconfig-{name}"


def cluster_config() -> str:
    return f"""\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  # no kindnetd, kube-proxy or CoreDNS images here: a bridge CNI config per node, routes between
  # nodes and one DNAT rule for the kubernetes Service are installed after creation (kindenv.py)
  disableDefaultCNI: true
  kubeProxyMode: none
  podSubnet: {POD_SUBNET}
  serviceSubnet: {SERVICE_SUBNET}
nodes:
  - role: control-plane
  - role: worker
  - role: worker
kubeadmConfigPatches:
  - |
    kind: InitConfiguration
    skipPhases: ["preflight", "addon/kube-proxy", "addon/coredns"]
  - |
    kind: ClusterConfiguration
    etcd:
      local:
        imageTag: "{etcd_image_tag()}"
"""


def kind_cmd(*args: str) -> list[str]:
    return [str(ensure_kind()), *args]


def cluster_exists(name: str = CLUSTER_NAME) -> bool:
    p = run(kind_cmd("get", "clusters"), check=False, capture=True)
    return name in p.stdout.split()


def kubectl(kubeconfig: Path, *args: str, **kw) -> str:
    return out([str(tb.KUBERNETES.path("kubectl")), f"--kubeconfig={kubeconfig}", *args], **kw)


def create_cluster(name: str = CLUSTER_NAME) -> Path:
    kubeconfig = kubeconfig_path(name)
    if cluster_exists(name):
        log(f"deleting the existing cluster {name}")
        delete_cluster(name)
    with workdir("cluster-") as w:
        cfg = w / "kind.yaml"
        cfg.write_text(cluster_config())
        t0 = time.monotonic()
        log(f"kind create cluster {name} (1 control plane + 2 workers)")
        p = run(
            kind_cmd(
                "create",
                "cluster",
                "--name",
                name,
                "--image",
                NODE_IMAGE,
                "--config",
                str(cfg),
                "--kubeconfig",
                str(kubeconfig),
                "--retain",
            ),
            check=False,
            capture=True,
        )
        if p.returncode != 0:
            diag = _node_diagnostics(name)
            delete_cluster(name)
            raise RuntimeError(f"kind create cluster failed:\n{p.stderr[-3000:]}\n{diag}")
        log(f"kind create cluster: {time.monotonic() - t0:.0f}s")
    setup_network(kubeconfig, name)
    wait_nodes_ready(kubeconfig)
    log(f"cluster {name} ready in {time.monotonic() - t0:.0f}s; kubeconfig {kubeconfig}")
    return kubeconfig


def _node_diagnostics(name: str) -> str:
    lines = []
    for node in node_containers(name):
        p = run(
            [
                "docker",
                "exec",
                node,
                "journalctl",
                "--no-pager",
                "-n",
                "40",
                "-u",
                "kubelet",
                "-u",
                "containerd",
            ],
            check=False,
            capture=True,
        )
        lines.append(f"--- {node}\n{p.stdout[-3000:]}")
    return "\n".join(lines)


def node_containers(name: str = CLUSTER_NAME) -> list[str]:
    p = run(kind_cmd("get", "nodes", "--name", name), check=False, capture=True)
    return sorted(p.stdout.split())


def setup_network(kubeconfig: Path, name: str = CLUSTER_NAME) -> None:
    """What kindnetd and kube-proxy would do, once: per-node bridge CNI, routes, the API Service VIP."""
    nodes = json.loads(kubectl(kubeconfig, "get", "nodes", "-o", "json"))["items"]
    info = {}
    for n in nodes:
        ip = next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
        info[n["metadata"]["name"]] = (
            ip,
            n["spec"].get("podCIDR") or _wait_pod_cidr(kubeconfig, n["metadata"]["name"]),
        )
    cp_ip = next(ip for node, (ip, _) in info.items() if node.endswith("control-plane"))
    for node, (_ip, cidr) in info.items():
        conflist = {
            "cniVersion": "1.0.0",
            "name": "aicenter-kind",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        script = [
            "set -e",
            f"cat > {CNI_CONF} <<'EOF'\n{json.dumps(conflist, indent=2)}\nEOF",
            # the kubernetes Service without kube-proxy: DNAT its ClusterIP to the API server
            f"iptables -t nat -C PREROUTING -d {KUBERNETES_SERVICE_IP}/32 -p tcp --dport 443 -j DNAT"
            f" --to-destination {cp_ip}:6443 2>/dev/null || iptables -t nat -A PREROUTING -d"
            f" {KUBERNETES_SERVICE_IP}/32 -p tcp --dport 443 -j DNAT --to-destination {cp_ip}:6443",
            f"iptables -t nat -C OUTPUT -d {KUBERNETES_SERVICE_IP}/32 -p tcp --dport 443 -j DNAT"
            f" --to-destination {cp_ip}:6443 2>/dev/null || iptables -t nat -A OUTPUT -d"
            f" {KUBERNETES_SERVICE_IP}/32 -p tcp --dport 443 -j DNAT --to-destination {cp_ip}:6443",
        ]
        for other, (oip, ocidr) in info.items():
            if other != node:
                script.append(f"ip route replace {ocidr} via {oip}")
        run(["docker", "exec", "-i", node, "bash", "-s"], input="\n".join(script), capture=True)
    log("network: bridge CNI per node, pod routes between nodes, kubernetes Service DNAT to " + cp_ip)


def _wait_pod_cidr(kubeconfig: Path, node: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cidr = kubectl(kubeconfig, "get", "node", node, "-o", "jsonpath={.spec.podCIDR}").strip()
        if cidr:
            return cidr
        time.sleep(1)
    raise RuntimeError(f"node {node} got no podCIDR")


def wait_nodes_ready(kubeconfig: Path, timeout: float = 180) -> None:
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "nodes", "--all", f"--timeout={int(timeout)}s")


def load_images(images: list[str], name: str = CLUSTER_NAME) -> None:
    """Load into the workers only: the operator and the workloads never run on the control plane."""
    t0 = time.monotonic()
    workers = [n for n in node_containers(name) if not n.endswith("control-plane")]
    run(kind_cmd("load", "docker-image", "--name", name, "--nodes", ",".join(workers), *images), capture=True)
    log(f"loaded {', '.join(images)} into the nodes in {time.monotonic() - t0:.0f}s")


def delete_cluster(name: str = CLUSTER_NAME) -> None:
    run(
        kind_cmd("delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig_path(name))),
        check=False,
        capture=True,
    )
    kubeconfig_path(name).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# the e2e


def e2e(args: argparse.Namespace) -> int:
    """Build what is missing, create the cluster, run tests/kind, delete the cluster; say what ran."""
    t_start = time.monotonic()
    timings: dict[str, float] = {}
    verdict, detail, rc = "SKIPPED", "", 0
    counts_line = ""
    created = False
    try:
        if not shutil.which("go"):
            raise Skip("no Go toolchain: kind and the Kubernetes binaries are built from the Go module proxy")
        t0 = time.monotonic()
        ensure_docker()
        timings["docker"] = time.monotonic() - t0
        t0 = time.monotonic()
        ensure_kind()
        ensure_node_image()
        ensure_operator_image()
        ensure_workload_image()
        _check_privileged()
        timings["images"] = time.monotonic() - t0
        t0 = time.monotonic()
        created = True
        kubeconfig = create_cluster()
        timings["cluster create"] = time.monotonic() - t0
        t0 = time.monotonic()
        load_images([OPERATOR_IMAGE, WORKLOAD_IMAGE])
        timings["image load"] = time.monotonic() - t0
        t0 = time.monotonic()
        env = {
            **os.environ,
            "AICENTER_KIND_KUBECONFIG": str(kubeconfig),
            "AICENTER_KIND_CLUSTER": CLUSTER_NAME,
            "AICENTER_KIND_OPERATOR_IMAGE": OPERATOR_IMAGE,
            "AICENTER_KIND_WORKLOAD_IMAGE": WORKLOAD_IMAGE,
            "AICENTER_KIND_HELM": str(tb.HELM.path("helm")),
            "AICENTER_KIND_KUBECTL": str(tb.KUBERNETES.path("kubectl")),
        }
        junit = cache_root() / "e2e-junit.xml"
        p = run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-m",
                "kind",
                "-p",
                "no:cacheprovider",
                f"--junitxml={junit}",
                "tests/kind/test_kind_e2e.py",
                *args.pytest_args,
            ],
            check=False,
            cwd=REPO,
            env=env,
        )
        timings["e2e tests"] = time.monotonic() - t0
        counts = _junit_counts(junit)
        counts_line = _fmt_counts(counts) if counts else ""
        if p.returncode == 0 and counts.get("tests", 0) > counts.get("skipped", 0):
            verdict, detail = "RAN and PASSED", _fmt_counts(counts)
        elif p.returncode == 0:
            verdict, detail, rc = "SKIPPED", "every kind test skipped itself: " + _fmt_counts(counts), 0
        else:
            verdict, detail, rc = "RAN and FAILED", f"pytest exit {p.returncode}: {_fmt_counts(counts)}", 1
    except Skip as e:
        verdict, detail, rc = "SKIPPED", str(e), (1 if args.require else 0)
    except Exception as e:  # a build or cluster step broke: that is a failure, not a skip
        verdict, detail, rc = "FAILED before the tests", f"{type(e).__name__}: {e}", 1
    finally:
        if created and not args.keep:
            t0 = time.monotonic()
            delete_cluster()
            timings["cluster delete"] = time.monotonic() - t0
    total = time.monotonic() - t_start
    print("\n" + "=" * 78)
    print("steps: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + f"; total {total:.0f}s")
    print(f"KIND E2E {verdict}: {detail}")
    print("=" * 78)
    if counts_line:  # the plain closing line test-log readers look for
        print(f"kind-e2e: {counts_line}")
    sys.stdout.flush()
    return rc


def _junit_counts(path: Path) -> dict[str, int]:
    import xml.etree.ElementTree as ET

    if not path.is_file():
        return {}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def _fmt_counts(c: dict[str, int]) -> str:
    if not c:
        return "no test report"
    passed = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
    return f"{passed} passed, {c['failures'] + c['errors']} failed, {c['skipped']} skipped"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("docker", help="install docker.io and start dockerd when needed")
    p = sub.add_parser(
        "images", help="build the node, operator and workload images when their inputs changed"
    )
    p.add_argument("--force", action="store_true")
    sub.add_parser("create", help="create the cluster and load the images; prints the kubeconfig path")
    sub.add_parser("delete", help="delete the cluster")
    p = sub.add_parser("e2e", help="build, create, test, delete; prints RAN/PASSED or SKIPPED and why")
    p.add_argument("--keep", action="store_true", help="keep the cluster afterwards")
    p.add_argument("--require", action="store_true", help="exit 1 when the e2e cannot run (SKIPPED)")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args(argv)
    if args.cmd == "docker":
        ensure_docker()
    elif args.cmd == "images":
        ensure_docker()
        ensure_kind()
        ensure_node_image(force=args.force)
        ensure_operator_image(force=args.force)
        ensure_workload_image(force=args.force)
    elif args.cmd == "create":
        ensure_docker()
        ensure_node_image()
        ensure_operator_image()
        ensure_workload_image()
        kubeconfig = create_cluster()
        load_images([OPERATOR_IMAGE, WORKLOAD_IMAGE])
        print(kubeconfig)
    elif args.cmd == "delete":
        delete_cluster()
    elif args.cmd == "e2e":
        return e2e(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
