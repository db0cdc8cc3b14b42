#!/usr/bin/env bash
# Hermetic Kubernetes for local work, same code as the tests' harness (crates/testkit).
#   hack/cluster.sh apiserver-up      etcd + kube-apiserver, kubeconfig at .cluster/kubeconfig
#   hack/cluster.sh down [--keep-logs]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
exec cargo run -q -p testkit --bin hermetic-k8s -- "$@"
