// Benchmark of the control plane (issue #14): `flb bridge run` as a process between a real
// kube-apiserver (devenv/controlplane.ts) and `flb repo` processes, against floors measured in the
// same run.
// - Propagation: an EndpointSlice change in the apiserver until 1,000 simulated sidecars (repo
//   workers long-polling their own codebases, derived from /flb/mesh) hold the new catalog file,
//   over 100 changes at 100 services. Floor: a bare informer (client-node's ListWatch) seeing the
//   same change, plus the repo's own push of that same file to 1,000 workers of another repo (the
//   publisher driven directly), per change.
// - Scale: 10,000 selector-less Services with hand-made EndpointSlices (100,000 endpoints): from
//   starting the bridge to everything published, the bridge's RSS, and the same 100 changes at
//   10,000 services against those at 100.
// - Pod start: injected pods (as the injector makes them) created at 10 per second, until each
//   one's codebase /flb/sidecars/pod.<ns>.<name> serves its sidecar.json; floor: the bare
//   informer seeing the pod.
// Usage: npm run bench:bridge [-- --services 10000 --endpoints 100000 --changes 100 --workers 1000
//        --small 100 --pods 200 --pod-rate 10 --cluster-ips --profile]
// The first 100 Services have ClusterIPs; the others are headless unless --cluster-ips (see
// createServices: allocating 10,000 ClusterIPs takes kube-apiserver minutes).
// --profile writes a CPU profile of the bridge at scale and summarises it (where its time goes).
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync, copyFileSync, mkdirSync } from 'node:fs';
import { Agent as HttpsAgent, request as httpsRequest, type RequestOptions } from 'node:https';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { KubeConfig, V1Pod } from '@kubernetes/client-node';
import jsonpatch from 'fast-json-patch';
import YAML from 'yaml';
import { API_VERSION, defaultMesh, serviceFilePath, serviceId, SIDECAR_INJECTED_LABEL } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { freePorts, startControlPlane } from '../devenv/controlplane.js';
import { injectPod } from '../injector/inject.js';
import { Publisher } from '../registry-bridge/sinks/repo-publisher.js';
import { summariseProfile, type ProfileSummary } from './lib/cpu-profile.js';
import {
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
import { report } from './lib/report.js';

const flag = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  const value = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} takes a whole number of at least 1 (got ${process.argv[i + 1]})`);
  return value;
};
const SERVICES = flag('services', 10_000);
const ENDPOINTS = flag('endpoints', 100_000);
const CHANGES = flag('changes', 100);
const WORKERS = flag('workers', 1000);
const SMALL = Math.min(flag('small', 100), SERVICES);
const PODS = flag('pods', 200);
const POD_RATE = flag('pod-rate', 10);
const PROFILE = process.argv.includes('--profile');
const CLUSTER_IPS = process.argv.includes('--cluster-ips');
const ENDPOINTS_PER_SERVICE = Math.ceil(ENDPOINTS / SERVICES);
if (ENDPOINTS_PER_SERVICE > 1000) throw new Error('at most 1,000 endpoints per service (one EndpointSlice holds 1,000): raise --services or lower --endpoints');
const WAIT_MS = 15_000;

const here = fileURLToPath(new URL('.', import.meta.url));
const log = createLogger('bench', 'warn');
const benchStarted = performance.now();
const progress = (m: string) => process.stderr.write(`bench: [${((performance.now() - benchStarted) / 1000).toFixed(1)} s] ${m}\n`);
/** CLOCK_MONOTONIC microseconds, the clock V8 stamps profile samples with: windows of the bridge's profile. */
const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);
const profileWindows: Record<string, { fromUs: number; toUs: number }> = {};
const work = mkdtempSync(join(tmpdir(), 'flb-bench-bridge-'));

// ---- the apiserver, by plain HTTPS (client-node's per-request cost would slow creating 20,000 objects)

class KubeRest {
  private constructor(
    private readonly server: string,
    private readonly agent: HttpsAgent,
  ) {}

  static async connect(kubeConfig: KubeConfig): Promise<KubeRest> {
    const options: RequestOptions = {};
    await kubeConfig.applyToHTTPSOptions(options);
    const agent = new HttpsAgent({ keepAlive: true, maxSockets: 64, ca: options.ca, cert: options.cert, key: options.key });
    return new KubeRest(kubeConfig.getCurrentCluster()!.server, agent);
  }

  request<T = unknown>(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        new URL(path, this.server),
        {
          method,
          agent: this.agent,
          headers: { accept: 'application/json', ...(payload ? { 'content-type': contentType, 'content-length': payload.length } : {}) },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if ((res.statusCode ?? 0) >= 300) reject(new Error(`${method} ${path}: HTTP ${res.statusCode}: ${text.slice(0, 300)}`));
            else resolve((text ? JSON.parse(text) : undefined) as T);
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

/**
 * Creates the Services and their EndpointSlices of these indexes, in two pools side by side (a
 * slice needs no Service to exist first). `clusterIPs`: the Services get one; otherwise they are
 * headless. kube-apiserver 1.36 allocates ClusterIPs one at a time, each with an IPAddress object
 * (15-20 ms apiece here, slower as they fill the range): 10,000 of them took over 4 minutes, where
 * headless Services go at the apiserver's full rate. For the bridge the two differ only by the VIP
 * in the service's file.
 */
async function createServices(kube: KubeRest, indexes: number[], clusterIPs: boolean): Promise<void> {
  let made = 0;
  let said = performance.now();
  const started = performance.now();
  const pool = async (concurrency: number, task: (i: number) => Promise<unknown>) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(concurrency, indexes.length) }, async () => {
        while (next < indexes.length) {
          await task(indexes[next++]!);
          made++;
          if (performance.now() - said > 5000) {
            said = performance.now();
            const objects = 2 * indexes.length;
            progress(`created ${made.toLocaleString('en')} of ${objects.toLocaleString('en')} objects (${Math.round(made / ((said - started) / 1000))}/s)`);
          }
        }
      }),
    );
  };
  await Promise.all([
    pool(48, (i) =>
      kube.request('POST', `/api/v1/namespaces/${services[i]!.namespace}/services`, {
        metadata: { name: services[i]!.name },
        spec: { ...(clusterIPs ? {} : { clusterIP: 'None' }), ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', appProtocol: 'http' }] },
      }),
    ),
    pool(16, (i) =>
      kube.request('POST', `/apis/discovery.k8s.io/v1/namespaces/${services[i]!.namespace}/endpointslices`, {
        metadata: {
          name: `${services[i]!.name}-bench`,
          labels: { 'kubernetes.io/service-name': services[i]!.name, 'endpointslice.kubernetes.io/managed-by': 'bench.flomesh.io' },
        },
        addressType: 'IPv4',
        ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
        endpoints: endpoints(services[i]!, endpointCount(i)),
      }),
    ),
  ]);
}

// ---- the objects

interface BenchService {
  namespace: string;
  name: string;
  /** Index of its first endpoint among all (addresses are unique across services). */
  first: number;
}

const PROP_NAMESPACE = 'bench-prop';
const SCALE_NAMESPACES = 10;
const services: BenchService[] = Array.from({ length: SERVICES }, (_, i) => ({
  namespace: i < SMALL ? PROP_NAMESPACE : `bench-scale-${(i - SMALL) % SCALE_NAMESPACES}`,
  name: `svc-${i}`,
  first: i * ENDPOINTS_PER_SERVICE,
}));
const endpointCount = (i: number) => Math.max(0, Math.min(ENDPOINTS_PER_SERVICE, ENDPOINTS - i * ENDPOINTS_PER_SERVICE));
const address = (n: number) => `10.${1 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;

/** A change is recognisable wherever it lands: its first endpoint's pod is named mark-<n>. */
function endpoints(svc: BenchService, count: number, mark?: number) {
  return Array.from({ length: count }, (_, j) => ({
    addresses: [address(svc.first + j)],
    conditions: { ready: true, serving: true, terminating: false },
    zone: `zone-${(svc.first + j) % 3}`,
    nodeName: `node-${(svc.first + j) % 50}`,
    targetRef: { kind: 'Pod', namespace: svc.namespace, name: j === 0 && mark !== undefined ? `mark-${mark}` : `${svc.name}-${j}` },
  }));
}

async function changeSlice(kube: KubeRest, i: number, mark: number): Promise<void> {
  const svc = services[i]!;
  await kube.request(
    'PATCH',
    `/apis/discovery.k8s.io/v1/namespaces/${svc.namespace}/endpointslices/${svc.name}-bench`,
    { endpoints: endpoints(svc, endpointCount(i), mark) },
    'application/merge-patch+json',
  );
}

async function createNamespace(kube: KubeRest, name: string, labels: Record<string, string> = {}): Promise<void> {
  await kube.request('POST', '/api/v1/namespaces', { metadata: { name, labels } });
}

// ---- processes

/** The floor informer process (bench/lib/floor-informer.ts): `slice <mark>` and `pod <ns>/<name>` keys. */
async function startFloorInformer(kubeconfigPath: string): Promise<{ child: ChildProcess; tally: Tally }> {
  const child = startChild([join(here, 'lib/floor-informer.js'), kubeconfigPath]);
  const tally = new Tally();
  const ready = new Promise<void>((resolve) =>
    lines(child, (line) => {
      if (line === 'ready') return resolve();
      const at = line.lastIndexOf(' ');
      tally.add(line.slice(0, at), Number(line.slice(at + 1)));
    }),
  );
  await ready;
  return { child, tally };
}

interface BridgeProcess {
  child: ChildProcess;
  startedAt: number;
  /** The bridge's log lines (JSON), as they came. */
  logs: { time: number; level: number; msg: string }[];
}

async function startBridgeProcess(name: string, repoUrl: string, kubeconfigPath: string, profileDir?: string): Promise<BridgeProcess> {
  const config = join(work, `${name}.yaml`);
  writeFileSync(
    config,
    YAML.stringify({
      apiVersion: API_VERSION,
      kind: 'BridgeConfig',
      mesh: { configMap: { namespace: 'flomesh', name: 'flb-mesh' } },
      sources: [{ kind: 'kubernetes' }],
      sinks: [{ kind: 'repo', url: repoUrl }],
      leaderElection: { namespace: 'flomesh', name: `bench-${name}` },
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
      kubeconfigPath,
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
      if (entry.level >= 40) process.stderr.write(`bridge ${name}: [${((entry.time - performance.timeOrigin - benchStarted) / 1000).toFixed(1)} s] ${line}\n`);
    } catch {
      process.stderr.write(`bridge ${name}: ${line}\n`);
    }
  });
  return { child, startedAt, logs };
}

// ---- the measurements

interface ChangeSample {
  /** EndpointSlice PATCH sent -> the bare informer has it. */
  informer: number;
  /** -> the repo serves the bridge's publish (a worker of /flb/mesh itself has it). */
  published: number;
  /** -> every simulated sidecar of the bridge's repo has it (the last one). */
  all: number;
  /** -> half of them have it. */
  median: number;
  received: number;
  /** The floor's push: the publisher's setMeshFile of the same file -> the last of 1,000 floor workers. */
  floorPush?: number;
}

const BRIDGE_SET = 0;
const MESH_SET = 1;
const FLOOR_SET = 2;

async function measureChanges(
  label: string,
  kube: KubeRest,
  floor: Tally,
  watchers: Tally,
  repoUrl: string,
  pick: (i: number) => number,
  firstMark: number,
  floorPush?: Publisher,
): Promise<ChangeSample[]> {
  const samples: ChangeSample[] = [];
  let said = performance.now();
  for (let i = 0; i < CHANGES; i++) {
    const index = pick(i);
    const mark = firstMark + i;
    const t0 = now();
    await changeSlice(kube, index, mark);
    const [informer, published, all] = await Promise.all([
      floor.until(`slice ${mark}`, 1, WAIT_MS),
      watchers.until(`${MESH_SET} ${mark}`, 1, WAIT_MS),
      watchers.until(`${BRIDGE_SET} ${mark}`, WORKERS, WAIT_MS),
    ]);
    const sample: ChangeSample = {
      informer: (informer[0] ?? t0 + WAIT_MS) - t0,
      published: (published[0] ?? t0 + WAIT_MS) - t0,
      all: all.length === WORKERS ? Math.max(...all) - t0 : WAIT_MS,
      median: quantile(all, 0.5) - t0,
      received: all.length,
    };
    if (floorPush) {
      // The same file as the bridge published it, pushed by the publisher alone to the floor's workers.
      const svc = services[index]!;
      const path = `/${serviceFilePath(serviceId({ source: 'kubernetes', name: svc.name, namespace: svc.namespace }))}`;
      const file = await repoRequest(`${repoUrl}/repo/flb/mesh${path}`);
      if (file.status !== 200 || !file.body.includes(`mark-${mark}`))
        throw new Error(`the bridge's repo does not serve ${path} with mark-${mark} (${file.status})`);
      const t1 = now();
      floorPush.setMeshFile(path, file.body);
      const floorAll = await watchers.until(`${FLOOR_SET} ${mark}`, WORKERS, WAIT_MS);
      sample.floorPush = floorAll.length === WORKERS ? Math.max(...floorAll) - t1 : WAIT_MS;
    }
    samples.push(sample);
    if (performance.now() - said > 5000) {
      said = performance.now();
      progress(`${label}: ${i + 1} of ${CHANGES} changes`);
    }
  }
  return samples;
}

const rows: Record<string, string | number>[] = [];
const extra: Record<string, unknown> = {
  loadAverageAtStart: loadavg(),
  sizes: { clusterIPs: CLUSTER_IPS, services: SERVICES, endpoints: ENDPOINTS, changes: CHANGES, workers: WORKERS, small: SMALL, pods: PODS, podRate: POD_RATE },
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

const plane = await startControlPlane({ onProgress: progress });
const kube = await KubeRest.connect(plane.kubeConfig);
try {
  await createNamespace(kube, 'flomesh');
  await kube.request('POST', '/api/v1/namespaces/flomesh/configmaps', {
    metadata: { name: 'flb-mesh' },
    data: { 'mesh.yaml': YAML.stringify({ apiVersion: API_VERSION, kind: 'Mesh', name: 'flb' }) },
  });
  const floorInformer = await startFloorInformer(plane.kubeconfigPath);

  // ---- 1. Propagation at SMALL services, against the floor ---------------------------------------
  await createNamespace(kube, PROP_NAMESPACE);
  progress(`creating ${SMALL} Services with their EndpointSlices`);
  await createServices(kube, [...Array(SMALL).keys()], true);
  const repoSmall = await startRepo(join(work, 'repo-small'));
  const repoFloor = await startRepo(join(work, 'repo-floor'));
  progress('starting the bridge');
  const small = await startBridgeProcess('small', repoSmall.url, plane.kubeconfigPath);
  const smallPublished = await untilPublished(small.child, repoSmall.url, SMALL, 60_000);
  extra.smallStartMs = smallPublished - small.startedAt;
  progress(`the bridge published ${SMALL} services in ${Math.round(smallPublished - small.startedAt)} ms; making ${WORKERS} sidecar codebases on each repo`);
  const sidecarsSmall = new Publisher({ url: repoSmall.url, log, concurrency: 16, batchMs: 0 });
  const smallCodebases = await makeWorkerCodebases(sidecarsSmall, 'bench', WORKERS);
  sidecarsSmall.stop();
  // The floor's repo gets what the bridge's has in /flb/mesh, and its own sidecar codebases.
  const floorPublisher = new Publisher({ url: repoFloor.url, log, concurrency: 16, batchMs: 0 });
  const meshFiles = new Map<string, string>();
  for (const path of JSON.parse((await repoRequest(`${repoSmall.url}/api/v1/repo/flb/mesh`)).body).files as string[]) {
    meshFiles.set(path, (await repoRequest(`${repoSmall.url}/repo/flb/mesh${path}`)).body);
  }
  floorPublisher.setMesh(meshFiles);
  const floorCodebases = await makeWorkerCodebases(floorPublisher, 'floor', WORKERS);
  progress(`starting ${WORKERS} simulated sidecars on each repo`);
  const smallWatchers = await startWatchers([
    { base: repoSmall.url, codebases: smallCodebases },
    { base: repoSmall.url, codebases: ['/flb/mesh'] },
    { base: repoFloor.url, codebases: floorCodebases },
  ]);
  progress(`propagation: ${CHANGES} EndpointSlice changes at ${SMALL} services`);
  const atSmall = await measureChanges('propagation', kube, floorInformer.tally, smallWatchers.tally, repoSmall.url, (i) => i % SMALL, 1, floorPublisher);
  const smallRss = rssOf(small.child.pid!);
  floorPublisher.stop();
  for (const child of [smallWatchers.child, small.child, repoSmall.child, repoFloor.child]) await stopChild(child);

  const bridgeAll = atSmall.map((s) => s.all);
  const floorAll = atSmall.map((s) => s.informer + s.floorPush!);
  rows.push(
    {
      measure: `propagation: slice change -> ${WORKERS} sidecars hold the file (${CHANGES} changes, ${SMALL} services)`,
      'p50 ms': p50(bridgeAll),
      'p99 ms': p99(bridgeAll),
      'floor p50 ms': p50(floorAll),
      'floor p99 ms': p99(floorAll),
      'added p99 ms': p99(bridgeAll) - p99(floorAll),
      goal: 'added p99 <= 50 ms',
      met: verdict(p99(bridgeAll) - p99(floorAll) <= 50),
    },
    {
      measure: '  of which: bare informer sees the change (floor)',
      'p50 ms': p50(atSmall.map((s) => s.informer)),
      'p99 ms': p99(atSmall.map((s) => s.informer)),
    },
    {
      measure: '  of which: informer -> repo serves the bridge publish',
      'p50 ms': p50(atSmall.map((s) => s.published - s.informer)),
      'p99 ms': p99(atSmall.map((s) => s.published - s.informer)),
    },
    {
      measure: `  of which: repo publish -> last of ${WORKERS} sidecars`,
      'p50 ms': p50(atSmall.map((s) => s.all - s.published)),
      'p99 ms': p99(atSmall.map((s) => s.all - s.published)),
    },
    {
      measure: `  floor push: publisher setMeshFile -> last of ${WORKERS} workers`,
      'p50 ms': p50(atSmall.map((s) => s.floorPush!)),
      'p99 ms': p99(atSmall.map((s) => s.floorPush!)),
    },
    { measure: `  half of the ${WORKERS} sidecars hold it`, 'p50 ms': p50(atSmall.map((s) => s.median)), 'p99 ms': p99(atSmall.map((s) => s.median)) },
  );
  sayRows(0);
  extra.propagation = atSmall;
  extra.smallBridgeRss = smallRss;

  const rowsBeforeScale = rows.length;
  // ---- 2. Scale ----------------------------------------------------------------------------------
  for (let n = 0; n < Math.min(SCALE_NAMESPACES, SERVICES - SMALL); n++) await createNamespace(kube, `bench-scale-${n}`);
  progress(
    `creating ${(SERVICES - SMALL).toLocaleString('en')} more ${CLUSTER_IPS ? '' : 'headless '}Services with their EndpointSlices (${ENDPOINTS.toLocaleString('en')} endpoints in all)`,
  );
  const createStarted = performance.now();
  await createServices(kube, [...Array(SERVICES).keys()].slice(SMALL), CLUSTER_IPS);
  extra.createObjectsSeconds = (performance.now() - createStarted) / 1000;
  const repoLarge = await startRepo(join(work, 'repo-large'));
  const profileDir = PROFILE ? join(work, 'profile') : undefined;
  progress(`starting the bridge on ${SERVICES.toLocaleString('en')} services`);
  const startUs = monotonicUs();
  const large = await startBridgeProcess('large', repoLarge.url, plane.kubeconfigPath, profileDir);
  const largePublished = await untilPublished(large.child, repoLarge.url, SERVICES, 120_000);
  profileWindows['start to everything published'] = { fromUs: startUs, toUs: monotonicUs() };
  const startMs = largePublished - large.startedAt;
  const largeRss = rssOf(large.child.pid!);
  const logTime = (msg: string) => large.logs.find((l) => l.msg === msg)?.time;
  const running = logTime('bridge running');
  const synced = logTime('source synced');
  progress(`published ${SERVICES.toLocaleString('en')} services in ${(startMs / 1000).toFixed(1)} s; RSS ${largeRss.rssMiB.toFixed(0)} MiB`);

  const sidecarsLarge = new Publisher({ url: repoLarge.url, log, concurrency: 16, batchMs: 0 });
  const largeCodebases = await makeWorkerCodebases(sidecarsLarge, 'bench', WORKERS);
  sidecarsLarge.stop();
  const largeWatchers = await startWatchers([
    { base: repoLarge.url, codebases: largeCodebases },
    { base: repoLarge.url, codebases: ['/flb/mesh'] },
  ]);
  progress(`${CHANGES} EndpointSlice changes at ${SERVICES.toLocaleString('en')} services`);
  // Spread over every namespace and service, never the small set's only.
  const changesUs = monotonicUs();
  const atLarge = await measureChanges(
    'scale',
    kube,
    floorInformer.tally,
    largeWatchers.tally,
    repoLarge.url,
    (i) => (i * 7919 + SMALL) % SERVICES,
    CHANGES + 1,
  );
  profileWindows[`${CHANGES} changes at ${SERVICES.toLocaleString('en')} services`] = { fromUs: changesUs, toUs: monotonicUs() };
  await stopChild(largeWatchers.child);
  // V8 gives back what start-up left behind once the process has been quiet for a while (its
  // memory reducer, seconds after the last burst of allocation): what the bridge needs to hold
  // 10,000 services is the RSS after that, not the start-up peak.
  await sleep(30_000 - (now() - largePublished));
  const settledRss = rssOf(large.child.pid!);
  const largeAll = atLarge.map((s) => s.all);
  rows.push(
    {
      measure: `scale: bridge start -> ${SERVICES.toLocaleString('en')} services (${ENDPOINTS.toLocaleString('en')} endpoints) published`,
      value: `${(startMs / 1000).toFixed(2)} s`,
      goal: '< 10 s',
      met: verdict(startMs < 10_000),
    },
    ...(running && synced
      ? [
          { measure: '  of which: process start, mesh settings, admin endpoint', value: `${((running - large.startedAt) / 1000).toFixed(2)} s` },
          {
            measure: '  of which: lists (4 informers), then translation to the catalog (publishing starts meanwhile)',
            value: `${((synced - running) / 1000).toFixed(2)} s`,
          },
          { measure: '  of which: publishing what was left when translation ended', value: `${((largePublished - synced) / 1000).toFixed(2)} s` },
        ]
      : []),
    {
      measure: `scale: bridge RSS at ${SERVICES.toLocaleString('en')} services, 30 s after start-up`,
      value: `${settledRss.rssMiB.toFixed(0)} MiB`,
      goal: '< 300 MiB',
      met: verdict(settledRss.rssMiB < 300),
    },
    {
      measure: '  the peak during start-up (VmHWM), and RSS when everything was published',
      value: `${largeRss.peakMiB.toFixed(0)} MiB, ${largeRss.rssMiB.toFixed(0)} MiB`,
      met: `peak ${verdict(largeRss.peakMiB < 300)}`,
    },
    { measure: `  the bridge's RSS at ${SMALL} services (peak)`, value: `${smallRss.rssMiB.toFixed(0)} MiB (${smallRss.peakMiB.toFixed(0)})` },
    {
      measure: `scale: one change at ${SERVICES.toLocaleString('en')} services -> ${WORKERS} sidecars`,
      'p50 ms': p50(largeAll),
      'p99 ms': p99(largeAll),
      value: `x${(p50(largeAll) / p50(bridgeAll)).toFixed(2)} at p50, x${(p99(largeAll) / p99(bridgeAll)).toFixed(2)} at p99 (against ${SMALL})`,
      goal: 'ratio < 1.5',
      met: verdict(p50(largeAll) / p50(bridgeAll) < 1.5),
    },
    {
      measure: `  of which: bare informer sees the change (at ${SERVICES.toLocaleString('en')})`,
      'p50 ms': p50(atLarge.map((s) => s.informer)),
      'p99 ms': p99(atLarge.map((s) => s.informer)),
    },
    {
      measure: '  of which: informer -> repo serves the bridge publish',
      'p50 ms': p50(atLarge.map((s) => s.published - s.informer)),
      'p99 ms': p99(atLarge.map((s) => s.published - s.informer)),
    },
    {
      measure: `  of which: repo publish -> last of ${WORKERS} sidecars`,
      'p50 ms': p50(atLarge.map((s) => s.all - s.published)),
      'p99 ms': p99(atLarge.map((s) => s.all - s.published)),
    },
  );
  sayRows(rowsBeforeScale);
  extra.scale = { startMs, rss: largeRss, settledRss, changes: atLarge, createObjectsSeconds: extra.createObjectsSeconds };

  // ---- 3. Pod start ------------------------------------------------------------------------------
  const podNamespace = 'bench-pods';
  await createNamespace(kube, podNamespace, { 'flomesh.io/inject': 'enabled' });
  await kube.request('POST', `/api/v1/namespaces/${podNamespace}/services`, {
    metadata: { name: 'web' },
    spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http', appProtocol: 'http' }] },
  });
  for (let tries = 0; ; tries++) {
    const account = await kube.request('GET', `/api/v1/namespaces/${podNamespace}/serviceaccounts/default`).catch(() => undefined);
    if (account) break;
    if (tries > 100) throw new Error('kube-controller-manager made no default ServiceAccount in 10 s');
    await sleep(100);
  }
  // What the injector makes of a plain pod: the sidecar, its init container, volumes, the label the bridge selects on.
  const namespaceObject = { metadata: { name: podNamespace, labels: { 'flomesh.io/inject': 'enabled' } } };
  const injectedPod = (name: string): V1Pod => {
    const pod: V1Pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: podNamespace, labels: { app: 'web' } },
      spec: {
        containers: [
          {
            name: 'web',
            image: 'example/web:1',
            ports: [{ name: 'http', containerPort: 8080 }],
            readinessProbe: { httpGet: { path: '/ready', port: 'http' } },
          },
        ],
      },
    };
    const result = injectPod(pod, namespaceObject, { mesh: defaultMesh(), nativeSidecars: true, version: 'bench' });
    if (result.action !== 'inject') throw new Error(`the injector would not inject the benchmark's pod: ${result.action}`);
    const injected = jsonpatch.applyPatch(structuredClone(pod), structuredClone(result.patch), true, false).newDocument;
    if (injected.metadata?.labels?.[SIDECAR_INJECTED_LABEL] !== 'true') throw new Error(`the injected pod lacks the ${SIDECAR_INJECTED_LABEL} label`);
    return injected;
  };
  progress(`pod start: ${PODS} injected pods at ${POD_RATE} per second`);
  const podSamples: { informer: number; created: number; codebase: number }[] = [];
  const startedPods = performance.now();
  const podsUs = monotonicUs();
  const launches: Promise<void>[] = [];
  for (let i = 0; i < PODS; i++) {
    await sleep(startedPods + (i * 1000) / POD_RATE - performance.now());
    const name = `web-${i}`;
    launches.push(
      (async () => {
        const body = injectedPod(name);
        const t0 = now();
        const created = kube.request('POST', `/api/v1/namespaces/${podNamespace}/pods`, body);
        const seen = floorInformer.tally.until(`pod ${podNamespace}/${name}`, 1, WAIT_MS);
        const codebase = `${repoLarge.url}/repo/flb/sidecars/pod.${podNamespace}.${name}/`;
        const deadline = t0 + WAIT_MS;
        // The codebase, polled (a HEAD of one that does not exist costs the repo a map lookup)...
        let createdAt = Number.NaN;
        let head = await repoRequest(codebase, 'HEAD');
        while (head.status !== 200 && now() < deadline) {
          await sleep(5);
          head = await repoRequest(codebase, 'HEAD');
        }
        if (head.status === 200) createdAt = now();
        // ...then its sidecar.json: served from its creation on, the codebase first holds only its
        // base's files; the publish that adds sidecar.json ends a long poll (polling a codebase not
        // published yet costs the repo a merge of its base's 10,000 files each time).
        let publishedAt = Number.NaN;
        while (head.status === 200 && now() < deadline) {
          if ((await repoRequest(`${codebase}sidecar.json`, 'HEAD')).status === 200) {
            publishedAt = now();
            break;
          }
          head = await repoRequest(codebase, 'HEAD', { 'if-none-match': head.etag, prefer: 'wait=5' });
        }
        await created;
        const informerAt = (await seen)[0];
        const since = (at: number) => (Number.isNaN(at) ? WAIT_MS : at - t0);
        podSamples.push({ informer: (informerAt ?? t0 + WAIT_MS) - t0, created: since(createdAt), codebase: since(publishedAt) });
      })(),
    );
  }
  await Promise.all(launches);
  profileWindows['pod start'] = { fromUs: podsUs, toUs: monotonicUs() };
  const podRss = rssOf(large.child.pid!);
  const podFloor = podSamples.map((s) => s.informer);
  const podBridge = podSamples.map((s) => s.codebase);
  rows.push(
    {
      measure: `pod start: pod created -> its sidecar.json served (${PODS} pods at ${POD_RATE}/s, ${SERVICES.toLocaleString('en')} services)`,
      'p50 ms': p50(podBridge),
      'p99 ms': p99(podBridge),
      'floor p50 ms': p50(podFloor),
      'floor p99 ms': p99(podFloor),
      'added p99 ms': p99(podBridge) - p99(podFloor),
      goal: 'added p99 <= 200 ms',
      met: verdict(p99(podBridge) - p99(podFloor) <= 200),
    },
    {
      measure: '  of which: bare informer -> codebase created',
      'p50 ms': p50(podSamples.map((s) => s.created - s.informer)),
      'p99 ms': p99(podSamples.map((s) => s.created - s.informer)),
    },
    {
      measure: '  of which: codebase created -> sidecar.json published',
      'p50 ms': p50(podSamples.map((s) => s.codebase - s.created)),
      'p99 ms': p99(podSamples.map((s) => s.codebase - s.created)),
    },
  );
  sayRows(rows.length - 3);
  extra.podStart = podSamples;
  extra.podStartRss = podRss;

  await stopChild(large.child);
  await stopChild(repoLarge.child);
  if (profileDir) {
    const file = readdirSync(profileDir).find((f) => f.endsWith('.cpuprofile'));
    if (file) {
      const kept = fileURLToPath(new URL('../../bench/results/bridge-profiles/', import.meta.url));
      mkdirSync(kept, { recursive: true });
      copyFileSync(join(profileDir, file), join(kept, 'bridge-at-scale.cpuprofile'));
      const summaries: Record<string, ProfileSummary> = {};
      for (const [phase, window] of Object.entries(profileWindows)) {
        const summary = (summaries[phase] = summariseProfile(join(kept, 'bridge-at-scale.cpuprofile'), 15, window));
        process.stdout.write(`\nThe bridge's CPU, ${phase} (${(summary.busyMs / 1000).toFixed(2)} s busy of ${(summary.wallMs / 1000).toFixed(2)} s):\n`);
        for (const a of summary.byArea.slice(0, 8)) process.stdout.write(`  ${a.selfPercent.toFixed(1).padStart(5)} %  ${a.area}\n`);
        process.stdout.write('  our functions, inclusive:\n');
        for (const f of summary.oursInclusive.slice(0, 10)) process.stdout.write(`  ${f.totalPercent.toFixed(1).padStart(5)} %  ${f.function} (${f.where})\n`);
      }
      extra.profile = summaries;
    }
  }
  await stopChild(floorInformer.child);
} finally {
  killChildren();
  kube.close();
  await plane.stop();
  rmSync(work, { recursive: true, force: true });
}
extra.loadAverageAtEnd = loadavg();
const file = report('bridge', 'Control plane: propagation, scale and pod start against floors measured in the same run', rows, extra);
progress(`results in ${file}`);
