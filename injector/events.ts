// The Kubernetes Events an admission review raises, built so that a forged review cannot put its
// own text anywhere: they go on the pod's controller (a ReplicaSet, StatefulSet, ...), which the
// recorder (common/kube-events.ts) looks up and checks by uid before raising anything, and their
// messages are made of our own words plus names that passed Kubernetes' name rules.
//
// A pod without a controller gets no Event. At admission it does not exist yet, so nothing in the
// review can be checked against the cluster, and whoever created a bare pod already sees every
// outcome: a refusal and its warnings come back in the API response (kubectl prints them), an
// injection shows on the pod (flomesh.io/sidecar-status). Controller-made pods are the ones whose
// outcome nobody sees, and those always have a controller to verify.
import type { V1Pod } from '@kubernetes/client-node';
import { isDnsSubdomain, type EventSubject, type KubeEvent } from '../common/kube-events.js';
import type { InjectionResult } from './inject.js';
import { SKIP_REASONS } from './policy.js';

export interface ReviewedPod {
  /** The namespace of the request (the apiserver's word, not the object's). */
  namespace: string;
  pod: V1Pod;
  result: InjectionResult;
}

/** The Events for one admission outcome; their `subject` is undefined when the pod has no controller. */
export function admissionEvents({ namespace, pod, result }: ReviewedPod): KubeEvent[] {
  const subject = controllerOf(pod, namespace);
  const name = podName(pod);
  switch (result.action) {
    case 'inject': {
      const events: KubeEvent[] = [
        { subject, type: 'Normal', reason: 'SidecarInjected', message: `flb-mesh sidecar injected into ${name} (${result.because})` },
      ];
      // Built by the injector from the namespace object the cluster holds, never from the review.
      if (result.podSecurityConflict) events.push({ subject, type: 'Warning', reason: 'PodSecurityConflict', message: result.podSecurityConflict });
      return events;
    }
    case 'skip':
      // The apiserver's second call after our own patch (reinvocation) is no news to anyone, and
      // would spend half of the namespace's Events.
      if (result.reason === 'already-injected') return [];
      return [
        { subject, type: 'Normal', reason: 'SidecarInjectionSkipped', message: `${name} not injected: ${result.reason} (${SKIP_REASONS[result.reason]})` },
      ];
    case 'deny':
      // The denial's text quotes the pod's own values; the Event says what is wrong in our words.
      // The controller's FailedCreate Event carries the apiserver's full answer.
      return [
        {
          subject,
          type: 'Warning',
          reason: 'SidecarInjectionRefused',
          message: `${name} refused by the flb-mesh injector: ${result.problem} (the FailedCreate Event of ${subject?.kind} ${subject?.name} has the details)`,
        },
      ];
  }
}

/** The pod's controller as an Event subject: in the request's namespace, its names well formed. */
function controllerOf(pod: V1Pod, namespace: string): EventSubject | undefined {
  // A pod that says it is in another namespace than the request is not what the apiserver sent.
  if (pod.metadata?.namespace !== undefined && pod.metadata.namespace !== namespace) return undefined;
  // The admission shape check does not cover ownerReferences: anything may be here.
  const references: unknown = pod.metadata?.ownerReferences;
  if (!Array.isArray(references)) return undefined;
  const owner: unknown = references.find((o: unknown) => typeof o === 'object' && o !== null && (o as { controller?: unknown }).controller === true);
  if (!owner) return undefined;
  const { apiVersion, kind, name, uid } = owner as Record<string, unknown>;
  if (typeof apiVersion !== 'string' || typeof kind !== 'string' || typeof name !== 'string' || typeof uid !== 'string') return undefined;
  return { apiVersion, kind, namespace, name, uid };
}

/** The pod's name, or its generateName and `*` (controllers' pods have no name yet), when well formed. */
function podName(pod: V1Pod): string {
  const { name, generateName } = pod.metadata ?? {};
  if (isDnsSubdomain(name)) return `pod ${name}`;
  if (typeof generateName === 'string' && generateName.length <= 253 && isDnsSubdomain(generateName.replace(/-+$/, ''))) return `pod ${generateName}*`;
  return 'a pod';
}
