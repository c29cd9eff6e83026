#!/usr/bin/env bash
# The real local Kubernetes of the project: NODES nodes (default 3) on this machine (see ci/README.md).
#   ci/cluster.sh up       build what is missing (cached), start every part, wait until a pod runs on each node
#   ci/cluster.sh down     stop what up started (by recorded PID), unmount, remove bridge/namespaces/iptables/state
#   ci/cluster.sh status   show the parts and the nodes
#   ci/cluster.sh images   rebuild the images and import them into every node's containerd
#   ci/cluster.sh logs P   tail the log of part P (etcd, containerd, kube-apiserver, kubelet, kubelet-2, ...)
#   ci/cluster.sh restart P  stop part P and start it again (fault tests; kubelet-2 is node 2's kubelet)
#   ci/cluster.sh stop-node N | start-node N   stop node N's kubelet and kube-proxy (a dead node: its
#                          containers keep running, the node turns NotReady) / start them again
#   ci/cluster.sh cordon N | uncordon N | drain N [FLAG...]   kubectl on node N by its number
#   ci/cluster.sh node-exec N CMD...   run CMD in node N's network and mount namespaces
#   ci/cluster.sh memory   resident memory of each node's kubelet, containerd, kube-proxy, shims, pods
#   ci/cluster.sh scc-crd apply|delete   serve the OpenShift SCC API or not (Kubernetes profile tests)
#   ci/cluster.sh postgres start|stop|fresh-database NAME   the host's PostgreSQL for ha.enabled
#                                        (ci/values-ha.yaml; fault tests; a scenario's own database)
# Both up and down are idempotent; up on a running cluster reuses it (and re-imports the images).
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PARTS=(etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
NODE_PARTS=(containerd kubelet kube-proxy)  # an extra node N runs these as PART-N
PKI="$STATE/pki"
LOGS="$STATE/logs"
PIDS="$STATE/pids"

# ---------- processes ----------

pid_of() { [ -f "$PIDS/$1.pid" ] && cat "$PIDS/$1.pid"; }

# alive PART: the recorded PID runs and is still that program (guards against PID reuse).
# (Captured values, never `| grep -q`: under pipefail grep -q's early exit can SIGPIPE the writer
# and fail the pipeline although it matched.)
alive() {
  local pid cmdline; pid=$(pid_of "$1") || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmdline" == *"$(part_binary "$1")"* ]]
}

# all_parts: the parts of NODES nodes (node N's as PART-N).
all_parts() {
  local n p
  printf '%s\n' "${PARTS[@]}"
  for n in $(seq 2 "$NODES"); do for p in "${NODE_PARTS[@]}"; do echo "$p-$n"; done; done
}

# part_node PART: the node a part belongs to (kubelet-2 -> 2; node 1's parts and the control plane -> 1).
part_node() { case "$1" in *-[2-9]) echo "${1##*-}" ;; *) echo 1 ;; esac; }

part_binary() {
  local base=${1%-[2-9]}
  case "$base" in
    etcd) echo /usr/bin/etcd ;;
    containerd) echo /usr/bin/containerd ;;
    postgres) echo "$(pg_bindir)/postgres" ;;
    *) echo "$BIN/$base" ;;
  esac
}

# start PART ARGS...: starts the part in its own session, output to its log, PID recorded.
start() {
  local part=$1; shift
  if alive "$part"; then
    log "$part: running (pid $(pid_of "$part"))"
    return
  fi
  mkdir -p "$LOGS" "$PIDS"
  STARTED=1
  # The part outlives this script: it must not inherit our descriptors beyond 0-2 (a caller's
  # `flock LOCK ci/cluster.sh ...` lock among them, which a daemon would then hold forever).
  local n; n=$(part_node "$part")
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done 2>/dev/null
    if [ "$n" = 1 ]; then exec setsid "$(part_binary "$part")" "$@" >>"$LOGS/$part.log" 2>&1 </dev/null; fi
    # An extra node's part: in the node's cgroup (so down finds every process of the node, shims
    # included, and `memory` can sum them), then in its network and mount namespaces (nsenter
    # opens both files before it enters either; it execs, so the recorded PID is the part's).
    local m
    for m in $(cgroup_mounts); do echo "$BASHPID" >"$m/nmcl-node-$n/daemons/cgroup.procs"; done
    exec setsid nsenter --mount="$(node_mntns "$n")" --net="$(node_netns "$n")" -- \
      "$(part_binary "$part")" "$@" >>"$LOGS/$part.log" 2>&1 </dev/null
  ) &
  echo $! >"$PIDS/$part.pid"
  log "$part: started (pid $!, log $LOGS/$part.log)"
}

# fail_part PART: prints the tail of the part's log and exits.
fail_part() {
  echo "----- last 40 lines of $LOGS/$1.log -----" >&2
  tail -n 40 "$LOGS/$1.log" >&2 || true
  echo "-----" >&2
  if ! alive "$1"; then echo "$1 is not running" >&2; fi
  die "$1 did not come up (ci/cluster.sh down cleans up; ci/cluster.sh logs $1 shows more)"
}

stop_part() {
  local part=$1 pid
  pid=$(pid_of "$part") || return 0
  if alive "$part"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do
      alive "$part" || break
      sleep 0.5
    done
    if alive "$part"; then
      log "  $part (pid $pid) ignored SIGTERM for 15s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
    log "  stopped $part (pid $pid)"
  fi
  rm -f "$PIDS/$part.pid"
}

# ---------- host setup ----------

sysctl_set() {  # records the first value seen, so down restores the machine as it was
  local key=$1 val=$2 file="/proc/sys/${1//.//}"
  [ -e "$file" ] || return 0
  mkdir -p "$STATE"
  grep -q "^$key=" "$STATE/sysctl.orig" 2>/dev/null || echo "$key=$(cat "$file")" >>"$STATE/sysctl.orig"
  echo "$val" >"$file"
}

setup_network() {
  modprobe br_netfilter 2>/dev/null || true
  modprobe overlay 2>/dev/null || true
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    log "bridge $BRIDGE created"
  fi
  local addrs; addrs=$(ip -4 addr show dev "$BRIDGE")
  [[ "$addrs" == *"inet $NODE_IP/"* ]] || ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Service IPs are virtual (kube-proxy DNATs them); route them onto the bridge all the same so
  # nothing addressed to the service range can take the default route.
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE"
  sysctl_set net.ipv4.ip_forward 1
  sysctl_set net.bridge.bridge-nf-call-iptables 1
  sysctl_set net.ipv4.conf.all.route_localnet 0
  # Pod traffic stays on the bridge: forwarded packets from any node's pod range or node address
  # (CLUSTER_CIDR) that would leave through any other interface are dropped; cluster ports are
  # not served to other interfaces. The extra nodes' ports (kubelet 10250, ...) sit behind this
  # host's forwarding, so the last rule refuses what comes to them from another interface.
  iptables -N "$CHAIN-FORWARD" 2>/dev/null || iptables -F "$CHAIN-FORWARD"
  iptables -A "$CHAIN-FORWARD" -s "$CLUSTER_CIDR" ! -o "$BRIDGE" -j DROP
  iptables -A "$CHAIN-FORWARD" -s "$SERVICE_CIDR" ! -o "$BRIDGE" -j DROP
  iptables -A "$CHAIN-FORWARD" -d "$CLUSTER_CIDR" ! -i "$BRIDGE" -j DROP
  iptables -C FORWARD -j "$CHAIN-FORWARD" 2>/dev/null || iptables -I FORWARD 1 -j "$CHAIN-FORWARD"
  iptables -N "$CHAIN-INPUT" 2>/dev/null || iptables -F "$CHAIN-INPUT"
  iptables -A "$CHAIN-INPUT" -i lo -j RETURN
  iptables -A "$CHAIN-INPUT" -i "$BRIDGE" -j RETURN
  iptables -A "$CHAIN-INPUT" -p tcp -m multiport --dports 6443,10250,10256,10257,10259,23790,23800 -j DROP
  iptables -C INPUT -j "$CHAIN-INPUT" 2>/dev/null || iptables -I INPUT 1 -j "$CHAIN-INPUT"
  rules_first
}

# rules_first puts our jumps ahead of kube-proxy's (KUBE-FORWARD accepts some traffic), so the
# DROP of pod egress through other interfaces is evaluated first. kube-proxy only adds its jumps
# when they are missing, so the order stays.
rules_first() {
  local c
  for c in FORWARD INPUT; do
    if [ "$(iptables -S "$c" | sed -n 2p)" != "-A $c -j $CHAIN-$c" ]; then
      while iptables -D "$c" -j "$CHAIN-$c" 2>/dev/null; do :; done
      iptables -I "$c" 1 -j "$CHAIN-$c"
    fi
  done
}

# ---------- extra nodes: network, mount namespace, cgroup ----------

# cgroup_mounts: every cgroup hierarchy (v1 controllers and the unified one).
cgroup_mounts() { findmnt -rn -t cgroup,cgroup2 -o TARGET; }

# setup_node_network N: node N's network namespace, its veth on the bridge with the node IP, and
# the routes of every node's pod range (host: via the node IP; node: default via this host, the
# other extra nodes' pod ranges straight to their node IPs on the bridge).
setup_node_network() {
  local n=$1 f veth m
  f=$(node_netns "$n") veth="nmclv$n"
  prepare_ns_dir
  if [ "$(findmnt -rn -o FSTYPE "$f" 2>/dev/null)" != nsfs ]; then
    touch "$f"
    unshare --net="$f" true
    log "network namespace of node $n: $f"
  fi
  nx() { nsenter --net="$f" -- "$@"; }
  # The veth is made inside the node with its other end moved to this script's namespace. One
  # whose peer went with an older namespace (down and up again in a hurry) is replaced.
  if ! nx ip link show eth0 >/dev/null 2>&1; then
    ip link del "$veth" 2>/dev/null || true
    nx ip link add eth0 type veth peer name "$veth" netns "$$"
  fi
  ip link set "$veth" master "$BRIDGE" up
  nx ip link set lo up
  nx ip link set eth0 up
  local addrs; addrs=$(nx ip -4 addr show dev eth0)
  [[ "$addrs" == *"inet $(node_ip "$n")/"* ]] || nx ip addr add "$(node_ip "$n")/24" dev eth0
  nx ip route replace default via "$NODE_IP" dev eth0
  for m in $(seq 2 "$NODES"); do
    [ "$m" = "$n" ] || nx ip route replace "$(node_pod_cidr "$m")" via "$(node_ip "$m")" dev eth0
  done
  ip route replace "$(node_pod_cidr "$n")" via "$(node_ip "$n")" dev "$BRIDGE"
  # The node routes its pods' traffic; kube-proxy needs bridged traffic to pass iptables there too
  # (both sysctls are per network namespace).
  nx sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward; echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables'
}

# prepare_ns_dir: NS_DIR as a private bind of itself. A namespace file may only be bound on a mount
# that does not propagate (else a mount namespace would see its own file), as `ip netns` does for
# /run/netns.
prepare_ns_dir() {
  mkdir -p "$NS_DIR"
  mountpoint -q "$NS_DIR" || mount --bind "$NS_DIR" "$NS_DIR"
  mount --make-private "$NS_DIR"
}

# remember_dir DIR: makes DIR (and its parents) when missing and records the top-most folder it
# made, so down removes it again.
remember_dir() {
  local d=$1 top=""
  while [ ! -e "$d" ]; do top=$d; d=$(dirname "$d"); done
  [ -n "$top" ] || return 0
  mkdir -p "$1"
  grep -qx "$top" "$STATE/created-dirs" 2>/dev/null || echo "$top" >>"$STATE/created-dirs"
}

# The host paths an extra node sees as its own (NODE_PRIVATE_DIRS[i] <- node folder NODE_PRIVATE_SRC[i]),
# so the chart's paths are the same on every node: kubelet's root (pods, plugins, registration),
# its pod logs (kubelet removes the log folders of pods it does not know), containerd's sockets and
# state, the pod network namespaces, the shims' sockets and the SPIRE agent's socket folder.
NODE_PRIVATE_DIRS=("$KUBELET_DIR" /var/log/pods /var/log/containers "$RUN_DIR" /run/netns /run/containerd /run/spire/agent-sockets)
NODE_PRIVATE_SRC=(state:kubelet state:log/pods state:log/containers run:nmcl run:netns run:containerd run:agent-sockets)

node_private_src() {  # N INDEX -> the node's folder behind NODE_PRIVATE_DIRS[INDEX]
  local src=${NODE_PRIVATE_SRC[$2]}
  case "$src" in
    state:*) echo "$(node_state "$1")/${src#state:}" ;;
    run:*) echo "$NODES_RUN/$1/${src#run:}" ;;
  esac
}

# setup_node_mounts N: node N's mount namespace, kept in a file (NS_DIR/mnt-N, a bind of the
# namespace) so that no process has to hold it. It starts as a private copy of this host's mounts:
# the copies of the cluster's own mounts (other pods' volumes, network namespaces, other nodes'
# namespace files) are dropped, then each private folder is bound over its host path.
setup_node_mounts() {
  local n=$1 f i src dirs=()
  f=$(node_mntns "$n")
  if [ "$(findmnt -rn -o FSTYPE "$f" 2>/dev/null)" = nsfs ]; then return; fi
  prepare_ns_dir
  for i in "${!NODE_PRIVATE_DIRS[@]}"; do
    src=$(node_private_src "$n" "$i")
    mkdir -p "$src"
    remember_dir "${NODE_PRIVATE_DIRS[$i]}"
    dirs+=("${NODE_PRIVATE_DIRS[$i]}")
  done
  touch "$f"
  unshare --mount="$f" --propagation private true
  # shellcheck disable=SC2016 # expanded by the inner bash
  nsenter --mount="$f" -- bash -c "$(declare -f unmount_under)"'
    set -e
    for d in "$@"; do unmount_under "$d"; done
    ' _ "${dirs[@]}" "$NS_DIR" "$NODES_RUN" "$STATE" /run/spire
  for i in "${!NODE_PRIVATE_DIRS[@]}"; do
    nsenter --mount="$f" -- mount --bind "$(node_private_src "$n" "$i")" "${NODE_PRIVATE_DIRS[$i]}"
  done
  # The CSI driver's Bidirectional mount of kubelet's pods folder needs a shared mount (kubelet
  # would make it so too); it is shared within the node only.
  nsenter --mount="$f" -- mount --make-rshared "$KUBELET_DIR"
  log "mount namespace of node $n: $f"
}

# setup_node_cgroups N: node N's cgroup in every hierarchy: its kubelet's cgroupRoot (pods under
# /nmcl-node-N/kubepods, so kubelets do not fight over /kubepods) and daemons/ for its processes.
setup_node_cgroups() {
  local n=$1 m d
  for m in $(cgroup_mounts); do
    for d in "$m/nmcl-node-$n" "$m/nmcl-node-$n/daemons"; do
      [ -d "$d" ] || mkdir "$d"
      # cgroup v1 cpuset: a new cgroup has no CPUs nor memory nodes until given its parent's.
      if [ -f "$d/cpuset.cpus" ] && [ -z "$(cat "$d/cpuset.cpus")" ]; then
        cat "$(dirname "$d")/cpuset.cpus" >"$d/cpuset.cpus"
        cat "$(dirname "$d")/cpuset.mems" >"$d/cpuset.mems"
      fi
    done
  done
}

# node_procs N: every process in node N's cgroup tree (its daemons, shims and containers).
node_procs() {
  local m
  for m in $(cgroup_mounts); do
    [ -d "$m/nmcl-node-$1" ] || continue
    find "$m/nmcl-node-$1" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

# ---------- PKI and config ----------

openssl_cert() {  # NAME CN ORG SANS(ext value or "") -> $PKI/NAME.{key,crt}, signed by our CA
  local name=$1 cn=$2 org=$3 san=$4 subj="/CN=$2"
  [ -f "$PKI/$name.crt" ] && return
  [ -n "$org" ] && subj="/O=$org/CN=$cn"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$san" ]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

setup_pki() {
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  if [ ! -f "$PKI/ca.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 30 \
      -subj "/CN=nginx-mesh-local-ca" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  fi
  openssl_cert apiserver kube-apiserver "" \
    "IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  openssl_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
  openssl_cert kubelet "$NODE_NAME" "" "IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE_NAME,DNS:localhost"
  # Extra nodes: kubelet's serving certificate, and a client certificate as its node identity
  # (the apiserver reads its token file only when it starts; a certificate of our CA needs no restart).
  local n
  for n in $(seq 2 "$NODES"); do
    openssl_cert "kubelet-$n" "$(node_name "$n")" "" "IP:$(node_ip "$n"),IP:127.0.0.1,DNS:$(node_name "$n"),DNS:localhost"
    openssl_cert "kubelet-client-$n" "system:node:$(node_name "$n")" system:nodes ""
  done
  if [ ! -f "$PKI/sa.key" ]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  if [ ! -f "$PKI/tokens.csv" ]; then
    local t
    t() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
    {
      echo "$(t),admin,admin,system:masters"
      echo "$(t),system:node:$NODE_NAME,node,system:nodes"
      echo "$(t),system:kube-proxy,kube-proxy,"
      echo "$(t),system:kube-controller-manager,kube-controller-manager,"
      echo "$(t),system:kube-scheduler,kube-scheduler,"
    } >"$PKI/tokens.csv"
    chmod 600 "$PKI/tokens.csv"
  fi
}

token_of() { awk -F, -v u="$1" '$2==u {print $1}' "$PKI/tokens.csv"; }

# put FILE: writes stdin to FILE only when the content differs, by rename. `up` on a running
# cluster must not touch a config a running part watches: kube-proxy exits as soon as its config
# file is rewritten, even with the same content.
put() {
  local file=$1 tmp
  tmp=$(mktemp "$file.XXXXXX")
  cat >"$tmp"
  if cmp -s "$tmp" "$file"; then rm -f "$tmp"; else mv -f "$tmp" "$file"; fi
}

# kubeconfig FILE USER CREDENTIALS: a kubeconfig of the local apiserver for USER, whose
# credentials are the YAML lines CREDENTIALS (indented under `user:`).
kubeconfig() {
  local file=$1 user=$2 creds=$3
  put "$file" <<KC
apiVersion: v1
kind: Config
clusters:
- name: nginx-mesh-local
  cluster:
    server: $APISERVER
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
$creds
contexts:
- name: nginx-mesh-local
  context: {cluster: nginx-mesh-local, user: $user}
current-context: nginx-mesh-local
KC
  chmod 600 "$file"
}

write_kubeconfig() {  # FILE USER: a kubeconfig with USER's token
  kubeconfig "$1" "$2" "    token: $(token_of "$2")"
}

write_cert_kubeconfig() {  # FILE CERT-NAME: a kubeconfig with the client certificate $PKI/CERT-NAME
  kubeconfig "$1" "$2" "    client-certificate-data: $(base64 -w0 "$PKI/$2.crt")
    client-key-data: $(base64 -w0 "$PKI/$2.key")"
}

write_configs() {
  mkdir -p "$STATE/config" "$STATE/cni/net.d" "$RUN_DIR"
  write_kubeconfig "$KUBECONFIG_PATH" admin
  write_kubeconfig "$STATE/config/kubelet.kubeconfig" "system:node:$NODE_NAME"
  write_kubeconfig "$STATE/config/kube-proxy.kubeconfig" system:kube-proxy
  write_kubeconfig "$STATE/config/controller-manager.kubeconfig" system:kube-controller-manager
  write_kubeconfig "$STATE/config/scheduler.kubeconfig" system:kube-scheduler
  local n
  for n in $(node_ids); do write_node_configs "$n"; done
}

# write_node_configs N: node N's containerd, CNI, kubelet and kube-proxy configuration. Node 1's
# files are those of the single-node cluster, byte for byte (up rewrites nothing that is unchanged).
# An extra node's paths under /run/nmcl are its own (its mount namespace), so its files differ only
# in names, addresses, pod range and cgroup root.
write_node_configs() {
  local n=$1 sfx="" cfg=$STATE/config cni=$STATE/cni root=$STATE/containerd/root
  local bridge=$BRIDGE gw=$NODE_IP first=10.88.77.10 last=10.88.77.250 cluster_cidr=$POD_CIDR cgroup_root=""
  if [ "$n" != 1 ]; then
    local pre; pre=$(node_pod_cidr "$n"); pre=${pre%.0/24}
    sfx="-$n" cfg=$(node_state "$n")/config cni=$(node_state "$n")/cni root=$(node_state "$n")/containerd/root
    bridge=$NODE_POD_BRIDGE gw=$pre.1 first=$pre.10 last=$pre.250 cluster_cidr=$CLUSTER_CIDR
    cgroup_root=$'\ncgroupRoot: /nmcl-node-'"$n"
    mkdir -p "$cfg"
    write_cert_kubeconfig "$cfg/kubelet.kubeconfig" "kubelet-client-$n"
  fi
  mkdir -p "$cni/net.d"

  put "$cfg/containerd.toml" <<TOML
version = 2
root = "$root"
state = "$RUN_DIR/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$RUN_DIR/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:3.10"
  # This machine refuses negative oom_score_adj; without this every sandbox fails.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUN_DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$cni/net.d"
TOML

  put "$cni/net.d/10-nmcl.conflist" <<CNI
{
  "cniVersion": "0.4.0",
  "name": "nmcl",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$(node_pod_cidr "$n")", "gateway": "$gw", "rangeStart": "$first", "rangeEnd": "$last"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$cni/ipam"
      }
    }
  ]
}
CNI

  put "$cfg/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
imageServiceEndpoint: unix://$CONTAINERD_SOCK
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet$sfx.crt
tlsPrivateKeyFile: $PKI/kubelet$sfx.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "100Mi", nodefs.available: "2%", imagefs.available: "2%", nodefs.inodesFree: "2%"}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
serializeImagePulls: false
maxPods: 60$cgroup_root
# A node lease renewed every 4 s (a quarter of its duration) lets the node controller call a
# dead node NotReady after 20 s (--node-monitor-grace-period) with the default's margin of five
# missed renewals; the defaults (40 s lease, 50 s grace) cost every dead-node scenario 30 s more.
nodeLeaseDurationSeconds: 16
YAML

  put "$cfg/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $cluster_cidr
hostnameOverride: $(node_name "$n")
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$(node_ip "$n")/32"]
clientConnection:
  kubeconfig: $STATE/config/kube-proxy.kubeconfig
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
YAML
}

# ---------- parts ----------

start_etcd() {
  start etcd --name nmcl --data-dir "$STATE/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "$ETCD_PEER_URL" --initial-advertise-peer-urls "$ETCD_PEER_URL" \
    --initial-cluster "nmcl=$ETCD_PEER_URL" --listen-metrics-urls "" --log-level warn
  wait_for "etcd healthy" 60 curl -fsS "$ETCD_URL/health" || fail_part etcd
}

# start_containerd [N]: node N's containerd (default node 1).
start_containerd() {
  local n=${1:-1}
  if [ "$n" != 1 ]; then
    mkdir -p "$(node_state "$n")/containerd/root"
    start "containerd-$n" --config "$(node_state "$n")/config/containerd.toml"
    return
  fi
  mkdir -p "$STATE/containerd/root" "$RUN_DIR/containerd"
  # containerd makes these host folders for pod network namespaces and shim sockets; remember
  # which did not exist, so down removes them again.
  local d
  for d in /run/netns /run/containerd; do
    [ -e "$d" ] || grep -qx "$d" "$STATE/created-dirs" 2>/dev/null || echo "$d" >>"$STATE/created-dirs"
  done
  start containerd --config "$STATE/config/containerd.toml"
}

# wait_containerd N: node N's containerd answers on its socket.
wait_containerd() {
  local part=containerd; [ "$1" = 1 ] || part="containerd-$1"
  wait_for "$part serving" 60 ctr_node "$1" version || fail_part "$part"
}

start_apiserver() {
  start kube-apiserver \
    --etcd-servers="$ETCD_URL" \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --token-auth-file="$PKI/tokens.csv" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" \
    --kubelet-preferred-address-types=InternalIP \
    --cert-dir="$PKI/apiserver-generated" \
    --profiling=false \
    --feature-gates=MutatingAdmissionPolicy=true \
    --runtime-config=admissionregistration.k8s.io/v1beta1=true \
    --v=1
  wait_for "kube-apiserver ready" 180 kubectl get --raw /readyz || fail_part kube-apiserver
}

start_controllers() {
  start kube-controller-manager \
    --kubeconfig="$STATE/config/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/config/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/config/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --node-monitor-grace-period=20s \
    --leader-elect=false --profiling=false --v=1
  start kube-scheduler \
    --kubeconfig="$STATE/config/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/config/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/config/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1
}

# start_node [N]: node N's kubelet and kube-proxy (default node 1). NMCL_NODE_TAINTS (kubelet's
# --register-with-taints) applies to the extra nodes, when they register.
start_node() {
  local n=${1:-1}
  if [ "$n" = 1 ]; then
    start kubelet \
      --config="$STATE/config/kubelet.yaml" \
      --kubeconfig="$STATE/config/kubelet.kubeconfig" \
      --hostname-override="$NODE_NAME" \
      --node-ip="$NODE_IP" \
      --root-dir="$KUBELET_DIR" \
      --cert-dir="$STATE/kubelet-pki" \
      --v=1
    start kube-proxy --config="$STATE/config/kube-proxy.yaml" --v=1
    return
  fi
  local cfg; cfg=$(node_state "$n")/config
  start "kubelet-$n" \
    --config="$cfg/kubelet.yaml" \
    --kubeconfig="$cfg/kubelet.kubeconfig" \
    --hostname-override="$(node_name "$n")" \
    --node-ip="$(node_ip "$n")" \
    --root-dir="$KUBELET_DIR" \
    --cert-dir="$(node_state "$n")/kubelet-pki" \
    ${NMCL_NODE_TAINTS:+--register-with-taints="$NMCL_NODE_TAINTS"} \
    --v=1
  start "kube-proxy-$n" --config="$cfg/kube-proxy.yaml" --v=1
}

apply_scc_crd() {
  local dir crd
  if kubectl get crd securitycontextconstraints.security.openshift.io >/dev/null 2>&1; then
    log "SCC CRD: present"
    return
  fi
  dir=$(cd "$ROOT" && go mod download github.com/openshift/api >/dev/null 2>&1; go list -m -f '{{.Dir}}' github.com/openshift/api) ||
    die "cannot locate module github.com/openshift/api (go list -m in $ROOT)"
  crd="$dir/security/v1/zz_generated.crd-manifests/0000_03_config-operator_01_securitycontextconstraints.crd.yaml"
  [ -f "$crd" ] || die "SCC CRD not found at $crd"
  run_logged "$LOGS/scc-crd.log" kubectl apply -f "$crd"
  wait_for "SCC CRD established" 60 kubectl wait --for=condition=Established --timeout=5s \
    crd/securitycontextconstraints.security.openshift.io || die "SCC CRD not established"
}

# apply_local_policies: what stands in for OpenShift admission on this cluster (ci/manifests):
# restricted-v2 and its grant, the namespaces' UID/group/SELinux ranges, the UID assignment and
# the SCC admission policy; then waits until the policy refuses a pod that breaks its SCC.
apply_local_policies() {
  local m="$CI/manifests"
  mkdir -p "$LOGS"
  # create/replace, not apply: apply drops the SCC's null fields, which the SCC CRD requires.
  kubectl create -f "$m/openshift-default-sccs.yaml" >"$LOGS/policies.log" 2>&1 || true
  run_logged "$LOGS/policies-sccs.log" kubectl replace -f "$m/openshift-default-sccs.yaml"
  run_logged "$LOGS/policies.log" kubectl apply -f "$m/openshift-namespace-allocation.yaml" \
    -f "$m/openshift-scc-uid.yaml" -f "$m/openshift-scc-admission.yaml"
  # Namespaces created before the allocation policy get their ranges now, as OpenShift's
  # controller gives them to every namespace: the policy allocates on any update of a namespace
  # without them, so an empty patch is enough (it waits for the policy to be live).
  local ns
  for ns in $(kubectl get namespaces -o go-template='{{range .items}}{{if not .metadata.annotations}}{{.metadata.name}}{{"\n"}}{{else if not (index .metadata.annotations "openshift.io/sa.scc.uid-range")}}{{.metadata.name}}{{"\n"}}{{end}}{{end}}'); do
    wait_for "namespace $ns allocated" 60 namespace_allocated "$ns" ||
      die "namespace $ns got no openshift.io/sa.scc.uid-range (kubectl get mutatingadmissionpolicy nmcl-openshift-namespace-allocation -o yaml)"
  done
  wait_for "SCC admission policy enforcing" 120 scc_admission_enforced || die "the SCC admission policy does not refuse a pod that breaks restricted-v2 (kubectl get validatingadmissionpolicy nmcl-openshift-scc -o yaml)"
}

# namespace_allocated NS: an empty update of the namespace leaves it with its UID range (the
# allocation policy may need a few seconds to start serving).
namespace_allocated() {
  kubectl patch namespace "$1" --type=merge -p '{"metadata":{"annotations":{}}}' >/dev/null 2>&1 &&
    [ -n "$(kubectl get namespace "$1" -o jsonpath='{.metadata.annotations.openshift\.io/sa\.scc\.uid-range}')" ]
}

# scc_admission_enforced: a pod pinned to restricted-v2 that asks for the host network is refused
# by the policy, naming the SCC (a dry run: nothing is created).
scc_admission_enforced() {
  local out
  out=$(kubectl create --dry-run=server -f - 2>&1 <<POD
apiVersion: v1
kind: Pod
metadata: {name: nmcl-scc-probe, namespace: default, annotations: {openshift.io/required-scc: restricted-v2}}
spec:
  automountServiceAccountToken: false
  hostNetwork: true
  containers: [{name: probe, image: localhost/pause:3.10}]
POD
  ) || true
  [[ $out == *'provider "restricted-v2": spec.securityContext.hostNetwork'* ]]
}

# smoke_pods: a pause pod pinned to each node (nodeName, every taint tolerated) reaches Running.
smoke_pods() {
  # The default ServiceAccount comes from the controller manager; admission needs it.
  wait_for "default ServiceAccount" 90 kubectl -n default get serviceaccount default || fail_part kube-controller-manager
  local n pod
  smoke_name() { if [ "$1" = 1 ]; then echo nmcl-smoke; else echo "nmcl-smoke-$1"; fi; }
  for n in $(node_ids); do
    pod=$(smoke_name "$n")
    kubectl -n default delete pod "$pod" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    wait_for "old smoke pod $pod gone" 60 bash -c "! '$BIN/kubectl' --kubeconfig '$KUBECONFIG_PATH' -n default get pod $pod" || true
    kubectl apply -f - >/dev/null <<POD
apiVersion: v1
kind: Pod
metadata: {name: $pod, namespace: default, labels: {app: nmcl-smoke}}
spec:
  nodeName: $(node_name "$n")
  tolerations: [{operator: Exists}]
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: pause
    image: localhost/pause:3.10
    imagePullPolicy: Never
POD
  done
  for n in $(node_ids); do
    pod=$(smoke_name "$n")
    if ! wait_for "test pod $pod Running on $(node_name "$n")" 120 bash -c "[ \"\$('$BIN/kubectl' --kubeconfig '$KUBECONFIG_PATH' -n default get pod $pod -o jsonpath='{.status.phase}')\" = Running ]"; then
      kubectl -n default describe pod "$pod" | tail -n 20 >&2 || true
      if [ "$n" = 1 ]; then fail_part kubelet; else fail_part "kubelet-$n"; fi
    fi
  done
  for n in $(node_ids); do kubectl -n default delete pod "$(smoke_name "$n")" --wait=false >/dev/null; done
}

node_ready() {  # [N]
  [ "$(kubectl get node "$(node_name "${1:-1}")" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# node_present N: something of extra node N exists (namespace, namespace file, cgroup, PID file).
node_present() {
  local n=$1 m
  [ -e "$(node_netns "$n")" ] || [ -e "$(node_mntns "$n")" ] || [ -e "$NODES_RUN/$n" ] && return 0
  ls "$PIDS"/*-"$n".pid >/dev/null 2>&1 && return 0
  for m in $(cgroup_mounts); do [ -d "$m/nmcl-node-$n" ] && return 0; done
  return 1
}

cmd_up() {
  local start_all n; start_all=$(date +%s)
  [ "$(id -u)" = 0 ] || die "run as root (the cluster runs containers, mounts and iptables rules)"
  valid_nodes
  log "== cluster up ($K8S_VERSION, $NODES node(s): $NODE_NAME on $BRIDGE $NODE_IP$( [ "$NODES" = 1 ] || echo ", $(node_name 2)..$(node_name "$NODES") at $(node_ip 2)..$(node_ip "$NODES")"))"
  "$CI/packages.sh" install
  build_kubernetes
  # NMCL_SKIP_IMAGES=1 on a running cluster: leave the images as they are (ci/e2e's repeated-up test).
  local images=1
  if [ "${NMCL_SKIP_IMAGES:-0}" = 1 ] && alive containerd; then images=0; log "images: skipped (NMCL_SKIP_IMAGES=1)"; fi
  [ $images = 0 ] || build_images
  mkdir -p "$STATE" "$LOGS" "$PIDS"
  echo "$NODES" >"$STATE/node-count"
  [ -d "$KUBELET_DIR" ] || { mkdir -p "$KUBELET_DIR"; touch "$STATE/created-kubelet-dir"; }
  setup_network
  for n in $(seq 2 "$NODES"); do
    setup_node_network "$n"
    setup_node_mounts "$n"
    setup_node_cgroups "$n"
  done
  setup_pki
  write_configs
  start_etcd
  for n in $(node_ids); do start_containerd "$n"; done
  for n in $(node_ids); do wait_containerd "$n"; done
  # A node started here without the images (NMCL_SKIP_IMAGES=1 but new) gets them all the same.
  if [ $images = 1 ] || [ "${STARTED:-0}" = 1 ]; then import_images; fi
  start_apiserver
  start_controllers
  apply_scc_crd
  apply_local_policies
  # Fewer nodes than running (NODES went down): the extra ones go.
  for n in $(seq $((NODES + 1)) "$MAX_NODES"); do
    node_present "$n" || continue
    log "node $n is beyond NODES=$NODES: removing it"
    kubectl delete node "$(node_name "$n")" --ignore-not-found --wait=false >/dev/null || true
    teardown_node "$n"
  done
  for n in $(node_ids); do start_node "$n"; done
  start_postgres
  for n in $(node_ids); do
    local kl=kubelet; [ "$n" = 1 ] || kl="kubelet-$n"
    wait_for "node $(node_name "$n") Ready" 180 node_ready "$n" || fail_part "$kl"
  done
  wait_for "kube-proxy rules" 60 iptables -t nat -S KUBE-SERVICES || fail_part kube-proxy
  for n in $(seq 2 "$NODES"); do
    wait_for "kube-proxy-$n rules" 60 node_exec "$n" iptables -t nat -S KUBE-SERVICES || fail_part "kube-proxy-$n"
    alive "kube-proxy-$n" || fail_part "kube-proxy-$n"
  done
  rules_first
  alive kube-proxy || fail_part kube-proxy
  alive kube-controller-manager || fail_part kube-controller-manager
  alive kube-scheduler || fail_part kube-scheduler
  # A pod really runs after any part (re)started; a cluster found running needs no new proof.
  if [ "${STARTED:-0}" = 1 ] || [ "${NMCL_SMOKE:-0}" = 1 ]; then smoke_pods; else log "all parts were running: no smoke pod"; fi
  log "== cluster up in $(since "$start_all")s"
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
}

# ---------- PostgreSQL ----------
# The external database a user brings for the SPIRE servers' shared datastore (ha.enabled,
# ci/values-ha.yaml): Debian's PostgreSQL, a server of our own (own data folder under the state
# folder, own port), run as the postgres user, listening on loopback and the bridge only, open
# (password) to the pod range only. Never the Debian system service.

PG_PORT=${NMCL_PG_PORT:-15432}
PG_DIR="$STATE/postgres"
PG_USER=nginx_mesh
PG_PASSWORD=nginx-mesh-local
PG_DB=nginx_mesh

pg_bindir() { find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1; }

# as_postgres CMD...: from / (the caller's folder may be closed to the postgres user).
as_postgres() { (cd / && setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"); }

pg_psql() { as_postgres env PGOPTIONS="-c client_min_messages=warning" "$(pg_bindir)/psql" -X -q -h "$PG_DIR/run" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

start_postgres() {
  local bin; bin=$(pg_bindir)
  [ -n "$bin" ] || die "PostgreSQL is not installed (ci/packages.sh install)"
  if alive postgres; then
    log "postgres: running (pid $(pid_of postgres), port $PG_PORT)"
    return
  fi
  mkdir -p "$PG_DIR" "$LOGS" "$PIDS"
  install -d -o postgres -g postgres -m 700 "$PG_DIR/data" "$PG_DIR/run"
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    as_postgres "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 >"$LOGS/postgres-initdb.log" 2>&1 ||
      { tail -n 20 "$LOGS/postgres-initdb.log" >&2; die "initdb failed"; }
  fi
  # Superuser over the Unix socket only; the SPIRE servers (every node's pod range) and tests
  # (loopback) with a password. Written at each start: NODES may have changed since initdb.
  cat >"$PG_DIR/data/pg_hba.conf" <<HBA
local all postgres trust
host all $PG_USER 127.0.0.1/32 scram-sha-256
host all $PG_USER $CLUSTER_CIDR scram-sha-256
HBA
  chown postgres:postgres "$PG_DIR/data/pg_hba.conf"
  touch "$LOGS/postgres.log"
  chown postgres "$LOGS/postgres.log"
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done 2>/dev/null
    cd /
    exec setsid setpriv --reuid=postgres --regid=postgres --init-groups -- "$bin/postgres" -D "$PG_DIR/data" -p "$PG_PORT" \
      -c listen_addresses="127.0.0.1,$NODE_IP" -c unix_socket_directories="$PG_DIR/run" -c max_connections=200 \
      >>"$LOGS/postgres.log" 2>&1 </dev/null
  ) &
  echo $! >"$PIDS/postgres.pid"
  STARTED=1
  log "postgres: started (pid $!, port $PG_PORT, log $LOGS/postgres.log)"
  wait_for "postgres accepting connections" 60 "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || fail_part postgres
  pg_psql -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD'; END IF; END \$\$;"
  pg_database "$PG_DB"
}

# pg_database NAME: creates the database (owned by $PG_USER) if missing; SPIRE makes its tables.
pg_database() {
  if [ "$(pg_psql -tAc "SELECT 1 FROM pg_database WHERE datname = '$1'")" != 1 ]; then
    pg_psql -c "CREATE DATABASE \"$1\" OWNER $PG_USER"
    log "postgres: database $1 created"
  fi
}

# fresh_database NAME: an empty database of that name (dropped first if it exists): a scenario's own.
fresh_database() {
  alive postgres || die "postgres is not running (ci/cluster.sh up or ci/cluster.sh postgres start)"
  pg_psql -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)"
  pg_psql -c "CREATE DATABASE \"$1\" OWNER $PG_USER"
  log "postgres: fresh database $1"
}

# stop_postgres: fast shutdown (SIGINT: clients disconnected, no waiting for them), by PID.
stop_postgres() {
  local pid; pid=$(pid_of postgres) || return 0
  if alive postgres; then
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
      alive postgres || break
      sleep 0.5
    done
  fi
  stop_part postgres
}

# ---------- down ----------

# unmount_under DIR: unmounts everything mounted at or below DIR, deepest first.
unmount_under() {
  local dir=$1 m
  [ -e "$dir" ] || return 0
  for _ in 1 2 3; do
    local mounts
    mounts=$(findmnt -rn -o TARGET | awk -v d="$dir" '$0==d || index($0, d"/")==1' | sort -r) || true
    [ -n "$mounts" ] || return 0
    while IFS= read -r m; do
      # findmnt escapes blanks as \x20; unescape before umount.
      m=$(printf '%b' "$m")
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done <<<"$mounts"
  done
}

remove_chains() {  # deletes every KUBE-*, CNI-* and NMCL-* chain with the jumps into them
  local ipt t rule chain
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for t in filter nat mangle raw; do
      "$ipt" -t "$t" -S >/dev/null 2>&1 || continue
      # jumps from built-in chains
      { "$ipt" -t "$t" -S | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j (KUBE-|CNI-|'"$CHAIN"'-)' || true; } |
        while IFS= read -r rule; do
          eval "$ipt -t $t ${rule/-A /-D }" 2>/dev/null || true
        done
      for chain in $("$ipt" -t "$t" -S | awk '$1=="-N" && ($2 ~ /^(KUBE-|CNI-|'"$CHAIN"'-)/) {print $2}'); do
        "$ipt" -t "$t" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$ipt" -t "$t" -S | awk '$1=="-N" && ($2 ~ /^(KUBE-|CNI-|'"$CHAIN"'-)/) {print $2}'); do
        "$ipt" -t "$t" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

# kill_containers N: kills and deletes every container of node N through its containerd's API,
# which ends their shims too.
kill_containers() {
  local n=$1 part=containerd ids id
  [ "$n" = 1 ] || part="containerd-$n"
  alive "$part" && [ -S "$(node_sock "$n")" ] || return 0
  ids=$(ctr_node "$n" tasks ls -q 2>/dev/null || true)
  for id in $ids; do ctr_node "$n" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  for id in $ids; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      ctr_node "$n" tasks delete "$id" >/dev/null 2>&1 && break
      sleep 0.5
    done
  done
  for id in $(ctr_node "$n" containers ls -q 2>/dev/null || true); do ctr_node "$n" containers delete "$id" >/dev/null 2>&1 || true; done
  [ -z "$ids" ] || log "  removed $(echo "$ids" | wc -w) containers of node $n"
}

# teardown_node N: removes everything of extra node N, also after a crash (found by fixed names
# and by its cgroup, not only by recorded PIDs): its parts, every process left in its cgroup
# (shims, containers), its mount namespace (every mount in it goes with the last process), its
# network namespace and veth, its host route, its cgroups and folders.
teardown_node() {
  local n=$1 p pids m f
  # No containerd API calls: every process of the node (shims and containers included) is in
  # its cgroup, and every mount they made is in its mount namespace, which goes with them.
  for p in kubelet kube-proxy containerd; do stop_part "$p-$n"; done
  for _ in $(seq 1 20); do
    pids=$(node_procs "$n")
    [ -n "$pids" ] || break
    # shellcheck disable=SC2086 # one PID per word
    kill -KILL $pids 2>/dev/null || true
    sleep 0.5
  done
  [ -z "$(node_procs "$n")" ] || log "  WARNING: processes left in node $n's cgroup: $(node_procs "$n" | tr '\n' ' ')"
  for f in "$(node_mntns "$n")" "$(node_netns "$n")"; do
    [ -e "$f" ] || continue
    umount "$f" 2>/dev/null || umount -l "$f" 2>/dev/null || true
    rm -f "$f"
  done
  ip link del "nmclv$n" 2>/dev/null || true
  ip route del "$(node_pod_cidr "$n")" 2>/dev/null || true
  for m in $(cgroup_mounts); do
    [ -d "$m/nmcl-node-$n" ] || continue
    find "$m/nmcl-node-$n" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  unmount_under "$NODES_RUN/$n"
  rm -rf "${NODES_RUN:?}/$n" "$(node_state "$n")"
  log "  node $n removed"
}

remove_cgroups() {  # kubelet's cgroupfs tree (kubepods) in every v1 hierarchy, deepest first
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods.slice; do
    [ -d "$d" ] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

cmd_down() {
  local start_all; start_all=$(date +%s)
  log "== cluster down"
  # Argo CD (ci/argocd.sh, started by the e2e) works against this cluster: it goes first.
  "$CI/argocd.sh" down || true
  # Stop the control loops first, so nothing restarts what is being removed.
  local p n
  # Every extra node there is, whatever NODES says now.
  for n in $(seq 2 "$MAX_NODES"); do
    if node_present "$n"; then teardown_node "$n"; fi
  done
  for p in kubelet kube-proxy kube-scheduler kube-controller-manager; do stop_part "$p"; done
  # Containers belong to containerd: kill and delete them through its API, which ends their shims.
  kill_containers 1
  for p in containerd kube-apiserver etcd; do stop_part "$p"; done
  stop_postgres
  # kube-proxy's own cleanup of its rules, then every chain we or CNI made.
  if [ -x "$BIN/kube-proxy" ]; then "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  remove_chains
  # Network namespaces containerd made for pods (netns mounts), then all mounts we made.
  local ns
  # A bind of /run/netns onto itself (an earlier version's `ip netns add`) hides the pod network
  # namespaces mounted below it: when we made the folder, it goes first.
  if grep -qx /run/netns "$STATE/created-dirs" 2>/dev/null && mountpoint -q /run/netns; then
    umount /run/netns 2>/dev/null || umount -l /run/netns 2>/dev/null || true
  fi
  for ns in /run/netns/cni-*; do
    [ -e "$ns" ] || continue
    umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
    rm -f "$ns" 2>/dev/null || log "  WARNING: $ns stays (still a mount point)"
  done
  unmount_under "$KUBELET_DIR"
  unmount_under "$RUN_DIR"
  unmount_under "$STATE"
  unmount_under "$NODES_RUN"
  unmount_under "$NS_DIR"
  rm -rf "$NODES_RUN"
  [ ! -d "$NS_DIR" ] || rmdir "$NS_DIR" 2>/dev/null || true
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link delete "$BRIDGE" && log "  bridge $BRIDGE removed"
  fi
  ip route del "$SERVICE_CIDR" 2>/dev/null || true
  # veth ends of pods whose netns is gone vanish by themselves; any left on the bridge went with it.
  if [ -f "$STATE/sysctl.orig" ]; then
    local kv
    while IFS= read -r kv; do
      local f; f="/proc/sys/$(echo "${kv%%=*}" | tr . /)"
      if [ -e "$f" ]; then echo "${kv#*=}" >"$f" 2>/dev/null || true; fi
    done <"$STATE/sysctl.orig"
  fi
  remove_cgroups
  if [ -f "$STATE/created-kubelet-dir" ]; then
    rm -rf "$KUBELET_DIR"
  fi
  if [ -f "$STATE/created-dirs" ]; then
    local d
    while IFS= read -r d; do
      [ -d "$d" ] || continue
      find "$d" -depth -type d -empty -delete 2>/dev/null || true
    done <"$STATE/created-dirs"
  fi
  rm -rf "$RUN_DIR" "$STATE"
  log "== cluster down in $(since "$start_all")s"
}

cmd_status() {
  local p rc=0
  for p in $(all_parts) postgres; do
    if alive "$p"; then printf '%-24s running (pid %s)\n' "$p" "$(pid_of "$p")"; else printf '%-24s stopped\n' "$p"; rc=1; fi
  done
  if alive kube-apiserver; then
    kubectl get nodes -o wide 2>&1 || true
    kubectl get pods -A -o wide 2>&1 | head -n 40 || true
  fi
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
  return $rc
}

# node_arg N: N must be a node of the running cluster (1..NODES).
node_arg() {
  if ! [[ "${1:-}" =~ ^[1-9]$ ]] || [ "$1" -gt "$NODES" ]; then die "no node '${1:-}': give a node number from 1 to $NODES"; fi
  [ -f "$KUBECONFIG_PATH" ] || die "no cluster: ci/cluster.sh up first"
}

# wait_node_up N: node N's kubelet answers its health check and the node is Ready.
wait_node_up() {
  local n=$1 kl=kubelet; [ "$n" = 1 ] || kl="kubelet-$n"
  wait_for "$kl healthz" 60 node_exec "$n" curl -fsS http://127.0.0.1:10248/healthz || fail_part "$kl"
  wait_for "node $(node_name "$n") Ready" 180 node_ready "$n" || fail_part "$kl"
}

# cmd_restart PART: stops one part and starts it again with the same settings (e2e fault tests).
cmd_restart() {
  local part=$1 n
  [ -f "$KUBECONFIG_PATH" ] || die "no cluster: ci/cluster.sh up first"
  # A captured list, never `| grep -q`: under pipefail grep's early exit can SIGPIPE all_parts
  # and fail the test although the part is listed (seen: "unknown part kube-apiserver").
  local parts; parts=$(all_parts)
  [[ $'\n'"$parts"$'\n' == *$'\n'"$part"$'\n'* ]] || die "unknown part $part (one of ${parts//$'\n'/ })"
  n=$(part_node "$part")
  log "restarting $part"
  stop_part "$part"
  case "${part%-[2-9]}" in
    etcd) start_etcd ;;
    containerd) start_containerd "$n"; wait_containerd "$n" ;;
    kube-apiserver) start_apiserver ;;
    kube-controller-manager | kube-scheduler) start_controllers ;;
    kubelet | kube-proxy) start_node "$n"; wait_node_up "$n" ;;
  esac
}

# cmd_stop_node N: a dead node: its kubelet and kube-proxy stop, its containers keep running (as
# when kubelet dies or the node is cut off); the node controller marks it NotReady after its grace
# period (kube-controller-manager's --node-monitor-grace-period: 20 s here, 50 s by default).
cmd_stop_node() {
  local n=$1 p
  for p in kubelet kube-proxy; do if [ "$n" = 1 ]; then stop_part "$p"; else stop_part "$p-$n"; fi; done
  log "node $(node_name "$n") stopped (kubelet and kube-proxy; ci/cluster.sh start-node $n starts them)"
}

cmd_start_node() {
  start_node "$1"
  wait_node_up "$1"
}

# cmd_memory: resident memory of each extra node's processes, by its cgroup (kubelet, containerd,
# kube-proxy, containerd shims, pod processes): RSS counts shared pages (the binaries' text, shared
# with the other nodes') in full, PSS shares them out, so PSS is what one more node costs.
cmd_memory() {
  local n pid comm rss pss
  for n in $(seq 2 "$NODES"); do
    echo "== node $n ($(node_name "$n"))"
    for pid in $(node_procs "$n"); do
      comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
      rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
      pss=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null)
      echo "$comm ${rss:-0} ${pss:-0}"
    done | awk '{r[$1]+=$2; p[$1]+=$3; c[$1]++; R+=$2; P+=$3}
      END {for (k in r) printf "  %-24s %3d proc  RSS %7.1f MiB  PSS %7.1f MiB\n", k, c[k], r[k]/1024, p[k]/1024;
           printf "  %-24s           RSS %7.1f MiB  PSS %7.1f MiB\n", "total", R/1024, P/1024}'
  done
}

cmd_images() {
  build_images
  alive containerd || die "containerd is not running: ci/cluster.sh up first"
  import_images "$@"
}

main() {
  case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    images) shift; cmd_images "$@" ;;
    restart) [ -n "${2:-}" ] || die "usage: $0 restart PART"; cmd_restart "$2" ;;
    stop-node) node_arg "${2:-}"; cmd_stop_node "$2" ;;
    start-node) node_arg "${2:-}"; cmd_start_node "$2" ;;
    cordon | uncordon) node_arg "${2:-}"; kubectl "$1" "$(node_name "$2")" ;;
    # Daemon pods stay (as an upgrade's drain leaves them); a bare pod needs --force.
    drain) node_arg "${2:-}"; kubectl drain "$(node_name "$2")" --ignore-daemonsets --delete-emptydir-data "${@:3}" ;;
    node-exec) node_arg "${2:-}"; [ -n "${3:-}" ] || die "usage: $0 node-exec N CMD..."; node_exec "$2" "${@:3}" ;;
    memory) cmd_memory ;;
    scc-crd)
      case "${2:-}" in
        # Deleting the CRD deleted every SCC, restricted-v2 too; the policies come back with it.
        apply) apply_scc_crd; apply_local_policies ;;
        delete)
          kubectl delete crd securitycontextconstraints.security.openshift.io --ignore-not-found --wait=true >/dev/null
          log "SCC CRD deleted (a plain Kubernetes cluster now: with no SCC the admission policies do nothing)"
          ;;
        *) die "usage: $0 scc-crd apply|delete" ;;
      esac
      ;;
    postgres)
      case "${2:-}" in
        start) start_postgres ;;
        stop) stop_postgres ;;
        fresh-database) [ -n "${3:-}" ] || die "usage: $0 postgres fresh-database NAME"; fresh_database "$3" ;;
        *) die "usage: $0 postgres start|stop|fresh-database NAME" ;;
      esac
      ;;
    logs) [ -n "${2:-}" ] || die "usage: $0 logs PART (one of $(all_parts | tr '\n' ' '))"; tail -n "${3:-100}" "$LOGS/$2.log" ;;
    *) echo "usage: $0 up|down|status|images [IMAGE...]|restart PART|stop-node N|start-node N|cordon N|uncordon N|drain N [FLAG...]|node-exec N CMD...|memory|scc-crd apply|delete|postgres start|stop|fresh-database NAME|logs PART [LINES]" >&2; exit 2 ;;
  esac
}

# Sourcing the file (tests, debugging) defines the functions without running anything.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
