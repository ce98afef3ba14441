import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync, chmodSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppsV1Api, AuthenticationV1Api, CoordinationV1Api, CoreV1Api, DiscoveryV1Api, type V1Pod } from '@kubernetes/client-node';
import { createLogger } from '../common/log.js';
import { startDevEnvironment, type DevEnvironment } from '../devenv/environment.js';
import { DEMO_IMAGE } from '../devenv/node-simulator/images.js';
import { eventually } from './harness/eventually.js';
import { requireRoot } from './harness/netns.js';

function httpGet(host: string, port: number, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, timeout: 3000, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

const NS = 'sim';
const condition = (pod: V1Pod | undefined, type: string) => pod?.status?.conditions?.find((c) => c.type === type)?.status;

describe('the node simulator runs pods for real', () => {
  let env: DevEnvironment;
  let core: CoreV1Api;
  let apps: AppsV1Api;
  let shared: string;
  const log = createLogger('node-simulator-test');

  beforeAll(async () => {
    requireRoot('the node simulator');
    env = await startDevEnvironment({
      log,
      nodes: [
        { name: 'sim-a', zone: 'zone-a' },
        { name: 'sim-b', zone: 'zone-b' },
      ],
      backoffBaseMs: 500,
    });
    core = env.plane.kubeConfig.makeApiClient(CoreV1Api);
    apps = env.plane.kubeConfig.makeApiClient(AppsV1Api);
    await core.createNamespace({ body: { metadata: { name: NS } } });
    await eventually('the default ServiceAccount', () => core.readNamespacedServiceAccount({ name: 'default', namespace: NS }));
    shared = mkdtempSync(join(tmpdir(), 'flb-sim-test-'));
    chmodSync(shared, 0o777);
  });
  afterAll(async () => {
    await env?.stop();
    if (shared) rmSync(shared, { recursive: true, force: true });
  });

  const read = (name: string) => core.readNamespacedPod({ name, namespace: NS });

  it('registers its nodes with zone labels and keeps their leases renewed', async () => {
    const nodes = await core.listNode();
    expect(nodes.items.map((n) => [n.metadata?.name, n.metadata?.labels?.['topology.kubernetes.io/zone']]).sort()).toEqual([
      ['sim-a', 'zone-a'],
      ['sim-b', 'zone-b'],
    ]);
    expect(nodes.items.every((n) => n.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True')).toBe(true);
    const coordination = env.plane.kubeConfig.makeApiClient(CoordinationV1Api);
    const lease = await coordination.readNamespacedLease({ name: 'sim-a', namespace: 'kube-node-lease' });
    expect(lease.spec?.holderIdentity).toBe('sim-a');
  });

  it('runs init containers in order, a native sidecar until its startup probe passes, then the app, with the downward API and volumes', async () => {
    await core.createNamespacedPod({
      namespace: NS,
      body: {
        metadata: { name: 'ordered', labels: { app: 'ordered' } },
        spec: {
          volumes: [{ name: 'work', emptyDir: {} }],
          initContainers: [
            {
              name: 'prepare',
              image: DEMO_IMAGE,
              command: ['sh', '-c', 'sleep 0.3; echo prepared > /var/lib/flb-sim-work/prepared'],
              volumeMounts: [{ name: 'work', mountPath: '/var/lib/flb-sim-work' }],
            },
            {
              name: 'helper',
              image: DEMO_IMAGE,
              restartPolicy: 'Always',
              args: ['echo', '--port', '9000'],
              // Listening takes a moment: the app must not start before this passes.
              startupProbe: { httpGet: { path: '/healthz', port: 9000 }, periodSeconds: 1 },
            },
          ],
          containers: [
            {
              name: 'app',
              image: DEMO_IMAGE,
              args: ['echo'],
              env: [{ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
              ports: [{ name: 'http', containerPort: 8080 }],
              volumeMounts: [{ name: 'work', mountPath: '/var/lib/flb-sim-work', readOnly: true }],
              readinessProbe: { exec: { command: ['cat', '/var/lib/flb-sim-work/prepared'] }, periodSeconds: 1 },
            },
          ],
        },
      },
    });
    const pod = await eventually('pod ordered Ready', async () => {
      const p = await read('ordered');
      return condition(p, 'Ready') === 'True' ? p : undefined;
    });
    const [prepare, helper] = pod.status!.initContainerStatuses!;
    const app = pod.status!.containerStatuses![0]!;
    expect(prepare!.state?.terminated?.exitCode).toBe(0);
    expect(helper!.started).toBe(true);
    const helperStarted = new Date(helper!.state!.running!.startedAt!).getTime();
    expect(new Date(prepare!.state!.terminated!.finishedAt!).getTime()).toBeLessThanOrEqual(helperStarted + 1000);
    expect(new Date(app.state!.running!.startedAt!).getTime()).toBeGreaterThanOrEqual(helperStarted);
    expect(pod.status!.podIP).toMatch(/^10\.\d+\.\d+\.\d+$/);
    // The app answers on the pod's own address, with the name the downward API gave it.
    const answer = await eventually('the app answering', () => httpGet(pod.status!.podIP!, 8080));
    expect(JSON.parse(answer.body).pod).toBe('ordered');
  });

  it('mounts a projected ServiceAccount token for the audience asked, which the apiserver accepts', async () => {
    await core.createNamespacedPod({
      namespace: NS,
      body: {
        metadata: { name: 'tokened' },
        spec: {
          volumes: [{ name: 'token', projected: { sources: [{ serviceAccountToken: { audience: 'flb-repo', expirationSeconds: 3600, path: 'token' } }] } }],
          containers: [
            {
              name: 'app',
              image: DEMO_IMAGE,
              command: ['sh', '-c', `cp /var/run/secrets/tokens/token ${shared}/token; exec sleep 600`],
              securityContext: { runAsUser: 1500, runAsGroup: 1500 },
              volumeMounts: [{ name: 'token', mountPath: '/var/run/secrets/tokens' }],
            },
          ],
        },
      },
    });
    const token = await eventually('the token copied out by the container', async () => {
      try {
        return readFileSync(join(shared, 'token'), 'utf8') || undefined;
      } catch {
        return undefined;
      }
    });
    const auth = env.plane.kubeConfig.makeApiClient(AuthenticationV1Api);
    const review = await auth.createTokenReview({ body: { spec: { token, audiences: ['flb-repo'] } } });
    expect(review.status?.authenticated).toBe(true);
    expect(review.status?.user?.username).toBe(`system:serviceaccount:${NS}:default`);
    expect(review.status?.user?.extra?.['authentication.kubernetes.io/pod-name']).toEqual(['tokened']);
  });

  it('writes the status the controller manager turns into EndpointSlices, with each node zone', async () => {
    await apps.createNamespacedDeployment({
      namespace: NS,
      body: {
        metadata: { name: 'echo' },
        spec: {
          replicas: 2,
          selector: { matchLabels: { app: 'echo' } },
          template: {
            metadata: { labels: { app: 'echo' } },
            spec: {
              containers: [
                {
                  name: 'echo',
                  image: DEMO_IMAGE,
                  args: ['echo'],
                  ports: [{ name: 'http', containerPort: 8080 }],
                  readinessProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 1 },
                },
              ],
            },
          },
        },
      },
    });
    await core.createNamespacedService({
      namespace: NS,
      body: { metadata: { name: 'echo' }, spec: { selector: { app: 'echo' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] } },
    });
    const discovery = env.plane.kubeConfig.makeApiClient(DiscoveryV1Api);
    const endpoints = await eventually('two ready endpoints for echo', async () => {
      const slices = await discovery.listNamespacedEndpointSlice({ namespace: NS, labelSelector: 'kubernetes.io/service-name=echo' });
      const ready = slices.items.flatMap((s) => s.endpoints ?? []).filter((e) => e.conditions?.ready);
      return ready.length === 2 ? ready : undefined;
    });
    expect(endpoints.map((e) => e.zone).sort()).toEqual(['zone-a', 'zone-b']);
  });

  it('fails a pod whose image it does not have, with the reason, as a kubelet would', async () => {
    await core.createNamespacedPod({
      namespace: NS,
      body: { metadata: { name: 'no-image' }, spec: { containers: [{ name: 'app', image: 'example/missing:1.0' }] } },
    });
    const waiting = await eventually('ErrImagePull', async () => {
      const state = (await read('no-image')).status?.containerStatuses?.[0]?.state?.waiting;
      return state && /ErrImagePull|ImagePullBackOff/.test(state.reason ?? '') ? state : undefined;
    });
    expect(waiting.message).toMatch(/example\/missing:1\.0/);
    expect((await read('no-image')).status?.phase).toBe('Pending');
  });

  it('on delete runs preStop hooks and stops app containers before native sidecars, then frees the name', async () => {
    const record = (who: string) => ({ exec: { command: ['sh', '-c', `echo ${who} >> ${shared}/order`] } });
    await core.createNamespacedPod({
      namespace: NS,
      body: {
        metadata: { name: 'stopping' },
        spec: {
          terminationGracePeriodSeconds: 10,
          initContainers: [
            {
              name: 'first-sidecar',
              image: DEMO_IMAGE,
              restartPolicy: 'Always',
              command: ['sh', '-c', `trap 'echo first-sidecar-term >> ${shared}/order; exit 0' TERM; while true; do sleep 0.1; done`],
              lifecycle: { preStop: record('first-sidecar-prestop') },
            },
            {
              name: 'second-sidecar',
              image: DEMO_IMAGE,
              restartPolicy: 'Always',
              command: ['sh', '-c', `trap 'echo second-sidecar-term >> ${shared}/order; exit 0' TERM; while true; do sleep 0.1; done`],
              lifecycle: { preStop: record('second-sidecar-prestop') },
            },
          ],
          containers: [
            {
              name: 'app',
              image: DEMO_IMAGE,
              command: ['sh', '-c', `trap 'echo app-term >> ${shared}/order; exit 0' TERM; while true; do sleep 0.1; done`],
              lifecycle: { preStop: record('app-prestop') },
            },
          ],
        },
      },
    });
    await eventually('pod stopping Ready', async () => (condition(await read('stopping'), 'Ready') === 'True' ? true : undefined));
    await core.deleteNamespacedPod({ name: 'stopping', namespace: NS });
    await eventually(
      'the pod gone from the API',
      async () => {
        try {
          await read('stopping');
          return undefined;
        } catch (error) {
          return (error as { code?: number }).code === 404 ? true : undefined;
        }
      },
      30_000,
    );
    const order = readFileSync(join(shared, 'order'), 'utf8').trim().split('\n');
    expect(order).toEqual(['app-prestop', 'app-term', 'second-sidecar-prestop', 'second-sidecar-term', 'first-sidecar-prestop', 'first-sidecar-term']);
  });
});
