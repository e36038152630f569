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

{{- /* The Triton container's command (docker/serve.py in front of tritonserver), shared by the
Deployment and the engine prebuild Jobs so both build the same engines: same flags, same cache
paths, same self-certification. Call with (dict "root" $ "prebuild" bool). The prebuild Job's
Triton binds loopback on every port: nothing reaches it, and its serve.py exits once the engines
are certified and published. */ -}}
{{- define "bge-reranker.serveArgs" -}}
{{- $ := .root -}}
- python3
- /opt/reranker/serve.py
{{- if eq $.Values.trtCache.type "none" }}
# No TensorRT EP (the int8 CPU profile, values/cpu.yaml): no engine cache to build or seed.
- --local=none
{{- else }}
- --local=/trt-cache
# The per-pod volume's size limit: serve.py seeds no entry that would fill it.
- --local-size={{ $.Values.trtCache.size }}
{{- end }}
{{- if eq $.Values.trtCache.type "shared" }}
- --shared=/trt-cache-shared
{{- end }}
{{- with $.Values.trtCache.modelHash }}
{{- if not (regexMatch "^[A-Za-z0-9_]{1,64}$" (toString .)) }}
{{- fail (printf "trtCache.modelHash %q: manifest.json's engine_cache_prefix, letters, digits and '_' (e.g. bge_0123456789abcdef)" (toString .)) }}
{{- end }}
- --model-hash={{ . }}
{{- end }}
{{- if .prebuild }}
- --prebuild-only
- --prune
{{- end }}
- --ready-url=http://127.0.0.1:{{ $.Values.ports.http }}/v2/health/ready
# After warm-up, TensorRT took every class model and the certificate passes on this
# GPU, or the pod stays unready (docker/self_certify.py; readiness reads the verdict).
# Every repository source: the engine check needs no certificate.
- --self-certify=fail
{{- if ne $.Values.modelRepository.source "uri" }}
- --repository=/models
{{- else if $.Values.helmTest.certificateConfigMap }}
# A uri repository is read by Triton only: the certificate comes from the ConfigMap.
- --certificate=/certificate/certificate.json
{{- else }}
# No certificate: the engine check alone gates readiness; the launcher warns at start,
# exports reranker_selfcert_certificate_missing and publishes nothing to a shared cache.
- --certificate=none
{{- end }}
- --grpc-url=127.0.0.1:{{ $.Values.ports.grpc }}
- --verdict=/tmp/reranker-selfcert.json
{{- if not .prebuild }}
- --certify-metrics-port={{ $.Values.ports.certify }}
{{- end }}
- --
- tritonserver
- --model-repository={{ include "bge-reranker.modelRepositoryPath" $ }}
- --strict-readiness=true
- --exit-on-error=true
- --allow-metrics=true
- --http-port={{ $.Values.ports.http }}
- --grpc-port={{ $.Values.ports.grpc }}
- --metrics-port={{ $.Values.ports.metrics }}
{{- if .prebuild }}
# Nothing reaches the prebuild Job's server: every port on loopback.
- --http-address=127.0.0.1
- --grpc-address=127.0.0.1
- --metrics-address=127.0.0.1
{{- else if $.Values.proxy.enabled }}
# Only the proxy sidecar and the exec probes (same pod) reach Triton's HTTP/gRPC.
- --http-address=127.0.0.1
- --grpc-address=127.0.0.1
- --metrics-address=0.0.0.0
{{- end }}
- --log-verbose={{ $.Values.triton.logVerbose }}
- --exit-timeout-secs={{ $.Values.shutdown.exitTimeoutSeconds }}
{{- with $.Values.triton.grpcMaxConnectionAgeSeconds }}
# GOAWAY after this long (plus the grace for calls in flight): long-lived gRPC
# clients (grpc-go, grpc-java) re-resolve only on reconnect, so pods the HPA adds get
# their share of traffic. `tritonserver --help` (2.51) lists both flags, in ms.
- --grpc-max-connection-age={{ mul . 1000 }}
- --grpc-max-connection-age-grace={{ mul $.Values.triton.grpcMaxConnectionAgeGraceSeconds 1000 }}
{{- end }}
{{- range $.Values.triton.backendConfig }}
- --backend-config={{ . }}
{{- end }}
{{- range $.Values.triton.extraArgs }}
- {{ . }}
{{- end }}
{{- end -}}

{{- define "bge-reranker.tritonEnv" -}}
- name: HOME
  value: /tmp
{{- if .Values.modelRepository.credentialsSecret }}
# Triton's cloud credential file (S3/GCS/Azure), mounted from the Secret.
- name: TRITON_CLOUD_CREDENTIAL_PATH
  value: /var/run/secrets/triton-cloud/credentials.json
{{- end }}
{{- end -}}

{{- /* source=initContainer: the repository copied from the baked image (Deployment and Jobs). */ -}}
{{- define "bge-reranker.initContainers" -}}
{{- if eq .Values.modelRepository.source "initContainer" }}
initContainers:
  - name: fetch-model-repository
    image: {{ .Values.modelRepository.initContainer.image }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    command: ["sh", "-c", "cp -a {{ .Values.modelRepository.initContainer.path }}/. /repository/"]
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    resources:
      requests:
        cpu: 100m
        memory: 256Mi
      limits:
        cpu: "1"
        memory: 1Gi
    volumeMounts:
      - name: model-repository
        mountPath: /repository
{{- end }}
{{- end -}}

{{- define "bge-reranker.tritonVolumeMounts" -}}
- name: dshm
  mountPath: /dev/shm
- name: tmp
  mountPath: /tmp
{{- if ne .Values.trtCache.type "none" }}
- name: trt-cache
  mountPath: /trt-cache
{{- end }}
{{- if eq .Values.trtCache.type "shared" }}
- name: trt-cache-shared
  mountPath: /trt-cache-shared
{{- end }}
{{- if .Values.modelRepository.credentialsSecret }}
- name: cloud-credentials
  mountPath: /var/run/secrets/triton-cloud
  readOnly: true
{{- end }}
{{- if and (eq .Values.modelRepository.source "uri") .Values.helmTest.certificateConfigMap }}
- name: certificate
  mountPath: /certificate
  readOnly: true
{{- end }}
{{- if ne .Values.modelRepository.source "uri" }}
- name: model-repository
  mountPath: /models
  readOnly: true
  {{- if and (eq .Values.modelRepository.source "pvc") .Values.modelRepository.pvc.subPath }}
  subPath: {{ .Values.modelRepository.pvc.subPath }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "bge-reranker.tritonVolumes" -}}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.shmSize }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSize }}
{{- if ne .Values.trtCache.type "none" }}
# Triton writes engines only here, per pod (docker/serve.py).
- name: trt-cache
  emptyDir:
    sizeLimit: {{ .Values.trtCache.size }}
{{- end }}
{{- if eq .Values.trtCache.type "shared" }}
- name: trt-cache-shared
  persistentVolumeClaim:
    claimName: {{ include "bge-reranker.trtCacheClaim" . }}
{{- else if not (has .Values.trtCache.type (list "emptyDir" "none")) }}
{{- fail "trtCache.type must be emptyDir, shared or none (no TensorRT EP: the int8 CPU profile)" }}
{{- end }}
{{- if .Values.modelRepository.credentialsSecret }}
- name: cloud-credentials
  secret:
    secretName: {{ .Values.modelRepository.credentialsSecret }}
    defaultMode: 0440
{{- end }}
{{- if and (eq .Values.modelRepository.source "uri") .Values.helmTest.certificateConfigMap }}
# The exported repository's certificate.json (kubectl create configmap ... --from-file), for
# the self-certification of a uri repository (serveArgs --certificate).
- name: certificate
  configMap:
    name: {{ .Values.helmTest.certificateConfigMap }}
    items:
      - key: certificate.json
        path: certificate.json
{{- end }}
{{- if eq .Values.modelRepository.source "pvc" }}
- name: model-repository
  persistentVolumeClaim:
    claimName: {{ .Values.modelRepository.pvc.claimName }}
    readOnly: true
{{- else if eq .Values.modelRepository.source "initContainer" }}
- name: model-repository
  emptyDir:
    sizeLimit: 8Gi
{{- end }}
{{- end -}}

{{- /* The engine prebuild Jobs' pods: labels of their own, so no Service, PDB, HPA or Triton
NetworkPolicy selects them. */ -}}
{{- define "bge-reranker.prebuildSelectorLabels" -}}
app.kubernetes.io/name: {{ include "bge-reranker.name" . }}-prebuild
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: engine-prebuild
{{- end -}}

{{- /* Egress of the pods that run Triton (the Deployment's and the prebuild Jobs'): DNS, and what
reading a remote repository needs. */ -}}
{{- define "bge-reranker.tritonEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- if or .Values.networkPolicy.allowEgress (eq .Values.modelRepository.source "uri") (eq .Values.networkPolicy.workloadIdentity "irsa") }}
# Object storage (S3/GCS/Azure Blob) and, for IRSA, STS's token exchange, over HTTPS.
# A uri repository is unreadable without it. Not the link-local metadata addresses: those
# get only the identity rule below, when one is configured.
- ports:
    - port: 443
      protocol: TCP
  to:
    - ipBlock:
        cidr: 0.0.0.0/0
        except: [169.254.0.0/16]
    - ipBlock:
        cidr: ::/0
        except: ["fe80::/10", "fd00:ec2::/32"]
{{- end }}
{{- if eq .Values.networkPolicy.workloadIdentity "gke" }}
# GKE Workload Identity Federation: the GKE metadata server answers on 169.254.169.254:80,
# and on :988 (169.254.169.252 or .254, depending on version and Dataplane V2); GKE's
# network-policy guide asks for these. Without them the token fetch hangs, Triton cannot
# read gs:// and the pod crash-loops.
- ports:
    - port: 80
      protocol: TCP
    - port: 988
      protocol: TCP
  to:
    - ipBlock:
        cidr: 169.254.169.254/32
    - ipBlock:
        cidr: 169.254.169.252/32
{{- else if eq .Values.networkPolicy.workloadIdentity "eks-pod-identity" }}
# EKS Pod Identity: the node's agent serves credentials on 169.254.170.23:80
# ([fd00:ec2::23]:80 on IPv6 clusters).
- ports:
    - port: 80
      protocol: TCP
  to:
    - ipBlock:
        cidr: 169.254.170.23/32
    - ipBlock:
        cidr: fd00:ec2::23/128
{{- end }}
{{- end -}}

{{/* Whether the pods self-certify and export the verdict on ports.certify (serveArgs): every
repository source (a uri one with its certificate from helmTest.certificateConfigMap, or the
engine check alone). Kept as a helper so the Service, monitors and policy follow serveArgs. */}}
{{- define "bge-reranker.selfCertifies" -}}
true
{{- end }}

{{- /* A repository's object store and the pods' cloud identity must be the same cloud's: a gs://
repository with an EKS identity (values files of two clouds layered, e.g. eks.yaml +
shared-cache.yaml) renders fine and then never reads the repository. */ -}}
{{- define "bge-reranker.checkCloudIdentity" -}}
{{- $uri := toString .Values.modelRepository.uri -}}
{{- $identity := toString .Values.networkPolicy.workloadIdentity -}}
{{- $annotations := .Values.serviceAccount.annotations | default dict -}}
{{- $aws := or (has $identity (list "irsa" "eks-pod-identity")) (hasKey $annotations "eks.amazonaws.com/role-arn") -}}
{{- $gcp := or (eq $identity "gke") (hasKey $annotations "iam.gke.io/gcp-service-account") -}}
{{- if eq .Values.modelRepository.source "uri" }}
{{- if and (hasPrefix "gs://" $uri) $aws }}
{{- fail "modelRepository.uri is gs:// (GCS) but the pods have an AWS identity (networkPolicy.workloadIdentity irsa/eks-pod-identity or an eks.amazonaws.com/role-arn annotation): values files of two clouds layered? shared-cache.yaml is GKE-only (docs/DEPLOYMENT.md)" }}
{{- end }}
{{- if and (hasPrefix "s3://" $uri) $gcp }}
{{- fail "modelRepository.uri is s3:// but the pods have a GKE identity (networkPolicy.workloadIdentity gke or an iam.gke.io/gcp-service-account annotation): values files of two clouds layered?" }}
{{- end }}
{{- end }}
{{- if and $aws $gcp }}
{{- fail "the pods have both an AWS and a GKE identity (networkPolicy.workloadIdentity / serviceAccount.annotations): values files of two clouds layered? (docs/DEPLOYMENT.md)" }}
{{- end }}
{{- end -}}
