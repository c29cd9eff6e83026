#!/usr/bin/env bash
# make demo: the local cluster, the OpenShift profile installed from this checkout, a namespace
# labelled for injection with an unchanged Deployment that the controller injects and registers
# and that prints its SPIFFE ID, `nginx-mesh-hooks status`, and then the commands to uninstall,
# to watch the sentinel and to stop the cluster. The cluster stays up afterwards.
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

step "3/5 opt the namespace in: label $APP_NS $OPT_IN"
kubectl label namespace "$APP_NS" "$OPT_IN" --overwrite >/dev/null
TD=$(helm get values nginx-mesh -n "$NS" -a -o json | sed -n 's/.*"trustDomain":"\([^"]*\)".*/\1/p')
TD=${TD:-cluster.local}

step "4/5 an unchanged Deployment (no CSI volume, no annotation, no registration): the controller injects and registers it"
kubectl -n "$APP_NS" create serviceaccount sample --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -f - >/dev/null <<DEPLOY
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sample
  namespace: $APP_NS
spec:
  replicas: 1
  selector: {matchLabels: {app: sample}}
  template:
    metadata:
      labels: {app: sample}
    spec:
      serviceAccountName: sample
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
DEPLOY
got=""
pod=""
check_id() {
  pod=$(kubectl -n "$APP_NS" get pods -l app=sample -o jsonpath='{.items[0].metadata.name}' 2>/dev/null) || return 1
  got=$(kubectl -n "$APP_NS" logs "$pod" 2>/dev/null | sed -n 's/^SPIFFE_ID=//p')
  [ -n "$got" ]
}
wait_for "sample workload's SPIFFE ID" 180 check_id || {
  kubectl -n "$APP_NS" describe pods -l app=sample | tail -n 25 >&2
  die "the sample workload got no SVID (see docs/controller.md, troubleshooting)"
}
check_id
echo
echo "    pod $APP_NS/$pod, injected by the controller:"
kubectl -n "$APP_NS" get pod "$pod" -o jsonpath='      annotation {.metadata.annotations.injector\.nsm\.nginx\.com/status}, volume {.spec.volumes[?(@.csi)].csi.driver}{"\n"}'
echo "    its SPIFFE ID: $got   (want spiffe://$TD/ns/$APP_NS/sa/sample)"
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
  $BIN/kubectl -n $APP_NS scale deployment sample --replicas=0
  $ROOT/bin/nginx-mesh-hooks status --namespace $NS
  # stop the cluster
  make cluster-down
TXT
