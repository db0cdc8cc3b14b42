#!/bin/sh
# Entrypoint of our docker.io/rustfs/rustfs image, starting RustFS the way the official image does
# for the manifests we reuse (env only, or args only): every argument list runs /usr/bin/rustfs,
# the local data volumes of RUSTFS_VOLUMES (default /data) and the log directory are created,
# and the volumes are appended unless the args already name a data path. Distributed URL-form
# volumes are left to rustfs itself, which reads RUSTFS_VOLUMES. The official script also
# pre-checks credentials; rustfs reports those problems itself.
set -e
case "${1:-}" in
  /usr/bin/rustfs) ;;
  rustfs) shift; set -- /usr/bin/rustfs "$@" ;;
  *) set -- /usr/bin/rustfs "$@" ;;
esac

local_volumes=""
for volume in $(echo "${RUSTFS_VOLUMES:-/data}" | tr ',\t' '  '); do
  case "$volume" in
    /*) local_volumes="$local_volumes $volume" ;;
  esac
done
for dir in $local_volumes; do
  mkdir -p "$dir"
done
case "${RUSTFS_OBS_LOG_DIRECTORY:-}" in
  /*) mkdir -p "$RUSTFS_OBS_LOG_DIRECTORY" ;;
esac

first=1
has_data_path=0
for arg in "$@"; do
  if [ "$first" = 1 ]; then first=0; continue; fi
  case "$arg" in
    /*) has_data_path=1 ;;
  esac
done
if [ "$has_data_path" = 0 ]; then
  # shellcheck disable=SC2086 # one word per volume
  set -- "$@" $local_volumes
fi
echo "starting: $*"
exec "$@"
