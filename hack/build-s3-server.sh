#!/usr/bin/env bash
# Prints "<kind> <path>" of a real S3-compatible server for the tests:
#   - "rustfs <path>" when hack/build-rustfs.sh has finished its (long) build, else
#   - "s3s-fs <path>": s3s-fs built from crates.io into the user cache (a few minutes, once).
# Idempotent and safe to run concurrently; the build output goes to stderr.
# S3_SERVER=s3s-fs (e.g. `S3_SERVER=s3s-fs cargo test`) uses s3s-fs even when RustFS is built;
# S3_SERVER=rustfs fails unless RustFS is built.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUSTFS_BIN="$CACHE_ROOT/rustfs/$RUSTFS_VERSION/bin/rustfs"
if [[ "${S3_SERVER:-}" != "s3s-fs" && -x "$RUSTFS_BIN" ]]; then
  echo "rustfs $RUSTFS_BIN"
  exit 0
fi
[[ "${S3_SERVER:-}" != rustfs ]] || die "S3_SERVER=rustfs, but RustFS is not built (hack/build-rustfs.sh)"

DIR="$CACHE_ROOT/s3s-fs/$S3S_FS_VERSION"
if [[ ! -x "$DIR/bin/s3s-fs" ]]; then
  # Test binaries start in parallel on a fresh machine: one builds, the others wait for it.
  mkdir -p "$CACHE_ROOT/s3s-fs"
  exec 9>"$CACHE_ROOT/s3s-fs/.build.lock"
  flock 9
fi
if [[ ! -x "$DIR/bin/s3s-fs" ]]; then
  log "building s3s-fs $S3S_FS_VERSION (a few minutes on 2 cores)"
  rm -rf "$DIR.tmp"
  install_s3s_fs() {
    CARGO_TARGET_DIR="$CACHE_ROOT/s3s-fs/target" \
      cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --root "$DIR.tmp" "$@"
  }
  # --locked uses the crate's own lock file; if that no longer resolves, let cargo pick
  # versions (the MSRV-aware resolver keeps them buildable on our rustc).
  install_s3s_fs --locked || { log "s3s-fs: --locked build failed; retrying without it"; install_s3s_fs; }
  rm -rf "$CACHE_ROOT/s3s-fs/target" "$DIR"
  mv "$DIR.tmp" "$DIR"
fi
echo "s3s-fs $DIR/bin/s3s-fs"
