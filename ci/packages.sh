#!/usr/bin/env bash
# Installs the Debian packages the local cluster and the e2e tests need. Idempotent and quiet:
# packages already installed are skipped, so a warm machine pays nothing.
#   ci/packages.sh install   install what is missing
#   ci/packages.sh list      print the package list
#   ci/packages.sh missing   print the packages not installed yet
set -euo pipefail

PACKAGES=(
  etcd-server                  # etcd 3.4, on loopback
  containerd runc              # CRI runtime (containerd 1.6 + runc 1.1)
  containernetworking-plugins  # bridge, host-local, loopback, portmap CNI plugins
  iptables conntrack           # kube-proxy iptables mode, the pod egress DROP rule
  iproute2 util-linux mount    # ip link/addr, nsenter, mount/umount/findmnt
  kmod                         # modprobe br_netfilter/overlay
  procps psmisc                # pgrep/ps for the harness
  shellcheck                   # make lint checks every script
  gcc libc6-dev                # static cgo build of spire-server (SQLite)
  nginx libnginx-mod-stream    # NGINX with its stream module: the peer of the proxy benchmark (make bench-proxy); its own config, never the system service
  postgresql                   # the SPIRE servers' shared datastore with ha.enabled (ci/values-ha.yaml): a server of ci/cluster.sh's own, never the system service
  redis-server                 # Argo CD's cache (ci/argocd.sh): a server of its own on loopback, never the system service
  prometheus                   # promtool: `go test ./charts/` unit-tests the chart's alerts; tests run their own prometheus, never the system service
  ca-certificates git make
)

missing() {
  local p
  for p in "${PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || echo "$p"
  done
}

case "${1:-}" in
  install)
    mapfile -t todo < <(missing)
    if [ "${#todo[@]}" -eq 0 ]; then
      echo "packages: all ${#PACKAGES[@]} present"
      exit 0
    fi
    echo "packages: installing ${todo[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # apt-get update once if the lists are empty (fresh machine); .ci/run updates them itself.
    if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then apt-get update -qq; fi
    # The Debian containerd package would start a system containerd via systemd where systemd
    # runs; the cluster uses its own containerd with its own socket, so the two never meet.
    apt-get install -y -qq --no-install-recommends "${todo[@]}" >/tmp/nginx-mesh-apt.log 2>&1 || {
      tail -n 30 /tmp/nginx-mesh-apt.log >&2
      echo "packages: apt-get install failed (full log: /tmp/nginx-mesh-apt.log)" >&2
      exit 1
    }
    # Debian's prometheus enables and starts prometheus.service (port 9090) where systemd runs.
    # The tests need only its binaries: stop and disable that unit, and only that one.
    if printf '%s\n' "${todo[@]}" | grep -qx prometheus && [ -d /run/systemd/system ]; then
      systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
    echo "packages: installed ${#todo[@]}"
    ;;
  list) printf '%s\n' "${PACKAGES[@]}" ;;
  missing) missing ;;
  *)
    echo "usage: $0 install|list|missing" >&2
    exit 2
    ;;
esac
