{{/* The name of the chart, for labels. */}}
{{- define "sdns.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified name: the release name, unless it lacks the chart name. */}}
{{- define "sdns.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sdns.operatorName" -}}{{ include "sdns.fullname" . | trunc 54 | trimSuffix "-" }}{{- end -}}
{{- define "sdns.relayName" -}}{{ include "sdns.fullname" . | trunc 57 | trimSuffix "-" }}-relay{{- end -}}

{{/* Labels every object of the release carries. */}}
{{- define "sdns.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "sdns.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: secondary-dns
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component (operator, relay): stable across upgrades. */}}
{{- define "sdns.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sdns.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sdns.componentLabels" -}}
{{ include "sdns.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image: a digest pins it, else the tag, else the chart's appVersion. */}}
{{- define "sdns.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "sdns.operatorServiceAccount" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "sdns.operatorName" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sdns.relayServiceAccount" -}}
{{- if .Values.relay.serviceAccount.create -}}
{{- default (include "sdns.relayName" .) .Values.relay.serviceAccount.name -}}
{{- else -}}
{{- required "relay.serviceAccount.name is required when relay.serviceAccount.create is false" .Values.relay.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The pod-level security context both Deployments use (as the DNS pods'). */}}
{{- define "sdns.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sdns.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}
