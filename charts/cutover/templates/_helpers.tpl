{{- define "cutover.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cutover.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "cutover.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The name of one of the release's objects ({root, suffix}): <fullname>-<suffix>, the fullname
shortened so that the whole fits a DNS label's 63 characters (a Service's name must) while the
suffix, which tells the release's objects apart, stays whole: cutting the end off instead made a
Service name the API server refuses, and three dashboards one ConfigMap name. */}}
{{- define "cutover.componentName" -}}
{{- $room := sub 62 (len .suffix) -}}
{{- if lt $room 1 -}}{{- fail (printf "the name suffix %q leaves no room for the release's name in 63 characters" .suffix) -}}{{- end -}}
{{- printf "%s-%s" (include "cutover.fullname" .root | trunc (int $room) | trimSuffix "-") .suffix -}}
{{- end -}}

{{- define "cutover.labels" -}}
app.kubernetes.io/name: {{ include "cutover.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cutover
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "cutover.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "cutover.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cutover.leaseName" -}}
{{- default (printf "%s-operator" (include "cutover.fullname" .)) .Values.operator.leaderElection.leaseName -}}
{{- end -}}

{{/* operator.shards as a JSON list, checked: each shard named once, one default at most; no
shards is one unnamed shard (a single operator Deployment serving every object). */}}
{{- define "cutover.operatorShards" -}}
{{- $shards := .Values.operator.shards | default (list (dict)) -}}
{{- $names := list -}}
{{- $defaults := 0 -}}
{{- range $shards -}}
{{- if and $.Values.operator.shards (not .name) -}}{{- fail "every operator.shards entry needs a name" -}}{{- end -}}
{{- if has .name $names -}}{{- fail (printf "operator.shards: %s is named twice" .name) -}}{{- end -}}
{{- $names = append $names .name -}}
{{- if .default -}}{{- $defaults = add1 $defaults -}}{{- end -}}
{{- end -}}
{{- if gt $defaults 1 -}}{{- fail "operator.shards: one default shard at most (it serves the unlabelled objects)" -}}{{- end -}}
{{- toJson $shards -}}
{{- end -}}

{{/* The Lease of one operator shard ({root, shard}): the release's Lease, suffixed with the shard's name. */}}
{{- define "cutover.shardLease" -}}
{{- $lease := include "cutover.leaseName" .root -}}
{{- /* Not cut at 63 characters: a Lease's name may have 253, and cut, shards of a long release
name shared one Lease (and so one leader for all of them). */ -}}
{{- if .shard.name -}}{{- printf "%s-%s" $lease .shard.name -}}{{- else -}}{{- $lease -}}{{- end -}}
{{- end -}}

{{- define "cutover.gatewayRules" -}}
- apiGroups: [cutover.dev]
  resources: [modeldeployments]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [list, watch]
{{- end -}}
