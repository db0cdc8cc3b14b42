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

# The files a dynamically linked binary loads (ldd: its libraries and the loader), as --file
# arguments at the paths ldd names, so the image needs no distribution underneath.
# Prints them on one line; prints nothing for a static binary.
shared_library_args() {
  local bin="$1" listing
  if ! listing="$(ldd "$bin" 2>&1)"; then
    [[ "$listing" == *"not a dynamic executable"* ]] && return 0
    die "ldd $bin failed: $listing"
  fi
  [[ "$listing" != *"not found"* ]] || die "$bin needs libraries this machine lacks: $listing"
  awk '$2 == "=>" && $3 ~ /^\// { printf "--file %s:%s:0755 ", $3, $3 }
       $1 ~ /^\//               { printf "--file %s:%s:0755 ", $1, $1 }' <<< "$listing"
}

# Traefik like the official image: the static release binary, a shell and an entrypoint that
# turns flag-only args (what the Helm chart passes) into `traefik ...`.
traefik="$(bash "$HACK_DIR/fetch-traefik.sh" "$TRAEFIK_VERSION" | cut -d' ' -f2)"
image --name "docker.io/library/traefik:v$TRAEFIK_VERSION" --busybox "$BUSYBOX" --cacerts "$CA_BUNDLE" \
  --file "$traefik:/usr/local/bin/traefik:0755" --file "$HACK_DIR/oci/traefik-entrypoint.sh:/entrypoint.sh:0755" \
  --entrypoint '["/entrypoint.sh"]' --cmd '["traefik"]'

# cert-manager's controller like the official image (/app/cmd/controller/controller, user 1000):
# our main built from its Go module by hack/build-cert-manager.sh (cached; its CRDs sit beside it).
cert_manager="$(bash "$HACK_DIR/build-cert-manager.sh")"
image --name "quay.io/jetstack/cert-manager-controller:$CERT_MANAGER_VERSION" --cacerts "$CA_BUNDLE" \
  --file "$cert_manager:/app/cmd/controller/controller:0755" --user 1000:1000 \
  --entrypoint '["/app/cmd/controller/controller"]'

# Prometheus like the official image (/bin/prometheus, user nobody, data in /prometheus), from
# Debian's build of the same upstream version (hack/fetch-prometheus.sh): the binary with its
# glibc, and /usr/share with the classic web UI and the JavaScript libraries it loads.
read -r prometheus_version prometheus_root <<< "$(bash "$HACK_DIR/fetch-prometheus.sh")"
prometheus_libs="$(shared_library_args "$prometheus_root/usr/bin/prometheus")"
read -r -a prometheus_lib_args <<< "$prometheus_libs"
image --name "docker.io/prom/prometheus:v$prometheus_version" --busybox "$BUSYBOX" --cacerts "$CA_BUNDLE" \
  "${prometheus_lib_args[@]}" --file "$prometheus_root/usr/bin/prometheus:/bin/prometheus:0755" \
  --tree "$prometheus_root/usr/share:/usr/share" \
  --file "$prometheus_root/etc/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:0644" \
  --dir /prometheus:0775:65534:65534 --user 65534:65534 --workdir /prometheus \
  --entrypoint '["/bin/prometheus"]' \
  --cmd '["--config.file=/etc/prometheus/prometheus.yml","--storage.tsdb.path=/prometheus"]'

# RustFS like the official image (binary in /usr/bin, the `rustfs` user 10001 owning /data and
# /logs, the same defaults), from hack/build-rustfs.sh's cached build. That build takes over an
# hour (bench/rustfs-build.md), so nothing here starts it: without it the image is left out of the list.
rustfs="$CACHE_ROOT/rustfs/$RUSTFS_VERSION/bin/rustfs"
if [[ -x "$rustfs" ]]; then
  rustfs_libs="$(shared_library_args "$rustfs")"
  read -r -a rustfs_lib_args <<< "$rustfs_libs"
  image --name "docker.io/rustfs/rustfs:$RUSTFS_VERSION" --busybox "$BUSYBOX" --cacerts "$CA_BUNDLE" \
    "${rustfs_lib_args[@]}" \
    --file "$rustfs:/usr/bin/rustfs:0755" --file "$HACK_DIR/oci/rustfs-entrypoint.sh:/entrypoint.sh:0755" \
    --text "etc/passwd:root:x:0:0:root:/root:/bin/sh\nrustfs:x:10001:10001:rustfs:/home/rustfs:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/bin/false\n" \
    --text "etc/group:root:x:0:\nrustfs:x:10001:\nnogroup:x:65534:\n" \
    --dir /data:0750:10001:10001 --dir /logs:0750:10001:10001 --dir /home/rustfs:0750:10001:10001 \
    --env 'RUSTFS_CONSOLE_CORS_ALLOWED_ORIGINS=*' --env RUSTFS_VOLUMES=/data --env RUSTFS_OBS_LOGGER_LEVEL=warn \
    --env RUSTFS_OBS_LOG_DIRECTORY=/logs --env RUSTFS_OBS_ENVIRONMENT=production \
    --user 10001:10001 --entrypoint '["/entrypoint.sh"]' --cmd '["rustfs"]'
else
  log "images: leaving out docker.io/rustfs/rustfs:$RUSTFS_VERSION: $rustfs is not built yet" \
    "(hack/build-rustfs.sh: 97 CPU-minutes; start it in the background with --idle)"
fi

# s3s-fs, the lane's S3 store until RustFS is cached: hack/build-s3-server.sh's build (a few
# minutes, once), busybox for `kubectl exec`, and the non-root user 10001 owning /data. A local name:
# upstream publishes no image. Left out until that build exists (the lane builds it first).
s3s_fs="$CACHE_ROOT/s3s-fs/$S3S_FS_VERSION/bin/s3s-fs"
if [[ -x "$s3s_fs" ]]; then
  s3s_fs_libs="$(shared_library_args "$s3s_fs")"
  read -r -a s3s_fs_lib_args <<< "$s3s_fs_libs"
  image --name "localhost/openbao-operator/s3s-fs:$S3S_FS_VERSION" --busybox "$BUSYBOX" \
    "${s3s_fs_lib_args[@]}" --file "$s3s_fs:/usr/local/bin/s3s-fs:0755" \
    --text "etc/passwd:root:x:0:0:root:/root:/bin/sh\ns3s:x:10001:10001:s3s:/data:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/bin/false\n" \
    --text "etc/group:root:x:0:\ns3s:x:10001:\nnogroup:x:65534:\n" \
    --dir /data:0750:10001:10001 --user 10001:10001 --workdir /data \
    --entrypoint '["/usr/local/bin/s3s-fs"]' --cmd '["--host","0.0.0.0","--port","9000","/data"]'
else
  log "images: leaving out s3s-fs: $s3s_fs is not built yet (S3_SERVER=s3s-fs hack/build-s3-server.sh)"
fi

# Argo CD for the lane on the hermetic node (deploy/lane/argocd.yaml), only when asked for with
# LANE_ARGOCD=1: every test node imports every listed image at boot, and these two are ~200 MB.
# hack/build-argocd.sh builds its inputs into the cache (≈ 5 min once, then a stamp check).
if [[ "${LANE_ARGOCD:-0}" == 1 ]]; then
  argocd_dir="$(bash "$HACK_DIR/build-argocd.sh")"
  # The libraries of binaries unpacked from Debian packages under root $1: those the packages
  # brought are found there (and come with the tree), the others from the machine (ldd), like
  # shared_library_args. Prints the --file arguments on one line, each library once.
  tree_library_args() {
    local root="$1" bin listing; shift
    for bin in "$@"; do
      listing="$(LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu" ldd "$bin" 2>&1)" \
        || die "ldd $bin failed: $listing"
      [[ "$listing" != *"not found"* ]] || die "$bin needs libraries this machine lacks: $listing"
      awk -v root="$root/" '$2 == "=>" && $3 ~ /^\// && index($3, root) != 1 { print $3 }
                            $1 ~ /^\// { print $1 }' <<< "$listing"
    done | sort -u | awk '{ printf "--file %s:%s:0755 ", $1, $1 }'
  }
  # Like upstream's image: the binary and its argocd-* links in /usr/local/bin, git (the repo
  # server shells out to it; git-submodule is a shell script, hence busybox), CA certificates, the
  # user argocd (999) with its home and /app/config, and no entrypoint (upstream's is tini; the
  # manifests name the program: args [/usr/local/bin/argocd-server] etc.).
  git_root="$argocd_dir/debian/git/root"
  git_libs="$(tree_library_args "$git_root" "$git_root/usr/bin/git" "$git_root/usr/lib/git-core/git-remote-http" \
    "$git_root/usr/lib/git-core/git-http-fetch" "$git_root/usr/lib/git-core/git-sh-i18n--envsubst" \
    "$git_root/usr/lib/git-core/git-daemon" "$git_root/usr/lib/git-core/git-http-backend")"
  read -r -a git_lib_args <<< "$git_libs"
  image --name "quay.io/argoproj/argocd:$ARGOCD_VERSION" --busybox "$BUSYBOX" --cacerts "$CA_BUNDLE" \
    "${git_lib_args[@]}" --tree "$argocd_dir/bin:/usr/local/bin" --tree "$git_root/usr:/usr" \
    --text "etc/passwd:root:x:0:0:root:/root:/bin/sh\nargocd:x:999:999:argocd:/home/argocd:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n" \
    --text "etc/group:root:x:0:\nargocd:x:999:\nnogroup:x:65534:\n" \
    --dir /home/argocd:0775:999:0 --dir /app/config/ssh --dir /app/config/tls --dir /app/config/gpg/source \
    --dir /app/config/gpg/keys:0700:999:999 \
    --user 999:999 --workdir /home/argocd --env USER=argocd --env HOME=/home/argocd \
    --env GRPC_ENABLE_TXT_SERVICE_CONFIG=false --cmd '["argocd"]'
  # Argo CD's cache like the official redis image (user redis 999, /data), from Debian's
  # redis-server (hack/build-argocd.sh): flags as args, as upstream's manifests pass them.
  redis_root="$argocd_dir/debian/redis/root"
  redis_libs="$(tree_library_args "$redis_root" "$redis_root/usr/bin/redis-check-rdb" "$redis_root/usr/bin/redis-cli")"
  read -r -a redis_lib_args <<< "$redis_libs"
  image --name "docker.io/library/redis:$ARGOCD_REDIS_VERSION" "${redis_lib_args[@]}" --tree "$redis_root/usr:/usr" \
    --text "etc/passwd:root:x:0:0:root:/root:/sbin/nologin\nredis:x:999:999:redis:/data:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n" \
    --text "etc/group:root:x:0:\nredis:x:999:\nnogroup:x:65534:\n" \
    --dir /data:0755:999:999 --user 999:999 --workdir /data --entrypoint '["redis-server"]'
fi

# Our operator, built from the workspace: the binary, exactly the glibc libraries ldd lists (and
# the loader), CA certificates, and the non-root user 65532, like distroless/cc. Tests use the
# debug build the test run compiles anyway (a cold release build costs 10-20 min on 2 cores);
# OPERATOR_BUILD_PROFILE=release for the lane or a benchmark.
workspace_version="$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml")"
[[ "${OPERATOR_IMAGE##*:}" == "$workspace_version" ]] \
  || die "OPERATOR_IMAGE ($OPERATOR_IMAGE, hack/versions.env) must be tagged with the workspace version $workspace_version"
target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" == /* ]] || target_dir="$REPO_ROOT/$target_dir"
profile="${OPERATOR_BUILD_PROFILE:-dev}"
profile_dir="$([[ "$profile" == dev ]] && echo debug || echo "$profile")"
# Builds binary $2 of workspace package $1, strips it into the image inputs and prints its path.
workspace_binary() {
  local package="$1" bin="$2"
  (cd "$REPO_ROOT" && nice cargo build --profile "$profile" -p "$package" --bin "$bin") >&2 \
    || die "cargo build --profile $profile -p $package --bin $bin failed"
  mkdir -p "$OUT/$bin-bin"
  local out="$OUT/$bin-bin/$bin" tmp
  # A private temp name: two runs at once (tests in parallel) must not move each other's file.
  tmp="$(mktemp "$out.XXXXXX")"
  strip -o "$tmp" "$target_dir/$profile_dir/$bin" && chmod 0755 "$tmp" && mv "$tmp" "$out"
  echo "$out"
}
operator="$(workspace_binary openbao-operator openbao-operator)"
operator_libs="$(shared_library_args "$operator")"
read -r -a operator_lib_args <<< "$operator_libs"
image --name "$OPERATOR_IMAGE" --cacerts "$CA_BUNDLE" "${operator_lib_args[@]}" \
  --file "$operator:/usr/local/bin/openbao-operator:0755" \
  --text "etc/passwd:root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n" \
  --text "etc/group:root:x:0:\nnonroot:x:65532:\nnogroup:x:65534:\n" \
  --dir /home/nonroot:0700:65532:65532 \
  --user 65532:65532 --workdir /home/nonroot --env HOME=/home/nonroot \
  --entrypoint '["/usr/local/bin/openbao-operator"]' --cmd '["run"]'

# The hostile tenant of crates/operator/tests/node_hostile.rs: testkit's token-catcher installed as
# the image's /bin/sh, which the operator's pod command starts. A test image; no manifest names it.
catcher="$(workspace_binary testkit token-catcher)"
catcher_libs="$(shared_library_args "$catcher")"
read -r -a catcher_lib_args <<< "$catcher_libs"
image --name "localhost/openbao-operator/token-catcher:test" "${catcher_lib_args[@]}" \
  --file "$catcher:/bin/sh:0755" --user 100:1000 --entrypoint '["/bin/sh"]'
