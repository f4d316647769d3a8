"""The plugin ships in the operator's wheel: its modules, the dashboard's page (package data) and the
``kubectl-aicenter`` console script (krew-style name: ``kubectl aicenter`` finds it on PATH)."""

from __future__ import annotations

import zipfile

from aicenter_testbed.kind.images import operator_wheel, wheel_console_scripts


def test_wheel_carries_the_plugin_its_page_and_its_console_script(tmp_path):
    wheel = operator_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        page = zf.read("aicenter/plugin/web/index.html").decode()
    for mod in ("__init__", "cli", "source", "views", "dashboard"):
        assert f"aicenter/plugin/{mod}.py" in names, mod
    for asset in ("index.html", "app.css", "app.js"):
        assert f"aicenter/plugin/web/{asset}" in names, asset
    assert 'src="app.js"' in page and 'href="app.css"' in page
    assert "kubectl-aicenter" in wheel_console_scripts(wheel)
