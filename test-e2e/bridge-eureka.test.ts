import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, DiscoveryV1Api } from '@kubernetes/client-node';
import { API_VERSION, BridgeConfigSchema, type BridgeConfig } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { freePorts, startControlPlane, type ControlPlane } from '../devenv/controlplane.js';
import { startServer } from '../devenv/processes.js';
import { startBridge, type Bridge, type BridgeStatus } from '../registry-bridge/bridge.js';
import type { RenewalCounts } from '../registry-bridge/sinks/eureka/sink.js';
import { renderBridgeStatus } from '../registry-bridge/status.js';
import { Repo } from '../repo/repo.js';
import { startRepoServer, type RepoServer } from '../repo/server.js';
import { DiskStore } from '../repo/store/disk.js';
import { EurekaRestClient, getJson, sharedEurekaServer, type EurekaServer } from './harness/eureka.js';
import { startDiscoveryClient, type DiscoveryClient } from './harness/eureka-discovery.js';
import { eventually } from './harness/eventually.js';

const log = createLogger('bridge-eureka-test', 'silent');
const CONTROL = 'flomesh';
const ORDERS = 'orders.eureka.eureka';
const FLB = fileURLToPath(new URL('../bin/flb.js', import.meta.url));

interface EurekaJsonInstance {
  instanceId: string;
  ipAddr: string;
  hostName: string;
  status: string;
  port: { $: number };
}

type Published = {
  hostnames: string[];
  vips: { address: string; allocation: string }[];
  ports: { port: number; protocol: string }[];
  endpoints: { address: string; port: number; healthy: boolean; zone?: string; metadata: Record<string, string> }[];
};

/**
 * In front of the Eureka server, so the test sees which requests the bridge makes (a full /apps or
 * a delta, a registration, a renewal) and when. It forwards every request as it came.
 */
async function recordingProxy(
  target: number,
): Promise<{ server: Server; port: number; paths: string[]; requests: { method: string; path: string; at: number }[] }> {
  const paths: string[] = [];
  const requests: { method: string; path: string; at: number }[] = [];
  const server = createServer((req, res) => {
    paths.push(req.url ?? '');
    requests.push({ method: req.method ?? '', path: req.url ?? '', at: Date.now() });
    const upstream = request({ host: '127.0.0.1', port: target, path: req.url, method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, paths, requests };
}

// One control plane and one Eureka server for both parts of the file (a JVM takes 10-40 s to start
// here): the sink's tests run first, as the source's last test stops the server.
let plane: ControlPlane;
let eureka: EurekaServer;
beforeAll(async () => {
  [plane, eureka] = await Promise.all([startControlPlane(), sharedEurekaServer()]);
  if (eureka.startedInMs) process.stderr.write(`the Eureka server answered ${(eureka.startedInMs / 1000).toFixed(1)} s after its start\n`);
  await plane.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: CONTROL } } });
});
afterAll(async () => {
  await plane?.stop();
});

describe('the Eureka sink: Kubernetes Services registered into the real Eureka server', () => {
  const NS = 'shop';
  const bridges: Bridge[] = [];
  let core: CoreV1Api;
  let discovery: DiscoveryV1Api;
  /** An app discovering through eureka-js-client, as a Spring Cloud client does (UP instances only). */
  let springClient: DiscoveryClient;
  /** Between the sink and the server: the test counts its renewals. */
  let sinkProxy: Awaited<ReturnType<typeof recordingProxy>>;

  const sinkConfig = (eurekaSourceServer = eureka.url): BridgeConfig =>
    BridgeConfigSchema.parse({
      apiVersion: API_VERSION,
      kind: 'BridgeConfig',
      mesh: { configMap: { namespace: CONTROL, name: 'flb-mesh' } },
      sources: [
        { kind: 'kubernetes' },
        // Reads the server the sink writes: what the sink wrote must never come back as a Eureka service.
        { kind: 'eureka', servers: [eurekaSourceServer], intervalSeconds: 1, staleAfterSeconds: 3 },
      ],
      // A short lease: the test server evicts every second, so a missed renewal would show within seconds.
      sinks: [{ kind: 'eureka', servers: [`http://127.0.0.1:${sinkProxy.port}/eureka/`], renewalIntervalSeconds: 1, leaseDurationSeconds: 3 }],
      leaderElection: { enabled: false },
    });
  const start = async (eurekaSourceServer?: string) => {
    const bridge = await startBridge({
      config: sinkConfig(eurekaSourceServer),
      kubeConfig: plane.kubeConfig,
      log,
      identity: `sink-bridge-${bridges.length}`,
      admin: { host: '127.0.0.1', port: 0 },
    });
    bridges.push(bridge);
    return bridge;
  };
  const stopAll = async () => {
    for (const bridge of bridges.splice(0)) await bridge.stop();
  };
  const slice = (name: string, endpoints: [string, boolean][]) => ({
    metadata: { name: `${name}-1`, labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: endpoints.map(([address, ready]) => ({ addresses: [address], conditions: { ready } })),
  });
  /** What the server holds of an app, straight from its REST API: `instanceId ip:port status`. */
  const held = async (app: string) => {
    const answer = await getJson(`${eureka.url}apps/${app}`);
    if (answer.status === 404) return [];
    const instances = (JSON.parse(answer.body) as { application: { instance: EurekaJsonInstance[] } }).application.instance;
    return instances.map((i) => `${i.instanceId} ${i.ipAddr}:${i.port.$} ${i.status}`).sort();
  };
  const dashboardNumber = async (label: string) => {
    const page = await getJson(eureka.url.replace(/eureka\/$/, ''));
    const match = new RegExp(`<td>${label}</td>\\s*<td>(\\d+)</td>`).exec(page.body);
    if (!match) throw new Error(`no ${label} on the Eureka dashboard`);
    return Number(match[1]);
  };

  beforeAll(async () => {
    core = plane.kubeConfig.makeApiClient(CoreV1Api);
    discovery = plane.kubeConfig.makeApiClient(DiscoveryV1Api);
    sinkProxy = await recordingProxy(eureka.port);
    await core.createNamespace({ body: { metadata: { name: NS } } });
    await core.createNamespacedConfigMap({
      namespace: CONTROL,
      body: { metadata: { name: 'flb-mesh' }, data: { 'mesh.yaml': `apiVersion: ${API_VERSION}\nkind: Mesh\nname: flb\n` } },
    });
    springClient = await startDiscoveryClient(eureka);
  });
  afterAll(async () => {
    springClient?.stop();
    await stopAll();
    await new Promise<void>((resolve) => (sinkProxy ? sinkProxy.server.close(() => resolve()) : resolve()));
    await core?.deleteNamespacedConfigMap({ name: 'flb-mesh', namespace: CONTROL }).catch(() => undefined);
  });

  it('registers a Service as instances a Spring-style Eureka client discovers: UP at the ready pods, DOWN at the others', async () => {
    await core.createNamespacedService({ namespace: NS, body: { metadata: { name: 'web' }, spec: { ports: [{ name: 'http', port: 80, targetPort: 8080 }] } } });
    await discovery.createNamespacedEndpointSlice({
      namespace: NS,
      body: slice('web', [
        ['10.244.1.1', true],
        ['10.244.1.2', true],
        ['10.244.1.3', false],
      ]),
    });
    const thresholdBefore = await dashboardNumber('Renews threshold');
    const bridge = await start();
    await eventually('WEB discovered by the client', async () => (springClient.discovered('WEB').length === 2 ? true : undefined), 20_000);
    expect(springClient.discovered('WEB')).toEqual(['10.244.1.1:8080', '10.244.1.2:8080']);
    expect(springClient.instancesByVip('web')).toHaveLength(2);
    expect(await held('WEB')).toEqual([
      '10.244.1.1:web.shop:8080 10.244.1.1:8080 UP',
      '10.244.1.2:web.shop:8080 10.244.1.2:8080 UP',
      '10.244.1.3:web.shop:8080 10.244.1.3:8080 DOWN',
    ]);
    const one = springClient.instances('WEB').find((i) => i.ipAddr === '10.244.1.1')! as unknown as EurekaJsonInstance;
    expect(one).toMatchObject({
      app: 'WEB',
      hostName: '10.244.1.1',
      vipAddress: 'web',
      port: { $: 8080, '@enabled': 'true' },
      securePort: { '@enabled': 'false' },
      dataCenterInfo: { name: 'MyOwn' },
      metadata: {
        'flomesh-origin': 'kubernetes',
        'flomesh-service': 'web.shop',
        'flomesh-mesh': 'flb',
        'flomesh-namespace': NS,
        'flomesh-writer': 'flb-local/eureka',
      },
    });
    // The server's self-preservation arithmetic counts each new instance as one more client renewing twice a minute (x 0.85).
    // Three clients more add 3 x 2 x 0.85 = 5.1 renewals a minute to it (5 or 6 after Eureka's rounding down)...
    const added = (await dashboardNumber('Renews threshold')) - thresholdBefore;
    expect([5, 6]).toContain(added);
    const sink = bridge.status().sinks.find((s) => s.kind === 'eureka')!;
    expect(sink).toMatchObject({ writes: 3, failures: 0, address: `http://127.0.0.1:${sinkProxy.port}/eureka/` });
  });

  it('keeps the instances alive with renewals: none is evicted while the bridge runs, each renewed far more often than the threshold counts on', async () => {
    const renewals = () => sinkProxy.paths.filter((p) => p.startsWith('/eureka/apps/WEB/'));
    const before = renewals().length;
    // The lease is 3 s and the server evicts every second: an instance not renewed would be gone within 6-7 s.
    await new Promise((resolve) => setTimeout(resolve, 8000));
    expect(await held('WEB')).toHaveLength(3);
    // Renewed every second (the sink's interval here): 60 a minute each, against the 1.7 each adds to the threshold.
    const counts = new Map<string, number>();
    for (const path of renewals().slice(before)) counts.set(path, (counts.get(path) ?? 0) + 1);
    expect([...counts.keys()].sort()).toEqual(
      ['10.244.1.1', '10.244.1.2', '10.244.1.3'].map((ip) => `/eureka/apps/WEB/${encodeURIComponent(`${ip}:web.shop:8080`)}`),
    );
    for (const count of counts.values()) expect(count).toBeGreaterThanOrEqual(7);
  });

  it('shows its renewals in /status and /metrics, rising as it renews, and a re-registration after the server lost an instance', async () => {
    const admin = `http://127.0.0.1:${bridges[0]!.adminPort}`;
    const renewalsInStatus = async () => {
      const sinks = (JSON.parse((await getJson(`${admin}/status`)).body) as { sinks: { kind: string; renewals: RenewalCounts }[] }).sinks;
      return sinks.find((s) => s.kind === 'eureka')!.renewals;
    };
    const metric = async (name: string) => {
      const line = (await getJson(`${admin}/metrics`)).body.split('\n').find((l) => l.startsWith(`${name}{sink="eureka",kind="eureka"} `));
      return line === undefined ? undefined : Number(line.split(' ')[1]);
    };
    const before = await renewalsInStatus();
    const sentBefore = await metric('flb_bridge_sink_renewals_total');
    expect(before.sent).toBeGreaterThan(0);
    expect(before.failed).toBe(0);
    // Three instances renewed every second.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const after = await renewalsInStatus();
    expect(after.sent - before.sent).toBeGreaterThanOrEqual(6);
    expect((await metric('flb_bridge_sink_renewals_total'))! - sentBefore!).toBeGreaterThanOrEqual(6);

    // Cancelled behind the bridge's back: its next renewal gets 404 from the server and registers it again.
    const someoneElse = new EurekaRestClient(eureka.url);
    await someoneElse.cancel('WEB', '10.244.1.3:web.shop:8080');
    someoneElse.close();
    await eventually('registered again', async () => ((await renewalsInStatus()).reregistered === before.reregistered + 1 ? true : undefined), 10_000);
    expect(await metric('flb_bridge_sink_reregistrations_total')).toBe(before.reregistered + 1);
    await eventually('held again', async () => ((await held('WEB')).length === 3 ? true : undefined));
    // Late ones depend on this machine's load (a renewal more than 1.1 s after the last): shown the same in both places.
    const final = await renewalsInStatus();
    expect(final.failed).toBe(0);
    expect(await metric('flb_bridge_sink_renewal_failures_total')).toBe(0);
    expect(await metric('flb_bridge_sink_late_renewals_total')).toBe(final.late);
  });

  it('follows a scale-up and a scale-down, and a pod turning ready', async () => {
    await discovery.replaceNamespacedEndpointSlice({
      name: 'web-1',
      namespace: NS,
      body: slice('web', [
        ['10.244.1.1', true],
        ['10.244.1.3', true],
        ['10.244.1.4', true],
      ]),
    });
    await eventually('the client discovers the new set', async () =>
      springClient.discovered('WEB').join() === '10.244.1.1:8080,10.244.1.3:8080,10.244.1.4:8080' ? true : undefined,
    );
    await eventually('10.244.1.2 cancelled', async () => ((await held('WEB')).length === 3 ? true : undefined));
  });

  it('never imports back what it wrote: the Eureka source reading the same server publishes no WEB', async () => {
    const bridge = bridges[0]!;
    await eventually('the eureka source synced', async () => (bridge.status().sources.find((s) => s.kind === 'eureka')!.state === 'synced' ? true : undefined));
    // A few delta rounds go by.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect([...bridge.catalog.serviceIds()].filter((id) => id.endsWith('.eureka'))).toEqual([]);
    expect(bridge.status().sources.find((s) => s.kind === 'eureka')).toMatchObject({ services: 0, errors: 0 });
    expect(bridge.catalog.service('web.shop')).toBeDefined();
  });

  it('after a restart while the Eureka source cannot list, cancels nothing and keeps renewing; cancels once every source listed', async () => {
    await bridges[0]!.settled();
    await stopAll();
    // While it is down the Service goes away; the new bridge's Eureka source never lists (nothing answers there).
    await core.deleteNamespacedService({ name: 'web', namespace: NS });
    await discovery.deleteNamespacedEndpointSlice({ name: 'web-1', namespace: NS });
    const restarted = await start('http://127.0.0.1:1/eureka/');
    await eventually('the kubernetes source synced', async () =>
      restarted.status().sources.find((x) => x.kind === 'kubernetes')!.state === 'synced' ? true : undefined,
    );
    // Longer than twice the lease: an instance the new sink did not renew would be evicted by now.
    await new Promise((resolve) => setTimeout(resolve, 7000));
    expect(restarted.status().sources.find((x) => x.kind === 'eureka')!.state).toBe('starting');
    expect(await held('WEB')).toHaveLength(3);
    expect(restarted.status().sinks[0]).toMatchObject({ writes: 0, failures: 0 });
    await stopAll();

    const last = await start();
    await eventually('WEB cancelled', async () => ((await held('WEB')).length === 0 ? true : undefined), 15_000);
    await eventually('and gone from the client', async () => (springClient.discovered('WEB').length === 0 ? true : undefined));
    expect(last.status().sinks[0]).toMatchObject({ writes: 3, failures: 0 });
    await stopAll();
  });

  it('with two bridges on a Lease and the leader killed (SIGKILL), the standby renews the same instances within their lease: none cancelled, evicted or registered twice', async () => {
    const KILL_NS = 'leader-kill';
    const LEASE = { leaseDurationSeconds: 3, renewDeadlineSeconds: 2, retryPeriodSeconds: 1 };
    // Renewed every second, evicted 10 s after the last renewal: the standby must take over well within that.
    const EUREKA_LEASE_SECONDS = 10;
    await core.createNamespace({ body: { metadata: { name: KILL_NS } } });
    await core.createNamespacedService({
      namespace: KILL_NS,
      body: { metadata: { name: 'pay' }, spec: { ports: [{ name: 'http', port: 80, targetPort: 8080 }] } },
    });
    await discovery.createNamespacedEndpointSlice({
      namespace: KILL_NS,
      body: slice('pay', [
        ['10.244.2.1', true],
        ['10.244.2.2', true],
        ['10.244.2.3', false],
      ]),
    });
    const ids = ['10.244.2.1', '10.244.2.2', '10.244.2.3'].map((ip) => `${ip}:pay.${KILL_NS}:8080`);
    type Lease = { registered: number; renewed: number; updated: number };
    /**
     * What the server holds of PAY's instances: when each was registered, last renewed and last
     * updated. Read one instance at a time, from the registry itself: the server caches a whole
     * application's answer until a registration, cancel or eviction, so renewals do not show there.
     */
    const leases = async () => {
      const held = new Map<string, Lease>();
      for (const id of ids) {
        const answer = await getJson(`${eureka.url}apps/PAY/${encodeURIComponent(id)}`);
        if (answer.status === 404) continue;
        const instance = (
          JSON.parse(answer.body) as { instance: { lastUpdatedTimestamp: string; leaseInfo: { registrationTimestamp: number; lastRenewalTimestamp: number } } }
        ).instance;
        held.set(id, {
          registered: instance.leaseInfo.registrationTimestamp,
          renewed: instance.leaseInfo.lastRenewalTimestamp,
          updated: Number(instance.lastUpdatedTimestamp),
        });
      }
      return held;
    };
    // Each replica writes to the server through its own proxy, so the test sees who sent what.
    const proxies = [await recordingProxy(eureka.port), await recordingProxy(eureka.port)];
    const [adminPorts, dir] = [await freePorts(2), mkdtempSync(join(tmpdir(), 'flb-eureka-leader-kill-'))];
    const replicas = proxies.map((proxy, index) => {
      const configFile = join(dir, `bridge-${index}.json`);
      writeFileSync(
        configFile,
        JSON.stringify({
          apiVersion: API_VERSION,
          kind: 'BridgeConfig',
          mesh: { configMap: { namespace: CONTROL, name: 'flb-mesh' } },
          sources: [{ kind: 'kubernetes' }],
          sinks: [
            {
              kind: 'eureka',
              servers: [`http://127.0.0.1:${proxy.port}/eureka/`],
              namespaces: { include: [KILL_NS] },
              renewalIntervalSeconds: 1,
              leaseDurationSeconds: EUREKA_LEASE_SECONDS,
            },
          ],
          leaderElection: { namespace: CONTROL, name: 'flb-bridge-leader-kill', ...LEASE },
        }),
      );
      const args = [FLB, 'bridge', 'run', '--config', configFile, '--kubeconfig', plane.kubeconfigPath, '--admin', `127.0.0.1:${adminPorts[index]}`];
      return startServer(`flb-bridge-${index}`, process.execPath, [...args, '--identity', `replica-${index}`], join(dir, `bridge-${index}.log`));
    });
    const status = async (index: number) => {
      const answer = await getJson(`http://127.0.0.1:${adminPorts[index]}/status`).catch(() => undefined);
      return answer?.status === 200 ? (JSON.parse(answer.body) as BridgeStatus) : undefined;
    };
    try {
      const leader = await eventually(
        'one replica leading with the instances registered, the other synced as its standby',
        async () => {
          const both = await Promise.all([status(0), status(1)]);
          const index = both.findIndex((s) => s?.leader);
          const [lead, standby] = [both[index], both[1 - index]];
          if (!lead || !standby || standby.leader || (await leases()).size !== 3) return undefined;
          return lead.sinks[0]?.pending === 0 && standby.sources.every((s) => s.state === 'synced') ? index : undefined;
        },
        30_000,
      );
      const standby = 1 - leader;
      const before = await leases();
      expect([...before.keys()].sort()).toEqual(ids);
      expect(proxies[standby]!.requests).toEqual([]);

      process.kill(replicas[leader]!.pid, 'SIGKILL');
      const killedAt = Date.now();
      await replicas[leader]!.exited;
      // Every 200 ms until the new leader has renewed each instance twice: all three held throughout.
      const renewedBy = (index: number, id: string) =>
        proxies[index]!.requests.filter((r) => r.method === 'PUT' && r.path.startsWith(`/eureka/apps/PAY/${encodeURIComponent(id)}`));
      const gaps: string[] = [];
      await eventually(
        'the standby renewing every instance',
        async () => {
          const held = await leases();
          if (held.size !== 3) gaps.push(`${Date.now() - killedAt} ms after the kill: ${[...held.keys()].sort().join(', ') || 'none'}`);
          return ids.every((id) => renewedBy(standby, id).length >= 2) ? true : undefined;
        },
        // Long enough for an eviction to show before this gives up.
        (LEASE.leaseDurationSeconds + 2 * EUREKA_LEASE_SECONDS) * 1000,
        200,
      );
      expect(gaps).toEqual([]);
      const takeover = await status(standby);
      expect(takeover).toMatchObject({ leader: true, sinks: [{ kind: 'eureka', failures: 0 }] });
      // The new leader wrote nothing: no registration, no cancel; renewals only, the first within the lease.
      expect(proxies[standby]!.requests.filter((r) => r.method === 'POST' || r.method === 'DELETE')).toEqual([]);
      expect(takeover!.sinks[0]!.writes).toBe(0);
      // The old leader's last word on the instances: a renewal, or their registration when it was killed before its first renewal.
      const lastOldWrite = Math.max(...proxies[leader]!.requests.filter((r) => r.method === 'PUT' || r.method === 'POST').map((r) => r.at));
      const firstNewRenewal = Math.min(...proxies[standby]!.requests.filter((r) => r.method === 'PUT').map((r) => r.at));
      expect(firstNewRenewal - lastOldWrite).toBeLessThan(EUREKA_LEASE_SECONDS * 1000);
      // The old leader registered each instance once; the server kept those registrations and saw the renewals continue.
      expect(
        proxies[leader]!.requests.filter((r) => r.method === 'POST')
          .map((r) => r.path)
          .sort(),
      ).toEqual(ids.map(() => '/eureka/apps/PAY').sort());
      const after = await leases();
      for (const id of ids) {
        expect({ id, registered: after.get(id)!.registered, updated: after.get(id)!.updated }).toEqual({
          id,
          registered: before.get(id)!.registered,
          updated: before.get(id)!.updated,
        });
        expect(after.get(id)!.renewed).toBeGreaterThan(killedAt);
      }
    } finally {
      for (const replica of replicas) await replica.stop();
      for (const proxy of proxies) await new Promise<void>((resolve) => proxy.server.close(() => resolve()));
      // What the sink wrote outlives it (a bridge stopping cancels nothing): cleared for the tests after this one.
      const cleaner = new EurekaRestClient(eureka.url);
      for (const id of (await leases()).keys()) await cleaner.cancel('PAY', id);
      cleaner.close();
      await core.deleteNamespacedService({ name: 'pay', namespace: KILL_NS });
      await discovery.deleteNamespacedEndpointSlice({ name: 'pay-1', namespace: KILL_NS });
      await core.deleteNamespace({ name: KILL_NS });
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the registry bridge reading a real Eureka server into a real repo', () => {
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
