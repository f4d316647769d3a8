"""Which GPUs a node has: simulated from a fleet shape, or read from NVML where a real GPU exists.

* :func:`simulated_inventory` — ``count`` devices of a profile (a shape of the fleet preset:
  ``hgx-b200``, its class ``B200`` or its product ``NVIDIA-B200``), each with a stable fake UUID
  ``GPU-<hash of node and index>``, so the same node always advertises the same IDs.
* :func:`nvml_inventory` — the real devices through NVML (``nvidia-ml-py``'s ``pynvml``, imported
  only when asked for): count, product name, memory, UUIDs, minor numbers, compute capability.
* :func:`select_inventory` — ``auto`` uses NVML when it loads and sees at least one GPU, otherwise
  the simulation; ``nvml`` and ``simulated`` force one.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import re
import uuid
from dataclasses import dataclass, field, replace
from types import ModuleType

log = logging.getLogger("aicenter_deviceplugin")

BACKEND_AUTO = "auto"
BACKEND_NVML = "nvml"
BACKEND_SIMULATED = "simulated"
BACKENDS = (BACKEND_AUTO, BACKEND_NVML, BACKEND_SIMULATED)


@dataclass(frozen=True)
class GpuDevice:
    index: int
    uuid: str
    product: str
    memory_mib: int
    minor: int | None = None  # /dev/nvidia<minor>, real devices only
    numa_node: int | None = None


@dataclass(frozen=True)
class Inventory:
    """The GPUs of one node, all of one product (as GPU Feature Discovery assumes)."""

    backend: str
    product: str  # GFD label value, e.g. NVIDIA-B200
    family: str  # GFD family, e.g. blackwell
    memory_mib: int
    devices: tuple[GpuDevice, ...] = ()
    driver_version: str | None = None
    profile: str | None = None  # simulated: the profile it came from

    @property
    def count(self) -> int:
        return len(self.devices)

    def by_id(self) -> dict[str, GpuDevice]:
        return {d.uuid: d for d in self.devices}


@dataclass(frozen=True)
class Profile:
    name: str
    product: str
    count: int
    memory_mib: int
    family: str
    aliases: tuple[str, ...] = field(default=())


# The GPU node shapes the device plugin can simulate. They mirror the shapes of the test bed's fleet
# preset (a test checks that the two agree); the plugin is its own component and reads no preset.
PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("hgx-b200", "NVIDIA-B200", 8, 183359, "blackwell", ("B200", "NVIDIA-B200")),
        Profile("gb200-nvl72", "NVIDIA-GB200", 4, 189471, "blackwell", ("GB200", "NVIDIA-GB200")),
        Profile("hgx-b300", "NVIDIA-B300", 8, 275040, "blackwell", ("B300", "NVIDIA-B300")),
    )
}


def fleet_profiles() -> dict[str, Profile]:
    """The simulated profiles, by shape name."""
    return dict(PROFILES)


def find_profile(name: str, profiles: dict[str, Profile] | None = None) -> Profile:
    """A profile by shape name (``hgx-b200``), class (``B200``) or product (``NVIDIA-B200``)."""
    profiles = profiles if profiles is not None else fleet_profiles()
    key = name.strip().lower()
    for p in profiles.values():
        if key == p.name.lower() or key in (a.lower() for a in p.aliases):
            return p
    known = ", ".join(sorted({x for p in profiles.values() for x in (p.name, *p.aliases)}))
    raise ValueError(f"unknown GPU profile {name!r}; known: {known}")


def fake_uuid(node: str, index: int) -> str:
    """A stable, UUID-shaped GPU ID for simulated device ``index`` of ``node``."""
    digest = hashlib.sha256(f"aicenter-sim/{node}/{index}".encode()).digest()
    return f"GPU-{uuid.UUID(bytes=digest[:16])}"


def simulated_inventory(
    node: str, profile: Profile, count: int | None = None, memory_mib: int | None = None
) -> Inventory:
    n = profile.count if count is None else count
    mem = profile.memory_mib if memory_mib is None else memory_mib
    devices = tuple(GpuDevice(i, fake_uuid(node, i), profile.product, mem) for i in range(n))
    return Inventory(
        backend=BACKEND_SIMULATED,
        product=profile.product,
        family=profile.family,
        memory_mib=mem,
        devices=devices,
        profile=profile.name,
    )


# ---------------------------------------------------------------------------------------------
# NVML

# CUDA compute capability major version → GPU Feature Discovery's family label
_FAMILIES = {
    1: "tesla",
    2: "fermi",
    3: "kepler",
    5: "maxwell",
    6: "pascal",
    7: "volta",
    8: "ampere",
    9: "hopper",
}


def family_of(major: int, minor: int) -> str:
    if major == 7 and minor >= 5:
        return "turing"
    if major == 8 and minor >= 9:
        return "ada-lovelace"
    if major >= 10:
        return "blackwell"
    return _FAMILIES.get(major, "undefined")


def product_label(name: str) -> str:
    """GFD's product label value from an NVML name: ``NVIDIA H100 80GB HBM3`` → ``NVIDIA-H100-80GB-HBM3``."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip("-_.")
    return value[:63].rstrip("-_.")


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def load_nvml() -> ModuleType:
    """nvidia-ml-py's module (``pynvml``); ImportError when not installed."""
    return importlib.import_module("pynvml")


def nvml_inventory(nvml: ModuleType | None = None) -> Inventory:
    """The node's real GPUs through NVML. Raises when NVML cannot load or initialise."""
    nvml = nvml if nvml is not None else load_nvml()
    nvml.nvmlInit()
    try:
        devices = []
        family = "undefined"
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            name = _text(nvml.nvmlDeviceGetName(h))
            mem = int(nvml.nvmlDeviceGetMemoryInfo(h).total) // (1024 * 1024)
            minor = _optional(nvml, lambda h=h: int(nvml.nvmlDeviceGetMinorNumber(h)))
            cc = _optional(nvml, lambda h=h: nvml.nvmlDeviceGetCudaComputeCapability(h))
            if cc is not None and i == 0:
                family = family_of(int(cc[0]), int(cc[1]))
            devices.append(GpuDevice(i, _text(nvml.nvmlDeviceGetUUID(h)), product_label(name), mem, minor))
        driver = _optional(nvml, lambda: _text(nvml.nvmlSystemGetDriverVersion()))
    finally:
        nvml.nvmlShutdown()
    if not devices:
        return Inventory(BACKEND_NVML, "", family, 0, (), driver)
    products = {d.product for d in devices}
    if len(products) > 1:
        log.warning("mixed GPU products on one node (%s); labelling the first", ", ".join(sorted(products)))
    return Inventory(
        backend=BACKEND_NVML,
        product=devices[0].product,
        family=family,
        memory_mib=min(d.memory_mib for d in devices),
        devices=tuple(devices),
        driver_version=driver,
    )


def _optional(nvml: ModuleType, fn):
    """NVML calls some GPUs or drivers do not support (NVMLError) yield None."""
    err = getattr(nvml, "NVMLError", Exception)
    try:
        return fn()
    except err:
        return None


def select_inventory(
    backend: str,
    node: str,
    profile: Profile | None,
    *,
    count: int | None = None,
    memory_mib: int | None = None,
    nvml_loader=load_nvml,
) -> Inventory:
    """The inventory of ``backend`` (``auto``: NVML if it works and sees a GPU, else simulated)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend in (BACKEND_AUTO, BACKEND_NVML):
        try:
            inv = nvml_inventory(nvml_loader())
        except Exception as e:
            if backend == BACKEND_NVML:
                raise RuntimeError(f"NVML backend asked for but unavailable: {e}") from e
            log.info("NVML unavailable (%s: %s): simulating GPUs", type(e).__name__, e)
        else:
            if inv.devices or backend == BACKEND_NVML:
                if count is not None:
                    inv = replace(inv, devices=inv.devices[:count])
                return inv
            log.info("NVML sees no GPU: simulating GPUs")
    if profile is None:
        raise ValueError("the simulated backend needs a profile")
    return simulated_inventory(node, profile, count, memory_mib)
