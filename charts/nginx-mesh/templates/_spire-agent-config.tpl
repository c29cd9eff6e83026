{{/*
SPIRE agent configuration (HCL). server_address is set here only when spire.agent.serverAddress
is; otherwise the DaemonSet passes the Service's ClusterIP and port from the Kubernetes service
environment variables, which needs no cluster DNS.
*/}}
{{- define "nginx-mesh.spireAgent.config" -}}
{{- $v := .Values.spire.agent -}}
agent {
  data_dir = "/var/lib/spire/agent"
  log_level = {{ $v.logLevel | quote }}
  log_format = "json"
  {{- if $v.serverAddress }}
  server_address = {{ $v.serverAddress | quote }}
  server_port = "{{ $v.serverPort }}"
  {{- end }}
  socket_path = "{{ include "nginx-mesh.agentSocketDir" . }}/{{ include "nginx-mesh.agentSocketName" . }}"
  trust_bundle_path = "/run/spire/bundle/bundle.crt"
  trust_domain = {{ .Values.spire.trustDomain | quote }}
}

plugins {
  NodeAttestor "k8s_psat" {
    plugin_data {
      cluster = {{ .Values.spire.clusterName | quote }}
      token_path = "/var/run/secrets/tokens/spire-agent"
    }
  }

  KeyManager "memory" {
    plugin_data {}
  }

  WorkloadAttestor "k8s" {
    plugin_data {
      # kubelet's serving certificate is often self-signed; the agent reaches it on 127.0.0.1
      # (no node_name_env: node names need not resolve).
      skip_kubelet_verification = true
    }
  }
}

health_checks {
  listener_enabled = false
}
{{- end }}
