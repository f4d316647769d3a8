#!/usr/bin/env bash
# The kind e2e in one command (python -m aicenter_testbed.kind e2e): build what is missing (docker,
# kind, the node, operator, device plugin and workload images, all offline and cached under
# ~/.cache/aicenter-kind), create a 1+2 node kind cluster, run tests/kind/test_kind_e2e.py against it,
# delete the cluster. The last lines say plainly whether the e2e RAN and PASSED, RAN and FAILED, or
# was SKIPPED and why.
#
#   hack/kind/e2e.sh                 # exit 0 on PASSED or SKIPPED, 1 on FAILED
#   hack/kind/e2e.sh --require       # SKIPPED exits 1 too
#   hack/kind/e2e.sh --keep          # keep the cluster (kubeconfig: ~/.cache/aicenter-kind/kubeconfig-aicenter-e2e)
#   hack/kind/e2e.sh -- -k gang      # extra pytest arguments after --
#
# See docs/kind.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

# the venv with the operator, the test bed (aicenter_testbed.kind builds everything) and the device
# plugin, and the pinned Kubernetes binaries; cheap when already done (hack/test.sh did it)
# shellcheck source=../lib/venv.sh
source hack/lib/venv.sh
exec "$VENV/bin/python" -m aicenter_testbed.kind e2e "$@"
