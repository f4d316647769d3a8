"""The kind node image, assembled without a registry (``kind build node-image`` pulls its base).

A debootstrapped bookworm with kind's base-image package list plus Debian's containerd, runc and CNI
plugins; kind's ``images/base/files`` from the ``sigs.k8s.io/kind`` module laid out as its Dockerfile
does; our containerd config and unit (``hack/kind/node/``); the test bed's kubelet, kubeadm and
kubectl; and the control-plane images preloaded into the node's containerd store, written here as
OCI archives from the test bed's static binaries. Imported with ``docker import``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from aicenter_testbed import tools as tb
from aicenter_testbed.kind import HACK_KIND
from aicenter_testbed.kind.cache import cache_root, hash_inputs, stamp_of_binary, workdir
from aicenter_testbed.kind.docker import docker_import, image_inputs
from aicenter_testbed.kind.kindtool import KIND_VERSION, kind_module_dir
from aicenter_testbed.kind.oci import OciImage, shared_libs, write_oci_archive
from aicenter_testbed.kind.rootfs import SUITE, ensure_rootfs, tar_dir, untar
from aicenter_testbed.kind.shell import log, out, run

K8S_VERSION = tb.KUBERNETES_VERSION
NODE_IMAGE = f"aicenter-kind-node:{K8S_VERSION}"
NODE_FILES = HACK_KIND / "node"
NODE_RECIPE = 2  # bumped whenever the assembly below changes in a way the hashed inputs do not show

# kind's base image list (images/base/Dockerfile) less curl, fuse, nfs and iscsi, plus Debian's
# containerd, runc and CNI plugins (kind builds those from source) and a static busybox.
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

# kind's image also sets STOPSIGNAL SIGRTMIN+3, which `docker import --change` (Docker 20.10) does
# not accept; kind removes its nodes with `docker rm -f`, so no stop signal is ever sent.
NODE_CHANGES = [
    "ENV container=docker",
    'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]',
]


def node_rootfs() -> Path:
    """The node's debootstrapped base (the workload image takes its busybox from it too)."""
    return ensure_rootfs("node", NODE_PACKAGES)


def node_image_inputs(t: tb.Tools, node_bins: dict[str, Path]) -> str:
    return hash_inputs(
        "node",
        NODE_RECIPE,
        KIND_VERSION,
        K8S_VERSION,
        SUITE,
        *NODE_PACKAGES,
        NODE_FILES,
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
    if not force and image_inputs(NODE_IMAGE) == inputs:
        log(f"node image {NODE_IMAGE} up to date ({inputs})")
        return NODE_IMAGE
    cached = cache_root() / "images" / f"node-{inputs}.tar"
    if not force and cached.is_file():
        log(f"importing cached node image {cached.name}")
        docker_import(cached, NODE_IMAGE, inputs, NODE_CHANGES)
        return NODE_IMAGE
    t0 = time.monotonic()
    base = node_rootfs()
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
    shutil.copyfile(NODE_FILES / "containerd-config.toml", root / "etc/containerd/config.toml")
    shutil.copyfile(NODE_FILES / "containerd.service", root / "etc/systemd/system/containerd.service")
    (root / "kind/manifests").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(NODE_FILES / "default-storage.yaml", root / "kind/manifests/default-storage.yaml")
    # the OCI runtime spec CRI starts from: ctr's default, plus kind's product-files hook, no rlimits
    spec = json.loads(out(["chroot", root, "ctr", "oci", "spec"]))
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
            root,
            "systemctl",
            "enable",
            "kubelet.service",
            "containerd.service",
            "undo-mount-hacks.service",
        ],
        capture=True,
    )
    run(["chroot", root, "systemctl", "mask", "systemd-binfmt.service"], capture=True)
    (root / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)
    # CNI: Debian installs plugins in /usr/lib/cni; kind and most manifests expect /opt/cni/bin
    (root / "opt/cni").mkdir(parents=True, exist_ok=True)
    if not (root / "opt/cni/bin").exists():
        (root / "opt/cni/bin").symlink_to("/usr/lib/cni")
    (root / "etc/cni/net.d").mkdir(parents=True, exist_ok=True)
    # kind's entrypoint and containerd.service name /usr/local/bin/containerd; Debian's is /usr/bin
    (root / "usr/local/bin/containerd").symlink_to("/usr/bin/containerd")
    (root / "etc/machine-id").write_text("")


def build_pause(dest: Path) -> None:
    """The pause container's binary, from ``hack/kind/node/pause.go``."""
    with workdir("pause-") as w:
        shutil.copy(NODE_FILES / "pause.go", w / "main.go")
        (w / "go.mod").write_text("module aicenter.dev/kind-pause\n\ngo 1.22\n")
        run(
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", dest, "."],
            cwd=w,
            env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"},
            capture=True,
        )


def etcd_image_tag() -> str:
    """The tag our etcd image gets: its real version (kubeadm derives etcd's flags from the tag)."""
    text = out([tb.ETCD.path("etcd"), "--version"])
    m = re.search(r"etcd Version: (\d+\.\d+\.\d+)", text)
    if not m:
        raise RuntimeError(f"cannot read the etcd version: {text[:200]}")
    return f"{m.group(1)}-0"


def kubeadm_images(kubeadm: Path) -> dict[str, str]:
    """component → image reference, as kubeadm of this version names them."""
    refs = out([kubeadm, "config", "images", "list", "--kubernetes-version", K8S_VERSION]).split()
    return {r.rsplit("/", 1)[1].split(":")[0]: r for r in refs}


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
        ctr = ["ctr", "--address", sock, "--namespace=k8s.io"]
        run(
            [
                *ctr,
                "images",
                "import",
                "--label=io.cri-containerd.pinned=pinned",
                "--all-platforms",
                "--no-unpack",
                archive,
            ],
            capture=True,
        )
        listed = out([*ctr, "images", "list", "-q"])
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
        while run(["ctr", "--address", sock, "version"], check=False, capture=True).returncode != 0:
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
