{{/*
SPIRE server configuration (HCL). Used by the ConfigMap and, hashed, by the pod template so a
change rolls the server.
*/}}
{{- define "nginx-mesh.spireServer.config" -}}
{{- $v := .Values.spire.server -}}
{{- $dataDir := "/run/spire/data" -}}
server {
  bind_address = "0.0.0.0"
  bind_port = "{{ $v.service.port }}"
  socket_path = "/tmp/spire-server/private/api.sock"
  trust_domain = {{ .Values.spire.trustDomain | quote }}
  data_dir = "{{ $dataDir }}"
  log_level = {{ $v.logLevel | quote }}
  log_format = "json"
  ca_key_type = {{ $v.caKeyType | quote }}
  ca_ttl = {{ $v.caTTL | quote }}
  default_x509_svid_ttl = {{ $v.defaultX509SVIDTTL | quote }}
  default_jwt_svid_ttl = {{ $v.defaultJWTSVIDTTL | quote }}
  experimental {
    # New pods' entries reach the agents within this interval (the controller creates them
    # as the pods are scheduled).
    events_based_cache = {{ $v.entryCache.eventsBased }}
    cache_reload_interval = {{ $v.entryCache.reloadInterval | quote }}
  }
  ca_subject {
    country = [{{ $v.caSubject.country | quote }}]
    organization = [{{ $v.caSubject.organization | quote }}]
    common_name = {{ $v.caSubject.commonName | quote }}
  }
}

plugins {
  DataStore "sql" {
    plugin_data {
      {{- if eq $v.datastore.type "postgres" }}
      # Shared by every server replica (SPIRE's HA mode). Expanded from the environment
      # (spire-server -expandEnv), which takes it from the Secret: never in this ConfigMap.
      database_type = "postgres"
      connection_string = "${SPIRE_DATASTORE_CONNECTION_STRING}"
      {{- with $v.datastore.maxOpenConns }}
      max_open_conns = {{ . }}
      {{- end }}
      {{- else }}
      database_type = "sqlite3"
      connection_string = "{{ $dataDir }}/datastore.sqlite3"
      {{- end }}
    }
  }

  NodeAttestor "k8s_psat" {
    plugin_data {
      clusters = {
        {{ .Values.spire.clusterName | quote }} = {
          service_account_allow_list = ["{{ .Release.Namespace }}:{{ include "nginx-mesh.spireAgent.name" . }}"]
          audience = [{{ .Values.spire.agent.tokenAudience | quote }}]
        }
      }
    }
  }

  {{- if or (eq $v.keyManager "disk") (eq $v.keyManager "secret") }}

  # keyManager=secret: this file is also kept in the replica's Secret (container spire-keys).
  KeyManager "disk" {
    plugin_data {
      keys_path = "{{ $dataDir }}/keys.json"
    }
  }
  {{- else }}

  KeyManager "memory" {
    plugin_data {}
  }
  {{- end }}

  Notifier "k8sbundle" {
    plugin_data {
      namespace = "{{ .Release.Namespace }}"
      config_map = {{ .Values.spire.bundleConfigMap | quote }}
    }
  }
}

health_checks {
  listener_enabled = true
  bind_address = "0.0.0.0"
  bind_port = "8080"
  live_path = "/live"
  ready_path = "/ready"
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
