/**
 * Labels and annotations users and parts of the mesh read and write (README.md in this folder, 'What an injected pod carries').
 * Names follow Flomesh's own service mesh so its users feel at home.
 */
export const INJECT_LABEL = 'flomesh.io/inject';
/** Namespace label value that turns injection on for the namespace. */
export const NAMESPACE_INJECT_ENABLED = 'enabled';
export const NAMESPACE_INJECT_DISABLED = 'disabled';

export const SIDECAR_STATUS_ANNOTATION = 'flomesh.io/sidecar-status';

export const OUTBOUND_PORT_EXCLUSION_ANNOTATION = 'flomesh.io/outbound-port-exclusion-list';
export const INBOUND_PORT_EXCLUSION_ANNOTATION = 'flomesh.io/inbound-port-exclusion-list';
export const OUTBOUND_IP_RANGE_EXCLUSION_ANNOTATION = 'flomesh.io/outbound-ip-range-exclusion-list';
export const OUTBOUND_IP_RANGE_INCLUSION_ANNOTATION = 'flomesh.io/outbound-ip-range-inclusion-list';

/**
 * A pod's own interception mode, `iptables`, `cni` or `ebpf` (Istio's `sidecar.istio.io/interceptionMode`),
 * instead of the mesh's `interception.mode`. What a pod may choose is what the mesh deploys: an
 * iptables mesh runs no node agent, so only iptables; a cni mesh's agent runs without eBPF, so
 * iptables or cni; an ebpf mesh's agent does all three. Anything else refuses the pod naming this
 * annotation. The injector tells the sidecar the chosen mode in INTERCEPTION_MODE_ENV.
 */
export const INTERCEPTION_MODE_ANNOTATION = 'flomesh.io/interception-mode';
/** Env var of the sidecar container: its pod's interception mode (mesh.json's `outbound.endpointFallback: auto` follows it). */
export const INTERCEPTION_MODE_ENV = 'FLB_INTERCEPTION_MODE';

/** Per-pod sidecar resources, Kubernetes quantities. */
export const PROXY_RESOURCE_ANNOTATIONS = {
  cpuRequest: 'flomesh.io/proxy-cpu-request',
  memoryRequest: 'flomesh.io/proxy-memory-request',
  cpuLimit: 'flomesh.io/proxy-cpu-limit',
  memoryLimit: 'flomesh.io/proxy-memory-limit',
} as const;

export const SIDECAR_CONTAINER_NAME = 'flb-sidecar';
export const INIT_CONTAINER_NAME = 'flb-init';
export const VALIDATION_CONTAINER_NAME = 'flb-validation';

/**
 * Label the injector puts on every pod it injects (besides the status annotation), so the control
 * plane can list and watch only meshed pods with a label selector (`flomesh.io/sidecar-injected=true`):
 * an annotation cannot be selected on. Flomesh's fsm labels injected pods `fsm-proxy-uuid` with a
 * per-pod UUID because its proxies are named by it; a sidecar's id here is its namespace and pod
 * name, so a fixed value is enough, and it keeps `flb inject` output the same on every run.
 */
export const SIDECAR_INJECTED_LABEL = 'flomesh.io/sidecar-injected';
export const SIDECAR_INJECTED_VALUE = 'true';

/**
 * The repo's CA reaches each injected pod the way Kubernetes hands out its own (`kube-root-ca.crt`):
 * a ConfigMap of this fixed name in the pod's namespace, with the PEM bundle under key `ca.crt`.
 * The control plane keeps a copy in every namespace with injected pods; the injector mounts it into
 * the sidecar and names the file in FLB_REPO_CA_FILE, which the sidecar's repo client trusts (and
 * re-reads when the kubelet updates it).
 */
export const REPO_CA_CONFIGMAP = 'flb-repo-ca';
export const REPO_CA_CONFIGMAP_KEY = 'ca.crt';
/** Env var of the sidecar container: the path of the repo CA bundle (PEM) to trust. */
export const REPO_CA_FILE_ENV = 'FLB_REPO_CA_FILE';

/**
 * "true" on a pod whose sidecar announces VIPs over BGP: the injector gives its app containers a
 * preStop hook to BGP_DRAIN_PATH on the sidecar's readiness probe port, so the VIPs are withdrawn
 * before the app gets SIGTERM (a native sidecar stops after the app).
 */
export const BGP_ANNOUNCER_ANNOTATION = 'flomesh.io/bgp-announcer';
/**
 * The VIPs a pod's sidecar announces, as a comma-separated list of addresses (`10.0.0.100`,
 * `2001:db8::100/128`): the injector carries them in the interception settings, and the init
 * container (iptables mode) or the CNI node agent puts them on the pod's lo.
 */
export const BGP_VIPS_ANNOTATION = 'flomesh.io/bgp-vips';
/**
 * The name of a ConfigMap in the pod's namespace whose `bgp.yaml` (or `bgp.json`) is the pod's BGP
 * section (BgpSchema): the registry bridge puts it in the pod's sidecar.json, and the injector gives
 * such a pod the drain preStop as `flomesh.io/bgp-announcer: "true"` would.
 */
export const BGP_CONFIG_ANNOTATION = 'flomesh.io/bgp-config';
/** The drain hook's path on every sidecar probe port; `?container=NAME` runs that container's own hook afterwards. */
export const BGP_DRAIN_PATH = '/drain/bgp';
/** The app containers' own preStop hooks the injector moved to the sidecar, by container name (AppPreStopsSchema). */
export const APP_PRESTOP_ENV = 'FLB_APP_PRESTOP';
/** cert-manager's CA injector puts the CA of the Certificate this names (namespace/name) into every caBundle of the object. */
export const CERT_MANAGER_INJECT_CA_FROM = 'cert-manager.io/inject-ca-from';
