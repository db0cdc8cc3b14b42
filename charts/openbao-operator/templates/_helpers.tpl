{{/* The name of every object of the chart: `openbao-operator` unless overridden. */}}
{{- define "openbao-operator.name" -}}
{{- default "openbao-operator" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. The selector uses only the stable `name` label, like deploy/. */}}
{{- define "openbao-operator.labels" -}}
app.kubernetes.io/name: {{ include "openbao-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "openbao-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "openbao-operator.name" . }}
{{- end -}}

{{- define "openbao-operator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
