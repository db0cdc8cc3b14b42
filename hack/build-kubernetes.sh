#!/usr/bin/env bash
# Builds the real Kubernetes components our tests run, from published Go modules, into the
# user cache. Idempotent: a second run with the same versions only checks stamps.
#   hack/build-kubernetes.sh apiserver   etcd + kube-apiserver + kubectl (apiserver mode)
#   hack/build-kubernetes.sh node        + controller-manager, scheduler, kubelet, kube-proxy,
#                                          CoreDNS, local-path-provisioner
# Prints the bin directory on stdout.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
mode="${1:-apiserver}"
BIN="$CACHE_ROOT/kubernetes/$KUBERNETES_VERSION/bin"
WORK="$CACHE_ROOT/kubernetes/$KUBERNETES_VERSION/build"
mkdir -p "$BIN" "$WORK"
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0

# k8s.io/kubernetes points its staging modules at ./staging; a consumer must pin each one to
# the published v0.x tag instead. Derive that list from the module's own go.mod.
k8s_wrapper_module() {
  local dir="$WORK/k8s" minor="v0${KUBERNETES_VERSION#v1}"
  mkdir -p "$dir"
  local gomod
  gomod="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    echo "module openbao-operator.local/k8s-build"
    echo "go 1.24.0"
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    grep -oE 'k8s.io/[a-z0-9-]+ => \./staging/src/k8s.io/[a-z0-9-]+' "$gomod" \
      | awk -v v="$minor" '{print "replace " $1 " => " $1 " " v}'
  } > "$dir/go.mod"
  echo "$dir"
}

k8s_ldflags() {
  local v="$KUBERNETES_VERSION" major minor
  major="$(echo "${v#v}" | cut -d. -f1)"; minor="$(echo "${v#v}" | cut -d. -f2)"
  local f=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    f+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "-s -w$f"
}

build_k8s() {
  local dir; dir="$(k8s_wrapper_module)"
  local cmds=("$@") pkgs=()
  for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  log "building ${cmds[*]} $KUBERNETES_VERSION (cold: several minutes per binary on 2 cores)"
  (cd "$dir" && go build -trimpath -ldflags "$(k8s_ldflags)" -o "$BIN/" "${pkgs[@]}")
}

# A wrapper module for projects whose go.mod uses local replace lines (go install pkg@v refuses them).
build_go_main() {
  local name="$1" module="$2" version="$3" pkg="$4" ldflags="${5:-}"
  local dir="$WORK/$name"
  mkdir -p "$dir"
  printf 'module openbao-operator.local/%s-build\ngo 1.24.0\nrequire %s %s\n' "$name" "$module" "$version" > "$dir/go.mod"
  log "building $name $version"
  (cd "$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$BIN/$name" "$pkg")
}

build_etcd() {
  # etcd's server module replaces its sibling modules locally; pin them to the same tag.
  local dir="$WORK/etcd"; mkdir -p "$dir"
  {
    echo "module openbao-operator.local/etcd-build"
    echo "go 1.24.0"
    echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    for m in api/v3 client/pkg/v3 client/v3 pkg/v3 server/v3; do
      echo "replace go.etcd.io/etcd/$m => go.etcd.io/etcd/$m $ETCD_VERSION"
    done
  } > "$dir/go.mod"
  log "building etcd $ETCD_VERSION"
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
}

stamped "$BIN/.etcd" "$ETCD_VERSION" build_etcd
stamped "$BIN/.apiserver" "$KUBERNETES_VERSION" build_k8s kube-apiserver
stamped "$BIN/.kubectl" "$KUBERNETES_VERSION" build_k8s kubectl
if [[ "$mode" == node ]]; then
  stamped "$BIN/.node" "$KUBERNETES_VERSION" \
    build_k8s kube-controller-manager kube-scheduler kubelet kube-proxy
  stamped "$BIN/.coredns" "$COREDNS_VERSION" \
    build_go_main coredns github.com/coredns/coredns "$COREDNS_VERSION" github.com/coredns/coredns
  stamped "$BIN/.local-path" "$LOCAL_PATH_PROVISIONER_VERSION" \
    build_go_main local-path-provisioner github.com/rancher/local-path-provisioner \
      "$LOCAL_PATH_PROVISIONER_VERSION" github.com/rancher/local-path-provisioner
fi
echo "$BIN"
