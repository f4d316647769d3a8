"""The chart's Grafana dashboard: it parses, every panel and variable query names only metrics (and
labels, and state values) the operator exports, and the chart ships it as an opt-in ConfigMap with the
sidecar's label.

The exported names are taken from the operator itself: ``Metrics().render()`` with every counter and
histogram touched, plus ``status.gauge_lines`` over the operator's cache holding the fleet's scheduler
and two jobs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from aicenter import api
from aicenter.controller.cache import Cache
from aicenter.controller.metrics import Metrics
from aicenter.controller.records import record_from
from aicenter.controller.status import gauge_lines
from aicenter_testbed import manifests
from aicenter_testbed.fleet import build_scheduler, load_fleet, scale_fleet
from aicenter_testbed.tools import HELM, KUBERNETES_VERSION, ensure_tools

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "aicenter-operator"
DASHBOARD = CHART / "dashboards" / "aicenter-operator.json"

# What PromQL and Grafana put around metric names: functions, aggregations, keywords.
FUNCTIONS = {
    "abs", "absent", "avg", "avg_over_time", "bottomk", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "count", "count_over_time", "delta", "deriv", "floor", "group", "histogram_quantile", "idelta",
    "increase", "irate", "label_join", "label_replace", "label_values", "max", "max_over_time", "min",
    "min_over_time", "quantile", "quantile_over_time", "rate", "resets", "round", "scalar", "sort",
    "sort_desc", "stddev", "sum", "sum_over_time", "time", "topk", "vector",
}  # fmt: skip
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
}
# Labels Prometheus adds to every scraped series; an expression may group or match on them.
TARGET_LABELS = {"instance", "job", "namespace", "pod", "service", "endpoint", "container"}
ENUM_LABELS = ("state", "phase")  # labels whose values the operator fixes; checked value by value


# -- what the operator exports ---------------------------------------------------------------------


def exported() -> dict[str, dict[str, set[str]]]:
    """metric sample name → label name → values seen, from the operator's own exposition."""
    m = Metrics()
    for c in (m.admitted, m.pods_created, m.preemptions, m.restarts, m.status_writes):
        c.inc()
    for phase in ("Succeeded", "Failed"):
        m.finished.labels(phase=phase).inc()
    m.cycle_seconds.observe(0.01)
    m.admission_seconds.observe(3.0)
    sched = build_scheduler(scale_fleet(load_fleet(), 0.001))
    cache = Cache(sched=sched)
    quota = sorted(sched.ledger.specs)[0]
    for name, phase in (("waits", api.PHASE_PENDING), ("runs", api.PHASE_RUNNING)):
        job = manifests.gpujob(name, 1, 8, namespace=quota)
        job["metadata"].update(uid=name, creationTimestamp="2026-01-01T00:00:00Z")
        place = [{"replica": 0, "node": "n", "pod": f"{name}-0-0"}] if phase == api.PHASE_RUNNING else []
        job["status"] = {"phase": phase, "quota": quota, "placements": place}
        cache.jobs[f"{quota}/{name}"] = record_from(job)
    m.set_gauges(gauge_lines(cache, True, "test"))
    return parse_exposition(m.render())


def parse_exposition(text: str) -> dict[str, dict[str, set[str]]]:
    out: dict[str, dict[str, set[str]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head = line.rsplit(" ", 1)[0]
        name, _, labels = head.partition("{")
        entry = out.setdefault(name, {})
        for k, v in re.findall(r'(\w+)="([^"]*)"', labels):
            entry.setdefault(k, set()).add(v)
    return out


@pytest.fixture(scope="module")
def metrics() -> dict[str, dict[str, set[str]]]:
    return exported()


def test_the_exposition_has_what_the_dashboard_is_about(metrics):
    """The fixture itself: the names the issue lists are all there, with their labels."""
    for name in (
        "aicenter_center_gpus",
        "aicenter_quota_class_gpus",
        "aicenter_queue_depth",
        "aicenter_time_to_admission_seconds_bucket",
        "aicenter_preemptions_total",
        "aicenter_leader",
    ):
        assert name in metrics, name
    assert metrics["aicenter_center_gpus"]["state"] == {"capacity", "allocated", "free", "unhealthy"}
    assert metrics["aicenter_quota_class_gpus"]["state"] == {
        "used",
        "guaranteed",
        "limit",
        "borrowed",
        "lent",
    }
    assert "le" in metrics["aicenter_time_to_admission_seconds_bucket"]


# -- a small PromQL reader -------------------------------------------------------------------------


def problems(expr: str, metrics: dict[str, dict[str, set[str]]]) -> list[str]:
    """What in ``expr`` names something the operator does not export (empty: nothing)."""
    out: list[str] = []
    if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
        out.append(f"unbalanced brackets in {expr!r}")
    s = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors: [5m], [$__rate_interval]
    # Grafana's label_values(selector, label): the label must be one the selector's metric has
    lv = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*,\s*(\w+)\s*\)\s*", s)
    if lv:
        name, label = lv.group(1), lv.group(3)
        if name in metrics and label not in metrics[name]:
            out.append(f"{name} has no label {label!r}, in {expr!r}")
        s = f"{name}{lv.group(2) or ''}"
    group_labels: set[str] = set()
    for m in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", s):
        group_labels |= {x.strip() for x in m.group(2).split(",") if x.strip()}
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    selectors = list(re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}", s))
    names: list[tuple[str, str]] = [(m.group(1), m.group(2)) for m in selectors]
    s = re.sub(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{[^}]*\}", " ", s)
    for m in re.finditer(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call:
            if word not in FUNCTIONS and word not in KEYWORDS:
                out.append(f"unknown function {word}() in {expr!r}")
        elif word not in KEYWORDS and word.lower() not in ("inf", "nan"):
            names.append((word, ""))
    known_labels = set().union(*(set(v) for v in metrics.values()))
    for label in group_labels - known_labels - TARGET_LABELS:
        out.append(f"label {label!r} (in by/on/ignoring) is exported by no metric, in {expr!r}")
    for name, matchers in names:
        if name not in metrics:
            out.append(f"metric {name!r} is not exported by the operator, in {expr!r}")
            continue
        for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers):
            if label not in metrics[name] and label not in TARGET_LABELS:
                out.append(f"{name} has no label {label!r}, in {expr!r}")
            elif label in ENUM_LABELS and "$" not in value and op in ("=", "=~"):
                for v in value.split("|") if op == "=~" else [value]:
                    if v not in metrics[name][label]:
                        out.append(f"{name}{{{label}}} is never {v!r}, in {expr!r}")
    return out


def test_the_reader_catches_typos(metrics):
    """The check below can fail: a misspelt metric, label, state or function is reported."""
    good = 'sum by (center) (aicenter_center_gpus{state="allocated", center=~"$center"})'
    assert problems(good, metrics) == []
    for bad in (
        'sum(aicenter_centre_gpus{state="allocated"})',
        "aicenter_queue_dept",
        'aicenter_center_gpus{stat="allocated"}',
        'aicenter_center_gpus{state="alocated"}',
        'aicenter_quota_class_gpus{state=~"used|borowed"}',
        "histogram_quantil(0.9, sum by (le) (rate(aicenter_time_to_admission_seconds_bucket[5m])))",
        "histogram_quantile(0.9, sum by (le) (rate(aicenter_time_to_admission_bucket[5m])))",
        "sum by (centre) (aicenter_center_gpus)",
        "sum(aicenter_leader",
        "label_values(aicenter_center_gpus, centre)",
        "label_values(aicenter_centre_gpus, center)",
    ):
        assert problems(bad, metrics), bad


# -- the dashboard ---------------------------------------------------------------------------------


def _panels(doc: dict) -> list[dict]:
    out = []
    for p in doc.get("panels", []):
        out.append(p)
        out += _panels(p)  # rows nest their panels
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_json_is_a_grafana_dashboard(dashboard):
    assert dashboard["uid"] == "aicenter-operator" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["targets"], p["title"]
            assert p["datasource"]["uid"] == "${datasource}", p["title"]  # the datasource variable
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )


def test_every_query_names_only_what_the_operator_exports(dashboard, metrics):
    exprs = [(p["title"], t["expr"]) for p in _panels(dashboard) for t in p.get("targets", [])]
    exprs += [
        (f"variable {v['name']}", v["query"]["query"])
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
    ]
    assert len(exprs) > 10
    found = [f"{title}: {msg}" for title, e in exprs for msg in problems(e, metrics)]
    assert not found, "\n".join(found)


def test_dashboard_covers_what_operators_look_at(dashboard):
    """Allocation per centre and class, quota used vs guaranteed and limit, queue depth, time to
    admission as a quantile of the histogram, preemptions."""
    text = " ".join(t["expr"] for p in _panels(dashboard) for t in p.get("targets", []))
    assert re.search(r'aicenter_center_gpus\{state="allocated"', text)
    assert re.search(r"sum by \(center, gpu_class\)", text)
    for state in ("used", "guaranteed", "limit", "borrowed", "lent"):
        assert f'aicenter_quota_class_gpus{{state="{state}"' in text, state
    assert "aicenter_queue_depth" in text
    assert re.search(
        r"histogram_quantile\(0\.\d+, sum by \(le\) \(rate\(aicenter_time_to_admission_seconds_bucket", text
    )
    assert "aicenter_preemptions_total" in text


# -- the chart's ConfigMap -------------------------------------------------------------------------


def helm_template(tmp_path: Path, *sets: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if HELM.missing():
        ensure_tools()
    env = {**os.environ, **{f"HELM_{k}_HOME": str(tmp_path / k.lower()) for k in ("CACHE", "CONFIG", "DATA")}}
    args = [str(HELM.path("helm")), "template", "aic", str(CHART), "--namespace", "aicenter-system"]
    args += ["--kube-version", KUBERNETES_VERSION]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=180)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def configmaps(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d and d["kind"] == "ConfigMap"]


def test_chart_ships_the_dashboard_only_when_asked(tmp_path):
    assert configmaps(helm_template(tmp_path).stdout) == []  # off by default
    (cm,) = configmaps(helm_template(tmp_path, "grafana.dashboards.enabled=true").stdout)
    assert cm["metadata"]["name"] == "aic-aicenter-operator-grafana-dashboards"
    assert cm["metadata"]["namespace"] == "aicenter-system"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"] == {"aicenter-operator.json": DASHBOARD.read_text()}
    assert json.loads(cm["data"]["aicenter-operator.json"])["uid"] == "aicenter-operator"


def test_chart_dashboard_label_namespace_and_annotations_are_values(tmp_path):
    out = helm_template(
        tmp_path,
        "grafana.dashboards.enabled=true",
        "grafana.dashboards.label=dashboards.example.com/grafana",
        "grafana.dashboards.labelValue=aicenter",
        "grafana.dashboards.namespace=monitoring",
        "grafana.dashboards.annotations.grafana_folder=AICenter",
    ).stdout
    (cm,) = configmaps(out)
    assert cm["metadata"]["labels"]["dashboards.example.com/grafana"] == "aicenter"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "AICenter"}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("grafana.dashboards.enable=true", "additional properties 'enable' not allowed"),
        ("grafana.dashboards.label=not a label", "at '/grafana/dashboards/label'"),
        ("grafana.dashboards.namespace=Not_A_Namespace", "at '/grafana/dashboards/namespace'"),
    ],
)
def test_chart_schema_checks_the_grafana_values(tmp_path, setting, message):
    proc = helm_template(tmp_path, setting, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
