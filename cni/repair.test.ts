import { describe, expect, it } from '@jest/globals';
import type { CoreV1Api, V1Pod } from '@kubernetes/client-node';
import { createLogger } from '../common/log.js';
import { repairPass } from './repair.js';

/** A pod of a Deployment whose flb-validation failed, in the given interception mode. */
const failedPod = (name: string, mode: string): V1Pod => ({
  metadata: {
    name,
    namespace: 'shop',
    uid: `uid-${name}`,
    annotations: { 'flomesh.io/interception': JSON.stringify({ version: 1, mode }) },
    ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-1', uid: 'rs', controller: true }],
  },
  status: {
    initContainerStatuses: [{ name: 'flb-validation', ready: false, restartCount: 1, image: 'x', imageID: 'x', state: { terminated: { exitCode: 1 } } }],
  },
});

/** The calls the repair loop makes, recorded. */
function fakeApi(pods: V1Pod[]) {
  const calls = { deleted: [] as string[], labelled: [] as string[], events: [] as string[] };
  const core = {
    listPodForAllNamespaces: async () => ({ items: pods }),
    deleteNamespacedPod: async ({ name }: { name: string }) => void calls.deleted.push(name),
    patchNamespacedPod: async ({ name }: { name: string }) => void calls.labelled.push(name),
    createNamespacedEvent: async ({ body }: { body: { message: string } }) => void calls.events.push(body.message),
  };
  return { core: core as unknown as CoreV1Api, calls };
}

describe('the repair loop', () => {
  const log = createLogger('repair-test', 'silent');

  it('labels an eBPF pod, not deletes it, on a node that cannot run eBPF: its replacement would fail the same way', async () => {
    const { core, calls } = fakeApi([failedPod('ebpf-web', 'ebpf'), failedPod('cni-web', 'cni')]);
    const outcome = await repairPass({ core, nodeName: 'n1', mode: 'delete', log, ebpfUnavailable: () => 'missing bpftool' });
    expect(outcome).toEqual({ deleted: ['shop/cni-web'], labelled: ['shop/ebpf-web'] });
    expect(calls.events.find((m) => m.includes('eBPF'))).toContain('eBPF interception is not available on this node (missing bpftool)');
  });

  it('deletes an eBPF pod whose controller recreates it while eBPF runs on the node (it started before the agent)', async () => {
    const { core, calls } = fakeApi([failedPod('ebpf-web', 'ebpf')]);
    await repairPass({ core, nodeName: 'n1', mode: 'delete', log, ebpfUnavailable: () => undefined });
    expect(calls).toMatchObject({ deleted: ['ebpf-web'], labelled: [] });
  });
});
