"""The package split holds: the operator's wheel carries only the operator, each wheel requires what
its code imports (the kind images install a wheel and its requirements, nothing else), and the
device plugin's GPU profiles agree with the test bed's fleet preset.

The wheels are built with the functions the kind images use
(``aicenter_testbed.kind.images.operator_wheel``: ``pip wheel --no-deps`` of the repository root;
``deviceplugin_wheel``: the same of hack/deviceplugin).
"""

from __future__ import annotations

import ast
import sys
import zipfile
from email.parser import Parser
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from aicenter_deviceplugin.discovery import PROFILES
from aicenter_testbed.fleet import load_fleet
from aicenter_testbed.kind.images import deviceplugin_wheel, operator_wheel, wheel_console_scripts

# Modules of the other two packages, and paths the operator package had before the split.
FORBIDDEN_PREFIXES = (
    "aicenter_testbed/",
    "aicenter_deviceplugin/",
    "aicenter/testbed/",
    "aicenter/sim/",
    "aicenter/presets/",
    "aicenter/deviceplugin/",
)
FORBIDDEN_FILES = (
    "aicenter/fleet.py",
    "aicenter/api/samples.py",
    "aicenter/api/generate.py",
    "aicenter/api/schema.py",
    "aicenter/api/reference.py",
)
OPERATOR_SCRIPTS = {"aicenter-operator", "kubectl-aicenter"}  # the CLI, and the kubectl plugin to come
OPERATOR_RUNTIME_DEPS = {"kopf", "kubernetes", "pyyaml"}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return operator_wheel(tmp_path_factory.mktemp("operator-wheel"))


def names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(zf.read(meta).decode())


def test_operator_wheel_holds_only_the_operator(wheel):
    files = names(wheel)
    assert wheel.name.startswith("aicenter_operator-"), wheel.name
    assert "aicenter/controller/main.py" in files and "aicenter/core/__init__.py" in files
    stray = [
        n
        for n in files
        if n.startswith(FORBIDDEN_PREFIXES)
        or n in FORBIDDEN_FILES
        or not (n.startswith("aicenter/") or n.split("/")[0].endswith(".dist-info"))
    ]
    assert not stray, f"the operator's wheel carries what is not the operator: {stray}"


def test_operator_wheel_console_scripts(wheel):
    scripts = wheel_console_scripts(wheel)
    assert "aicenter-operator" in scripts
    assert scripts <= OPERATOR_SCRIPTS, f"unexpected console scripts: {scripts - OPERATOR_SCRIPTS}"


def test_operator_wheel_runtime_dependencies(wheel):
    assert requires(wheel) == OPERATOR_RUNTIME_DEPS


def test_deviceplugin_wheel_holds_only_the_plugin(tmp_path):
    whl = deviceplugin_wheel(tmp_path)
    files = names(whl)
    assert "aicenter_deviceplugin/api.proto" in files
    assert all(n.startswith("aicenter_deviceplugin/") or ".dist-info/" in n for n in files), files
    assert wheel_console_scripts(whl) == {"aicenter-deviceplugin"}


def requires(wheel: Path) -> set[str]:
    """The wheel's runtime requirements (no extras), as normalised distribution names."""
    out = set()
    for r in metadata(wheel).get_all("Requires-Dist") or []:
        if "extra ==" not in r:
            name = r.split(";")[0]
            for sep in "[<>=!~ ":
                name = name.split(sep)[0]
            out.add(name.strip().lower().replace("_", "-"))
    return out


def imported_distributions(package: Path) -> dict[str, set[str]]:
    """Top-level modules the package's code imports (not its own, not the standard library) →
    the installed distributions that provide them."""
    mods: set[str] = set()
    for f in package.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    mods -= set(sys.stdlib_module_names) | {"__future__", package.name}
    provided = packages_distributions()
    return {m: {d.lower().replace("_", "-") for d in provided.get(m, [])} for m in sorted(mods)}


@pytest.mark.parametrize(
    ("build", "package", "indirect"),
    [
        # aiohttp (the metrics server) comes with kopf
        (operator_wheel, REPO / "operator" / "aicenter", {"aiohttp": "kopf"}),
        (deviceplugin_wheel, REPO / "hack" / "deviceplugin" / "aicenter_deviceplugin", {}),
    ],
    ids=["operator", "deviceplugin"],
)
def test_wheel_requires_what_its_code_imports(build, package, indirect, tmp_path):
    """An image installs a wheel and its requirements only: every import must be covered."""
    declared = requires(build(tmp_path))
    missing = {
        m: dists
        for m, dists in imported_distributions(package).items()
        if not dists & declared and indirect.get(m) not in declared
    }
    assert not missing, f"imported but not required by the wheel: {missing}"


def test_deviceplugin_profiles_are_the_fleet_shapes():
    shapes = load_fleet().shapes
    assert set(PROFILES) == set(shapes)
    for name, shape in shapes.items():
        p = PROFILES[name]
        assert (p.product, p.count, p.memory_mib, p.family) == (
            shape.product,
            shape.gpus_per_node,
            shape.memory_mib,
            shape.family,
        ), name
        assert shape.gpu_class in p.aliases and shape.product in p.aliases, name
