{{/* The operator's RBAC, each rule a request the operator makes (tests/cluster/test_rbac.py
runs it as this ServiceAccount against the API server's audit log and fails on a rule it never
uses or a request it is refused). */}}

{{/* The namespaces the operator's Deployments watch, as a JSON list; empty when any of them
watches every namespace (operator.watchNamespaces empty and a shard without namespaces). */}}
{{- define "cutover.operatorNamespaces" -}}
{{- $all := list -}}
{{- $clusterwide := false -}}
{{- range include "cutover.operatorShards" . | fromJsonArray -}}
{{- $watched := .namespaces | default $.Values.operator.watchNamespaces -}}
{{- if not $watched -}}{{- $clusterwide = true -}}{{- end -}}
{{- $all = concat $all $watched -}}
{{- end -}}
{{- if $clusterwide -}}[]{{- else -}}{{- $all | uniq | toJson -}}{{- end -}}
{{- end -}}

{{/* What the operator does in each namespace it watches. */}}
{{- define "cutover.operatorNamespacedRules" -}}
# Its own resources, listed and watched; a ModelDeployment read again before its loop stops,
# and patched once to drop the finalizer earlier versions put on it.
- apiGroups: [cutover.dev]
  resources: [modeldeployments]
  verbs: [get, list, watch, patch]
- apiGroups: [cutover.dev]
  resources: [safetypolicies, alertrules]
  verbs: [get, list, watch]
# Status is replaced (PUT) with the resourceVersion last seen.
- apiGroups: [cutover.dev]
  resources: [modeldeployments/status, safetypolicies/status, alertrules/status]
  verbs: [update]
# Children of a ModelDeployment, applied server-side (a first apply creates them) and deleted
# with their revision; Deployments are also watched (an index of each model's revisions).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [create, patch, delete]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [create, patch]
# An AlertRule rendered for the Prometheus Operator.
- apiGroups: [monitoring.coreos.com]
  resources: [prometheusrules]
  verbs: [create, patch]
{{- if .Values.networkPolicy.enabled }}
# A ModelDeployment's NetworkPolicy over its serving pods (networkPolicy.enabled), applied
# server-side; the garbage collector deletes it with the ModelDeployment.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create, patch]
{{- end }}
# An HPA (or KEDA's) on a revision's Deployment owns its replicas: the operator then leaves
# them alone (an index of HPA targets).
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch]
# Why a revision's pods are not ready.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# Secrets a spec names (a Prometheus bearer token, a notification or crisis webhook URL), read
# by name at each use; the Secret a SafetyPolicy's webhook URL is copied into
# (cutover-safety-<policy>, mounted by its serving pods), applied and deleted. No list or watch:
# RBAC cannot narrow those to the Secrets the specs name.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, patch, delete]
# A SafetyPolicy rendered for serving pods: ConfigMap cutover-safety-<policy>.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [create, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* What the operator reads across the cluster: the GPU capacity preflight follows every node
and every bound pod (other namespaces' pods hold GPUs too). */}}
{{- define "cutover.operatorClusterRules" -}}
- apiGroups: [""]
  resources: [nodes, pods]
  verbs: [list, watch]
{{- end -}}

{{/* The ModelDeployment annotations an on-call request is made with (REQUEST_ANNOTATIONS in
operator/api/v1alpha1/base.py; a test fails when the two differ). */}}
{{- define "cutover.requestAnnotations" -}}
["cutover.dev/promote", "cutover.dev/abort", "cutover.dev/rollback", "cutover.dev/rollback-to", "cutover.dev/pause", "cutover.dev/resume", "cutover.dev/retry"]
{{- end -}}
