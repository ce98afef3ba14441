import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { existsSync } from 'node:fs';
import { AppsV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { startControlPlane, type ControlPlane } from '../devenv/controlplane.js';
import { waitForNoLeftovers } from './harness/leftovers.js';
import { eventually } from './harness/eventually.js';

const statusOf = (error: unknown) => (error as { code?: number }).code;

describe('the real Kubernetes control plane', () => {
  let plane: ControlPlane;
  let core: CoreV1Api;
  let apps: AppsV1Api;
  let startMs: number;

  beforeAll(async () => {
    const started = Date.now();
    plane = await startControlPlane();
    startMs = Date.now() - started;
    core = plane.kubeConfig.makeApiClient(CoreV1Api);
    apps = plane.kubeConfig.makeApiClient(AppsV1Api);
  });
  afterAll(async () => {
    await plane?.stop();
  });

  it('starts from the build cache in seconds', () => {
    console.log(`control plane ready in ${startMs} ms`);
    expect(startMs).toBeLessThan(60_000);
  });

  it('stores a Deployment whose pods the controller manager creates, and a bare pod', async () => {
    await core.createNamespace({ body: { metadata: { name: 'shop', labels: { 'flomesh.io/inject': 'enabled' } } } });
    // Pods are refused until the ServiceAccount controller has made the namespace's `default` account.
    await eventually('the default ServiceAccount in shop', () => core.readNamespacedServiceAccount({ name: 'default', namespace: 'shop' }));

    await apps.createNamespacedDeployment({
      namespace: 'shop',
      body: {
        metadata: { name: 'orders' },
        spec: {
          replicas: 2,
          selector: { matchLabels: { app: 'orders' } },
          template: {
            metadata: { labels: { app: 'orders' } },
            spec: { containers: [{ name: 'app', image: 'example/orders:1.0', ports: [{ containerPort: 8080 }] }] },
          },
        },
      },
    });
    const bare: V1Pod = {
      metadata: { name: 'debug', labels: { role: 'debug' } },
      spec: { containers: [{ name: 'shell', image: 'busybox:1.36', command: ['sleep', 'infinity'] }] },
    };
    await core.createNamespacedPod({ namespace: 'shop', body: bare });

    const deploymentPods = await eventually('two pods of the orders Deployment', async () => {
      const pods = await core.listNamespacedPod({ namespace: 'shop', labelSelector: 'app=orders' });
      return pods.items.length === 2 ? pods.items : undefined;
    });
    for (const pod of deploymentPods) {
      expect(pod.metadata?.generateName).toMatch(/^orders-[a-z0-9]+-$/);
      expect(pod.metadata?.ownerReferences?.[0]?.kind).toBe('ReplicaSet');
      expect(pod.spec?.containers[0]?.image).toBe('example/orders:1.0');
      expect(pod.spec?.serviceAccountName).toBe('default');
    }

    const readBack = await core.readNamespacedPod({ name: 'debug', namespace: 'shop' });
    expect(readBack.metadata?.labels).toEqual({ role: 'debug' });
    expect(readBack.spec?.containers[0]?.command).toEqual(['sleep', 'infinity']);
    // No scheduler or kubelet: pods are stored, not run.
    expect(readBack.status?.phase).toBe('Pending');
    const deployment = await apps.readNamespacedDeployment({ name: 'orders', namespace: 'shop' });
    expect(deployment.spec?.replicas).toBe(2);
    expect(deployment.status?.replicas).toBe(2);
  });

  it('deletes a namespace and everything in it', async () => {
    await core.deleteNamespace({ name: 'shop' });
    await eventually('namespace shop to be gone', async () => {
      try {
        await core.readNamespace({ name: 'shop' });
        return undefined;
      } catch (error) {
        if (statusOf(error) === 404) return true;
        throw error;
      }
    });
    const left = await core.listNamespacedPod({ namespace: 'shop' });
    expect(left.items).toEqual([]);
  });

  it('stops cleanly: no process and no folder left', async () => {
    const dir = plane.dir;
    const pids = plane.processes.map((p) => p.pid);
    expect(pids).toHaveLength(3);
    await plane.stop();
    for (const p of plane.processes) expect(p.isRunning()).toBe(false);
    expect(existsSync(dir)).toBe(false);
    expect(await waitForNoLeftovers(dir, 1000)).toEqual({ processes: [], dirExists: false });
  });
});
