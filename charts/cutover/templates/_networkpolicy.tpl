{{/* Rules shared by the chart's NetworkPolicies (values networkPolicy). */}}

{{/* Egress to the cluster DNS (a NetworkPolicyEgressRule). */}}
{{- define "cutover.dnsEgress" -}}
- to:
    {{- toYaml .Values.networkPolicy.dns.to | nindent 4 }}
  ports:
    {{- toYaml .Values.networkPolicy.dns.ports | nindent 4 }}
{{- end -}}

{{/* Egress to the Kubernetes API server: its addresses (networkPolicy.apiServer.cidrs) or,
without them, its ports at any address. */}}
{{- define "cutover.apiServerEgress" -}}
- ports:
    {{- range .Values.networkPolicy.apiServer.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- with .Values.networkPolicy.apiServer.cidrs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  {{- end }}
{{- end -}}

{{/* Who may connect to the serving pods, as the JSON list of NetworkPolicyIngressRule objects
that the operator's --serving-network-policy takes (it adds the model's own pods where a
fallback calls the stable revision): the gateway on the serving ports, Prometheus on http
(/metrics), and networkPolicy.serving.extraIngress. The ports are the serving container's
names (operator/builders.py). */}}
{{- define "cutover.servingIngress" -}}
{{- $rules := list -}}
{{- if .Values.gateway.enabled -}}
{{- $gateway := dict "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" .Release.Namespace)) "podSelector" (dict "matchLabels" (dict "app.kubernetes.io/name" (include "cutover.name" .) "app.kubernetes.io/component" "gateway")) -}}
{{- $rules = append $rules (dict "from" (list $gateway) "ports" (list (dict "port" "http" "protocol" "TCP") (dict "port" "grpc" "protocol" "TCP"))) -}}
{{- end -}}
{{- $rules = append $rules (dict "from" .Values.networkPolicy.prometheus.from "ports" (list (dict "port" "http" "protocol" "TCP"))) -}}
{{- concat $rules .Values.networkPolicy.serving.extraIngress | toJson -}}
{{- end -}}
