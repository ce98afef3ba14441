import { describe, expect, it } from '@jest/globals';
import { API_VERSION, BridgeConfigSchema, type EurekaSinkConfig, type Service } from '../../../common/contract/index.js';
import { createLogger } from '../../../common/log.js';
import { kubeService as service, parseSinkConfig, stoppedAfterEach, until } from '../testing/sink-tests.js';
import type { EurekaAnswer } from './api.js';
import { EurekaWriteError } from './api.js';
import { registrationBody, registrationsOf } from './instances.js';
import { RenewalSchedule } from './renewals.js';
import { EurekaSink } from './sink.js';

const log = createLogger('eureka-sink-test', 'silent');

type Instance = Record<string, unknown> & { instanceId: string; app: string; status: string; metadata: Record<string, string> };

/** A Eureka server as the sink sees it (Spring Cloud's answers: 204 on register, 200 or 404 on renew and cancel), every request recorded. */
class FakeEureka {
  apps = new Map<string, Map<string, Instance>>();
  requests: string[] = [];
  /** How long a registration takes (a busy server). */
  registerDelayMs = 0;
  /** How long a renewal takes (a server that stalls). */
  renewDelayMs = 0;
  /** Answers a request with this (an error: unreachable) instead. */
  failing?: (method: string, path: string) => Error | EurekaAnswer | undefined;

  put(instance: Instance): void {
    const app = instance.app.toUpperCase();
    if (!this.apps.has(app)) this.apps.set(app, new Map());
    this.apps.get(app)!.set(instance.instanceId, instance);
  }

  instances(): Instance[] {
    return [...this.apps.values()].flatMap((app) => [...app.values()]);
  }

  /** `APP id status` of every instance, sorted. */
  summary(): string[] {
    return this.instances()
      .map((i) => `${i.app} ${i.instanceId} ${i.status}`)
      .sort();
  }

  writes(): string[] {
    return this.requests.filter((r) => !r.startsWith('GET') && !r.startsWith('PUT'));
  }

  api = {
    address: 'http://eureka:8761/eureka/',
    close: () => {},
    call: async (method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown): Promise<EurekaAnswer> => {
      await Promise.resolve();
      this.requests.push(`${method} ${decodeURIComponent(path)}`);
      const failure = this.failing?.(method, path);
      if (failure instanceof Error) throw failure;
      if (failure) return failure;
      const [, app, id] = path.split('/').map(decodeURIComponent);
      if (method === 'GET')
        return {
          status: 200,
          body: JSON.stringify({
            applications: { application: [...this.apps].map(([name, instances]) => ({ name, instance: [...instances.values()] })) },
          }),
        };
      if (method === 'POST') {
        if (this.registerDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.registerDelayMs));
        this.put((body as { instance: Instance }).instance);
        return { status: 204, body: '' };
      }
      // unref: a renewal still stalled when the test ends does not hold jest open.
      if (method === 'PUT' && this.renewDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.renewDelayMs).unref());
      const held = this.apps.get(app!)?.get(id!);
      if (!held) return { status: 404, body: '' };
      if (method === 'DELETE') this.apps.get(app!)!.delete(id!);
      return { status: 200, body: '' };
    },
  };
}

const parsed = (over: Record<string, unknown> = {}) =>
  parseSinkConfig<EurekaSinkConfig>(
    { kind: 'eureka', servers: ['http://other-eureka:8761/eureka/'] },
    { kind: 'eureka', servers: ['http://eureka:8761/eureka/'], ...over },
  );
const sinkConfig = (over: Record<string, unknown> = {}) => parsed(over).config;
const { sources } = parsed();
const kubeService = (name: string, namespace: string, endpoints: [string, boolean][], port?: { name?: string; port: number }): Service =>
  service(name, namespace, endpoints, { zone: 'zone-a', ...(port ? { port } : {}) });
const sinks = stoppedAfterEach<EurekaSink>();

function makeSink(eureka: FakeEureka, over: Record<string, unknown> = {}) {
  const problems: string[] = [];
  const sink = new EurekaSink({ config: sinkConfig(over), sources, log, api: eureka.api, onProblem: (s, why) => problems.push(`${s.id}: ${why}`) });
  sink.setMesh({ clusterName: 'east', name: 'flb' } as never);
  sinks.push(sink);
  return { sink, problems };
}

const web = (
  endpoints: [string, boolean][] = [
    ['10.244.0.5', true],
    ['10.244.0.6', false],
  ],
) => kubeService('web', 'shop', endpoints);

const twoReadyPods: [string, boolean][] = [
  ['10.244.0.5', true],
  ['10.244.0.6', true],
];

/** A sink renewing every second on a 2 s lease that has registered web.shop at `endpoints`. */
async function renewingWeb(endpoints: [string, boolean][] = twoReadyPods, over: Record<string, unknown> = {}) {
  const eureka = new FakeEureka();
  const { sink } = makeSink(eureka, { renewalIntervalSeconds: 1, leaseDurationSeconds: 2, ...over });
  sink.setService('web.shop', web(endpoints), undefined, 'kubernetes');
  await sink.settled();
  return { eureka, sink };
}

describe('what the Eureka sink registers', () => {
  const writer = { writer: 'flb-east/eureka', mesh: 'flb' };

  it('registers each endpoint as a Spring Cloud client would register itself: pod IP as hostName and ipAddr, MyOwn data center, origin in metadata', () => {
    const { registrations } = registrationsOf(web(), { servicePrefix: '', namespaceSuffix: false }, writer);
    expect(registrations.map((r) => `${r.app} ${r.id} ${r.status}`)).toEqual(['WEB 10.244.0.5:web.shop:8080 UP', 'WEB 10.244.0.6:web.shop:8080 DOWN']);
    const body = registrationBody(registrations[0]!, { renewalIntervalSeconds: 30, leaseDurationSeconds: 90 }, 1700000000000);
    expect(body.instance).toMatchObject({
      instanceId: '10.244.0.5:web.shop:8080',
      app: 'WEB',
      hostName: '10.244.0.5',
      ipAddr: '10.244.0.5',
      status: 'UP',
      port: { $: 8080, '@enabled': 'true' },
      securePort: { $: 443, '@enabled': 'false' },
      dataCenterInfo: { '@class': 'com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo', name: 'MyOwn' },
      leaseInfo: { renewalIntervalInSecs: 30, durationInSecs: 90 },
      vipAddress: 'web',
      secureVipAddress: 'web',
      homePageUrl: 'http://10.244.0.5:8080/',
      lastDirtyTimestamp: '1700000000000',
      metadata: {
        'flomesh-origin': 'kubernetes',
        'flomesh-writer': 'flb-east/eureka',
        'flomesh-service': 'web.shop',
        'flomesh-mesh': 'flb',
        'flomesh-namespace': 'shop',
        zone: 'zone-a',
      },
    });
  });

  it('enables securePort, not port, for a Service whose port is https', () => {
    const { registrations } = registrationsOf(
      kubeService('pay', 'shop', [['10.244.0.7', true]], { name: 'https', port: 443 }),
      { servicePrefix: '', namespaceSuffix: false },
      writer,
    );
    const body = registrationBody(registrations[0]!, { renewalIntervalSeconds: 30, leaseDurationSeconds: 90 }, 1);
    expect(body.instance).toMatchObject({
      port: { '@enabled': 'false' },
      securePort: { $: 8080, '@enabled': 'true' },
      homePageUrl: 'https://10.244.0.7:8080/',
    });
  });

  it('names apps with the prefix and namespace suffix, and refuses a name Eureka clients cannot use', () => {
    const named = registrationsOf(web(), { servicePrefix: 'k8s-', namespaceSuffix: true }, writer).registrations[0]!;
    expect(`${named.app} ${named.vipAddress}`).toBe('K8S-WEB-SHOP k8s-web-shop');
    const consul = { ...web(), source: 'consul' as const, name: 'billing/v2', namespace: undefined };
    expect(registrationsOf(consul, { servicePrefix: '', namespaceSuffix: false }, writer)).toEqual({
      registrations: [],
      refused: expect.stringContaining('"BILLING/V2" is not one Eureka clients can use'),
    });
  });
});

describe('the Eureka sink', () => {
  it('registers a Kubernetes Service, and writes nothing again while nothing changes', async () => {
    const eureka = new FakeEureka();
    const { sink } = makeSink(eureka);
    sink.setService('web.shop', web(), undefined, 'kubernetes');
    await sink.settled();
    expect(eureka.summary()).toEqual(['WEB 10.244.0.5:web.shop:8080 UP', 'WEB 10.244.0.6:web.shop:8080 DOWN']);
    sink.setService('web.shop', web(), undefined, 'kubernetes');
    await sink.settled();
    expect(eureka.writes()).toHaveLength(2);
    expect(sink.status()).toMatchObject({ writes: 2, failures: 0, pending: 0 });
  });

  it('writes a status change as one registration of that instance, and cancels a pod that went', async () => {
    const eureka = new FakeEureka();
    const { sink } = makeSink(eureka);
    sink.setService('web.shop', web(), undefined, 'kubernetes');
    await sink.settled();
    sink.complete();
    eureka.requests = [];
    sink.setService('web.shop', web([['10.244.0.6', true]]), undefined, 'kubernetes');
    await sink.settled();
    expect(eureka.writes().sort()).toEqual(['DELETE apps/WEB/10.244.0.5:web.shop:8080', 'POST apps/WEB']);
    expect(eureka.summary()).toEqual(['WEB 10.244.0.6:web.shop:8080 UP']);
    sink.setService('web.shop', undefined, undefined, 'kubernetes');
    await sink.settled();
    expect(eureka.summary()).toEqual([]);
  });

  it('writes only what is in its scope: from, namespaces and the registry-sync annotation', async () => {
    const eureka = new FakeEureka();
    const { sink } = makeSink(eureka, { namespaces: { include: ['*'], exclude: ['kube-system'] } });
    sink.setService('dns.kube-system', kubeService('dns', 'kube-system', [['10.244.0.9', true]]), undefined, 'kubernetes');
    sink.setService('orders.eureka.eureka', { ...web(), id: 'orders.eureka.eureka', source: 'eureka', namespace: undefined }, undefined, 'eureka');
    const optedOut = web([['10.244.0.8', true]]);
    sink.setService('api.shop', { ...optedOut, id: 'api.shop', name: 'api', labels: { 'flomesh.io/registry-sync': 'false' } }, undefined, 'kubernetes');
    await sink.settled();
    expect(eureka.summary()).toEqual([]);
  });

  it('after a restart registers nothing unchanged, renews what it holds, and cancels nothing before complete()', async () => {
    const eureka = new FakeEureka();
    const first = makeSink(eureka, { renewalIntervalSeconds: 1, leaseDurationSeconds: 2 }).sink;
    first.setService('web.shop', web(), undefined, 'kubernetes');
    first.setService('api.shop', { ...web([['10.244.1.1', true]]), id: 'api.shop', name: 'api' }, undefined, 'kubernetes');
    await first.settled();
    await first.stop();
    // Someone's own instance of WEB: never touched.
    eureka.put({ instanceId: 'vm-1:web:8080', app: 'WEB', status: 'UP', ipAddr: '10.9.0.1', metadata: {} });
    eureka.requests = [];

    const { sink } = makeSink(eureka, { renewalIntervalSeconds: 1, leaseDurationSeconds: 2 });
    // Only web is listed again so far (api.shop's source has not listed it yet).
    sink.setService('web.shop', web(), undefined, 'kubernetes');
    await sink.settled();
    await until('every instance of its own renewed', () => new Set(eureka.requests.filter((r) => r.startsWith('PUT'))).size === 3, 3000);
    expect(eureka.writes()).toEqual([]);
    expect(eureka.summary()).toHaveLength(4);
    sink.complete();
    await sink.settled();
    expect(eureka.writes()).toEqual(['DELETE apps/API/10.244.1.1:api.shop:8080']);
    expect(eureka.summary()).toEqual(['WEB 10.244.0.5:web.shop:8080 UP', 'WEB 10.244.0.6:web.shop:8080 DOWN', 'WEB vm-1:web:8080 UP']);
    expect(eureka.requests.filter((r) => r.includes('vm-1'))).toEqual([]);
  });

  it('registers again an instance whose renewal gets 404 (the server evicted it)', async () => {
    const { eureka, sink } = await renewingWeb([['10.244.0.5', true]]);
    eureka.apps.clear();
    await until('registered again', () => eureka.summary().length === 1, 3000);
    expect(sink.counters.renewalsNotFound).toBe(1);
    expect(eureka.writes()).toEqual(['POST apps/WEB', 'POST apps/WEB']);
  });

  it('reports a registration the server refuses with the instance named, retries it with backoff, and writes the others', async () => {
    const eureka = new FakeEureka();
    let refusals = 0;
    eureka.failing = (method, path) => {
      if (method === 'POST' && path === 'apps/API' && refusals < 2) {
        refusals++;
        return { status: 400, body: 'Missing hostname' };
      }
      return undefined;
    };
    const { sink } = makeSink(eureka);
    sink.setService('api.shop', { ...web([['10.244.1.1', true]]), id: 'api.shop', name: 'api' }, undefined, 'kubernetes');
    sink.setService('web.shop', web([['10.244.0.5', true]]), undefined, 'kubernetes');
    await sink.settled();
    expect(eureka.summary()).toEqual(['WEB 10.244.0.5:web.shop:8080 UP']);
    expect(sink.status()).toMatchObject({
      failures: 1,
      pending: 1,
      lastError: 'instance 10.244.1.1:api.shop:8080 of API: POST apps/API answered 400: Missing hostname',
    });
    await until('retried until accepted', () => eureka.summary().length === 2);
    expect(refusals).toBe(2);
  });

  it('reads again and writes what is missing after the server went away mid-sync (it may come back empty)', async () => {
    const eureka = new FakeEureka();
    const { sink } = makeSink(eureka);
    sink.setService('web.shop', web([['10.244.0.5', true]]), undefined, 'kubernetes');
    await sink.settled();
    let away = true;
    eureka.failing = () => (away ? new EurekaWriteError('no Eureka server answered: ECONNREFUSED') : undefined);
    sink.setService('api.shop', { ...web([['10.244.1.1', true]]), id: 'api.shop', name: 'api' }, undefined, 'kubernetes');
    await until('the failure reported', () => sink.status().failures > 0);
    expect(sink.status().lastError).toMatch(/no Eureka server answered: ECONNREFUSED.*instance 10\.244\.1\.1:api\.shop:8080 of API/);
    eureka.apps.clear();
    away = false;
    await until('both registered on the emptied server', () => eureka.summary().length === 2, 5000);
    expect(eureka.requests.filter((r) => r === 'GET apps').length).toBeGreaterThanOrEqual(2);
  });

  it("leaves alone an instance of the same id that is someone else's, and reports it", async () => {
    const eureka = new FakeEureka();
    eureka.put({ instanceId: '10.244.0.5:web.shop:8080', app: 'WEB', status: 'UP', ipAddr: '10.244.0.5', metadata: {} });
    const { sink, problems } = makeSink(eureka);
    sink.setService('web.shop', web([['10.244.0.5', true]]), undefined, 'kubernetes');
    await sink.settled();
    sink.complete();
    await sink.settled();
    expect(eureka.writes()).toEqual([]);
    expect(problems).toEqual([
      expect.stringMatching(/^web\.shop: Eureka already holds instance 10\.244\.0\.5:web\.shop:8080 of WEB that the bridge did not write/),
    ]);
  });
});

describe('renewals', () => {
  it('spread evenly over the interval: 10,000 services of 3 pods renew about 1,000 times in every second, never in one burst', () => {
    const schedule = new RenewalSchedule(30_000);
    for (let s = 0; s < 10_000; s++) for (let p = 0; p < 3; p++) schedule.add(`WEB-${s}/10.${s >> 8}.${s & 255}.${p}:svc-${s}.shop:8080`);
    const perSecond: number[] = [];
    for (let second = 0; second < 30; second++) perSecond.push(schedule.due(1_700_000_000_000 + second * 1000, 1_700_000_000_000 + (second + 1) * 1000).length);
    expect(perSecond.reduce((a, b) => a + b, 0)).toBe(30_000);
    expect(Math.max(...perSecond)).toBeLessThan(1_100);
    expect(Math.min(...perSecond)).toBeGreaterThan(900);
    // One second of ticks renews each key at most once, and a whole interval every key once.
    const ticks = Array.from({ length: 300 }, (_, i) => schedule.due(1_700_000_000_000 + i * 100, 1_700_000_000_000 + (i + 1) * 100)).flat();
    expect(new Set(ticks).size).toBe(30_000);
    expect(ticks).toHaveLength(30_000);
  });

  it('give the Eureka server the renewals its self-preservation threshold counts on for every instance the sink registered', async () => {
    // The server's arithmetic (PeerAwareInstanceRegistryImpl): each registered instance adds one expected
    // client, and the threshold is expected x (60 / expected-client-renewal-interval-seconds, 30) x
    // renewal-percent-threshold (0.85) renewals a minute. Renewing each instance once per
    // renewalIntervalSeconds (at most 30) sends 60 / interval >= 2 a minute each, above its 1.7.
    const { eureka, sink } = await renewingWeb(Array.from({ length: 20 }, (_, i): [string, boolean] => [`10.244.0.${i + 1}`, true]));
    const started = Date.now();
    eureka.requests = [];
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const elapsedMinutes = (Date.now() - started) / 60_000;
    const renewals = eureka.requests.filter((r) => r.startsWith('PUT')).length;
    const thresholdShare = 20 * (60 / 30) * 0.85;
    expect(renewals / elapsedMinutes).toBeGreaterThan(thresholdShare);
    // Every instance each interval, none skipped: its own lease (2 s here) never runs out.
    expect(renewals).toBeGreaterThanOrEqual(20 * 2);
    expect(sink.renewalLoad()).toEqual({ instances: 20, renewalsPerMinute: 1200 });
    expect(sink.counters).toMatchObject({ renewalFailures: 0, lateRenewals: 0 });
  });

  it('go before registrations: a backlog of new instances on a slow server never delays the renewals of those held', async () => {
    const { eureka, sink } = await renewingWeb(twoReadyPods, { writeConcurrency: 2 });
    // 400 registrations of 15 ms, 2 at a time: 3 s of backlog, three renewal intervals.
    eureka.registerDelayMs = 15;
    sink.setService(
      'api.shop',
      { ...web(Array.from({ length: 400 }, (_, i): [string, boolean] => [`10.245.${i >> 8}.${i & 255}`, true])), id: 'api.shop', name: 'api' },
      undefined,
      'kubernetes',
    );
    await sink.settled();
    expect(eureka.summary()).toHaveLength(402);
    expect(sink.counters.lateRenewals).toBe(0);
    expect(sink.counters.maxRenewalDelayMs).toBeLessThan(400);
  });

  it('are counted in the status as a user checks them: sent, failed, registered again after a 404, and late', async () => {
    const { eureka, sink } = await renewingWeb();
    const renewals = () => sink.status().renewals;
    const sentToServer = () => eureka.requests.filter((r) => r.startsWith('PUT')).length;
    await until('both instances renewed twice', () => renewals().sent >= 4, 4000);
    expect(renewals()).toEqual({ sent: sentToServer(), failed: 0, reregistered: 0, late: 0 });

    // The server refuses one instance's renewals for a while.
    eureka.failing = (method, path) => (method === 'PUT' && path.includes('10.244.0.5') ? { status: 500, body: 'busy' } : undefined);
    await until('a renewal failed', () => renewals().failed >= 1, 3000);
    eureka.failing = undefined;

    // The server loses the other one: its next renewal gets 404 and it is registered again.
    eureka.apps.get('WEB')!.delete('10.244.0.6:web.shop:8080');
    await until('registered again', () => renewals().reregistered === 1, 3000);
    expect(eureka.summary()).toEqual(['WEB 10.244.0.5:web.shop:8080 UP', 'WEB 10.244.0.6:web.shop:8080 UP']);
    expect(renewals().late).toBe(0);

    // A server that takes 1.5 s to answer: the renewal after the stalled one goes out 2 s after it.
    eureka.renewDelayMs = 1500;
    await until('late renewals counted', () => renewals().late >= 2, 5000);
    eureka.renewDelayMs = 0;
    expect(renewals()).toMatchObject({ sent: sentToServer(), reregistered: 1 });
  }, 15_000);

  it('refuses a renewal interval above the 30 s Eureka servers count on, and a lease that one late renewal would end', () => {
    expect(() => sinkConfig({ renewalIntervalSeconds: 45 })).toThrow(/renewalIntervalSeconds/);
    expect(() => sinkConfig({ renewalIntervalSeconds: 30, leaseDurationSeconds: 40 })).toThrow(/at least twice renewalIntervalSeconds/);
  });

  it('refuses a sink writing into the Eureka server a listed Eureka source reads', () => {
    expect(() =>
      BridgeConfigSchema.parse({
        apiVersion: API_VERSION,
        kind: 'BridgeConfig',
        mesh: { file: '/x' },
        sources: [{ kind: 'kubernetes' }, { kind: 'eureka', servers: ['http://eureka:8761/eureka/'] }],
        sinks: [{ kind: 'eureka', servers: ['http://eureka:8761/eureka/'], from: ['kubernetes', 'eureka'] }],
      }),
    ).toThrow(/source eureka reads the registry this sink writes/);
  });
});
