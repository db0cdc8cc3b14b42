#!/usr/bin/env bash
# Benchmark (not a test): the backup executor (`openbao-operator backup`, release build, run as
# its own process under /usr/bin/time) streaming a raft snapshot of a real OpenBao 2.7.2 node
# into the real S3 server (hack/build-s3-server.sh: RustFS when built, else s3s-fs), side by
# side with reading the same snapshot alone (`curl … > /dev/null`), at growing store sizes.
# Prints and records in bench/backup.md: fill time, snapshot size, throughput of both and
# their ratio, and the executor's peak RSS per size.
# Usage: bench/backup.sh [store sizes in MiB, default "256 1024"] [rounds per size, default 2]
# (OPERATOR_BIN=<binary> skips the release build; BENCH_OUT=<file> writes elsewhere: for trying it;
# BENCH_PART_MIB / BENCH_IN_FLIGHT change the executor's part size and parts in flight.)
# Needs ~4× the largest size of free disk (raft log + FSM + one stored object); removes
# everything on exit.
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
cd "$REPO_ROOT"
read -r -a SIZES_MIB <<< "${1:-256 1024}"
ROUNDS="${2:-2}"
OUT="${BENCH_OUT:-bench/backup.md}"
PART_MIB="${BENCH_PART_MIB:-8}"    # the executor's defaults
IN_FLIGHT="${BENCH_IN_FLIGHT:-2}"
STATE="$(mktemp -d /tmp/bench-backup.XXXXXX)"
PIDS=()
cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  rm -rf "$STATE"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

if [[ -z "${OPERATOR_BIN:-}" ]]; then
  cargo build -q --release -p openbao-operator
fi
OPERATOR="${OPERATOR_BIN:-${CARGO_TARGET_DIR:-target}/release/openbao-operator}"
BAO="$(bash hack/fetch-openbao.sh | awk '$1 == "2.7.2" {print $2}')"
read -r S3_KIND S3_BIN <<< "$(bash hack/build-s3-server.sh | tail -1)"

# --- S3 server on loopback -------------------------------------------------------------------
S3_KEY=bench-access-key
S3_SECRET=bench-secret-key-0123456789
S3_PORT="$(free_port)"
mkdir -p "$STATE/s3"
case "$S3_KIND" in
  s3s-fs) "$S3_BIN" --host 127.0.0.1 --port "$S3_PORT" --access-key "$S3_KEY" --secret-key "$S3_SECRET" \
            "$STATE/s3" > "$STATE/s3.log" 2>&1 & ;;
  rustfs) RUSTFS_ACCESS_KEY="$S3_KEY" RUSTFS_SECRET_KEY="$S3_SECRET" RUSTFS_CONSOLE_ENABLE=false \
          RUSTFS_CONSOLE_ADDRESS=127.0.0.1:0 RUSTFS_REGION=us-east-1 RUST_LOG=warn \
          "$S3_BIN" server --address "127.0.0.1:$S3_PORT" "$STATE/s3" > "$STATE/s3.log" 2>&1 & ;;
  *) die "unknown S3 server kind $S3_KIND" ;;
esac
PIDS+=($!)
s3() { curl -sS --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_KEY:$S3_SECRET" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"; }
for _ in $(seq 300); do s3 -o /dev/null "http://127.0.0.1:$S3_PORT/" 2>/dev/null && break; sleep 0.1; done
s3 -f -X PUT "http://127.0.0.1:$S3_PORT/bench" >/dev/null

# --- one OpenBao node: TLS, raft, static seal ------------------------------------------------
API_PORT="$(free_port)"; CLUSTER_PORT="$(free_port)"
ADDR="https://127.0.0.1:$API_PORT"
mkdir -p "$STATE/bao/data" "$STATE/creds"
# A CA and a serving certificate for 127.0.0.1 (rustls refuses a self-signed end-entity).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=openbao-bench-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
  -keyout "$STATE/bao/ca.key" -out "$STATE/bao/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=openbao-bench \
  -keyout "$STATE/bao/tls.key" -out "$STATE/bao/tls.csr" 2>/dev/null
openssl x509 -req -in "$STATE/bao/tls.csr" -CA "$STATE/bao/ca.crt" -CAkey "$STATE/bao/ca.key" -CAcreateserial \
  -days 1 -out "$STATE/bao/tls.crt" 2>/dev/null -extfile <(printf '%s\n' subjectAltName=IP:127.0.0.1 \
  basicConstraints=CA:FALSE keyUsage=digitalSignature extendedKeyUsage=serverAuth)
head -c 32 /dev/urandom > "$STATE/bao/seal.key"
cat > "$STATE/bao/config.hcl" <<HCL
disable_mlock = true
log_level     = "warn"
api_addr      = "$ADDR"
cluster_addr  = "https://127.0.0.1:$CLUSTER_PORT"
listener "tcp" {
  address         = "127.0.0.1:$API_PORT"
  cluster_address = "127.0.0.1:$CLUSTER_PORT"
  tls_cert_file   = "$STATE/bao/tls.crt"
  tls_key_file    = "$STATE/bao/tls.key"
}
storage "raft" {
  path    = "$STATE/bao/data"
  node_id = "bench-0"
}
seal "static" {
  current_key_id = "k1"
  current_key    = "file://$STATE/bao/seal.key"
}
HCL
"$BAO" server -config "$STATE/bao/config.hcl" > "$STATE/bao.log" 2>&1 &
PIDS+=($!)
bao() { curl -sS --fail-with-body --cacert "$STATE/bao/ca.crt" "$@"; }
for _ in $(seq 300); do bao -o /dev/null "$ADDR/v1/sys/seal-status" 2>/dev/null && break; sleep 0.1; done
ROOT="$(bao -X PUT -d '{"recovery_shares":1,"recovery_threshold":1}' "$ADDR/v1/sys/init" | jq -r .root_token)"
for _ in $(seq 300); do bao -o /dev/null "$ADDR/v1/sys/health" 2>/dev/null && break; sleep 0.2; done
admin() { bao -H "X-Vault-Token: $ROOT" "$@"; }

# The executor logs in like a Job: JWT auth at jwt-operator, role openbao-operator-backup with
# the backup policy the operator renders, a token for the Job's service account.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$STATE/jwt.key" 2>/dev/null
openssl pkey -in "$STATE/jwt.key" -pubout -out "$STATE/jwt.pub"
SUBJECT="system:serviceaccount:bench:bench-backup-serviceaccount"
admin -X POST -d '{"type":"kv","options":{"version":"2"}}' "$ADDR/v1/sys/mounts/secret" >/dev/null
admin -X POST -d '{"type":"jwt"}' "$ADDR/v1/sys/auth/jwt-operator" >/dev/null
jq -n --rawfile pem "$STATE/jwt.pub" '{jwt_validation_pubkeys: [$pem], bound_issuer: "https://kubernetes.default.svc"}' \
  | admin -X POST -d @- "$ADDR/v1/auth/jwt-operator/config" >/dev/null
jq -n '{policy: "path \"sys/storage/raft/snapshot\" { capabilities = [\"read\"] }"}' \
  | admin -X PUT -d @- "$ADDR/v1/sys/policies/acl/backup" >/dev/null
jq -n --arg sub "$SUBJECT" '{role_type: "jwt", user_claim: "sub", bound_subject: $sub,
  bound_audiences: ["openbao"], token_policies: ["backup"], token_ttl: "1h"}' \
  | admin -X POST -d @- "$ADDR/v1/auth/jwt-operator/role/openbao-operator-backup" >/dev/null
now=$(date +%s)
header=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
payload=$(jq -cn --arg sub "$SUBJECT" --argjson now "$now" \
  '{iss: "https://kubernetes.default.svc", sub: $sub, aud: ["openbao"], iat: $now, nbf: ($now - 5), exp: ($now + 7200)}' | b64url)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$STATE/jwt.key" -binary | b64url)
printf '%s.%s.%s' "$header" "$payload" "$signature" > "$STATE/sa.token"
printf '%s' "$S3_KEY" > "$STATE/creds/accessKeyId"
printf '%s' "$S3_SECRET" > "$STATE/creds/secretAccessKey"

# --- filling ---------------------------------------------------------------------------------
# One KV write = 576 KiB of random bytes as base64 (768 KiB of value): under raft's 1 MiB
# entry limit. The barrier encrypts every value with a fresh nonce, so writing the same body
# to many keys gives a snapshot that does not compress: it grows by ~768 KiB per write.
VALUE_KIB=768
head -c $((VALUE_KIB * 3 / 4 * 1024)) /dev/urandom | base64 -w0 | jq -Rc '{data: {value: .}}' > "$STATE/value.json"
written=0
fill_to() { # total MiB of KV values
  local want=$(( $1 * 1024 / VALUE_KIB ))
  (( want > written )) || return 0
  seq "$written" $((want - 1)) | xargs -P 8 -I{} curl -sS --fail-with-body -o /dev/null \
    --cacert "$STATE/bao/ca.crt" -H "X-Vault-Token: $ROOT" -X POST --data-binary "@$STATE/value.json" \
    "$ADDR/v1/secret/data/bulk/{}"
  written=$want
}

# --- measuring -------------------------------------------------------------------------------
read_alone() { # prints "bytes seconds"
  admin -o /dev/null -w '%{size_download} %{time_total}\n' "$ADDR/v1/sys/storage/raft/snapshot"
}
executor() { # prints the result line, then "rss_kib" on its own line
  env -i PATH="$PATH" RUST_LOG=warn \
    OPENBAO_ADDRESSES="$ADDR" OPENBAO_CA_FILE="$STATE/bao/ca.crt" OPENBAO_JWT_TOKEN_FILE="$STATE/sa.token" \
    CLUSTER_NAMESPACE=bench CLUSTER_NAME=bench S3_ENDPOINT="http://127.0.0.1:$S3_PORT" S3_BUCKET=bench \
    S3_PATH_PREFIX=backups S3_CREDENTIALS_DIR="$STATE/creds" BACKUP_RETENTION_MAX_COUNT=1 \
    S3_PART_SIZE_MIB="$PART_MIB" S3_CONCURRENCY="$IN_FLIGHT" \
    /usr/bin/time -v -o "$STATE/time.txt" "$OPERATOR" backup 2> "$STATE/executor.log" | tail -1 || true
  awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$STATE/time.txt"
}
mbps() { echo "scale=1; $1 / 1000000 / $2" | bc; }

rows=()
for size in "${SIZES_MIB[@]}"; do
  t0=$(date +%s.%N)
  before=$written
  fill_to "$size"
  fill_s=$(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)")
  log "filled to $size MiB of KV values ($(( (written - before) * VALUE_KIB / 1024 )) MiB in ${fill_s} s)"
  fill_cell="$fill_s s ($(( (written - before) * VALUE_KIB / 1024 )) MiB)"
  raft_mib=$(( $(du -sk "$STATE/bao/data" | cut -f1) / 1024 ))
  # For the store's side alone: the same bytes from a file, one plain PUT.
  admin -o "$STATE/snapshot.file" "$ADDR/v1/sys/storage/raft/snapshot"
  for round in $(seq "$ROUNDS"); do
    read -r curl_bytes curl_s <<< "$(read_alone)"
    put_s=$(s3 -f -o /dev/null -w '%{time_total}' -T "$STATE/snapshot.file" "http://127.0.0.1:$S3_PORT/bench/put-alone")
    s3 -f -X DELETE "http://127.0.0.1:$S3_PORT/bench/put-alone" >/dev/null
    put_rate=$(mbps "$(stat -c %s "$STATE/snapshot.file")" "$put_s")
    { read -r line; read -r rss_kib; } < <(executor)
    [[ "$(jq -r .result <<< "$line")" == Succeeded ]] || die "executor failed: $line ($(tail -3 "$STATE/executor.log"))"
    bytes=$(jq -r .size <<< "$line")
    transfer_s=$(echo "scale=3; $(jq -r .transfer_ms <<< "$line") / 1000" | bc)
    total_s=$(echo "scale=3; $(jq -r .duration_ms <<< "$line") / 1000" | bc)
    curl_rate=$(mbps "$curl_bytes" "$curl_s"); exec_rate=$(mbps "$bytes" "$transfer_s")
    ratio=$(printf '%.2f' "$(echo "scale=4; $exec_rate / $curl_rate" | bc)")
    log "$size MiB round $round: curl $curl_bytes B in $curl_s s; PUT alone $put_s s; executor $bytes B in $transfer_s s (total $total_s s), RSS $rss_kib KiB"
    rows+=("| $size | $round | $fill_cell | $raft_mib MiB | $(( bytes / 1048576 )) MiB | $curl_rate MB/s | $put_rate MB/s | $exec_rate MB/s | **$ratio** | $total_s s | $(( rss_kib / 1024 )) MiB |")
    fill_cell="–"
  done
  rm -f "$STATE/snapshot.file"
done
objects=$(s3 "http://127.0.0.1:$S3_PORT/bench?list-type=2" | grep -o '<Key>' | wc -l)
[[ "$objects" == 1 ]] || die "retention (max 1) should leave one object, found $objects"

{
  echo "# Backup benchmark ($(date -u +%Y-%m-%d), $(nproc) cores)"
  echo
  echo "\`bench/backup.sh \"${SIZES_MIB[*]}\" $ROUNDS\`: one OpenBao 2.7.2 node (raft, static seal, TLS on loopback) filled"
  echo "with KV v2 values of $VALUE_KIB KiB (8 concurrent writers), then, at each store size and side by side in the"
  echo "same run: \`curl … -o /dev/null\` of \`/v1/sys/storage/raft/snapshot\` (reading the snapshot alone), and the"
  echo "backup executor (\`openbao-operator backup\`, release build, JWT login, part size $PART_MIB MiB, $IN_FLIGHT parts in flight,"
  echo "SHA-256 read-back on, retention max 1) into $S3_KIND on loopback. Executor throughput is snapshot + upload"
  echo "(\`transfer_ms\` of its result line); \"total\" adds login, the read-back verification and retention."
  echo "Peak RSS is \`/usr/bin/time -v\`'s maximum resident set size of the executor process. \"S3 PUT alone\" is the"
  echo "store's side on its own: the same snapshot bytes from a local file, one plain \`curl -T\` PUT (no multipart)."
  echo
  echo "| KV MiB | round | fill time | raft dir | snapshot | read alone (curl) | S3 PUT alone | executor | ratio to read alone | executor total | executor peak RSS |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$OUT"
