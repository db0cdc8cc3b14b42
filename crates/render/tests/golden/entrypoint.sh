#!/bin/sh
set -u
TEMPLATES="${BAO_TEMPLATE_DIR:-/etc/bao/config}"
INIT_DIR="${BAO_INIT_DIR:-/etc/bao/init}"
OUT="${BAO_RENDERED_DIR:-/bao/rendered}"
DATA="${BAO_DATA_DIR:-/bao/data}"
CERT="${BAO_TLS_CERT:-/etc/bao/tls/tls.crt}"
POLL="${BAO_RELOAD_POLL_SECONDS:-5}"
POD="${POD_NAME:-$(hostname)}"
TRANSIT_JWT="${BAO_TRANSIT_JWT:-/var/run/secrets/openbao-transit/token}"

# Only the first pod may found the cluster, only while the operator still ships the requests
# (it removes them once the cluster is initialized) and only on empty storage: a second
# founder would start a separate cluster (split brain).
founding=0
case "$POD" in
  *-0)
    if [ -s "$INIT_DIR/zz-init.hcl" ] && [ ! -e "$DATA/raft/raft.db" ]; then founding=1; fi ;;
esac
mkdir -p "$OUT" && rm -f "$OUT"/*.hcl
# A server never joins itself and the founder joins nobody. Their retry_join would look up
# names the cluster DNS does not serve yet (a pod's record appears only once its IP is
# reported), and the "no such host" answer stays cached for seconds: the leader then cannot
# reach a server that just joined, and followers cannot reach the founder.
for f in "$TEMPLATES"/*.hcl; do
  sed "s/@@POD_NAME@@/$POD/g" "$f" | awk -v self="$POD." -v founding="$founding" '
    /^  retry_join \{/ { block = $0 "\n"; in_join = 1; keep = (founding != 1); next }
    in_join {
      block = block $0 "\n"
      if (index($0, "\"https://" self) || index($0, "= \"" self)) keep = 0
      if ($0 ~ /^  }/) { in_join = 0; if (keep) printf "%s", block }
      next
    }
    { print }' > "$OUT/$(basename "$f")" || exit 1
done
if [ "$founding" = 1 ]; then
  cp "$INIT_DIR/zz-init.hcl" "$OUT/zz-init.hcl"
  echo "entrypoint: first start of $POD: self-initialization requests included"
fi

# spec.unseal.transit.login: log in to the transit server with this pod's service-account token
# and seal with the token it answers (the config reads it from the environment). The settings
# arrive as variables and are only ever quoted parameters; a failed login is reported the way
# OpenBao reports an unreachable seal, so the operator's status says why.
if [ -n "${SEAL_TRANSIT_LOGIN_PATH:-}" ]; then
  err="$OUT/.transit-login.err"
  if SEAL_TRANSIT_TOKEN="$(
      export BAO_ADDR="${SEAL_TRANSIT_LOGIN_ADDR}"
      if [ -n "${SEAL_TRANSIT_LOGIN_CACERT:-}" ]; then export BAO_CACERT="${SEAL_TRANSIT_LOGIN_CACERT}"; fi
      if [ -n "${SEAL_TRANSIT_LOGIN_NAMESPACE:-}" ]; then export BAO_NAMESPACE="${SEAL_TRANSIT_LOGIN_NAMESPACE}"; fi
      if [ -n "${SEAL_TRANSIT_LOGIN_SERVER_NAME:-}" ]; then export BAO_TLS_SERVER_NAME="${SEAL_TRANSIT_LOGIN_SERVER_NAME}"; fi
      bao write -field=token "${SEAL_TRANSIT_LOGIN_PATH}" role="${SEAL_TRANSIT_LOGIN_ROLE}" jwt=@"$TRANSIT_JWT" 2>"$err"
    )" && [ -n "${SEAL_TRANSIT_TOKEN}" ]; then
    export SEAL_TRANSIT_TOKEN
    rm -f "$err"
    echo "entrypoint: logged in to the transit server at ${SEAL_TRANSIT_LOGIN_PATH}"
  else
    echo "Error configuring seal \"transit\": login at ${SEAL_TRANSIT_LOGIN_PATH} as role ${SEAL_TRANSIT_LOGIN_ROLE} failed: $(tr -s '\n\t' '  ' < "$err")"
    exit 1
  fi
fi

bao server -config="$OUT" &
child=$!
# Stopping: forward the signal and exit as soon as bao has stopped, not after the poll sleep.
# Until the container exits the pod keeps its name, so its replacement cannot start.
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit $?' TERM INT
sum="$(sha256sum < "$CERT" 2>/dev/null)"
while kill -0 "$child" 2>/dev/null; do
  sleep "$POLL" &
  wait $! 2>/dev/null
  now="$(sha256sum < "$CERT" 2>/dev/null)" || continue
  if [ -n "$now" ] && [ "$now" != "$sum" ]; then
    sum="$now"
    echo "entrypoint: certificate changed, reloading OpenBao (SIGHUP)"
    kill -HUP "$child" 2>/dev/null
  fi
done
wait "$child"
