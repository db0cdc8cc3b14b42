#!/usr/bin/env bash
# Builds RustFS (the real S3 server of the lane) into the user cache. It takes over an hour on
# 2 cores, so CI never starts it: tests use the cached binary when present and otherwise the
# lighter real S3 server from hack/build-s3s-fs.sh. Run this in the background, niced.
# Prints the binary path on stdout.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DIR="$CACHE_ROOT/rustfs/$RUSTFS_VERSION"
if [[ ! -x "$DIR/bin/rustfs" ]]; then
  command -v protoc >/dev/null || die "RustFS needs protoc: apt-get install protobuf-compiler"
  log "building rustfs $RUSTFS_VERSION (about 75 minutes on 2 cores)"
  # --locked: without it an rsa/pkcs1 mismatch breaks the build; the crate declares a newer rustc.
  CARGO_TARGET_DIR="$CACHE_ROOT/rustfs/target" \
    cargo install "rustfs@$RUSTFS_VERSION" --locked --ignore-rust-version --root "$DIR.tmp"
  strip "$DIR.tmp/bin/rustfs"
  rm -rf "$CACHE_ROOT/rustfs/target"
  mv "$DIR.tmp" "$DIR"
fi
echo "$DIR/bin/rustfs"
