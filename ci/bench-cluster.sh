#!/usr/bin/env bash
# make bench-cluster: brings the local cluster up, then runs the hooks benchmarks that need a real
# apiserver (count of 50,000 pods, sentinel reaction with 20,000 unrelated pods) against it.
# A cluster this script started is stopped at the end unless BENCH_KEEP_CLUSTER=1; one that was
# already running is left running. BENCH_TIME (default 3x) is go test's -benchtime.
# NGINX_MESH_BENCH_KEEP=1 keeps the benchmark's namespace and pods for the next run.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start=$(date +%s)
up_for_run BENCH_KEEP_CLUSTER

logf="$CACHE/logs/bench-cluster.log"
export NGINX_MESH_BENCH_KUBECONFIG="$KUBECONFIG_PATH"
bt=${BENCH_TIME:-3x}
log "== cluster benchmarks, -benchtime=$bt (log: $logf)"
t0=$(date +%s)
set +e
(
  cd "$ROOT"
  # The sentinel first: it needs the 20,000 base pods only, and keeps them for the count, which
  # adds 30,000 more. One package at a time: both use the same namespace.
  NGINX_MESH_BENCH_KEEP=1 go test -count=1 -run '^$' -bench '^BenchmarkClusterReaction$' -benchtime="$bt" -benchmem -timeout 30m ./hooks/sentinel/ &&
    go test -count=1 -run '^$' -bench '^BenchmarkClusterCount50k$' -benchtime="$bt" -benchmem -timeout 30m ./hooks/count/
) 2>&1 | tee "$logf"
rc=${PIPESTATUS[0]}
set -e

echo "== cluster benchmark results (real local kube-apiserver $K8S_VERSION)"
grep -E '^Benchmark|created [0-9]+ pods' "$logf" | sed 's/^ *//; s/^/  /' || true
echo "  cluster up:    ${up_s}s"
echo "  benchmarks:    $(since "$t0")s"
echo "  total:         $(since "$start")s"
exit "$rc"
