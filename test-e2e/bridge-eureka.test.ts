import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { API_VERSION, BridgeConfigSchema, type BridgeConfig } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { startControlPlane, type ControlPlane } from '../devenv/controlplane.js';
import { startBridge, type Bridge } from '../registry-bridge/bridge.js';
import { renderBridgeStatus } from '../registry-bridge/status.js';
import { Repo } from '../repo/repo.js';
import { startRepoServer, type RepoServer } from '../repo/server.js';
import { DiskStore } from '../repo/store/disk.js';
import { EurekaRestClient, sharedEurekaServer, type EurekaServer } from './harness/eureka.js';
import { eventually } from './harness/eventually.js';

const log = createLogger('bridge-eureka-test', 'silent');
const CONTROL = 'flomesh';
const ORDERS = 'orders.eureka.eureka';

type Published = {
  hostnames: string[];
  vips: { address: string; allocation: string }[];
  ports: { port: number; protocol: string }[];
  endpoints: { address: string; port: number; healthy: boolean; zone?: string; metadata: Record<string, string> }[];
};

/**
 * In front of the Eureka server, so the test sees which requests the bridge makes (a full /apps or
 * a delta). It forwards every request as it came.
 */
async function recordingProxy(target: number): Promise<{ server: Server; port: number; paths: string[] }> {
  const paths: string[] = [];
  const server = createServer((req, res) => {
    paths.push(req.url ?? '');
    const upstream = request({ host: '127.0.0.1', port: target, path: req.url, method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, paths };
}

describe('the registry bridge reading a real Eureka server into a real repo', () => {
  let plane: ControlPlane;
  let eureka: EurekaServer;
  let client: EurekaRestClient;
  let proxy: Awaited<ReturnType<typeof recordingProxy>>;
  let dir: string;
  let repo: Repo;
  let server: RepoServer;
  const bridges: Bridge[] = [];

  const config = (): BridgeConfig =>
    BridgeConfigSchema.parse({
      apiVersion: API_VERSION,
      kind: 'BridgeConfig',
      mesh: { configMap: { namespace: CONTROL, name: 'flb-mesh' } },
      sources: [{ kind: 'kubernetes' }, { kind: 'eureka', servers: [`http://127.0.0.1:${proxy.port}/eureka/`], intervalSeconds: 1, staleAfterSeconds: 3 }],
      sinks: [{ kind: 'repo', url: `http://127.0.0.1:${server.port}` }],
      leaderElection: { enabled: false },
    });
  const start = async () => {
    const bridge = await startBridge({ config: config(), kubeConfig: plane.kubeConfig, log, identity: `bridge-${bridges.length}` });
    bridges.push(bridge);
    return bridge;
  };
  const serviceFile = async (id: string): Promise<Published | undefined> => {
    const text = await repo.readFile('/flb/mesh', `/services/${id}.json`);
    return text === undefined ? undefined : (JSON.parse(text.toString()) as Published);
  };
  const addresses = (svc: Published | undefined) => (svc?.endpoints ?? []).map((e) => `${e.address}:${e.port}`).join(' ');
  const eurekaStatus = (bridge: Bridge) => bridge.status().sources.find((s) => s.kind === 'eureka')!;

  beforeAll(async () => {
    // Both take seconds to start; they start together.
    [plane, eureka] = await Promise.all([startControlPlane(), sharedEurekaServer()]);
    if (eureka.startedInMs) process.stderr.write(`the Eureka server answered ${(eureka.startedInMs / 1000).toFixed(1)} s after its start\n`);
    const core = plane.kubeConfig.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: CONTROL } } });
    proxy = await recordingProxy(eureka.port);
    client = new EurekaRestClient(eureka.url);
    dir = mkdtempSync(join(tmpdir(), 'flb-bridge-eureka-test-'));
    repo = await new Repo(await new DiskStore(dir).init()).load();
    server = await startRepoServer({ repo, host: '127.0.0.1', port: 0, log });
  });
  afterAll(async () => {
    for (const bridge of bridges) await bridge.stop();
    client?.close();
    await new Promise<void>((resolve) => (proxy ? proxy.server.close(() => resolve()) : resolve()));
    await server?.close();
    await plane?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('publishes an application registered in Eureka as one catalog file: its UP instances, its names, a mesh VIP', async () => {
    await client.register({ app: 'orders', instanceId: 'orders-1', ipAddr: '10.20.0.1', port: 8080, zone: 'zone-a' });
    await client.register({ app: 'orders', instanceId: 'orders-2', ipAddr: '10.20.0.2', port: 8080, zone: 'zone-b' });
    const bridge = await start();
    const published = await eventually('orders published with two endpoints', async () => {
      const svc = await serviceFile(ORDERS);
      return svc?.endpoints.length === 2 ? svc : undefined;
    });
    expect(addresses(published)).toBe('10.20.0.1:8080 10.20.0.2:8080');
    expect(published.endpoints.map((e) => e.zone)).toEqual(['zone-a', 'zone-b']);
    expect(published.hostnames).toEqual(['orders', ORDERS]);
    expect(published.ports).toEqual([expect.objectContaining({ port: 80, protocol: 'http' })]);
    expect(published.vips).toEqual([{ address: expect.stringMatching(/^240\.240\./), allocation: 'mesh' }]);
    expect(eurekaStatus(bridge)).toMatchObject({ state: 'synced', services: 1, endpoints: 2, address: `http://127.0.0.1:${proxy.port}/eureka/` });
    expect(renderBridgeStatus(bridge.status())).toMatch(/eureka +eureka +http:\/\/127\.0\.0\.1:\d+\/eureka\/ +synced +1 +2/);
  });

  it('drops an instance marked DOWN, and takes a new one from a delta, with no full fetch', async () => {
    const fullFetches = () => proxy.paths.filter((p) => p === '/eureka/apps').length;
    const before = fullFetches();
    await client.register({ app: 'orders', instanceId: 'orders-2', ipAddr: '10.20.0.2', port: 8080, zone: 'zone-b', status: 'DOWN' });
    await eventually('orders-2 gone from the catalog', async () => (addresses(await serviceFile(ORDERS)) === '10.20.0.1:8080' ? true : undefined), 15_000);

    const registered = Date.now();
    await client.register({ app: 'orders', instanceId: 'orders-3', ipAddr: '10.20.0.3', port: 8080 });
    await eventually(
      'orders-3 in the catalog',
      async () => (addresses(await serviceFile(ORDERS)) === '10.20.0.1:8080 10.20.0.3:8080' ? true : undefined),
      15_000,
    );
    process.stderr.write(`a new Eureka instance reached the repo ${Date.now() - registered} ms after its registration (delta every 1 s)\n`);
    expect(fullFetches()).toBe(before);
    expect(proxy.paths.filter((p) => p === '/eureka/apps/delta').length).toBeGreaterThan(0);
  });

  it('removes the service when its last instance is cancelled, and publishes a new app', async () => {
    await client.register({ app: 'payments', instanceId: 'payments-1', ipAddr: '10.21.0.1', port: 9090 });
    await eventually(
      'payments published',
      async () => (addresses(await serviceFile('payments.eureka.eureka')) === '10.21.0.1:9090' ? true : undefined),
      15_000,
    );
    await client.cancel('payments', 'payments-1');
    await eventually('payments removed', async () => ((await serviceFile('payments.eureka.eureka')) === undefined ? true : undefined), 15_000);
  });

  it('after a restart republishes nothing unchanged and keeps the VIP', async () => {
    const bridge = bridges[0]!;
    await bridge.settled();
    const before = { version: repo.get('/flb/mesh')!.version, vip: (await serviceFile(ORDERS))!.vips[0]!.address };
    await bridge.stop();
    bridges.splice(0, 1);
    const restarted = await start();
    await eventually('the restarted bridge synced', async () => (restarted.status().sources.every((s) => s.state === 'synced') ? true : undefined), 30_000);
    // A few delta rounds: still nothing to write.
    await new Promise((r) => setTimeout(r, 3000));
    await restarted.settled();
    expect(repo.get('/flb/mesh')!.version).toBe(before.version);
    expect((await serviceFile(ORDERS))!.vips[0]!.address).toBe(before.vip);
  });

  it('keeps the last good services when the Eureka server stops, and says it is stale', async () => {
    const bridge = bridges[0]!;
    const before = await serviceFile(ORDERS);
    await eureka.stop();
    await eventually('the Eureka source stale', async () => (eurekaStatus(bridge).state === 'stale' ? true : undefined), 15_000);
    expect(eurekaStatus(bridge)).toMatchObject({
      services: 1,
      endpoints: 2,
      lastError: expect.stringMatching(/answered 502|ECONNRESET|socket hang up|broke off/),
    });
    expect(await serviceFile(ORDERS)).toEqual(before);
    expect(renderBridgeStatus(bridge.status())).toMatch(/eureka +eureka +\S+ +stale +1 +2/);
  });
});
