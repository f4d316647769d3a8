"""YAML as the generated manifests write it: block style, indented sequences, no anchors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """Block style, indented sequences, no anchors/aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def dump(doc: Any) -> str:
    return yaml.dump(
        doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100, allow_unicode=False
    )


def dump_all(docs: Iterable[Any]) -> str:
    return "".join(f"---\n{dump(d)}" for d in docs)
