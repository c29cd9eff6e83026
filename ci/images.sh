#!/usr/bin/env bash
# make images: product binaries (make build), SPIRE and pause (cached builds from ci/tools), then
# every images/*/Dockerfile into bin/images/<name>.tar through the offline builder. When the local
# cluster runs, the tarballs are also imported into its containerd.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build_images
if [ -S "$CONTAINERD_SOCK" ] && ctr_k8s version >/dev/null 2>&1; then
  import_images "$@"
fi
