"""Markdown field reference of the CRDs, spliced into ``docs/api.md`` by the generator.

The tables are rendered from :mod:`aicenter.api.crds`, so the documentation cannot drift from the
schemas: ``python -m aicenter_testbed.generate --check`` fails when it does.
"""

from __future__ import annotations

from typing import Any

from aicenter.api import KIND_AICENTER, KIND_GPUJOB, KIND_GPUQUOTA
from aicenter.api.crds import cel_rules, crd_for, openapi_schema

Schema = dict[str, Any]

BEGIN = "<!-- BEGIN GENERATED: field reference (python -m aicenter_testbed.generate) -->"
END = "<!-- END GENERATED: field reference -->"


def _is_selector(s: Schema) -> bool:
    return set(s.get("properties", {})) == {"matchLabels", "matchExpressions"}


def _is_conditions(s: Schema) -> bool:
    return s.get("x-kubernetes-list-map-keys") == ["type"]


def _type(s: Schema, path: str) -> str:
    if _is_selector(s):
        return "LabelSelector"
    if _is_conditions(s):
        return "[]Condition"
    if path.endswith("template"):
        return "PodTemplateSpec"
    t = s.get("type", "")
    if t == "array":
        return "[]" + _type(s["items"], path)
    if t == "object" and isinstance(s.get("additionalProperties"), dict):
        return f"map[string]{s['additionalProperties'].get('type', 'any')}"
    if s.get("format") == "date-time":
        return "time"
    return t


def _constraints(s: Schema, status: bool) -> list[str]:
    out = []
    if "enum" in s:
        out.append(" \\| ".join(f"`{v}`" for v in s["enum"]))
    lo, hi = s.get("minimum"), s.get("maximum")
    if lo is not None and hi is not None:
        out.append(f"{lo:,}..{hi:,}")
    elif lo is not None and not (status and lo == 0):
        out.append(f"≥ {lo}")
    elif hi is not None:
        out.append(f"≤ {hi}")
    if s.get("minItems"):
        out.append(f"≥ {s['minItems']} item{'s' if s['minItems'] > 1 else ''}")
    if s.get("x-kubernetes-list-map-keys") and not _is_conditions(s):
        out.append("keyed by " + ", ".join(f"`{k}`" for k in s["x-kubernetes-list-map-keys"]))
    if s.get("x-kubernetes-list-type") == "set":
        out.append("unique items")
    return out


def _default(s: Schema) -> str:
    if "default" not in s:
        return ""
    d = s["default"]
    if isinstance(d, bool):
        return f"`{str(d).lower()}`"
    if isinstance(d, list):
        return "`[" + ", ".join(str(x) for x in d) + "]`"
    if d == {}:
        return ""
    return f"`{d}`"


def _rows(s: Schema, path: str, required: bool, status: bool, out: list[str]) -> None:
    notes = _constraints(s, status)
    req = "yes" if required else ""
    desc = s.get("description", "").replace("|", "\\|").replace("\n", " ")
    extra = f" ({'; '.join(notes)})" if notes else ""
    out.append(f"| `{path}` | {_type(s, path)} | {req} | {_default(s)} | {desc}{extra} |")
    if _is_selector(s) or _is_conditions(s) or path.endswith("template"):
        return
    node = s["items"] if s.get("type") == "array" and s["items"].get("type") == "object" else s
    suffix = "[]" if node is not s else ""
    for name, sub in node.get("properties", {}).items():
        _rows(sub, f"{path}{suffix}.{name}", name in node.get("required", []), status, out)


def field_table(kind: str, part: str) -> str:
    """Markdown table of ``spec`` or ``status`` of ``kind``."""
    schema = openapi_schema(kind)["properties"][part]
    out = ["| Field | Type | Required | Default | Description |", "|---|---|---|---|---|"]
    for name, sub in schema.get("properties", {}).items():
        _rows(sub, name, name in schema.get("required", []), part == "status", out)
    return "\n".join(out) + "\n"


def columns_line(kind: str) -> str:
    cols = crd_for(kind)["spec"]["versions"][0]["additionalPrinterColumns"]
    return ", ".join(
        f"{c['name']} (`{c['jsonPath']}`{', wide only' if c.get('priority') else ''})" for c in cols
    )


def reference_markdown() -> str:
    parts = []
    for kind in (KIND_AICENTER, KIND_GPUQUOTA, KIND_GPUJOB):
        crd = crd_for(kind)
        names = crd["spec"]["names"]
        version = crd["spec"]["versions"][0]
        parts.append(f"### {kind} reference\n")
        parts.append(
            f"`{names['plural']}.{crd['spec']['group']}`, {crd['spec']['scope'].lower()},"
            f" short name `{', '.join(names['shortNames'])}`, category `{', '.join(names['categories'])}`."
            f" Printer columns: {columns_line(kind)}."
        )
        if version.get("selectableFields"):
            fields = ", ".join(f"`{f['jsonPath'].lstrip('.')}`" for f in version["selectableFields"])
            parts[-1] += f" Field selectors: {fields}."
        parts.append("\n#### spec\n")
        parts.append(field_table(kind, "spec"))
        parts.append("#### status\n")
        parts.append(field_table(kind, "status"))
        parts.append("#### CEL rules\n")
        parts.append("| Where | Rule | Message |\n|---|---|---|")
        for path, rule, message in cel_rules(kind):
            escaped = rule.replace("|", "\\|")
            parts.append(f"| `{path}` | `{escaped}` | {message} |")
        parts.append("")
    return "\n".join(parts)


def splice(text: str, block: str) -> str:
    """``text`` with the generated block between :data:`BEGIN` and :data:`END` replaced by ``block``."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"docs/api.md lacks the markers {BEGIN!r} and {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{block.strip()}\n\n{END}{tail}"
