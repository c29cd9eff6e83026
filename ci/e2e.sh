#!/usr/bin/env bash
# make e2e: brings the local cluster up (building and importing the images), then runs the Go
# end-to-end scenarios of ci/e2e against it. A cluster this script started is stopped at the end
# unless E2E_KEEP_CLUSTER=1; one that was already running is left running.
#   E2E_RUN=Scenario1   run only the matching tests (go test -run)
#   NODES=1             the cluster's number of nodes when this script starts it (default 3; see ci/cluster.sh)
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start=$(date +%s)
# The real Argo CD scenarios (s16) need Argo CD, built from ci/tools/argocd (~8 min cold, cached
# after; 26 min was seen at nice 19 on 2 busy cores): start it first, before the cluster's own
# build, at the lowest priority like the arm64 warm-up, so that a cold run has the whole suite
# before s16 to finish it. The scenario's `ci/argocd.sh up` waits for this build (a lock) and
# fails, not skips, if it failed.
argo_build=""
mkdir -p "$CACHE/logs"
# Only when they run (E2E_RUN naming them, or the whole suite).
if [[ -z "${E2E_RUN:-}" || "${E2E_RUN}" == *ArgoCD* ]]; then
  (nice -n 19 "$CI/argocd.sh" build >"$CACHE/logs/e2e-argocd-build.log" 2>&1) &
  argo_build=$!
fi

# The alert scenario (s16 metrics) runs kube-state-metrics on the host, built from
# ci/tools/kube-state-metrics (cached after): start it now at the lowest priority too; the
# scenario's `ci/kube-state-metrics.sh build` waits for it (the same lock) or builds it itself.
ksm_build=""
if [[ -z "${E2E_RUN:-}" || "${E2E_RUN}" == *Metrics* ]]; then
  (nice -n 19 "$CI/kube-state-metrics.sh" build >"$CACHE/logs/e2e-kube-state-metrics-build.log" 2>&1) &
  ksm_build=$!
fi

up_for_run E2E_KEEP_CLUSTER
build_helm

# The registry-pull scenario (s12) runs `make push`, which cross-builds every binary for arm64.
# Compile them now at the lowest priority: the build uses the CPU the scenarios before it leave
# idle while they wait on the cluster, and make push then finds the packages in the Go cache.
warm=""
if [[ -z "${E2E_RUN:-}" || "${E2E_RUN}" == *Distribution* ]]; then
  (cd "$ROOT" && mapfile -t cmds < <(go list -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' ./... | grep '/nginx-mesh-[^/]*$') &&
    CGO_ENABLED=0 GOOS=linux GOARCH=arm64 nice -n 19 go build -trimpath -o /dev/null "${cmds[@]}" >"$CACHE/logs/e2e-warm-arm64.log" 2>&1) &
  warm=$!
fi

log "== go test -tags e2e ./ci/e2e/ (log: $CACHE/logs/e2e.log)"
t0=$(date +%s)
set +e
(cd "$ROOT" && go test -tags e2e -count=1 -v -timeout 85m ${E2E_RUN:+-run "$E2E_RUN"} ./ci/e2e/) 2>&1 | tee "$CACHE/logs/e2e.log"
rc=${PIPESTATUS[0]}
[ -z "$warm" ] || wait "$warm" || true  # only a cache warmer: make push reports real build errors
[ -z "$argo_build" ] || wait "$argo_build" || true  # a failed build fails the scenarios that need it
[ -z "$ksm_build" ] || wait "$ksm_build" || true  # likewise
# Argo CD's processes (started by the scenarios) run against this cluster: they go with the run
# unless the cluster is kept.
[ "${E2E_KEEP_CLUSTER:-0}" = 1 ] || "$CI/argocd.sh" down || true
set -e
test_s=$(since "$t0")

echo "== e2e timings"
echo "  cluster up:    ${up_s}s"
echo "  e2e tests:     ${test_s}s"
grep '^TIMING:' "$CACHE/logs/e2e.log" | sed 's/^TIMING: /  /' || true
echo "  total:         $(since "$start")s"
# Last, because CI reports only the tail of the output: each failed test with what it logged
# before failing (the namespace dumps that follow a failure start with "diagnostics follow" and
# are left out): its last log lines that read like a verdict (t.Errorf lets a test go on, so its
# message may be far from the end), then its last lines (t.Fatalf's message is the last one).
if [ "$rc" != 0 ]; then
  echo "== e2e failures (full log: $CACHE/logs/e2e.log)"
  awk '
    function reset() { n = 0; m = 0; diag = 0 }
    /^=== RUN   / && !/\// { reset(); next }
    /^=== / { next }
    /^ *--- FAIL: / {
      print
      for (i = (m > 6 ? m - 6 : 0); i < m; i++) print "    ! " substr(verdict[i % 6], 1, 240)
      for (i = (n > 6 ? n - 6 : 0); i < n; i++) print "      " substr(buf[i % 6], 1, 240)
      reset(); next
    }
    /^ *--- (PASS|SKIP): / { reset(); next }
    /diagnostics follow/ { diag = 1 }
    diag { next }
    { buf[n % 6] = $0; n++ }
    /^ +[A-Za-z0-9_]+_test\.go:[0-9]+: / && !/_test\.go:[0-9]+: \$ / && /want|got|timed out|refused|unexpected|[Ee]rror|[Ff]ail|missing|not / { verdict[m % 6] = $0; m++ }
    /^(panic:|FAIL\t)/ { print substr($0, 1, 240) }
  ' "$CACHE/logs/e2e.log" || true
fi
exit "$rc"
