import type { V1Namespace, V1Pod } from '@kubernetes/client-node';
import { INJECT_LABEL, NAMESPACE_INJECT_DISABLED, NAMESPACE_INJECT_ENABLED, SIDECAR_STATUS_ANNOTATION, type Mesh } from '../common/contract/index.js';
import { SYSTEM_NAMESPACES } from '../common/kube-events.js';

export { SYSTEM_NAMESPACES };

/** Every reason a pod is not injected; users see it in Events, metrics and `flb inject --explain`. */
export const SKIP_REASONS = {
  'host-network': "the pod uses the host network; a sidecar would capture the node's traffic",
  'system-namespace': 'pods in kube-system, kube-public and kube-node-lease are never injected',
  'mesh-namespace': "pods in the mesh's own namespace are never injected",
  'pod-label-disabled': `the pod is labelled ${INJECT_LABEL}=false`,
  'pod-annotation-disabled': `the pod is annotated ${INJECT_LABEL}: "false"`,
  'namespace-disabled': `the namespace is labelled ${INJECT_LABEL}=${NAMESPACE_INJECT_DISABLED} and the pod does not opt in`,
  'namespace-not-enabled': `neither the namespace (${INJECT_LABEL}=${NAMESPACE_INJECT_ENABLED}) nor the pod (${INJECT_LABEL}=true) asks for injection`,
  'already-injected': `the pod already has a sidecar (${SIDECAR_STATUS_ANNOTATION}) and nothing new to rewrite`,
} as const;
export type SkipReason = keyof typeof SKIP_REASONS;

export type PolicyDecision =
  | { inject: true; because: string }
  | { inject: false; reason: SkipReason }
  /** `problem` says what is wrong in our own words only (`error` quotes the value). */
  | { inject: false; error: string; problem: string };

/**
 * Whether a pod gets a sidecar. The pod's label wins over its namespace's; the same key as an
 * annotation is honoured when there is no label (webhook objectSelectors see labels only, so the
 * label is what users should set). Values other than true/false are errors, never a silent default.
 */
export function decide(pod: V1Pod, namespace: V1Namespace | undefined, mesh: Mesh): PolicyDecision {
  const nsName = pod.metadata?.namespace ?? namespace?.metadata?.name ?? 'default';
  if (SYSTEM_NAMESPACES.includes(nsName)) return { inject: false, reason: 'system-namespace' };
  if (nsName === mesh.controlPlaneNamespace) return { inject: false, reason: 'mesh-namespace' };
  if (pod.spec?.hostNetwork) return { inject: false, reason: 'host-network' };

  const label = pod.metadata?.labels?.[INJECT_LABEL];
  const annotation = pod.metadata?.annotations?.[INJECT_LABEL];
  const podChoice = label ?? annotation;
  const source = label !== undefined ? 'label' : 'annotation';
  if (podChoice !== undefined) {
    if (podChoice === 'true') return { inject: true, because: `pod ${source} ${INJECT_LABEL}=true` };
    if (podChoice === 'false') return { inject: false, reason: source === 'label' ? 'pod-label-disabled' : 'pod-annotation-disabled' };
    return {
      inject: false,
      error: `pod ${source} ${INJECT_LABEL} must be "true" or "false", not ${JSON.stringify(podChoice)}`,
      problem: `pod ${source} ${INJECT_LABEL} is neither "true" nor "false"`,
    };
  }

  const nsChoice = namespace?.metadata?.labels?.[INJECT_LABEL];
  if (nsChoice === NAMESPACE_INJECT_ENABLED) return { inject: true, because: `namespace label ${INJECT_LABEL}=${NAMESPACE_INJECT_ENABLED}` };
  if (nsChoice === NAMESPACE_INJECT_DISABLED) return { inject: false, reason: 'namespace-disabled' };
  if (nsChoice !== undefined) {
    return {
      inject: false,
      error: `namespace ${nsName} label ${INJECT_LABEL} must be "${NAMESPACE_INJECT_ENABLED}" or "${NAMESPACE_INJECT_DISABLED}", not ${JSON.stringify(nsChoice)}`,
      problem: `namespace label ${INJECT_LABEL} is neither "${NAMESPACE_INJECT_ENABLED}" nor "${NAMESPACE_INJECT_DISABLED}"`,
    };
  }
  return { inject: false, reason: 'namespace-not-enabled' };
}
