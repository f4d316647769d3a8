#!/usr/bin/env bash
# The main job on an embedded default: a local control plane with a simulated slice of the national
# GPU fleet, the CRDs and the fleet's centres and quotas, the operator, and the example jobs.
#
#   hack/demo.sh [--scale 0.001]     # 0.001 ≈ 40 nodes / 252 GPUs; 0.025 ≈ 1,030 nodes
#   hack/demo.sh down                # stop the operator and the cluster
#
# It leaves everything running and prints how to look at it.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=.testbed
if [ "${1:-}" = "down" ]; then
    [ -x .venv/bin/python ] && .venv/bin/python -m aicenter_testbed.operator stop --dir "$DIR"
    exec .venv/bin/aicenter-testbed down --dir "$DIR"
fi
SCALE=0.001
[ "${1:-}" = "--scale" ] && SCALE=$2
source hack/lib/venv.sh
BIN=$(.venv/bin/python -m aicenter_testbed.tools --print-path 2>/dev/null)
export PATH="$BIN:$PATH" KUBECONFIG="$PWD/$DIR/kubeconfig"
echo "== local control plane with a simulated fleet (scale $SCALE)"
.venv/bin/aicenter-testbed up --scale "$SCALE" --dir "$DIR"
echo "== CRDs, the fleet's centres, quotas and tenant namespaces"
kubectl apply --server-side -f manifests/crds/all.yaml >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
.venv/bin/python -m aicenter_testbed.samples --print --scale "$SCALE" --namespaces | kubectl apply --server-side -f - >/dev/null
echo "== the operator (log: $DIR/operator.log)"
.venv/bin/python -m aicenter_testbed.operator start --dir "$DIR" --port 18080
echo "== the example jobs (manifests/samples/jobs/, tolerating the test bed's kwok taint)"
.venv/bin/python -m aicenter_testbed.samples --jobs | kubectl apply -f - >/dev/null
ok=1
kubectl wait --for=jsonpath='{.status.phase}'=Running gpujob/llm-inference -n universities --timeout=90s >/dev/null || ok=0
kubectl wait --for=jsonpath="{.status.phase}" gpujob --all -A --timeout=60s >/dev/null || true
kubectl get aicenters
kubectl get gpuquotas
kubectl get gpujobs -A -o wide
if [ "$ok" -ne 1 ]; then
    echo "demo: gpujob universities/llm-inference is not Running after 90 s (see $DIR/operator.log)" >&2
    exit 1
fi
cat <<MSG

The fleet is up and the operator is scheduling. Try:
  export KUBECONFIG=$KUBECONFIG PATH=$BIN:\$PATH
  kubectl get nodes -L nvidia.com/gpu.product,topology.aicenter.dev/rack
  kubectl describe gpujob -n universities llm-inference
  curl -s http://127.0.0.1:18080/metrics | grep ^aicenter_
  hack/demo.sh down
MSG
