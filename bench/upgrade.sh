#!/usr/bin/env bash
# Benchmark (not a test): wall time of a 3-server upgrade 2.6.2 -> 2.7.2, blue/green and rolling,
# and the longest window of failed requests a client saw that writes and reads every 200 ms
# (each operation retried for at most 2 s). Run side by side in one invocation:
#   - real OpenBao processes driven by the operator's state machines (upgrade_processes.rs);
#   - the real single-node Kubernetes cluster, operator in-process (node_bluegreen.rs,
#     node_upgrade.rs), when a node is up (`make cluster-up`); otherwise those rows say so.
# Records the TIMING lines the tests print in bench/upgrade.md, plus the ratio blue/green :
# rolling per platform. Usage: bench/upgrade.sh [rounds, default 1] (BENCH_OUT=<file> writes elsewhere).
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
cd "$REPO_ROOT"
ROUNDS="${1:-1}"
OUT="${BENCH_OUT:-bench/upgrade.md}"
LOGS="$(mktemp -d /tmp/bench-upgrade.XXXXXX)"
trap 'rm -rf "$LOGS"' EXIT

# name | test binary | test function
SCENARIOS=(
  "processes blue/green|upgrade_processes|blue_green_2_6_2_to_2_7_2_under_continuous_traffic"
  "processes rolling|upgrade_processes|rolling_2_6_2_to_2_7_2_under_continuous_traffic"
  "node blue/green|node_bluegreen|a_blue_green_upgrade_keeps_every_write_on_a_real_node"
  "node rolling|node_upgrade|a_rolling_upgrade_keeps_every_write_on_a_real_node"
)
node_up=false
[[ -f .cluster/kubeconfig ]] && "$(bash hack/build-kubernetes.sh apiserver)/kubectl" \
  --kubeconfig .cluster/kubeconfig get --raw /readyz >/dev/null 2>&1 && node_up=true

cargo test -q -p openbao-operator --no-run --test upgrade_processes --test node_bluegreen --test node_upgrade 2>/dev/null
rows=()
for round in $(seq 1 "$ROUNDS"); do
  for scenario in "${SCENARIOS[@]}"; do
    IFS='|' read -r name binary test <<< "$scenario"
    if [[ "$name" == node* && "$node_up" != true ]]; then
      rows+=("| $round | $name | not run: no node up (make cluster-up) | | | |")
      continue
    fi
    log "round $round: $name"
    logfile="$LOGS/$round-${binary}-${test}.log"
    result=passed
    cargo test -q -p openbao-operator --test "$binary" "$test" -- --exact --nocapture >"$logfile" 2>&1 || result=FAILED
    line="$(grep '^TIMING' "$logfile" | grep -m1 'wall time' || true)"
    wall="$(sed -n 's/.*wall time \([0-9]*\) ms.*/\1/p' <<< "$line")"
    attempts="$(sed -n 's/.* \([0-9]*\) failed attempts retried.*/\1/p' <<< "$line")"
    window="$(sed -n 's/.*longest window of failed requests \([0-9]*\) ms.*/\1/p' <<< "$line")"
    log "  $result: wall ${wall:-?} ms, ${attempts:-?} failed attempts retried, longest window ${window:-?} ms"
    rows+=("| $round | $name | $result (0 failed writes is asserted) | ${wall:+$(awk "BEGIN{printf \"%.1f\", $wall/1000}")} | ${attempts} | ${window} |")
    echo "$name $round ${wall:-}" >> "$LOGS/walls"
  done
done

ratio() { # platform: mean blue/green wall over mean rolling wall
  awk -v p="$1" '$1 == p && $2 == "blue/green" && $4 != "" {b += $4; nb++}
                 $1 == p && $2 == "rolling" && $4 != "" {r += $4; nr++}
                 END {if (nb && nr) printf "%.2f", (b/nb)/(r/nr); else printf "n/a"}' "$LOGS/walls" 2>/dev/null || echo n/a
}
{
  echo "# Upgrade benchmark: 3 servers, OpenBao 2.6.2 -> 2.7.2 ($(date -u +%Y-%m-%d), $(nproc) cores)"
  echo
  echo "Produced by \`bench/upgrade.sh $ROUNDS\`. Each row is one upgrade while a client writes and reads"
  echo "every 200 ms, each operation retried for at most 2 s; the tests assert that no write or read"
  echo "failed after its retries and that every acknowledged write is readable at the end."
  echo "\"Processes\": real \`bao\` processes on loopback driven by the operator's state machines through"
  echo "a process platform; \"node\": the real single-node Kubernetes cluster with the operator in-process."
  echo
  echo "| round | scenario | result | wall time (s) | failed attempts retried | longest window of failed requests (ms) |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Blue/green : rolling wall time, same run: processes $(ratio processes), node $(ratio node)."
  echo
  echo "Both cores were shared with whatever else ran on the machine at the time, so wall times are"
  echo "upper bounds; the failure windows are the client's own measurement."
} > "$OUT"
log "wrote $OUT"
cat "$OUT"
