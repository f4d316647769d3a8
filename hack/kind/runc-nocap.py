#!/usr/bin/python3
"""OCI runtime wrapper: drop capabilities the host cannot grant, then exec the real runc.

Some sandboxes (Firecracker guests, nested containers) start with a capability bounding set that
lacks e.g. CAP_SYS_RESOURCE. ``docker run --privileged`` asks runc for every capability, and runc
fails with "unable to apply caps: operation not permitted". kind's node containers are privileged,
so they cannot start there. Docker runs this script as its default runtime; it removes the
capabilities missing from this process's bounding set from the bundle's ``config.json`` (on
``create``/``run``) or from the ``--process`` file (on ``exec``) and then execs runc unchanged.

Registered as dockerd's default runtime by ``aicenter_testbed.kind.docker`` (``python -m
aicenter_testbed.kind docker``) only when the bounding set lacks a capability.
Standard library only: it runs under the host's /usr/bin/python3, outside any virtualenv.
"""

import json
import os
import sys

REAL_RUNC = os.environ.get("AICENTER_REAL_RUNC", "/usr/bin/runc")

# Linux capability numbers (linux/capability.h) → the names OCI specs use.
CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]  # fmt: skip


def missing_caps() -> set[str]:
    """Capabilities absent from this process's bounding set."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                bnd = int(line.split()[1], 16)
                return {name for i, name in enumerate(CAPS) if not bnd & (1 << i)}
    return set()


def strip_caps(process: dict, drop: set[str]) -> bool:
    caps = process.get("capabilities") or {}
    changed = False
    for key in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        if caps.get(key):
            kept = [c for c in caps[key] if c not in drop]
            if len(kept) != len(caps[key]):
                caps[key] = kept
                changed = True
    return changed


def rewrite(path: str, key: str | None, drop: set[str]) -> None:
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return
    process = doc.get(key, {}) if key else doc
    if strip_caps(process, drop):
        tmp = path + ".nocap"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, path)


def option(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


GLOBAL_VALUED = {"--root", "--log", "--log-format", "--criu", "--rootless"}


def verb(args: list[str]) -> str | None:
    """runc's subcommand: the first word that is neither a global option nor its value."""
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a in GLOBAL_VALUED:
            skip = True
        elif not a.startswith("-"):
            return a
    return None


def main() -> None:
    args = sys.argv[1:]
    drop = missing_caps()
    if drop:
        v = verb(args)
        if v in ("create", "run"):
            bundle = option(args, "--bundle") or option(args, "-b") or os.getcwd()
            rewrite(os.path.join(bundle, "config.json"), "process", drop)
        elif v == "exec":
            proc = option(args, "--process") or option(args, "-p")
            if proc:
                rewrite(proc, None, drop)
    os.execv(REAL_RUNC, [REAL_RUNC, *args])


if __name__ == "__main__":
    main()
