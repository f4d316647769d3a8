"""Build, cache and locate the pinned binaries the test bed runs.

Every tool is built from a package registry this project can reach (the Go module proxy, Debian's
archive) into a versioned cache, ``~/.cache/aicenter-testbed/<component>-<version>/bin``, and
reused when present. A binary that already sits in ``KUBEBUILDER_ASSETS`` or a directory named by
``AICENTER_TESTBED_BIN`` is used instead of building, so users elsewhere can download them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.34.4"
ETCD_DEBIAN_SUITE = "trixie"  # trixie ships etcd 3.5.x; bookworm's 3.4 is too old for the apiserver
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.19.5"

K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
NODE_COMMANDS = ("kubelet", "kubeadm")  # only for the kind node image


def cache_root() -> Path:
    base = os.environ.get("AICENTER_TESTBED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "aicenter-testbed"
    )
    return Path(base)


def log(msg: str, tag: str = "testbed-tools") -> None:
    """One progress line on stderr, ``[tag] msg``; the test bed's builders (tools, kind) share it."""
    print(f"[{tag}] {msg}", file=sys.stderr, flush=True)


_log = log


def _run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def _external_dirs() -> list[Path]:
    dirs = []
    for var in ("AICENTER_TESTBED_BIN", "KUBEBUILDER_ASSETS"):
        if os.environ.get(var):
            dirs.append(Path(os.environ[var]))
    return dirs


def _find_external(name: str) -> Path | None:
    for d in _external_dirs():
        p = d / name
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


@dataclass
class Component:
    """One pinned tool set: a versioned cache directory and how to fill it."""

    name: str
    version: str
    commands: tuple[str, ...]

    @property
    def bin_dir(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}" / "bin"

    def missing(self) -> list[str]:
        return [c for c in self.commands if _find_external(c) is None and not (self.bin_dir / c).is_file()]

    def path(self, command: str) -> Path:
        ext = _find_external(command)
        return ext if ext is not None else self.bin_dir / command


def _go_env() -> dict[str, str]:
    # CGO off gives static binaries (kind's node image reuses them); -trimpath for reproducibility.
    return {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false"}


def build_kubernetes(commands: tuple[str, ...], version: str = KUBERNETES_VERSION) -> None:
    """Build Kubernetes commands from the k8s.io/kubernetes module through a wrapper module.

    k8s.io/kubernetes cannot be ``go install``ed: its go.mod points the staging modules at
    ``./staging``. The wrapper requires it and replaces every staging module with the matching
    published ``v0.<minor>.<patch>``, the list derived from the downloaded go.mod.
    """
    out = cache_root() / f"kubernetes-{version}" / "bin"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="k8s-wrap-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text("module aicenter.dev/testbed-k8s-build\n\ngo 1.24\n")
        info = json.loads(
            _run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"], cwd=work, env=_go_env())
        )
        gomod = Path(info["GoMod"]).read_text()
        staging = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", gomod, re.M)))
        if not staging:
            raise RuntimeError("no staging replaces found in k8s.io/kubernetes go.mod")
        go_line = re.search(r"^go (\S+)", gomod, re.M)
        staging_version = "v0." + version.lstrip("v").split(".", 1)[1]
        lines = [
            "module aicenter.dev/testbed-k8s-build",
            "",
            f"go {go_line.group(1) if go_line else '1.24'}",
            "",
        ]
        lines.append(f"require k8s.io/kubernetes {version}")
        lines.append("")
        lines += [f"replace {m} => {m} {staging_version}" for m in staging]
        (work / "go.mod").write_text("\n".join(lines) + "\n")
        (work / "tools.go").write_text(
            "//go:build tools\n\npackage tools\n\nimport (\n"
            + "".join(f'\t_ "k8s.io/kubernetes/cmd/{c}"\n' for c in commands)
            + ")\n"
        )
        _log(f"resolving k8s.io/kubernetes {version} with {len(staging)} staging replaces")
        _run(["go", "mod", "tidy", "-e"], cwd=work, env=_go_env())
        major, minor = version.lstrip("v").split(".")[:2]
        build_date = _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ldflags = []
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            ldflags += [
                f"-X {pkg}.gitVersion={version}",
                f"-X {pkg}.gitMajor={major}",
                f"-X {pkg}.gitMinor={minor}",
                f"-X {pkg}.gitTreeState=clean",
                f"-X {pkg}.buildDate={build_date}",
            ]
        for c in commands:
            t0 = time.monotonic()
            _log(f"building {c} {version} (cold builds take minutes)")
            _run(
                [
                    "go",
                    "build",
                    "-trimpath",
                    "-ldflags",
                    "-s -w " + " ".join(ldflags),
                    "-o",
                    str(out / c),
                    f"k8s.io/kubernetes/cmd/{c}",
                ],
                cwd=work,
                env=_go_env(),
            )
            _log(f"built {c} in {time.monotonic() - t0:.0f}s")


def debian_mirror() -> str:
    """The Debian mirror this machine already uses (read from its apt sources, never hard-coded)."""
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if p.is_file() and p.suffix in ("", ".list", ".sources"):
            texts.append(p.read_text())
    for t in texts:
        for m in re.finditer(r"(?:URIs:\s*|^deb\s+(?:\[[^\]]*\]\s+)?)(\S+/debian)/?\s", t, re.M):
            return m.group(1)
    raise RuntimeError(
        "no Debian mirror found in /etc/apt sources; set AICENTER_TESTBED_BIN to an etcd 3.5 dir"
    )


def build_etcd(suite: str = ETCD_DEBIAN_SUITE) -> Path:
    """Unpack Debian ``suite``'s etcd-server/etcd-client into the cache; returns the bin dir."""
    root = cache_root() / f"etcd-debian-{suite}"
    bin_dir = root / "bin"
    if (bin_dir / "etcd").is_file():
        return bin_dir
    with tempfile.TemporaryDirectory(prefix="etcd-deb-") as tmp:
        t = Path(tmp)
        (t / "lists/partial").mkdir(parents=True)
        (t / "sources.list").write_text(f"deb {debian_mirror()} {suite} main\n")
        opts = [
            f"-oDir::Etc::SourceList={t / 'sources.list'}",
            "-oDir::Etc::SourceParts=/dev/null",
            f"-oDir::State::Lists={t / 'lists'}",
            f"-oDir::Cache={t / 'cache'}",
            "-oAPT::Get::List-Cleanup=0",
        ]
        (t / "cache/archives/partial").mkdir(parents=True)
        _log(f"fetching etcd-server from Debian {suite}")
        _run(["apt-get", *opts, "update"])
        _run(["apt-get", *opts, "download", "etcd-server", "etcd-client"], cwd=t)
        ex = t / "x"
        for deb in t.glob("*.deb"):
            _run(["dpkg-deb", "-x", str(deb), str(ex)])
        bin_dir.mkdir(parents=True, exist_ok=True)
        for name in ("etcd", "etcdctl"):
            src = ex / "usr/bin" / name
            if src.exists():
                shutil.copy2(src.resolve(), bin_dir / name)
    return bin_dir


def build_go_tool(pkg: str, version: str, dest: Path, ldflags: str = "") -> None:
    dest.mkdir(parents=True, exist_ok=True)
    _log(f"go install {pkg}@{version}")
    args = ["go", "install", "-trimpath"]
    if ldflags:
        args += ["-ldflags", ldflags]
    _run(
        [*args, f"{pkg}@{version}"],
        env={"GOBIN": str(dest), "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"},
    )


KUBERNETES = Component("kubernetes", KUBERNETES_VERSION, K8S_COMMANDS)
KUBERNETES_NODE = Component("kubernetes", KUBERNETES_VERSION, NODE_COMMANDS)
ETCD = Component("etcd-debian", ETCD_DEBIAN_SUITE, ("etcd",))
KWOK = Component("kwok", KWOK_VERSION, ("kwok",))
HELM = Component("helm", HELM_VERSION, ("helm",))


@dataclass
class Tools:
    """Resolved paths of every binary the test bed runs."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    etcd: Path
    kwok: Path
    helm: Path

    @property
    def bin_dirs(self) -> list[str]:
        return sorted({str(p.parent) for p in vars(self).values()})


def ensure_tools(with_node: bool = False) -> Tools:
    """Return every test-bed tool, building whatever the cache lacks."""
    t0 = time.monotonic()
    if missing := KUBERNETES.missing():
        build_kubernetes(tuple(missing))
    if with_node and (missing := KUBERNETES_NODE.missing()):
        build_kubernetes(tuple(missing))
    if ETCD.missing():
        build_etcd()
    if KWOK.missing():
        build_go_tool("sigs.k8s.io/kwok/cmd/kwok", KWOK_VERSION, KWOK.bin_dir)
    if HELM.missing():
        build_go_tool(
            "helm.sh/helm/v3/cmd/helm",
            HELM_VERSION,
            HELM.bin_dir,
            ldflags=f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
        )
    tools = Tools(
        kube_apiserver=KUBERNETES.path("kube-apiserver"),
        kube_controller_manager=KUBERNETES.path("kube-controller-manager"),
        kube_scheduler=KUBERNETES.path("kube-scheduler"),
        kubectl=KUBERNETES.path("kubectl"),
        etcd=ETCD.path("etcd"),
        kwok=KWOK.path("kwok"),
        helm=HELM.path("helm"),
    )
    _log(f"tools ready in {time.monotonic() - t0:.1f}s: {', '.join(tools.bin_dirs)}")
    return tools


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build or locate the pinned test-bed tools.")
    ap.add_argument("--with-node", action="store_true", help="also build kubelet and kubeadm (kind)")
    ap.add_argument("--print-path", action="store_true", help="print a PATH prefix with every tool")
    args = ap.parse_args(argv)
    tools = ensure_tools(with_node=args.with_node)
    if args.print_path:
        print(os.pathsep.join(tools.bin_dirs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
