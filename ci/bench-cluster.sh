#!/usr/bin/env bash
# make bench-cluster: brings the local cluster up, then runs the hooks benchmarks that need a real
# apiserver (count of 50,000 pods, sentinel reaction with 20,000 unrelated pods) against it.
# A cluster this script started is stopped at the end unless BENCH_KEEP_CLUSTER=1; one that was
# already running is left running. BENCH_TIME (default 3x) is go test's -benchtime.
# NGINX_MESH_BENCH_KEEP=1 keeps the benchmark's namespace and pods for the next run.
# The controller benchmarks (pod CREATE with and without injection, pod creation to SPIRE entry)
# install the chart (OpenShift profile), run, and uninstall it. BENCH_ONLY=hooks or
# BENCH_ONLY=controller runs one part.
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
only=${BENCH_ONLY:-}
rc=0
: >"$logf"
if [ "$only" != controller ]; then
  (
    cd "$ROOT"
    # The sentinel first: it needs the 20,000 base pods only, and keeps them for the count, which
    # adds 30,000 more. One package at a time: both use the same namespace.
    NGINX_MESH_BENCH_KEEP=1 go test -count=1 -run '^$' -bench '^BenchmarkClusterReaction$' -benchtime="$bt" -benchmem -timeout 30m ./hooks/sentinel/ &&
      go test -count=1 -run '^$' -bench '^BenchmarkClusterCount50k$' -benchtime="$bt" -benchmem -timeout 30m ./hooks/count/
  ) 2>&1 | tee -a "$logf"
  rc=${PIPESTATUS[0]}
fi
if [ "$only" != hooks ] && [ "$rc" = 0 ]; then
  build_helm
  log "== installing the chart for the controller benchmarks"
  "$BIN/helm" --kubeconfig "$KUBECONFIG_PATH" upgrade --install nginx-mesh "$ROOT/charts/nginx-mesh" -n nginx-mesh --create-namespace \
    -f "$ROOT/charts/nginx-mesh/values-openshift.yaml" -f "$CI/values-local.yaml" --wait --timeout 6m >>"$logf" 2>&1 || rc=1
  if [ "$rc" = 0 ]; then
    (
      cd "$ROOT"
      go test -count=1 -run '^$' -bench '^BenchmarkClusterPodCreate$' -benchtime="${BENCH_CREATES:-300x}" -timeout 20m ./controller/webhook/ &&
        go test -count=1 -run '^$' -bench '^BenchmarkClusterPodToEntry$' -benchtime="${BENCH_ENTRIES:-50x}" -timeout 20m ./controller/register/
    ) 2>&1 | tee -a "$logf"
    rc=${PIPESTATUS[0]}
  fi
  "$BIN/helm" --kubeconfig "$KUBECONFIG_PATH" uninstall nginx-mesh -n nginx-mesh --wait --timeout 5m >>"$logf" 2>&1 || true
fi
set -e

echo "== cluster benchmark results (real local kube-apiserver $K8S_VERSION)"
grep -E '^Benchmark|created [0-9]+ pods' "$logf" | sed 's/^ *//; s/^/  /' || true
echo "  cluster up:    ${up_s}s"
echo "  benchmarks:    $(since "$t0")s"
echo "  total:         $(since "$start")s"
exit "$rc"
