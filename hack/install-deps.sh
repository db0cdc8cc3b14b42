#!/usr/bin/env bash
# Debian packages the builds and tests use. Installs only what is missing.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v gcc >/dev/null || need+=(gcc)
command -v jq >/dev/null || need+=(jq)
# The browser checks (crates/testkit/src/browser.rs): headless Chromium, its WebDriver server, and
# certutil for the per-session NSS database that trusts the test CA. Recommends are skipped: they
# are desktop services (printing, avahi, upower) a headless browser does not use.
browser=()
[[ -x /usr/lib/chromium/chromium ]] || browser+=(chromium)
[[ -x /usr/bin/chromedriver ]] || browser+=(chromium-driver)
command -v certutil >/dev/null || browser+=(libnss3-tools)
command -v go >/dev/null || die "Go is required to build the Kubernetes components (it ships with the machine image)"
command -v cargo >/dev/null || die "cargo is required"
if [[ ${#need[@]} -gt 0 || ${#browser[@]} -gt 0 ]]; then
  log "installing ${need[*]} ${browser[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  if [[ ${#need[@]} -gt 0 ]]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if [[ ${#browser[@]} -gt 0 ]]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${browser[@]}" >/dev/null
  fi
fi
