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

{{- /*
RBAC. The rules below are exactly what the controllers exercise (tests/integration/chart/
test_rbac.py derives them from the API server's audit log of a full run and compares):
"namespaced" = what the operator does inside a watched namespace, "cluster" = what kopf needs
cluster-wide. Rights the operator never uses itself but must hold to create the serving
router's Role (RBAC forbids granting what one does not have) are marked "delegated".
*/ -}}
{{- define "mlops-operator.namespacedRules" -}}
# the three kinds: kopf lists and watches them
- apiGroups: [mlops.dev]
  resources: [trainingruns, modelversions, modeldeployments]
  verbs: [list, watch]
# kopf's finalizer on TrainingRuns (a deleted one ends its MLflow run)
- apiGroups: [mlops.dev]
  resources: [trainingruns]
  verbs: [patch]
# a TrainingRun registers its ModelVersion (create; get reads it back after a 409 on a retry)
- apiGroups: [mlops.dev]
  resources: [modelversions]
  verbs: [create, get]
# one status patch per reconcile pass
- apiGroups: [mlops.dev]
  resources: [trainingruns/status, modelversions/status, modeldeployments/status]
  verbs: [patch]
# training and validation Jobs (watched, created once, deleted with their TrainingRun)
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, get, create, delete]
# the Jobs' and the serving Deployments' pods (delegated: the router lists them)
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# kopf's and the controllers' Events; list: a Job's FailedCreate (pods refused by admission or
# a quota) shown on the TrainingRun / ModelVersion
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
# serving: server-side apply (patch; create when new), prune (list, delete); watch: a child is
# re-applied only when its manifest changed or the child did (its watch shows another version)
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [list, watch, get, create, patch, delete]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, create, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes, grpcroutes]
  verbs: [list, create, patch, delete]
# delegated: the router's Role lets it list EndpointSlices
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list]
{{- if .Values.alertReceiver.enabled }}
# the alert receiver: finds the alert's ModelDeployment, its TrainingRuns, starts one
- apiGroups: [mlops.dev]
  resources: [modeldeployments, trainingruns]
  verbs: [get]
- apiGroups: [mlops.dev]
  resources: [trainingruns]
  verbs: [create]
{{- end }}
{{- end -}}

{{- define "mlops-operator.clusterRules" -}}
# kopf: notices CRDs (re)installed while it runs
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if .Values.watchNamespaces }}
# kopf: the watched namespaces appearing and disappearing
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- if and .Values.peering (not .Values.watchNamespaces) }}
# kopf peering (HA): cluster-wide peering object
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [list, watch, patch]
{{- end }}
{{- end -}}
