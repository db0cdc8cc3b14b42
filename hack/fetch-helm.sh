#!/usr/bin/env bash
# Builds the pinned Helm v3 CLI from its Go module (helm.sh/helm/v3, checksummed by
# sum.golang.org through the Go module proxy) into the user cache. Idempotent: a second run only
# checks the stamp. The build output goes to stderr.
#   hack/fetch-helm.sh [VERSION]   (default: HELM_VERSION)
# Prints the path of the helm binary.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
v="${1:-$HELM_VERSION}"
DIR="$CACHE_ROOT/helm/$v"
build_helm() {
  local major k8s_minor
  rm -rf "$DIR.tmp"
  major="$(echo "${v#v}" | cut -d. -f1)"
  # `helm template` renders for, and `helm lint` checks deprecated APIs against, this Kubernetes
  # minor (upstream stamps client-go's); ours is the harness's.
  k8s_minor="$(echo "${KUBERNETES_VERSION#v}" | cut -d. -f2)"
  log "building helm $v from the Go module proxy (a few minutes on 2 cores, once)"
  mkdir -p "$DIR"
  # From outside any module so no go.mod changes the resolution; version stamped like upstream's
  # Makefile does, so `helm version` names the release.
  (cd / && GOBIN="$DIR.tmp" CGO_ENABLED=0 GOFLAGS=-buildvcs=false nice go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$v \
      -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$k8s_minor \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor" \
    "helm.sh/helm/v$major/cmd/helm@$v") >&2
  mv "$DIR.tmp/helm" "$DIR/helm"
  rmdir "$DIR.tmp"
}
mkdir -p "$DIR"
# Parallel test binaries may ask at once: one builds, the others wait for it.
exec 9>"$CACHE_ROOT/helm/.build.lock"
flock 9
stamped "$DIR/.built" "$v kubernetes $KUBERNETES_VERSION" build_helm
echo "$DIR/helm"
