#!/usr/bin/env bash
# Builds RustFS (the real S3 server of the lane) into the user cache and prints the binary's path.
#
# The lean build: only what the lane and the tests use of RustFS (the S3 API, its console, the
# admin API), so `--no-default-features` drops FTPS, WebDAV and Google Cloud Storage, and
# `opt-level = 1` instead of the release profile's 3 (bench/rustfs-build.md has the figures).
# Its build directory survives an interrupted build: a killed build resumes where it stopped
# the next time, and is removed only once the binary is in place.
#
#   hack/build-rustfs.sh            build in the foreground (1,162 build units)
#   hack/build-rustfs.sh --idle     the same at idle CPU and I/O priority, only if no other build
#                                   runs: in the background beside other work, it uses only the
#                                   cores that work leaves idle
#   hack/build-rustfs.sh --status   "built <path>" or "not built: <n> of <m> build units done"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DIR="$CACHE_ROOT/rustfs/$RUSTFS_VERSION"
TARGET="$CACHE_ROOT/rustfs/target"
mode="${1:-}"

if [[ "$mode" == --status ]]; then
  if [[ -x "$DIR/bin/rustfs" ]]; then
    echo "built $DIR/bin/rustfs"
  else
    # cargo makes a fingerprint directory for every unit of the build at its start and writes
    # the unit's .json into it once the unit is compiled.
    fp="$TARGET/release/.fingerprint"
    if [[ -d "$fp" ]]; then
      done_units=$(find "$fp" -name '*.json' | wc -l)
      all_units=$(find "$fp" -mindepth 1 -maxdepth 1 -type d | wc -l)
      echo "not built: $done_units of $all_units build units done"
    else
      echo "not built: no build started (hack/build-rustfs.sh)"
    fi
  fi
  exit 0
fi

if [[ ! -x "$DIR/bin/rustfs" ]]; then
  command -v protoc >/dev/null || die "RustFS needs protoc: apt-get install protobuf-compiler"
  mkdir -p "$CACHE_ROOT/rustfs"
  exec 9>"$CACHE_ROOT/rustfs/.build.lock"
  if [[ "$mode" == --idle ]]; then
    flock -n 9 || { log "rustfs: another build holds $CACHE_ROOT/rustfs/.build.lock"; exit 0; }
    # SCHED_IDLE: the kernel runs it only on a core nothing else wants, so the tests beside it
    # keep their timing; idle I/O class likewise for the disk.
    renice -n 19 -p $$ >/dev/null
    chrt --idle -p 0 $$ >/dev/null
    ionice -c 3 -p $$ >/dev/null 2>&1 || true
  else
    flock 9
  fi
fi
if [[ ! -x "$DIR/bin/rustfs" ]]; then
  log "building rustfs $RUSTFS_VERSION, lean (resuming in $TARGET if an earlier build was stopped)"
  rm -rf "$DIR.tmp"
  # --locked: without it an rsa/pkcs1 mismatch breaks the build; the crate declares a newer rustc.
  # Its own CARGO_HOME: a build starved at idle priority must never hold the package-cache lock
  # that other cargo commands (the tests', CI's) wait for.
  CARGO_HOME="$CACHE_ROOT/rustfs/cargo-home" CARGO_TARGET_DIR="$TARGET" CARGO_INCREMENTAL=0 \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=0 \
    cargo install "rustfs@$RUSTFS_VERSION" --bin rustfs --locked --ignore-rust-version --no-default-features \
    --root "$DIR.tmp"
  strip "$DIR.tmp/bin/rustfs"
  printf 'rustfs %s: --no-default-features, opt-level 1, built %s\n' "$RUSTFS_VERSION" "$(date -u +%FT%TZ)" \
    > "$DIR.tmp/BUILD"
  mv "$DIR.tmp" "$DIR"
  rm -rf "$TARGET" "$CACHE_ROOT/rustfs/cargo-home"
fi
echo "$DIR/bin/rustfs"
