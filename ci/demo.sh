#!/usr/bin/env bash
# make demo: the local cluster, the OpenShift profile installed from this checkout, an injected
# sample workload that prints its SPIFFE ID, `nginx-mesh-hooks status`, and then the commands to
# uninstall, to watch the sentinel and to stop the cluster. The cluster stays up afterwards.
set -euo pipefail
# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NS=nginx-mesh
APP_NS=nginx-mesh-demo
start=$(date +%s)
step() { log "== [$(since "$start")s] $*"; }

step "1/5 local cluster"
"$CI/cluster.sh" up
build_helm
export KUBECONFIG="$KUBECONFIG_PATH"
helm() { "$BIN/helm" "$@"; }

step "2/5 install the OpenShift profile (helm upgrade --install --wait)"
kubectl create namespace "$APP_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
t0=$(date +%s)
if ! helm upgrade --install nginx-mesh "$ROOT/charts/nginx-mesh" -n "$NS" --create-namespace \
  -f "$ROOT/charts/nginx-mesh/values-openshift.yaml" -f "$CI/values-local.yaml" \
  --set "sidecar.sccBindings.namespaces={$APP_NS}" --wait --timeout 6m; then
  kubectl -n "$NS" get pods -o wide >&2 || true
  die "helm install failed (kubectl -n $NS describe pods; ci/cluster.sh logs kubelet)"
fi
log "  installed and ready in $(since "$t0")s"
kubectl -n "$NS" get pods -o wide

step "3/5 register the workload's identity (spire-server entry create, admin socket)"
TD=$(helm get values nginx-mesh -n "$NS" -a -o json | sed -n 's/.*"trustDomain":"\([^"]*\)".*/\1/p')
TD=${TD:-cluster.local}
ID="spiffe://$TD/ns/$APP_NS/sa/default"
NODE_ALIAS="spiffe://$TD/demo/node"
shown=$(SPIRE_NS=$NS spire_server_cli entry show -spiffeID "$NODE_ALIAS" 2>/dev/null || true)
[[ "$shown" == *"$NODE_ALIAS"* ]] ||
  SPIRE_NS=$NS spire_server_cli entry create -node -spiffeID "$NODE_ALIAS" -selector k8s_psat:cluster:nginx-mesh >/dev/null
shown=$(SPIRE_NS=$NS spire_server_cli entry show -spiffeID "$ID" 2>/dev/null || true)
[[ "$shown" == *"$ID"* ]] ||
  SPIRE_NS=$NS spire_server_cli entry create -parentID "$NODE_ALIAS" -spiffeID "$ID" \
    -selector "k8s:ns:$APP_NS" -selector k8s:sa:default >/dev/null
log "  entry $ID"

step "4/5 injected sample workload (CSI volume of csi.nsm.nginx.com, go-spiffe)"
kubectl apply -f - >/dev/null <<POD
apiVersion: v1
kind: Pod
metadata:
  name: sample
  namespace: $APP_NS
  labels: {app: sample}
  annotations:
    injector.nsm.nginx.com/status: injected
    openshift.io/required-scc: nginx-mesh-sidecar-permissions
spec:
  terminationGracePeriodSeconds: 5
  securityContext:
    runAsNonRoot: true
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: app
    image: localhost/nginx-mesh/e2e-workload:dev
    imagePullPolicy: Never
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
    volumeMounts:
    - {name: spiffe-workload-api, mountPath: /spiffe-workload-api, readOnly: true}
  volumes:
  - name: spiffe-workload-api
    csi: {driver: csi.nsm.nginx.com, readOnly: true}
POD
got=""
check_id() { got=$(kubectl -n "$APP_NS" logs sample 2>/dev/null | sed -n 's/^SPIFFE_ID=//p'); [ -n "$got" ]; }
wait_for "sample workload's SPIFFE ID" 180 check_id || {
  kubectl -n "$APP_NS" describe pod sample | tail -n 20 >&2
  die "the sample workload got no SVID"
}
check_id
echo
echo "    sample workload SPIFFE ID: $got"
echo

step "5/5 nginx-mesh-hooks status"
"$ROOT/bin/nginx-mesh-hooks" status --namespace "$NS" --log-format text || true

cat <<TXT

== demo ready in $(since "$start")s. Next:
  export KUBECONFIG=$KUBECONFIG_PATH
  # uninstall while the sample still runs: the CSI driver stays, the sentinel waits
  $BIN/helm uninstall nginx-mesh -n $NS
  # watch the sentinel, then end the workload and see it remove the rest (itself included)
  $BIN/kubectl -n $NS logs -f job/csi-driver-sentinel &
  $BIN/kubectl -n $APP_NS delete pod sample
  $ROOT/bin/nginx-mesh-hooks status --namespace $NS
  # stop the cluster
  make cluster-down
TXT
