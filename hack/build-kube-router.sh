#!/usr/bin/env bash
# Builds the pinned kube-router (the hermetic node's NetworkPolicy engine, firewall mode only)
# from its Go module (github.com/cloudnativelabs/kube-router/v2, checksummed by sum.golang.org
# through the Go module proxy) into the user cache. Idempotent: a second run only checks the
# stamp. The build output goes to stderr.
#   hack/build-kube-router.sh [VERSION]   (default: KUBE_ROUTER_VERSION)
# Prints the path of the kube-router binary.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
v="${1:-$KUBE_ROUTER_VERSION}"
DIR="$CACHE_ROOT/kube-router/$v"
build_kube_router() {
  rm -rf "$DIR.tmp"
  log "building kube-router $v from the Go module proxy (a few minutes on 2 cores, once)"
  mkdir -p "$DIR"
  # From outside any module so no go.mod changes the resolution.
  (cd / && GOBIN="$DIR.tmp" CGO_ENABLED=0 GOFLAGS=-buildvcs=false nice go install -trimpath \
    -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$v" \
    "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$v") >&2
  mv "$DIR.tmp/kube-router" "$DIR/kube-router"
  rmdir "$DIR.tmp"
}
mkdir -p "$DIR"
exec 9>"$CACHE_ROOT/kube-router/.build.lock"
flock 9
stamped "$DIR/.built" "$v" build_kube_router
echo "$DIR/kube-router"
