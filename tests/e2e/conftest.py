"""Fixtures for end-to-end tests of the operator on the real control plane.

Each test builds its own small AICenter (its own simulated nodes, racks and cliques) so tests do
not share GPUs; the operator runs as a real process (``aicenter-operator run``) against the
session's control plane.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aicenter import api
from aicenter.testbed.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OperatorProcess:
    """A running ``aicenter-operator run`` process."""

    cluster: Any
    log: Path
    args: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen | None = None

    def start(self) -> OperatorProcess:
        self.port = _free_port()
        cmd = [
            sys.executable,
            "-m",
            "aicenter.cli",
            "run",
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.port),
            "--cycle-interval",
            "0.5",
            *self.args,
        ]
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        wait_for(self.ready, 60, f"operator ready on :{self.port} (log {self.log})")
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except OSError as e:
            return getattr(e, "code", 0) or 0, str(e)

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"operator exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
        return self.get("/readyz")[0] == 200

    def metric(self, name: str) -> float:
        total = 0.0
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def crds(cluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "manifests/crds/all.yaml"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd",
        api.CRD_NAME_AICENTERS,
        api.CRD_NAME_GPUQUOTAS,
        api.CRD_NAME_GPUJOBS,
        "--timeout=60s",
    )


@pytest.fixture(scope="module")
def operator(cluster, crds, tmp_path_factory) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = OperatorProcess(cluster, log, ["--no-leader-election"]).start()
    yield op
    op.stop()
