#!/bin/sh
# Entrypoint of our docker.io/library/traefik image, behaving like the official one so the Helm
# chart's manifests (which pass only flags as args) work unchanged: flags or a Traefik
# subcommand run traefik, anything else runs as given.
set -e
if [ "$#" -eq 0 ]; then
  set -- traefik
fi
case "$1" in
  -*) set -- traefik "$@" ;;
  traefik) ;;
  *)
    if traefik "$1" --help >/dev/null 2>&1; then
      set -- traefik "$@"
    fi
    ;;
esac
exec "$@"
