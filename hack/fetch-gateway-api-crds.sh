#!/usr/bin/env bash
# Copies the standard-channel Gateway API CRDs of the pinned release out of the Go module proxy
# (the module zip is checksummed by sum.golang.org) into the user cache. Idempotent.
#   hack/fetch-gateway-api-crds.sh [version]    prints the directory holding the CRD YAMLs
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
version="${1:-$GATEWAY_API_VERSION}"
DEST="$CACHE_ROOT/gateway-api/$version/standard"

fetch_crds() {
  local module_dir
  # From outside any module, so no go.mod can change what gets resolved.
  module_dir="$(cd / && go mod download -json "sigs.k8s.io/gateway-api@$version" \
    | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  [[ -d "$module_dir/config/crd/standard" ]] || die "no config/crd/standard in sigs.k8s.io/gateway-api@$version"
  log "copying Gateway API $version standard CRDs from $module_dir"
  rm -rf "$DEST" && mkdir -p "$DEST"
  cp "$module_dir"/config/crd/standard/*.yaml "$DEST/"
  # The module cache is read-only; the copies need not be.
  chmod u+w "$DEST"/*.yaml
}

mkdir -p "$(dirname "$DEST")"
stamped "$(dirname "$DEST")/.standard" "$version" fetch_crds
echo "$DEST"
