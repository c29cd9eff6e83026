{{/*
Hook annotations. RBAC is created before the Jobs of the same event (lower weight) and removed
with them; before-hook-creation makes a rerun (upgrade, Argo CD sync, retried uninstall) replace
a leftover instead of colliding with it. Call with (dict "events" LIST "weight" N).
*/}}
{{- define "nginx-mesh.hookAnnotations" -}}
helm.sh/hook: {{ join "," .events }}
helm.sh/hook-weight: {{ .weight | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end }}

{{/*
The install and upgrade events a hook Job runs on; the hook RBAC `nginx-mesh-hooks` exists for
them. pre-delete and post-delete have RBAC of their own (hooks-rbac.yaml says why).
*/}}
{{- define "nginx-mesh.hookEvents" -}}
{{- list "pre-install" "post-install" "pre-upgrade" "pre-rollback" "post-upgrade" | toJson }}
{{- end }}

{{/*
The hook RBAC (ServiceAccount, Roles, bindings) a hook command runs with: pre-delete and
post-delete have sets of their own, every other command shares nginx-mesh-hooks. Call with
(dict "ctx" $ "command" COMMAND).
*/}}
{{- define "nginx-mesh.hooks.rbacName" -}}
{{- $base := include "nginx-mesh.hooks.name" .ctx -}}
{{- if has .command (list "pre-delete" "post-delete") }}{{ $base }}-{{ .command }}{{ else }}{{ $base }}{{ end -}}
{{- end }}

{{/*
Annotations of the `helm test` objects: RBAC first (lower weight), replaced on a rerun, removed
once the test passed. Call with (dict "weight" N).
*/}}
{{- define "nginx-mesh.testHookAnnotations" -}}
helm.sh/hook: test
helm.sh/hook-weight: {{ .weight | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end }}
