{{/*
Names, labels, the rendered starling.toml of each role, and the checks that refuse bad values.
*/}}

{{- define "starling.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resource name prefix: <release>-starling, or the release name when it contains the chart name. */}}
{{- define "starling.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Resource names. The prefix is cut at 40 characters so that StatefulSet pod names and their
controller-revision-hash labels stay within Kubernetes' limits. */}}
{{- define "starling.edge.fullname" -}}{{ include "starling.fullname" . }}-edge{{- end }}
{{- define "starling.edge.headless" -}}{{ include "starling.fullname" . }}-edge-headless{{- end }}
{{- define "starling.router.fullname" -}}{{ include "starling.fullname" . }}-router{{- end }}
{{- define "starling.redis.fullname" -}}{{ include "starling.fullname" . }}-redis{{- end }}
{{- define "starling.components.fullname" -}}{{ include "starling.fullname" . }}-components{{- end }}
{{- define "starling.config.fullname" -}}{{ include "starling.fullname" . }}-config{{- end }}

{{- define "starling.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "starling.selectorLabels" -}}
app.kubernetes.io/name: {{ include "starling.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "starling.labels" -}}
helm.sh/chart: {{ include "starling.chart" . }}
{{ include "starling.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "starling.name" . }}
{{- end }}

{{- define "starling.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "starling.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "starling.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The routers' gRPC addresses, one per StatefulSet pod: the seeds of every node. */}}
{{- define "starling.seeds" -}}
{{- $seeds := list }}
{{- $svc := include "starling.router.fullname" . }}
{{- range $i, $_ := until (int .Values.router.replicas) }}
{{- $seeds = append $seeds (printf "%s-%d.%s.%s.svc.%s:%d" $svc $i $svc $.Release.Namespace $.Values.clusterDomain (int $.Values.cluster.grpcPort)) }}
{{- end }}
{{- toJson $seeds }}
{{- end }}

{{/* The Redis URLs the store uses (a JSON list, which is also a TOML array). */}}
{{- define "starling.redisUrls" -}}
{{- if .Values.redis.enabled }}
{{- list (printf "redis://%s:6379" (include "starling.redis.fullname" .)) | toJson }}
{{- else }}
{{- .Values.redis.urls | toJson }}
{{- end }}
{{- end }}

{{- define "starling.componentsEnabled" -}}
{{- if or .Values.components.secrets .Values.components.existingSecret }}true{{ end }}
{{- end }}

{{- define "starling.tlsSecretName" -}}
{{- if .Values.tls.existingSecret }}{{ .Values.tls.existingSecret }}{{ else if .Values.tls.cert }}{{ include "starling.fullname" . }}-tls{{ end }}
{{- end }}

{{/*
One TOML value: strings, numbers and booleans as JSON (JSON strings are valid TOML basic
strings), lists as arrays, maps as inline tables.
*/}}
{{- define "starling.tomlValue" -}}
{{- if kindIs "map" . }}
{{- $parts := list }}
{{- range $k, $v := . }}
{{- $parts = append $parts (printf "%s = %s" (toJson $k) (include "starling.tomlValue" $v)) }}
{{- end }}
{{- printf "{ %s }" (join ", " $parts) }}
{{- else if kindIs "slice" . }}
{{- $parts := list }}
{{- range . }}
{{- $parts = append $parts (include "starling.tomlValue" .) }}
{{- end }}
{{- printf "[%s]" (join ", " $parts) }}
{{- else if kindIs "float64" . }}
{{- if eq (float64 (int64 .)) . }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else }}
{{- toJson . }}
{{- end }}
{{- end }}

{{/* A starling.toml document from a map: top-level keys first, then one [table] per map. */}}
{{- define "starling.toml" -}}
{{- range $k, $v := . }}
{{- if not (kindIs "map" $v) }}
{{ $k }} = {{ include "starling.tomlValue" $v }}
{{- end }}
{{- end }}
{{- range $k, $v := . }}
{{- if kindIs "map" $v }}

[{{ $k }}]
{{- range $k2, $v2 := $v }}
{{ $k2 }} = {{ include "starling.tomlValue" $v2 }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Settings both roles share. */}}
{{- define "starling.commonConfig" -}}
{{- $store := dict "backend" .Values.store.backend }}
{{- if eq .Values.store.backend "redis" }}
{{- $_ := set $store "key_prefix" .Values.store.keyPrefix }}
{{- if not .Values.redis.existingSecret }}
{{- $_ := set $store "redis_urls" (include "starling.redisUrls" . | fromJsonArray) }}
{{- end }}
{{- end }}
{{- $cluster := dict
  "seeds" (include "starling.seeds" . | fromJsonArray)
  "heartbeat_ms" .Values.cluster.heartbeatMs
  "election_timeout_min_ms" .Values.cluster.electionTimeoutMinMs
  "election_timeout_max_ms" .Values.cluster.electionTimeoutMaxMs
  "down_after_ms" .Values.cluster.downAfterMs }}
{{- $cfg := dict
  "domains" .Values.domains
  "data_dir" "/var/lib/starling"
  "http" (dict "listen" "0.0.0.0:5280")
  "log" (dict "level" .Values.log.level "format" .Values.log.format)
  "store" $store
  "cluster" $cluster }}
{{- toJson $cfg }}
{{- end }}

{{/* The edges' starling.toml, as a map. */}}
{{- define "starling.edgeConfig" -}}
{{- $cfg := include "starling.commonConfig" . | fromJson }}
{{- $_ := set $cfg "c2s" (dict "listen" "0.0.0.0:5222" "direct_tls_listen" "0.0.0.0:5223") }}
{{- $_ = set $cfg.cluster "drain_timeout_secs" .Values.edge.drainTimeoutSeconds }}
{{- if include "starling.componentsEnabled" . }}
{{- $_ = set $cfg "components" (dict "listen" "0.0.0.0:5347") }}
{{- end }}
{{- if include "starling.tlsSecretName" . }}
{{- $_ = set $cfg "tls" (dict "cert" "/etc/starling-tls/cert.pem" "key" "/etc/starling-tls/key.pem") }}
{{- end }}
{{- $cfg = mergeOverwrite $cfg (deepCopy (.Values.config | default dict)) (deepCopy (.Values.edge.config | default dict)) }}
{{- toJson $cfg }}
{{- end }}

{{/* The routers' starling.toml, as a map. Node 1 (ordinal 0) bootstraps when no seed answers. */}}
{{- define "starling.routerConfig" -}}
{{- $cfg := include "starling.commonConfig" . | fromJson }}
{{- $_ := set $cfg.cluster "listen" (printf "0.0.0.0:%d" (int .Values.cluster.grpcPort)) }}
{{- $_ = set $cfg.cluster "bootstrap" false }}
{{- $_ = set $cfg.cluster "drain_timeout_secs" .Values.router.drainTimeoutSeconds }}
{{- $cfg = mergeOverwrite $cfg (deepCopy (.Values.config | default dict)) (deepCopy (.Values.router.config | default dict)) }}
{{- toJson $cfg }}
{{- end }}

{{/* Environment shared by both roles. */}}
{{- define "starling.env" -}}
- name: STARLING_CONFIG
  value: /etc/starling/starling.toml
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- if and (eq .Values.store.backend "redis") .Values.redis.existingSecret }}
- name: STARLING_STORE__REDIS_URLS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- end }}
{{- end }}

{{/* A preferred anti-affinity spreading one component's pods over nodes. */}}
{{- define "starling.softAntiAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "starling.selectorLabels" .root | nindent 12 }}
            app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "starling.probes" -}}
livenessProbe:
  httpGet:
    path: /livez
    port: http
  initialDelaySeconds: {{ .Values.probes.liveness.initialDelaySeconds }}
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  initialDelaySeconds: {{ .Values.probes.readiness.initialDelaySeconds }}
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
{{- end }}

{{- define "starling.scrapeAnnotations" -}}
{{- if .Values.prometheusScrapeAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: "5280"
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* Refuse values that cannot work, before anything is applied. */}}
{{- define "starling.validate" -}}
{{- if not (has .Values.store.backend (list "redis" "embedded")) }}
{{- fail "store.backend must be \"redis\" or \"embedded\"" }}
{{- end }}
{{- if eq .Values.store.backend "redis" }}
{{- if and .Values.redis.enabled (or .Values.redis.urls .Values.redis.existingSecret) }}
{{- fail "redis.enabled runs Redis in the chart: leave redis.urls and redis.existingSecret empty, or set redis.enabled=false" }}
{{- end }}
{{- if not (or .Values.redis.enabled .Values.redis.urls .Values.redis.existingSecret) }}
{{- fail "store.backend=redis needs a Redis: set redis.enabled=true, redis.urls or redis.existingSecret" }}
{{- end }}
{{- else if gt (int .Values.router.replicas) 1 }}
{{- fail "store.backend=embedded keeps accounts in each router's own file: use store.backend=redis with more than one router" }}
{{- end }}
{{- if lt (int .Values.router.replicas) 1 }}
{{- fail "router.replicas must be at least 1" }}
{{- end }}
{{- if not (has .Values.edge.kind (list "Deployment" "StatefulSet")) }}
{{- fail "edge.kind must be Deployment or StatefulSet" }}
{{- end }}
{{- if and (eq .Values.edge.kind "StatefulSet") (lt (int .Values.edge.ordinalStart) (int .Values.router.replicas)) }}
{{- fail "edge.ordinalStart must be above every router ordinal (node ids of edges and routers must not collide)" }}
{{- end }}
{{- if and .Values.tls.existingSecret (or .Values.tls.cert .Values.tls.key) }}
{{- fail "set either tls.existingSecret or tls.cert/tls.key, not both" }}
{{- end }}
{{- if ne (empty .Values.tls.cert) (empty .Values.tls.key) }}
{{- fail "tls.cert and tls.key go together" }}
{{- end }}
{{- if le (int .Values.edge.terminationGracePeriodSeconds) (add (int .Values.edge.preStopSleepSeconds) (int .Values.edge.drainTimeoutSeconds) | int) }}
{{- fail "edge.terminationGracePeriodSeconds must exceed edge.preStopSleepSeconds + edge.drainTimeoutSeconds, or Kubernetes kills edges mid-drain" }}
{{- end }}
{{- if le (int .Values.router.terminationGracePeriodSeconds) (mul 2 (int .Values.router.drainTimeoutSeconds) | int) }}
{{- fail "router.terminationGracePeriodSeconds must exceed 2 x router.drainTimeoutSeconds (ask for the hand-off, then wait for it), or Kubernetes kills routers mid-drain" }}
{{- end }}
{{- if gt (int .Values.cluster.electionTimeoutMinMs) (int .Values.cluster.electionTimeoutMaxMs) }}
{{- fail "cluster.electionTimeoutMinMs must not exceed cluster.electionTimeoutMaxMs" }}
{{- end }}
{{- end }}
