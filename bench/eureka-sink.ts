// Benchmark of the registry bridge's Eureka sink (issue #18): the bridge (in this process: a
// Kubernetes source and the Eureka sink) between the real kube-apiserver of devenv/ and the run's
// real Spring Cloud Eureka server (test-e2e/harness/eureka.ts).
// - Propagation: an EndpointSlice gaining a ready endpoint, until the Eureka server answers the new
//   instance UP (GET apps/<APP>/<id>, polled every 10 ms), over --changes changes. Floor, in the
//   same run and interleaved with them: a bare client-node informer on the slices of another
//   namespace that registers each new endpoint itself (one POST), seen the same way.
// - Writes when nothing changes, at --small and --services Services of 3 endpoints: once
//   everything is registered, every request the sink sends for --quiet-seconds, counted by method
//   by a proxy in front of the server: registrations and cancels (goal: none) and renewals (the
//   instances / renewalIntervalSeconds a second), with the busiest second against the mean.
// Usage: node dist/bench/eureka-sink.js [--services 10000 --small 1000 --changes 100 --quiet-seconds 60 --renewal-seconds 30]
import { createServer, request as httpRequest, Agent as HttpAgent } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadavg } from 'node:os';
import { CoreV1Api, DiscoveryV1Api, makeInformer, type V1EndpointSlice } from '@kubernetes/client-node';
import { API_VERSION, BridgeConfigSchema } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { startControlPlane } from '../devenv/controlplane.js';
import { startBridge } from '../registry-bridge/bridge.js';
import { registrationBody, registrationsOf } from '../registry-bridge/sinks/eureka/instances.js';
import { sharedEurekaServer } from '../test-e2e/harness/eureka.js';
import { now, quantile, sleep } from './lib/bridge-bench.js';
import { report } from './lib/report.js';

const flag = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  const value = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} takes a whole number of at least 1 (got ${process.argv[i + 1]})`);
  return value;
};
const SERVICES = flag('services', 10_000);
const SMALL = flag('small', 1_000);
const CHANGES = flag('changes', 100);
const QUIET_SECONDS = flag('quiet-seconds', 60);
const RENEWAL_SECONDS = flag('renewal-seconds', 30);
const ENDPOINTS_PER_SERVICE = 3;
const PROP = 'bench-prop';
const FLOOR = 'bench-floor';
const SCALE_NAMESPACES = 10;
const PROP_SERVICES = 10;

const started = performance.now();
const progress = (m: string) => process.stderr.write(`bench: [${((performance.now() - started) / 1000).toFixed(1)} s] ${m}\n`);
const address = (n: number) => `10.${1 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;

/** Between the sink (and the floor) and the server: every request counted by method, renewals by second. */
async function countingProxy(target: number) {
  const counts = { POST: 0, PUT: 0, DELETE: 0, GET: 0 } as Record<string, number>;
  const renewalSeconds = new Map<number, number>();
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 256 });
  const server = createServer((req, res) => {
    counts[req.method ?? 'GET'] = (counts[req.method ?? 'GET'] ?? 0) + 1;
    if (req.method === 'PUT') {
      const second = Math.floor(Date.now() / 1000);
      renewalSeconds.set(second, (renewalSeconds.get(second) ?? 0) + 1);
    }
    const upstream = httpRequest({ host: '127.0.0.1', port: target, path: req.url, method: req.method, headers: req.headers, agent }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, agent, port: (server.address() as AddressInfo).port, counts, renewalSeconds };
}

function pool<T>(items: T[], concurrency: number, task: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  return Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) await task(items[next++]!);
    }),
  ).then(() => undefined);
}

const sliceBody = (name: string, addresses: string[]) => ({
  metadata: { name: `${name}-bench`, labels: { 'kubernetes.io/service-name': name, 'endpointslice.kubernetes.io/managed-by': 'bench.flomesh.io' } },
  addressType: 'IPv4',
  ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  endpoints: addresses.map((a) => ({ addresses: [a], conditions: { ready: true } })),
});

async function main(): Promise<void> {
  const log = createLogger('bench-eureka-sink', 'warn');
  progress('starting the control plane and the Eureka server');
  const [plane, eureka] = await Promise.all([startControlPlane(), sharedEurekaServer()]);
  const proxy = await countingProxy(eureka.port);
  const proxied = `http://127.0.0.1:${proxy.port}/eureka/`;
  const core = plane.kubeConfig.makeApiClient(CoreV1Api);
  const discovery = plane.kubeConfig.makeApiClient(DiscoveryV1Api);
  const namespaces = ['flomesh', PROP, FLOOR, ...Array.from({ length: SCALE_NAMESPACES }, (_, i) => `bench-scale-${i}`)];
  for (const name of namespaces) await core.createNamespace({ body: { metadata: { name } } });
  await core.createNamespacedConfigMap({
    namespace: 'flomesh',
    body: { metadata: { name: 'flb-mesh' }, data: { 'mesh.yaml': `apiVersion: ${API_VERSION}\nkind: Mesh\nname: flb\n` } },
  });
  const createService = async (namespace: string, name: string, addresses: string[]) => {
    await core.createNamespacedService({
      namespace,
      body: { metadata: { name }, spec: { clusterIP: 'None', ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] } },
    });
    await discovery.createNamespacedEndpointSlice({ namespace, body: sliceBody(name, addresses) });
  };

  // ---- the floor: an informer that registers what it sees, nothing else
  const floorSeen = new Set<string>();
  const floorRegister = async (name: string, ip: string) => {
    const service = {
      id: `${name}.${FLOOR}`,
      name,
      namespace: FLOOR,
      source: 'kubernetes',
      ports: [{ port: 80 }],
      endpoints: [{ address: ip, port: 8080, healthy: true }],
    };
    const [registration] = registrationsOf(service as never, { servicePrefix: '', namespaceSuffix: false }, { writer: 'floor', mesh: 'flb' }).registrations;
    const body = Buffer.from(JSON.stringify(registrationBody(registration!, { renewalIntervalSeconds: 30, leaseDurationSeconds: 90 }, Date.now())));
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(
        `${proxied}apps/${registration!.app}`,
        { method: 'POST', agent: proxy.agent, headers: { 'content-type': 'application/json', 'content-length': body.length } },
        (res) => {
          res.resume();
          res.on('end', () => (res.statusCode === 204 ? resolve() : reject(new Error(`floor register: ${res.statusCode}`))));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  };
  const informer = makeInformer(plane.kubeConfig, `/apis/discovery.k8s.io/v1/namespaces/${FLOOR}/endpointslices`, () =>
    discovery.listNamespacedEndpointSlice({ namespace: FLOOR }),
  );
  const onSlice = (slice: V1EndpointSlice) => {
    const name = slice.metadata?.labels?.['kubernetes.io/service-name'];
    if (!name) return;
    for (const endpoint of slice.endpoints ?? []) {
      const key = `${name}/${endpoint.addresses[0]}`;
      if (floorSeen.has(key)) continue;
      floorSeen.add(key);
      void floorRegister(name, endpoint.addresses[0]!).catch((error: unknown) => progress(String(error)));
    }
  };
  informer.on('add', onSlice);
  informer.on('update', onSlice);
  await informer.start();

  // ---- the bridge
  const config = BridgeConfigSchema.parse({
    apiVersion: API_VERSION,
    kind: 'BridgeConfig',
    mesh: { configMap: { namespace: 'flomesh', name: 'flb-mesh' } },
    sources: [{ kind: 'kubernetes', namespaces: { include: ['*'], exclude: [FLOOR, 'flomesh'] } }],
    sinks: [{ kind: 'eureka', servers: [proxied], renewalIntervalSeconds: RENEWAL_SECONDS, leaseDurationSeconds: Math.max(90, 3 * RENEWAL_SECONDS) }],
    leaderElection: { enabled: false },
  });
  const bridge = await startBridge({ config, kubeConfig: plane.kubeConfig, log, identity: 'bench' });
  const sinkStatus = () => bridge.status().sinks[0]!;
  /** Until the sink has made `instances` more writes than `base` and has nothing pending. */
  const settled = async (instances: number, what: string, base = 0) => {
    const deadline = Date.now() + 30 * 60_000;
    let said = 0;
    for (;;) {
      const writes = sinkStatus().writes - base;
      if (writes >= instances && sinkStatus().pending === 0) break;
      if (Date.now() > deadline) throw new Error(`${what}: ${writes} of ${instances} registrations after 30 minutes`);
      if (Date.now() - said > 5000) {
        said = Date.now();
        progress(`${what}: ${writes} of ${instances} registered`);
      }
      await sleep(200);
    }
  };

  // ---- propagation, the bridge and the floor interleaved
  const propAddresses = (i: number) => [address(900_000 + i)];
  await pool([...Array(PROP_SERVICES).keys()], 4, (i) => createService(PROP, `prop-${i}`, propAddresses(i)));
  await pool([...Array(PROP_SERVICES).keys()], 4, (i) => createService(FLOOR, `floor-${i}`, propAddresses(i)));
  await settled(PROP_SERVICES, 'propagation services');
  const appAnswersUp = async (app: string, id: string) => {
    for (;;) {
      const status = await new Promise<boolean>((resolve) => {
        const req = httpRequest(`${eureka.url}apps/${app}/${encodeURIComponent(id)}`, { headers: { accept: 'application/json' } }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve(res.statusCode === 200 && body.includes('"status":"UP"')));
        });
        req.on('error', () => resolve(false));
        req.end();
      });
      if (status) return now();
      await sleep(10);
    }
  };
  const samples = { bridge: [] as number[], floor: [] as number[] };
  for (let change = 0; change < CHANGES * 2; change++) {
    const viaFloor = change % 2 === 1;
    const i = Math.floor(change / 2) % PROP_SERVICES;
    const namespace = viaFloor ? FLOOR : PROP;
    const name = `${viaFloor ? 'floor' : 'prop'}-${i}`;
    const added = address(950_000 + change);
    const sent = now();
    await discovery.replaceNamespacedEndpointSlice({ name: `${name}-bench`, namespace, body: sliceBody(name, [...propAddresses(i), added]) });
    const seen = await appAnswersUp(name.toUpperCase(), `${added}:${name}.${namespace}:8080`);
    (viaFloor ? samples.floor : samples.bridge).push(seen - sent);
    // Back to one endpoint, so the next change adds again (the bridge cancels the one it added).
    await discovery.replaceNamespacedEndpointSlice({ name: `${name}-bench`, namespace, body: sliceBody(name, propAddresses(i)) });
    if ((change + 1) % 40 === 0) progress(`propagation: ${(change + 1) / 2} of ${CHANGES} changes each`);
    await sleep(50 + Math.random() * 100);
  }

  // ---- writes when nothing changes
  const quiet = async (services: number, created: number, base: number) => {
    const instances = PROP_SERVICES + services * ENDPOINTS_PER_SERVICE;
    await settled(created * ENDPOINTS_PER_SERVICE, `${services} services`, base);
    await bridge.settled();
    await sleep(3000);
    const before = { ...proxy.counts };
    const from = Math.floor(Date.now() / 1000) + 1;
    await sleep(QUIET_SECONDS * 1000 + 1000);
    const seconds = [...Array(QUIET_SECONDS).keys()].map((s) => proxy.renewalSeconds.get(from + s) ?? 0);
    const mean = seconds.reduce((a, b) => a + b, 0) / seconds.length;
    return {
      services,
      instances,
      registrations: proxy.counts.POST! - before.POST!,
      cancels: proxy.counts.DELETE! - before.DELETE!,
      renewalsPerSecond: mean,
      expectedPerSecond: instances / RENEWAL_SECONDS,
      busiestSecond: Math.max(...seconds),
      quietestSecond: Math.min(...seconds),
      lateRenewals: sinkStatus().lastError?.includes('late') ? sinkStatus().lastError! : 'none',
      load: loadavg()[0]!.toFixed(1),
    };
  };
  const scaleService = (i: number) => ({ namespace: `bench-scale-${i % SCALE_NAMESPACES}`, name: `svc-${i}` });
  const create = async (from: number, to: number) => {
    let made = from;
    let said = Date.now();
    await pool(
      [...Array(to - from).keys()].map((k) => from + k),
      24,
      async (i) => {
        const { namespace, name } = scaleService(i);
        await createService(
          namespace,
          name,
          [0, 1, 2].map((j) => address(i * ENDPOINTS_PER_SERVICE + j)),
        );
        made++;
        if (Date.now() - said > 5000) {
          said = Date.now();
          progress(`created ${made} of ${to} services`);
        }
      },
    );
  };
  progress(`creating ${SMALL} services of ${ENDPOINTS_PER_SERVICE} endpoints`);
  let base = sinkStatus().writes;
  await create(0, SMALL);
  const small = await quiet(SMALL, SMALL, base);
  progress(`quiet at ${SMALL}: ${JSON.stringify(small)}`);
  let large: typeof small | undefined;
  if (SERVICES > SMALL) {
    progress(`creating ${SERVICES - SMALL} more services`);
    base = sinkStatus().writes;
    await create(SMALL, SERVICES);
    large = await quiet(SERVICES, SERVICES - SMALL, base);
    progress(`quiet at ${SERVICES}: ${JSON.stringify(large)}`);
  }

  const row = (what: string, xs: number[]) => ({ measure: what, p50: Math.round(quantile(xs, 0.5)), p99: Math.round(quantile(xs, 0.99)), n: xs.length });
  const bridgeRow = row('slice change -> instance UP in Eureka, via the bridge (ms)', samples.bridge);
  const floorRow = row('floor: informer -> one register, same check (ms)', samples.floor);
  const file = report(
    'eureka-sink',
    `Eureka sink (load ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')})`,
    [
      bridgeRow,
      floorRow,
      { measure: 'the bridge adds at p99 (goal: at most 200 ms)', p50: bridgeRow.p50 - floorRow.p50, p99: bridgeRow.p99 - floorRow.p99, n: '' },
      ...[small, ...(large ? [large] : [])].map((q) => ({
        measure: `nothing changing, ${q.services} services (${q.instances} instances), ${QUIET_SECONDS} s: registrations / cancels / renewals a second (expected) / busiest / quietest second`,
        p50: `${q.registrations} / ${q.cancels} / ${q.renewalsPerSecond.toFixed(1)} (${q.expectedPerSecond.toFixed(1)}) / ${q.busiestSecond} / ${q.quietestSecond}`,
        p99: '',
        n: `late: ${q.lateRenewals}; load ${q.load}`,
      })),
    ],
    { samples, small, large, renewalSeconds: RENEWAL_SECONDS },
  );
  progress(`results in ${file}`);
  informer.stop();
  await bridge.stop();
  proxy.server.close();
  proxy.agent.destroy();
  await eureka.stop();
  await plane.stop();
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`bench: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
