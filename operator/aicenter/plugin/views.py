"""The visibility documents as plain, aligned text (pure functions: documents in, text out).

Each ``*_text`` function takes the operator's JSON documents (``/visibility/v1/centers``,
``queue``, ``job``, ``quotas``) and returns what ``kubectl aicenter`` prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Doc = dict[str, Any]

# -- tables ----------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns separated by two spaces; numeric columns right-aligned, others left-aligned; ``-`` for
    None; no trailing blanks."""
    raw = [list(r) for r in rows]
    cells = [[_cell(v) for v in r] for r in raw]
    numeric = [
        any(_is_num(r[i]) for r in raw) and all(_is_num(r[i]) or r[i] is None for r in raw)
        for i in range(len(headers))
    ]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    out = []
    for line in [list(headers), *cells]:
        out.append(
            "  ".join(
                v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]) for i, v in enumerate(line)
            ).rstrip()
        )
    return "\n".join(out)


def _is_num(v: Any) -> bool:
    """Numbers, and percentages such as "42%", are right-aligned."""
    if isinstance(v, str):
        return v.endswith("%") and v[:-1].isdigit()
    return isinstance(v, int | float) and not isinstance(v, bool)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def pct(part: int, whole: int) -> str:
    return f"{round(100 * part / whole)}%" if whole else "-"


def duration(seconds: float | None) -> str:
    """``42s``, ``7m05s``, ``3h12m``, ``2d04h``."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def bar(used: int, guaranteed: int, limit: int, width: int = 20) -> str:
    """``#`` for used GPUs and ``.`` for the room up to the limit, ``|`` where the guarantee ends; the
    bar's end is the limit, or, when more than the limit is used, ``!`` marks the limit."""
    scale = max(limit, used, 1)
    at = lambda n: min(width - 1, round(width * n / scale))  # noqa: E731
    cells = ["#" if i < round(width * used / scale) else "." for i in range(width)]
    if guaranteed > 0:
        cells[at(guaranteed)] = "|"
    if used > limit:
        cells[at(limit)] = "!"
    return "[" + "".join(cells) + "]"


# -- gpu class of a queue entry --------------------------------------------------------------------


def quota_classes(quotas_doc: Doc | None) -> dict[str, list[str]]:
    """quota name → its GPU classes (from ``/visibility/v1/quotas``)."""
    if not quotas_doc:
        return {}
    return {
        q["name"]: [c["gpuClass"] for c in q.get("classes") or []] for q in quotas_doc.get("quotas") or []
    }


def class_of(entry: Doc, classes: dict[str, list[str]]) -> str | None:
    """The entry's GPU class; a job that leaves ``spec.gpuClass`` out gets its quota's one class."""
    if entry.get("gpuClass"):
        return entry["gpuClass"]
    own = classes.get(entry.get("quota") or "", [])
    return own[0] if len(own) == 1 else None


# -- status ----------------------------------------------------------------------------------------

LEVEL_ORDER = {"zone": 0, "rack": 1, "clique": 2}


def status_text(centers_doc: Doc, topology: bool = True) -> str:
    """Per centre and class: nodes, total, allocated, free, unhealthy; then, per centre and class,
    each rack and NVLink clique (and zone) with its largest free block on a node."""
    centers = centers_doc.get("centers") or []
    if not centers:
        return "No AICenters (kubectl get aicenters)."
    rows = []
    for c in centers:
        for k in c.get("classes") or []:
            rows.append(
                [
                    c["name"] + (" (maintenance)" if c.get("maintenance") else ""),
                    k["gpuClass"],
                    k["nodes"],
                    k.get("readyNodes"),
                    k["capacity"],
                    k["allocated"],
                    k["free"],
                    k["unhealthy"],
                    pct(k["allocated"], k["capacity"]),
                    _largest(k),
                ]
            )
        if not c.get("classes"):
            rows.append([c["name"], "-", 0, 0, 0, 0, 0, 0, "-", None])
    out = [
        table(
            [
                "CENTRE",
                "CLASS",
                "NODES",
                "READY",
                "TOTAL",
                "ALLOCATED",
                "FREE",
                "UNHEALTHY",
                "USE",
                "LARGEST",
            ],
            rows,
        )
    ]
    if topology:
        for c in centers:
            for k in c.get("classes") or []:
                t = topology_text(k)
                if t:
                    out.append(f"\n{c['name']} {k['gpuClass']}: racks and NVLink cliques\n{t}")
    return "\n".join(out)


def _largest(k: Doc) -> int | None:
    """The largest free block on one node anywhere in the class (from its loosest level)."""
    sizes = [
        d.get("largestFreeOnANode", 0) for lvl in k.get("levels") or [] for d in lvl.get("domains") or []
    ]
    return max(sizes) if sizes else None


def topology_text(k: Doc) -> str:
    """One row per domain, loosest level first, each domain after its parent: LARGEST is the largest
    free block on one node; FREE much larger than LARGEST means the free GPUs are scattered."""
    levels = sorted(
        (lvl for lvl in k.get("levels") or [] if lvl.get("domains")),
        key=lambda lvl: LEVEL_ORDER.get(lvl.get("noun", ""), 9),
    )
    if not levels:
        return ""
    rows = []
    for lvl in levels:
        for d in lvl["domains"]:
            rows.append(
                [
                    lvl.get("noun") or lvl.get("key"),
                    d["name"],
                    d.get("parent"),
                    d["nodes"],
                    d["capacity"],
                    d["allocated"],
                    d["free"],
                    d["largestFreeOnANode"],
                    pct(d["allocated"], d["capacity"]),
                ]
            )
    return table(["LEVEL", "NAME", "IN", "NODES", "TOTAL", "ALLOCATED", "FREE", "LARGEST", "USE"], rows)


# -- queue -----------------------------------------------------------------------------------------


def queue_rows(queue_doc: Doc, quotas_doc: Doc | None = None) -> list[list[Any]]:
    classes = quota_classes(quotas_doc)
    return [
        [
            e["position"],
            workload_name(e),
            e.get("quota"),
            e.get("center"),
            class_of(e, classes),
            f"{e['replicas']}x{e['gpusPerReplica']}",
            e["gpus"],
            e.get("priority"),
            duration(e.get("waitingSeconds")),
            e.get("reason"),
            e.get("message"),
        ]
        for e in queue_doc.get("pending") or []
    ]


def workload_name(e: Doc) -> str:
    """``ns/job``; ``ns/job#r`` for one replica of a job of independent replicas; other workloads
    (pods the operator schedules for a Job, a JobSet, ...) with their kind: ``ns/name (Job)``."""
    name = f"{e['namespace']}/{e['name']}"
    kind = e.get("kind") or "GPUJob"
    if kind != "GPUJob":
        return f"{name} ({kind})"
    unit = e.get("unit") or ""
    return name + ("#" + unit.split("#", 1)[1] if "#" in unit else "")


def queue_text(queue_doc: Doc, quotas_doc: Doc | None = None) -> str:
    rows = queue_rows(queue_doc, quotas_doc)
    if not rows:
        return "No pending work."
    return table(
        ["POS", "JOB", "QUOTA", "CENTRE", "CLASS", "SHAPE", "GPUS", "PRIO", "WAITING", "REASON", "MESSAGE"],
        rows,
    )


# -- top quotas ------------------------------------------------------------------------------------


def quota_rows(quotas_doc: Doc, center: str | None = None) -> list[list[Any]]:
    rows = []
    for q in quotas_doc.get("quotas") or []:
        if center and q.get("center") != center:
            continue
        for k in q.get("classes") or []:
            rows.append(
                [
                    q["name"],
                    q.get("center"),
                    q.get("cohort"),
                    k["gpuClass"],
                    k["used"],
                    k["guaranteed"],
                    k["limit"],
                    k["borrowed"],
                    k["lent"],
                    q.get("pendingUnits", 0),
                    pct(k["used"], k["guaranteed"]),
                    bar(k["used"], k["guaranteed"], k["limit"]),
                ]
            )
    return rows


def quotas_text(quotas_doc: Doc, center: str | None = None) -> str:
    rows = quota_rows(quotas_doc, center)
    if not rows:
        return "No GPUQuotas."
    return (
        table(
            [
                "QUOTA",
                "CENTRE",
                "COHORT",
                "CLASS",
                "USED",
                "GUARANTEED",
                "LIMIT",
                "BORROWED",
                "LENT",
                "PENDING",
                "OF-GUAR",
                "USE",
            ],
            rows,
        )
        + "\nUSE: # used, | guaranteed, ] limit (! marks the limit when more than it is used)"
    )


# -- why -------------------------------------------------------------------------------------------


def why_text(job: Doc, quotas_doc: Doc | None = None, centers_doc: Doc | None = None, total: int = 0) -> str:
    """Why a job waits (or where it runs): its reason, its place in the queue, the work ahead of it
    in its quota, its quota's numbers and its centre's free GPUs of its class."""
    key = f"{job['namespace']}/{job['name']}"
    lines = [f"GPUJob {key}: {job.get('phase') or 'unknown phase'}"]
    if job.get("reason") or job.get("message"):
        lines.append(f"  {job.get('reason') or ''}: {job.get('message') or ''}".rstrip(": "))
    classes = quota_classes(quotas_doc)
    entries = job.get("queue") or []
    cls = class_of(entries[0], classes) if entries else None
    if cls is None and job.get("quota"):
        own = classes.get(job["quota"], [])
        cls = own[0] if len(own) == 1 else None
    if job.get("placements"):
        lines.append("")
        lines.append(
            table(
                ["REPLICA", "NODE", "POD"],
                [[p["replica"], p.get("node"), p.get("pod")] for p in job["placements"]],
            )
        )
    if entries:
        e = entries[0]
        of = f" of {total}" if total else ""
        lines.append("")
        lines.append(
            f"Queue: position {e['position']}{of}; {e['replicas']}x{e['gpusPerReplica']} = {e['gpus']} "
            f"{cls or 'GPUs'}, priority {e.get('priority')}, waiting {duration(e.get('waitingSeconds'))}"
        )
        for extra in entries[1:]:
            lines.append(
                f"  also unit {extra.get('unit')} at position {extra['position']}: {extra.get('reason')}"
            )
        ahead = job.get("ahead") or []
        if ahead:
            lines.append(
                f"Ahead of it in quota {e.get('quota')} ({len(ahead)}{'+' if len(ahead) >= 20 else ''}):"
            )
            rows = [
                [
                    a["position"],
                    workload_name(a),
                    a["gpus"],
                    a.get("priority"),
                    duration(a.get("waitingSeconds")),
                    a.get("reason"),
                ]
                for a in ahead
            ]
            lines.append(_indent(table(["POS", "JOB", "GPUS", "PRIO", "WAITING", "REASON"], rows)))
        else:
            lines.append(f"Nothing of quota {e.get('quota')} is ahead of it.")
    elif job.get("phase") == "Pending":
        lines.append("")
        lines.append("Not in the scheduler's queue: the operator could not take it up (see the reason).")
    q = find(quotas_doc, "quotas", job.get("quota"))
    if q is not None:
        lines.append("")
        cohort = f", cohort {q['cohort']}" if q.get("cohort") else ""
        lines.append(f"Quota {q['name']} (centre {q.get('center')}{cohort}):")
        rows = [
            [k["gpuClass"], k["used"], k["guaranteed"], k["limit"], k["borrowed"], k["lent"]]
            for k in q.get("classes") or []
            if cls is None or k["gpuClass"] == cls
        ]
        lines.append(_indent(table(["CLASS", "USED", "GUARANTEED", "LIMIT", "BORROWED", "LENT"], rows)))
    c = find(centers_doc, "centers", job.get("center"))
    if c is not None:
        for k in c.get("classes") or []:
            if cls is not None and k["gpuClass"] != cls:
                continue
            lines.append(
                f"Centre {c['name']} {k['gpuClass']}: {k['free']} of {k['capacity']} GPUs free, "
                f"largest free block on a node {_largest(k) or 0}, {k['unhealthy']} unhealthy"
                + (" (maintenance: no new placements)" if c.get("maintenance") else "")
            )
    return "\n".join(lines)


def find(doc: Doc | None, key: str, name: str | None) -> Doc | None:
    if not doc or not name:
        return None
    return next((x for x in doc.get(key) or [] if x.get("name") == name), None)


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line for line in text.splitlines())
