#!/usr/bin/env bash
# Real Argo CD (v3.6.2, built from ci/tools/argocd) against the local cluster, for the end-to-end
# scenarios of ci/e2e/z16_argocd_real_test.go: its application controller and repo server as
# host processes (as Argo CD's own Procfile runs them for development), with Debian's Redis.
# No API server, UI, Dex or CLI: an Application is a resource like any other, created and deleted
# with kubectl, which is what a GitOps commit amounts to.
#   ci/argocd.sh build    build (cached) only
#   ci/argocd.sh up       build if needed, apply the CRDs and the settings, start the processes
#   ci/argocd.sh down     stop the processes this script started (by their recorded PIDs)
#   ci/argocd.sh status   which are running
# The cluster must be up (ci/cluster.sh up). Listeners: Redis and the repo server on 127.0.0.1.
# The controller's metrics listener is hard-coded to 0.0.0.0 in v3.6.2 (controller/appcontroller.go:
# fmt.Sprintf("0.0.0.0:%d", metricsPort), no flag): an iptables rule rejects it on every interface
# but loopback while it runs.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NS=argocd
A="$STATE/argocd"                  # state of the running Argo CD: pids, logs, data folders
REDIS_PORT=16379
REPO_PORT=18081
REPO_METRICS_PORT=18084
CTRL_METRICS_PORT=18082
FW_COMMENT=nmcl-argocd-metrics
PARTS=(redis repo-server application-controller)

pid_file() { echo "$A/pids/$1.pid"; }
alive() {
  local f; f=$(pid_file "$1")
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

# start PART CMD...: the part in a session of its own, no descriptor of ours beyond 0-2 (a caller's
# `flock` lock among them), its output in A/logs/PART.log, its PID recorded.
start() {
  local part=$1; shift
  if alive "$part"; then
    log "$part: running (pid $(cat "$(pid_file "$part")"))"
    return
  fi
  mkdir -p "$A/logs" "$A/pids"
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done 2>/dev/null
    exec setsid "$@" >>"$A/logs/$part.log" 2>&1 </dev/null
  ) &
  echo $! >"$(pid_file "$part")"
  log "$part: started (pid $!, log $A/logs/$part.log)"
}

stop() {
  local part=$1 f pid
  f=$(pid_file "$part")
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if alive "$part"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
      alive "$part" || break
      sleep 0.5
    done
    if alive "$part"; then kill -KILL "$pid" 2>/dev/null || true; fi
    log "stopped $part (pid $pid)"
  fi
  rm -f "$f"
}

fail() {
  echo "----- last 30 lines of $A/logs/$1.log -----" >&2
  tail -n 30 "$A/logs/$1.log" >&2 || true
  die "argo cd $1 did not come up"
}

fw_rule() { iptables "$1" INPUT -p tcp --dport "$CTRL_METRICS_PORT" ! -i lo -m comment --comment "$FW_COMMENT" -j REJECT; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

crds_established() {
  local c st
  for c in applications.argoproj.io appprojects.argoproj.io; do
    st=$(kubectl get crd "$c" -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')
    [ "$st" = True ] || return 1
  done
}

# settings: what the controller reads at start: the CRDs, argocd-cm and argocd-secret (found by
# the label part-of=argocd), and the AppProject `default` every Application here names.
settings() {
  kubectl apply --server-side --force-conflicts -f "$ARGOCD_DATA/crds/" >/dev/null
  # (kubectl wait fails instead of waiting while a new CRD has no conditions yet)
  wait_for "argo cd CRDs established" 60 crds_established || die "argo cd CRDs not established"
  kubectl apply --server-side --force-conflicts -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $NS
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: $NS
  labels:
    app.kubernetes.io/part-of: argocd
data:
  # Refresh from the source every 30 s instead of 120 s: a scenario edits its Application and
  # waits for the sync; this only bounds how late a missed change is seen.
  timeout.reconciliation: 30s
---
apiVersion: v1
kind: Secret
metadata:
  name: argocd-secret
  namespace: $NS
  labels:
    app.kubernetes.io/part-of: argocd
---
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata:
  name: default
  namespace: $NS
spec:
  sourceRepos: ["*"]
  destinations:
    - server: "*"
      namespace: "*"
  clusterResourceWhitelist:
    - group: "*"
      kind: "*"
EOF
}

up() {
  build_argocd
  cluster_running || die "the cluster is not running: ci/cluster.sh up first"
  command -v redis-server >/dev/null || die "no redis-server: ci/packages.sh install"
  settings
  mkdir -p "$A"/{tls,ssh,gpg/keys,gpg/source,app-config,plugins,home,redis,path}
  # The repo server runs helm and git from PATH, and git-verify-wrapper.sh (Argo CD's image has it
  # in /usr/local/bin); argv[0] picks the component of the one binary.
  ln -sfn "$BIN/helm" "$A/path/helm"
  ln -sfn "$ARGOCD_DATA/git-verify-wrapper.sh" "$A/path/git-verify-wrapper.sh"
  ln -sfn "$BIN/argocd" "$A/path/argocd-repo-server"
  ln -sfn "$BIN/argocd" "$A/path/argocd-application-controller"
  local envs=(
    PATH="$A/path:$PATH" HOME="$A/home" KUBECONFIG="$KUBECONFIG_PATH"
    ARGOCD_FAKE_IN_CLUSTER=true ARGOCD_GPG_ENABLED=false
    ARGOCD_TLS_DATA_PATH="$A/tls" ARGOCD_SSH_DATA_PATH="$A/ssh"
    ARGOCD_GNUPGHOME="$A/gpg/keys" ARGOCD_GPG_DATA_PATH="$A/gpg/source"
    ARGOCD_APP_CONF_PATH="$A/app-config" ARGOCD_PLUGINSOCKFILEPATH="$A/plugins"
  )
  start redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$A/redis"
  wait_for "redis on 127.0.0.1:$REDIS_PORT" 20 port_open "$REDIS_PORT" || fail redis
  start repo-server env "${envs[@]}" "$A/path/argocd-repo-server" --loglevel info --logformat text \
    --redis "127.0.0.1:$REDIS_PORT" --address 127.0.0.1 --port "$REPO_PORT" --disable-tls --client-ca-path "" \
    --metrics-address 127.0.0.1 --metrics-port "$REPO_METRICS_PORT"
  wait_for "argo cd repo server on 127.0.0.1:$REPO_PORT" 60 port_open "$REPO_PORT" || fail repo-server
  iptables -C INPUT -p tcp --dport "$CTRL_METRICS_PORT" ! -i lo -m comment --comment "$FW_COMMENT" -j REJECT 2>/dev/null ||
    fw_rule -I
  start application-controller env "${envs[@]}" "$A/path/argocd-application-controller" --loglevel info \
    --logformat text --kubeconfig "$KUBECONFIG_PATH" --namespace "$NS" \
    --redis "127.0.0.1:$REDIS_PORT" --repo-server "127.0.0.1:$REPO_PORT" --repo-server-plaintext \
    --metrics-port "$CTRL_METRICS_PORT"
  wait_for "argo cd application controller healthy" 90 \
    curl -fsS "http://127.0.0.1:$CTRL_METRICS_PORT/healthz" || fail application-controller
  log "argo cd $ARGOCD_VERSION: up (namespace $NS, logs $A/logs)"
}

down() {
  local p i
  for ((i = ${#PARTS[@]} - 1; i >= 0; i--)); do
    p=${PARTS[$i]}
    stop "$p"
  done
  while fw_rule -D 2>/dev/null; do :; done
}

status() {
  local p
  for p in "${PARTS[@]}"; do
    if alive "$p"; then echo "$p: running (pid $(cat "$(pid_file "$p")"))"; else echo "$p: stopped"; fi
  done
}

case "${1:-}" in
  build) build_argocd ;;
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 build|up|down|status" ;;
esac
