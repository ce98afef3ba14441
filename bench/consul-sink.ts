// Benchmark of the registry bridge's Consul sink (issue #18), the Consul half of bench/eureka-sink.ts:
// the bridge (in this process: a Kubernetes source and the Consul sink) between the real
// kube-apiserver of devenv/ and a real Consul v1.16.1 dev agent (devenv/consul.ts).
// - Propagation: an EndpointSlice gaining a ready endpoint, until Consul's health endpoint answers
//   the new instance passing (a blocking query on /v1/health/service/<name>?passing, so the answer
//   comes as Consul applies the write), over --changes changes. Floor, in the same run and
//   interleaved with them: a bare client-node informer on the slices of another namespace that
//   registers each new endpoint itself with one PUT /v1/catalog/register (what the sink uses:
//   service and readiness check in one call, on a node of its own) and deregisters each gone one,
//   seen the same way.
// - Writes when nothing changes, at --small and --services Services of 3 endpoints: once
//   everything is registered, every request the sink sends for --quiet-seconds, counted by kind by
//   a proxy in front of Consul: registrations, deregistrations and transactions (the sink's batches;
//   goal: none; the sink writes no TTL checks, so nothing needs renewing) and the reads of its nodes
//   (--nodes, the sink's default unless given) every --resync-seconds. Also how long the first sync took from the first Service created, which
//   at 10,000 is bounded by Consul (its CPU, not the bridge's: registry-bridge/README.md, Sinks).
// Usage: node dist/bench/consul-sink.js [--services 10000 --small 1000 --changes 100 --quiet-seconds 60 --resync-seconds 60 --nodes 16]
import { createServer, request as httpRequest, Agent as HttpAgent } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadavg } from 'node:os';
import { CoreV1Api, DiscoveryV1Api, makeInformer, type V1EndpointSlice } from '@kubernetes/client-node';
import { API_VERSION, BridgeConfigSchema } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { startConsul } from '../devenv/consul.js';
import { startControlPlane } from '../devenv/controlplane.js';
import { startBridge } from '../registry-bridge/bridge.js';
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
const RESYNC_SECONDS = flag('resync-seconds', 60);
/** The sink's nodes; unset: its default (16). */
const NODES = process.argv.includes('--nodes') ? flag('nodes', 16) : undefined;
const ENDPOINTS_PER_SERVICE = 3;
const PROP = 'bench-prop';
const FLOOR = 'bench-floor';
const FLOOR_NODE = 'bench-floor';
const SINK_NODE = 'flb-bench';
const SCALE_NAMESPACES = 10;
const PROP_SERVICES = 10;

const started = performance.now();
const progress = (m: string) => process.stderr.write(`bench: [${((performance.now() - started) / 1000).toFixed(1)} s] ${m}\n`);
const address = (n: number) => `10.${1 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;

type RequestKind = 'register' | 'deregister' | 'txn' | 'read' | 'other';
const kindOf = (method: string | undefined, url: string | undefined): RequestKind => {
  const path = (url ?? '').split('?')[0]!;
  if (method === 'PUT' && path === '/v1/catalog/register') return 'register';
  if (method === 'PUT' && path === '/v1/catalog/deregister') return 'deregister';
  // The sink's batches: up to 32 registrations, check updates or deregistrations each.
  if (method === 'PUT' && path === '/v1/txn') return 'txn';
  if (method === 'GET') return 'read';
  return 'other';
};

/** Between the sink (and the floor) and Consul: every request counted by kind, with the bytes the reads answered. */
async function countingProxy(target: string) {
  const upstreamUrl = new URL(target);
  const counts: Record<RequestKind, number> = { register: 0, deregister: 0, txn: 0, read: 0, other: 0 };
  const readBytes = { total: 0 };
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 64 });
  const server = createServer((req, res) => {
    const kind = kindOf(req.method, req.url);
    counts[kind]++;
    const upstream = httpRequest(
      { host: upstreamUrl.hostname, port: upstreamUrl.port, path: req.url, method: req.method, headers: req.headers, agent },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        if (kind === 'read') answer.on('data', (chunk: Buffer) => (readBytes.total += chunk.length));
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, agent, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, counts, readBytes };
}

/** One request to `base`; the answer's status, X-Consul-Index and body. */
function call(base: string, method: string, path: string, agent: HttpAgent, body?: unknown): Promise<{ status: number; index: string; text: string }> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      new URL(path, base),
      { method, agent, headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {} },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, index: String(res.headers['x-consul-index'] ?? ''), text: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
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
  const log = createLogger('bench-consul-sink', 'warn');
  progress('starting the control plane and Consul');
  const [plane, consul] = await Promise.all([startControlPlane(), startConsul()]);
  const proxy = await countingProxy(consul.url);
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

  // ---- the floor: an informer that registers what it sees and deregisters what went, nothing else
  const floorAgent = new HttpAgent({ keepAlive: true, maxSockets: 16 });
  const floorHeld = new Map<string, Set<string>>();
  const floorWrite = async (path: string, body: unknown) => {
    const answer = await call(proxy.url, 'PUT', path, floorAgent, body);
    if (answer.status !== 200) throw new Error(`floor ${path}: ${answer.status} ${answer.text.slice(0, 200)}`);
  };
  const floorId = (name: string, ip: string) => `${name}.${FLOOR}-${ip.replace(/\./g, '-')}-8080`;
  const floorRegister = (name: string, ip: string) =>
    floorWrite('/v1/catalog/register', {
      Node: FLOOR_NODE,
      Address: '127.0.0.1',
      Service: {
        ID: floorId(name, ip),
        Service: name,
        Address: ip,
        Port: 8080,
        Tags: ['k8s'],
        Meta: { 'flomesh-origin': 'kubernetes', 'external-source': 'kubernetes' },
      },
      Check: { Node: FLOOR_NODE, CheckID: `${floorId(name, ip)}:readiness`, Name: 'Kubernetes readiness', Status: 'passing', ServiceID: floorId(name, ip) },
    });
  const onSlice = (slice: V1EndpointSlice) => {
    const name = slice.metadata?.labels?.['kubernetes.io/service-name'];
    if (!name) return;
    const held = floorHeld.get(name) ?? new Set<string>();
    floorHeld.set(name, held);
    const ready = new Set((slice.endpoints ?? []).filter((e) => e.conditions?.ready !== false).map((e) => e.addresses[0]!));
    for (const ip of ready) {
      if (held.has(ip)) continue;
      held.add(ip);
      void floorRegister(name, ip).catch((error: unknown) => progress(String(error)));
    }
    for (const ip of [...held]) {
      if (ready.has(ip)) continue;
      held.delete(ip);
      void floorWrite('/v1/catalog/deregister', { Node: FLOOR_NODE, ServiceID: floorId(name, ip) }).catch((error: unknown) => progress(String(error)));
    }
  };
  const informer = makeInformer(plane.kubeConfig, `/apis/discovery.k8s.io/v1/namespaces/${FLOOR}/endpointslices`, () =>
    discovery.listNamespacedEndpointSlice({ namespace: FLOOR }),
  );
  informer.on('add', onSlice);
  informer.on('update', onSlice);
  await informer.start();

  // ---- the bridge
  const config = BridgeConfigSchema.parse({
    apiVersion: API_VERSION,
    kind: 'BridgeConfig',
    mesh: { configMap: { namespace: 'flomesh', name: 'flb-mesh' } },
    sources: [{ kind: 'kubernetes', namespaces: { include: ['*'], exclude: [FLOOR, 'flomesh'] } }],
    sinks: [{ kind: 'consul', address: proxy.url, node: SINK_NODE, resyncSeconds: RESYNC_SECONDS, ...(NODES ? { nodes: NODES } : {}) }],
    leaderElection: { enabled: false },
  });
  const bridge = await startBridge({ config, kubeConfig: plane.kubeConfig, log, identity: 'bench' });
  const sinkStatus = () => bridge.status().sinks[0]!;
  const observer = new HttpAgent({ keepAlive: true, maxSockets: 4 });
  /** How many instances the sink's nodes hold (those its writer mark is on, each read whole: only when the count of writes stalls). */
  const onNodes = async () => {
    const marked = `/v1/catalog/nodes?node-meta=${encodeURIComponent(`flomesh-writer:${SINK_NODE}/consul`)}`;
    const nodes = (JSON.parse((await call(consul.url, 'GET', marked, observer)).text) as { Node: string }[] | null) ?? [];
    let held = 0;
    for (const { Node } of nodes)
      held +=
        (JSON.parse((await call(consul.url, 'GET', `/v1/catalog/node-services/${encodeURIComponent(Node)}`, observer)).text) as { Services: unknown[] } | null)
          ?.Services.length ?? 0;
    return held;
  };
  /**
   * Until the sink has made `instances` more writes than `base` and has nothing pending, or, its
   * writes stalled for 5 s with nothing pending, its nodes hold `held`: a transaction Consul applied
   * whose answer was lost (a reset connection) is found by the sink's read and never counted as a write.
   */
  const settled = async (instances: number, what: string, base: number, held: number) => {
    const from = now();
    const deadline = Date.now() + 30 * 60_000;
    let said = 0;
    let last = { writes: -1, at: Date.now() };
    for (;;) {
      const writes = sinkStatus().writes - base;
      if (writes !== last.writes) last = { writes, at: Date.now() };
      if (sinkStatus().pending === 0 && writes >= instances) return now() - from;
      if (sinkStatus().pending === 0 && Date.now() - last.at > 5000) {
        if ((await onNodes()) >= held) return now() - from;
        last.at = Date.now();
      }
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
  await settled(PROP_SERVICES, 'propagation services', 0, PROP_SERVICES);
  const healthPath = (name: string) => `/v1/health/service/${name}?passing=true`;
  /** When Consul first answers `ip` among the passing instances of `name`, watching from `index` with blocking queries. */
  const passingAt = async (name: string, ip: string, index: string) => {
    let at = index;
    for (;;) {
      const answer = await call(consul.url, 'GET', `${healthPath(name)}&index=${at}&wait=30s`, observer);
      const seen = now();
      if (answer.status === 200 && (JSON.parse(answer.text) as { Service: { Address: string } }[]).some((e) => e.Service.Address === ip)) return seen;
      // Consul's rule for a blocking query: an index that went backwards starts over.
      at = Number(answer.index) < Number(at) ? '0' : answer.index;
    }
  };
  const samples = { bridge: [] as number[], floor: [] as number[] };
  for (let change = 0; change < CHANGES * 2; change++) {
    const viaFloor = change % 2 === 1;
    const i = Math.floor(change / 2) % PROP_SERVICES;
    const namespace = viaFloor ? FLOOR : PROP;
    const name = `${viaFloor ? 'floor' : 'prop'}-${i}`;
    const added = address(950_000 + change);
    const index = (await call(consul.url, 'GET', healthPath(name), observer)).index;
    const sent = now();
    await discovery.replaceNamespacedEndpointSlice({ name: `${name}-bench`, namespace, body: sliceBody(name, [...propAddresses(i), added]) });
    const seen = await passingAt(name, added, index);
    (viaFloor ? samples.floor : samples.bridge).push(seen - sent);
    // Back to one endpoint, so the next change adds again (both deregister the one added).
    await discovery.replaceNamespacedEndpointSlice({ name: `${name}-bench`, namespace, body: sliceBody(name, propAddresses(i)) });
    if ((change + 1) % 40 === 0) progress(`propagation: ${(change + 1) / 2} of ${CHANGES} changes each`);
    await sleep(50 + Math.random() * 100);
  }
  await bridge.settled();

  // ---- writes when nothing changes
  /** `createdIn`: how long creating the Services took, from `creating` (when the first was created, as now()). */
  const quiet = async (services: number, created: number, base: number, creating: number, createdIn: number) => {
    const instances = PROP_SERVICES + services * ENDPOINTS_PER_SERVICE;
    await settled(created * ENDPOINTS_PER_SERVICE, `${services} services`, base, instances);
    const syncMs = now() - creating;
    await bridge.settled();
    await sleep(3000);
    const before = { ...proxy.counts };
    const bytesBefore = proxy.readBytes.total;
    const sinkWritesBefore = sinkStatus().writes;
    await sleep(QUIET_SECONDS * 1000);
    const held = await onNodes();
    return {
      services,
      instances,
      heldInConsul: held,
      createSeconds: createdIn / 1000,
      syncSeconds: syncMs / 1000,
      syncedPerSecond: (created * ENDPOINTS_PER_SERVICE) / (syncMs / 1000),
      registrations: proxy.counts.register - before.register,
      deregistrations: proxy.counts.deregister - before.deregister,
      transactions: proxy.counts.txn - before.txn,
      sinkWrites: sinkStatus().writes - sinkWritesBefore,
      reads: proxy.counts.read - before.read,
      readMiB: (proxy.readBytes.total - bytesBefore) / 2 ** 20,
      other: proxy.counts.other - before.other,
      failures: sinkStatus().failures,
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
  let creating = now();
  await create(0, SMALL);
  const small = await quiet(SMALL, SMALL, base, creating, now() - creating);
  progress(`quiet at ${SMALL}: ${JSON.stringify(small)}`);
  let large: typeof small | undefined;
  if (SERVICES > SMALL) {
    progress(`creating ${SERVICES - SMALL} more services`);
    base = sinkStatus().writes;
    creating = now();
    await create(SMALL, SERVICES);
    large = await quiet(SERVICES, SERVICES - SMALL, base, creating, now() - creating);
    progress(`quiet at ${SERVICES}: ${JSON.stringify(large)}`);
  }

  const row = (what: string, xs: number[]) => ({ measure: what, p50: Math.round(quantile(xs, 0.5)), p99: Math.round(quantile(xs, 0.99)), n: xs.length });
  const bridgeRow = row('slice change -> instance passing in Consul, via the bridge (ms)', samples.bridge);
  const floorRow = row('floor: informer -> one catalog register, same check (ms)', samples.floor);
  const file = report(
    'consul-sink',
    `Consul sink (load ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')})`,
    [
      bridgeRow,
      floorRow,
      { measure: 'the bridge adds (goal: at most 200 ms at p99)', p50: bridgeRow.p50 - floorRow.p50, p99: bridgeRow.p99 - floorRow.p99, n: '' },
      { measure: 'ratio to the floor', p50: (bridgeRow.p50 / floorRow.p50).toFixed(2), p99: (bridgeRow.p99 / floorRow.p99).toFixed(2), n: '' },
      ...[small, ...(large ? [large] : [])].map((q) => ({
        measure: `nothing changing, ${q.services} services (${q.instances} instances, ${q.heldInConsul} on its ${NODES ?? 16} nodes), ${QUIET_SECONDS} s: register / deregister / transaction calls (goal: 0 / 0 / 0); reads of its nodes (two a node every ${RESYNC_SECONDS} s resync, and its node list)`,
        p50: `${q.registrations} / ${q.deregistrations} / ${q.transactions}; ${q.reads} reads, ${q.readMiB.toFixed(1)} MiB`,
        p99: '',
        n: `synced ${q.syncSeconds.toFixed(1)} s after the first Service was created (${Math.round(q.syncedPerSecond)} instances/s; creating them took ${q.createSeconds.toFixed(1)} s); failures ${q.failures}; load ${q.load}`,
      })),
    ],
    { samples, small, large, resyncSeconds: RESYNC_SECONDS },
  );
  progress(`results in ${file}`);
  informer.stop();
  await bridge.stop();
  proxy.server.close();
  proxy.agent.destroy();
  floorAgent.destroy();
  observer.destroy();
  await consul.stop();
  await plane.stop();
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`bench: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
