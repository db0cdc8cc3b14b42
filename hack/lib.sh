# Shared helpers for hack/*.sh. Source it; it sets strict mode and the cache layout.
set -euo pipefail
HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=versions.env
source "$HACK_DIR/versions.env"
CACHE_ROOT="${OPENBAO_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/openbao-operator}"
mkdir -p "$CACHE_ROOT"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs "$@" only when the stamp file does not already record $1 (a version key).
# Usage: stamped <stamp-file> <key> <command...>
stamped() {
  local stamp="$1" key="$2"; shift 2
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then return 0; fi
  "$@"
  printf '%s' "$key" > "$stamp"
}
