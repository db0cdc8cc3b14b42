#!/usr/bin/env bash
# The real parts built from Go modules or fetched from package registries, in one go: what
# `make test` would otherwise build one after another after the Rust build. `.ci/run` starts this
# in the background before clippy, so that on a cold machine these builds overlap the Rust
# compile (cargo leaves a core idle in its long single-crate and link phases, and the module and
# package downloads wait on the network). Each step is a cache hit when done (stamps under the
# user cache dir), so a warm run spends seconds here. No cargo in here: it would wait on the
# build-directory lock clippy holds.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
timed() {
  local t0; t0=$(date +%s)
  "$@" >/dev/null
  log "prebuild: $* ($(( $(date +%s) - t0 )) s)"
}
timed bash hack/node/install-deps.sh
timed bash hack/build-kubernetes.sh node
timed bash hack/build-kube-router.sh
timed bash hack/build-cert-manager.sh
timed bash hack/fetch-openbao.sh
timed bash hack/fetch-gateway-api-crds.sh
timed bash hack/fetch-traefik.sh
timed bash hack/fetch-prometheus.sh
timed bash hack/build-argocd.sh
