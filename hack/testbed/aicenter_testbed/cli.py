"""``aicenter-testbed``: a local Kubernetes control plane with a simulated GPU fleet, from the shell.

    aicenter-testbed up [--preset korea-national-fleet] [--scale 0.001] [--centers a,b] [--dir DIR]
    aicenter-testbed status [--dir DIR]
    aicenter-testbed nodes --scale 0.002 [--centers a,b] [--dir DIR | --kubeconfig FILE]
    aicenter-testbed fault node-notready|gpu-unhealthy|cordon|clear NODE [--gpus N]
    aicenter-testbed down [--dir DIR]
    aicenter-testbed tools [--print-path]

``up`` builds the tools if needed, starts a supervisor process in the background (it owns and
reaps the control-plane processes; their PIDs are in ``DIR/cluster.json``, its own in
``DIR/supervisor.pid``), creates the fleet's nodes and prints the kubeconfig path. The control
plane is sized for the fleet (:mod:`aicenter_testbed.sim.tuning`); while nodes are created and come
up, a progress bar (on a terminal) or a progress line every 15 s shows how far it is. ``down`` asks
the supervisor to stop everything. The default DIR is ``.testbed/`` in the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from aicenter_testbed.fleet import DEFAULT_PRESET, load_fleet, scale_fleet

STATE_FILE = "cluster.json"
SUPERVISOR_PID = "supervisor.pid"
SUPERVISOR_LOG = "supervisor.log"
SERVE = [sys.executable, "-m", "aicenter_testbed.cli", "_serve"]  # the detached supervisor's command


def _err(msg: str) -> None:
    print(f"[aicenter-testbed] {msg}", file=sys.stderr, flush=True)


def default_dir() -> Path:
    """``.testbed/`` in the repository holding this package (source checkouts), else in the cwd."""
    repo = Path(__file__).resolve().parents[3]
    if (repo / "pyproject.toml").is_file() and (repo / "operator" / "aicenter").is_dir():
        return repo / ".testbed"
    return Path.cwd() / ".testbed"


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name; Z (zombie) and X (dead) are gone.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _supervisor_pid(d: Path) -> int | None:
    pid = _read_pid(d / SUPERVISOR_PID)
    return pid if pid is not None and _pid_alive(pid) else None


def _client_for(args: argparse.Namespace):  # -> ClusterClient
    from aicenter_testbed.cluster import ClusterClient

    if getattr(args, "kubeconfig", None):
        return ClusterClient(Path(args.kubeconfig))
    d = Path(args.dir) if args.dir else None
    if d is None and os.environ.get("AICENTER_KUBECONFIG"):
        return ClusterClient(Path(os.environ["AICENTER_KUBECONFIG"]))
    d = d or default_dir()
    kc = d / "kubeconfig"
    if not (d / STATE_FILE).is_file() or not kc.is_file():
        raise SystemExit(
            f"no running test bed in {d} (run `aicenter-testbed up` first, or pass --kubeconfig)"
        )
    return ClusterClient(kc)


def _fleet(args: argparse.Namespace):
    fleet = load_fleet(args.preset)
    centers = [c.strip() for c in args.centers.split(",") if c.strip()] if args.centers else None
    return scale_fleet(fleet, args.scale, centers=centers)


def default_timeout(nodes: int) -> float:
    """Seconds ``up``/``nodes`` wait by default: 10 min, plus 50 ms a node (41,250 nodes: 44 min)."""
    return 600 + 0.05 * nodes


class Progress:
    """Progress while nodes are created and come up: a bar redrawn every second on a terminal, else a
    line every ``every`` seconds (a run shorter than that prints nothing)."""

    def __init__(self, total: int, stream=None, every: float | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every or (1.0 if self.tty else 15.0)
        self.t0 = time.monotonic()
        self.created = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counts: Callable[[], dict[str, int]] = lambda: {"seen": 0, "ready": 0, "schedulable": 0}
        self.lines = 0

    def done_one(self, *_: object) -> None:
        with self._lock:
            self.created += 1

    def line(self) -> str:
        c = self.counts()
        el = time.monotonic() - self.t0
        rate = self.created / el if el > 0 else 0.0
        elapsed = f"{int(el // 60)}m{int(el % 60):02d}s"
        text = (
            f"{self.created:,}/{self.total:,} nodes created ({rate:.0f}/s), "
            f"{c['ready']:,} Ready, {c['schedulable']:,} Ready and untainted, {elapsed}"
        )
        if self.tty:
            width = 24
            filled = int(width * c["schedulable"] / self.total) if self.total else width
            return f"\r[aicenter-testbed] [{'#' * filled}{'.' * (width - filled)}] {text}\x1b[K"
        return f"[aicenter-testbed] {text}\n"

    def _run(self) -> None:
        while not self._stop.wait(self.every):  # a reporting period, not synchronisation
            self.stream.write(self.line())
            self.stream.flush()
            self.lines += 1

    def start(self) -> Progress:
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.tty and self.lines:
            self.stream.write(self.line() + "\n")
            self.stream.flush()


def add_nodes(
    client,
    fleet,
    wait: bool = True,
    timeout: float | None = None,
    workers: int = 16,
    progress: bool = False,
    tracker=None,
) -> dict:
    """Create the fleet's nodes in a running cluster and (optionally) wait until all are Ready.

    Readiness (Ready and free of ``node.kubernetes.io/*`` taints) is followed through one watch
    (:class:`aicenter_testbed.sim.nodes.NodeTracker`), not by listing the fleet over and over.
    ``progress`` reports on stderr (:class:`Progress`). ``timeout`` defaults to
    :func:`default_timeout`. A started ``tracker`` of the caller's is used (and left running) instead
    of one of its own.
    """
    from aicenter_testbed.sim.nodes import NodeTracker, create_nodes, fleet_manifests
    from aicenter_testbed.waiting import WaitTimeout, wait_for

    t0 = time.monotonic()
    manifests = fleet_manifests(fleet)
    names = [m["metadata"]["name"] for m in manifests]
    timeout = timeout or default_timeout(len(names))
    own = tracker is None and (wait or progress)
    if own:
        tracker = NodeTracker(client).start()
    bar = Progress(len(names)) if progress else None
    if bar is not None and tracker is not None:
        bar.counts = lambda: tracker.counts(names)
        bar.start()
    try:
        res = create_nodes(client, manifests, workers=workers, on_done=bar.done_one if bar else None)
        if res.failed:
            first = next(iter(res.failed.items()))
            raise SystemExit(f"{len(res.failed)} node(s) could not be created, e.g. {first[0]}: {first[1]}")
        out = {
            "nodes": len(manifests),
            "created": len(res.created),
            "existed": len(res.existed),
            "gpus": sum(int(m["status"]["capacity"]["nvidia.com/gpu"]) for m in manifests),
            "create_seconds": round(res.seconds, 2),
        }
        del manifests  # the whole fleet's dicts are not needed while waiting
        if wait:
            assert tracker is not None
            try:
                wait_for(
                    lambda: tracker.counts(names)["schedulable"] == len(names),
                    timeout=max(1.0, timeout - (time.monotonic() - t0)),
                    what=f"{len(names)} simulated nodes to be Ready and untainted",
                    interval=0.2,
                    max_interval=1.0,
                )
            except WaitTimeout as e:
                missing = tracker.unschedulable(names)
                raise WaitTimeout(f"{e}; {len(missing)} not ready, e.g. {missing[:5]}") from None
            out["ready_seconds"] = round(time.monotonic() - t0, 2)
    finally:
        if bar is not None:
            bar.stop()
        if own:
            tracker.stop()
    return out


def cluster_tuning(d: Path) -> dict | None:
    """The tuning a running test bed in ``d`` was started with (``cluster.json``), if known."""
    try:
        return json.loads((d / STATE_FILE).read_text()).get("tuning")
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# commands


def cmd_tools(args: argparse.Namespace) -> int:
    from aicenter_testbed.tools import ensure_tools

    tools = ensure_tools()
    if args.print_path:
        print(os.pathsep.join(tools.bin_dirs))
    else:
        for k, v in vars(tools).items():
            print(f"{k.replace('_', '-')}: {v}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from aicenter_testbed.cluster import ClusterClient
    from aicenter_testbed.tools import ensure_tools

    d = Path(args.dir or default_dir()).resolve()
    d.mkdir(parents=True, exist_ok=True)
    if (pid := _supervisor_pid(d)) is not None:
        _err(f"a test bed is already running in {d} (supervisor {pid}); `aicenter-testbed down` stops it")
        print(f"export KUBECONFIG={d / 'kubeconfig'}")
        return 1
    fleet = _fleet(args)  # fail on a bad preset or centre before starting anything
    ensure_tools()
    (d / STATE_FILE).unlink(missing_ok=True)
    t0 = time.monotonic()
    with open(d / SUPERVISOR_LOG, "ab") as log:
        sup = subprocess.Popen(
            [*SERVE, "--dir", str(d), "--nodes", str(fleet.nodes)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # detached: survives this command and the terminal
            close_fds=True,
        )
    timeout = args.timeout or default_timeout(fleet.nodes)
    deadline = time.monotonic() + timeout
    while not (d / STATE_FILE).is_file():
        if sup.poll() is not None:
            tail = (d / SUPERVISOR_LOG).read_text(errors="replace")[-4000:]
            _err(f"the control plane failed to start (logs in {d / 'logs'}):\n{tail}")
            return 1
        if time.monotonic() > deadline:
            _err(f"the control plane did not come up in {timeout:.0f}s; stopping it (logs: {d / 'logs'})")
            sup.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                sup.wait(timeout=60)
            return 1
        time.sleep(0.2)  # poll for the supervisor's ready file
    _err(f"control plane up in {time.monotonic() - t0:.1f}s (supervisor pid {sup.pid})")
    client = ClusterClient(d / "kubeconfig")
    if args.scale > 0:
        info = add_nodes(client, fleet, wait=True, timeout=timeout, progress=True)
        _err(
            f"{info['nodes']} simulated GPU nodes ({info['gpus']} GPUs) created in "
            f"{info['create_seconds']}s, all Ready after {info['ready_seconds']}s"
        )
    print(f"kubeconfig: {d / 'kubeconfig'}")
    print(f"export KUBECONFIG={d / 'kubeconfig'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The supervisor: starts the cluster, waits for a signal, stops and reaps everything."""
    from aicenter_testbed.cluster import LocalCluster

    d = Path(args.dir).resolve()
    (d / SUPERVISOR_PID).write_text(f"{os.getpid()}\n")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    cluster = LocalCluster(d, keep_data=True, die_with_parent=True, expected_nodes=args.nodes)
    code = 0
    try:
        cluster.start()
        _err(f"serving; pids {json.dumps(cluster.pids())}")
        while not stop.wait(timeout=5):  # a daemon's watch loop: notices a component that died
            try:
                cluster.check_alive()
            except Exception as e:
                _err(f"stopping: {e}")
                code = 1
                break
    except Exception as e:
        _err(f"start failed: {e}")
        code = 1
    finally:
        cluster.stop(remove=False)
        (d / SUPERVISOR_PID).unlink(missing_ok=True)
        _err("stopped")
    return code


def cmd_down(args: argparse.Namespace) -> int:
    d = Path(args.dir or default_dir()).resolve()
    pid = _supervisor_pid(d)
    if pid is None:
        stale = _kill_stale_components(d)
        _err(f"no test bed running in {d}" + (f"; ended {stale} leftover process(es)" if stale else ""))
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)  # poll for the supervisor's exit
    if _pid_alive(pid):
        _err(f"supervisor {pid} did not stop in {args.timeout:.0f}s; killing it")
        os.kill(pid, signal.SIGKILL)
    _kill_stale_components(d)
    (d / STATE_FILE).unlink(missing_ok=True)
    _err(f"test bed in {d} stopped")
    return 0


def _kill_stale_components(d: Path) -> int:
    """SIGKILL component PIDs recorded in DIR that still run one of our binaries (never anything else)."""
    try:
        pids = json.loads((d / STATE_FILE).read_text()).get("pids", {})
    except (OSError, ValueError):
        return 0
    n = 0
    for name, pid in pids.items():
        if not _pid_alive(pid):
            continue
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if Path(argv0).name == name:  # the component names are the binaries' names
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                n += 1
    return n


def cmd_status(args: argparse.Namespace) -> int:
    d = Path(args.dir or default_dir()).resolve()
    pid = _supervisor_pid(d)
    if pid is None or not (d / STATE_FILE).is_file():
        print(f"not running ({d})")
        return 1
    state = json.loads((d / STATE_FILE).read_text())
    alive = {n: _pid_alive(p) for n, p in state["pids"].items()}
    print(json.dumps({"dir": str(d), "supervisor": pid, **state, "alive": alive}, indent=2))
    return 0 if all(alive.values()) else 1


def cmd_nodes(args: argparse.Namespace) -> int:
    from aicenter_testbed.sim.tuning import tuning_for

    client = _client_for(args)
    fleet = _fleet(args)
    tuned = cluster_tuning(Path(args.dir or default_dir()).resolve()) if not args.kubeconfig else None
    if tuned and tuning_for(fleet.nodes).node_lease_seconds > tuned["node_lease_seconds"]:
        _err(
            f"this test bed was started for {tuned['nodes']:,} nodes; with {fleet.nodes:,} its node leases "
            "and heartbeats may outrun the machine and nodes go NotReady: start it with "
            "`aicenter-testbed up --scale ...` for the whole fleet instead"
        )
    info = add_nodes(client, fleet, wait=not args.no_wait, timeout=args.timeout, progress=True)
    print(json.dumps(info))
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    from aicenter_testbed.sim import faults

    client = _client_for(args)
    node = faults.inject(client, args.fault, args.node, gpus=args.gpus)
    st = node.get("status", {})
    ready = next((c["status"] for c in st.get("conditions", []) if c["type"] == "Ready"), "?")
    gpu = "nvidia.com/gpu"
    print(
        f"{args.node}: fault={args.fault} Ready={ready} "
        f"gpu allocatable/capacity={st.get('allocatable', {}).get(gpu)}/{st.get('capacity', {}).get(gpu)}"
    )
    return 0


def _rss_mib(pid: int) -> float:
    from aicenter_testbed.procs import rss_mib

    return rss_mib(pid, key="VmRSS")


def cmd_bench(args: argparse.Namespace) -> int:
    """Start a fresh cluster, bring a fleet's nodes up, report seconds and RSS, stop."""
    from aicenter_testbed.cluster import LocalCluster

    fleet = _fleet(args)
    t0 = time.monotonic()
    with LocalCluster(args.dir, expected_nodes=fleet.nodes) as cluster:
        control_plane_s = time.monotonic() - t0
        client = cluster.client()
        info = add_nodes(client, fleet, wait=True, timeout=args.timeout, workers=args.workers, progress=True)
        rss_ready = {n: round(_rss_mib(p), 1) for n, p in cluster.pids().items()}
        settle_until = time.monotonic() + args.settle
        peak = dict(rss_ready)
        while time.monotonic() < settle_until:  # sample RSS while leases and heartbeats run
            cluster.check_alive()
            for n, p in cluster.pids().items():
                peak[n] = max(peak[n], round(_rss_mib(p), 1))
            time.sleep(1)
        result = {
            **info,
            "control_plane_seconds": round(control_plane_s, 1),
            "rss_mib_when_ready": rss_ready,
            "rss_mib_peak": peak,
            "settle_seconds": args.settle,
            "tuning": cluster.tuning.as_dict(),
        }
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="aicenter-testbed",
        description="A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, "
        "kube-scheduler, kwok) with a simulated GPU fleet.",
    )
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def fleet_opts(p: argparse.ArgumentParser, scale: float) -> None:
        p.add_argument("--preset", default=DEFAULT_PRESET, help="fleet preset name or YAML file")
        p.add_argument("--scale", type=float, default=scale, help="fraction of the fleet's nodes (0 = none)")
        p.add_argument("--centers", default="", help="comma-separated centre names (default: all)")

    def dir_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--dir", default=None, help="test-bed directory (default: .testbed/ in the repository)"
        )

    timeout_help = "seconds to wait (default: 600 plus 50 ms a node)"
    p = sub.add_parser("up", help="start the control plane in the background and create the fleet's nodes")
    fleet_opts(p, 0.001)
    dir_opt(p)
    p.add_argument("--timeout", type=float, default=None, help=timeout_help)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop the test bed")
    dir_opt(p)
    p.add_argument("--timeout", type=float, default=60)
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="show the running test bed")
    dir_opt(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("nodes", help="add a fleet's simulated nodes to a running cluster")
    fleet_opts(p, 0.001)
    dir_opt(p)
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--no-wait", action="store_true", help="do not wait for the nodes to be Ready")
    p.add_argument("--timeout", type=float, default=None, help=timeout_help)
    p.set_defaults(func=cmd_nodes)

    p = sub.add_parser("fault", help="inject or clear a fault on a simulated node")
    p.add_argument("fault", choices=["node-notready", "gpu-unhealthy", "cordon", "clear"])
    p.add_argument("node")
    p.add_argument("--gpus", type=int, default=1, help="unhealthy GPUs (gpu-unhealthy)")
    dir_opt(p)
    p.add_argument("--kubeconfig", default=None)
    p.set_defaults(func=cmd_fault)

    p = sub.add_parser("bench", help="time a fleet's bring-up on a fresh cluster and report process RSS")
    fleet_opts(p, 0.025)
    p.add_argument("--dir", default=None, help="data directory (default: a temporary one, removed)")
    p.add_argument("--workers", type=int, default=16, help="threads creating nodes")
    p.add_argument("--settle", type=float, default=60, help="seconds to keep sampling RSS after Ready")
    p.add_argument("--timeout", type=float, default=None, help=timeout_help)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("tools", help="build (if needed) and print the pinned tools")
    p.add_argument("--print-path", action="store_true", help="print a PATH prefix instead")
    p.set_defaults(func=cmd_tools)

    p = sub.add_parser("_serve")  # internal: the detached supervisor (no help: not listed)
    p.add_argument("--dir", required=True)
    p.add_argument("--nodes", type=int, default=0, help="simulated nodes the cluster is sized for")
    p.set_defaults(func=cmd_serve)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
