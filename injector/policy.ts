// Whether a pod gets a sidecar, decided exactly as the webhook configuration (webhook-config.ts)
// lets the apiserver decide which pods it sends us at all, so that `flb inject --explain` never
// promises what the cluster will not do. The configuration can select on labels only (an
// objectSelector cannot see annotations), so:
// - a namespace labelled flomesh.io/inject=enabled sends every pod not labelled "false";
// - any other namespace (unlabelled, "disabled", or a value we do not know) sends only pods
//   labelled flomesh.io/inject=true.
// The same key as an annotation is read only for pods the apiserver sends: "false" opts out, as a
// label would (manifests written for annotation-based meshes keep working); it can never opt a pod
// in, and saying so is a skip reason of its own.
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
  'pod-annotation-opt-in': `the pod asks for a sidecar with the annotation ${INJECT_LABEL}: "true", which the webhook cannot see (it selects pods by label); label the pod ${INJECT_LABEL}=true instead`,
  'namespace-disabled': `the namespace is labelled ${INJECT_LABEL}=${NAMESPACE_INJECT_DISABLED} and the pod is not labelled ${INJECT_LABEL}=true`,
  'namespace-not-enabled': `neither the namespace (${INJECT_LABEL}=${NAMESPACE_INJECT_ENABLED}) nor the pod (label ${INJECT_LABEL}=true) asks for injection`,
  'already-injected': `the pod already has a sidecar (${SIDECAR_STATUS_ANNOTATION}) and nothing new to rewrite`,
} as const;
export type SkipReason = keyof typeof SKIP_REASONS;

/** A pod label or annotation the injector cannot accept; the pod is refused naming every one. */
export interface InvalidSetting {
  kind: 'label' | 'annotation';
  /** The label or annotation key: one of ours, so it is safe to repeat in Events. */
  key: string;
  /** What is wrong, quoting the value: for whoever wrote it (the admission answer, `flb inject`). */
  message: string;
  /** What is wrong in our own words only, without the value: for Events, which anyone could otherwise fill. */
  problem: string;
}

export type PolicyDecision =
  | { inject: true; because: string }
  | { inject: false; reason: SkipReason; warnings: string[] }
  /** The pod would be injected, but its own labels or annotations say something we cannot accept. */
  | { inject: false; invalid: InvalidSetting[] };

const BECAUSE_POD_LABEL: PolicyDecision = Object.freeze({ inject: true, because: `pod label ${INJECT_LABEL}=true` });
const BECAUSE_NAMESPACE_LABEL: PolicyDecision = Object.freeze({ inject: true, because: `namespace label ${INJECT_LABEL}=${NAMESPACE_INJECT_ENABLED}` });

const skip = (reason: SkipReason, warnings: string[] = []): PolicyDecision => ({ inject: false, reason, warnings });

export function decide(pod: V1Pod, namespace: V1Namespace | undefined, mesh: Mesh): PolicyDecision {
  const nsName = pod.metadata?.namespace ?? namespace?.metadata?.name ?? 'default';
  if (SYSTEM_NAMESPACES.includes(nsName)) return skip('system-namespace');
  if (nsName === mesh.controlPlaneNamespace) return skip('mesh-namespace');

  const label = pod.metadata?.labels?.[INJECT_LABEL];
  const annotation = pod.metadata?.annotations?.[INJECT_LABEL];
  const nsLabel = namespace?.metadata?.labels?.[INJECT_LABEL];
  if (label === 'false') return skip('pod-label-disabled');

  if (nsLabel !== NAMESPACE_INJECT_ENABLED && label !== 'true') {
    // The apiserver never sends us this pod: it is created as it is, whatever else it says.
    const warnings: string[] = [];
    if (label !== undefined) warnings.push(`pod label ${INJECT_LABEL}=${JSON.stringify(label)} is neither "true" nor "false", so it does not opt the pod in`);
    if (nsLabel !== undefined && nsLabel !== NAMESPACE_INJECT_DISABLED) {
      warnings.push(
        `namespace label ${INJECT_LABEL}=${JSON.stringify(nsLabel)} is neither "${NAMESPACE_INJECT_ENABLED}" nor "${NAMESPACE_INJECT_DISABLED}": the webhook treats the namespace as not enabled`,
      );
    }
    if (label === undefined && annotation === 'true') return skip('pod-annotation-opt-in', warnings);
    return skip(nsLabel === NAMESPACE_INJECT_DISABLED ? 'namespace-disabled' : 'namespace-not-enabled', warnings);
  }

  if (pod.spec?.hostNetwork) return skip('host-network');
  if (label === 'true') return BECAUSE_POD_LABEL;
  if (label !== undefined) {
    return {
      inject: false,
      invalid: [
        {
          kind: 'label',
          key: INJECT_LABEL,
          message: `pod label ${INJECT_LABEL} must be "true" or "false", not ${JSON.stringify(label)}`,
          problem: `pod label ${INJECT_LABEL} is neither "true" nor "false"`,
        },
      ],
    };
  }
  if (annotation === 'false') return skip('pod-annotation-disabled');
  if (annotation !== undefined && annotation !== 'true') {
    return {
      inject: false,
      invalid: [
        {
          kind: 'annotation',
          key: INJECT_LABEL,
          message: `pod annotation ${INJECT_LABEL} must be "true" or "false", not ${JSON.stringify(annotation)}`,
          problem: `pod annotation ${INJECT_LABEL} is neither "true" nor "false"`,
        },
      ],
    };
  }
  return BECAUSE_NAMESPACE_LABEL;
}
