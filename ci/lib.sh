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

# Nodes. Node 1 is this host itself (its network and mount namespace: NODE_NAME, NODE_IP,
# POD_CIDR above). Each extra node N (2..NODES) is a network namespace on the bridge (node IP
# 10.88.77.N, a veth into nmcl0) with its own mount namespace (its own /var/lib/kubelet, /run/nmcl,
# agent socket folder, ...: the same paths as node 1, so the chart needs no per-node values), its
# own containerd, kubelet and kube-proxy, and its own pod range 10.88.(76+N).0/24 on a bridge inside
# it, routed through its node IP. Pod ranges and node addresses all lie in CLUSTER_CIDR.
# NODES: the environment's, else what the running cluster was brought up with, else 3.
NODES=${NODES:-$(cat "$STATE/node-count" 2>/dev/null || echo 3)}
MAX_NODES=9
CLUSTER_CIDR=10.88.64.0/19         # node IPs and every node's pod range: firewall, kube-proxy clusterCIDR
NODE_POD_BRIDGE=nmclpods           # the pod bridge inside an extra node's network namespace
NODES_RUN=/run/nmcl-nodes          # NODES_RUN/N: what an extra node sees as /run/nmcl, /run/netns, ...
NS_DIR=/run/nmcl-ns                # NS_DIR/mnt-N: the mount namespace of extra node N (an nsfs bind)

valid_nodes() {
  [[ "$NODES" =~ ^[1-9]$ ]] && [ "$NODES" -le "$MAX_NODES" ] && return
  die "NODES=$NODES: give a number of nodes from 1 to $MAX_NODES (NODES=1: the host alone)"
}
node_ids() { seq 1 "$NODES"; }
node_name() { if [ "$1" = 1 ]; then echo "$NODE_NAME"; else echo "$NODE_NAME-$1"; fi; }
node_ip() { echo "10.88.77.$1"; }
node_pod_cidr() { if [ "$1" = 1 ]; then echo "$POD_CIDR"; else echo "10.88.$((76 + $1)).0/24"; fi; }
# Both namespaces of an extra node are kept in files of NS_DIR (not `ip netns add`, whose bind of
# /run/netns onto itself would hide the pod network namespaces node 1's containerd mounted there).
node_netns() { echo "$NS_DIR/net-$1"; }
node_mntns() { echo "$NS_DIR/mnt-$1"; }
node_state() { echo "$STATE/nodes/$1"; }
# node_sock N: node N's containerd socket, as the host reaches it.
node_sock() { if [ "$1" = 1 ]; then echo "$CONTAINERD_SOCK"; else echo "$NODES_RUN/$1/nmcl/containerd.sock"; fi; }
# node_of NAME: the number of the node called NAME (nginx-mesh-node -> 1, nginx-mesh-node-3 -> 3).
node_of() { case "$1" in "$NODE_NAME") echo 1 ;; "$NODE_NAME"-[2-9]) echo "${1##*-}" ;; *) return 1 ;; esac; }
# node_exec N CMD...: runs CMD in node N's network and mount namespaces (node 1: here).
node_exec() {
  local n=$1; shift
  if [ "$n" = 1 ]; then "$@"; else nsenter --mount="$(node_mntns "$n")" --net="$(node_netns "$n")" -- "$@"; fi
}

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
ctr_node() { local n=$1; shift; ctr --address "$(node_sock "$n")" --namespace k8s.io "$@"; }

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

ARGOCD_VERSION=v3.6.2
ARGOCD_GO=go1.27.4                 # Argo CD v3.6.2 needs Go 1.27; the product module stays on the machine's Go
ARGOCD_DATA="$CACHE/argocd"        # what ci/argocd.sh needs from Argo CD's module: its CRDs and hack/ scripts

# build_argocd: Argo CD's application controller and repo server, one binary $BIN/argocd (cached),
# from ci/tools/argocd with the Go toolchain the module proxy serves as ARGOCD_GO. A lock makes a
# second caller (ci/e2e.sh's background build and the scenario's `ci/argocd.sh up`) wait for the
# first and find the stamp set.
build_argocd() {
  local mod="$CI/tools/argocd"
  mkdir -p "$CACHE/logs"
  (
    flock 8
    if [ -x "$BIN/argocd" ] && [ -f "$ARGOCD_DATA/git-verify-wrapper.sh" ] &&
      stamp_ok argocd "$mod/go.mod" "$mod/go.sum" "$mod/main.go" "$ARGOCD_GO"; then
      log "argo cd $ARGOCD_VERSION binary: cached"
      exit 0
    fi
    log "building argo cd $ARGOCD_VERSION (application controller, repo server) with $ARGOCD_GO; ~8 min from an empty Go cache"
    local start; start=$(date +%s)
    mkdir -p "$BIN"
    (cd "$mod" && GOWORK=off GOTOOLCHAIN=$ARGOCD_GO CGO_ENABLED=0 run_logged "$CACHE/logs/build-argocd.log" \
      go build -trimpath -ldflags "-s -w -X github.com/argoproj/argo-cd/v3/common.version=${ARGOCD_VERSION#v}" \
      -o "$BIN/argocd" .)
    local dir
    dir=$(cd "$mod" && GOWORK=off GOTOOLCHAIN=$ARGOCD_GO go list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v3) ||
      die "cannot locate github.com/argoproj/argo-cd/v3 in the module cache"
    rm -rf "$ARGOCD_DATA"
    mkdir -p "$ARGOCD_DATA/crds"
    cp "$dir"/manifests/crds/application-crd.yaml "$dir"/manifests/crds/appproject-crd.yaml "$ARGOCD_DATA/crds/"
    install -m 0755 "$dir/hack/git-verify-wrapper.sh" "$ARGOCD_DATA/git-verify-wrapper.sh"
    stamp_set argocd "$mod/go.mod" "$mod/go.sum" "$mod/main.go" "$ARGOCD_GO"
    log "  argo cd built in $(since "$start")s"
  ) 8>"$CACHE/argocd-build.lock"
}

# build_kube_state_metrics: kube-state-metrics (the series the chart's sentinel and replica alerts
# read) as $BIN/kube-state-metrics (cached), from ci/tools/kube-state-metrics, whose go.mod pins
# the version. A lock, as for Argo CD: ci/e2e.sh's background build and the scenario's own call
# (ci/kube-state-metrics.sh build) share it, and the second finds the stamp set.
build_kube_state_metrics() {
  local mod="$CI/tools/kube-state-metrics" KSM_VERSION
  KSM_VERSION=$(awk '$1 == "k8s.io/kube-state-metrics/v2" { print $2 }' "$mod/go.mod")
  mkdir -p "$CACHE/logs"
  (
    flock 8
    if [ -x "$BIN/kube-state-metrics" ] && stamp_ok kube-state-metrics "$mod/go.mod" "$mod/go.sum" "$(go version)"; then
      log "kube-state-metrics $KSM_VERSION binary: cached"
      exit 0
    fi
    log "building kube-state-metrics $KSM_VERSION"
    local start; start=$(date +%s)
    mkdir -p "$BIN"
    # Into a temporary name first: a reader never runs a half-written binary.
    (cd "$mod" && GOWORK=off CGO_ENABLED=0 run_logged "$CACHE/logs/build-kube-state-metrics.log" \
      go build -trimpath -ldflags "-s -w -X github.com/prometheus/common/version.Version=${KSM_VERSION#v}" \
      -o "$BIN/kube-state-metrics.tmp" k8s.io/kube-state-metrics/v2)
    mv -f "$BIN/kube-state-metrics.tmp" "$BIN/kube-state-metrics"
    stamp_set kube-state-metrics "$mod/go.mod" "$mod/go.sum" "$(go version)"
    log "  kube-state-metrics built in $(since "$start")s"
  ) 8>"$CACHE/kube-state-metrics-build.lock"
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

# import_images [NAME...]: imports bin/images/NAME.tar (all if none) into the containerd of every
# node whose containerd answers, the nodes in parallel (each node has its own image store).
import_images() {
  local names=("$@") n
  if [ ${#names[@]} = 0 ]; then
    for n in "$ROOT"/bin/images/*.tar; do [ -f "$n" ] && names+=("$(basename "$n" .tar)"); done
  fi
  local done_=()
  for n in "${names[@]}"; do
    if [ -f "$ROOT/bin/images/$n.tar" ]; then done_+=("$n"); else log "  WARNING: bin/images/$n.tar missing: not imported"; fi
  done
  local id pids=() nodes=() rc=0
  for id in $(seq 1 "$MAX_NODES"); do
    if ! [ -S "$(node_sock "$id")" ] || ! ctr_node "$id" version >/dev/null 2>&1; then continue; fi
    (
      for n in "${done_[@]}"; do
        run_logged "$STATE/logs/import-$n-node$id.log" ctr_node "$id" images import "$ROOT/bin/images/$n.tar"
      done
    ) &
    pids+=($!)
    nodes+=("$id")
  done
  for id in "${pids[@]}"; do wait "$id" || rc=1; done
  [ "$rc" = 0 ] || die "importing the images failed (logs: $STATE/logs/import-*.log)"
  log "  imported into containerd of node(s) ${nodes[*]}: ${done_[*]}"
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
  local node dir=$KUBELET_DIR n
  read -r uid node < <(kubectl -n "$ns" get pods -l app.kubernetes.io/component=spire-server -o jsonpath='{.items[0].metadata.uid} {.items[0].spec.nodeName}')
  [ -n "$uid" ] || die "no spire-server pod in namespace $ns"
  # An extra node's kubelet folder is a bind of node_state/kubelet: its emptyDir is there.
  n=$(node_of "$node") || die "spire-server runs on $node, not a node of this cluster"
  [ "$n" = 1 ] || dir="$(node_state "$n")/kubelet"
  ln -sfn "$dir/pods/$uid/volumes/kubernetes.io~empty-dir/admin-socket/api.sock" "$link"
  local sub=$1; shift
  "$BIN/spire-server" "$sub" "$1" -socketPath "$link" "${@:2}"
}
