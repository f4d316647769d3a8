"""Unit tests of the kind test bed's pure parts: the runc wrapper, OCI archives, configs, reports.

No Docker, no kind: hack/kind/runc-nocap.py and hack/kind/kindenv.py are imported by path.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tarfile
from pathlib import Path

import yaml

HACK = Path(__file__).resolve().parents[2] / "hack" / "kind"


def load(name: str, file: str):
    spec = importlib.util.spec_from_file_location(name, HACK / file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


nocap = load("runc_nocap", "runc-nocap.py")
kindenv = load("kindenv", "kindenv.py")

ALL = ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_NET_ADMIN"]


def test_runc_verb_skips_global_options():
    assert nocap.verb(
        ["--root", "/run/x", "--log", "/l", "--log-format", "json", "create", "--bundle", "b", "id"]
    ) == ("create")
    assert nocap.verb(["--systemd-cgroup", "exec", "--process", "/p", "id"]) == "exec"
    assert nocap.verb(["--root", "run", "state", "id"]) == "state"  # "run" here is --root's value
    assert nocap.option(["create", "--bundle=/b", "id"], "--bundle") == "/b"


def test_runc_wrapper_strips_missing_caps_from_bundle_and_process(tmp_path):
    caps = {k: list(ALL) for k in ("bounding", "effective", "permitted")}
    (tmp_path / "config.json").write_text(
        json.dumps({"ociVersion": "1.0.2", "process": {"capabilities": caps}})
    )
    nocap.rewrite(str(tmp_path / "config.json"), "process", {"CAP_SYS_RESOURCE"})
    doc = json.loads((tmp_path / "config.json").read_text())
    for k in ("bounding", "effective", "permitted"):
        assert doc["process"]["capabilities"][k] == ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"]
    assert doc["ociVersion"] == "1.0.2"
    (tmp_path / "process.json").write_text(json.dumps({"args": ["sh"], "capabilities": {"bounding": ALL}}))
    nocap.rewrite(str(tmp_path / "process.json"), None, {"CAP_SYS_RESOURCE"})
    assert (
        "CAP_SYS_RESOURCE"
        not in json.loads((tmp_path / "process.json").read_text())["capabilities"]["bounding"]
    )


def test_missing_caps_reads_the_bounding_set():
    missing = nocap.missing_caps()
    assert isinstance(missing, set)
    assert nocap.CAPS[24] == "CAP_SYS_RESOURCE" and len(nocap.CAPS) == 41
    assert ("CAP_SYS_RESOURCE" in missing) == kindenv.bounding_set_lacks(kindenv.CAP_SYS_RESOURCE)


def test_oci_archive_layout(tmp_path):
    binary = tmp_path / "tool"
    binary.write_bytes(b"\x7fELF not really")
    dest = tmp_path / "images.tar"
    kindenv.write_oci_archive(
        [kindenv.OciImage(["registry.k8s.io/pause:3.10.1", "registry.k8s.io/pause:3.10"], {"pause": binary})],
        dest,
    )
    with tarfile.open(dest) as tf:
        index = json.load(tf.extractfile("index.json"))
        names = [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
        assert names == ["registry.k8s.io/pause:3.10.1", "registry.k8s.io/pause:3.10"]
        digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(tf.extractfile(f"blobs/sha256/{digest}"))
        assert manifest["layers"][0]["mediaType"].endswith("tar+gzip")
        config = json.load(tf.extractfile(f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"))
        assert config["rootfs"]["diff_ids"][0].startswith("sha256:")
        assert config["os"] == "linux" and config["architecture"] == "amd64"


def test_cluster_config_is_one_control_plane_and_two_workers(monkeypatch):
    monkeypatch.setattr(kindenv, "etcd_image_tag", lambda: "3.5.16-0")
    cfg = yaml.safe_load(kindenv.cluster_config())
    assert [n["role"] for n in cfg["nodes"]] == ["control-plane", "worker", "worker"]
    assert cfg["networking"]["kubeProxyMode"] == "none" and cfg["networking"]["disableDefaultCNI"]
    patches = [yaml.safe_load(p) for p in cfg["kubeadmConfigPatches"]]
    assert {"addon/coredns", "addon/kube-proxy"} <= set(patches[0]["skipPhases"])
    assert patches[1]["etcd"]["local"]["imageTag"] == "3.5.16-0"


def test_inputs_hash_follows_content(tmp_path):
    f = tmp_path / "a"
    f.write_text("1")
    h1 = kindenv.hash_inputs("x", f)
    assert kindenv.hash_inputs("x", f) == h1
    f.write_text("2")
    assert kindenv.hash_inputs("x", f) != h1
    assert kindenv.hash_inputs("y", f) != kindenv.hash_inputs("x", f)


def test_report_counts():
    assert kindenv._fmt_counts({"tests": 7, "failures": 1, "errors": 0, "skipped": 2}) == (
        "4 passed, 1 failed, 2 skipped"
    )
    assert kindenv._fmt_counts({}) == "no test report"
