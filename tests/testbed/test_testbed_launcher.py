"""The launcher itself: port-clash retry, clean stop (every process reaped), and the detached CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from aicenter_testbed import cluster as cluster_mod
from aicenter_testbed.cluster import LocalCluster

pytestmark = pytest.mark.cluster


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def test_port_clash_is_retried_and_stop_reaps_everything(tmp_path, monkeypatch):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    real = cluster_mod.free_port
    handed = iter([taken])  # the first port handed out (etcd's client port) is already in use

    def clashing_free_port():
        return next(handed, None) or real()

    monkeypatch.setattr(cluster_mod, "free_port", clashing_free_port)
    lc = LocalCluster(tmp_path / "tb", with_kwok=False, keep_data=True)
    try:
        client = lc.start()
        assert lc.ports["etcd"] != taken
        assert (
            "port clash" in (tmp_path / "tb" / "logs" / "etcd.log").read_text() or lc.ports["etcd"] != taken
        )
        assert client.version()["gitVersion"] == "v1.34.4"
        procs = dict(lc.procs)
    finally:
        lc.stop()
        busy.close()
    assert procs
    for name, p in procs.items():
        assert p.proc.returncode is not None, f"{name} was not reaped"
        assert _gone(p.pid), f"{name} ({p.pid}) still exists"
    assert (tmp_path / "tb" / "logs" / "kube-apiserver.log").stat().st_size > 0  # a given dir keeps its logs
    assert not (tmp_path / "tb" / "cluster.json").exists()


def test_cli_up_nodes_status_down(tmp_path):
    d = tmp_path / "bed"
    env = {k: v for k, v in os.environ.items() if k != "AICENTER_KUBECONFIG"}
    cli = [sys.executable, "-m", "aicenter_testbed.cli"]

    def run(*args, timeout=300):
        return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=timeout, env=env)

    up = run("up", "--scale", "0.001", "--centers", "national-ai-center", "--dir", str(d))
    assert up.returncode == 0, up.stderr[-3000:]
    try:
        assert f"export KUBECONFIG={d / 'kubeconfig'}" in up.stdout
        assert "6 simulated GPU nodes (48 GPUs)" in up.stderr
        state = json.loads((d / "cluster.json").read_text())
        pids = state["pids"]
        assert set(pids) == set(LocalCluster.COMPONENTS)
        supervisor = int((d / "supervisor.pid").read_text())
        # Sized for the fleet it was started for; a small one keeps the kubelet-like defaults.
        tuning = state["tuning"]
        assert tuning["nodes"] == 6
        assert (tuning["node_lease_seconds"], tuning["node_monitor_grace_seconds"]) == (120, 150)
        assert "--nodes\x006" in Path(f"/proc/{supervisor}/cmdline").read_text()

        st = run("status", "--dir", str(d))
        assert st.returncode == 0, st.stdout + st.stderr
        assert all(json.loads(st.stdout)["alive"].values())

        again = run("up", "--dir", str(d))
        assert again.returncode == 1 and "already running" in again.stderr

        nodes = run("nodes", "--scale", "0.002", "--centers", "national-ai-center", "--dir", str(d))
        assert nodes.returncode == 0, nodes.stderr[-3000:]
        info = json.loads(nodes.stdout)
        assert (info["nodes"], info["created"], info["existed"]) == (12, 6, 6)
    finally:
        down = run("down", "--dir", str(d), timeout=120)
    assert down.returncode == 0, down.stderr
    for name, pid in [*pids.items(), ("supervisor", supervisor)]:
        assert _gone(pid), f"{name} ({pid}) survived `down`"
    assert run("status", "--dir", str(d)).returncode == 1
