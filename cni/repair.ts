/*
 * The node-local repair loop: pods on this node whose in-pod validation (flb-validation) failed
 * started without their interception rules, usually because they were scheduled before the CNI
 * plugin was installed. A pod that a controller will recreate is deleted (its replacement gets the
 * rules); any other pod is labelled and gets an Event, so users can find it.
 */
import type { CoreV1Api } from '@kubernetes/client-node';
import { PatchStrategy, setHeaderOptions, type V1Pod } from '@kubernetes/client-node';
import type { Logger } from '../common/log.js';
import { INTERCEPTION_ANNOTATION, VALIDATION_CONTAINER_NAME } from '../common/contract/index.js';

export const REPAIR_LABEL = 'flomesh.io/cni-repair';

export type RepairMode = 'delete' | 'label';

/** Why the pod needs repair, or undefined when it does not. */
export function brokenInterception(pod: V1Pod): string | undefined {
  if (pod.metadata?.deletionTimestamp) return undefined;
  const status = pod.status?.initContainerStatuses?.find((s) => s.name === VALIDATION_CONTAINER_NAME);
  if (!status) return undefined;
  for (const state of [status.state, status.lastState]) {
    const code = state?.terminated?.exitCode;
    if (code !== undefined && code !== 0) return `${VALIDATION_CONTAINER_NAME} exited with ${code}: traffic interception is not in place`;
  }
  return undefined;
}

function podInEbpfMode(pod: V1Pod): boolean {
  try {
    return (JSON.parse(pod.metadata?.annotations?.[INTERCEPTION_ANNOTATION] ?? '{}') as { mode?: unknown }).mode === 'ebpf';
  } catch {
    return false;
  }
}

export interface RepairOptions {
  core: CoreV1Api;
  nodeName: string;
  mode: RepairMode;
  log: Logger;
  /** Why eBPF interception cannot run on this node, when the agent found out; its eBPF pods are then labelled, not deleted. */
  ebpfUnavailable?: () => string | undefined;
}

export async function repairPass(options: RepairOptions): Promise<{ deleted: string[]; labelled: string[] }> {
  const { core, log } = options;
  const pods = await core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${options.nodeName}` });
  const deleted: string[] = [];
  const labelled: string[] = [];
  for (const pod of pods.items) {
    const brokenBecause = brokenInterception(pod);
    if (!brokenBecause) continue;
    const namespace = pod.metadata!.namespace!;
    const name = pod.metadata!.name!;
    const owned = pod.metadata?.ownerReferences?.some((o) => o.controller) ?? false;
    // Recreated, an eBPF pod would come back to a node that still cannot run eBPF, and fail again.
    const ebpfUnavailable = podInEbpfMode(pod) ? options.ebpfUnavailable?.() : undefined;
    const reason = ebpfUnavailable ? `${brokenBecause}; eBPF interception is not available on this node (${ebpfUnavailable})` : brokenBecause;
    try {
      if (options.mode === 'delete' && owned && !ebpfUnavailable) {
        await core.deleteNamespacedPod({ name, namespace });
        deleted.push(`${namespace}/${name}`);
        log.info({ pod: `${namespace}/${name}`, reason }, 'deleted a pod without interception rules; its controller recreates it');
      } else if (pod.metadata?.labels?.[REPAIR_LABEL] !== 'broken') {
        await core.patchNamespacedPod(
          { name, namespace, body: { metadata: { labels: { [REPAIR_LABEL]: 'broken' } } } },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
        );
        labelled.push(`${namespace}/${name}`);
        log.warn({ pod: `${namespace}/${name}`, reason }, 'labelled a pod without interception rules');
      } else {
        continue;
      }
      const now = new Date();
      await core
        .createNamespacedEvent({
          namespace,
          body: {
            metadata: { generateName: 'flb-cni-repair-' },
            involvedObject: { apiVersion: 'v1', kind: 'Pod', name, namespace, uid: pod.metadata?.uid },
            type: 'Warning',
            reason: 'InterceptionMissing',
            message: `${reason}; ${deleted.includes(`${namespace}/${name}`) ? 'deleted so that its controller recreates it with the rules' : `labelled ${REPAIR_LABEL}=broken: delete it to recreate it with the rules`}`,
            source: { component: 'flb-cni-agent', host: options.nodeName },
            firstTimestamp: now,
            lastTimestamp: now,
            count: 1,
          },
        })
        .catch((error: unknown) => log.warn({ err: error }, 'could not record the repair Event'));
    } catch (error) {
      log.warn({ err: error, pod: `${namespace}/${name}` }, 'repair failed; will retry');
    }
  }
  return { deleted, labelled };
}
