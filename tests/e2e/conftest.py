"""Fixtures for end-to-end tests of the operator on the real control plane.

Each test builds its own small AICenter (its own simulated nodes, racks and cliques) so tests do
not share GPUs; the operator runs as a real process (``aicenter-operator run``) against the
session's control plane.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_kit import OperatorProcess

from aicenter import api

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def crds(cluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "manifests/crds/all.yaml"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd",
        api.CRD_NAME_AICENTERS,
        api.CRD_NAME_GPUQUOTAS,
        api.CRD_NAME_GPUJOBS,
        "--timeout=60s",
    )


@pytest.fixture(scope="module")
def operator(cluster, crds, tmp_path_factory) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = OperatorProcess(cluster.kubeconfig, log, ["--no-leader-election"]).start()
    yield op
    op.stop()
