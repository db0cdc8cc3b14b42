#!/usr/bin/env bash
# Keeps the shared build cache (CARGO_TARGET_DIR under the user cache dir) from growing with every
# fresh clone. Cargo names a path dependency's artifacts by a hash that includes its path, so each
# clone that CI builds in leaves a full set of the workspace's own libraries and test binaries
# (gigabytes) that no later run uses. This deletes those artifacts of the workspace's targets that
# are not newer than the stamp file $1 (touched when the run started): everything this run built
# or used stays, and external crates' artifacts, which every clone shares, are never touched.
#   hack/prune-build-cache.sh <stamp-file>
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
stamp="${1:?usage: prune-build-cache.sh <stamp-file>}"
[[ -f "$stamp" ]] || die "no stamp file $stamp"
target="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
deps="$target/debug/deps"
[[ -d "$deps" ]] || exit 0
before="$(du -sm "$target" | cut -f1)"
# Every target of every workspace package, as rustc names its files (dashes become underscores).
mapfile -t names < <(cd "$REPO_ROOT" && cargo metadata --no-deps --format-version 1 \
  | jq -r '.packages[].targets[].name | gsub("-"; "_")' | sort -u)
for name in "${names[@]}"; do
  find "$deps" -maxdepth 1 -regextype posix-extended \
    -regex ".*/(lib)?${name}-[0-9a-f]{16}(\..*)?" ! -newer "$stamp" -delete
done
# CI builds without incremental compilation (a fresh clone could not reuse it); older runs left some.
rm -rf "$target/debug/incremental"
log "build cache: $before MiB -> $(du -sm "$target" | cut -f1) MiB (stale workspace artifacts removed)"
