{{- define "tsymbiote-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tsymbiote-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tsymbiote-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tsymbiote-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tsymbiote-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tsymbiote-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tsymbiote-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tsymbiote-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tsymbiote-operator.webhookService" -}}
{{- printf "%s-webhook" (include "tsymbiote-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tsymbiote-operator.certSecret" -}}
{{- printf "%s-webhook-cert" (include "tsymbiote-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tsymbiote-operator.controlPlaneSecret" -}}
{{- default (printf "%s-control-plane" (include "tsymbiote-operator.fullname" .)) .Values.controlPlane.existingSecret }}
{{- end }}

{{- define "tsymbiote-operator.adapterImage" -}}
{{- printf "%s:%s" .Values.adapter.image.repository (default .Chart.AppVersion .Values.adapter.image.tag) }}
{{- end }}

{{- /* "cpu=10m,memory=32Mi" from a resource map, for the operator's flags. */ -}}
{{- define "tsymbiote-operator.resourceList" -}}
{{- $out := list }}
{{- range $k, $v := . }}
{{- $out = append $out (printf "%s=%v" $k $v) }}
{{- end }}
{{- join "," $out }}
{{- end }}

{{- define "tsymbiote-operator.proxyImage" -}}
{{- printf "%s:%s" .Values.expose.proxy.image.repository (default .Chart.AppVersion .Values.expose.proxy.image.tag) }}
{{- end }}
