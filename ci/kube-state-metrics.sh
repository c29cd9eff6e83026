#!/usr/bin/env bash
# kube-state-metrics for the end-to-end alert scenario (ci/e2e/s16_metrics_test.go), built from
# ci/tools/kube-state-metrics into ci/.cache/bin (cached). The scenario runs it itself, on
# 127.0.0.1 with the cluster's kubeconfig, and stops it by its PID.
#   ci/kube-state-metrics.sh build   build if needed (waits for a build already running), print the path
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in
  build)
    build_kube_state_metrics >&2
    echo "$BIN/kube-state-metrics"
    ;;
  *) die "usage: $0 build" ;;
esac
