"""Run the operator as a process against a test-bed cluster: one launcher for tests, benchmarks, demo.

    op = OperatorProcess(kubeconfig, log_path, ["--no-leader-election"]).start()   # waits for /readyz
    op.metric("aicenter_pods_created_total"); op.kill(); op.stop()

``python -m aicenter_testbed.operator start --dir .testbed`` starts one detached (pid and log in
the directory) and waits until it is ready; ``stop`` ends it. ``hack/demo.sh`` uses these.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from aicenter_testbed.procs import free_port
from aicenter_testbed.waiting import wait_for


@dataclass
class OperatorProcess:
    """A running ``aicenter-operator run`` process (from the dev virtualenv's interpreter)."""

    kubeconfig: Path | str
    log: Path
    args: list[str] = field(default_factory=list)
    port: int = 0
    cycle_interval: float = 0.5
    proc: subprocess.Popen | None = None
    detached: bool = False

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "aicenter.cli",
            "run",
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.port),
            "--cycle-interval",
            str(self.cycle_interval),
            *self.args,
        ]

    def start(self, timeout: float = 120) -> OperatorProcess:
        self.port = self.port or free_port()
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command(), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=self.detached
            )
        wait_for(self.ready, timeout, f"operator ready on :{self.port} (log {self.log})")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except OSError as e:
            return getattr(e, "code", 0) or 0, str(e)

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"operator exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
        return self.get("/readyz")[0] == 200

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include ``labels``."""
        total = 0.0
        want = [f'{k}="{v}"' for k, v in labels.items()]
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith("#"):
                continue
            head = line.rsplit(" ", 1)[0]
            if (head == name or head.startswith(name + "{")) and all(w in head for w in want):
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m aicenter_testbed.operator", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("--dir", default=".testbed", help="the test bed's directory (kubeconfig, pid and log)")
    ap.add_argument("--port", type=int, default=18080, help="metrics/health port on 127.0.0.1")
    ap.add_argument("args", nargs="*", help="more arguments for `aicenter-operator run` (after --)")
    a = ap.parse_args(argv)
    d = Path(a.dir).resolve()
    pidfile = d / "operator.pid"
    if pidfile.exists():  # one operator per test bed: stop the previous one
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        pidfile.unlink()
    if a.action == "stop":
        return 0
    op = OperatorProcess(
        d / "kubeconfig", d / "operator.log", ["--no-leader-election", *a.args], port=a.port, detached=True
    )
    op.cycle_interval = 1.0
    op.start()
    pidfile.write_text(str(op.pid))
    print(f"operator running (pid {op.pid}, log {op.log}, metrics http://127.0.0.1:{op.port}/metrics)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
