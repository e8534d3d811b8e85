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

{{- define "scistream.stunnelImage" -}}
{{ .Values.relayImages.stunnel.repository }}:{{ .Values.relayImages.stunnel.tag | default .Chart.AppVersion }}
{{- end -}}

{{- /* The Service's name inside the cluster (always in the certificate). */ -}}
{{- define "scistream.controlServiceName" -}}
{{ include "scistream.fullname" . }}-control.{{ .Release.Namespace }}.svc
{{- end -}}

{{- /* host:port application controllers dial (published in ConfigMap scistream-control-endpoint). */ -}}
{{- define "scistream.controlAdvertise" -}}
{{- $c := .Values.controlEndpoint -}}
{{- if $c.advertise -}}
{{ $c.advertise }}
{{- else -}}
{{- $port := $c.port -}}
{{- if $c.hostPort.enabled -}}
{{- $port = $c.hostPort.port -}}
{{- else if eq $c.service.type "NodePort" -}}
{{- $port = required "controlEndpoint.service.type NodePort: set controlEndpoint.service.nodePort (the port users dial) or controlEndpoint.advertise" $c.service.nodePort -}}
{{- end -}}
{{- $host := include "scistream.controlServiceName" . -}}
{{- if $c.tls.dnsNames -}}
{{- $host = first $c.tls.dnsNames -}}
{{- else if $c.tls.ipAddresses -}}
{{- $host = first $c.tls.ipAddresses -}}
{{- if contains ":" $host }}{{ $host = printf "[%s]" $host }}{{ end -}}
{{- end -}}
{{ $host }}:{{ $port }}
{{- end -}}
{{- end -}}

{{/* The gateway namespaces: where the operator may write relay pods, ConfigMaps and Secrets. */}}
{{- define "scistream.gatewayNamespaces" -}}
{{- prepend (.Values.extraGatewayNamespaces | default list) .Values.gatewayNamespace.name | uniq | join "," -}}
{{- end -}}
