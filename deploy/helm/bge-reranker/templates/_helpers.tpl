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
(the client re-resolves it; pod IPs, so the port the pods listen on: the proxy's when it runs),
else the ClusterIP Service (its port 8001 forwards to the proxy when it runs). */ -}}
{{- define "bge-reranker.restTritonUrl" -}}
{{- if .Values.headlessService.enabled -}}
dns:///{{ include "bge-reranker.fullname" . }}-headless.{{ .Release.Namespace }}.svc.cluster.local:{{ include "bge-reranker.podGrpcPort" . }}
{{- else -}}
{{ include "bge-reranker.fullname" . }}.{{ .Release.Namespace }}.svc.cluster.local:{{ .Values.ports.grpc }}
{{- end -}}
{{- end -}}

{{- /* The `helm test` pod: labels of its own, so the Deployment's Services, PDB, HPA pod list
and NetworkPolicy never select it (a pod under Triton's policy could reach DNS only). */ -}}
{{- define "bge-reranker.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "bge-reranker.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: helm-test
{{- end -}}

{{- /* The ports Triton's pods actually listen on for inference: the proxy's when it runs
(Triton's own then bind loopback). A headless Service's DNS answers pod IPs, so its callers
dial these numbers directly; NetworkPolicies match them too. */ -}}
{{- define "bge-reranker.podGrpcPort" -}}
{{ ternary .Values.proxy.ports.grpc .Values.ports.grpc .Values.proxy.enabled }}
{{- end -}}

{{- define "bge-reranker.podHttpPort" -}}
{{ ternary .Values.proxy.ports.http .Values.ports.http .Values.proxy.enabled }}
{{- end -}}
