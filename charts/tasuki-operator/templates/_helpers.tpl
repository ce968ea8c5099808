{{/*
Names, labels and the RBAC rules shared by the templates.
*/}}

{{- define "tasuki-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object's name: fullnameOverride, else the release name (with the chart's name
unless the release name already holds it), at most 63 characters. */}}
{{- define "tasuki-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "tasuki-operator.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tasuki-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tasuki-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tasuki-operator.labels" -}}
{{ include "tasuki-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tasuki
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "tasuki-operator.serviceAccountName" -}}
{{- default (include "tasuki-operator.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* The watched namespaces, one per line: watchNamespaces, or the release namespace when it is empty.
Callers check watchAllNamespaces first. */}}
{{- define "tasuki-operator.watchNamespaces" -}}
{{- range (.Values.watchNamespaces | default (list .Release.Namespace)) | uniq }}
{{ . }}
{{- end }}
{{- end }}

{{/* The rules of operator/tasuki_operator/rbac.yaml (files/rbac.yaml links to it) as YAML, split in two:
"watch" - every rule but the Lease rules, for the Role of each watched namespace (or the ClusterRole);
"leader" - the Lease rules, for leader election in the operator's own namespace only.
Usage: include "tasuki-operator.rules" (list . "watch") */}}
{{- define "tasuki-operator.rules" -}}
{{- $root := index . 0 }}
{{- $leader := eq (index . 1) "leader" }}
{{- $rules := get ($root.Files.Get "files/rbac.yaml" | fromYaml) "rules" }}
{{- if not $rules }}
{{- fail "files/rbac.yaml (operator/tasuki_operator/rbac.yaml) has no `rules`: the chart needs that file, a link into the operator package" }}
{{- end }}
{{- $picked := list }}
{{- range $rules }}
{{- if eq (has "leases" .resources) $leader }}
{{- $picked = append $picked . }}
{{- end }}
{{- end }}
{{- toYaml $picked }}
{{- end }}
