{{/* The env var holding kubelet's address for the k8s workload attestor, and where the agent mounts kubelet's CA. */}}
{{- define "nginx-mesh.spireAgent.kubeletHostEnv" -}}NGINX_MESH_KUBELET_HOST{{- end }}
{{- define "nginx-mesh.spireAgent.kubeletCADir" -}}/run/spire/kubelet-ca{{- end }}

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
  experimental {
    # How soon a new pod's entry reaches the agent (spire.agent.syncInterval).
    sync_interval = {{ $v.syncInterval | quote }}
  }
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
      # kubelet at the node's {{ ternary "IP" "name" (eq $v.kubelet.address "hostIP") }}, from the downward API (the agent runs on the pod
      # network, and kubelet may listen on the node IP only).
      node_name_env = "{{ include "nginx-mesh.spireAgent.kubeletHostEnv" . }}"
      kubelet_secure_port = {{ $v.kubelet.port }}
      {{- if $v.kubelet.caConfigMap }}
      kubelet_ca_path = "{{ include "nginx-mesh.spireAgent.kubeletCADir" . }}/{{ $v.kubelet.caKey }}"
      {{- else }}
      # No CA for kubelet's serving certificate given (spire.agent.kubelet.caConfigMap).
      skip_kubelet_verification = true
      {{- end }}
    }
  }
}

health_checks {
  listener_enabled = false
}
{{- with .Values.metrics.spire }}{{ if .enabled }}

# Prometheus telemetry on the pod network (metrics.spire). SPIRE logs a warning for any host
# but loopback; a scraper needs the pod IP, and 0.0.0.0 in the pod's own network namespace is
# that IP and loopback, nothing of the node.
telemetry {
  Prometheus {
    host = "0.0.0.0"
    port = {{ .port }}
  }
}
{{- end }}{{ end }}
{{- end }}
