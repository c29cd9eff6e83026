# Shared by ci/*.sh: paths, logging, bounded waits and the cached builds. Source it; do not run it.
# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are read by the scripts that source this file

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CI="$ROOT/ci"
# NMCL_CACHE / NMCL_STATE let several checkouts of the repository (git worktrees) share one
# build cache and the one cluster this machine can run.
CACHE="${NMCL_CACHE:-$CI/.cache}"   # built binaries (git-ignored), kept between runs
BIN="$CACHE/bin"
STATE="${NMCL_STATE:-$CI/.cluster}" # everything of a running cluster (git-ignored)
export KUBECONFIG_PATH="$STATE/kubeconfig"
export PATH="/usr/local/go/bin:$BIN:$PATH"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

K8S_VERSION=v1.34.4
SPIRE_VERSION=v1.13.3

# Network of the cluster: a bridge of its own with a private /24 for pods, and a /24 for services
# that is routed onto the same bridge, so no cluster address ever leaves through another interface.
BRIDGE=nmcl0
POD_CIDR=10.88.77.0/24
NODE_IP=10.88.77.1                 # bridge gateway: apiserver advertise/bind address, kubelet node IP
SERVICE_CIDR=10.89.77.0/24
API_SERVICE_IP=10.89.77.1
NODE_NAME=nginx-mesh-node
APISERVER="https://$NODE_IP:6443"
ETCD_URL=http://127.0.0.1:23790
ETCD_PEER_URL=http://127.0.0.1:23800
RUN_DIR=/run/nmcl                  # short paths for sockets (unix socket paths are limited to 108 bytes)
CONTAINERD_SOCK="$RUN_DIR/containerd.sock"
KUBELET_DIR=/var/lib/kubelet       # the chart's default csi.kubeletDir
CHAIN=NMCL                         # prefix of our iptables chains

ts() { date -u +%H:%M:%S; }
log() { echo "[$(ts)] $*"; }
die() { echo "[$(ts)] ERROR: $*" >&2; exit 1; }

# since START: seconds elapsed since START (date +%s).
since() { echo $(( $(date +%s) - $1 )); }

# wait_for DESC TIMEOUT_S CMD...: runs CMD every second until it succeeds; prints progress every
# 10 s; returns 1 on timeout (the caller prints the logs of the part that failed).
wait_for() {
  local desc=$1 timeout=$2; shift 2
  local start; start=$(date +%s)
  local next=10
  while ! "$@" >/dev/null 2>&1; do
    local el; el=$(since "$start")
    if [ "$el" -ge "$timeout" ]; then
      echo "[$(ts)]   timed out after ${timeout}s waiting for $desc" >&2
      return 1
    fi
    if [ "$el" -ge "$next" ]; then
      log "  still waiting for $desc (${el}s/${timeout}s)"
      next=$((next + 10))
    fi
    sleep 1
  done
  log "  $desc after $(since "$start")s"
}

kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
ctr_k8s() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# stamp_ok NAME INPUT...: true when the stamp of NAME matches the hash of the inputs (files or strings).
stamp_hash() {
  local x
  for x in "$@"; do
    # content only, not the path: worktrees sharing NMCL_CACHE share the stamps
    if [ -f "$x" ]; then sha256sum <"$x"; else echo "$x"; fi
  done | sha256sum | cut -d' ' -f1
}
stamp_ok() { local n=$1; shift; [ -f "$CACHE/stamps/$n" ] && [ "$(cat "$CACHE/stamps/$n")" = "$(stamp_hash "$@")" ]; }
stamp_set() { local n=$1; shift; mkdir -p "$CACHE/stamps"; stamp_hash "$@" >"$CACHE/stamps/$n"; }

# run_logged LOG CMD...: runs CMD with output in LOG; on failure prints the log's tail and fails.
run_logged() {
  local logf=$1; shift
  mkdir -p "$(dirname "$logf")"
  if ! "$@" >"$logf" 2>&1; then
    tail -n 40 "$logf" >&2
    die "$* failed (full log: $logf)"
  fi
}

K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

# build_kubernetes: the Kubernetes binaries and kubectl from ci/tools/kubernetes (cached).
build_kubernetes() {
  local mod="$CI/tools/kubernetes" c missing=0
  for c in "${K8S_CMDS[@]}"; do [ -x "$BIN/$c" ] || missing=1; done
  if [ $missing = 0 ] && stamp_ok kubernetes "$mod/go.mod" "$mod/go.sum" "$(go version)"; then
    log "kubernetes $K8S_VERSION binaries: cached"
    return
  fi
  log "building kubernetes $K8S_VERSION (${K8S_CMDS[*]}); ~5 min from an empty Go cache"
  local start; start=$(date +%s)
  local v=$K8S_VERSION minor; minor=$(echo "$v" | cut -d. -f2)
  # Version stamps: Helm and the chart compare the server's version with kubeVersion.
  local ld="-s -w"
  local p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  local pkgs=()
  for c in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  mkdir -p "$BIN"
  (cd "$mod" && GOWORK=off CGO_ENABLED=0 run_logged "$CACHE/logs/build-kubernetes.log" \
    go build -trimpath -ldflags "$ld" -o "$BIN/" "${pkgs[@]}")
  stamp_set kubernetes "$mod/go.mod" "$mod/go.sum" "$(go version)"
  log "  kubernetes built in $(since "$start")s"
}

# build_spire: spire-agent (CGO off) and spire-server (static cgo, SQLite needs cgo) from ci/tools/spire.
build_spire() {
  local mod="$CI/tools/spire"
  if [ -x "$BIN/spire-server" ] && [ -x "$BIN/spire-agent" ] &&
    stamp_ok spire "$mod/go.mod" "$mod/go.sum" "$(go version)"; then
    log "spire $SPIRE_VERSION binaries: cached"
    return
  fi
  log "building spire $SPIRE_VERSION (spire-agent, spire-server); ~5 min from an empty Go cache"
  local start; start=$(date +%s)
  mkdir -p "$BIN"
  (cd "$mod" && GOWORK=off CGO_ENABLED=0 run_logged "$CACHE/logs/build-spire-agent.log" \
    go build -trimpath -ldflags '-s -w' -o "$BIN/spire-agent" github.com/spiffe/spire/cmd/spire-agent)
  (cd "$mod" && GOWORK=off CGO_ENABLED=1 run_logged "$CACHE/logs/build-spire-server.log" \
    go build -trimpath -tags 'netgo osusergo sqlite_omit_load_extension' \
    -ldflags '-s -w -linkmode external -extldflags "-static"' \
    -o "$BIN/spire-server" github.com/spiffe/spire/cmd/spire-server)
  stamp_set spire "$mod/go.mod" "$mod/go.sum" "$(go version)"
  log "  spire built in $(since "$start")s"
}

# product_cmds: the product's main packages (nginx-mesh-*), as the Makefile's CMDS.
product_cmds() {
  (cd "$ROOT" && go list -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' ./... | grep '/nginx-mesh-[^/]*$')
}

# build_images: product binaries (make build), SPIRE and pause, then every images/*/Dockerfile
# into a tarball in bin/images (the image list is the Dockerfiles: a new one is built and imported
# with no change here). SPIRE and pause must build. A product binary that does not build yet (the
# others' work in progress) is reported and its image skipped, so the cluster itself still comes up.
build_images() {
  local start; start=$(date +%s)
  build_spire
  log "building product binaries (make build) and pause"
  mkdir -p "$ROOT/bin"
  if ! (cd "$ROOT" && make build >"$CACHE/logs/make-build.log" 2>&1); then
    tail -n 15 "$CACHE/logs/make-build.log" >&2
    log "  WARNING: make build failed (log: $CACHE/logs/make-build.log); building each binary alone"
    local c
    for c in $(product_cmds); do
      local b; b=$(basename "$c")
      rm -f "$ROOT/bin/$b"
      (cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$ROOT/bin/$b" "$c" \
        >"$CACHE/logs/build-$b.log" 2>&1) || true
      [ -x "$ROOT/bin/$b" ] || log "  WARNING: $b does not build: its image is skipped (log: $CACHE/logs/build-$b.log)"
    done
  fi
  (cd "$ROOT" && CGO_ENABLED=0 run_logged "$CACHE/logs/build-pause.log" \
    go build -trimpath -ldflags '-s -w' -o "$ROOT/bin/pause" ./images/pause)
  (cd "$ROOT" && CGO_ENABLED=0 run_logged "$CACHE/logs/build-e2e-workload.log" \
    go build -trimpath -ldflags '-s -w' -o "$ROOT/bin/e2e-workload" ./ci/e2e/workload)
  # The Dockerfiles COPY from bin/ (context = repository root); SPIRE comes from the cache.
  cp -f "$BIN/spire-server" "$BIN/spire-agent" "$ROOT/bin/"
  rm -f "$ROOT"/bin/images/*.tar
  (cd "$ROOT" && run_logged "$CACHE/logs/images-build.log" go run ./images/build --out "$ROOT/bin/images" --skip-missing)
  grep -h WARN "$CACHE/logs/images-build.log" >&2 || true
  log "  images built in $(since "$start")s: $(for f in "$ROOT"/bin/images/*.tar; do basename "$f" .tar; done | tr '\n' ' ')"
}

# import_images [NAME...]: imports bin/images/NAME.tar into the cluster's containerd (all if none).
import_images() {
  local names=("$@") n
  if [ ${#names[@]} = 0 ]; then
    for n in "$ROOT"/bin/images/*.tar; do [ -f "$n" ] && names+=("$(basename "$n" .tar)"); done
  fi
  local done_=()
  for n in "${names[@]}"; do
    [ -f "$ROOT/bin/images/$n.tar" ] || { log "  WARNING: bin/images/$n.tar missing: not imported"; continue; }
    done_+=("$n")
    run_logged "$STATE/logs/import-$n.log" ctr_k8s images import "$ROOT/bin/images/$n.tar"
  done
  log "  imported into containerd: ${done_[*]}"
}

# build_helm: the two helm CLIs of the product module's tool directives as binaries, so tests skip
# `go tool`'s per-call overhead: $BIN/helm (Helm 3, the default) and $BIN/helm4 (Helm 4).
build_helm() {
  if [ -x "$BIN/helm" ] && [ -x "$BIN/helm4" ] && stamp_ok helm "$ROOT/go.mod" "$ROOT/go.sum" "$(go version)"; then
    return
  fi
  log "building helm and helm4 (the helm.sh/helm/v3 and v4 tools of the product module)"
  mkdir -p "$BIN"
  local m v out
  for m in v3 v4; do
    out=helm; [ $m = v3 ] || out=helm$m
    # `helm version` prints the module's version (a go build leaves only the minor, e.g. v4.3).
    v=$(cd "$ROOT" && go list -m -f '{{.Version}}' "helm.sh/helm/$m")
    (cd "$ROOT" && CGO_ENABLED=0 run_logged "$CACHE/logs/build-$out.log" go build \
      -ldflags "-s -w -X helm.sh/helm/$m/internal/version.version=$v" -o "$BIN/$out" "helm.sh/helm/$m/cmd/helm")
  done
  stamp_set helm "$ROOT/go.mod" "$ROOT/go.sum" "$(go version)"
}

cluster_running() { [ -f "$STATE/pids/kube-apiserver.pid" ] && [ -f "$KUBECONFIG_PATH" ] && kubectl get --raw /readyz >/dev/null 2>&1; }

# up_for_run KEEP_VAR: brings the cluster up for one script's run and sets up_s to the seconds
# it took. A cluster started here is stopped when the script exits, unless the environment
# variable named KEEP_VAR is 1; one that was already running is left running.
up_for_run() {
  local was_running=0 t0
  cluster_running && was_running=1
  t0=$(date +%s)
  "$CI/cluster.sh" up
  up_s=$(since "$t0")
  mkdir -p "$CACHE/logs"
  UP_FOR_RUN_KEEP=$1
  if [ "$was_running" = 0 ]; then
    trap '[ "${!UP_FOR_RUN_KEEP:-0}" = 1 ] || "$CI/cluster.sh" down || true' EXIT
  fi
}

# spire_server_cli ARGS...: the host-built spire-server CLI against the in-cluster server's admin
# socket, through a short symlink (the real path under the kubelet pods tree is too long for a
# unix socket address).
spire_server_cli() {
  local ns=${SPIRE_NS:-nginx-mesh} uid link=/tmp/nmcl-spire-admin.sock
  uid=$(kubectl -n "$ns" get pods -l app.kubernetes.io/component=spire-server -o jsonpath='{.items[0].metadata.uid}')
  [ -n "$uid" ] || die "no spire-server pod in namespace $ns"
  ln -sfn "$KUBELET_DIR/pods/$uid/volumes/kubernetes.io~empty-dir/admin-socket/api.sock" "$link"
  local sub=$1; shift
  "$BIN/spire-server" "$sub" "$1" -socketPath "$link" "${@:2}"
}
