#!/usr/bin/env bash
# Takes Prometheus from Debian (the `prometheus` package: upstream's server built by Debian, with
# its classic web UI whose JavaScript comes from Debian's libjs-* packages) into the user cache,
# as a file tree: usr/bin/prometheus (glibc-linked), usr/share/prometheus (UI templates) and
# usr/share/{javascript,fonts-glyphicons,...} (the UI's libraries). No package is installed on
# the machine: `apt-get download` + `dpkg-deb -x`.
#   hack/fetch-prometheus.sh      prints "VERSION ROOT"
# VERSION is the upstream version Debian packaged; it must be PROMETHEUS_VERSION, the tag of the
# official image the lane manifests name (docker.io/prom/prometheus:vVERSION).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dir="$CACHE_ROOT/prometheus/$PROMETHEUS_VERSION"
# The server and the UI's runtime dependencies (from `apt-cache show prometheus`).
packages=(prometheus fonts-glyphicons-halflings libjs-bootstrap4 libjs-eonasdan-bootstrap-datetimepicker
  libjs-jquery libjs-jquery-hotkeys libjs-moment libjs-moment-timezone libjs-mustache libjs-popper.js
  libjs-rickshaw libjs-d3)
if [[ ! -x "$dir/root/usr/bin/prometheus" ]]; then
  log "fetching Debian's prometheus and its UI libraries (${#packages[@]} packages)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # _apt cannot write to a private temp dir; apt then downloads as the calling user (warning only).
  if ! (cd "$tmp" && apt-get download -qq "${packages[@]}" 2>/dev/null); then
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq
    (cd "$tmp" && apt-get download -qq "${packages[@]}" 2>/dev/null) || die "apt-get download ${packages[*]} failed"
  fi
  deb_version="$(dpkg-deb -f "$tmp"/prometheus_*.deb Version)"
  upstream="${deb_version%%+*}"
  [[ "$upstream" == "$PROMETHEUS_VERSION" ]] \
    || die "Debian's prometheus is $deb_version, not upstream $PROMETHEUS_VERSION: update PROMETHEUS_VERSION in hack/versions.env (and the lane's image tag)"
  mkdir -p "$tmp/root"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/root"; done
  rm -rf "$tmp/root/usr/share/doc" "$tmp/root/usr/share/man" "$tmp/root/usr/bin/promtool" \
    "$tmp/root/etc/init.d" "$tmp/root/etc/logrotate.d" "$tmp/root/lib/systemd" \
    "$tmp/root/usr/share/javascript/moment-timezone/data"
  # ^ 212 MB of time-zone sources: the UI loads the bundled moment-timezone-with-data.min.js.
  printf '%s\n' "$deb_version" > "$tmp/root/DEBIAN-VERSION"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  mv "$tmp" "$dir"
  trap - EXIT
  rm -f "$dir"/*.deb
fi
echo "$PROMETHEUS_VERSION $dir/root"
