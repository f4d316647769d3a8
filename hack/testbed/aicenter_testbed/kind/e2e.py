"""The kind e2e: build what is missing, create the cluster, run tests/kind, delete it; say what ran.

The last lines are the verdict ``KIND E2E RAN and PASSED|RAN and FAILED|SKIPPED|FAILED before the
tests: …`` (hack/test.sh repeats it) and ``kind-e2e: N passed, N failed, N skipped``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from aicenter_testbed import tools as tb
from aicenter_testbed.kind import REPO
from aicenter_testbed.kind.cache import cache_root
from aicenter_testbed.kind.cluster import CLUSTER_NAME, create_cluster, delete_cluster, load_images
from aicenter_testbed.kind.docker import check_privileged, ensure_docker
from aicenter_testbed.kind.images import (
    DEVICEPLUGIN_IMAGE,
    OPERATOR_IMAGE,
    WORKLOAD_IMAGE,
    ensure_images,
    image_sizes,
)
from aicenter_testbed.kind.kindtool import ensure_kind
from aicenter_testbed.kind.node import ensure_node_image
from aicenter_testbed.kind.shell import Skip, run

E2E_TESTS = "tests/kind/test_kind_e2e.py"


def e2e(pytest_args: list[str], keep: bool = False, require: bool = False) -> int:
    """Run the kind e2e end to end and print its verdict; returns the exit status (0 or 1)."""
    t_start = time.monotonic()
    timings: dict[str, float] = {}
    verdict, detail, rc = "SKIPPED", "", 0
    counts_line, sizes = "", {}
    created = False
    try:
        if not shutil.which("go"):
            raise Skip("no Go toolchain: kind and the Kubernetes binaries are built from the Go module proxy")
        t0 = time.monotonic()
        ensure_docker(probe_image=WORKLOAD_IMAGE)
        timings["docker"] = time.monotonic() - t0
        t0 = time.monotonic()
        ensure_kind()
        node_image = ensure_node_image()
        images = ensure_images()
        check_privileged(WORKLOAD_IMAGE)
        sizes = image_sizes([node_image, *images])
        timings["images"] = time.monotonic() - t0
        t0 = time.monotonic()
        created = True
        kubeconfig = create_cluster()
        timings["cluster create"] = time.monotonic() - t0
        t0 = time.monotonic()
        load_images(images)
        timings["image load"] = time.monotonic() - t0
        t0 = time.monotonic()
        env = {
            **os.environ,
            "AICENTER_KIND_KUBECONFIG": str(kubeconfig),
            "AICENTER_KIND_CLUSTER": CLUSTER_NAME,
            "AICENTER_KIND_OPERATOR_IMAGE": OPERATOR_IMAGE,
            "AICENTER_KIND_DEVICEPLUGIN_IMAGE": DEVICEPLUGIN_IMAGE,
            "AICENTER_KIND_WORKLOAD_IMAGE": WORKLOAD_IMAGE,
            "AICENTER_KIND_HELM": str(tb.HELM.path("helm")),
            "AICENTER_KIND_KUBECTL": str(tb.KUBERNETES.path("kubectl")),
        }
        junit = cache_root() / "e2e-junit.xml"
        junit.unlink(missing_ok=True)
        p = run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-m",
                "kind",
                "-p",
                "no:cacheprovider",
                f"--junitxml={junit}",
                E2E_TESTS,
                *pytest_args,
            ],
            check=False,
            cwd=REPO,
            env=env,
        )
        timings["e2e tests"] = time.monotonic() - t0
        counts = junit_counts(junit)
        counts_line = fmt_counts(counts) if counts else ""
        if p.returncode == 0 and counts.get("tests", 0) > counts.get("skipped", 0):
            verdict, detail = "RAN and PASSED", fmt_counts(counts)
        elif p.returncode == 0:
            verdict, detail, rc = "SKIPPED", "every kind test skipped itself: " + fmt_counts(counts), 0
        else:
            verdict, detail, rc = "RAN and FAILED", f"pytest exit {p.returncode}: {fmt_counts(counts)}", 1
    except Skip as e:
        verdict, detail, rc = "SKIPPED", str(e), (1 if require else 0)
    except Exception as e:  # a build or cluster step broke: that is a failure, not a skip
        verdict, detail, rc = "FAILED before the tests", f"{type(e).__name__}: {e}", 1
    finally:
        if created and not keep:
            t0 = time.monotonic()
            delete_cluster()
            timings["cluster delete"] = time.monotonic() - t0
    total = time.monotonic() - t_start
    print("\n" + "=" * 78)
    print("steps: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + f"; total {total:.0f}s")
    if sizes:
        print("images: " + ", ".join(f"{k} {v} MiB" for k, v in sizes.items()))
    print(f"KIND E2E {verdict}: {detail}")
    print("=" * 78)
    if counts_line:  # the plain closing line test-log readers look for
        print(f"kind-e2e: {counts_line}")
    sys.stdout.flush()
    return rc


def junit_counts(path: Path) -> dict[str, int]:
    if not path.is_file():
        return {}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def fmt_counts(c: dict[str, int]) -> str:
    if not c:
        return "no test report"
    passed = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
    return f"{passed} passed, {c['failures'] + c['errors']} failed, {c['skipped']} skipped"
