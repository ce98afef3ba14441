/*
 * The BGP announcer as a user deploys it: a Deployment whose pod is annotated
 * flomesh.io/bgp-announcer, flomesh.io/bgp-config (a ConfigMap holding the bgp section) and
 * flomesh.io/bgp-vips, on the node simulator with the control plane running (injector, repo,
 * registry bridge). A real BIRD on the node's side of the pod network (the bridge's gateway)
 * accepts any pod of the network (`neighbor range`). What a user checks: the section reached the
 * pod's sidecar through the bridge (nothing else gives it), the VIP is on the pod's lo, BIRD holds
 * the VIP with the pod's IP as next hop while the app is ready, and not while it is unready; and
 * deleting the pod runs the preStop drain (/drain/bgp), so BIRD sees GRACEFUL_SHUTDOWN and then the
 * withdrawal before the app is told to stop.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { AppsV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { execa } from 'execa';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BGP_ANNOUNCER_ANNOTATION, BGP_CONFIG_ANNOTATION, BGP_VIPS_ANNOTATION } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { demoDeployment, isPodReady } from '../devenv/apps/workloads.js';
import { startDevEnvironment, type DevEnvironment } from '../devenv/environment.js';
import { startMeshComponents, type MeshComponents } from '../devenv/mesh.js';
import { Bird, requireRouters } from './harness/bird.js';
import { eventually } from './harness/eventually.js';
import { requireRoot } from './harness/netns.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const NS = 'edge';
const VIP = '198.51.100.60';
const BIRD_PORT = 1179;
const DRAIN_SECONDS = 2;
const log = createLogger('bgp-mesh-test', 'silent');

/** An HTTP call to the pod's app (through its sidecar's inbound port, as any client's). */
function call(method: string, url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, timeout: 2000, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: no answer in 2 s`)));
    req.end();
  });
}

describe('a pod announcing its VIP through the mesh, to BIRD', () => {
  let env: DevEnvironment;
  let mesh: MeshComponents;
  let core: CoreV1Api;
  let bird: Bird | undefined;
  let birdDir: string;
  let pod: V1Pod;

  const readyPods = async () => (await core.listNamespacedPod({ namespace: NS, labelSelector: 'app=edge' })).items.filter(isPodReady);
  const podIp = () => pod.status!.podIP!;
  /** BIRD's routes to the VIP, over whichever session it spawned for the pod. */
  const vipRoute = () => bird!.show('route', `${VIP}/32`, 'all');
  const inPod = (command: string, args: string[]) => execa('ip', ['netns', 'exec', env.simulator.netnsOf(NS, pod.metadata!.name!)!, command, ...args]);

  beforeAll(async () => {
    requireRoot('the BGP mesh end-to-end test');
    await requireRouters();
    env = await startDevEnvironment({ log, nodes: [{ name: 'edge-a', zone: 'zone-a' }], backoffBaseMs: 1000 });
    mesh = await startMeshComponents(env);
    core = env.plane.kubeConfig.makeApiClient(CoreV1Api);
    const { gateway, subnet } = env.network;
    birdDir = mkdtempSync(join(tmpdir(), 'flb-bgp-mesh-'));
    // The router on the node's side: any pod of the network may peer, on a port of its own.
    bird = await Bird.start(birdDir, {
      routerId: gateway,
      neighbors: [
        {
          name: 'pods',
          local: gateway,
          localPort: BIRD_PORT,
          localAs: 65000,
          neighbor: `range ${subnet}`,
          remoteAs: 65001,
          holdSeconds: 9,
          families: ['ipv4'],
        },
      ],
    });
    await core.createNamespace({ body: { metadata: { name: NS, labels: { 'flomesh.io/inject': 'enabled' } } } });
    await eventually('the default ServiceAccount', () => core.readNamespacedServiceAccount({ name: 'default', namespace: NS }));
    const section = {
      localAs: 65001,
      routerId: '192.0.2.60',
      holdTimeSeconds: 9,
      connectRetrySeconds: 1,
      drainSeconds: DRAIN_SECONDS,
      peers: [{ address: gateway, port: BIRD_PORT, remoteAs: 65000, addressFamilies: ['ipv4-unicast'] }],
      vips: [{ prefix: `${VIP}/32`, healthCheck: { protocol: 'readiness', intervalMs: 200, healthyThreshold: 1, unhealthyThreshold: 2 } }],
    };
    await core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'edge-bgp' }, data: { 'bgp.json': JSON.stringify(section) } } });
    const deployment = demoDeployment('edge', 1, ['echo'], { name: 'http', containerPort: 8080 });
    deployment.spec!.template.metadata!.annotations = {
      [BGP_ANNOUNCER_ANNOTATION]: 'true',
      [BGP_CONFIG_ANNOTATION]: 'edge-bgp',
      [BGP_VIPS_ANNOTATION]: VIP,
    };
    await env.plane.kubeConfig.makeApiClient(AppsV1Api).createNamespacedDeployment({ namespace: NS, body: deployment });
    pod = await eventually('the pod Ready', async () => (await readyPods())[0], 90_000);
  });

  afterAll(async () => {
    await bird?.stop();
    await mesh?.stop();
    await env?.stop();
    if (birdDir) rmSync(birdDir, { recursive: true, force: true });
  });

  it("the ConfigMap's bgp section reaches the sidecar through the bridge, the VIP is on the pod's lo, and BIRD holds it with the pod's IP as next hop", async () => {
    const route = await eventually('BIRD to hold the VIP', async () => ((await vipRoute()).includes(`${VIP}/32`) ? vipRoute() : undefined), 30_000);
    expect(route).toContain(`via ${podIp()}`);
    expect(route).toMatch(/BGP\.as_path: 65001\s*$/m);
    expect((await inPod('ip', ['-o', 'addr', 'show', 'dev', 'lo'])).stdout).toContain(`inet ${VIP}/32`);
    // The sidecar's own view (its admin port, in the pod): the section from the ConfigMap, the VIP gated by the app's readiness.
    const status = JSON.parse(
      (await inPod(process.execPath, [join(ROOT, 'bin/flb.js'), 'bgp', 'status', '--admin', 'http://127.0.0.1:15000', '-o', 'json'])).stdout,
    ) as {
      routerId: string;
      peers: { peer: string; state: string }[];
      vips: { prefix: string; announced: boolean; lastResult?: { detail: string } }[];
    };
    expect(status.routerId).toBe('192.0.2.60');
    expect(status.peers).toEqual([expect.objectContaining({ peer: `${env.network.gateway}:${BIRD_PORT}`, state: 'Established' })]);
    expect(status.vips).toEqual([expect.objectContaining({ prefix: `${VIP}/32`, announced: true })]);
  });

  it('the app goes unready: the VIP leaves BIRD with the session kept, and returns when the app is ready again', async () => {
    // The protocol BIRD spawned for the pod's session.
    const protocol = /^(\S+)\s+BGP\s+\S+\s+up\s+\S+\s+Established/m.exec(await bird!.protocols())?.[1];
    expect(protocol).toBeDefined();
    const before = await bird!.establishedSince(protocol!);
    expect((await call('POST', `http://${podIp()}:8080/healthz/fail`)).status).toBe(200);
    await eventually('BIRD to drop the VIP', async () => ((await vipRoute()).includes(`${VIP}/32`) ? undefined : true), 10_000, 100);
    await eventually('the pod NotReady', async () => ((await readyPods()).length === 0 ? true : undefined), 10_000);
    expect((await call('POST', `http://${podIp()}:8080/healthz/pass`)).status).toBe(200);
    await eventually('BIRD to hold the VIP again', async () => ((await vipRoute()).includes(`via ${podIp()}`) ? true : undefined), 10_000, 100);
    expect(await bird!.establishedSince(protocol!)).toBeCloseTo(before!, -2);
  });

  it('deleting the pod runs the preStop drain: BIRD sees GRACEFUL_SHUTDOWN, then the withdrawal, before the app is told to stop', async () => {
    await eventually('the pod Ready again', async () => ((await readyPods()).length === 1 ? true : undefined), 10_000);
    const url = `http://${podIp()}:8080/healthz`;
    const started = Date.now();
    await core.deleteNamespacedPod({ name: pod.metadata!.name!, namespace: NS });
    const seen: { graceful?: number; withdrawn?: number; appStopping?: number } = {};
    while (seen.appStopping === undefined && Date.now() - started < 20_000) {
      const route = await vipRoute();
      if (seen.graceful === undefined && route.includes('(65535,0)')) seen.graceful = Date.now() - started;
      if (seen.graceful !== undefined && seen.withdrawn === undefined && !route.includes(`via ${podIp()}`)) seen.withdrawn = Date.now() - started;
      // The echo app answers 'draining' from its SIGTERM on (and nothing once gone).
      const app = await call('GET', url).catch(() => ({ status: 0, body: 'gone' }));
      if (app.body !== 'ok\n') seen.appStopping = Date.now() - started;
      await new Promise((r) => setTimeout(r, 50));
    }
    console.log(
      `pod deleted: GRACEFUL_SHUTDOWN at BIRD after ${seen.graceful} ms, VIP withdrawn after ${seen.withdrawn} ms, the app told to stop after ${seen.appStopping} ms`,
    );
    expect(seen.graceful).toBeDefined();
    expect(seen.withdrawn).toBeGreaterThanOrEqual(seen.graceful! + DRAIN_SECONDS * 1000 - 500);
    expect(seen.appStopping).toBeGreaterThan(seen.withdrawn!);
  });
});
