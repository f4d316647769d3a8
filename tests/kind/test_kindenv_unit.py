"""Unit tests of the kind test bed's pure parts (``aicenter_testbed.kind``), without Docker or kind:
the runc wrapper, OCI archives, the cluster config and network script, input hashes, the images'
recipes and the report. hack/kind/runc-nocap.py runs outside any venv and is imported by path.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tarfile
from pathlib import Path

import yaml

from aicenter_testbed.kind import HACK_KIND, REPO, cache, cluster, docker, e2e, images, oci

ALL = ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_NET_ADMIN"]


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


nocap = load("runc_nocap", HACK_KIND / "runc-nocap.py")


def test_paths_point_at_the_checkout():
    assert (REPO / "pyproject.toml").is_file() and (REPO / "operator" / "aicenter").is_dir()
    assert (HACK_KIND / "runc-nocap.py").is_file() and (HACK_KIND / "node" / "pause.go").is_file()


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
    assert ("CAP_SYS_RESOURCE" in missing) == docker.bounding_set_lacks(docker.CAP_SYS_RESOURCE)


def test_oci_archive_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("AICENTER_KIND_CACHE", str(tmp_path / "cache"))
    binary = tmp_path / "tool"
    binary.write_bytes(b"\x7fELF not really")
    dest = tmp_path / "images.tar"
    oci.write_oci_archive(
        [oci.OciImage(["registry.k8s.io/pause:3.10.1", "registry.k8s.io/pause:3.10"], {"pause": binary})],
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
    assert not list((tmp_path / "cache" / "work").iterdir())  # the scratch directory is gone


def test_cluster_config_is_one_control_plane_and_two_workers():
    cfg = yaml.safe_load(cluster.cluster_config(etcd_tag="3.5.16-0"))
    assert [n["role"] for n in cfg["nodes"]] == ["control-plane", "worker", "worker"]
    assert cfg["networking"]["kubeProxyMode"] == "none" and cfg["networking"]["disableDefaultCNI"]
    patches = [yaml.safe_load(p) for p in cfg["kubeadmConfigPatches"]]
    assert {"addon/coredns", "addon/kube-proxy"} <= set(patches[0]["skipPhases"])
    assert patches[1]["etcd"]["local"]["imageTag"] == "3.5.16-0"


def test_network_script_routes_to_the_other_nodes_and_dnats_the_api_service():
    nodes = {
        "e2e-control-plane": ("172.18.0.2", "10.244.0.0/24"),
        "e2e-worker": ("172.18.0.3", "10.244.1.0/24"),
        "e2e-worker2": ("172.18.0.4", "10.244.2.0/24"),
    }
    script = cluster.network_script("e2e-worker", nodes, "172.18.0.2")
    assert "ip route replace 10.244.0.0/24 via 172.18.0.2" in script
    assert "ip route replace 10.244.2.0/24 via 172.18.0.4" in script
    assert "10.244.1.0/24 via" not in script  # not to itself
    assert script.count("--to-destination 172.18.0.2:6443") == 4  # check-or-add, PREROUTING and OUTPUT
    conf = json.loads(script.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0])
    assert conf["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]


def test_inputs_hash_follows_content(tmp_path):
    f = tmp_path / "a"
    f.write_text("1")
    h1 = cache.hash_inputs("x", f)
    assert cache.hash_inputs("x", f) == h1
    f.write_text("2")
    assert cache.hash_inputs("x", f) != h1
    assert cache.hash_inputs("y", f) != cache.hash_inputs("x", f)
    d = tmp_path / "pkg"
    (d / "__pycache__").mkdir(parents=True)
    (d / "m.py").write_text("x = 1")
    h2 = cache.hash_inputs(d)
    (d / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    assert cache.hash_inputs(d) == h2  # byte code is not an input


def test_python_images_are_built_from_their_own_packages():
    assert images.OPERATOR.distribution == "aicenter-operator"
    assert images.DEVICEPLUGIN.distribution == "aicenter-deviceplugin"
    assert images.OPERATOR.sources == ("pyproject.toml", "README.md", "LICENSE", "operator")
    assert {"aicenter_testbed", "aicenter_deviceplugin"} <= set(images.OPERATOR.forbidden)
    assert {"aicenter", "aicenter_testbed"} <= set(images.DEVICEPLUGIN.forbidden)
    # the device plugin's image changes with its package and the base, not with the operator
    a = images.DEVICEPLUGIN.inputs("base-1")
    assert a == images.DEVICEPLUGIN.inputs("base-1") != images.DEVICEPLUGIN.inputs("base-2")
    assert a != images.OPERATOR.inputs("base-1")


def test_deviceplugin_manifest_runs_the_plugin_image():
    docs = [d for d in yaml.safe_load_all((HACK_KIND / "deviceplugin.yaml").read_text()) if d]
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    container = ds["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == images.DEVICEPLUGIN_IMAGE
    assert container["command"] == list(images.DEVICEPLUGIN.entrypoint)


def test_report_counts(tmp_path):
    assert e2e.fmt_counts({"tests": 7, "failures": 1, "errors": 0, "skipped": 2}) == (
        "4 passed, 1 failed, 2 skipped"
    )
    assert e2e.fmt_counts({}) == "no test report"
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest" tests="7" failures="0" errors="1" skipped="0"/></testsuites>'
    )
    assert e2e.junit_counts(junit) == {"tests": 7, "failures": 0, "errors": 1, "skipped": 0}
    assert e2e.junit_counts(tmp_path / "missing.xml") == {}
