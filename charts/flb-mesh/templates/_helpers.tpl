{{/*
Labels on every object. Selectors and the repo's volume claim template use only
flb-mesh.selectorLabels, which never change on an upgrade (both are immutable in a StatefulSet).
*/}}
{{- define "flb-mesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: flb-mesh
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "flb-mesh.selectorLabels" . }}
{{- end -}}

{{- define "flb-mesh.selectorLabels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* An image of this release: [registry/]repository:tag, the tag defaulting to the appVersion. */}}
{{- define "flb-mesh.image" -}}
{{- $tag := .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if .root.Values.image.registry -}}
{{ printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.registry) .repository $tag }}
{{- else -}}
{{ printf "%s:%s" .repository $tag }}
{{- end -}}
{{- end -}}

{{- define "flb-mesh.controlPlaneImage" -}}
{{ include "flb-mesh.image" (dict "root" . "repository" .Values.image.controlPlane.repository) }}
{{- end -}}

{{- define "flb-mesh.sidecarImage" -}}
{{ include "flb-mesh.image" (dict "root" . "repository" .Values.image.sidecar.repository) }}
{{- end -}}

{{- define "flb-mesh.pullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The repo's in-cluster address: what sidecars and the bridge dial. */}}
{{- define "flb-mesh.repoUrl" -}}
https://flb-repo.{{ .Release.Namespace }}.svc:{{ .Values.repo.port }}
{{- end -}}

{{/*
The mesh settings the bridge and the injector read (mesh.json): the user's values.mesh with what
the chart owns filled in.
*/}}
{{- define "flb-mesh.mesh" -}}
{{- $mesh := deepCopy .Values.mesh -}}
{{- $_ := set $mesh "apiVersion" "flb.flomesh.io/v1alpha1" -}}
{{- $_ = set $mesh "kind" "Mesh" -}}
{{- $_ = set $mesh "controlPlaneNamespace" .Release.Namespace -}}
{{- $_ = set $mesh "repo" (dict "url" (include "flb-mesh.repoUrl" .) "tokenAudience" .Values.repo.tokenAudience) -}}
{{- $sidecar := $mesh.sidecar | default dict -}}
{{- $_ = set $sidecar "image" ($sidecar.image | default (include "flb-mesh.sidecarImage" .)) -}}
{{- $_ = set $mesh "sidecar" $sidecar -}}
{{- $init := $mesh.init | default dict -}}
{{- $_ = set $init "image" ($init.image | default (include "flb-mesh.sidecarImage" .)) -}}
{{- $_ = set $mesh "init" $init -}}
{{- toYaml $mesh -}}
{{- end -}}

{{/* The node agent runs in cni and in ebpf mode (eBPF mode is CNI mode plus eBPF: bpf/README.md). */}}
{{- define "flb-mesh.cniMode" -}}
{{- if has (dig "interception" "mode" "iptables" .Values.mesh) (list "cni" "ebpf") }}true{{ end -}}
{{- end -}}

{{- define "flb-mesh.ebpfMode" -}}
{{- if eq (dig "interception" "mode" "iptables" .Values.mesh) "ebpf" }}true{{ end -}}
{{- end -}}

{{/* Restricted Pod Security for the control plane: non-root, no capability, read-only root. */}}
{{- define "flb-mesh.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "flb-mesh.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/*
The repo's PKI: its CA (kept across upgrades: sidecars trust it), the repo's serving certificate
and the bridge's client certificate (CN flb-control-plane, the only writer the repo accepts).
Certificates found in the cluster are reused while they were issued for the same CA and names and
less than two thirds of their life has passed; otherwise they are issued again. Computed once per
render and remembered, so every template sees the same certificates. Returns YAML.
*/}}
{{- define "flb-mesh.repoPki" -}}
{{- if not (hasKey .Values "__flbRepoPki") -}}
{{- $ns := .Release.Namespace -}}
{{- $now := now | unixEpoch | int64 -}}
{{- $certDays := int .Values.repo.tls.certValidityDays -}}
{{- $renewAfter := add $now (div (mul $certDays 86400 2) 3) -}}
{{- $found := lookup "v1" "Secret" $ns "flb-repo-ca" -}}
{{- $ca := dict -}}
{{- if and $found (dig "data" "ca.crt" "" $found) (dig "data" "ca.key" "" $found) -}}
{{- $ca = buildCustomCert (index $found.data "ca.crt") (index $found.data "ca.key") -}}
{{- else -}}
{{- $ca = genCA "flb-mesh repo CA" (int .Values.repo.tls.caValidityDays) -}}
{{- end -}}
{{- $dnsNames := list "flb-repo" (printf "flb-repo.%s" $ns) (printf "flb-repo.%s.svc" $ns) (printf "flb-repo.%s.svc.%s" $ns (dig "clusterDomain" "cluster.local" .Values.mesh)) -}}
{{- $dnsNames = concat $dnsNames .Values.repo.tls.extraDnsNames | uniq -}}
{{- $ips := .Values.repo.tls.extraIpAddresses -}}
{{- $pki := dict "ca" (dict "crt" $ca.Cert "key" $ca.Key) -}}
{{- range $leaf := list (dict "secret" "flb-repo-tls" "cn" "flb-repo" "dns" $dnsNames "ips" $ips) (dict "secret" "flb-repo-client" "cn" "flb-control-plane" "dns" (list) "ips" (list)) -}}
{{- $issuedFor := printf "%s|%s|%s|%s|%d" $leaf.cn (join "," $leaf.dns) (join "," $leaf.ips) $ca.Cert $certDays | sha256sum -}}
{{- $existing := lookup "v1" "Secret" $ns $leaf.secret -}}
{{- $annotations := dig "metadata" "annotations" dict $existing -}}
{{- $keep := and $existing (eq (index $annotations "flomesh.io/issued-for" | default "") $issuedFor) (lt $now (index $annotations "flomesh.io/renew-after" | default "0" | int64)) -}}
{{- if $keep -}}
{{- $_ := set $pki $leaf.secret (dict "crt" (index $existing.data "tls.crt" | b64dec) "key" (index $existing.data "tls.key" | b64dec) "issuedFor" $issuedFor "renewAfter" (index $annotations "flomesh.io/renew-after")) -}}
{{- else -}}
{{- $cert := genSignedCert $leaf.cn $leaf.ips $leaf.dns $certDays $ca -}}
{{- $_ := set $pki $leaf.secret (dict "crt" $cert.Cert "key" $cert.Key "issuedFor" $issuedFor "renewAfter" (toString $renewAfter)) -}}
{{- end -}}
{{- end -}}
{{- $_ := set .Values "__flbRepoPki" $pki -}}
{{- end -}}
{{- toYaml .Values.__flbRepoPki -}}
{{- end -}}

{{/* A binding of the role of this name to the ServiceAccount of the same name. */}}
{{- define "flb-mesh.binding" -}}
{{- $kind := .kind -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ $kind }}Binding
metadata:
  name: {{ .name }}
  {{- if eq $kind "Role" }}
  namespace: {{ .root.Release.Namespace }}
  {{- end }}
  labels:
    {{- include "flb-mesh.labels" (dict "root" .root "component" .name) | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: {{ $kind }}
  name: {{ .name }}
subjects:
  - kind: ServiceAccount
    name: {{ .name }}
    namespace: {{ .root.Release.Namespace }}
{{- end -}}

{{/* cni.repair as the agent's flag: YAML reads an unquoted off as false. */}}
{{- define "flb-mesh.cniRepair" -}}
{{- $repair := toString .Values.cni.repair -}}
{{- if eq $repair "false" }}off{{ else }}{{ $repair }}{{ end -}}
{{- end -}}
