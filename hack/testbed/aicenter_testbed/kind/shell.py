"""Logging, running commands, and the exception that turns into a SKIPPED verdict."""

from __future__ import annotations

import subprocess

from aicenter_testbed import tools as tb


def log(msg: str) -> None:
    tb.log(msg, tag="kind")


class Skip(Exception):
    """The kind e2e cannot run on this machine; the message says why."""


def run(cmd: list, *, check: bool = True, capture: bool = False, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd`` (text mode); with ``check``, a non-zero exit raises with the tail of its stderr."""
    if capture:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.run([str(c) for c in cmd], text=True, **kw)
    if check and proc.returncode != 0:
        err = (proc.stderr or "")[-4000:] if capture else ""
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}) {err}")
    return proc


def out(cmd: list, **kw) -> str:
    """The standard output of ``cmd``, which must succeed."""
    return run(cmd, capture=True, **kw).stdout
