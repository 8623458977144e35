{{/* Chart name. */}}
{{- define "vhba.name" -}}vhba{{- end -}}

{{/* Release-scoped prefix for object names. */}}
{{- define "vhba.fullname" -}}
{{- if contains "vhba" .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- else -}}{{ printf "%s-vhba" .Release.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "vhba.labels" -}}
app.kubernetes.io/name: vhba
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels for one component ($ is the root context). */}}
{{- define "vhba.selector" -}}
app.kubernetes.io/name: vhba
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The vhba image reference. */}}
{{- define "vhba.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag }}{{- end -}}

{{/* Container security context for sidecars and vhba processes that need no privilege at all. */}}
{{- define "vhba.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities: { drop: [ALL] }
seccompProfile: { type: RuntimeDefault }
{{- end -}}

{{/* Root in the container (to write root-owned host directories) but no capabilities and no escalation. */}}
{{- define "vhba.rootNoCaps" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsUser: 0
capabilities: { drop: [ALL] }
seccompProfile: { type: RuntimeDefault }
{{- end -}}

{{/* The CSI socket inside pods. */}}
{{- define "vhba.csiSocket" -}}/csi/csi.sock{{- end -}}

{{/* Host path of the node plugin's CSI socket (kubelet's plugin directory). */}}
{{- define "vhba.nodeCsiHostDir" -}}{{ .Values.node.kubeletDir }}/plugins/{{ .Values.driverName }}{{- end -}}
