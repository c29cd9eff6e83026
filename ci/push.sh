#!/usr/bin/env bash
# make push: builds what the images hold, then pushes the images and the chart (images/push).
#   REGISTRY=host[:port][/path]   required
#   TAG                           tag of the product images, appVersion of the chart
#   PLATFORMS                     platforms of the product images (default linux/amd64,linux/arm64)
#   PLAIN_HTTP=auto|true|false    HTTP instead of HTTPS (auto: only to a loopback registry)
#   COMPRESSION=gzip|zstd         layer compression (zstd: smaller, needs a runtime that reads it)
#   CHART_VERSION, PUSH_OUT       chart version (default Chart.yaml's); output folder (bin/push)
#   CMDS, LDFLAGS                 from the Makefile: the product's main packages and link flags
# The product binaries are cross-built into bin/<os>_<arch>/ (static, CGO off). SPIRE is built
# from ci/tools/spire for this machine only (the server needs cgo) and cached like the cluster's.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage="usage: make push REGISTRY=host[:port][/path] [TAG=...] [PLATFORMS=linux/amd64,linux/arm64] [PLAIN_HTTP=auto|true|false]"
[ -n "${REGISTRY:-}" ] || die "$usage"
[ -n "${TAG:-}" ] || die "no TAG ($usage)"
[ -n "${CMDS:-}" ] || die "no CMDS: run through make push"
PLATFORMS=${PLATFORMS:-linux/amd64,linux/arm64}
PUSH_OUT=${PUSH_OUT:-bin/push}
start=$(date +%s)
mkdir -p "$CACHE/logs" "$ROOT/bin"

build_spire
cp -f "$BIN/spire-server" "$BIN/spire-agent" "$ROOT/bin/"

t0=$(date +%s)
for p in ${PLATFORMS//,/ }; do
  os=${p%%/*} arch=${p#*/}
  # shellcheck disable=SC2086 # CMDS is a list of packages
  (cd "$ROOT" && CGO_ENABLED=0 GOOS=$os GOARCH=$arch run_logged "$CACHE/logs/push-build-${os}-${arch}.log" \
    go build -trimpath -ldflags "${LDFLAGS:-}" -o "bin/${os}_${arch}/" $CMDS)
done
log "product binaries for $PLATFORMS built in $(since "$t0")s: $(for c in $CMDS; do basename "$c"; done | tr '\n' ' ')"

args=(--registry "$REGISTRY" --tag "$TAG" --platforms "$PLATFORMS" --plain-http "${PLAIN_HTTP:-auto}"
  --compression "${COMPRESSION:-gzip}" --out "$PUSH_OUT")
[ -z "${CHART_VERSION:-}" ] || args+=(--chart-version "$CHART_VERSION")
(cd "$ROOT" && go run ./images/push "${args[@]}")
log "make push took $(since "$start")s"
