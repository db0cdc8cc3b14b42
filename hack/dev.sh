#!/usr/bin/env bash
# Runs the operator against the current kubeconfig; with no kubeconfig (or DEV_HERMETIC=1) it
# first starts the hermetic apiserver (.cluster/kubeconfig), installs the CRDs and applies
# deploy/examples/dev-cluster.yaml. Ctrl-C stops the operator; `make cluster-down` the apiserver.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
BIN="$(bash hack/build-kubernetes.sh apiserver)"
KUBECTL="$BIN/kubectl"
if [[ "${DEV_HERMETIC:-}" == 1 || ( -z "${KUBECONFIG:-}" && ! -f "$HOME/.kube/config" ) ]]; then
  bash hack/cluster.sh apiserver-up
  export KUBECONFIG="$REPO_ROOT/.cluster/kubeconfig"
  GW="$(bash hack/fetch-gateway-api-crds.sh)"
  "$KUBECTL" apply --server-side -f "$GW" >/dev/null
  "$KUBECTL" apply --server-side -f deploy/crds.yaml
  "$KUBECTL" wait --for condition=Established crd/openbaoclusters.openbao.org --timeout=60s >/dev/null
  "$KUBECTL" create namespace openbao-operator-system --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
  "$KUBECTL" apply -f deploy/examples/dev-cluster.yaml
  log "hermetic apiserver: export KUBECONFIG=$KUBECONFIG; '$KUBECTL get bao' shows the cluster (no kubelet here: pods do not start)"
fi
exec cargo run -q -p openbao-operator -- run --http-addr 127.0.0.1:8080 "$@"
