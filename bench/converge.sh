#!/usr/bin/env bash
# Benchmark (not a test): N OpenBaoClusters applied at once against the real hermetic apiserver.
# Prints and records: time until every cluster has all its objects and a status; the operator's
# write requests counted from the apiserver's own audit log (to converge, and per minute once
# converged); the operator's peak RSS and CPU; the apiserver's CPU.
# Usage: bench/converge.sh [N] (default 1000).
# Runs the operator as its own process (release build) so its memory is measured alone.
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
cd "$REPO_ROOT"
N="${1:-1000}"
OUT="bench/converge.md"
# The script's figures replace the part of $OUT between these markers; the rest stays.
BEGIN_MARK="<!-- bench/converge.sh: begin -->"
END_MARK="<!-- bench/converge.sh: end -->"
KUBECTL="$(bash hack/build-kubernetes.sh apiserver)/kubectl"
STATE="$(mktemp -d)"
cleanup() {
  [[ -n "${OP_PID:-}" ]] && kill "$OP_PID" 2>/dev/null && wait "$OP_PID" 2>/dev/null
  cargo run -q -p testkit --bin hermetic-k8s -- down --state-dir "$STATE/k8s" >/dev/null 2>&1 || true
  rm -rf "$STATE"
}
trap cleanup EXIT

cargo build -q --release -p openbao-operator
OPERATOR="${CARGO_TARGET_DIR:-target}/release/openbao-operator"
AUDIT="$STATE/audit.log"
cargo run -q -p testkit --bin hermetic-k8s -- apiserver-up --state-dir "$STATE/k8s" --audit-log "$AUDIT" >/dev/null
export KUBECONFIG="$STATE/k8s/kubeconfig"
"$KUBECTL" apply --server-side -f "$(bash hack/fetch-gateway-api-crds.sh)" >/dev/null
"$KUBECTL" apply --server-side -f deploy/crds.yaml >/dev/null
"$KUBECTL" wait --for condition=Established crd/openbaoclusters.openbao.org --timeout=60s >/dev/null
"$KUBECTL" create namespace openbao-operator-system >/dev/null
"$KUBECTL" create namespace bench >/dev/null

"$OPERATOR" run --http-addr 127.0.0.1:18080 --leader-election false > "$STATE/operator.log" 2>&1 &
OP_PID=$!
for _ in $(seq 100); do curl -sf 127.0.0.1:18080/readyz >/dev/null && break; sleep 0.1; done
writes() { curl -sf 127.0.0.1:18080/metrics | awk '/^openbao_operator_kube_writes_total/ {print $2}'; }
# The operator's write requests in the namespace `bench`, as the apiserver's audit log records
# them (kubectl's own requests, the CR applies, are told apart by their user agent).
audited_writes() {
  grep '"namespace":"bench"' "$AUDIT" | grep -vc '"userAgent":"kubectl' || true
}
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$1/stat"; }
APISERVER_PID="$(cat "$STATE/k8s/pids/kube-apiserver.pid")"
base_writes="$(writes)"

manifests="$STATE/clusters.yaml"
for i in $(seq 1 "$N"); do
  cat <<YAML
---
apiVersion: openbao.org/v1alpha1
kind: OpenBaoCluster
metadata: {name: bao-$i, namespace: bench}
spec:
  version: "2.7.2"
  profile: Development
  storage: {size: 1Gi}
  selfInit: {oidc: {adminServiceAccount: {name: bao-admin}}}
  gateway: {gatewayRef: {name: edge}, hostname: bao-$i.lane.localhost}
YAML
done > "$manifests"

start=$(date +%s.%N)
"$KUBECTL" apply --server-side -f "$manifests" >/dev/null
applied=$(date +%s.%N)
# Converged: every cluster has its StatefulSet and a status for generation 1.
while true; do
  sts=$("$KUBECTL" -n bench get statefulsets --no-headers 2>/dev/null | wc -l)
  observed=$("$KUBECTL" -n bench get openbaoclusters -o jsonpath='{range .items[*]}{.status.observedGeneration}{"\n"}{end}' | grep -c '^1$' || true)
  [[ "$sts" -ge "$N" && "$observed" -ge "$N" ]] && break
  sleep 1
done
done_at=$(date +%s.%N)
op_cpu=$(cpu_seconds "$OP_PID")
api_cpu=$(cpu_seconds "$APISERVER_PID")
sleep 5 # let in-flight requeues settle before counting writes
total_writes=$(( $(writes) - base_writes ))
converge_audited=$(audited_writes)
rss_converged_kib=$(awk '/VmRSS/ {print $2}' "/proc/$OP_PID/status")
# A minute in which nothing changes: what a converged fleet costs the apiserver.
sleep 60
idle_audited=$(( $(audited_writes) - converge_audited ))
op_cpu_idle=$(echo "$(cpu_seconds "$OP_PID") - $op_cpu" | bc)
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$OP_PID/status")
objects=$("$KUBECTL" -n bench get secrets,configmaps,services,statefulsets,serviceaccounts,roles,rolebindings,poddisruptionbudgets,networkpolicies,httproutes,backendtlspolicies --no-headers | wc -l)

converge=$(printf "%.1f" "$(echo "$done_at - $start" | bc)")
apply_t=$(printf "%.1f" "$(echo "$applied - $start" | bc)")
per_cluster=$(echo "scale=1; $total_writes / $N" | bc)
audited_per_cluster=$(echo "scale=1; $converge_audited / $N" | bc)
{
  echo "$BEGIN_MARK"
  echo "## Fleet: $N clusters ($(date -u +%Y-%m-%d), $(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg) at the end)"
  echo
  echo "\`bench/converge.sh $N\`: $N OpenBaoClusters (Development, gateway route, admin JWT role) applied at once"
  echo "with one \`kubectl apply\` against the hermetic etcd + kube-apiserver $KUBERNETES_VERSION; the operator"
  echo "(release build) runs as its own process. Converged = every cluster has its StatefulSet and a status for"
  echo "generation 1 (apiserver mode: no kubelet, so pods do not start)."
  echo
  echo "| measure | value |"
  echo "|---|---|"
  echo "| clusters | $N |"
  echo "| kubectl apply of all CRs | ${apply_t} s |"
  echo "| apply → all converged | ${converge} s |"
  echo "| managed objects created | $objects |"
  echo "| operator write requests to converge, apiserver audit log (incl. 5 s of requeues) | $converge_audited ($audited_per_cluster per cluster) |"
  echo "| the same, operator's \`kube_writes\` metric | $total_writes ($per_cluster per cluster) |"
  echo "| operator write requests in the following minute (nothing changed), audit log | $idle_audited |"
  echo "| operator CPU to converge / in that minute | ${op_cpu} s / ${op_cpu_idle} s |"
  echo "| apiserver CPU from start to converged | ${api_cpu} s |"
  echo "| operator RSS converged / peak (VmHWM) | $(( rss_converged_kib / 1024 )) MiB / $(( rss_kib / 1024 )) MiB |"
  echo "$END_MARK"
} > "$STATE/figures.md"
cat "$STATE/figures.md"
awk -v begin="$BEGIN_MARK" -v end="$END_MARK" -v figures="$STATE/figures.md" '
  $0 == begin { while ((getline line < figures) > 0) print line; skip = 1; next }
  $0 == end { skip = 0; next }
  !skip { print }
' "$OUT" > "$STATE/out.md"
grep -qF "$BEGIN_MARK" "$OUT" || cat "$STATE/figures.md" >> "$STATE/out.md"
cp "$STATE/out.md" "$OUT"
