{{- define "cordon.name" -}}{{ .Release.Name }}-cordon{{- end -}}
{{- define "cordon.labels" -}}
app.kubernetes.io/name: cordon
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
