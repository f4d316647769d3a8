"""Sizing the test bed for its fleet: tuning, the flags it reaches, watching nodes, progress. No cluster."""

from __future__ import annotations

import io
import itertools
import threading

import pytest

from aicenter_testbed.cli import Progress, default_timeout
from aicenter_testbed.cluster import NODE_LEASE_SECONDS, NODE_MONITOR_GRACE, LocalCluster
from aicenter_testbed.fleet import load_fleet
from aicenter_testbed.sim import nodes as nodes_mod
from aicenter_testbed.sim.nodes import NodeTracker
from aicenter_testbed.sim.stages import HEARTBEAT_JITTER_MS, HEARTBEAT_MS, kwok_config_documents
from aicenter_testbed.sim.tuning import (
    HEARTBEATS_PER_S,
    LEASE_RENEWALS_PER_S,
    MONITORED_NODES_PER_S,
    tuning_for,
)
from aicenter_testbed.tools import Tools
from aicenter_testbed.waiting import wait_for

FULL_FLEET = 41_250


def test_full_preset_is_the_fleet_the_tuning_is_measured_for():
    assert load_fleet().nodes == FULL_FLEET


@pytest.mark.parametrize("nodes", [None, 0, 40, 1_030, 1_500])
def test_small_fleets_keep_the_kubelet_like_defaults(nodes):
    t = tuning_for(nodes)
    assert t.node_lease_seconds == NODE_LEASE_SECONDS == 120
    assert f"{t.node_monitor_grace_seconds}s" == NODE_MONITOR_GRACE == "150s"
    assert t.node_monitor_period_seconds == 5
    assert (t.heartbeat_ms, t.heartbeat_jitter_ms) == (HEARTBEAT_MS, HEARTBEAT_JITTER_MS)
    assert t.taint_new_nodes and t.kwok_lease_parallelism == 8 and t.kwok_log_level == "INFO"


def test_the_full_fleet_fits_the_write_budget_and_tolerates_a_late_renewal():
    t = tuning_for(FULL_FLEET)
    assert t.nodes == FULL_FLEET
    assert t.lease_writes_per_s <= LEASE_RENEWALS_PER_S + 0.5  # not 1,375/s as with 120 s leases
    assert t.heartbeats_per_s <= HEARTBEATS_PER_S + 0.5
    assert FULL_FLEET / t.node_monitor_period_seconds <= MONITORED_NODES_PER_S
    # A renewal may be a whole interval late (plus a monitor pass) and its node still stays Ready.
    assert t.node_monitor_grace_seconds >= 2 * t.renew_seconds + t.node_monitor_period_seconds - 30
    assert t.renew_seconds == t.node_lease_seconds / 4  # kwok renews at a quarter of the duration


def test_tuning_never_tightens_as_the_fleet_grows():
    sizes = [0, 500, 1_500, 1_501, 3_000, 10_000, 20_000, FULL_FLEET, 100_000]
    ts = [tuning_for(n) for n in sizes]
    for a, b in itertools.pairwise(ts):
        assert b.node_lease_seconds >= a.node_lease_seconds
        assert b.node_monitor_grace_seconds >= a.node_monitor_grace_seconds
        assert b.node_monitor_period_seconds >= a.node_monitor_period_seconds
        assert b.heartbeat_ms >= a.heartbeat_ms
    for t in ts:
        assert t.node_monitor_grace_seconds > t.renew_seconds + t.node_monitor_period_seconds


def test_kwok_config_carries_the_tuned_lease_and_heartbeat():
    t = tuning_for(FULL_FLEET)
    docs = kwok_config_documents(tuning=t)
    assert docs[0]["options"]["nodeLeaseDurationSeconds"] == t.node_lease_seconds
    assert docs[0]["options"]["nodeLeaseParallelism"] == t.kwok_lease_parallelism > 8
    heartbeat = next(d for d in docs[1:] if d["metadata"]["name"] == "aicenter-node-heartbeat")
    assert heartbeat["spec"]["delay"] == {
        "durationMilliseconds": t.heartbeat_ms,
        "jitterDurationMilliseconds": t.heartbeat_jitter_ms,
    }
    small = kwok_config_documents()
    hb = next(d for d in small[1:] if d["metadata"]["name"] == "aicenter-node-heartbeat")
    assert small[0]["options"]["nodeLeaseDurationSeconds"] == 120
    assert hb["spec"]["delay"]["durationMilliseconds"] == HEARTBEAT_MS


@pytest.fixture
def fake_tools(tmp_path) -> Tools:
    return Tools(*(tmp_path / n for n in ("apiserver", "kcm", "sched", "kubectl", "etcd", "kwok", "helm")))


def test_controller_manager_and_kwok_flags_follow_the_tuning(tmp_path, fake_tools):
    small = LocalCluster(tmp_path / "s", tools=fake_tools)
    big = LocalCluster(tmp_path / "b", tools=fake_tools, expected_nodes=FULL_FLEET)
    t = big.tuning
    for lc in (small, big):
        lc.logs.mkdir(parents=True)
        lc.ports["apiserver"] = 1
    kcm_small, kcm_big = small._controller_manager().argv, big._controller_manager().argv
    assert "--node-monitor-grace-period=150s" in kcm_small
    assert "--node-monitor-period=5s" in kcm_small
    assert f"--node-monitor-grace-period={t.node_monitor_grace_seconds}s" in kcm_big
    assert f"--node-monitor-period={t.node_monitor_period_seconds}s" in kcm_big
    for argv in (kcm_small, kcm_big):
        assert "--controllers=*,-ttl-controller" in argv
    assert "--node-lease-duration-seconds=120" in small._kwok().argv
    assert f"--node-lease-duration-seconds={t.node_lease_seconds}" in big._kwok().argv
    assert any(a.startswith("--snapshot-count=") for a in big._etcd().argv)
    assert "--v=INFO" in small._kwok().argv and "--v=WARN" in big._kwok().argv
    # New nodes are tainted not-ready by admission on small test beds only (the real path); the full
    # fleet is created Ready and schedulable.
    big._etcd(), small._etcd()  # the apiserver's flags name etcd's port
    # (TaintNodesByCondition is on by default: only --disable-admission-plugins turns it off.)
    small_api, big_api = small._apiserver().argv, big._apiserver().argv
    assert not [a for a in small_api if a.startswith("--disable-admission-plugins")]
    assert "--disable-admission-plugins=TaintNodesByCondition" in big_api
    enabled = [a.split("=", 1)[1].split(",") for a in (*small_api, *big_api) if "enable-admission" in a]
    assert "TaintNodesByCondition" in enabled[0]
    assert "TaintNodesByCondition" not in enabled[1]  # the apiserver refuses a plugin both on and off
    names = [{a.split("=")[0] for a in argv} for argv in (small_api, big_api)]
    assert names[1] - names[0] == {"--disable-admission-plugins", "--request-timeout"}
    assert f"--request-timeout={t.request_timeout_seconds}s" in big_api  # 315 s of watch history
    big._write_kwok_config()
    assert f"nodeLeaseDurationSeconds: {t.node_lease_seconds}" in (big.data_dir / "kwok.yaml").read_text()


def test_default_timeout_grows_with_the_fleet():
    assert default_timeout(0) == 600
    assert default_timeout(FULL_FLEET) > 2_000


# ---------------------------------------------------------------------------------------------
# NodeTracker


def _node(name: str, ready: bool = True, taints: tuple[str, ...] = (), rv: str = "1") -> dict:
    return {
        "metadata": {"name": name, "resourceVersion": rv},
        "spec": {"taints": [{"key": k, "effect": "NoSchedule"} for k in taints]},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_tracker_applies_events_and_counts_a_subset():
    tr = NodeTracker(client=None)
    tr.apply({"type": "ADDED", "object": _node("a")})
    tr.apply({"type": "ADDED", "object": _node("b", taints=("node.kubernetes.io/not-ready",))})
    tr.apply({"type": "ADDED", "object": _node("c", ready=False)})
    assert tr.counts() == {"seen": 3, "ready": 2, "schedulable": 1}
    assert tr.counts(["a", "b", "zz"]) == {"seen": 2, "ready": 2, "schedulable": 1}
    assert tr.not_ready() == ["c"]
    assert tr.unschedulable(["a", "b", "c", "zz"]) == ["b", "c", "zz"]
    assert tr.apply({"type": "MODIFIED", "object": _node("b", rv="7")}) == "7"
    tr.apply({"type": "DELETED", "object": _node("c")})
    assert tr.counts() == {"seen": 2, "ready": 2, "schedulable": 2}
    assert tr.apply({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}) == "9"
    assert tr.counts()["seen"] == 2
    assert tr.apply({"type": "ERROR", "object": {"code": 410}}) is None


class ListClient:
    """Answers node LISTs from ``pages`` (each a list of nodes), one page per call, cycling."""

    def __init__(self, pages: list[list[dict]]) -> None:
        self.pages, self.calls = pages, 0

    def request(self, method, path, body=None, content_type="application/json", timeout=60):
        assert method == "GET" and path.startswith("/api/v1/nodes?limit=")
        page = self.pages[min(self.calls, len(self.pages) - 1)]
        self.calls += 1
        return 200, {"metadata": {"resourceVersion": str(10 * self.calls)}, "items": page}


def test_tracker_lists_then_watches_and_relists_after_gone(monkeypatch):
    watches: list[str] = []
    more = threading.Event()

    def fake_watch(client, path, timeout_s=240):
        watches.append(path)
        if len(watches) == 1:
            yield {"type": "MODIFIED", "object": _node("a", taints=("node.kubernetes.io/x",), rv="11")}
            yield {"type": "ADDED", "object": _node("b", rv="12")}
            yield {"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}
        else:
            more.wait(30)  # a quiet watch until the test ends
            return

    monkeypatch.setattr(nodes_mod, "watch_events", fake_watch)
    client = ListClient([[_node("a")], [_node("a"), _node("c", ready=False)]])
    tr = NodeTracker(client).start()
    try:
        wait_for(lambda: tr.relists == 2 and len(watches) == 2, 10, "a re-list after 410 Gone")
        assert "resourceVersion=10" in watches[0] and "resourceVersion=20" in watches[1]
        # The re-list replaced the state: b (seen only in the expired watch) is gone, c came in.
        assert tr.counts() == {"seen": 2, "ready": 1, "schedulable": 1}
        assert tr.not_ready() == ["c"]
    finally:
        tr.stop()
        more.set()


def test_tracker_start_fails_when_the_first_list_fails():
    class Refusing:
        def request(self, *a, **k):
            return 403, {"message": "forbidden"}

    with pytest.raises(RuntimeError, match="403"):
        NodeTracker(Refusing()).start(timeout=10)


# ---------------------------------------------------------------------------------------------
# Progress


def test_progress_line_counts_created_ready_and_untainted():
    out = io.StringIO()
    p = Progress(41_250, stream=out)
    assert not p.tty and p.every == 15.0
    p.counts = lambda: {"seen": 12_000, "ready": 11_000, "schedulable": 10_500}
    for _ in range(12_345):
        p.done_one("n", 201)
    line = p.line()
    assert line.startswith("[aicenter-testbed] 12,345/41,250 nodes created (")
    assert "11,000 Ready, 10,500 Ready and untainted" in line and line.endswith("\n")


def test_progress_on_a_terminal_is_one_redrawn_bar():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    p = Progress(100, stream=Tty())
    p.counts = lambda: {"seen": 50, "ready": 50, "schedulable": 50}
    line = p.line()
    assert p.tty and p.every == 1.0
    assert line.startswith("\r[aicenter-testbed] [" + "#" * 12 + "." * 12 + "]")
    assert "\n" not in line


def test_progress_quick_runs_print_nothing():
    out = io.StringIO()
    p = Progress(10, stream=out).start()
    p.stop()
    assert out.getvalue() == "" and p.lines == 0
