"""Shared fixtures: the real Kubernetes test bed and a deadline-bound wait helper.

Fixtures for tests marked ``@pytest.mark.cluster``:

* ``cluster`` (session): a :class:`aicenter_testbed.cluster.ClusterClient` for a running control
  plane: ``.kubeconfig`` (Path), ``.api_client()`` (new ``kubernetes.client.ApiClient``), ``.api``
  (a shared one), ``.core_v1()``, ``.request(method, path, body=None, content_type=...)`` →
  ``(status, json)``, ``.kubectl(*args, input=None, check=True)`` → CompletedProcess,
  ``.version()``, ``.create_namespace(name)`` (waits for its default ServiceAccount),
  ``.delete_namespace(name)``. Started once per session (etcd, kube-apiserver,
  kube-controller-manager, kube-scheduler, kwok) in a temporary directory and stopped at the end,
  unless ``AICENTER_KUBECONFIG`` names a running cluster, which is then used as it is.
  ``AICENTER_TESTBED_KEEP=1`` keeps the data directory (logs, certificates) after the session.
* ``sim_fleet`` (session): the ``korea-national-fleet`` preset at scale 0.001 (40 nodes, 5 centres)
  created as kwok nodes and Ready; yields the list of :class:`aicenter_testbed.fleet.NodeSpec`.
* ``namespace`` (function): a fresh namespace (ServiceAccount ready), deleted afterwards.
* ``wait_for`` (also importable from ``aicenter_testbed.waiting``): ``wait_for(predicate,
  timeout, what)`` polls until ``predicate()`` is truthy and returns it, or fails naming ``what``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aicenter_testbed.waiting import WaitTimeout, wait_for  # re-exported for tests

__all__ = ["WaitTimeout", "wait_for"]

SIM_FLEET_SCALE = 0.001


@pytest.fixture(scope="session")
def cluster() -> Iterator[object]:
    from aicenter_testbed.cluster import ClusterClient, LocalCluster, wait_apiserver

    reuse = os.environ.get("AICENTER_KUBECONFIG")
    if reuse:
        client = ClusterClient(Path(reuse))
        wait_apiserver(client, timeout=60)
        yield client
        client.close()
        return
    keep = os.environ.get("AICENTER_TESTBED_KEEP", "") not in ("", "0")
    local = LocalCluster(keep_data=keep)
    client = local.start()
    try:
        yield client
    finally:
        local.stop()


@pytest.fixture(scope="session")
def sim_fleet(cluster) -> list:
    from aicenter_testbed.fleet import iter_nodes, load_fleet, scale_fleet
    from aicenter_testbed.sim.nodes import create_nodes, fleet_manifests, wait_nodes_ready

    fleet = scale_fleet(load_fleet(), SIM_FLEET_SCALE)
    manifests = fleet_manifests(fleet)
    res = create_nodes(cluster, manifests)
    assert res.ok, res.failed
    wait_nodes_ready(cluster, [m["metadata"]["name"] for m in manifests], timeout=180)
    return list(iter_nodes(fleet))


@pytest.fixture
def namespace(cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.create_namespace(name)
    yield name
    cluster.delete_namespace(name)


@pytest.fixture(name="wait_for")
def wait_for_fixture():
    return wait_for
