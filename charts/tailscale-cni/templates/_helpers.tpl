{{- define "tailscale-cni.name" -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "tailscale-cni.labels" -}}
app.kubernetes.io/name: tailscale-cni
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tailscale-cni.selector" -}}
app.kubernetes.io/name: tailscale-cni
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tailscale-cni.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "tailscale-cni.secretName" -}}
{{- .Values.controlPlane.existingSecret | default (printf "%s-control-plane" (include "tailscale-cni.name" .)) -}}
{{- end -}}

{{- /* uninstallOnStop as released, always or never; true and false are the
former values. */ -}}
{{- define "tailscale-cni.uninstallOnStop" -}}
{{- $v := toString .Values.uninstallOnStop -}}
{{- if eq $v "true" -}}always
{{- else if eq $v "false" -}}never
{{- else if has $v (list "released" "always" "never") -}}{{ $v }}
{{- else -}}{{ fail (printf "uninstallOnStop: want released, always or never, not %q" $v) }}
{{- end -}}
{{- end -}}

{{- define "tailscale-cni.adapterImage" -}}
{{ .Values.adapter.image.repository }}:{{ .Values.adapter.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- /* The adapter's --hostname-prefix: clusterName made one DNS label, with
room left in the 63 characters for the node's hostname the adapter
appends. */ -}}
{{- define "tailscale-cni.adapterHostnamePrefix" -}}
{{- $c := .Values.clusterName | lower | regexReplaceAll "[^a-z0-9-]+" "-" | trunc 24 | trimAll "-" -}}
{{- printf "%s-cni-adapter" (default "k8s" $c) -}}
{{- end -}}
