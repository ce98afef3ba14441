/**
 * Labels and annotations users and parts of the mesh read and write (ARCHITECTURE.md, 'Defaults').
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
