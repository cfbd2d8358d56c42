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
{{- if .shard.name -}}{{- printf "%s-%s" $lease .shard.name | trunc 63 | trimSuffix "-" -}}{{- else -}}{{- $lease -}}{{- end -}}
{{- end -}}

{{- define "cutover.gatewayRules" -}}
- apiGroups: [cutover.dev]
  resources: [modeldeployments]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [list, watch]
{{- end -}}
