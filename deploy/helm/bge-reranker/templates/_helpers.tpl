{{- define "bge-reranker.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bge-reranker.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bge-reranker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bge-reranker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bge-reranker.labels" -}}
{{ include "bge-reranker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "bge-reranker.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
{{- end -}}

{{- define "bge-reranker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ default (include "bge-reranker.fullname" .) .Values.serviceAccount.name }}
{{- else -}}
{{ default "default" .Values.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{- define "bge-reranker.modelRepositoryPath" -}}
{{- if eq .Values.modelRepository.source "uri" -}}
{{ required "modelRepository.uri is required when source=uri" .Values.modelRepository.uri }}
{{- else -}}
/models
{{- end -}}
{{- end -}}

{{- define "bge-reranker.trtCacheClaim" -}}
{{ default (printf "%s-trt-cache" (include "bge-reranker.fullname" .)) .Values.trtCache.existingClaim }}
{{- end -}}

{{- define "bge-reranker.terminationGracePeriodSeconds" -}}
{{ add .Values.shutdown.preStopSleepSeconds .Values.shutdown.exitTimeoutSeconds .Values.shutdown.marginSeconds }}
{{- end -}}

{{- /* The REST API's pods: a name of their own, so Triton's Services, PDB and NetworkPolicy never select them. */ -}}
{{- define "bge-reranker.restSelectorLabels" -}}
app.kubernetes.io/name: {{ include "bge-reranker.name" . }}-rest
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: rest
{{- end -}}

{{- define "bge-reranker.restLabels" -}}
{{ include "bge-reranker.restSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "bge-reranker.restImage" -}}
{{- if .Values.rest.image.digest -}}
{{ .Values.rest.image.repository }}@{{ .Values.rest.image.digest }}
{{- else -}}
{{ .Values.rest.image.repository }}:{{ .Values.rest.image.tag }}
{{- end -}}
{{- end -}}

{{- /* Triton's gRPC address for the REST pods: every Triton pod through the headless Service
(the client re-resolves it), else the ClusterIP Service. */ -}}
{{- define "bge-reranker.restTritonUrl" -}}
{{- if .Values.headlessService.enabled -}}
dns:///{{ include "bge-reranker.fullname" . }}-headless.{{ .Release.Namespace }}.svc.cluster.local:{{ .Values.ports.grpc }}
{{- else -}}
{{ include "bge-reranker.fullname" . }}.{{ .Release.Namespace }}.svc.cluster.local:{{ .Values.ports.grpc }}
{{- end -}}
{{- end -}}
