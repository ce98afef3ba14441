// Benchmark of the config center (issue #5): publish latency to N = 10, 100, 1,000 workers
// (pushed by long poll, and polling every 5 s as Pipy workers do), the repo's CPU and RSS with
// 1,000 workers polling over TLS, and the time to publish a 10,000-service catalog and one changed
// service into it (against one changed service in a 100-service catalog, same run).
// Repo on core 0, workers and publisher on core 1. Usage: npm run bench:repo
import { spawn, type ChildProcess } from 'node:child_process';
import { get as httpsGet } from 'node:https';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../common/log.js';
import { createCertificateAuthority, issueCertificate } from '../common/pki.js';
import { Publisher } from '../registry-bridge/sinks/repo-publisher.js';
import { report } from './lib/report.js';

const flb = fileURLToPath(new URL('../../bin/flb.js', import.meta.url));
const here = fileURLToPath(new URL('.', import.meta.url));
const log = createLogger('bench', 'warn');
const progress = (m: string) => process.stderr.write(`bench: ${m}\n`);
const work = mkdtempSync(join(tmpdir(), 'flb-bench-repo-'));
const q = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))] ?? Number.NaN;

async function startRepo(name: string, extra: string[] = []): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(
    'setpriv',
    ['--pdeathsig', 'KILL', '--', 'taskset', '-c', '0', process.execPath, flb, 'repo', '--listen', '127.0.0.1:0', '--data-dir', join(work, name), ...extra],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, FLB_LOG_LEVEL: 'warn' },
    },
  );
  const port = await new Promise<number>((resolve) => child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
  return { child, port };
}

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024;

const catalog = (n: number, changed = -1) =>
  new Map<string, string>([
    ['/mesh.json', '{"name":"flb"}'],
    ...Array.from(
      { length: n },
      (_, i) =>
        [
          `/services/svc-${i}.json`,
          JSON.stringify({ id: `svc-${i}`, endpoints: [{ address: `10.0.${i % 250}.${i % 200}`, port: 8080 }], v: i === changed ? 2 : 1 }),
        ] as [string, string],
    ),
  ]);

async function runWorkers(base: string, codebases: string[], mode: 'push' | 'poll', publish: () => Promise<void>, ca?: string) {
  const child = spawn(
    'taskset',
    ['-c', '1', process.execPath, join(here, 'lib/repo-workers.js'), JSON.stringify({ base, codebases, mode, pollMs: 5000, ...(ca ? { ca } : {}) })],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const received: number[] = [];
  const lines = createInterface({ input: child.stdout! });
  let armed!: () => void;
  const isArmed = new Promise<void>((r) => (armed = r));
  let all!: () => void;
  const allIn = new Promise<void>((r) => (all = r));
  lines.on('line', (line) => {
    if (line === 'armed') armed();
    else {
      received.push((JSON.parse(line) as { at: number }).at);
      if (received.length === codebases.length) all();
    }
  });
  child.stdin!.write('arm\n');
  await isArmed;
  const t0 = performance.timeOrigin + performance.now();
  await publish();
  await Promise.race([allIn, new Promise((r) => setTimeout(r, 15_000))]);
  child.kill('SIGKILL');
  const latencies = received.map((at) => at - t0);
  return { received: received.length, p50: q(latencies, 0.5), p99: q(latencies, 0.99), max: Math.max(...latencies) };
}

const rows: Record<string, string | number>[] = [];
const extra: Record<string, unknown> = {};
try {
  // 1. Publish latency to N workers of N sidecar codebases derived from /flb/mesh.
  const repo = await startRepo('latency');
  // No batching window: what is measured is the repo's publish and push, not the control plane's
  // choice to coalesce changes for 50 ms.
  const publisher = new Publisher({ url: `http://127.0.0.1:${repo.port}`, log, concurrency: 16, batchMs: 0 });
  progress('creating 1,000 sidecar codebases');
  let started = performance.now();
  let version = 0;
  publisher.setMesh(catalog(10, version));
  for (let i = 0; i < 1000; i++) publisher.setSidecar(`pod.bench.w${i}`, new Map([['/sidecar.json', JSON.stringify({ id: i })]]));
  await publisher.settled();
  extra.createSidecarCodebasesMs = performance.now() - started;
  const codebases = Array.from({ length: 1000 }, (_, i) => `/flb/sidecars/pod.bench.w${i}`);
  for (const mode of ['push', 'poll'] as const) {
    for (const n of [10, 100, 1000]) {
      // One publish is one sample of a noisy machine (a disk flush, another process): pushed
      // publishes are repeated and the median round reported, with the worst round beside it.
      const rounds = mode === 'push' ? 5 : 1;
      const results = [];
      for (let round = 0; round < rounds; round++) {
        progress(`${mode}: publish to ${n} workers${rounds > 1 ? ` (round ${round + 1} of ${rounds})` : ''}`);
        results.push(
          await runWorkers(`http://127.0.0.1:${repo.port}`, codebases.slice(0, n), mode, async () => {
            // Every round changes one service file and mesh.json (what each publish moves).
            publisher.setMesh(new Map([...catalog(10, ++version % 10), ['/mesh.json', JSON.stringify({ name: 'flb', version })]]));
            await publisher.settled();
          }),
        );
      }
      const median = [...results].sort((a, b) => a.p99 - b.p99)[Math.floor(results.length / 2)]!;
      rows.push({
        measure: `publish -> all workers have it (${mode})`,
        workers: n,
        rounds,
        received: median.received,
        'p50 ms': median.p50,
        'p99 ms': median.p99,
        'max ms': median.max,
        'worst round p99 ms': Math.max(...results.map((r) => r.p99)),
      });
    }
  }
  publisher.stop();
  repo.child.kill('SIGKILL');

  // 2. CPU and RSS with 1,000 workers polling every 5 s over TLS: minimal clients that keep their
  // connection (as a Pipy worker would), and the sidecar's own worker (node:https, keep-alive).
  const ca = createCertificateAuthority('bench-ca');
  const serving = issueCertificate(ca, { commonName: 'localhost', usage: 'server', ipAddresses: ['127.0.0.1'] });
  writeFileSync(join(work, 'tls.crt'), serving.certPem);
  writeFileSync(join(work, 'tls.key'), serving.keyPem);
  writeFileSync(join(work, 'ca.crt'), ca.certPem);
  const tlsConnections = async (base: string) => {
    const metrics = await new Promise<string>((resolve, reject) => {
      httpsGet(`${base}/metrics`, { ca: ca.certPem }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve(body));
      }).on('error', reject);
    });
    const count = (label: string) => Number(new RegExp(`flb_repo_connections_total\\{tls="${label}"\\} (\\d+)`).exec(metrics)?.[1] ?? 0);
    return { full: count('full-handshake'), resumed: count('resumed') };
  };
  // The latency repo's data, served over TLS (loopback, anonymous: the cost measured is TLS).
  const pollerKinds = [
    { kind: 'minimal keep-alive clients', script: 'lib/repo-workers.js', args: { mode: 'poll' } },
    { kind: "flb's repo worker", script: 'lib/repo-pollers.js', args: {} },
  ];
  for (const { kind, script, args } of pollerKinds) {
    const tlsRepo = await startRepo('latency', ['--tls-cert', join(work, 'tls.crt'), '--tls-key', join(work, 'tls.key')]);
    progress(`1,000 ${kind} polling every 5 s over TLS, 20 s`);
    const base = `https://127.0.0.1:${tlsRepo.port}`;
    const pollers = spawn(
      'taskset',
      ['-c', '1', process.execPath, join(here, script), JSON.stringify({ base, codebases, pollMs: 5000, ca: ca.certPem, ...args })],
      {
        stdio: ['pipe', 'ignore', 'inherit'],
        env: { ...process.env, NODE_EXTRA_CA_CERTS: join(work, 'ca.crt') },
      },
    );
    pollers.stdin!.write('arm\n');
    await new Promise((r) => setTimeout(r, 7000));
    const cpu0 = cpuSeconds(tlsRepo.child.pid!);
    const conns0 = await tlsConnections(base);
    await new Promise((r) => setTimeout(r, 20_000));
    const cpuShare = (cpuSeconds(tlsRepo.child.pid!) - cpu0) / 20;
    const conns1 = await tlsConnections(base);
    const rss = rssMiB(tlsRepo.child.pid!);
    pollers.kill('SIGKILL');
    tlsRepo.child.kill('SIGKILL');
    rows.push({
      measure: `1,000 ${kind} polling every 5 s over TLS`,
      workers: 1000,
      'repo CPU % of a core': 100 * cpuShare,
      'repo RSS MiB': rss,
      'new TLS connections in 20 s (full/resumed)': `${conns1.full - conns0.full}/${conns1.resumed - conns0.resumed}`,
    });
  }

  // 3. Catalog publishing: 10,000 services from scratch, one changed at 10,000 and at 100.
  for (const n of [100, 10_000]) {
    const r = await startRepo(`catalog-${n}`);
    const p = new Publisher({ url: `http://127.0.0.1:${r.port}`, log, concurrency: 16, batchMs: 0 });
    progress(`catalog of ${n} services`);
    const full = catalog(n);
    started = performance.now();
    p.setMesh(full);
    await p.settled();
    const fromScratch = performance.now() - started;
    // As the registry bridge will: one service's file, not the whole catalog again. The first
    // change after a from-scratch publish also pays the file system's flush of those 10,000 new
    // blobs' directory entries, so the steady cost is the median of the changes after it.
    const oneChange = async (v: number) => {
      const changed = JSON.stringify({ id: 'svc-7', endpoints: [{ address: '10.0.7.7', port: 8080 }], v });
      const at = performance.now();
      p.setMeshFile('/services/svc-7.json', changed);
      await p.settled();
      return performance.now() - at;
    };
    const firstChange = await oneChange(2);
    const changes: number[] = [];
    for (let v = 3; v < 13; v++) changes.push(await oneChange(v));
    const oneChanged = q(changes, 0.5);
    rows.push({
      measure: `catalog of ${n} services`,
      'from scratch ms': fromScratch,
      'first change after ms': firstChange,
      'one changed service ms (median of 10)': oneChanged,
    });
    p.stop();
    r.child.kill('SIGKILL');
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
const file = report('repo', 'Config center: publish latency, polling cost, catalog publishing', rows, extra);
progress(`results in ${file}`);
