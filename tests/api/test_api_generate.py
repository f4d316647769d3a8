"""The generated manifests match aicenter.api (no drift), and the generator's --check works."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aicenter.api.crds import all_crds
from aicenter_testbed import generate

ROOT = Path(__file__).resolve().parents[2]


def test_no_drift():
    diffs = generate.drift(ROOT)
    assert not diffs, (
        "generated manifests are out of date; run `python -m aicenter_testbed.generate`:\n"
        + "".join(diffs)[:4000]
    )


def test_checked_in_crds_load_back_to_the_python_data():
    crds = all_crds()
    for crd in crds:
        path = ROOT / "manifests" / "crds" / generate.crd_file_name(crd)
        assert yaml.safe_load(path.read_text()) == crd
    assert list(yaml.safe_load_all((ROOT / "manifests/crds/all.yaml").read_text())) == crds


def test_expected_files():
    files = {p.relative_to(ROOT).as_posix() for p in generate.expected_files(ROOT)}
    assert {
        "manifests/crds/aicenter.dev_aicenters.yaml",
        "manifests/crds/aicenter.dev_gpuquotas.yaml",
        "manifests/crds/aicenter.dev_gpujobs.yaml",
        "manifests/crds/all.yaml",
        "manifests/samples/korea-national-fleet.yaml",
        "manifests/samples/namespaces.yaml",
        "docs/api.md",
    } <= files
    assert any(f.startswith("manifests/samples/jobs/") for f in files)


def test_check_write_and_stale(tmp_path, capsys):
    assert generate.run(tmp_path, check=True) == 1  # nothing written yet
    assert generate.run(tmp_path, check=False) == 0
    capsys.readouterr()
    assert generate.run(tmp_path, check=True) == 0
    assert not (tmp_path / "charts").exists()  # optional target: only when its folder exists

    crd = tmp_path / "manifests/crds/aicenter.dev_gpujobs.yaml"
    crd.write_text(crd.read_text().replace("gpusPerReplica", "gpusPerReplika", 1))
    assert generate.run(tmp_path, check=True) == 1
    out = capsys.readouterr().out
    assert "--- a/manifests/crds/aicenter.dev_gpujobs.yaml" in out
    assert "-" in out and "+" in out

    stale = tmp_path / "manifests/samples/jobs/old-example.yaml"
    stale.write_text("kind: GPUJob\n")
    diffs = generate.drift(tmp_path)
    assert any("stale file manifests/samples/jobs/old-example.yaml" in d for d in diffs)
    generate.run(tmp_path, check=False)
    assert not stale.exists()
    assert generate.drift(tmp_path) == []


def test_chart_target_written_when_the_chart_exists(tmp_path):
    chart_crds = tmp_path / "charts/aicenter-operator/crds"
    chart_crds.mkdir(parents=True)
    (chart_crds / "kept.yaml").write_text("# not ours\n")
    generate.write(tmp_path)
    assert (chart_crds / "all.yaml").read_text() == (tmp_path / "manifests/crds/all.yaml").read_text()
    assert (chart_crds / "kept.yaml").exists()  # the chart folder is not owned: nothing removed
    assert generate.drift(tmp_path) == []


def test_only_one_group(tmp_path):
    generate.write(tmp_path, groups=("crds",))
    assert (tmp_path / "manifests/crds/all.yaml").exists()
    assert not (tmp_path / "manifests/samples").exists()
    assert generate.drift(tmp_path, groups=("crds",)) == []


def test_main_check_on_the_repository():
    assert generate.main(["--check", "--root", str(ROOT)]) == 0


def test_docs_reference_is_spliced_between_markers():
    from aicenter_testbed import reference

    text = (ROOT / "docs/api.md").read_text()
    assert text.count(reference.BEGIN) == 1 and text.count(reference.END) == 1
    block = text.split(reference.BEGIN)[1].split(reference.END)[0]
    for kind in ("AICenter", "GPUQuota", "GPUJob"):
        assert f"### {kind} reference" in block
    for field in ("`gpusPerReplica`", "`resources[].limit`", "`nodeNotReadyGraceSeconds`", "`topology.mode`"):
        assert field in block
    assert "spec.resources[].limit must be >= guaranteed" in block
    with pytest.raises(ValueError, match="markers"):
        reference.splice("no markers here", "x")
    spliced = reference.splice(f"head\n{reference.BEGIN}\nold\n{reference.END}\ntail\n", "new")
    assert spliced == f"head\n{reference.BEGIN}\n\nnew\n\n{reference.END}\ntail\n"
