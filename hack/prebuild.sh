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
# Two chains side by side: a Go build leaves a core idle in its downloads and its long links
# (one after the other, a cold machine spent 1801 s here, 1060 s of it after the Rust build had
# finished). A failed step fails its chain; both are waited for.
(
  timed bash hack/build-kubernetes.sh node
) &
kubernetes=$!
(
  timed bash hack/build-kube-router.sh
  timed bash hack/build-cert-manager.sh
  timed bash hack/fetch-openbao.sh
  timed bash hack/fetch-gateway-api-crds.sh
  timed bash hack/fetch-traefik.sh
  timed bash hack/fetch-prometheus.sh
  timed bash hack/build-argocd.sh
) &
others=$!
rc=0
wait "$kubernetes" || rc=$?
wait "$others" || rc=$?
exit "$rc"
