{{- define "scistream.name" -}}scistream-operator{{- end -}}

{{- define "scistream.fullname" -}}
{{- if contains "scistream-operator" .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-scistream-operator" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "scistream.labels" -}}
app.kubernetes.io/name: {{ include "scistream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "scistream.selector" -}}
app.kubernetes.io/name: {{ include "scistream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "scistream.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "scistream.s2dsImage" -}}
{{ .Values.relayImages.s2ds.repository }}:{{ .Values.relayImages.s2ds.tag | default .Chart.AppVersion }}
{{- end -}}
