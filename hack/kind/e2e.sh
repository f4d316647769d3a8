#!/usr/bin/env bash
# The kind e2e in one command: build what is missing (docker, kind, node/operator/workload images,
# all offline and cached under ~/.cache/aicenter-kind), create a 1+2 node kind cluster, run
# tests/kind/test_kind_e2e.py against it, delete the cluster. The last lines say plainly whether the
# e2e RAN and PASSED, RAN and FAILED, or was SKIPPED and why.
#
#   hack/kind/e2e.sh                 # exit 0 on PASSED or SKIPPED, 1 on FAILED
#   hack/kind/e2e.sh --require       # SKIPPED exits 1 too
#   hack/kind/e2e.sh --keep          # keep the cluster (kubeconfig: ~/.cache/aicenter-kind/kubeconfig-aicenter-e2e)
#   hack/kind/e2e.sh -- -k gang      # extra pytest arguments after --
#
# See docs/kind.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=.venv
if ! "$VENV/bin/python" -c 'import aicenter, kubernetes, pytest' >/dev/null 2>&1; then
    echo "== creating $VENV with the project's dev dependencies"
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q -e '.[dev]'
fi
# the device plugin's gRPC dependencies (its unit tests; the operator image installs them itself)
if ! "$VENV/bin/python" -c 'import grpc, google.protobuf' >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install -q -r hack/kind/requirements-deviceplugin.txt
fi
exec "$VENV/bin/python" hack/kind/kindenv.py e2e "$@"
