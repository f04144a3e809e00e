{{/* Names, labels and the settings every pod's TOML file is rendered from. */}}

{{- define "rocketlog.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped prefix of every object. Kept short: pod names add a group and an ordinal. */}}
{{- define "rocketlog.fullname" -}}
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

{{- define "rocketlog.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "rocketlog.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one role: call with (dict "root" $ "component" "broker"). */}}
{{- define "rocketlog.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rocketlog.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "rocketlog.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "rocketlog.nameserver.fullname" -}}
{{- printf "%s-nameserver" (include "rocketlog.fullname" .) }}
{{- end }}

{{- define "rocketlog.broker.fullname" -}}
{{- printf "%s-broker" (include "rocketlog.fullname" .) }}
{{- end }}

{{- define "rocketlog.broker.headless" -}}
{{- printf "%s-broker-headless" (include "rocketlog.fullname" .) }}
{{- end }}

{{/* StatefulSet of one broker group: call with (dict "root" $ "group" $group). */}}
{{- define "rocketlog.group.fullname" -}}
{{- printf "%s-%s" (include "rocketlog.fullname" .root) .group.name }}
{{- end }}

{{- define "rocketlog.authSecret" -}}
{{- default (printf "%s-auth" (include "rocketlog.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* The Secret with the replication port's credentials. */}}
{{- define "rocketlog.replicationSecret" -}}
{{- default (printf "%s-replication" (include "rocketlog.fullname" .)) .Values.broker.replication.existingSecret }}
{{- end }}

{{/* Whether the replication port is signed (an existing Secret, or keys to make one from). */}}
{{- define "rocketlog.replicationSigned" -}}
{{- if or .Values.broker.replication.existingSecret .Values.broker.replication.accessKey }}true{{ end }}
{{- end }}

{{/*
First pod ordinal of every StatefulSet. Under the controller, nameserver member ids and broker
ids start at 1, so pods are numbered from 1 and the id is the pod-index label as it is.
*/}}
{{- define "rocketlog.firstOrdinal" -}}
{{- if .Values.controller.enabled }}1{{ else }}0{{ end }}
{{- end }}

{{/* Stable DNS name of nameserver pod `i` (0-based position). */}}
{{- define "rocketlog.nameserver.address" -}}
{{- $ns := include "rocketlog.nameserver.fullname" .root -}}
{{- printf "%s-%d.%s.%s.svc:%d" $ns (add .i (include "rocketlog.firstOrdinal" .root | atoi)) $ns .root.Release.Namespace (.root.Values.nameserver.port | int) }}
{{- end }}

{{/* Every nameserver's address, as a list (the brokers register with each one). */}}
{{- define "rocketlog.nameserver.addresses" -}}
{{- $out := list }}
{{- range $i := until (int .Values.nameserver.replicas) }}
{{- $out = append $out (include "rocketlog.nameserver.address" (dict "root" $ "i" $i)) }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
Seconds Kubernetes waits between SIGTERM and SIGKILL: the preStop sleep, the broker's own
shutdown grace for requests in flight, then time for the final flush and checkpoint.
*/}}
{{- define "rocketlog.broker.terminationGrace" -}}
{{- $graceSeconds := div (add (int .Values.broker.shutdownGraceMs) 999) 1000 }}
{{- add (int .Values.broker.preStopSleepSeconds) $graceSeconds (int .Values.broker.stopFlushSeconds) }}
{{- end }}

{{/*
A map rendered as TOML: scalars and lists as `key = value` (JSON strings, numbers, booleans
and arrays are valid TOML), nested maps as `[prefix.key]` tables after them. Null values are
left out. Call with (dict "prefix" "broker" "table" $map).
*/}}
{{- define "rocketlog.toml" -}}
{{- $prefix := .prefix }}
{{- range $k, $v := .table }}
{{- if and (not (kindIs "map" $v)) (not (kindIs "invalid" $v)) }}
{{ $k }} = {{ toJson $v }}
{{- end }}
{{- end }}
{{- range $k, $v := .table }}
{{- if kindIs "map" $v }}
{{- $name := $k }}
{{- if $prefix }}{{ $name = printf "%s.%s" $prefix $k }}{{ end }}

[{{ $name }}]
{{- include "rocketlog.toml" (dict "prefix" $name "table" $v) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The `[broker]` table of one group: call with (dict "root" $ "group" $group). */}}
{{- define "rocketlog.broker.settings" -}}
{{- $v := .root.Values }}
{{- $group := .group }}
{{- $replication := dict "mode" $v.broker.replication.mode "min_in_sync_replicas" (int $v.broker.replication.minInSyncReplicas) }}
{{- if $v.controller.enabled }}
{{- $_ := set $replication "controller" true }}
{{- else }}
{{- /* Replica 0 is the master; the slaves follow it over its replication port. */}}
{{- $master := printf "%s-0.%s.%s.svc:%d" (include "rocketlog.group.fullname" .) (include "rocketlog.broker.headless" .root) .root.Release.Namespace (int $v.broker.replicationPort) }}
{{- $_ := set $replication "master_address" $master }}
{{- end }}
{{- $chart := dict
  "cluster_name" $v.clusterName
  "broker_name" $group.name
  "data_dir" "/var/lib/rocketlog/data"
  "nameserver_addresses" (include "rocketlog.nameserver.addresses" .root | fromJsonArray)
  "flush_mode" $v.broker.flushMode
  "auto_create_topics" $v.broker.autoCreateTopics
  "shutdown_grace_ms" (int $v.broker.shutdownGraceMs)
  "replication_listen" (printf "0.0.0.0:%d" (int $v.broker.replicationPort))
  "replication" $replication
}}
{{- if $v.metrics.enabled }}
{{- $_ := set $chart "metrics_listen" (printf "0.0.0.0:%d" (int $v.metrics.port)) }}
{{- end }}
{{- if $v.auth.enabled }}
{{- $_ := set $chart "auth" (dict "enabled" true) }}
{{- end }}
{{- $settings := mergeOverwrite (deepCopy ($v.broker.config | default dict)) $chart }}
{{- toJson $settings }}
{{- end }}

{{/* The `[nameserver]` table. */}}
{{- define "rocketlog.nameserver.settings" -}}
{{- $v := .Values }}
{{- $chart := dict }}
{{- if $v.metrics.enabled }}
{{- $_ := set $chart "metrics_listen" (printf "0.0.0.0:%d" (int $v.metrics.port)) }}
{{- end }}
{{- if $v.controller.enabled }}
{{- $peers := list }}
{{- range $i := until (int $v.nameserver.replicas) }}
{{- $peers = append $peers (printf "%d=%s" (add1 $i) (include "rocketlog.nameserver.address" (dict "root" $ "i" $i))) }}
{{- end }}
{{- $_ := set $chart "controller" (dict "enabled" true "peers" $peers "data_dir" "/var/lib/rocketlog/controller") }}
{{- end }}
{{- toJson (mergeOverwrite (deepCopy ($v.nameserver.config | default dict)) $chart) }}
{{- end }}

{{/* Soft or hard anti-affinity spreading pods with these labels over nodes: (dict "mode" "soft" "labels" $labels). */}}
{{- define "rocketlog.antiAffinity" -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" .labels) }}
{{- if eq .mode "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - {{ toJson $term }}
{{- else }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm: {{ toJson $term }}
{{- end }}
{{- end }}

{{/* Fails the render on values that would give a broken cluster. */}}
{{- define "rocketlog.validate" -}}
{{- $v := .Values }}
{{- if lt (int $v.nameserver.replicas) 1 }}{{ fail "nameserver.replicas must be at least 1" }}{{ end }}
{{- if and $v.controller.enabled (lt (int $v.nameserver.replicas) 3) }}{{ fail "controller.enabled needs at least 3 nameservers (a Raft majority survives one loss)" }}{{ end }}
{{- if not $v.broker.groups }}{{ fail "broker.groups needs at least one group" }}{{ end }}
{{- if not (has $v.broker.flushMode (list "sync" "async")) }}{{ fail "broker.flushMode is sync or async" }}{{ end }}
{{- if not (has $v.broker.replication.mode (list "sync" "async")) }}{{ fail "broker.replication.mode is sync or async" }}{{ end }}
{{- $names := dict }}
{{- range $group := $v.broker.groups }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" (toString $group.name)) }}{{ fail (printf "broker group name %q must be a DNS label (lower case, digits, '-')" (toString $group.name)) }}{{ end }}
{{- if hasKey $names $group.name }}{{ fail (printf "broker group %q is listed twice" $group.name) }}{{ end }}
{{- $_ := set $names $group.name true }}
{{- if lt (int $group.replicas) 1 }}{{ fail (printf "broker group %s: replicas must be at least 1" $group.name) }}{{ end }}
{{- if and (eq $v.broker.replication.mode "sync") (gt (int $v.broker.replication.minInSyncReplicas) (int $group.replicas)) }}
{{- fail (printf "broker group %s: %d replicas cannot satisfy broker.replication.minInSyncReplicas = %d" $group.name (int $group.replicas) (int $v.broker.replication.minInSyncReplicas)) }}
{{- end }}
{{- end }}
{{- if and $v.auth.enabled (not $v.auth.existingSecret) (or (not $v.auth.accessKey) (not $v.auth.secretKey)) }}
{{- fail "auth.enabled needs auth.existingSecret, or auth.accessKey and auth.secretKey" }}
{{- end }}
{{- end }}
