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
KUEUE_MODULE = "sigs.k8s.io/kueue"
KUEUE_VERSION = "v0.17.0"  # only for the Kueue comparison (aicenter_testbed.kueue, benchmarks/peer_bench.py)

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


def build_go_wrapped(
    module: str,
    version: str,
    packages: dict[str, str],
    dest: Path,
    ldflags: str = "",
    edits: dict[str, list[tuple[str, str]]] | None = None,
) -> None:
    """Build ``packages`` (binary name → import path) of ``module@version`` through a wrapper module.

    The same approach as :func:`build_kubernetes`: the wrapper requires the module and copies its
    ``replace`` directives from the downloaded go.mod (``go install pkg@version`` refuses modules
    that have any). A replace onto a local path cannot be honoured outside the module's own tree and
    fails with a clear error. ``edits`` (file path in the module → [(old, new)] replacements) apply
    to a copy of that file's package inside the wrapper; the module cache is never written, and an
    ``old`` text that is not in the file fails the build.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="go-wrap-") as tmp:
        work = Path(tmp)
        name = "aicenter.dev/testbed-" + re.sub(r"[^\w.-]+", "-", module) + "-build"
        (work / "go.mod").write_text(f"module {name}\n\ngo 1.24\n")
        info = json.loads(
            _run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=work, env=_go_env())
        )
        gomod = Path(info["GoMod"]).read_text()
        replaces = []
        for block in re.findall(r"^replace\s*\(\n(.*?)^\)", gomod, re.M | re.S) + re.findall(
            r"^replace[ \t]+([^(\s].*)$", gomod, re.M
        ):
            for line in block.splitlines():
                line = line.split("//", 1)[0].strip()
                if not line:
                    continue
                old, new = (part.strip() for part in line.split("=>"))
                if new.startswith((".", "/")):
                    raise RuntimeError(f"{module}@{version} replaces {old} with a local path ({new})")
                replaces.append(f"replace {old} => {new}")
        go_line = re.search(r"^go (\S+)", gomod, re.M)
        lines = [f"module {name}", "", f"go {go_line.group(1) if go_line else '1.24'}", ""]
        lines += [f"require {module} {version}", "", *replaces]
        (work / "go.mod").write_text("\n".join(lines) + "\n")
        (work / "tools.go").write_text(
            "//go:build tools\n\npackage tools\n\nimport (\n"
            + "".join(f'\t_ "{pkg}"\n' for pkg in packages.values())
            + ")\n"
        )
        _log(f"resolving {module} {version} with {len(replaces)} replaces")
        _run(["go", "mod", "tidy", "-e"], cwd=work, env=_go_env())
        targets = dict(packages)
        for rel, changes in (edits or {}).items():
            # Files in the module cache cannot be overlaid: the edited file's package is copied
            # into the wrapper (it must be a main package without internal imports) and built there.
            pkg_dir = Path(rel).parent
            src, copy = Path(info["Dir"]) / pkg_dir, work / "src" / pkg_dir
            if not copy.exists():
                copy.mkdir(parents=True)
                for f in src.glob("*.go"):
                    if not f.name.endswith("_test.go"):
                        shutil.copyfile(f, copy / f.name)
            text = (copy / Path(rel).name).read_text()
            for old, new in changes:
                if old not in text:
                    raise RuntimeError(f"{module}@{version}: {rel} no longer contains {old!r}")
                text = text.replace(old, new)
            (copy / Path(rel).name).write_text(text)
            for binary, pkg in packages.items():
                if pkg == f"{module}/{pkg_dir.as_posix()}":
                    targets[binary] = f"./src/{pkg_dir.as_posix()}"
            _log(f"building {module}/{pkg_dir.as_posix()} from a copy with {rel} edited")
        for binary, pkg in targets.items():
            t0 = time.monotonic()
            _log(f"building {binary} {version} (cold builds take minutes)")
            args = ["go", "build", "-trimpath", "-ldflags", f"-s -w {ldflags}".strip()]
            _run([*args, "-o", str(dest / binary), pkg], cwd=work, env=_go_env())
            _log(f"built {binary} in {time.monotonic() - t0:.0f}s")


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
KUEUE = Component("kueue", KUEUE_VERSION, ("kueue",))


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


#: Outside a pod Kueue's manager cannot start without certificates in a directory it hard-codes for
#: a mounted Secret; this one edit lets ``KUEUE_METRICS_CERT_DIR`` name another. Nothing else changes.
KUEUE_METRICS_CERT_EDIT = (
    'metricsCertPath := "/etc/kueue/metrics/certs"',
    'metricsCertPath := "/etc/kueue/metrics/certs"\n'
    '\t\tif dir := os.Getenv("KUEUE_METRICS_CERT_DIR"); dir != "" {\n'
    "\t\t\tmetricsCertPath = dir\n"
    "\t\t}",
)


def ensure_kueue() -> Path:
    """Kueue's manager (``cmd/kueue`` of ``sigs.k8s.io/kueue``), built on first use; returns its path.

    Not part of :func:`ensure_tools`: only the Kueue comparison needs it.
    """
    if KUEUE.missing():
        t0 = time.monotonic()
        vpkg = f"{KUEUE_MODULE}/pkg/version"
        build_go_wrapped(
            KUEUE_MODULE,
            KUEUE_VERSION,
            {"kueue": f"{KUEUE_MODULE}/cmd/kueue"},
            KUEUE.bin_dir,
            ldflags=f"-X {vpkg}.GitVersion={KUEUE_VERSION} -X {vpkg}.BuildDate=2026-01-01T00:00:00Z",
            edits={"cmd/kueue/main.go": [KUEUE_METRICS_CERT_EDIT]},
        )
        _log(f"kueue {KUEUE_VERSION} built in {time.monotonic() - t0:.0f}s into {KUEUE.bin_dir}")
    return KUEUE.path("kueue")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build or locate the pinned test-bed tools.")
    ap.add_argument("--with-node", action="store_true", help="also build kubelet and kubeadm (kind)")
    ap.add_argument("--print-path", action="store_true", help="print a PATH prefix with every tool")
    ap.add_argument("--kueue", action="store_true", help=f"also build Kueue {KUEUE_VERSION}'s manager")
    args = ap.parse_args(argv)
    tools = ensure_tools(with_node=args.with_node)
    if args.kueue:
        ensure_kueue()
    if args.print_path:
        print(os.pathsep.join(tools.bin_dirs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
