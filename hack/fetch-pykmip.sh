#!/usr/bin/env bash
# Installs PyKMIP (its KMIP server, used by the real-KMIP seal test) from PyPI into a venv in the
# user cache. Idempotent: a second run only prints the path.
#   hack/fetch-pykmip.sh        prints "PYKMIP_PYTHON PATH" (the venv's python)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${PYKMIP_VERSION:=0.10.0}"
venv="$CACHE_ROOT/pykmip/$PYKMIP_VERSION"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import kmip.services.server' 2>/dev/null; then
  log "installing PyKMIP==$PYKMIP_VERSION into $venv"
  rm -rf "$venv.tmp"
  python3 -m venv "$venv.tmp"
  "$venv.tmp/bin/python" -m pip install --quiet "PyKMIP==$PYKMIP_VERSION"
  rm -rf "$venv" && mv "$venv.tmp" "$venv"
fi
echo "PYKMIP_PYTHON $venv/bin/python"
