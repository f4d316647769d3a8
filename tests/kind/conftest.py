"""Tests of the kind test bed and the simulated GPU device plugin.

* ``test_deviceplugin_unit.py`` runs anywhere grpcio and protobuf are installed (no kind, no
  cluster): the plugin's gRPC server on a temporary socket against a fake kubelet.
* ``test_kind_e2e.py`` is marked ``kind`` and runs only against the cluster that
  ``hack/kind/e2e.sh`` creates (it sets ``AICENTER_KIND_KUBECONFIG``); elsewhere it is skipped and
  says why.
"""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "kind: needs the kind cluster that hack/kind/e2e.sh creates (AICENTER_KIND_KUBECONFIG)"
    )
