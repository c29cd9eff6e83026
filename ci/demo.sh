#!/usr/bin/env bash
# make demo: the local cluster, the OpenShift profile installed from this checkout, a namespace
# labelled for injection with a server and a client Deployment that declare their mesh port and
# peer; the controller injects the proxy sidecar into both, and a request goes client -> proxy ->
# mTLS -> proxy -> server, with each side's SPIFFE ID printed (each app's own SVID, and the peer
# ID each proxy checked, from its log). Then `nginx-mesh-hooks status`, and the commands to
# uninstall, to watch the sentinel and to stop the cluster. The cluster stays up afterwards.
# NODES=1 starts a one-node cluster (default 3; a running cluster keeps its nodes).
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NS=nginx-mesh
APP_NS=nginx-mesh-demo
OPT_IN=injector.nsm.nginx.com/auto-inject=enabled
start=$(date +%s)
step() { log "== [$(since "$start")s] $*"; }

step "1/5 local cluster"
"$CI/cluster.sh" up
build_helm
export KUBECONFIG="$KUBECONFIG_PATH"
helm() { "$BIN/helm" "$@"; }

step "2/5 install the OpenShift profile (helm upgrade --install --wait; proxies log each connection's peer ID)"
kubectl create namespace "$APP_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
t0=$(date +%s)
if ! helm upgrade --install nginx-mesh "$ROOT/charts/nginx-mesh" -n "$NS" --create-namespace \
  -f "$ROOT/charts/nginx-mesh/values-openshift.yaml" -f "$CI/values-local.yaml" \
  --set "sidecar.sccBindings.namespaces={$APP_NS}" --set proxy.logLevel=debug --wait --timeout 6m; then
  kubectl -n "$NS" get pods -o wide >&2 || true
  die "helm install failed (kubectl -n $NS describe pods; ci/cluster.sh logs kubelet)"
fi
log "  installed and ready in $(since "$t0")s"
kubectl -n "$NS" get pods -o wide

step "3/5 opt the namespace in: label $APP_NS $OPT_IN"
kubectl label namespace "$APP_NS" "$OPT_IN" --overwrite >/dev/null
TD=$(helm get values nginx-mesh -n "$NS" -a -o json | sed -n 's/.*"trustDomain":"\([^"]*\)".*/\1/p')
TD=${TD:-cluster.local}

step "4/5 a server and a client Deployment that declare their mesh port and their peer: the controller injects the proxy"
for sa in server client; do
  kubectl -n "$APP_NS" create serviceaccount "$sa" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
done
# A restricted pod spec of the e2e workload image: $1 app label and ServiceAccount, $2 annotation, $3 args.
workload() {
  cat <<DEPLOY
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $1
  namespace: $APP_NS
spec:
  replicas: 1
  selector: {matchLabels: {app: $1}}
  template:
    metadata:
      labels: {app: $1}
      annotations:
        $2
    spec:
      serviceAccountName: $1
      terminationGracePeriodSeconds: 5
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: app
        image: localhost/nginx-mesh/e2e-workload:dev
        imagePullPolicy: Never
        args: [$3]
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
DEPLOY
}
# The server app listens on loopback only; its proxy serves mesh port 8443 to the client's identity.
workload server "config.nsm.nginx.com/inbound: \"8443->8080 allow ns/$APP_NS/sa/client\"" '"--serve", "127.0.0.1:8080"' | kubectl apply -f - >/dev/null
kubectl apply -f - >/dev/null <<SVC
apiVersion: v1
kind: Service
metadata: {name: server, namespace: $APP_NS}
spec:
  selector: {app: server}
  ports: [{name: mesh, port: 8443, targetPort: 8443}]
SVC
# No cluster DNS on the local cluster: the client's proxy dials the Service's ClusterIP.
SERVER_IP=$(kubectl -n "$APP_NS" get service server -o jsonpath='{.spec.clusterIP}')
workload client "config.nsm.nginx.com/outbound: \"15001->$SERVER_IP:8443 expect ns/$APP_NS/sa/server\"" '"--call", "127.0.0.1:15001", "--every", "2s"' | kubectl apply -f - >/dev/null
pod_of() { kubectl -n "$APP_NS" get pods -l "app=$1" --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}' 2>/dev/null; }
client_ok() {
  local p; p=$(pod_of client) || return 1
  [ -n "$p" ] || return 1
  reply=$(kubectl -n "$APP_NS" logs "$p" -c app 2>/dev/null | sed -n 's/^FRESH seq=[0-9]* OK //p' | head -n1)
  [ -n "$reply" ]
}
reply=""
wait_for "the client's first request answered through both proxies" 180 client_ok || {
  kubectl -n "$APP_NS" get pods -o wide >&2
  kubectl -n "$APP_NS" describe pods | tail -n 40 >&2
  die "no answer through the mesh (see controller/README.md, troubleshooting; proxy logs: kubectl -n $APP_NS logs deploy/client -c nginx-mesh-proxy)"
}
client=$(pod_of client)
server=$(pod_of server)
own_id() { kubectl -n "$APP_NS" logs "$1" -c app | sed -n 's/^SPIFFE_ID=//p' | head -n1; }
# peer_id of the first proxy log entry with message $2 in pod $1
peer() { kubectl -n "$APP_NS" logs "$1" -c nginx-mesh-proxy | grep -F "\"msg\":\"$2\"" | head -n1 | sed -n 's/.*"peer_id":"\([^"]*\)".*/\1/p'; }
echo
echo "    pod $APP_NS/$client: init containers $(kubectl -n "$APP_NS" get pod "$client" -o jsonpath='{.spec.initContainers[*].name} (restartPolicy {.spec.initContainers[0].restartPolicy})')"
echo "    client app     its own SVID:           $(own_id "$client")"
echo "      -> 127.0.0.1:15001 (plain TCP, inside the pod)"
echo "    client proxy   verified the server:    $(peer "$client" 'connected; upstream ID verified')"
echo "      == mTLS ==> $SERVER_IP:8443"
echo "    server proxy   authorised the client:  $(peer "$server" accepted)"
echo "      -> 127.0.0.1:8080 (plain TCP, inside the pod)"
echo "    server app     its own SVID:           $(own_id "$server")"
echo "    the client got: $reply"
echo "    (identities: spiffe://$TD/ns/$APP_NS/sa/<serviceaccount>; an ID outside the allow list is refused at the handshake)"
echo

step "5/5 nginx-mesh-hooks status"
"$ROOT/bin/nginx-mesh-hooks" status --namespace "$NS" --log-format text || true

cat <<TXT

== demo ready in $(since "$start")s. Next:
  export KUBECONFIG=$KUBECONFIG_PATH
  # uninstall while server and client still run: the CSI driver stays, the sentinel waits
  $BIN/helm uninstall nginx-mesh -n $NS
  # watch the sentinel, then end the workload and see it remove the rest (itself included)
  $BIN/kubectl -n $NS logs -f job/csi-driver-sentinel &
  $BIN/kubectl -n $APP_NS scale deployment server client --replicas=0
  $ROOT/bin/nginx-mesh-hooks status --namespace $NS
  # stop the cluster
  make cluster-down
TXT
