#!/usr/bin/env bash
# Assembles the container images the hermetic node runs, from files we have (no Docker, no
# registry), as OCI archives cached under the user cache dir. Same names and tags as the real
# images, so the same manifests work on k3d. `ctr images import` loads them (cluster-up does).
#   hack/images.sh        prints one "NAME ARCHIVE" line per image
# Adding an image: one `image` call below (see hack/oci/build-image.py for the options).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
OUT="$CACHE_ROOT/images"
mkdir -p "$OUT"

BUSYBOX=/bin/busybox
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
[[ -x "$BUSYBOX" ]] && "$BUSYBOX" --list-full >/dev/null 2>&1 \
  || die "$BUSYBOX missing or not busybox: run hack/node/install-deps.sh (Debian busybox-static)"
[[ -s "$CA_BUNDLE" ]] || die "$CA_BUNDLE missing: install Debian ca-certificates"
# The tag of our busybox image is the upstream version Debian packaged (e.g. 1.35.0).
# sed reads the whole banner: `head -1` would SIGPIPE busybox and fail under pipefail.
BUSYBOX_VERSION="$("$BUSYBOX" 2>&1 | sed -n '1s/^BusyBox v\([0-9.]*\).*/\1/p')"
PAUSE_VERSION=3.10.1

image() { nice python3 "$HACK_DIR/oci/build-image.py" --out "$OUT" "$@"; }

# The sandbox process: our own static C program (hack/oci/pause.c).
pause_binary() {
  local src="$HACK_DIR/oci/pause.c" bin="$OUT/pause-bin/pause"
  mkdir -p "$(dirname "$bin")"
  local key; key="$(sha256sum "$src" | cut -d' ' -f1)"
  if [[ ! -x "$bin" || "$(cat "$bin.key" 2>/dev/null)" != "$key" ]]; then
    nice gcc -static -Os -Wall -Wextra -Werror -o "$bin" "$src"
    printf '%s' "$key" > "$bin.key"
  fi
  echo "$bin"
}

K8S_BIN="$(bash "$HACK_DIR/build-kubernetes.sh" node)"

image --name "registry.k8s.io/pause:$PAUSE_VERSION" \
  --file "$(pause_binary):/pause" --entrypoint '["/pause"]' --user 65535:65535

image --name "docker.io/library/busybox:$BUSYBOX_VERSION" --busybox "$BUSYBOX" --cmd '["sh"]'

image --name "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" \
  --file "$K8S_BIN/coredns:/coredns" --cacerts "$CA_BUNDLE" --entrypoint '["/coredns"]'

image --name "docker.io/rancher/local-path-provisioner:$LOCAL_PATH_PROVISIONER_VERSION" \
  --busybox "$BUSYBOX" --file "$K8S_BIN/local-path-provisioner:/usr/bin/local-path-provisioner" \
  --entrypoint '["local-path-provisioner"]'

# OpenBao as the operator runs it: bao in /bin, a shell and coreutils for the entrypoint script,
# the `openbao` user (100:1000) owning /bao (data, rendered config) and /openbao like upstream.
read -r -a bao_versions <<< "$OPENBAO_VERSIONS"
for v in "${bao_versions[@]}"; do
  bao="$(bash "$HACK_DIR/fetch-openbao.sh" "$v" | cut -d' ' -f2)"
  image --name "docker.io/openbao/openbao:$v" --busybox "$BUSYBOX" --cacerts "$CA_BUNDLE" \
    --file "$bao:/bin/bao:0755" \
    --text "etc/passwd:root:x:0:0:root:/root:/bin/sh\nopenbao:x:100:1000:openbao:/bao:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n" \
    --text "etc/group:root:x:0:\nopenbao:x:1000:openbao\nnogroup:x:65534:\n" \
    --dir /bao:0775:100:1000 --dir /bao/data:0775:100:1000 --dir /bao/rendered:0775:100:1000 \
    --dir /openbao/config:0775:100:1000 --dir /openbao/file:0775:100:1000 --dir /openbao/logs:0775:100:1000 \
    --user 100:1000 --workdir /bao --env HOME=/bao \
    --entrypoint '["bao"]' --cmd '["server","-dev","-dev-no-store-token"]'
done
