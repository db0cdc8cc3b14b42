#!/usr/bin/env bash
# The local development lane in one command (docs/lane.md):
#   hack/lane.sh up       a cluster (k3d when `docker` and `k3d` work, else the hermetic node),
#                         Gateway API CRDs, Traefik as the shared TLS-terminating Gateway for
#                         *.lane.localhost, an S3 store with a bucket, the operator (Helm chart),
#                         Prometheus scraping it, on k3d also Grafana (our dashboard) and Argo CD
#                         from their official charts, and the lane's OpenBaoCluster; ends by
#                         printing how to log in.
#   hack/lane.sh down     removes what `up` created (and only that): a node or k3d cluster that
#                         was already running stays up.
#   hack/lane.sh status   what runs, the cluster's conditions, how to log in.
#   hack/lane.sh backup   rehearsal: a manual backup (trigger annotation), waits for its result,
#                         prints the key, size, duration and the object as the S3 store lists it.
#   hack/lane.sh restore [KEY]  rehearsal: an OpenBaoRestore of KEY (default: the newest backup
#                         in the store) into the lane cluster (LANE_RESTORE_CLUSTER: another
#                         cluster of the lane namespace); prints each phase; fails on Failed.
#   hack/lane.sh upgrade VERSION  rehearsal: sets spec.version, prints each upgrade/blue-green
#                         phase, probes the Gateway every 200 ms and watches the HTTPRoute.
#   hack/lane.sh gitops   rehearsal (hermetic node, Argo CD on): Argo CD syncs the OpenBaoCluster
#                         openbao-gitops from a Git repository inside the lane, twice; the second
#                         sync must write nothing to the cluster's children and start no Job.
# LANE_ARGOCD=1|0: Argo CD built from its Go module (hack/build-argocd.sh) behind the edge on the
# hermetic node; on by default with the Development profile, off with the hardened one.
# LANE_PROFILE=hardened (`make lane-up LANE_PROFILE=hardened`, docs/lane.md) runs the same lane with
# a Hardened cluster: cert-manager issues its TLS, a second OpenBao (namespace openbao-seal) seals
# it through its transit engine, which the servers log in to with their own service-account
# tokens, an audit device, no demo login. The rehearsals work the same on either profile.
# LANE_BACKEND=node|k3d forces a backend, LANE_STORE=s3s-fs the S3 store, LANE_CRDS another CRD
# file than deploy/crds.yaml. State (CA, wildcard certificate, generated passwords, what `up`
# created, timings) lives in .lane/ (git-ignored).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

LANE_DIR="$REPO_ROOT/.lane"
STATE="$LANE_DIR/state.env"
K3D_CLUSTER=openbao-lane
EDGE_NS=lane-edge
STORE_NS=storage
MONITORING_NS=monitoring
OPERATOR_NS=openbao-operator-system
TENANT_NS=openbao
CLUSTER=openbao
LANE_DOMAIN=lane.localhost
OPENBAO_HOST="openbao.$LANE_DOMAIN"
EDGE_PORT=30443
BUCKET=openbao-backups
# The OpenBao CRDs the lane applies (another file only while working on the API).
LANE_CRDS="${LANE_CRDS:-deploy/crds.yaml}"
HELM_RELEASE=openbao-operator
# Fixed by the operator (openbao_api::names::SERVICE_REGISTRATION_CLUSTER_ROLE).
SERVICE_REGISTRATION_CLUSTER_ROLE=openbao-operator-service-registration
# The hardened lane: the transit server's namespace, its key and the role the lane cluster's
# servers log in as. The role binds what the operator gives each server (crates/operator/tests/
# lane_manifests.rs checks both against openbao_api::names): the service account
# names::service_account and the audience names::transit_login_audience.
SEAL_NS=openbao-seal
CERT_MANAGER_NS=cert-manager
TRANSIT_KEY=openbao-unseal
TRANSIT_ROLE=openbao-lane
SERVER_SERVICE_ACCOUNT=openbao-serviceaccount
TRANSIT_LOGIN_AUDIENCE=openbao-operator.openbao.org/transit/openbao/openbao
# The lane's Git server for the GitOps rehearsal (deploy/lane/gitops/, the Application's repoURL).
GITOPS_REPO=git://lane-git.argocd.svc:9418/lane.git
mkdir -p "$LANE_DIR"
chmod 700 "$LANE_DIR"

# --- state: what `up` created, so `down` removes exactly that -----------------------------------
state_get() { [[ -f "$STATE" ]] && sed -n "s/^$1=//p" "$STATE" | tail -1; return 0; }
state_set() {
  touch "$STATE"
  sed -i "/^$1=/d" "$STATE"
  printf '%s=%s\n' "$1" "$2" >> "$STATE"
}
now_ms() { date +%s%3N; }
secs_since() { awk -v a="$1" -v b="$(now_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
step() { printf '\n==> %s\n' "$*" >&2; }
# Records how long the step since the previous mark took (state: phase_<name>=seconds).
PHASE_MARK=""
PHASES=()
phase_done() {
  local took; took="$(secs_since "$PHASE_MARK")"
  state_set "phase_$1" "$took"
  PHASES+=("$1 ${took}s")
  PHASE_MARK="$(now_ms)"
}

kc() { "$KUBECTL" --kubeconfig "$LANE_KUBECONFIG" "$@"; }
# What knows the operator's API (waits on status, the rehearsals, the probe's figures) is Rust:
# crates/testkit/src/bin/lane. It prints what the state records as key=value lines on stdout.
lane_tool() {
  cargo run -q -p testkit --bin lane -- \
    --kubeconfig "$LANE_KUBECONFIG" --namespace "$TENANT_NS" --cluster "$CLUSTER" "$@"
}
# Records the tool's key=value lines in the state; prints the value of $2 (if given).
record_state() {
  local line wanted="${2:-}"
  while IFS= read -r line; do
    [[ "$line" == *=* ]] || continue
    state_set "${line%%=*}" "${line#*=}"
    [[ "${line%%=*}" == "$wanted" ]] && printf '%s\n' "${line#*=}"
  done <<< "$1"
  return 0
}

# --- backend -----------------------------------------------------------------------------------
pick_backend() {
  local forced="${LANE_BACKEND:-}"
  if [[ -n "$forced" ]]; then echo "$forced"; return; fi
  if command -v docker >/dev/null && command -v k3d >/dev/null && docker info >/dev/null 2>&1; then
    echo k3d
  else
    echo node
  fi
}

# The lane's profile: development (the default) or hardened. `up` records it; the rehearsals and
# `status` read it back.
pick_profile() {
  PROFILE="${LANE_PROFILE:-development}"
  case "$PROFILE" in
    development | hardened) ;;
    *) die "LANE_PROFILE=$PROFILE: the lane has the profiles development and hardened" ;;
  esac
}
lane_profile() { local p; p="$(state_get profile)"; echo "${p:-development}"; }

# Prints the state dir of the running hermetic node (from any checkout: the machine-wide owner
# file testkit writes); fails unless its apiserver answers and the node is Ready.
node_state_dir() {
  local dir
  dir="$(cat /run/openbao-node.owner 2>/dev/null)" || return 1
  [[ -f "$dir/kubeconfig" ]] || return 1
  "$KUBECTL" --kubeconfig "$dir/kubeconfig" --request-timeout=5s get --raw /readyz >/dev/null 2>&1 || return 1
  [[ "$("$KUBECTL" --kubeconfig "$dir/kubeconfig" --request-timeout=5s get node openbao-node \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]] || return 1
  echo "$dir"
}

node_cluster_up() {
  local dir
  if dir="$(node_state_dir)"; then
    log "hermetic node already running ($dir): using it, and leaving it up on lane-down"
    [[ "$(state_get started_node)" == 1 ]] || state_set started_node 0
  else
    log "no hermetic node running: starting one (hack/cluster.sh cluster-up; root needed)"
    bash hack/cluster.sh cluster-up >/dev/null
    state_set started_node 1
    dir="$(node_state_dir)" || die "the node did not come up"
  fi
  state_set node_dir "$dir"
  LANE_KUBECONFIG="$dir/kubeconfig"
}

# k3s image for the harness's Kubernetes version (same minor as hack/versions.env).
k3s_image() { echo "docker.io/rancher/k3s:${KUBERNETES_VERSION}-k3s1"; }

k3d_cluster_up() {
  if k3d cluster get "$K3D_CLUSTER" >/dev/null 2>&1; then
    log "k3d cluster $K3D_CLUSTER exists: reusing it"
    [[ "$(state_get created_k3d)" == 1 ]] || state_set created_k3d 0
  else
    log "creating k3d cluster $K3D_CLUSTER ($(k3s_image), bundled Traefik disabled, host port $EDGE_PORT -> the edge)"
    k3d cluster create "$K3D_CLUSTER" --image "$(k3s_image)" --servers 1 --agents 0 \
      --k3s-arg '--disable=traefik@server:*' \
      --port "$EDGE_PORT:$EDGE_PORT@server:0" --wait --timeout 180s --kubeconfig-update-default=false
    state_set created_k3d 1
  fi
  LANE_KUBECONFIG="$LANE_DIR/kubeconfig"
  k3d kubeconfig get "$K3D_CLUSTER" > "$LANE_KUBECONFIG"
  chmod 600 "$LANE_KUBECONFIG"
}

# --- images ------------------------------------------------------------------------------------
# The hermetic node: assemble the images (hack/images.sh, cached) and import the lane's into the
# node's containerd. k3d: build the operator image with Docker and import it; the rest is pulled.
load_images() {
  local backend="$1" store="$2"
  if [[ "$backend" == k3d ]]; then
    log "building $OPERATOR_IMAGE with Docker (deploy/operator/Dockerfile) and importing it into k3d"
    docker build -q -f deploy/operator/Dockerfile -t "$OPERATOR_IMAGE" . >/dev/null
    k3d image import -c "$K3D_CLUSTER" "$OPERATOR_IMAGE"
    return
  fi
  local socket want name archive list
  socket="$(state_get node_dir)/containerd/containerd.sock"
  local argocd=0
  argocd_wanted && argocd=1
  list="$(LANE_ARGOCD=$argocd bash hack/images.sh)"
  want=("docker.io/library/traefik:v$TRAEFIK_VERSION" "$OPERATOR_IMAGE" "docker.io/prom/prometheus:v$PROMETHEUS_VERSION")
  for v in $OPENBAO_VERSIONS; do want+=("docker.io/openbao/openbao:$v"); done
  [[ "$PROFILE" == hardened ]] && want+=("quay.io/jetstack/cert-manager-controller:$CERT_MANAGER_VERSION")
  if (( argocd )); then
    want+=("quay.io/argoproj/argocd:$ARGOCD_VERSION" "docker.io/library/redis:$ARGOCD_REDIS_VERSION")
  fi
  if [[ "$store" == rustfs ]]; then
    want+=("docker.io/rustfs/rustfs:$RUSTFS_VERSION")
  else
    want+=("localhost/openbao-operator/s3s-fs:$S3S_FS_VERSION")
  fi
  for name in "${want[@]}"; do
    archive="$(awk -v n="$name" '$1 == n { print $2 }' <<< "$list")"
    [[ -n "$archive" ]] || die "hack/images.sh did not list $name"
    /usr/bin/ctr --address="$socket" -n k8s.io images import "$archive" >/dev/null \
      || die "ctr images import $name failed"
  done
  log "imported into the node: ${want[*]}"
}

# --- certificates ------------------------------------------------------------------------------
# A lane CA (ECDSA P-256, 10 years) and a wildcard certificate for *.lane.localhost it signs;
# generated once, kept in .lane/. Trust .lane/ca.crt to verify the edge.
lane_pki() {
  [[ -s "$LANE_DIR/ca.crt" && -s "$LANE_DIR/wildcard.crt" ]] && return 0
  log "generating the lane CA and the *.$LANE_DOMAIN certificate in .lane/"
  (
    umask 077
    cd "$LANE_DIR"
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=openbao-operator lane CA" \
      -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt
    openssl ecparam -name prime256v1 -genkey -noout -out wildcard.key
    openssl req -new -key wildcard.key -subj "/CN=*.$LANE_DOMAIN" -out wildcard.csr
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth" "subjectAltName=DNS:*.$LANE_DOMAIN,DNS:$LANE_DOMAIN" > wildcard.ext
    openssl x509 -req -in wildcard.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -sha256 \
      -extfile wildcard.ext -out wildcard.crt 2>/dev/null
    rm -f wildcard.csr wildcard.ext ca.srl
    chmod 644 ca.crt wildcard.crt
  )
}

# A random secret, generated once and kept in .lane/<name> (mode 600).
lane_secret() {
  local file="$LANE_DIR/$1"
  if [[ ! -s "$file" ]]; then
    (umask 077; openssl rand -hex "${2:-16}" | tr -d '\n' > "$file")
  fi
  cat "$file"
}

# Creates the namespace unless it exists, and remembers that this lane created it.
ensure_namespace() {
  if ! kc get namespace "$1" >/dev/null 2>&1; then
    kc create namespace "$1" --save-config >/dev/null
    state_set "created_ns_$(tr -c 'a-z0-9\n' '_' <<< "$1")" 1
  fi
}

# Enforces Pod Security "restricted" on a namespace of the lane. Only for namespaces whose every
# pod is proven to meet it on the real apiserver (crates/operator/tests/pods_apiserver.rs: the
# OpenBao servers and Jobs, the operator's chart, and the Deployments of deploy/lane/{edge,
# storage-*,monitoring}.yaml); not grafana/argocd (upstream charts, k3d only).
restrict_namespace() {
  kc label --overwrite namespace "$1" pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/enforce-version=latest >/dev/null
}

# Applies a CRD file; remembers the CRDs that did not exist before (only those go on lane-down).
apply_crds() {
  local key="$1" probe="$2"; shift 2
  if ! kc get crd "$probe" >/dev/null 2>&1; then state_set "created_crds_$key" 1; fi
  kc apply --server-side --force-conflicts --field-manager=openbao-lane "$@" >/dev/null
}

# Waits until `kubectl get` with a jsonpath prints the wanted value.
wait_for_value() {
  local what="$1" want="$2" timeout="$3"; shift 3
  local deadline=$(( $(date +%s) + timeout )) got=""
  while (( $(date +%s) < deadline )); do
    got="$(kc get "$@" 2>/dev/null || true)"
    [[ "$got" == "$want" ]] && return 0
    sleep 1
  done
  die "timed out after ${timeout}s waiting for $what (last: ${got:-nothing})"
}

# Waits until each CRD is Established. Not `kubectl wait`: a CRD just (re)created has no
# status.conditions yet, and kubectl wait then fails at once instead of waiting (seen in CI).
wait_established() {
  local crd
  for crd in "$@"; do
    wait_for_value "CRD $crd Established" True 60 crd "$crd" \
      -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}'
  done
}

# --- the S3 store ------------------------------------------------------------------------------
pick_store() {
  local backend="$1"
  if [[ "$backend" == k3d ]]; then
    STORE=rustfs; STORE_WHY="k3d pulls the official docker.io/rustfs/rustfs:$RUSTFS_VERSION image"
  elif [[ "${LANE_STORE:-}" != s3s-fs && -x "$CACHE_ROOT/rustfs/$RUSTFS_VERSION/bin/rustfs" ]]; then
    STORE=rustfs; STORE_WHY="hack/build-rustfs.sh's build of RustFS $RUSTFS_VERSION is cached"
  else
    STORE=s3s-fs
    STORE_WHY="RustFS $RUSTFS_VERSION is not built yet (hack/build-rustfs.sh: 97 CPU-minutes, bench/rustfs-build.md);"
    STORE_WHY+=" s3s-fs $S3S_FS_VERSION is a real S3 server on the S3 library RustFS uses"
    [[ "${LANE_STORE:-}" == s3s-fs ]] && STORE_WHY="LANE_STORE=s3s-fs"
    # Builds it once (a few minutes) so that hack/images.sh can package it.
    S3_SERVER=s3s-fs bash hack/build-s3-server.sh >/dev/null
  fi
}

# The store's S3 endpoint as the host reaches it: the Service's ClusterIP on the hermetic node
# (the host routes the Service range to the node), a port-forward on k3d.
with_s3_endpoint() {
  local backend="$1"; shift
  if [[ "$backend" == node ]]; then
    "$@" "http://$(kc -n "$STORE_NS" get service s3 -o jsonpath='{.spec.clusterIP}'):9000"
    return
  fi
  kc -n "$STORE_NS" port-forward service/s3 19000:9000 >/dev/null 2>&1 &
  local pf=$!
  sleep 2
  "$@" "http://127.0.0.1:19000" || { kill "$pf"; return 1; }
  kill "$pf"
}

# One signed S3 request (curl's SigV4) with an empty body; prints the HTTP status. S3 servers
# want the payload hash as a header too (it is part of what is signed). The keys go through a
# config on a pipe, never on a command line (`ps` shows those to every local user).
s3_request() {
  local method="$1" url="$2"
  curl -sS -o /dev/null -w '%{http_code}' -X "$method" \
    -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
    --aws-sigv4 "aws:amz:us-east-1:s3" \
    --config <(printf 'user = "%s:%s"\n' "$(lane_secret s3-access-key 8)" "$(lane_secret s3-secret-key 20)") \
    "$url" 2>/dev/null || true
}

# Creates the bucket (409: it exists already) and lists it, proving the credentials. A fresh
# Service may take a moment to be routed: retries while nothing answers.
create_bucket() {
  local endpoint="$1" code="" tries=0
  while (( tries++ < 60 )); do
    code="$(s3_request PUT "$endpoint/$BUCKET")"
    [[ "$code" == 000 ]] || break
    sleep 1
  done
  case "$code" in
    200) log "bucket $BUCKET created" ;;
    409) log "bucket $BUCKET exists" ;;
    *) die "creating bucket $BUCKET at $endpoint answered HTTP $code" ;;
  esac
  code="$(s3_request GET "$endpoint/$BUCKET?list-type=2")"
  [[ "$code" == 200 ]] || die "listing bucket $BUCKET with the lane's credentials answered HTTP $code"
}

deploy_store() {
  local backend="$1"
  # Generated once; the Secrets read them from the files (no key on a command line).
  lane_secret s3-access-key 8 >/dev/null
  lane_secret s3-secret-key 20 >/dev/null
  ensure_namespace "$STORE_NS"
  restrict_namespace "$STORE_NS"
  kc -n "$STORE_NS" create secret generic s3-credentials \
    --from-file=accessKeyId="$LANE_DIR/s3-access-key" --from-file=secretAccessKey="$LANE_DIR/s3-secret-key" \
    --dry-run=client -o yaml | kc apply -f - >/dev/null
  kc apply -f "deploy/lane/storage-$STORE.yaml" >/dev/null
  kc -n "$STORE_NS" rollout status "deployment/$STORE" --timeout=180s >/dev/null
  with_s3_endpoint "$backend" create_bucket
  # The dedicated backup Secret in the tenant namespace: the keys the backup/restore Jobs read.
  ensure_namespace "$TENANT_NS"
  restrict_namespace "$TENANT_NS"
  kc -n "$TENANT_NS" create secret generic openbao-backup-s3 \
    --from-file=accessKeyId="$LANE_DIR/s3-access-key" --from-file=secretAccessKey="$LANE_DIR/s3-secret-key" \
    --dry-run=client -o yaml | kc apply -f - >/dev/null
}

# --- the edge ----------------------------------------------------------------------------------
deploy_edge() {
  ensure_namespace "$EDGE_NS"
  restrict_namespace "$EDGE_NS"
  kc -n "$EDGE_NS" create secret tls lane-wildcard-tls \
    --cert="$LANE_DIR/wildcard.crt" --key="$LANE_DIR/wildcard.key" \
    --dry-run=client -o yaml | kc apply -f - >/dev/null
  kc apply -f deploy/lane/edge.yaml >/dev/null
  state_set created_edge 1
  kc -n "$EDGE_NS" rollout status deployment/traefik --timeout=180s >/dev/null
  wait_for_value "Gateway $EDGE_NS/edge Programmed" True 120 \
    -n "$EDGE_NS" gateway edge -o 'jsonpath={.status.conditions[?(@.type=="Programmed")].status}'
}

# --- the operator ------------------------------------------------------------------------------
deploy_operator() {
  apply_crds openbao openbaoclusters.openbao.org -f "$LANE_CRDS"
  wait_established openbaoclusters.openbao.org
  ensure_namespace "$OPERATOR_NS"
  restrict_namespace "$OPERATOR_NS"
  local helm
  helm="$(bash hack/fetch-helm.sh)"
  # The ClusterRole OpenBao's service registration is bound to has one name per cluster; one
  # applied without Helm (e.g. `kubectl apply -k deploy`, or the node tests' set-up) is handed
  # to this release with Helm's own adoption metadata instead of failing the install.
  if kc get clusterrole "$SERVICE_REGISTRATION_CLUSTER_ROLE" >/dev/null 2>&1; then
    kc label --overwrite clusterrole "$SERVICE_REGISTRATION_CLUSTER_ROLE" app.kubernetes.io/managed-by=Helm >/dev/null
    kc annotate --overwrite clusterrole "$SERVICE_REGISTRATION_CLUSTER_ROLE" \
      meta.helm.sh/release-name="$HELM_RELEASE" meta.helm.sh/release-namespace="$OPERATOR_NS" >/dev/null
  fi
  # --skip-crds: Helm installs CRDs only once and never upgrades them; the lane applies them
  # itself (above) so a changed API always reaches the cluster. One replica: leader election
  # stays on; WATCH_NAMESPACE keeps it to the lane's tenant on a shared cluster.
  "$helm" --kubeconfig "$LANE_KUBECONFIG" upgrade --install "$HELM_RELEASE" charts/openbao-operator \
    --namespace "$OPERATOR_NS" --skip-crds --wait --timeout 180s \
    --set replicaCount=1 --set watchNamespace="$TENANT_NS" \
    --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="${OPERATOR_IMAGE##*:}" >/dev/null
  state_set created_helm 1
  # The Pod of the old ReplicaSet may still be terminating after an upgrade; wait for the new one.
  kc -n "$OPERATOR_NS" rollout status deployment/openbao-operator --timeout=180s >/dev/null
}

# --- the platform tools behind the same edge ----------------------------------------------------
# Prometheus (both backends) scrapes the operator; its UI and API are at prometheus.lane.localhost.
deploy_monitoring() {
  ensure_namespace "$MONITORING_NS"
  restrict_namespace "$MONITORING_NS"
  sed "s|docker.io/prom/prometheus:v[0-9.]*|docker.io/prom/prometheus:v$PROMETHEUS_VERSION|" deploy/lane/monitoring.yaml \
    | kc apply -f - >/dev/null
  kc -n "$MONITORING_NS" rollout status deployment/prometheus --timeout=180s >/dev/null || {
    kc -n "$MONITORING_NS" logs deployment/prometheus --tail=20 >&2 || true
    die "Prometheus did not become ready in 180 s (its log above)"
  }
}

# Argo CD on the hermetic node (deploy/lane/argocd.yaml, images from hack/build-argocd.sh): on by
# default with the Development profile; LANE_ARGOCD=0 leaves it out, =1 adds it to the hardened lane.
argocd_wanted() {
  [[ "$(state_get backend)" == node ]] || return 1
  case "${LANE_ARGOCD:-}" in
    1) return 0 ;;
    0) return 1 ;;
    *) [[ "$PROFILE" != hardened ]] ;;
  esac
}

# The admin password is generated into .lane/argocd-admin-password and goes into argocd-secret as
# a bcrypt hash (the argocd binary hashes it from stdin), with a generated JWT signing key, by a
# patch from a private file: nothing on a command line, nothing printed.
deploy_node_argocd() {
  local dir patch
  dir="$(bash hack/build-argocd.sh)"
  apply_crds argocd applications.argoproj.io -f "$dir/crds/"
  wait_established applications.argoproj.io appprojects.argoproj.io
  sed -e "s|quay.io/argoproj/argocd:v[0-9.]*|quay.io/argoproj/argocd:$ARGOCD_VERSION|" \
    -e "s|docker.io/library/redis:[0-9.]*|docker.io/library/redis:$ARGOCD_REDIS_VERSION|" deploy/lane/argocd.yaml \
    | kc apply -f - >/dev/null
  state_set created_ns_argocd 1
  lane_secret argocd-admin-password 16 >/dev/null
  patch="$LANE_DIR/argocd-secret.patch.json"
  (
    umask 077
    # It reads one line from stdin (the file has no newline of its own).
    hash="$(printf '%s\n' "$(cat "$LANE_DIR/argocd-admin-password")" | "$dir/bin/argocd" account bcrypt | sed 's/^Password: //')"
    [[ "$hash" == '$2'* ]] || die "argocd account bcrypt gave no bcrypt hash"
    printf '{"stringData":{"admin.password":"%s","admin.passwordMtime":"%s","server.secretkey":"%s"}}' \
      "$hash" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(openssl rand -base64 32)" > "$patch"
  )
  kc -n argocd patch secret argocd-secret --type merge --patch-file "$patch" >/dev/null
  rm -f "$patch"
  local workload
  for workload in deployment/argocd-redis deployment/argocd-repo-server statefulset/argocd-application-controller \
    deployment/argocd-server; do
    kc -n argocd rollout status "$workload" --timeout=300s >/dev/null || {
      kc -n argocd logs "$workload" --all-containers --tail=20 >&2 || true
      die "Argo CD's $workload did not become ready in 300 s (its log above)"
    }
  done
  state_set created_argocd 1
}

# k3d users are online: Grafana (with charts/openbao-operator/dashboards/openbao-operator.json and the lane's
# Prometheus as its data source) and Argo CD from their official Helm repositories, pinned in
# hack/versions.env, each behind the edge (which terminates TLS, so both serve plain HTTP inside).
# The hermetic node reaches no chart repository or image registry: there it says so.
deploy_k3d_tools() {
  local helm; helm="$(bash hack/fetch-helm.sh)"
  lane_secret grafana-admin-password 16 >/dev/null
  ensure_namespace grafana
  kc -n grafana create secret generic grafana-admin --from-literal=admin-user=admin \
    --from-file=admin-password="$LANE_DIR/grafana-admin-password" --dry-run=client -o yaml | kc apply -f - >/dev/null
  "$helm" --kubeconfig "$LANE_KUBECONFIG" upgrade --install grafana grafana \
    --repo https://grafana.github.io/helm-charts --version "$GRAFANA_CHART_VERSION" \
    --namespace grafana --wait --timeout 300s -f deploy/lane/grafana/values.yaml \
    --set-file 'dashboards.openbao.openbao-operator.json=charts/openbao-operator/dashboards/openbao-operator.json' >/dev/null
  state_set created_grafana 1
  ensure_namespace argocd
  "$helm" --kubeconfig "$LANE_KUBECONFIG" upgrade --install argocd argo-cd \
    --repo https://argoproj.github.io/argo-helm --version "$ARGOCD_CHART_VERSION" \
    --namespace argocd --wait --timeout 600s -f deploy/lane/argocd-values.yaml >/dev/null
  state_set created_argocd 1
  kc apply -f deploy/lane/k3d-tools-routes.yaml >/dev/null
}

# The operator's count of Kubernetes writes, through the apiserver's Service proxy (works on both
# backends without reaching the Service from the host).
operator_kube_writes() {
  kc get --raw "/api/v1/namespaces/$OPERATOR_NS/services/openbao-operator-metrics:http/proxy/metrics" 2>/dev/null \
    | awk '$1 == "openbao_operator_kube_writes_total" { print $2 }'
}

# --- AppArmor: opted out only where the node cannot apply it ------------------------------------
apparmor_decision() {
  local backend="$1"
  if [[ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" != Y ]]; then
    APPARMOR=false
    APPARMOR_WHY="this kernel has no AppArmor (/sys/module/apparmor/parameters/enabled is not Y): a RuntimeDefault profile could not be applied. A node limitation, not a preferred default."
  elif [[ "$backend" == k3d ]] && ! docker exec "k3d-$K3D_CLUSTER-server-0" sh -c 'command -v apparmor_parser' >/dev/null 2>&1; then
    APPARMOR=false
    APPARMOR_WHY="the k3s node container has no apparmor_parser, so containerd cannot load the RuntimeDefault profile. A node limitation, not a preferred default."
  else
    APPARMOR=true
    APPARMOR_WHY="the node supports AppArmor: RuntimeDefault profile on."
  fi
}

# --- the hardened lane: cert-manager and the transit seal ---------------------------------------
# cert-manager: on the hermetic node our build of its controller (hack/build-cert-manager.sh, its
# CRDs beside it) with deploy/lane/cert-manager-node.yaml; on k3d its official chart. One that
# runs already (a node test leaves one up) is used and left in place on lane-down.
deploy_cert_manager() {
  local backend="$1" helm
  if kc get deployment -n "$CERT_MANAGER_NS" cert-manager >/dev/null 2>&1 \
    && [[ "$(state_get created_cert_manager)" != 1 ]]; then
    log "cert-manager runs already in namespace $CERT_MANAGER_NS: using it, and leaving it up on lane-down"
    state_set created_cert_manager 0
  elif [[ "$backend" == k3d ]]; then
    helm="$(bash hack/fetch-helm.sh)"
    ensure_namespace "$CERT_MANAGER_NS"
    if ! kc get crd certificates.cert-manager.io >/dev/null 2>&1; then state_set created_crds_cert_manager 1; fi
    "$helm" --kubeconfig "$LANE_KUBECONFIG" upgrade --install cert-manager cert-manager \
      --repo https://charts.jetstack.io --version "$CERT_MANAGER_VERSION" --namespace "$CERT_MANAGER_NS" \
      --set crds.enabled=true --wait --timeout 300s >/dev/null
    state_set created_cert_manager 1
  else
    local crds
    crds="$(dirname "$(bash hack/build-cert-manager.sh)")/crds"
    apply_crds cert_manager certificates.cert-manager.io -f "$crds"
    wait_established certificates.cert-manager.io certificaterequests.cert-manager.io issuers.cert-manager.io
    kc get namespace "$CERT_MANAGER_NS" >/dev/null 2>&1 || state_set created_ns_cert_manager 1
    sed "s|@IMAGE@|quay.io/jetstack/cert-manager-controller:$CERT_MANAGER_VERSION|" deploy/lane/cert-manager-node.yaml \
      | kc apply --server-side --force-conflicts --field-manager=openbao-lane -f - >/dev/null
    state_set created_cert_manager 1
  fi
  kc -n "$CERT_MANAGER_NS" rollout status deployment/cert-manager --timeout=180s >/dev/null
}

# Waits until a cert-manager object (issuer, certificate) of a namespace is Ready.
wait_cert_manager_ready() {
  wait_for_value "$2 $1/$3 Ready" True 120 -n "$1" "$2" "$3" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'
}

# `bao` inside the transit server's pod (its listener on loopback; hack/lane.sh never needs a
# route to it). A token goes in on stdin (-i), never on a command line.
transit_exec() { kc -n "$SEAL_NS" exec deploy/transit -c openbao -- "$@"; }

# What the lane's servers may do with the transit server, and how they log in: the transit
# engine, key $TRANSIT_KEY, a policy for encrypt/decrypt with it, the `kubernetes` auth method
# (TokenReview with the apiserver) and role $TRANSIT_ROLE bound to the servers' service account
# and their transit audience, handing out periodic tokens (the seal renews them). Idempotent;
# the root token that runs it is revoked at its end.
transit_provision_script() {
  cat <<SCRIPT
set -e
bao secrets list -format=json | grep -q '"transit/"' || bao secrets enable transit >/dev/null
bao read transit/keys/$TRANSIT_KEY >/dev/null 2>&1 || bao write -f transit/keys/$TRANSIT_KEY >/dev/null
printf '%s\n' 'path "transit/encrypt/$TRANSIT_KEY" { capabilities = ["update"] }' \
  'path "transit/decrypt/$TRANSIT_KEY" { capabilities = ["update"] }' | bao policy write $TRANSIT_KEY - >/dev/null
bao auth list -format=json | grep -q '"kubernetes/"' || bao auth enable kubernetes >/dev/null
bao write auth/kubernetes/config kubernetes_host=https://kubernetes.default.svc >/dev/null
bao write auth/kubernetes/role/$TRANSIT_ROLE bound_service_account_names=$SERVER_SERVICE_ACCOUNT \
  bound_service_account_namespaces=$TENANT_NS audience=$TRANSIT_LOGIN_AUDIENCE \
  token_policies=$TRANSIT_KEY token_no_default_policy=true token_period=1h >/dev/null
bao token revoke -self >/dev/null
SCRIPT
}

# The transit OpenBao in namespace $SEAL_NS (deploy/lane/hardened/transit.yaml): TLS from
# cert-manager, its own static seal key from .lane/transit-seal.key, initialized once (its
# recovery keys in .lane/transit-init.json, mode 600; the root token only until provisioning
# revoked it), then provisioned. Its CA certificate (never a key) goes to the Secret transit-ca
# of the tenant namespace, which spec.unseal.transit.caSecretRef names.
deploy_transit() {
  local version status init="$LANE_DIR/transit-init.json"
  version="${OPENBAO_VERSIONS##* }"
  ensure_namespace "$SEAL_NS"
  restrict_namespace "$SEAL_NS"
  [[ -s "$LANE_DIR/transit-seal.key" ]] || (umask 077; head -c 32 /dev/urandom > "$LANE_DIR/transit-seal.key")
  kc -n "$SEAL_NS" create secret generic transit-seal-key --from-file=seal.key="$LANE_DIR/transit-seal.key" \
    --dry-run=client -o yaml | kc apply -f - >/dev/null
  sed "s/LANE_TRANSIT_VERSION/$version/" deploy/lane/hardened/transit.yaml | kc apply -f - >/dev/null
  state_set created_transit 1
  wait_cert_manager_ready "$SEAL_NS" certificate transit-tls
  kc -n "$SEAL_NS" rollout status deployment/transit --timeout=180s >/dev/null
  # `bao status` exits 2 while sealed; its JSON says what we need either way.
  status="$(transit_exec bao status -format=json 2>/dev/null || true)"
  if [[ "$(jq -r '.initialized // false' <<< "$status" 2>/dev/null)" != true ]]; then
    log "initializing the transit server (OpenBao $version)"
    (umask 077; transit_exec bao operator init -format=json > "$init.tmp") || die "bao operator init in $SEAL_NS/transit failed"
    mv "$init.tmp" "$init"
    state_set transit_provisioned 0
  fi
  wait_for_transit_active
  if [[ "$(state_get transit_provisioned)" != 1 ]]; then
    local root
    root="$(jq -r '.root_token // ""' "$init")"
    [[ -n "$root" ]] || die "the transit server is initialized but not provisioned, and $init holds no root token: run 'make lane-down' to start it afresh"
    { printf '%s\n' "$root"; transit_provision_script; } \
      | kc -n "$SEAL_NS" exec -i deploy/transit -c openbao -- sh -c 'read -r BAO_TOKEN && export BAO_TOKEN && exec sh -s' \
      || die "provisioning the transit server failed"
    (umask 077; jq 'del(.root_token)' "$init" > "$init.tmp") && mv "$init.tmp" "$init"
    state_set transit_provisioned 1
    log "transit server provisioned: key $TRANSIT_KEY, role $TRANSIT_ROLE for $TENANT_NS/$SERVER_SERVICE_ACCOUNT (audience $TRANSIT_LOGIN_AUDIENCE); root token revoked"
  fi
  ensure_namespace "$TENANT_NS"
  restrict_namespace "$TENANT_NS"
  kc -n "$TENANT_NS" create secret generic transit-ca \
    --from-literal=ca.crt="$(kc -n "$SEAL_NS" get secret transit-tls -o 'jsonpath={.data.ca\.crt}' | base64 -d)" \
    --dry-run=client -o yaml | kc apply -f - >/dev/null
}

wait_for_transit_active() {
  local deadline=$(( $(date +%s) + 120 )) status=""
  while (( $(date +%s) < deadline )); do
    status="$(transit_exec bao status -format=json 2>/dev/null || true)"
    [[ "$(jq -r '.sealed == false and .is_self == true' <<< "$status" 2>/dev/null)" == true ]] && return 0
    sleep 1
  done
  die "the transit server is not unsealed and active after 120 s (bao status: ${status:-nothing})"
}

# --- the lane's OpenBaoCluster -----------------------------------------------------------------
deploy_tenant() {
  ensure_namespace "$TENANT_NS"
  restrict_namespace "$TENANT_NS"
  if [[ "$PROFILE" == hardened ]]; then
    kc apply -f deploy/lane/hardened/openbao-ca.yaml >/dev/null
    wait_cert_manager_ready "$TENANT_NS" issuer openbao-ca
    sed "s/LANE_APPARMOR_ENABLED/$APPARMOR/" deploy/lane/hardened/openbao-cluster.yaml | kc apply -f - >/dev/null
    return
  fi
  lane_secret demo-password 16 >/dev/null
  kc -n "$TENANT_NS" create secret generic demo-password --from-file=password="$LANE_DIR/demo-password" \
    --dry-run=client -o yaml | kc apply -f - >/dev/null
  sed "s/LANE_APPARMOR_ENABLED/$APPARMOR/" deploy/lane/openbao-cluster.yaml | kc apply -f - >/dev/null
}

# The conditions lane-up waits for: the hardened lane's cluster also has its audit devices on.
wanted_conditions() {
  echo Available TLSReady GatewayIntegrationReady BackupConfigurationReady
  [[ "$PROFILE" == hardened ]] && echo AuditReady UnsealConfigurationReady
  return 0
}

wait_available() {
  local type args=()
  for type in $(wanted_conditions); do args+=(--condition "$type"); done
  lane_tool wait-ready "${args[@]}" \
    || die "the lane's OpenBaoCluster is not $(wanted_conditions | tr '\n' ' ')after ${LANE_TIMEOUT:-600}s"
}

# Prometheus verifies OpenBao's servers with the cluster's CA: its certificate (never the key)
# goes into the ConfigMap openbao-ca in the monitoring namespace. Prometheus reads it when it
# starts, so it restarts when the certificate is new. The source is the trust bundle the operator
# publishes for the Gateway (ConfigMap <cluster>-tls-ca, names::gateway_ca_config_map), which
# holds the operator's CA or cert-manager's alike.
share_openbao_ca() {
  local ca current
  ca="$(kc -n "$TENANT_NS" get configmap "$CLUSTER-tls-ca" -o 'jsonpath={.data.ca\.crt}')"
  [[ -n "$ca" ]] || die "the cluster's trust bundle ConfigMap $TENANT_NS/$CLUSTER-tls-ca has no ca.crt"
  current="$(kc -n "$MONITORING_NS" get configmap openbao-ca -o 'jsonpath={.data.ca\.crt}' 2>/dev/null || true)"
  [[ "$current" == "$ca" ]] && return 0
  kc -n "$MONITORING_NS" create configmap openbao-ca --from-literal=ca.crt="$ca" --dry-run=client -o yaml \
    | kc apply -f - >/dev/null
  kc -n "$MONITORING_NS" rollout restart deployment/prometheus >/dev/null
  kc -n "$MONITORING_NS" rollout status deployment/prometheus --timeout=180s >/dev/null
}

# The address the host reaches the edge at: the node's IP on the hermetic node, localhost on k3d.
edge_address() {
  if [[ "$(state_get backend)" == k3d ]]; then echo 127.0.0.1; else echo 198.19.255.2; fi
}

# One line per tool the lane put behind the edge.
tools_behind_the_edge() {
  local base=".$LANE_DOMAIN:$EDGE_PORT"
  echo "  https://prometheus$base   Prometheus with the operator's and OpenBao's metrics"
  [[ "$(state_get store)" == rustfs ]] \
    && echo "  https://rustfs$base/rustfs/console/   RustFS console (keys: .lane/s3-access-key, .lane/s3-secret-key)"
  [[ "$(state_get created_grafana)" == 1 ]] \
    && echo "  https://grafana$base   Grafana, dashboard \"OpenBao operator\" (admin / .lane/grafana-admin-password)"
  if [[ "$(state_get created_argocd)" == 1 && "$(state_get backend)" == node ]]; then
    echo "  https://argocd$base   Argo CD API and CLI, no web UI in this build (admin / .lane/argocd-admin-password)"
  elif [[ "$(state_get created_argocd)" == 1 ]]; then
    echo "  https://argocd$base   Argo CD (admin; password: kubectl -n argocd get secret argocd-initial-admin-secret -o jsonpath='{.data.password}' | base64 -d)"
  fi
  return 0
}

print_login() {
  local addr; addr="$(edge_address)"
  local url="https://$OPENBAO_HOST:$EDGE_PORT" resolve=""
  # The JWT roles accept only the cluster's own audience, which the operator publishes in
  # status.jwtAudience (until its first status write, the command reads it there itself).
  local audience
  audience="$(kc -n "$TENANT_NS" get openbaocluster "$CLUSTER" -o 'jsonpath={.status.jwtAudience}' 2>/dev/null || true)"
  [[ -n "$audience" ]] \
    || audience="\"\$($KUBECTL --kubeconfig $LANE_KUBECONFIG -n $TENANT_NS get openbaocluster $CLUSTER -o jsonpath='{.status.jwtAudience}')\""
  [[ "$addr" != 127.0.0.1 ]] && resolve=" --resolve $OPENBAO_HOST:$EDGE_PORT:$addr"
  local demo="" cli
  if [[ "$(lane_profile)" == hardened ]]; then
    cli="  # or the bao CLI (when $OPENBAO_HOST resolves to $addr), with the same token
  BAO_ADDR=$url BAO_CACERT=.lane/ca.crt bao write auth/jwt-operator/login role=admin jwt=@<(printf '%s' \"\$TOKEN\")"
  else
    demo="
  # userpass (demo login, local only; password in .lane/demo-password). Secrets go in on stdin
  # (printf is a shell builtin): on a command line ps would show them to every local user.
  printf '{\"password\":\"%s\"}' \"\$(cat .lane/demo-password)\" \\
    | curl -sS --cacert .lane/ca.crt$resolve $url/v1/auth/userpass/login/demo --data-binary @-
"
    cli="  # or the bao CLI (when $OPENBAO_HOST resolves to $addr)
  BAO_ADDR=$url BAO_CACERT=.lane/ca.crt bao login -method=userpass username=demo"
  fi
  cat <<EOF

OpenBao ($(lane_profile) profile) is at $url through the shared Traefik Gateway ($EDGE_NS/edge, TLS for *.$LANE_DOMAIN).
$( [[ -n "$resolve" ]] && echo "The hermetic node's edge is $addr:$EDGE_PORT: resolve the name there (curl --resolve, or an /etc/hosts line '$addr $OPENBAO_HOST')." )
The lane CA that signed the edge certificate: $LANE_DIR/ca.crt
$demo
  # JWT admin login with a service-account token
  TOKEN=\$($KUBECTL --kubeconfig $LANE_KUBECONFIG -n $TENANT_NS create token bao-admin --audience $audience)
  printf '{"role":"admin","jwt":"%s"}' "\$TOKEN" \\
    | curl -sS --cacert .lane/ca.crt$resolve $url/v1/auth/jwt-operator/login --data-binary @-

$cli

Behind the same edge (same CA, same address):
$(tools_behind_the_edge)

kubectl: export KUBECONFIG=$LANE_KUBECONFIG   ($KUBECTL)
EOF
}

# --- commands ----------------------------------------------------------------------------------
cmd_up() {
  local began backend applied writes_before writes_after
  began="$(now_ms)"
  PHASE_MARK="$began"
  backend="$(pick_backend)"
  pick_profile
  [[ -f "$STATE" && "$(state_get backend)" != "$backend" && -n "$(state_get backend)" ]] \
    && die "the lane is up on $(state_get backend); run 'make lane-down' first"
  [[ -n "$(state_get backend)" && "$(lane_profile)" != "$PROFILE" ]] \
    && die "the lane is up with profile $(lane_profile); run 'make lane-down' first"
  state_set backend "$backend"
  state_set profile "$PROFILE"
  step "cluster: $backend"
  if [[ "$backend" == k3d ]]; then k3d_cluster_up; else node_cluster_up; fi
  state_set kubeconfig "$LANE_KUBECONFIG"
  phase_done cluster

  pick_store "$backend"
  state_set store "$STORE"
  step "images"
  load_images "$backend" "$STORE"
  phase_done images

  step "Gateway API $GATEWAY_API_VERSION CRDs"
  apply_crds gateway gateways.gateway.networking.k8s.io -f "$(bash hack/fetch-gateway-api-crds.sh)"
  wait_established gateways.gateway.networking.k8s.io httproutes.gateway.networking.k8s.io \
    backendtlspolicies.gateway.networking.k8s.io
  phase_done gateway_api

  step "edge: Traefik $TRAEFIK_VERSION, GatewayClass lane-traefik, Gateway $EDGE_NS/edge (https *.$LANE_DOMAIN :$EDGE_PORT)"
  lane_pki
  deploy_edge
  phase_done edge

  step "S3 store in namespace $STORE_NS: $STORE"
  log "S3 store: $STORE, because $STORE_WHY"
  deploy_store "$backend"
  phase_done store

  if [[ "$PROFILE" == hardened ]]; then
    step "cert-manager $CERT_MANAGER_VERSION (namespace $CERT_MANAGER_NS)"
    deploy_cert_manager "$backend"
    phase_done cert_manager
    step "the transit seal: a second OpenBao in namespace $SEAL_NS"
    deploy_transit
    phase_done transit
  fi

  step "operator (charts/openbao-operator, $OPERATOR_IMAGE)"
  deploy_operator
  phase_done operator

  step "platform tools behind the edge"
  deploy_monitoring
  if [[ "$backend" == k3d ]]; then
    deploy_k3d_tools
    log "Prometheus, Grafana (dashboard \"OpenBao operator\") and Argo CD are behind the edge"
  elif argocd_wanted; then
    deploy_node_argocd
    log "Prometheus (Debian's build, hack/fetch-prometheus.sh) and Argo CD $ARGOCD_VERSION (built from its Go" \
      "module, hack/build-argocd.sh; API and CLI, no web UI) are behind the edge; Grafana is not: its server" \
      "is on no registry this machine reaches (docs/lane.md, \"Platform tools behind the edge\")"
  else
    log "Prometheus (Debian's build, hack/fetch-prometheus.sh) is behind the edge; Argo CD is off" \
      "(LANE_ARGOCD=${LANE_ARGOCD:-0}, profile $PROFILE) and Grafana's server is on no registry this machine" \
      "reaches (docs/lane.md, \"Platform tools behind the edge\")"
  fi
  phase_done tools

  step "OpenBaoCluster $TENANT_NS/$CLUSTER ($PROFILE profile)"
  apparmor_decision "$backend"
  log "workloadHardening.appArmorEnabled=$APPARMOR: $APPARMOR_WHY"
  writes_before="$(operator_kube_writes)"
  applied="$(now_ms)"
  deploy_tenant
  wait_available
  phase_done cluster_available
  writes_after="$(operator_kube_writes)"
  local total apply writes=""
  total="$(secs_since "$began")"; apply="$(secs_since "$applied")"
  [[ -n "$writes_before" && -n "$writes_after" ]] && writes=$(( ${writes_after%.*} - ${writes_before%.*} ))
  state_set last_up_seconds "$total"
  state_set last_apply_to_available_seconds "$apply"
  state_set last_kube_writes "${writes:-unknown}"
  step "Prometheus: OpenBao's metrics (the cluster's CA certificate into $MONITORING_NS/openbao-ca)"
  share_openbao_ca
  [[ "$PROFILE" == hardened ]] && hardened_report
  step "lane up on $backend ($PROFILE profile)"
  log "cluster $(wanted_conditions | tr '\n' ' ' | sed 's/ $//; s/ /, /g'): ${total}s after lane-up started," \
    "${apply}s after the CR was applied (${writes:-unknown} Kubernetes writes by the operator)"
  log "steps: ${PHASES[*]}"
  log "S3 store: $STORE ($STORE_WHY); backups: bucket $BUCKET, Secret $TENANT_NS/openbao-backup-s3"
  log "AppArmor: appArmorEnabled=$APPARMOR: $APPARMOR_WHY"
  print_login
}

# What the hardened lane promises once it is up: no SecurityRisk, and no seal key, root token or
# recovery key Secret of the cluster in the tenant namespace.
hardened_report() {
  local risk secrets
  risk="$(kc -n "$TENANT_NS" get openbaocluster "$CLUSTER" \
    -o 'jsonpath={.status.conditions[?(@.type=="SecurityRisk")].status}/{.status.conditions[?(@.type=="SecurityRisk")].reason}')"
  [[ "${risk%%/*}" != True ]] || die "the hardened lane's cluster reports SecurityRisk ($risk)"
  secrets="$(kc -n "$TENANT_NS" get secrets -o name | grep -E -- "/$CLUSTER-(unseal-key|root-token|recovery-key)\$" || true)"
  [[ -z "$secrets" ]] || die "the hardened lane's cluster has key Secrets: $secrets"
  log "hardened: SecurityRisk ${risk:-absent}; no seal key, root token or recovery key Secret in $TENANT_NS;" \
    "$(kc -n "$TENANT_NS" get openbaocluster "$CLUSTER" -o 'jsonpath={.status.conditions[?(@.type=="UnsealConfigurationReady")].message}')"
}

# Objects of a kind in any namespace, as "namespace/name ..." (empty when none or no such kind).
objects_left() {
  kc get "$1" -A -o 'jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {end}' 2>/dev/null || true
}

cmd_down() {
  [[ -f "$STATE" ]] || { log "no lane state in .lane/: nothing to remove"; return 0; }
  local backend; backend="$(state_get backend)"
  LANE_KUBECONFIG="$(state_get kubeconfig)"
  if [[ "$backend" == k3d && "$(state_get created_k3d)" == 1 ]]; then
    step "deleting k3d cluster $K3D_CLUSTER (lane-up created it)"
    k3d cluster delete "$K3D_CLUSTER"
  elif [[ -n "$LANE_KUBECONFIG" && -f "$LANE_KUBECONFIG" ]] && kc get --raw /readyz >/dev/null 2>&1; then
    step "removing the lane's objects from the $backend cluster (the cluster stays)"
    # The OpenBaoRestores (their finalizer needs the operator) and the OpenBaoClusters first,
    # while the operator still runs: the lane's and any a restore rehearsal added.
    kc -n "$TENANT_NS" delete openbaorestores --all --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1 || true
    kc -n "$TENANT_NS" delete openbaoclusters --all --ignore-not-found --wait=true --timeout=120s >/dev/null 2>&1 || true
    if [[ "$(state_get created_helm)" == 1 ]]; then
      "$(bash hack/fetch-helm.sh)" --kubeconfig "$LANE_KUBECONFIG" uninstall "$HELM_RELEASE" \
        --namespace "$OPERATOR_NS" --wait --timeout 120s >/dev/null 2>&1 || true
    fi
    local release
    for release in grafana argocd; do
      if [[ "$backend" == k3d && "$(state_get "created_$release")" == 1 ]]; then
        "$(bash hack/fetch-helm.sh)" --kubeconfig "$LANE_KUBECONFIG" uninstall "$release" \
          --namespace "$release" --wait --timeout 180s >/dev/null 2>&1 || true
      fi
    done
    if [[ "$(state_get created_edge)" == 1 ]]; then
      kc delete gatewayclass lane-traefik --ignore-not-found >/dev/null
      kc delete clusterrolebinding,clusterrole lane-traefik-gateway --ignore-not-found >/dev/null
    fi
    # Argo CD on the node (deploy/lane/argocd.yaml): its cluster-wide roles; the namespace below.
    [[ "$backend" == node && "$(state_get created_argocd)" == 1 ]] \
      && kc delete clusterrolebinding,clusterrole argocd-server argocd-application-controller --ignore-not-found >/dev/null
    [[ "$(state_get created_transit)" == 1 ]] \
      && kc delete clusterrolebinding lane-transit-tokenreview --ignore-not-found >/dev/null
    if [[ "$(state_get created_cert_manager)" == 1 ]]; then
      if [[ "$backend" == k3d ]]; then
        "$(bash hack/fetch-helm.sh)" --kubeconfig "$LANE_KUBECONFIG" uninstall cert-manager \
          --namespace "$CERT_MANAGER_NS" --wait --timeout 180s >/dev/null 2>&1 || true
      else
        sed "s|@IMAGE@|unused|" deploy/lane/cert-manager-node.yaml | kc delete -f - --ignore-not-found --wait=false >/dev/null 2>&1 || true
      fi
    fi
    local ns key namespaces=()
    for ns in "$TENANT_NS" "$SEAL_NS" "$STORE_NS" "$MONITORING_NS" grafana argocd "$EDGE_NS" "$OPERATOR_NS" "$CERT_MANAGER_NS"; do
      key="created_ns_$(tr -c 'a-z0-9\n' '_' <<< "$ns")"
      [[ "$(state_get "$key")" == 1 ]] && namespaces+=("$ns")
    done
    if (( ${#namespaces[@]} )); then
      kc delete namespace "${namespaces[@]}" --ignore-not-found --wait=true --timeout=300s >/dev/null
      log "deleted namespaces ${namespaces[*]}"
    fi
    # CRDs lane-up installed go too, unless something else uses them by now (deleting a CRD
    # deletes every object of its kind, cluster-wide).
    if [[ "$(state_get created_crds_openbao)" == 1 ]]; then
      if [[ -z "$(objects_left openbaoclusters.openbao.org)" ]]; then
        kc delete -f "$LANE_CRDS" --ignore-not-found >/dev/null
        log "deleted the OpenBao CRDs (lane-up installed them)"
      else
        log "kept the OpenBao CRDs: other OpenBaoClusters use them now ($(objects_left openbaoclusters.openbao.org))"
      fi
    fi
    if [[ "$(state_get created_crds_cert_manager)" == 1 ]]; then
      if [[ -z "$(objects_left certificates.cert-manager.io)$(objects_left issuers.cert-manager.io)" ]]; then
        kc get crd -o name | grep -E '\.(acme\.)?cert-manager\.io$' | xargs -r "$KUBECTL" --kubeconfig "$LANE_KUBECONFIG" \
          delete --ignore-not-found >/dev/null 2>&1 || true
        log "deleted the cert-manager CRDs (lane-up installed them)"
      else
        log "kept the cert-manager CRDs: other Certificates/Issuers use them now"
      fi
    fi
    if [[ "$(state_get created_crds_argocd)" == 1 ]]; then
      if [[ -z "$(objects_left applications.argoproj.io)" ]]; then
        kc delete crd applications.argoproj.io applicationsets.argoproj.io appprojects.argoproj.io --ignore-not-found >/dev/null
        log "deleted the Argo CD CRDs (lane-up installed them)"
      else
        log "kept the Argo CD CRDs: other Applications use them now ($(objects_left applications.argoproj.io))"
      fi
    fi
    if [[ "$(state_get created_crds_gateway)" == 1 ]]; then
      local in_use
      in_use="$(objects_left gateways.gateway.networking.k8s.io)$(objects_left httproutes.gateway.networking.k8s.io)"
      if [[ -z "$in_use" ]]; then
        kc delete -f "$(bash hack/fetch-gateway-api-crds.sh)" --ignore-not-found >/dev/null
        log "deleted the Gateway API CRDs (lane-up installed them)"
      else
        log "kept the Gateway API CRDs: other Gateways/HTTPRoutes use them now ($in_use)"
      fi
    fi
    if [[ "$backend" == node && "$(state_get started_node)" == 1 ]]; then
      step "stopping the hermetic node (lane-up started it)"
      bash hack/cluster.sh down
    elif [[ "$backend" == node ]]; then
      log "the hermetic node was running before lane-up: left up"
    fi
  else
    log "the lane's cluster is not reachable: nothing to remove there"
  fi
  # Keep the CA (a browser may trust it) and the generated passwords; forget what was created.
  rm -f "$STATE" "$LANE_DIR/kubeconfig"
  log "lane down"
}

cmd_status() {
  [[ -f "$STATE" ]] || { echo "lane: down (no .lane/state.env)"; return 0; }
  LANE_KUBECONFIG="$(state_get kubeconfig)"
  echo "lane: backend $(state_get backend), profile $(lane_profile), kubeconfig $LANE_KUBECONFIG"
  kc get --raw /readyz >/dev/null 2>&1 || { echo "the lane's cluster is not reachable"; return 1; }
  kc get pods -n "$EDGE_NS" -o wide --no-headers 2>/dev/null | sed 's/^/  edge     /'
  kc get pods -n "$STORE_NS" --no-headers 2>/dev/null | sed 's/^/  storage  /'
  kc get pods -n "$OPERATOR_NS" --no-headers 2>/dev/null | sed 's/^/  operator /'
  kc get pods -n "$MONITORING_NS" --no-headers 2>/dev/null | sed 's/^/  metrics  /'
  kc get pods -n "$TENANT_NS" --no-headers 2>/dev/null | sed 's/^/  openbao  /'
  if [[ "$(lane_profile)" == hardened ]]; then
    kc get pods -n "$SEAL_NS" --no-headers 2>/dev/null | sed 's/^/  seal     /'
    kc get pods -n "$CERT_MANAGER_NS" --no-headers 2>/dev/null | sed 's/^/  certs    /'
  fi
  kc -n "$EDGE_NS" get gateway edge 2>/dev/null || true
  kc -n "$TENANT_NS" get openbaocluster "$CLUSTER" 2>/dev/null || true
  kc -n "$TENANT_NS" get openbaocluster "$CLUSTER" \
    -o 'jsonpath={range .status.conditions[*]}  {.type}={.status} ({.reason}){"\n"}{end}' 2>/dev/null || true
  echo "last lane-up: $(state_get last_up_seconds)s to Available, $(state_get last_apply_to_available_seconds)s from CR apply ($(state_get last_kube_writes) operator writes)"
  print_login
}

# --- rehearsals: backup, restore, upgrade (docs/lane.md) ----------------------------------------
# Each works on the running lane (`up` first): reads the kubeconfig and backend from the state.
lane_attach() {
  [[ -f "$STATE" && -n "$(state_get backend)" ]] || die "the lane is not up: run 'make lane-up' first"
  LANE_KUBECONFIG="$(state_get kubeconfig)"
  kc get --raw /readyz >/dev/null 2>&1 || die "the lane's cluster is not reachable ($LANE_KUBECONFIG)"
}

# One signed S3 GET (curl's SigV4, keys through a config on a pipe); prints the body, fails
# unless the answer is 200. The query, if any, must be in canonical order and encoded.
s3_get() {
  local url="$1" body code
  body="$(mktemp)"
  code="$(curl -sS -o "$body" -w '%{http_code}' \
    -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
    --aws-sigv4 "aws:amz:us-east-1:s3" \
    --config <(printf 'user = "%s:%s"\n' "$(lane_secret s3-access-key 8)" "$(lane_secret s3-secret-key 20)") \
    "$url" 2>/dev/null || true)"
  if [[ "$code" != 200 ]]; then
    rm -f "$body"
    log "S3 GET ${url%%\?*} answered HTTP $code"
    return 1
  fi
  cat "$body"
  rm -f "$body"
}

# ListObjectsV2 of the lane bucket under a prefix, as "key<TAB>size<TAB>last-modified<TAB>etag"
# lines in the store's (lexicographic) order. Usage: s3_list <prefix> <endpoint>.
s3_list() {
  local prefix="$1" endpoint="$2" xml
  xml="$(s3_get "$endpoint/$BUCKET?list-type=2&prefix=$(jq -rn --arg p "$prefix" '$p|@uri')")" || return 1
  # One <Contents> element per line, then its fields.
  sed 's/<Contents>/\n<Contents>/g' <<< "$xml" | { grep '^<Contents>' || true; } | while read -r entry; do
    printf '%s\t%s\t%s\t%s\n' \
      "$(sed -n 's:.*<Key>\([^<]*\)</Key>.*:\1:p' <<< "$entry")" \
      "$(sed -n 's:.*<Size>\([^<]*\)</Size>.*:\1:p' <<< "$entry")" \
      "$(sed -n 's:.*<LastModified>\([^<]*\)</LastModified>.*:\1:p' <<< "$entry")" \
      "$(sed -n 's:.*<ETag>\([^<]*\)</ETag>.*:\1:p' <<< "$entry" | sed 's/&quot;//g; s/"//g')"
  done
}

# The lane cluster's backup key prefix: <pathPrefix>/<namespace>/<cluster>/.
backup_prefix() {
  local path_prefix
  path_prefix="$(kc -n "$TENANT_NS" get openbaocluster "$CLUSTER" -o 'jsonpath={.spec.backup.target.pathPrefix}')"
  echo "${path_prefix:+${path_prefix%/}/}$TENANT_NS/$CLUSTER/"
}

print_listed_object() {
  local key="$1" endpoint="$2" line
  line="$(s3_list "$key" "$endpoint" | awk -F'\t' -v k="$key" '$1 == k')" || true
  [[ -n "$line" ]] || die "the store does not list s3://$BUCKET/$key"
  IFS=$'\t' read -r key size modified etag <<< "$line"
  log "listed in the store: s3://$BUCKET/$key  $size bytes  last modified $modified${etag:+  ETag $etag}"
}

cmd_backup() {
  lane_attach
  local out rc=0 key
  out="$(lane_tool backup)" || rc=$?
  key="$(record_state "$out" last_backup_key)"
  (( rc == 0 )) || die "lane-backup failed (see above)"
  with_s3_endpoint "$(state_get backend)" print_listed_object "$key"
  printf '%s\n' "$key"
}

# The newest backup of the lane cluster in the store (keys start with the UTC time).
newest_backup_key() {
  local prefix; prefix="$(backup_prefix)"
  with_s3_endpoint "$(state_get backend)" s3_list "$prefix" | awk -F'\t' '$1 ~ /\.snap$/ { k = $1 } END { print k }'
}

# Restores KEY (default: the newest backup in the store) into the lane's cluster, or into
# LANE_RESTORE_CLUSTER (another OpenBaoCluster in the lane's namespace that the lane's operator
# watches; it needs the lane cluster's seal key). Prints each phase change; fails on Failed.
cmd_restore() {
  lane_attach
  local key="$1" target="${LANE_RESTORE_CLUSTER:-$CLUSTER}"
  if [[ -z "$key" ]]; then
    key="$(newest_backup_key)"
    [[ -n "$key" ]] || die "no backup of $TENANT_NS/$CLUSTER in s3://$BUCKET/$(backup_prefix): run 'make lane-backup' first"
    log "KEY not given: the newest backup in the store, $key"
  fi
  kc -n "$TENANT_NS" get openbaocluster "$target" >/dev/null || die "no OpenBaoCluster $TENANT_NS/$target"
  local out rc=0
  out="$(lane_tool restore --key "$key" --into "$target")" || rc=$?
  record_state "$out"
  (( rc == 0 )) || die "lane-restore failed (see above)"
}

# --- upgrade: phases, a probe through the Gateway every 200 ms, the HTTPRoute's conditions ---------
# The probe GETs sys/health through the edge (lane CA verified); 200 (active, or an unsealed
# standby) is success, anything else, including no answer within 1 s, a failed request.
cmd_upgrade() {
  lane_attach
  local version="$1" out rc=0
  [[ -n "$version" ]] || die "usage: make lane-upgrade VERSION=<OpenBao version>, e.g. VERSION=2.7.2"
  out="$(lane_tool upgrade --version "$version" --edge-address "$(edge_address)" --ca "$LANE_DIR/ca.crt" \
    --probe-url "https://$OPENBAO_HOST:$EDGE_PORT/v1/sys/health?standbyok=true&perfstandbyok=true")" || rc=$?
  record_state "$out"
  (( rc == 0 )) || die "lane-upgrade to $version failed (see above)"
}

# --- rehearsal: GitOps with Argo CD (hermetic node) -------------------------------------------
# The OpenBaoCluster of deploy/lane/gitops/ goes into the lane's own Git server (a git daemon in
# namespace argocd, deploy/lane/gitops/git-server.yaml); the Application openbao-gitops syncs it.
# Each sync is an `operation` the lane sets on the Application; the lane waits for it to succeed,
# for Synced and for Healthy (read from the cluster's Available condition by the health check in
# argocd-cm). Then the same sync again: the Rust side (lane gitops-resync) records every child's
# resourceVersion and the Jobs before it and proves nothing changed after it.
cmd_gitops() {
  lane_attach
  [[ "$(state_get created_argocd)" == 1 ]] \
    || die "Argo CD is not on this lane (hermetic node with LANE_ARGOCD=1, or the Development profile)"
  apparmor_decision "$(state_get backend)"
  local content="$LANE_DIR/gitops"
  rm -rf "$content"; mkdir -p "$content"
  sed "s/LANE_APPARMOR_ENABLED/$APPARMOR/" deploy/lane/gitops/openbao-gitops.yaml > "$content/openbao-gitops.yaml"
  kc -n argocd create configmap lane-gitops-content --from-file="$content" --dry-run=client -o yaml \
    | kc apply -f - >/dev/null
  sed "s|quay.io/argoproj/argocd:v[0-9.]*|quay.io/argoproj/argocd:$ARGOCD_VERSION|" deploy/lane/gitops/git-server.yaml \
    | kc apply -f - >/dev/null
  kc -n argocd rollout status deployment/lane-git --timeout=120s >/dev/null \
    || die "the lane's Git server did not become ready in 120 s"
  # The repo server must reach it before the Application exists: a first comparison against a
  # Service not yet routed hangs for a minute before it fails.
  local deadline=$(( $(date +%s) + 120 ))
  until kc -n argocd exec deploy/argocd-repo-server -- git ls-remote --heads "$GITOPS_REPO" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || die "Argo CD's repo server does not reach $GITOPS_REPO after 120 s"
    sleep 1
  done
  kc apply -f deploy/lane/gitops/application.yaml >/dev/null
  local out rc=0
  out="$(cargo run -q -p testkit --bin lane -- --kubeconfig "$LANE_KUBECONFIG" --namespace "$TENANT_NS" \
    --cluster openbao-gitops gitops --application openbao-gitops)" || rc=$?
  record_state "$out"
  (( rc == 0 )) || die "lane-gitops failed (see above)"
}

main() {
  KUBECTL="$(bash hack/build-kubernetes.sh apiserver)/kubectl"
  case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    backup) cmd_backup ;;
    restore) cmd_restore "${2:-${KEY:-}}" ;;
    upgrade) cmd_upgrade "${2:-${VERSION:-}}" ;;
    gitops) cmd_gitops ;;
    *) die "usage: hack/lane.sh up|down|status|backup|restore [KEY]|upgrade VERSION|gitops" ;;
  esac
}
# One line: bash has read all of it before running, so editing this file mid-run is harmless.
main "$@"; exit $?
