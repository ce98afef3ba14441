import { afterEach, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CoreV1Api, V1Pod } from '@kubernetes/client-node';
import { createLogger } from '../../common/log.js';
import type { PodNetwork } from '../pod-network.js';
import { PodWorker, type PodWorkerContext } from './pod-worker.js';

const pod: V1Pod = { metadata: { name: 'p', namespace: 'n', uid: 'uid-1' }, spec: { containers: [] } };

describe('a pod worker', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  const worker = () => {
    const dir = mkdtempSync(join(tmpdir(), 'flb-pod-worker-test-'));
    dirs.push(dir);
    let statusWrites = 0;
    const core = {
      patchNamespacedPodStatus: () => {
        statusWrites++;
        return Promise.resolve(pod);
      },
      deleteNamespacedPod: () => Promise.resolve({}),
    } as unknown as CoreV1Api;
    const network = {
      addPod: () => Promise.resolve({ id: 'uid-1', netns: 'ns', netnsPath: '/var/run/netns/ns', ip: '10.200.1.2' }),
      removePod: () => Promise.resolve(),
    } as unknown as PodNetwork;
    const context: PodWorkerContext = {
      core,
      network,
      nodeName: 'node-a',
      nodeIp: '10.200.0.1',
      allocatable: { cpu: '2', memory: '8Gi' },
      apiserver: { host: '10.200.0.1', port: 6443 },
      clusterDns: { nameserver: '10.200.0.1', domain: 'cluster.local' },
      backoffBaseMs: 1000,
      backoffMaxMs: 10_000,
      log: createLogger('pod-worker-test', 'silent'),
      dir,
    };
    return { worker: new PodWorker(pod, context), statusWrites: () => statusWrites };
  };

  // A pod deleted with gracePeriodSeconds 0 reaches the watch as an update with its
  // deletionTimestamp and, at once, as a delete: the graceful termination and the kill overlap.
  it('finishes a termination that a kill overtook while its last status write was pending', async () => {
    const { worker: podWorker, statusWrites } = worker();
    podWorker.start();
    const deadline = Date.now() + 5000;
    while (statusWrites() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(statusWrites()).toBeGreaterThan(0);

    podWorker.update({ ...pod, metadata: { ...pod.metadata, deletionTimestamp: new Date(), deletionGracePeriodSeconds: 0 } });
    // The termination has stopped the containers and waits for its status write (a 10 ms timer)...
    await new Promise((r) => setImmediate(r));
    // ...when the delete arrives.
    await podWorker.kill();
    const outcome = await Promise.race([podWorker.done.then(() => 'terminated'), new Promise((r) => setTimeout(() => r('still waiting after 1 s'), 1000))]);
    expect(outcome).toBe('terminated');
  });
});
