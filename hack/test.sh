#!/usr/bin/env bash
# The test command (README, CI): installs the real parts the tests need, then runs every test.
# Idempotent; everything is cached under the user cache dir, so a second run only tests.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
bash hack/install-deps.sh
log "real parts: kube-apiserver + etcd $KUBERNETES_VERSION, OpenBao $OPENBAO_VERSIONS, Gateway API $GATEWAY_API_VERSION"
OPENBAO_OPERATOR_K8S_BIN="$(bash hack/build-kubernetes.sh apiserver)"
export OPENBAO_OPERATOR_K8S_BIN
bash hack/fetch-openbao.sh >/dev/null
bash hack/fetch-gateway-api-crds.sh >/dev/null
# The real S3 server of the backup tests and the lane: cached RustFS when built, else s3s-fs
# (prints which). Chosen once for the whole run, so that a RustFS build finishing in the
# background (`hack/build-rustfs.sh --idle`) cannot switch stores between one test and the next.
s3_server="$(bash hack/build-s3-server.sh)"
log "S3 server for the backup tests and the lane: $s3_server"
export S3_SERVER="${s3_server%% *}"
if [[ "$S3_SERVER" == s3s-fs ]]; then export LANE_STORE=s3s-fs; fi
# cert-manager (our main over its Go module) and its CRDs, for the External TLS tests.
bash hack/build-cert-manager.sh >/dev/null
# Node-mode tests share one real single-node cluster; start it unless one is already up, and
# stop it afterwards only if this run started it.
if ! cargo run -q -p testkit --bin hermetic-k8s -- node-status >/dev/null 2>&1; then
  bash hack/cluster.sh cluster-up >/dev/null
  trap 'bash hack/cluster.sh down >/dev/null 2>&1 || true' EXIT
fi
# With arguments (a filter, --test X): plain `cargo test`. Without: every test binary in three lanes,
# the node tests at most two at a time and the lane tests alone on the node
# (crates/testkit/src/bin/test-lanes.rs).
# TEST_LANES_ONLY (e.g. `node_`, or several names separated by spaces): only the binaries whose name
# holds one of them, and no doc tests.
if (( $# > 0 )); then
  cargo test --workspace --no-fail-fast "$@"
elif [[ -n "${TEST_LANES_ONLY:-}" ]]; then
  # shellcheck disable=SC2086 # one argument per name
  cargo run -q -p testkit --bin test-lanes -- $TEST_LANES_ONLY
else
  cargo run -q -p testkit --bin test-lanes
  # Doc tests are not test binaries; run them the usual way.
  cargo test -q --workspace --doc
fi
