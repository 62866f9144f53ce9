{{- define "mlops-operator.name" -}}{{ .Chart.Name }}{{- end -}}
{{- define "mlops-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}
{{- define "mlops-operator.labels" -}}
app.kubernetes.io/name: {{ include "mlops-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "mlops-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlops-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "mlops-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "mlops-operator.fullname" .) .Values.serviceAccount.name }}
{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}
{{- define "mlops-operator.trackingUri" -}}
{{- if .Values.mlflow.enabled -}}http://{{ include "mlops-operator.fullname" . }}-mlflow:5000
{{- else -}}{{ .Values.mlflow.trackingUri }}{{- end -}}
{{- end -}}
