#!/usr/bin/env bash
# Debian packages the builds and tests use. Installs only what is missing.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v gcc >/dev/null || need+=(gcc)
command -v jq >/dev/null || need+=(jq)
command -v go >/dev/null || die "Go is required to build the Kubernetes components (it ships with the machine image)"
command -v cargo >/dev/null || die "cargo is required"
if [[ ${#need[@]} -gt 0 ]]; then
  log "installing ${need[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
