{{/* The namespace Berth runs in. */}}
{{- define "berth.namespace" -}}
{{- default .Release.Namespace .Values.namespace.name -}}
{{- end }}

{{/* Labels of every object: deploy/'s own, then Helm's. Argument: (dict "root" $ "component" "operator"). */}}
{{- define "berth.labels" -}}
app.kubernetes.io/name: berth
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{ include "berth.helmLabels" .root }}
{{- end }}

{{/* The labels Helm adds, which deploy/ does not have. */}}
{{- define "berth.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* The operator pods' selector, as in deploy/operator.yaml. */}}
{{- define "berth.operatorSelector" -}}
app.kubernetes.io/name: berth
app.kubernetes.io/component: operator
{{- end }}
