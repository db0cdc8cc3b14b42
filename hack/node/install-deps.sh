#!/usr/bin/env bash
# Debian packages the hermetic node needs (node mode). Installs only what is missing.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# package:file-it-provides
wanted=(
  containerd:/usr/bin/containerd runc:/usr/sbin/runc
  containernetworking-plugins:/usr/lib/cni/bridge iptables:/usr/sbin/iptables
  conntrack:/usr/sbin/conntrack socat:/usr/bin/socat iproute2:/usr/sbin/ip
  busybox-static:/bin/busybox ca-certificates:/etc/ssl/certs/ca-certificates.crt
  gcc:/usr/bin/gcc libc6-dev:/usr/lib/x86_64-linux-gnu/libc.a util-linux:/usr/bin/nsenter
  ipset:/usr/sbin/ipset
)
need=()
for entry in "${wanted[@]}"; do
  pkg="${entry%%:*}" file="${entry#*:}"
  # busybox (dynamic) also ships /bin/busybox; only the static one works inside an image.
  if [[ "$pkg" == busybox-static ]]; then
    dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=("$pkg")
  elif [[ ! -e "$file" ]]; then
    need+=("$pkg")
  fi
done
if [[ ${#need[@]} -gt 0 ]]; then
  log "installing ${need[*]}"
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
