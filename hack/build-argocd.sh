#!/usr/bin/env bash
# Builds the pinned Argo CD for the hermetic node into the user cache, from published sources only:
#  - bin/argocd: the multi-call binary (it dispatches on argv[0]'s basename, or on the env var
#    ARGOCD_BINARY_NAME: argocd-server, argocd-repo-server, argocd-application-controller, ...),
#    with bin/argocd-* links to it like upstream's image,
#    built from the Go module github.com/argoproj/argo-cd/v3 (checksummed by sum.golang.org through
#    the Go module proxy). `go install ...@version` refuses that module (its go.mod has
#    `replace .../gitops-engine/v3 => ./gitops-engine`, a nested module the zip leaves out), so the
#    build runs in a writable copy of the module with the proxy's gitops-engine/v3 of the same tag
#    placed at ./gitops-engine, under the module's own go.mod/go.sum.
#  - crds/: the module's manifests/crds/*.yaml (Application, ApplicationSet, AppProject).
#  - debian/redis and debian/git: Debian's redis-server and git, unpacked (`apt-get download` +
#    `dpkg-deb -x`, nothing installed on the machine), with the libraries they load that the
#    machine lacks; hack/images.sh takes the rest of their libraries from the machine with ldd.
# No web UI: argocd-server embeds ui/dist/app at build time (//go:embed, index.html read from the
# embedded files only, --staticassets cannot supply it), the module ships that directory empty
# (two .gitkeep files), and the UI's sources need argo-ui from a GitHub tarball this machine
# cannot reach (no npm release of argo-ui has the v2/ components the UI imports). A browser at /
# gets HTTP 500 "open dist/app/index.html: file does not exist"; the API, gRPC-web and the
# `argocd` CLI work.
# Idempotent: each part has its own stamp; a second run only checks them. Output goes to stderr.
#   hack/build-argocd.sh [VERSION]   (default: ARGOCD_VERSION)
# Prints the cache directory (bin/argocd, crds/, debian/redis/root, debian/git/root); hack/images.sh
# turns it into quay.io/argoproj/argocd:$ARGOCD_VERSION and docker.io/library/redis:$ARGOCD_REDIS_VERSION.
# Cold: about 5 min on 2 cores (Go module downloads and compile); warm (all stamps): about 1 s.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
v="${1:-$ARGOCD_VERSION}"
DIR="$CACHE_ROOT/argocd/$v"
MODULE=github.com/argoproj/argo-cd/v3
SERVICE_NAMES="argocd-server argocd-repo-server argocd-application-controller argocd-cmp-server argocd-dex
  argocd-notifications argocd-applicationset-controller argocd-k8s-auth argocd-commit-server"
# The module's go.mod says `go 1.27.0`; only this build takes the newer approved toolchain.
export GOTOOLCHAIN="$ARGOCD_GOTOOLCHAIN"

# Prints the module cache directory of module $1 at version $2 (downloading it once).
module_dir() {
  local json dir
  json="$(cd / && go mod download -json "$1@$2")" || die "go mod download $1@$2 failed: $json"
  dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<< "$json")"
  [[ -d "$dir" ]] || die "go mod download $1@$2 gave no directory: $json"
  echo "$dir"
}

build_argocd() {
  local mod engine src k8s built
  rm -rf "$DIR.tmp"
  mkdir -p "$DIR.tmp/bin" "$DIR.tmp/crds"
  log "building argocd $v from the Go module proxy with $GOTOOLCHAIN (≈ 5 min on 2 cores, once)"
  mod="$(module_dir "$MODULE" "$v")"
  engine="$(module_dir github.com/argoproj/argo-cd/gitops-engine/v3 "$v")"
  grep -q '^replace github.com/argoproj/argo-cd/gitops-engine/v3 => ./gitops-engine$' "$mod/go.mod" \
    || die "the $MODULE@$v go.mod no longer replaces gitops-engine with ./gitops-engine: revisit this script"
  # A writable copy without docs/ (192 MB of Markdown and images no package embeds).
  src="$DIR.tmp/src"
  mkdir -p "$src"
  tar -C "$mod" --exclude=./docs -cf - . | tar -C "$src" -xf -
  cp -r "$engine" "$src/gitops-engine"
  chmod -R u+w "$src" # the module cache is read-only
  k8s="$(sed -n 's/^[[:space:]]*k8s.io\/client-go \(v[^ ]*\).*/\1/p' "$mod/go.mod" | head -1)"
  built="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$(go env GOMODCACHE)/cache/download/$MODULE/@v/$v.info")"
  # ldflags like upstream's Makefile (common.version is the VERSION file, without the v); no git
  # commit is known from a module zip, so `argocd version` says v<version>+unknown.
  (cd "$src" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly" nice go build -trimpath \
    -ldflags "-s -w -X $MODULE/common.version=${v#v} -X $MODULE/common.gitTag=$v \
      -X $MODULE/common.buildDate=${built:-1970-01-01T00:00:00Z} -X $MODULE/common.kubectlVersion=$k8s" \
    -o "$DIR.tmp/bin/argocd" ./cmd) >&2 || die "go build of $MODULE@$v failed"
  # The names the binary answers to, as in upstream's image (/usr/local/bin/argocd-* -> argocd).
  for name in $SERVICE_NAMES; do ln -s argocd "$DIR.tmp/bin/$name"; done
  [[ -d "$mod/manifests/crds" ]] || die "no manifests/crds in the $MODULE module at '$mod'"
  cp "$mod"/manifests/crds/*-crd.yaml "$DIR.tmp/crds/"
  chmod 0644 "$DIR.tmp"/crds/*.yaml
  rm -rf "$DIR/bin" "$DIR/crds" "$DIR/.verify-wrapper"
  mv "$DIR.tmp/bin" "$DIR.tmp/crds" "$DIR/"
  rm -rf "$DIR.tmp"
}

# The repo server runs the module's hack/git-verify-wrapper.sh (on PATH) for every revision it
# renders, whatever ARGOCD_GPG_ENABLED says; upstream's image installs it beside the binary.
copy_verify_wrapper() {
  local mod; mod="$(module_dir "$MODULE" "$v")"
  install -m 0755 "$mod/hack/git-verify-wrapper.sh" "$DIR/bin/git-verify-wrapper.sh"
}

# Unpacks Debian packages $2... into $1/root (nothing installed on the machine), without docs.
unpack_debs() {
  local dest="$1" tmp deb; shift
  tmp="$(mktemp -d)"
  # _apt cannot write to a private temp dir; apt then downloads as the calling user (warning only).
  if ! (cd "$tmp" && apt-get download -qq "$@" 2>/dev/null); then
    local SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq
    (cd "$tmp" && apt-get download -qq "$@" 2>/dev/null) || { rm -rf "$tmp"; die "apt-get download $* failed"; }
  fi
  mkdir -p "$tmp/root"
  for deb in "$tmp"/*.deb; do
    dpkg-deb -x "$deb" "$tmp/root"
    printf '%s %s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" >> "$tmp/root/DEBIAN-VERSIONS"
  done
  rm -rf "$tmp/root/usr/share/doc" "$tmp/root/usr/share/man" "$tmp/root/usr/share/bash-completion" \
    "$tmp/root/usr/share/lintian" "$tmp/root/etc/init.d" "$tmp/root/etc/logrotate.d" "$tmp/root/lib/systemd" \
    "$tmp/root/etc/bash_completion.d" "$tmp/root/etc/default"
  rm -f "$tmp"/*.deb
  rm -rf "$dest"
  mkdir -p "$(dirname "$dest")"
  mv "$tmp" "$dest"
}

# Redis: the server is redis-check-rdb under the name redis-server (Debian's symlink); the
# libraries Debian adds that a machine seldom has (jemalloc, lzf, atomic) come along, the rest
# (glibc, libssl3, libsystemd0) hack/images.sh takes from the machine with ldd.
fetch_redis() {
  local deb_version upstream
  log "fetching Debian's redis-server $ARGOCD_REDIS_VERSION (apt-get download + dpkg-deb -x)"
  unpack_debs "$DIR/debian/redis" redis-server redis-tools libjemalloc2 liblzf1 libatomic1
  deb_version="$(sed -n 's/^redis-server //p' "$DIR/debian/redis/root/DEBIAN-VERSIONS")"
  upstream="${deb_version#*:}"; upstream="${upstream%%-*}"
  [[ "$upstream" == "$ARGOCD_REDIS_VERSION" ]] \
    || die "Debian's redis-server is $deb_version, not upstream $ARGOCD_REDIS_VERSION: update ARGOCD_REDIS_VERSION in hack/versions.env"
  rm -f "$DIR/debian/redis/root/usr/bin/redis-benchmark" "$DIR/debian/redis/root/usr/bin/redis-check-aof"
  [[ -x "$DIR/debian/redis/root/usr/bin/redis-check-rdb" && -L "$DIR/debian/redis/root/usr/bin/redis-server" ]] \
    || die "Debian's redis packages no longer ship usr/bin/redis-check-rdb + the redis-server link: revisit fetch_redis"
}

# git for the repo server, which shells out to it (clone, fetch, ls-remote, submodule): Debian's
# git without its Perl/Tk/web/mail extras; its libraries (libcurl3-gnutls, libpcre2, zlib, expat, ...)
# are the machine's own git's, which hack/images.sh takes with ldd.
fetch_git() {
  local core
  log "fetching Debian's git (apt-get download + dpkg-deb -x)"
  unpack_debs "$DIR/debian/git" git
  core="$DIR/debian/git/root/usr/lib/git-core"
  rm -rf "$core/mergetools" "$DIR/debian/git/root/usr/share/git-core/contrib" "$DIR/debian/git/root/usr/bin/scalar" \
    "$DIR/debian/git/root/usr/bin/git-shell" "$DIR/debian/git/root/usr/share/perl5" "$DIR/debian/git/root/usr/share/gitweb" \
    "$DIR/debian/git/root/usr/share/gitk" "$DIR/debian/git/root/usr/share/git-gui" "$DIR/debian/git/root/usr/share/locale"
  # Kept beyond what the repo server runs: git-daemon and git-http-backend (behind busybox httpd's
  # CGI), so the same image can serve the lane's Git repository inside the cluster.
  rm -f "$core"/{git-instaweb,git-web--browse,git-http-push,git-imap-send,git-shell,scalar,git-add--interactive,git-archimport,git-cvs*,git-svn,git-send-email,git-p4}
  # No dangling links: remove the links whose targets went away (the builtins all point at git).
  find "$DIR/debian/git/root" -xtype l -delete
  [[ -x "$DIR/debian/git/root/usr/bin/git" && -e "$core/git-remote-https" ]] \
    || die "Debian's git no longer ships usr/bin/git and git-core/git-remote-https: revisit fetch_git"
}

mkdir -p "$DIR"
# Parallel callers: one builds, the others wait for it.
exec 9>"$CACHE_ROOT/argocd/.build.lock"
flock 9
stamped "$DIR/.built" "$v $GOTOOLCHAIN" build_argocd
stamped "$DIR/.verify-wrapper" "hack/git-verify-wrapper.sh of $v" copy_verify_wrapper
stamped "$DIR/.redis" "redis $ARGOCD_REDIS_VERSION" fetch_redis
stamped "$DIR/.git" "git with daemon and http-backend" fetch_git
echo "$DIR"
