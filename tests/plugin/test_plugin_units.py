"""The kubectl plugin without a cluster: tables, explanations, the CLI over a canned source, service
discovery and error messages over a fake API client, the dashboard's server over a canned source."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from plugin_kit import rows, run_cli

from aicenter.controller.kube import ApiError
from aicenter.plugin import cli, dashboard, source, views

# -- canned documents (shaped like the operator's /visibility/v1 answers) ---------------------------


def _domain(name, nodes, cap, alloc, free, largest, parent):
    return {
        "name": name,
        "nodes": nodes,
        "capacity": cap,
        "allocated": alloc,
        "free": free,
        "largestFreeOnANode": largest,
        "parent": parent,
    }


CENTERS = {
    "generatedAt": 1.0,
    "centers": [
        {
            "name": "samsung",
            "maintenance": False,
            "classes": [
                {
                    "gpuClass": "GB200",
                    "nodes": 12,
                    "readyNodes": 12,
                    "capacity": 48,
                    "healthy": 44,
                    "allocated": 12,
                    "free": 32,
                    "unhealthy": 4,
                    "levels": [
                        {
                            "key": "nvidia.com/gpu.clique",
                            "noun": "clique",
                            "domains": [_domain("samsung.nvl0", 12, 48, 12, 32, 4, "samsung-r0")],
                        },
                        {
                            "key": "topology.aicenter.dev/rack",
                            "noun": "rack",
                            "domains": [_domain("samsung-r0", 12, 48, 12, 32, 4, "z0")],
                        },
                        {
                            "key": "topology.kubernetes.io/zone",
                            "noun": "zone",
                            "domains": [_domain("z0", 12, 48, 12, 32, 4, None)],
                        },
                    ],
                }
            ],
        }
    ],
}

QUOTAS = {
    "generatedAt": 1.0,
    "quotas": [
        {
            "name": "fab",
            "center": "samsung",
            "cohort": "s",
            "classes": [
                {"gpuClass": "GB200", "used": 12, "guaranteed": 19, "limit": 33, "borrowed": 0, "lent": 3}
            ],
            "pendingUnits": 2,
        },
        {
            "name": "robots",
            "center": "samsung",
            "cohort": "s",
            "classes": [
                {"gpuClass": "GB200", "used": 20, "guaranteed": 15, "limit": 25, "borrowed": 5, "lent": 0}
            ],
            "pendingUnits": 0,
        },
    ],
}


def _entry(pos, ns, name, quota, gpus=8, reason="QuotaExceeded", cls=None, prio=0, unit=None):
    return {
        "position": pos,
        "namespace": ns,
        "name": name,
        "unit": unit or f"{ns}/{name}",
        "quota": quota,
        "center": "samsung",
        "gpuClass": cls,
        "replicas": gpus // 4,
        "gpusPerReplica": 4,
        "gpus": gpus,
        "priority": prio,
        "reason": reason,
        "message": f"{name} waits: because of {reason}",
        "waitingSeconds": 125.4,
    }


QUEUE = {
    "generatedAt": 1.0,
    "pending": [
        _entry(1, "fab", "big", "fab", 40, prio=100),
        _entry(2, "robots", "twin", "robots", 8, "NoRoom", cls="GB200"),
        _entry(3, "fab", "small", "fab", 4, "NoRoom"),
    ],
}


class Canned:
    """A Source answering from the documents above; records what was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict]] = []

    def describe(self) -> str:
        return "canned"

    def get(self, what, query=None):
        self.asked.append((what, dict(query or {})))
        if what == "centers":
            return CENTERS
        if what == "quotas":
            return QUOTAS
        if what == "queue":
            q = query or {}
            return {
                **QUEUE,
                "pending": [e for e in QUEUE["pending"] if e["quota"] == q.get("quota", e["quota"])],
            }
        if what == "job":
            entries = [
                e
                for e in QUEUE["pending"]
                if (e["namespace"], e["name"]) == (query["namespace"], query["name"])
            ]
            if not entries:
                raise source.PluginError(
                    f"the operator does not know GPUJob {query['namespace']}/{query['name']}"
                )
            ahead = [
                e
                for e in QUEUE["pending"]
                if e["quota"] == entries[0]["quota"] and e["position"] < entries[0]["position"]
            ]
            return {
                "namespace": query["namespace"],
                "name": query["name"],
                "phase": "Pending",
                "reason": entries[0]["reason"],
                "message": entries[0]["message"],
                "quota": entries[0]["quota"],
                "center": "samsung",
                "placements": [],
                "queue": entries,
                "ahead": ahead,
            }
        raise source.PluginError(f"no {what}")


@pytest.fixture
def canned(monkeypatch) -> Canned:
    c = Canned()
    monkeypatch.setattr(cli, "connect", lambda **kw: c)
    return c


def run(*args: str, capsys) -> tuple[int, str, str]:
    rc = cli.main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


# -- tables ----------------------------------------------------------------------------------------


def test_table_aligns_numbers_right_and_text_left():
    t = views.table(["NAME", "GPUS", "NOTE"], [["a", 8, "x y"], ["longer-name", 1024, None]])
    lines = t.splitlines()
    assert lines == [
        "NAME         GPUS  NOTE",
        "a               8  x y",
        "longer-name  1024  -",
    ]
    assert all(line == line.rstrip() for line in lines)


def test_bar_marks_guarantee_and_limit():
    assert views.bar(0, 10, 20, width=10) == "[.....|....]"
    assert views.bar(10, 10, 20, width=10) == "[#####|....]"
    assert views.bar(30, 10, 20, width=10).count("!") == 1  # over the limit: the limit is marked
    assert views.bar(0, 0, 0, width=4) == "[....]"


def test_duration():
    assert [views.duration(s) for s in (5, 65, 3700, 90000, None)] == ["5s", "1m05s", "1h01m", "1d01h", "-"]


def test_class_of_resolves_a_single_class_quota():
    classes = views.quota_classes(QUOTAS)
    assert views.class_of({"quota": "fab", "gpuClass": None}, classes) == "GB200"
    assert views.class_of({"quota": "fab", "gpuClass": "B200"}, classes) == "B200"
    assert views.class_of({"quota": "two", "gpuClass": None}, {"two": ["B200", "B300"]}) is None


# -- commands over the canned source ---------------------------------------------------------------


def test_status_lists_classes_and_topology_loosest_first(canned, capsys):
    rc, out, _ = run("status", capsys=capsys)
    assert rc == 0
    (row,) = rows(out, "CENTRE")
    assert row == {
        "CENTRE": "samsung",
        "CLASS": "GB200",
        "NODES": "12",
        "READY": "12",
        "TOTAL": "48",
        "ALLOCATED": "12",
        "FREE": "32",
        "UNHEALTHY": "4",
        "USE": "25%",
        "LARGEST": "4",
    }
    topo = rows(out, "LEVEL")
    assert [(r["LEVEL"], r["NAME"], r["IN"]) for r in topo] == [
        ("zone", "z0", "-"),
        ("rack", "samsung-r0", "z0"),
        ("clique", "samsung.nvl0", "samsung-r0"),
    ]
    rc, out, _ = run("status", "--no-topology", capsys=capsys)
    assert "LEVEL" not in out


def test_status_of_an_unknown_centre_is_an_error(canned, capsys, monkeypatch):
    monkeypatch.setattr(Canned, "get", lambda self, what, query=None: {"centers": []})
    rc, _, err = run("status", "--center", "nope", capsys=capsys)
    assert rc == 1 and "knows no AICenter 'nope'" in err


def test_queue_text_and_json_agree(canned, capsys):
    rc, out, _ = run("queue", capsys=capsys)
    assert rc == 0
    table = rows(out, "POS")
    assert [r["POS"] for r in table] == ["1", "2", "3"]
    assert [r["JOB"] for r in table] == ["fab/big", "robots/twin", "fab/small"]
    assert [r["CLASS"] for r in table] == ["GB200"] * 3  # null class: the quota's only one
    assert table[0]["WAITING"] == "2m05s" and table[0]["PRIO"] == "100"
    assert table[1]["MESSAGE"] == "twin waits: because of NoRoom"
    rc, out, _ = run("queue", "-o", "json", capsys=capsys)
    doc = json.loads(out)
    assert [e["name"] for e in doc["pending"]] == ["big", "twin", "small"]


def test_queue_names_other_workloads_with_their_kind_and_replicas_with_their_unit():
    other = {**_entry(4, "ml", "train", "fab"), "kind": "Job", "unit": "pods:ml/Job/train#0"}
    replica = {**_entry(5, "fab", "sweep", "fab"), "kind": "GPUJob", "unit": "fab/sweep#3"}
    names = [r[1] for r in views.queue_rows({"pending": [other, replica, QUEUE["pending"][0]]})]
    assert names == ["ml/train (Job)", "fab/sweep#3", "fab/big"]


def test_queue_filters(canned, capsys):
    rc, out, _ = run("queue", "--quota", "fab", capsys=capsys)
    assert rc == 0
    assert [r["JOB"] for r in rows(out, "POS")] == ["fab/big", "fab/small"]
    assert ("queue", {"quota": "fab"}) in canned.asked
    _, out, _ = run("queue", "-n", "robots", capsys=capsys)
    assert [r["JOB"] for r in rows(out, "POS")] == ["robots/twin"]
    _, out, _ = run("queue", "-n", "nobody", capsys=capsys)
    assert out.strip() == "No pending work."


def test_why_explains_position_ahead_quota_and_centre(canned, capsys):
    rc, out, _ = run("why", "fab/small", capsys=capsys)
    assert rc == 0, out
    assert out.startswith("GPUJob fab/small: Pending\n  NoRoom: small waits")
    assert "position 3 of 3" in out
    assert [r["JOB"] for r in rows(out, "POS")] == ["fab/big"]  # ahead of it in its quota
    (q,) = rows(out, "CLASS  USED")
    assert (q["USED"], q["GUARANTEED"], q["LIMIT"], q["LENT"]) == ("12", "19", "33", "3")
    assert "Centre samsung GB200: 32 of 48 GPUs free, largest free block on a node 4, 4 unhealthy" in out
    rc, out, _ = run("why", "small", "-n", "fab", "-o", "json", capsys=capsys)
    doc = json.loads(out)
    assert doc["job"]["queue"][0]["position"] == 3 and doc["quota"]["name"] == "fab"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["why", "fab/ghost"], "does not know GPUJob fab/ghost"),
        (["why", "ghost"], "name the job as NAMESPACE/JOB"),
        (["why", "fab/small", "-n", "other"], "-n says other"),
    ],
)
def test_why_errors(canned, capsys, args, message):
    rc, out, err = run(*args, capsys=capsys)
    assert rc == 1 and out == "" and message in err


def test_top_quotas(canned, capsys):
    rc, out, _ = run("top", "quotas", capsys=capsys)
    assert rc == 0
    table = rows(out, "QUOTA")
    assert [
        (r["QUOTA"], r["USED"], r["GUARANTEED"], r["LIMIT"], r["BORROWED"], r["LENT"]) for r in table
    ] == [
        ("fab", "12", "19", "33", "0", "3"),
        ("robots", "20", "15", "25", "5", "0"),
    ]
    assert table[1]["OF-GUAR"] == "133%"
    assert re.fullmatch(r"\[#+\|?#*\.+\]", table[1]["USE"])
    _, out, _ = run("top", "quotas", "--center", "elsewhere", capsys=capsys)
    assert out.strip() == "No GPUQuotas."


# -- where the data comes from ---------------------------------------------------------------------


class FakeKube:
    def __init__(self, answers: dict[str, object]) -> None:
        self.answers, self.calls = answers, []

    def request(self, method, path, query=None, **kw):
        self.calls.append((method, path, query))
        a = self.answers.get(path)
        if isinstance(a, Exception):
            raise a
        if a is None:
            raise ApiError(404, "NotFound", path)
        return a

    def close(self):
        pass


def _svc(ns, name, port="metrics"):
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"ports": [{"name": port, "port": 8080}]}}


def test_find_service_by_label():
    kube = FakeKube({"/api/v1/services": {"items": [_svc("aic", "op-metrics"), _svc("x", "other", "http")]}})
    assert source.find_service(kube, None, None) == ("aic", "op-metrics", "metrics")
    assert kube.calls[0][2] == [("labelSelector", "app.kubernetes.io/name=aicenter-operator")]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"items": []}, "no Service labelled app.kubernetes.io/name=aicenter-operator"),
        (
            {"items": [_svc("a", "m"), _svc("b", "m")]},
            "several operator services in any namespace (a/m, b/m)",
        ),
        (ApiError(403, "Forbidden", "cannot list"), "cannot list services in any namespace"),
    ],
)
def test_find_service_says_what_to_do(answer, message):
    with pytest.raises(source.PluginError, match=re.escape(message)):
        source.find_service(FakeKube({"/api/v1/services": answer}), None, None)


def test_proxy_source_path_and_errors():
    base = "/api/v1/namespaces/aic/services/op-metrics:metrics/proxy/visibility/v1"
    kube = FakeKube(
        {
            f"{base}/queue": {"pending": []},
            f"{base}/quotas": ApiError(
                403,
                "Forbidden",
                'services "op-metrics:metrics" is forbidden: User "u" cannot get resource "services/proxy"',
            ),
            f"{base}/job": ApiError(403, "Forbidden", "not allowed to get /visibility/v1/job"),
            f"{base}/nope": ApiError(401, "Unauthorized", "a bearer token is required"),
            f"{base}/centers": ApiError(503, "ServiceUnavailable", "no endpoints available"),
        }
    )
    src = source.ProxySource(kube, "aic", "op-metrics")
    assert src.get("queue", {"quota": "q"}) == {"pending": []}
    assert kube.calls[-1] == ("GET", f"{base}/queue", [("quota", "q")])
    with pytest.raises(source.PluginError, match=r'"get" on "services/proxy" for service op-metrics'):
        src.get("quotas")
    with pytest.raises(source.PluginError, match="no ready endpoint"):
        src.get("centers")
    with pytest.raises(source.PluginError, match="the operator refused /visibility/v1/job: not allowed"):
        src.get("job", {"namespace": "a", "name": "b"})
    with pytest.raises(source.PluginError, match="does not pass yours on"):
        src.get("nope")
    kube.answers[f"{base}/job"] = ApiError(404, "NotFound", "not found: 'a/b'")
    with pytest.raises(source.PluginError, match="does not know GPUJob a/b"):
        src.get("job", {"namespace": "a", "name": "b"})


def test_endpoint_source_sends_the_token_it_is_given(tmp_path):
    import http.server
    import threading

    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            body = b'{"pending": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        (tmp_path / "token").write_text("s3cret\n")
        res = run_cli("queue", "--endpoint", url, "--token-file", str(tmp_path / "token"))
        assert res.rc == 0 and res.out.strip() == "No pending work.", res.err
        assert run_cli("queue", "--endpoint", url).rc == 0
        assert seen == ["Bearer s3cret"] * 2 + [None] * 2  # queue and quotas, with and without
    finally:
        server.shutdown()
        server.server_close()
    res = run_cli("queue", "--token-file", str(tmp_path / "token"), "--kubeconfig", str(tmp_path / "none"))
    assert res.rc == 1 and "a token is for --endpoint only" in res.err
    res = run_cli("queue", "--endpoint", "http://127.0.0.1:9", "--token-file", str(tmp_path / "missing"))
    assert res.rc == 1 and "--token-file" in res.err


def test_endpoint_source_refuses_a_non_url_and_reports_an_unreachable_operator():
    with pytest.raises(source.PluginError, match="give a URL"):
        source.EndpointSource("127.0.0.1:8080")
    src = source.EndpointSource("http://127.0.0.1:9", timeout=2)
    with pytest.raises(
        source.PluginError, match=re.escape("cannot reach the operator at http://127.0.0.1:9")
    ):
        src.get("queue")


# -- the dashboard's server ------------------------------------------------------------------------


def test_dashboard_serves_page_assets_and_one_snapshot():
    from aiohttp.test_utils import TestClient, TestServer

    async def go():
        app = dashboard.make_app(Canned(), refresh=2)
        async with TestClient(TestServer(app)) as client:
            page = await client.get("/")
            html = await page.text()
            assert page.status == 200 and "app.js" in html and "app.css" in html
            assert "default-src 'none'" in page.headers["Content-Security-Policy"]
            for name in ("app.js", "app.css"):
                r = await client.get(f"/{name}")
                assert r.status == 200 and len(await r.text()) > 500
            snap = await (await client.get("/api/snapshot")).json()
            assert snap["refreshSeconds"] == 2 and snap["source"] == "canned"
            assert [c["name"] for c in snap["centers"]] == ["samsung"]
            assert [q["name"] for q in snap["quotas"]] == ["fab", "robots"]
            assert [e["gpuClass"] for e in snap["pending"]] == ["GB200"] * 3  # resolved as in the CLI

    asyncio.run(go())


def test_dashboard_reports_a_source_error_as_502():
    from aiohttp.test_utils import TestClient, TestServer

    class Broken(Canned):
        def get(self, what, query=None):
            raise source.PluginError("operator gone")

    async def go():
        async with TestClient(TestServer(dashboard.make_app(Broken()))) as client:
            r = await client.get("/api/snapshot")
            assert r.status == 502 and (await r.json()) == {"error": "operator gone"}

    asyncio.run(go())


def test_page_loads_nothing_from_elsewhere():
    """The page is self-contained: no URL to another host in its HTML, CSS or JS."""
    for name in ("index.html", "app.css", "app.js"):
        text = dashboard.asset(name).decode()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
