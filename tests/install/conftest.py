"""Fixtures for the install tests.

* ``helm_home`` (session): a directory for helm's cache, config and data.
* ``chart_release`` (module, needs ``cluster``): the chart installed by ``helm install`` into a fresh
  namespace labelled ``pod-security.kubernetes.io/enforce=restricted``; an
  :class:`install_helpers.Release` (``.name``, ``.namespace``, ``.fullname``, ``.service_account``,
  ``.user``, ``.lease_name``, ``.helm(...)``). Uninstalled and its namespace deleted afterwards.
* ``operator_sa_kubeconfig`` (module): a kubeconfig (Path) that authenticates as the release's
  ServiceAccount with a TokenRequest token: run the operator with ``--kubeconfig`` set to it to act
  under the chart's RBAC (``test_install_rbac_operator.py``, the RBAC proof part 2, does so on an audited
  cluster of its own, whose module overrides ``cluster``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from install_helpers import Release, write_sa_kubeconfig

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@pytest.fixture(scope="session")
def helm_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("helm")


@pytest.fixture(scope="module")
def chart_release(cluster, helm_home) -> Iterator[Release]:
    suffix = uuid.uuid4().hex[:6]
    namespace = cluster.create_namespace(f"aic-install-{suffix}", labels=RESTRICTED)
    release = Release(
        name=f"aic-{suffix}", namespace=namespace, home=helm_home, kubeconfig=cluster.kubeconfig
    )
    release.install()
    try:
        yield release
    finally:
        release.uninstall(check=False)
        cluster.delete_namespace(namespace)


@pytest.fixture(scope="module")
def operator_sa_kubeconfig(cluster, chart_release, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sa") / "kubeconfig"
    return write_sa_kubeconfig(cluster, chart_release.namespace, chart_release.service_account, path)
