{{/*
Names. Object names are fixed by the design (docs/design.md, package nginxmesh): the hooks
binary and the sentinel find objects by these names, so they are not derived from the release.
*/}}
{{- define "nginx-mesh.spireServer.name" -}}spire-server{{- end }}
{{- define "nginx-mesh.spireAgent.name" -}}spire-agent{{- end }}
{{- define "nginx-mesh.hooks.name" -}}nginx-mesh-hooks{{- end }}
{{- define "nginx-mesh.controller.name" -}}nginx-mesh-controller{{- end }}
{{- define "nginx-mesh.injectorWebhook.name" -}}nginx-mesh-injector{{- end }}
{{- define "nginx-mesh.controller.caSecret" -}}nginx-mesh-controller-ca{{- end }}
{{- define "nginx-mesh.registrar.name" -}}nginx-mesh-registrar{{- end }}
{{- define "nginx-mesh.controller.adminSocketDir" -}}/run/spire/server-admin{{- end }}
{{- define "nginx-mesh.defaultDriverName" -}}csi.nsm.nginx.com{{- end }}

{{/*
The names of a driver unit depend on the driver name (nginxmesh.DriverSuffix): none for the
default driver, else "-" and 8 hex digits of its SHA-256. A new csi.driverName thus renders a new
DaemonSet and sentinel RBAC instead of updating the old ones in place, and Helm keeps the old
ones (resource-policy keep) serving the pods that still use the old driver.
*/}}
{{- define "nginx-mesh.driverSuffix" -}}
{{- if ne .Values.csi.driverName (include "nginx-mesh.defaultDriverName" .) -}}
-{{ sha256sum .Values.csi.driverName | trunc 8 }}
{{- end -}}
{{- end }}
{{- define "nginx-mesh.csiDriver.name" -}}nginx-mesh-csi-driver{{ include "nginx-mesh.driverSuffix" . }}{{- end }}
{{/* The driver's ServiceAccount, shared by the driver units of a namespace. */}}
{{- define "nginx-mesh.csiDriver.serviceAccount" -}}nginx-mesh-csi-driver{{- end }}
{{- define "nginx-mesh.sentinel.name" -}}csi-driver-sentinel{{ include "nginx-mesh.driverSuffix" . }}{{- end }}
{{- define "nginx-mesh.sentinel.rbacName" -}}csi-driver-sentinel.builtin.nsm.nginx{{ include "nginx-mesh.driverSuffix" . }}{{- end }}

{{/* SCC names, and the ClusterRole/RoleBinding name that grants `use` of one. */}}
{{- define "nginx-mesh.scc.spireServer" -}}nginx-mesh-spire-server-permissions{{- end }}
{{- define "nginx-mesh.scc.spireAgent" -}}nginx-mesh-spire-agent-permissions{{- end }}
{{- define "nginx-mesh.scc.csiDriver" -}}nginx-mesh-csi-driver-permissions{{- end }}
{{- define "nginx-mesh.scc.sidecar" -}}nginx-mesh-sidecar-permissions{{- end }}
{{- define "nginx-mesh.sccRole" -}}system:openshift:scc:{{ . }}{{- end }}

{{/* The SCC every pod without one of our own runs under on OpenShift (hook Jobs, the test pod). */}}
{{- define "nginx-mesh.scc.restricted" -}}restricted-v2{{- end }}

{{- define "nginx-mesh.openshift" -}}
{{- if eq .Values.environment "openshift" }}true{{ end }}
{{- end }}

{{/*
The OpenShift minor version the SCCs are rendered for: openshift.version ("4.20" -> 20), else
the cluster's Kubernetes minor - 13 (OpenShift 4.14 runs Kubernetes 1.27, ..., 4.20 runs 1.33).
*/}}
{{- define "nginx-mesh.openshiftMinor" -}}
{{- $v := (.Values.openshift | default dict).version | default "" -}}
{{- if $v -}}
{{- index (splitList "." $v) 1 | int -}}
{{- else -}}
{{- sub (regexFind "^[0-9]+" (toString .Capabilities.KubeVersion.Minor) | int) 13 -}}
{{- end -}}
{{- end }}

{{/*
What enforcing SELinux needs, derived from `environment` (one source of truth: the OpenShift
profile sets nothing else). The agent creates its socket in a host folder, which a container_t
process may not: spc_t, unless the user set seLinuxOptions. The driver relabels the socket
folder it publishes, so injected pods (container_t) may use it.
*/}}
{{- define "nginx-mesh.spireAgent.seLinuxOptions" -}}
{{- with .Values.spire.agent.seLinuxOptions }}
{{- toYaml . }}
{{- else }}
{{- if include "nginx-mesh.openshift" . }}type: spc_t{{ end }}
{{- end }}
{{- end }}
{{- define "nginx-mesh.csi.selinuxRelabel" -}}
{{- if or .Values.csi.selinuxRelabel (include "nginx-mesh.openshift" .) }}true{{ else }}false{{ end }}
{{- end }}

{{- define "nginx-mesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: immutable on DaemonSets and StatefulSets, so they carry neither the release
name nor the version (a kept DaemonSet is adopted by a later release, maybe of another name).
Call with (dict "name" NAME "component" COMPONENT).
*/}}
{{- define "nginx-mesh.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Labels of every object. Call with (dict "ctx" $ "name" NAME "component" COMPONENT "extra" MAP).
*/}}
{{- define "nginx-mesh.labels" -}}
{{ include "nginx-mesh.selectorLabels" . }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/part-of: nginx-mesh
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
helm.sh/chart: {{ include "nginx-mesh.chart" .ctx }}
{{- with .ctx.Values.global.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- with get . "extra" }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod template labels: selector labels plus instance and part-of (no version: an upgrade that
changes nothing in the pod must not roll it). Call like nginx-mesh.labels.
*/}}
{{- define "nginx-mesh.podLabels" -}}
{{ include "nginx-mesh.selectorLabels" . }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/part-of: nginx-mesh
{{- with .ctx.Values.global.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- with get . "extra" }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The keep set marker (docs/design.md, "The keep set"), rendered only when the CSI driver is enabled.
The value is always exactly "keep": any other value makes Helm neither delete nor report the object.
Argo CD reads the keep policy when it deletes an Application, but a sync's prune ignores it (a
renamed driver or csi.enabled=false with automated prune would delete the CSIDriver under its
pods): Prune=false stops that, and pre-upgrade's handover keeps the old driver meanwhile.
*/}}
{{/*
The system-* PriorityClasses the chart's workloads use, as a sorted JSON list: the scope of the
ResourceQuota nginx-mesh-critical-pods, rendered when global.criticalPodQuota and the list is
not empty (critical-pods-quota.yaml).
*/}}
{{- define "nginx-mesh.criticalPodQuota.classes" -}}
{{- $critical := list "system-node-critical" "system-cluster-critical" -}}
{{- $used := list .Values.spire.agent.priorityClassName .Values.spire.server.priorityClassName .Values.hooks.priorityClassName -}}
{{- if .Values.csi.enabled }}{{ $used = append $used .Values.csi.priorityClassName }}{{ end -}}
{{- $classes := list -}}
{{- range $used }}{{ if has . $critical }}{{ $classes = append $classes . }}{{ end }}{{ end -}}
{{- if .Values.global.criticalPodQuota }}{{ $classes | uniq | sortAlpha | toJson }}{{ else }}[]{{ end -}}
{{- end }}

{{/*
"true" when the quota nginx-mesh-critical-pods is in the keep set: rendered, with the CSI driver
(whose system-node-critical pods a kept driver recreates after an uninstall). The hooks learn it
from --critical-pod-quota, so that every command's keep set names exactly what the chart kept.
*/}}
{{- define "nginx-mesh.criticalPodQuota.kept" -}}
{{- and .Values.csi.enabled (gt (len (include "nginx-mesh.criticalPodQuota.classes" . | fromJsonArray)) 0) -}}
{{- end }}

{{- define "nginx-mesh.keep" -}}
{{- if .Values.csi.enabled }}
helm.sh/resource-policy: keep
argocd.argoproj.io/sync-options: Prune=false
{{- end }}
{{- end }}

{{/*
Image reference. Call with the image values map and the root context:
(dict "image" .Values.images.hooks "ctx" $). A digest wins over the tag; an empty tag means appVersion.
global.imageRegistry, when set, replaces every image's registry: a mirror is one value.
*/}}
{{- define "nginx-mesh.image" -}}
{{- $ref := .image.repository -}}
{{- $registry := .ctx.Values.global.imageRegistry | default .image.registry -}}
{{- if $registry -}}
{{- $ref = printf "%s/%s" $registry .image.repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $ref .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end }}

{{/*
Scheduling of a workload's pods from its values section (priorityClassName, nodeSelector,
tolerations, affinity): one helper, so every workload takes the same four keys. Call with the
section, e.g. .Values.csi, and place with: with include ... | trim, then nindent.
*/}}
{{- define "nginx-mesh.podScheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
podScheduling of a workload that may run several replicas: the user's affinity wins; without one,
replicas spread over nodes (podAntiAffinity: .v.podAntiAffinity, preferred or required), so one
node's drain or death never takes them all. dict "v" values "replicas" N "name" name "component" c
["always" true: spread even one replica, whose rolling update surges a second].
*/}}
{{- define "nginx-mesh.podSchedulingSpread" -}}
{{- include "nginx-mesh.podScheduling" (merge (dict "affinity" (dict)) (omit .v "affinity")) }}
{{- if .v.affinity }}
affinity:
  {{- toYaml .v.affinity | nindent 2 }}
{{- else if or .always (gt (int .replicas) 1) }}
affinity:
  {{- include "nginx-mesh.podAntiAffinity" (dict "mode" .v.podAntiAffinity "name" .name "component" .component) | nindent 2 }}
{{- end }}
{{- end }}

{{- define "nginx-mesh.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* The CSI driver's endpoint: host paths are mounted at the same paths in the container. */}}
{{- define "nginx-mesh.csi.pluginDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.csi.kubeletDir) .Values.csi.driverName }}
{{- end }}
{{- define "nginx-mesh.csi.endpoint" -}}
{{- printf "unix://%s/csi.sock" (include "nginx-mesh.csi.pluginDir" .) }}
{{- end }}
{{- define "nginx-mesh.csi.registrationDir" -}}
{{- printf "%s/plugins_registry" (trimSuffix "/" .Values.csi.kubeletDir) }}
{{- end }}

{{/* The socket folder the SPIRE agent and the CSI driver share on every node. */}}
{{- define "nginx-mesh.agentSocketDir" -}}/run/spire/agent-sockets{{- end }}
{{- define "nginx-mesh.agentSocketName" -}}spire-agent.sock{{- end }}

{{/*
Restricted container securityContext (restricted-v2 on OpenShift, "restricted" Pod Security
Standard on Kubernetes).
*/}}
{{- define "nginx-mesh.restrictedContainerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Argo CD sync-wave of the SCCs and their grants: before the workloads (wave 0), so their first
pods are admitted. (Helm has no such order: it creates kinds it does not know, SCCs among them,
after the workloads, whose controllers retry until the SCC exists.)
*/}}
{{- define "nginx-mesh.sccSyncWave" -}}
argocd.argoproj.io/sync-wave: "-1"
{{- end }}

{{/*
Grant of `use` on one SCC to one ServiceAccount (OpenShift): ClusterRole + RoleBinding, both
named system:openshift:scc:<scc>, the way `oc adm policy add-scc-to-user` names them.
Call with (dict "ctx" $ "scc" SCC "serviceAccount" SA "component" COMPONENT "keep" BOOL "extraLabels" MAP "extraAnnotations" MAP).
*/}}
{{- define "nginx-mesh.sccGrant" -}}
{{- $role := include "nginx-mesh.sccRole" .scc -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ $role }}
  labels:
    {{- include "nginx-mesh.labels" (dict "ctx" .ctx "name" .scc "component" .component "extra" .extraLabels) | nindent 4 }}
  {{- $ann := include "nginx-mesh.annotations" (dict "extra" .extraAnnotations "keep" (and .keep (include "nginx-mesh.keep" .ctx))) | trim }}
  annotations:
    {{- include "nginx-mesh.sccSyncWave" . | nindent 4 }}
    {{- with $ann }}
    {{- . | nindent 4 }}
    {{- end }}
rules:
  - apiGroups: ["security.openshift.io"]
    resources: ["securitycontextconstraints"]
    resourceNames: [{{ .scc | quote }}]
    verbs: ["use"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $role }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "nginx-mesh.labels" (dict "ctx" .ctx "name" .scc "component" .component "extra" .extraLabels) | nindent 4 }}
  annotations:
    {{- include "nginx-mesh.sccSyncWave" . | nindent 4 }}
    {{- with $ann }}
    {{- . | nindent 4 }}
    {{- end }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $role }}
subjects:
  - kind: ServiceAccount
    name: {{ .serviceAccount }}
    namespace: {{ .ctx.Release.Namespace }}
{{- end }}

{{/*
Object annotations: the extra ones from values, then the keep marker when asked.
Call with (dict "extra" MAP "keep" STRING) where keep is the output of nginx-mesh.keep or "".
*/}}
{{- define "nginx-mesh.annotations" -}}
{{- with get . "extra" }}
{{ toYaml . }}
{{- end }}
{{- with get . "keep" }}
{{ . | trim }}
{{- end }}
{{- end }}

{{/* ha.enabled: at least 2 of each; otherwise the value as given. Call with (dict "ha" BOOL "n" INT). */}}
{{/*
keyManager=secret: the Secrets of the server replicas' CA keys, one per StatefulSet pod
(<pod>-keys), as a JSON list; empty otherwise.
*/}}
{{- define "nginx-mesh.spireServer.keySecrets" -}}
{{- $v := .Values.spire.server -}}
{{- $out := list -}}
{{- if eq $v.keyManager "secret" -}}
{{- $n := include "nginx-mesh.replicas" (dict "ha" .Values.ha.enabled "n" $v.replicas) | int -}}
{{- range $i := until $n }}{{ $out = append $out (printf "%s-%d-keys" (include "nginx-mesh.spireServer.name" $) $i) }}{{ end -}}
{{- end -}}
{{- $out | toJson -}}
{{- end }}

{{- define "nginx-mesh.replicas" -}}
{{- if .ha }}{{ max 2 (int .n) }}{{ else }}{{ int .n }}{{ end }}
{{- end }}

{{/*
Pod anti-affinity on the node (kubernetes.io/hostname) among the pods of one component.
Call with (dict "mode" "required"|"preferred" "name" NAME "component" COMPONENT).
*/}}
{{- define "nginx-mesh.podAntiAffinity" -}}
podAntiAffinity:
  {{- if eq .mode "required" }}
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "nginx-mesh.selectorLabels" (dict "name" .name "component" .component) | nindent 10 }}
  {{- else }}
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "nginx-mesh.selectorLabels" (dict "name" .name "component" .component) | nindent 12 }}
  {{- end }}
{{- end }}
{{- define "nginx-mesh.controller.container" -}}controller{{- end }}
{{- define "nginx-mesh.registrar.container" -}}registrar{{- end }}

{{/*
Seconds in a threshold of the form <n>s, <n>m, <n>h or <n>d (the schema's thresholdDuration):
PromQL compares them with time() differences, which are in seconds.
*/}}
{{- define "nginx-mesh.seconds" -}}
{{- $n := regexFind "^[0-9]+" . | int -}}
{{- $unit := dict "s" 1 "m" 60 "h" 3600 "d" 86400 -}}
{{- mul $n (get $unit (trimPrefix (toString $n) .)) -}}
{{- end }}
