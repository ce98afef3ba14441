// Benchmark of the registry bridge's Consul and Eureka sources (issue #17): `flb bridge run` as a
// process between a real Consul v1.16.1 (devenv/consul.ts, a dev agent) or the real Spring Eureka
// server (test-e2e/harness/eureka.ts) and `flb repo` processes, against floors measured in the same
// run.
// - Consul propagation: a health check turned critical until 1,000 simulated sidecars (repo workers
//   long-polling their own codebases, derived from /flb/mesh) hold the service's new file, over 100
//   changes at 1,000 services (10 instances each). Floor: a bare blocking query on
//   /v1/health/service/<svc> seeing the flip, plus the repo's own push of that same file to 1,000
//   workers of another repo (the publisher driven directly).
// - Eureka propagation: a new instance registered until the 1,000 sidecars hold it, over 100
//   registrations. Floor: eureka-js-client polling /apps/delta at the bridge's interval
//   (bench/lib/eureka-floor.ts), plus the same push.
// - Consul scale: 10,000 services with 100,000 instances (a passing check each): from starting the
//   bridge to everything published, its RSS, the HTTP connections it holds to Consul, and the same
//   100 changes at 10,000 services against those at 1,000.
// Usage: npm run bench:registry [-- --services 10000 --instances 100000 --small 1000 --changes 100
//        --scale-changes 100 --workers 1000 --eureka-interval 1 --fetch-concurrency 8 --skip-consul --skip-eureka
//        --skip-scale --profile]
// --profile writes a CPU profile of the bridge at scale to bench/results/registry-profiles/.
import type { ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { API_VERSION, serviceFilePath } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { startConsul, type ConsulAgent } from '../devenv/consul.js';
import { freePorts } from '../devenv/controlplane.js';
import { Publisher } from '../registry-bridge/sinks/repo-publisher.js';
import { EurekaRestClient, sharedEurekaServer } from '../test-e2e/harness/eureka.js';
import {
  connectionsTo,
  flb,
  killChildren,
  lines,
  makeWorkerCodebases,
  now,
  quantile,
  repoRequest,
  rssOf,
  sleep,
  startChild,
  startRepo,
  startWatchers,
  stopChild,
  Tally,
  untilPublished,
} from './lib/bridge-bench.js';
import { summariseProfile, type ProfileSummary } from './lib/cpu-profile.js';
import { report } from './lib/report.js';

const flag = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  const value = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} takes a whole number of at least 1 (got ${process.argv[i + 1]})`);
  return value;
};
const SERVICES = flag('services', 10_000);
const INSTANCES = flag('instances', 100_000);
const SMALL = Math.min(flag('small', 1000), SERVICES);
const CHANGES = flag('changes', 100);
const SCALE_CHANGES = flag('scale-changes', CHANGES);
const WORKERS = flag('workers', 1000);
const EUREKA_INTERVAL = flag('eureka-interval', 1);
/** The Consul source's fetchConcurrency (its default when not given): connections held to Consul are this plus 4. */
const FETCH_CONCURRENCY = process.argv.includes('--fetch-concurrency') ? flag('fetch-concurrency', 8) : undefined;
const PROFILE = process.argv.includes('--profile');
const RUN_CONSUL = !process.argv.includes('--skip-consul');
const RUN_EUREKA = !process.argv.includes('--skip-eureka');
const RUN_SCALE = RUN_CONSUL && !process.argv.includes('--skip-scale');
const PER_SERVICE = Math.ceil(INSTANCES / SERVICES);
const SMALL_INSTANCES = SMALL * PER_SERVICE;
if (CHANGES > SMALL_INSTANCES) throw new Error(`--changes at most the instances of the --small services (${SMALL_INSTANCES})`);
const WAIT_MS = 15_000;
const DC = 'dc1';

const log = createLogger('bench', 'warn');
const benchStarted = performance.now();
const progress = (m: string) => process.stderr.write(`bench: [${((performance.now() - benchStarted) / 1000).toFixed(1)} s] ${m}\n`);
const load = () =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
/** CLOCK_MONOTONIC microseconds, the clock V8 stamps profile samples with: windows of the bridge's profile. */
const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);
const work = mkdtempSync(join(tmpdir(), 'flb-bench-registry-'));

// ---- Consul: the catalog, written with its transaction API

const serviceName = (s: number) => `svc-${s}`;
/** Instance k (of all) belongs to service floor(k / PER_SERVICE); its ID is its mark. */
const instanceId = (k: number) => `mark-${k}`;
const address = (k: number) => `10.${1 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`;
/** Many services per node, as on VMs: 100 nodes, instance k on node k % 100. */
const NODES = 100;
const nodeOf = (k: number) => `node-${k % NODES}`;

const consulAgent = new HttpAgent({ keepAlive: true, maxSockets: 16 });
function consulCall(consul: ConsulAgent, method: string, path: string, body?: unknown): Promise<{ status: number; index: string; text: string }> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      new URL(path, consul.url),
      { method, agent: consulAgent, headers: payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {} },
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

/** Consul's limit of operations in one transaction. */
const TXN_OPS = 128;

/**
 * Registers instances [from, to) with a passing check each: a service and a check operation per
 * instance (plus each node once), 128 operations per transaction, 8 transactions at a time. The
 * catalog register endpoint takes one instance per request: 100,000 requests.
 */
async function registerInstances(consul: ConsulAgent, from: number, to: number): Promise<void> {
  if (from === 0) {
    // The nodes first, on their own: a service set on a node no committed transaction has made is refused (409).
    const nodes = Array.from({ length: NODES }, (_, n) => ({ Node: { Verb: 'set', Node: { Node: `node-${n}`, Address: `10.0.0.${n + 1}` } } }));
    for (let i = 0; i < nodes.length; i += TXN_OPS) {
      const answer = await consulCall(consul, 'PUT', '/v1/txn', nodes.slice(i, i + TXN_OPS));
      if (answer.status !== 200) throw new Error(`PUT /v1/txn (nodes): HTTP ${answer.status}: ${answer.text.slice(0, 300)}`);
    }
  }
  const ops: unknown[] = [];
  for (let k = from; k < to; k++) {
    const s = Math.floor(k / PER_SERVICE);
    ops.push({
      Service: {
        Verb: 'set',
        Node: nodeOf(k),
        Service: { ID: instanceId(k), Service: serviceName(s), Address: address(k), Port: 8080, Meta: { protocol: 'http' } },
      },
    });
    ops.push({
      Check: { Verb: 'set', Check: { Node: nodeOf(k), CheckID: `service:${instanceId(k)}`, Name: 'health', Status: 'passing', ServiceID: instanceId(k) } },
    });
  }
  const batches: unknown[][] = [];
  for (let i = 0; i < ops.length; i += TXN_OPS) batches.push(ops.slice(i, i + TXN_OPS));
  let next = 0;
  let said = performance.now();
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < batches.length) {
        const batch = batches[next++]!;
        const answer = await consulCall(consul, 'PUT', '/v1/txn', batch);
        if (answer.status !== 200) throw new Error(`PUT /v1/txn: HTTP ${answer.status}: ${answer.text.slice(0, 300)}`);
        if (performance.now() - said > 5000) {
          said = performance.now();
          progress(`registered ${Math.min(to - from, Math.round((next * TXN_OPS) / 2)).toLocaleString('en')} of ${(to - from).toLocaleString('en')} instances`);
        }
      }
    }),
  );
}

async function setCheck(consul: ConsulAgent, k: number, status: 'passing' | 'critical'): Promise<void> {
  const answer = await consulCall(consul, 'PUT', '/v1/txn', [
    { Check: { Verb: 'set', Check: { Node: nodeOf(k), CheckID: `service:${instanceId(k)}`, Name: 'health', Status: status, ServiceID: instanceId(k) } } },
  ]);
  if (answer.status !== 200) throw new Error(`flipping ${instanceId(k)}: HTTP ${answer.status}: ${answer.text.slice(0, 300)}`);
}

// ---- the bridge

interface BridgeProcess {
  child: ChildProcess;
  startedAt: number;
  logs: { time: number; level: number; msg: string }[];
}

async function startBridgeProcess(name: string, repoUrl: string, source: Record<string, unknown>, profileDir?: string): Promise<BridgeProcess> {
  const meshFile = join(work, 'mesh.yaml');
  writeFileSync(meshFile, YAML.stringify({ apiVersion: API_VERSION, kind: 'Mesh', name: 'flb' }));
  // Nothing here talks to Kubernetes (no kubernetes source, the mesh from a file, no leader election), but the CLI loads a kubeconfig.
  const kubeconfig = join(work, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    YAML.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'none', cluster: { server: 'https://127.0.0.1:1' } }],
      users: [{ name: 'none', user: {} }],
      contexts: [{ name: 'none', context: { cluster: 'none', user: 'none' } }],
      'current-context': 'none',
    }),
  );
  const config = join(work, `${name}.yaml`);
  writeFileSync(
    config,
    YAML.stringify({
      apiVersion: API_VERSION,
      kind: 'BridgeConfig',
      mesh: { file: meshFile },
      sources: [source],
      sinks: [{ kind: 'repo', url: repoUrl }],
      leaderElection: { enabled: false },
    }),
  );
  const [adminPort] = await freePorts(1);
  const startedAt = now();
  const child = startChild(
    [
      ...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : []),
      flb,
      'bridge',
      'run',
      '--config',
      config,
      '--kubeconfig',
      kubeconfig,
      '--admin',
      `127.0.0.1:${adminPort}`,
      '--identity',
      `bench-${name}`,
    ],
    { env: { FLB_LOG_LEVEL: 'info', FLB_LOG_FORMAT: 'json' }, stderr: 'pipe' },
  );
  const logs: BridgeProcess['logs'] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => {
    try {
      const entry = JSON.parse(line) as { time: number; level: number; msg: string };
      logs.push(entry);
      if (entry.level >= 40) process.stderr.write(`bridge ${name}: ${line.slice(0, 400)}\n`);
    } catch {
      process.stderr.write(`bridge ${name}: ${line}\n`);
    }
  });
  return { child, startedAt, logs };
}

const consulSource = (consul: ConsulAgent) => ({
  kind: 'consul',
  address: consul.url,
  datacenter: DC,
  ...(FETCH_CONCURRENCY ? { fetchConcurrency: FETCH_CONCURRENCY } : {}),
});
const consulFile = (s: number) => `/${serviceFilePath(`${serviceName(s)}.${DC}.consul`)}`;

// ---- the measurements

interface ChangeSample {
  /** The change sent -> the floor's client has it (blocking query, eureka-js-client). */
  floorSees: number;
  /** -> the repo serves the bridge's publish (a worker of /flb/mesh itself has it). */
  published: number;
  /** -> every simulated sidecar of the bridge's repo has it (the last one). */
  all: number;
  /** -> half of them have it. */
  median: number;
  /** The floor's push: the publisher's setMeshFile of the same file -> the last of the floor's workers. */
  floorPush?: number;
}

const BRIDGE_SET = 0;
const MESH_SET = 1;
const FLOOR_SET = 2;

/**
 * One change after another: `change(i)` makes change i and resolves with when the floor's client
 * saw it; its mark is `markOf(i)`, and `file(i)` the catalog file it moves (pushed to the floor).
 */
async function measureChanges(
  label: string,
  watchers: Tally,
  repoUrl: string,
  markOf: (i: number) => number,
  change: (i: number, t0: number) => Promise<number>,
  file: (i: number) => string,
  floorPush?: Publisher,
  /**
   * A change waits a random part of this first: with a polling source the next change would
   * otherwise come right after the poll that saw the last one, a whole interval before the next.
   */
  jitterMs = 0,
  count = CHANGES,
): Promise<ChangeSample[]> {
  const samples: ChangeSample[] = [];
  let said = performance.now();
  for (let i = 0; i < count; i++) {
    const mark = markOf(i);
    await sleep(Math.random() * jitterMs);
    const t0 = now();
    const [floorAt, published, all] = await Promise.all([
      change(i, t0),
      watchers.until(`${MESH_SET} ${mark}`, 1, WAIT_MS),
      watchers.until(`${BRIDGE_SET} ${mark}`, WORKERS, WAIT_MS),
    ]);
    const sample: ChangeSample = {
      floorSees: floorAt - t0,
      published: (published[0] ?? t0 + WAIT_MS) - t0,
      all: all.length === WORKERS ? Math.max(...all) - t0 : WAIT_MS,
      median: quantile(all, 0.5) - t0,
    };
    if (floorPush) {
      const path = file(i);
      const served = await repoRequest(`${repoUrl}/repo/flb/mesh${path}`);
      if (served.status !== 200 || !served.body.includes(instanceId(mark)))
        throw new Error(`the bridge's repo does not serve ${path} with ${instanceId(mark)} (${served.status})`);
      const t1 = now();
      floorPush.setMeshFile(path, served.body);
      const floorAll = await watchers.until(`${FLOOR_SET} ${mark}`, WORKERS, WAIT_MS);
      sample.floorPush = floorAll.length === WORKERS ? Math.max(...floorAll) - t1 : WAIT_MS;
    }
    samples.push(sample);
    if (performance.now() - said > 5000) {
      said = performance.now();
      progress(`${label}: ${i + 1} of ${count} changes`);
    }
  }
  return samples;
}

/** A bare blocking query on /v1/health/service/<svc>: when its answer shows instance k critical. */
async function blockingQueryFloor(consul: ConsulAgent, s: number, k: number, flip: () => Promise<void>): Promise<number> {
  const path = `/v1/health/service/${serviceName(s)}`;
  const first = await consulCall(consul, 'GET', path);
  const critical = (text: string) =>
    (JSON.parse(text) as { Service: { ID: string }; Checks: { Status: string }[] }[]).some(
      (e) => e.Service.ID === instanceId(k) && e.Checks.some((c) => c.Status === 'critical'),
    );
  let index = first.index;
  const watch = (async () => {
    for (;;) {
      const answer = await consulCall(consul, 'GET', `${path}?index=${index}&wait=30s`);
      const at = now();
      if (answer.status !== 200) throw new Error(`GET ${path}: HTTP ${answer.status}`);
      if (critical(answer.text)) return at;
      index = answer.index;
    }
  })();
  // The query is in Consul's hands before the flip (it blocks until the index moves).
  await sleep(20);
  await flip();
  return watch;
}

async function prepareRepos(bridgeRepo: string, floorRepo?: string) {
  const sidecars = new Publisher({ url: bridgeRepo, log, concurrency: 16, batchMs: 0 });
  const codebases = await makeWorkerCodebases(sidecars, 'bench', WORKERS);
  sidecars.stop();
  const sets = [
    { base: bridgeRepo, codebases },
    { base: bridgeRepo, codebases: ['/flb/mesh'] },
  ];
  if (!floorRepo) return { sets };
  // The floor's repo gets what the bridge's has in /flb/mesh, and its own sidecar codebases.
  const floorPublisher = new Publisher({ url: floorRepo, log, concurrency: 16, batchMs: 0 });
  const meshFiles = new Map<string, string>();
  for (const path of JSON.parse((await repoRequest(`${bridgeRepo}/api/v1/repo/flb/mesh`)).body).files as string[]) {
    meshFiles.set(path, (await repoRequest(`${bridgeRepo}/repo/flb/mesh${path}`)).body);
  }
  floorPublisher.setMesh(meshFiles);
  const floorCodebases = await makeWorkerCodebases(floorPublisher, 'floor', WORKERS);
  sets.push({ base: floorRepo, codebases: floorCodebases });
  return { sets, floorPublisher };
}

// ---- the report

const rows: Record<string, string | number>[] = [];
const extra: Record<string, unknown> = {
  loadAverageAtStart: loadavg(),
  sizes: {
    services: SERVICES,
    instances: INSTANCES,
    small: SMALL,
    changes: CHANGES,
    scaleChanges: SCALE_CHANGES,
    workers: WORKERS,
    eurekaIntervalSeconds: EUREKA_INTERVAL,
  },
};
/** A phase's rows on stderr as soon as it ends, so a later failure does not lose them. */
const sayRows = (from: number) => {
  const cell = (v: string | number) => (typeof v === 'number' ? v.toFixed(1) : v);
  for (const row of rows.slice(from))
    progress(
      Object.entries(row)
        .map(([k, v], i) => (i === 0 ? String(v).trim() : `${k}: ${cell(v)}`))
        .join('; '),
    );
};
const verdict = (ok: boolean) => (ok ? 'yes' : 'NO');
const p50 = (xs: number[]) => quantile(xs, 0.5);
const p99 = (xs: number[]) => quantile(xs, 0.99);

function propagationRows(what: string, floorName: string, samples: ChangeSample[], goalMs: number): Record<string, string | number>[] {
  const bridgeAll = samples.map((s) => s.all);
  const floorAll = samples.map((s) => s.floorSees + s.floorPush!);
  return [
    {
      measure: `${what} -> ${WORKERS} sidecars hold the file (${CHANGES} changes)`,
      'p50 ms': p50(bridgeAll),
      'p99 ms': p99(bridgeAll),
      'floor p50 ms': p50(floorAll),
      'floor p99 ms': p99(floorAll),
      'added p99 ms': p99(bridgeAll) - p99(floorAll),
      goal: `added p99 <= ${goalMs} ms`,
      met: verdict(p99(bridgeAll) - p99(floorAll) <= goalMs),
    },
    { measure: `  of which: ${floorName} sees it (floor)`, 'p50 ms': p50(samples.map((s) => s.floorSees)), 'p99 ms': p99(samples.map((s) => s.floorSees)) },
    { measure: '  the repo serves the bridge publish', 'p50 ms': p50(samples.map((s) => s.published)), 'p99 ms': p99(samples.map((s) => s.published)) },
    {
      measure: `  repo publish -> last of ${WORKERS} sidecars`,
      'p50 ms': p50(samples.map((s) => s.all - s.published)),
      'p99 ms': p99(samples.map((s) => s.all - s.published)),
    },
    {
      measure: `  floor push: publisher setMeshFile -> last of ${WORKERS} workers`,
      'p50 ms': p50(samples.map((s) => s.floorPush!)),
      'p99 ms': p99(samples.map((s) => s.floorPush!)),
    },
  ];
}

const profileWindows: Record<string, { fromUs: number; toUs: number }> = {};
let consul: ConsulAgent | undefined;
let eurekaClient: EurekaRestClient | undefined;
try {
  // ---- 1. Consul propagation at SMALL services, against the floor -------------------------------
  let atSmall: ChangeSample[] | undefined;
  if (RUN_CONSUL) {
    progress('starting Consul');
    consul = await startConsul({ datacenter: DC });
    progress(`registering ${SMALL.toLocaleString('en')} services with ${SMALL_INSTANCES.toLocaleString('en')} instances (load ${load()})`);
    const registerStarted = performance.now();
    await registerInstances(consul, 0, SMALL_INSTANCES);
    extra.registerSmallSeconds = (performance.now() - registerStarted) / 1000;
    const repoSmall = await startRepo(join(work, 'repo-small'));
    const repoFloor = await startRepo(join(work, 'repo-floor'));
    progress('starting the bridge');
    const small = await startBridgeProcess('consul-small', repoSmall.url, consulSource(consul));
    const smallPublished = await untilPublished(small.child, repoSmall.url, SMALL, 120_000);
    extra.consulSmallStartMs = smallPublished - small.startedAt;
    progress(`the bridge published ${SMALL} services in ${Math.round(smallPublished - small.startedAt)} ms; making ${WORKERS} sidecar codebases on each repo`);
    const { sets, floorPublisher } = await prepareRepos(repoSmall.url, repoFloor.url);
    progress(`starting ${WORKERS} simulated sidecars on each repo`);
    // A flip is recognised by the instance it turned critical; in a delta the file is a JSON string (escaped quotes).
    const criticalMark = /mark-(\d+)\\?",\\?"status\\?":\\?"critical/.source;
    const watchers = await startWatchers(sets, criticalMark);
    const step = Math.floor(SMALL_INSTANCES / CHANGES);
    progress(`Consul propagation: ${CHANGES} checks turned critical at ${SMALL} services (load ${load()})`);
    extra.loadConsulPropagation = loadavg();
    atSmall = await measureChanges(
      'consul propagation',
      watchers.tally,
      repoSmall.url,
      (i) => i * step,
      (i) => blockingQueryFloor(consul!, Math.floor((i * step) / PER_SERVICE), i * step, () => setCheck(consul!, i * step, 'critical')),
      (i) => consulFile(Math.floor((i * step) / PER_SERVICE)),
      floorPublisher,
    );
    extra.consulSmallBridgeRss = rssOf(small.child.pid!);
    floorPublisher!.stop();
    for (const child of [watchers.child, small.child, repoSmall.child, repoFloor.child]) await stopChild(child);
    // Back to passing, so the scale phase starts from a healthy catalog.
    for (let i = 0; i < CHANGES; i++) await setCheck(consul, i * step, 'passing');
    const from = rows.length;
    rows.push(
      ...propagationRows(
        `consul: check turned critical at ${SMALL.toLocaleString('en')} services`,
        'a blocking query on /v1/health/service/<svc>',
        atSmall,
        200,
      ),
    );
    sayRows(from);
    extra.consulPropagation = atSmall;
  }

  // ---- 2. Eureka propagation ---------------------------------------------------------------------
  if (RUN_EUREKA) {
    progress('starting the Eureka server');
    const eureka = await sharedEurekaServer();
    progress(`the Eureka server answered ${(eureka.startedInMs / 1000).toFixed(1)} s after its start`);
    eurekaClient = new EurekaRestClient(eureka.url, 90);
    const APPS = 10;
    // Base instances, never marked: 3 per app.
    for (let a = 0; a < APPS; a++)
      for (let j = 0; j < 3; j++) await eurekaClient.register({ app: `app-${a}`, instanceId: `base-${a}-${j}`, ipAddr: `10.30.${a}.${j + 1}`, port: 8080 });
    const repoBridge = await startRepo(join(work, 'repo-eureka'));
    const repoFloor = await startRepo(join(work, 'repo-eureka-floor'));
    const bridge = await startBridgeProcess('eureka', repoBridge.url, {
      kind: 'eureka',
      servers: [eureka.url],
      intervalSeconds: EUREKA_INTERVAL,
    });
    await untilPublished(bridge.child, repoBridge.url, APPS, 60_000);
    const floorClient = startChild([
      fileURLToPath(new URL('./lib/eureka-floor.js', import.meta.url)),
      JSON.stringify({ host: '127.0.0.1', port: eureka.port, intervalMs: EUREKA_INTERVAL * 1000 }),
    ]);
    const floorTally = new Tally();
    await new Promise<void>((resolve, reject) => {
      floorClient.once('exit', (code) => reject(new Error(`eureka-js-client exited (${code}) before its first fetch`)));
      lines(floorClient, (line) => {
        if (line === 'ready') return resolve();
        const [, mark, at] = line.split(' ');
        floorTally.add(mark!, Number(at));
      });
    });
    const { sets, floorPublisher } = await prepareRepos(repoBridge.url, repoFloor.url);
    const watchers = await startWatchers(sets);
    progress(`Eureka propagation: ${CHANGES} new instances, delta every ${EUREKA_INTERVAL} s (load ${load()})`);
    extra.loadEurekaPropagation = loadavg();
    const appOf = (i: number) => `app-${i % APPS}`;
    const samples = await measureChanges(
      'eureka propagation',
      watchers.tally,
      repoBridge.url,
      (i) => i + 1,
      async (i, t0) => {
        await eurekaClient!.register({ app: appOf(i), instanceId: instanceId(i + 1), ipAddr: `10.31.${(i + 1) >> 8}.${(i + 1) & 255}`, port: 8080 });
        const seen = await floorTally.until(String(i + 1), 1, WAIT_MS);
        return seen[0] ?? t0 + WAIT_MS;
      },
      (i) => `/${serviceFilePath(`${appOf(i)}.eureka.eureka`)}`,
      floorPublisher,
      EUREKA_INTERVAL * 1000,
    );
    floorPublisher!.stop();
    for (const child of [watchers.child, floorClient, bridge.child, repoBridge.child, repoFloor.child]) await stopChild(child);
    for (let i = 0; i < CHANGES; i++) await eurekaClient.cancel(appOf(i), instanceId(i + 1)).catch(() => undefined);
    const from = rows.length;
    rows.push(
      ...propagationRows(`eureka: instance registered (delta every ${EUREKA_INTERVAL} s)`, `eureka-js-client (delta every ${EUREKA_INTERVAL} s)`, samples, 200),
    );
    const bridgeAll = samples.map((s) => s.all);
    const clientOnly = samples.map((s) => s.floorSees);
    rows.push({
      measure: '  against eureka-js-client alone (no push to sidecars)',
      'added p99 ms': p99(bridgeAll) - p99(clientOnly),
      value: `added p50 ${(p50(bridgeAll) - p50(clientOnly)).toFixed(0)} ms`,
    });
    sayRows(from);
    extra.eurekaPropagation = samples;
    await eureka.stop();
  }

  // ---- 3. Consul scale -----------------------------------------------------------------------------
  if (RUN_SCALE && consul) {
    progress(
      `registering ${(SERVICES - SMALL).toLocaleString('en')} more services (${(INSTANCES - SMALL_INSTANCES).toLocaleString('en')} instances) (load ${load()})`,
    );
    const registerStarted = performance.now();
    await registerInstances(consul, SMALL_INSTANCES, INSTANCES);
    extra.registerScaleSeconds = (performance.now() - registerStarted) / 1000;
    progress(`registered in ${(extra.registerScaleSeconds as number).toFixed(1)} s`);
    const repoLarge = await startRepo(join(work, 'repo-large'));
    const profileDir = PROFILE ? join(work, 'profile') : undefined;
    progress(`starting the bridge on ${SERVICES.toLocaleString('en')} services (load ${load()})`);
    const loadAtScaleStart = load();
    const startUs = monotonicUs();
    const large = await startBridgeProcess('consul-large', repoLarge.url, consulSource(consul), profileDir);
    const largePublished = await untilPublished(large.child, repoLarge.url, SERVICES, 180_000);
    profileWindows['start to everything published'] = { fromUs: startUs, toUs: monotonicUs() };
    const startMs = largePublished - large.startedAt;
    const largeRss = rssOf(large.child.pid!);
    const consulPort = Number(new URL(consul.url).port);
    const connectionsAtSync = connectionsTo(large.child.pid!, consulPort);
    const logTime = (msg: string) => large.logs.find((l) => l.msg === msg)?.time;
    const running = logTime('bridge running');
    const listed = logTime('Consul listed');
    // How the source chose to read the catalog (per node or per service, by the counts), and what
    // went wrong meanwhile: a start that fell back to per service after a failed node read is
    // slower for a reason the table would not show otherwise.
    const startReads = large.logs.find((l) => l.msg === 'reading every Consul service') as
      { way?: string; nodes?: number; listed?: number; total?: number } | undefined;
    const startProblems = large.logs.filter((l) => l.level >= 40 && l.time <= largePublished).length;
    progress(`published ${SERVICES.toLocaleString('en')} services in ${(startMs / 1000).toFixed(1)} s; RSS ${largeRss.rssMiB.toFixed(0)} MiB`);

    const { sets } = await prepareRepos(repoLarge.url);
    const watchers = await startWatchers(sets, /mark-(\d+)\\?",\\?"status\\?":\\?"critical/.source);
    // The same instances as at SMALL services (the first ones): the same files, in a larger catalog.
    const step = Math.floor(SMALL_INSTANCES / CHANGES);
    progress(`${SCALE_CHANGES} checks turned critical at ${SERVICES.toLocaleString('en')} services (load ${load()})`);
    const loadAtScaleChanges = load();
    const changesUs = monotonicUs();
    const atLarge = await measureChanges(
      'scale',
      watchers.tally,
      repoLarge.url,
      (i) => i * step,
      async (i) => {
        await setCheck(consul!, i * step, 'critical');
        return now();
      },
      (i) => consulFile(Math.floor((i * step) / PER_SERVICE)),
      undefined,
      0,
      SCALE_CHANGES,
    );
    profileWindows[`${SCALE_CHANGES} changes at ${SERVICES.toLocaleString('en')} services`] = { fromUs: changesUs, toUs: monotonicUs() };
    const connectionsAfterChanges = connectionsTo(large.child.pid!, consulPort);
    await stopChild(watchers.child);
    // What the bridge needs to hold 10,000 services is the RSS once V8 has given back start-up's garbage.
    await sleep(30_000 - (now() - largePublished));
    const settledRss = rssOf(large.child.pid!);
    const largeAll = atLarge.map((s) => s.all);
    const from = rows.length;
    rows.push(
      {
        measure: `scale: bridge start -> ${SERVICES.toLocaleString('en')} Consul services (${INSTANCES.toLocaleString('en')} instances) published`,
        value: `${(startMs / 1000).toFixed(2)} s`,
        goal: '< 10 s',
        met: verdict(startMs < 10_000),
      },
      ...(running && listed
        ? [
            { measure: '  of which: process start, mesh settings, admin endpoint', value: `${((running - large.startedAt) / 1000).toFixed(2)} s` },
            { measure: '  of which: listing and fetching every service (publishing starts meanwhile)', value: `${((listed - running) / 1000).toFixed(2)} s` },
            { measure: '  of which: publishing what was left when the last service was read', value: `${((largePublished - listed) / 1000).toFixed(2)} s` },
          ]
        : []),
      {
        measure: '  the catalog read (how the source chose; warnings and errors in its log until published)',
        value: `${startReads ? `${startReads.way} (${startReads.nodes} nodes, ${startReads.listed} of ${startReads.total} services listed)` : 'not logged'}; ${startProblems} warnings`,
      },
      {
        measure: `scale: bridge RSS at ${SERVICES.toLocaleString('en')} services, 30 s after start-up`,
        value: `${settledRss.rssMiB.toFixed(0)} MiB`,
        goal: '< 300 MiB',
        met: verdict(settledRss.rssMiB < 300),
      },
      {
        measure: '  the peak during start-up (VmHWM), and RSS when everything was published',
        value: `${largeRss.peakMiB.toFixed(0)} MiB, ${largeRss.rssMiB.toFixed(0)} MiB`,
      },
      {
        measure: '  HTTP connections the bridge holds to Consul (after the full sync; after the changes)',
        value: `${connectionsAtSync}; ${connectionsAfterChanges}`,
      },
      {
        measure: `scale: one change at ${SERVICES.toLocaleString('en')} services -> ${WORKERS} sidecars (${SCALE_CHANGES} changes)`,
        'p50 ms': p50(largeAll),
        'p99 ms': p99(largeAll),
        value: atSmall
          ? `x${(p50(largeAll) / p50(atSmall.map((s) => s.all))).toFixed(2)} at p50, x${(p99(largeAll) / p99(atSmall.map((s) => s.all))).toFixed(2)} at p99 (against ${SMALL.toLocaleString('en')})`
          : '',
        goal: 'ratio < 1.5',
        met: atSmall ? verdict(p50(largeAll) / p50(atSmall.map((s) => s.all)) < 1.5) : '',
      },
      {
        measure: '  of which: the repo serves the bridge publish',
        'p50 ms': p50(atLarge.map((s) => s.published)),
        'p99 ms': p99(atLarge.map((s) => s.published)),
      },
      {
        measure: `  of which: repo publish -> last of ${WORKERS} sidecars`,
        'p50 ms': p50(atLarge.map((s) => s.all - s.published)),
        'p99 ms': p99(atLarge.map((s) => s.all - s.published)),
      },
    );
    sayRows(from);
    extra.scale = { startMs, rss: largeRss, settledRss, connectionsAtSync, connectionsAfterChanges, changes: atLarge, loadAtScaleStart, loadAtScaleChanges };
    await stopChild(large.child);
    await stopChild(repoLarge.child);
    if (profileDir) {
      const file = readdirSync(profileDir).find((f) => f.endsWith('.cpuprofile'));
      if (file) {
        const kept = fileURLToPath(new URL('../../bench/results/registry-profiles/', import.meta.url));
        mkdirSync(kept, { recursive: true });
        copyFileSync(join(profileDir, file), join(kept, 'bridge-consul-at-scale.cpuprofile'));
        const summaries: Record<string, ProfileSummary> = {};
        for (const [phase, window] of Object.entries(profileWindows)) {
          const summary = (summaries[phase] = summariseProfile(join(kept, 'bridge-consul-at-scale.cpuprofile'), 15, window));
          process.stdout.write(`\nThe bridge's CPU, ${phase} (${(summary.busyMs / 1000).toFixed(2)} s busy of ${(summary.wallMs / 1000).toFixed(2)} s):\n`);
          for (const a of summary.byArea.slice(0, 8)) process.stdout.write(`  ${a.selfPercent.toFixed(1).padStart(5)} %  ${a.area}\n`);
          process.stdout.write('  our functions, inclusive:\n');
          for (const f of summary.oursInclusive.slice(0, 10))
            process.stdout.write(`  ${f.totalPercent.toFixed(1).padStart(5)} %  ${f.function} (${f.where})\n`);
        }
        extra.profile = summaries;
      }
    }
  }
} finally {
  killChildren();
  eurekaClient?.close();
  consulAgent.destroy();
  await consul?.stop();
  rmSync(work, { recursive: true, force: true });
}
extra.loadAverageAtEnd = loadavg();
// A run of one registry keeps the other's last results.
const resultName = RUN_CONSUL && RUN_EUREKA ? 'registry' : RUN_CONSUL ? 'registry-consul' : 'registry-eureka';
const file = report(resultName, 'Registry bridge (Consul, Eureka): propagation and scale against floors measured in the same run', rows, extra);
progress(`results in ${file}`);
