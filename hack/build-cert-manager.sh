#!/usr/bin/env bash
# Builds the pinned cert-manager controller from its Go module (github.com/cert-manager/cert-manager,
# checksummed by sum.golang.org through the Go module proxy) with OUR main in hack/cert-manager/
# (the proxy does not serve upstream's cmd/controller module; see versions.env), and copies the
# module's CRDs (deploy/crds/*.yaml) next to the binary. Idempotent: the stamp records the version
# and a hash of main.go/go.mod/go.sum, so editing our main rebuilds and an unchanged one only
# checks the stamp. The build output goes to stderr.
#   hack/build-cert-manager.sh
# Prints the path of the cert-manager binary; the CRDs are in <its directory>/crds/.
# Another version: set CERT_MANAGER_VERSION in versions.env and move our go.mod to it
# (cd hack/cert-manager && go get github.com/cert-manager/cert-manager@<v> && go mod tidy).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
v="$CERT_MANAGER_VERSION"
SRC="$HACK_DIR/cert-manager"
DIR="$CACHE_ROOT/cert-manager/$v"
required="$(sed -n 's|^[[:space:]]*github.com/cert-manager/cert-manager \(v[^ ]*\).*|\1|p;s|^require github.com/cert-manager/cert-manager \(v[^ ]*\).*|\1|p' "$SRC/go.mod")"
[[ "$required" == "$v" ]] || die "hack/cert-manager/go.mod requires cert-manager '$required' but versions.env pins $v"
src_hash="$(cat "$SRC/main.go" "$SRC/go.mod" "$SRC/go.sum" | sha256sum | cut -c1-16)"
build_cert_manager() {
  local mod
  rm -rf "$DIR.tmp"
  mkdir -p "$DIR.tmp/crds"
  log "building cert-manager $v (our main, hack/cert-manager) from the Go module proxy (≈ 5 min on 2 cores, once)"
  (cd "$SRC" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false nice go build -trimpath -ldflags "-s -w" \
    -o "$DIR.tmp/cert-manager" .) >&2
  mod="$(cd "$SRC" && go mod download -json "github.com/cert-manager/cert-manager@$v" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$mod/deploy/crds" ]] || die "no deploy/crds in the cert-manager module at '$mod'"
  cp "$mod"/deploy/crds/*.yaml "$DIR.tmp/crds/"
  chmod 0644 "$DIR.tmp"/crds/*.yaml # the module cache is read-only
  rm -rf "$DIR/cert-manager" "$DIR/crds"
  mv "$DIR.tmp/cert-manager" "$DIR.tmp/crds" "$DIR/"
  rm -rf "$DIR.tmp"
}
mkdir -p "$DIR"
# Parallel test binaries may ask at once: one builds, the others wait for it.
exec 9>"$CACHE_ROOT/cert-manager/.build.lock"
flock 9
stamped "$DIR/.built" "$v main $src_hash" build_cert_manager
echo "$DIR/cert-manager"
