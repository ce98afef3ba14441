// Benchmark of the repo's replicas on etcd (issue #21): a publish on replica A to workers spread
// over three replicas against the same publish with every worker on A, in the same run (goal: at
// most 20 ms p99 added by the other replicas); publish throughput with etcd against the disk store
// (the ratio); each replica's RSS and CPU while it holds its workers' long polls.
// etcd: three members on loopback (plain HTTP: what is measured is the repo, not TLS). Replicas on
// core 0, workers, publisher and etcd unpinned.
// Usage: npm run bench:repo-etcd -- [--workers 1000] [--rounds 5] [--publishes 200]
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createLogger } from '../common/log.js';
import { testBinary } from '../devenv/cache.js';
import { Publisher } from '../registry-bridge/sinks/repo-publisher.js';
import { report } from './lib/report.js';

const { values: flags } = parseArgs({
  options: { workers: { type: 'string', default: '1000' }, rounds: { type: 'string', default: '5' }, publishes: { type: 'string', default: '200' } },
});
const WORKERS = Number(flags.workers);
const ROUNDS = Number(flags.rounds);
const PUBLISHES = Number(flags.publishes);

const flb = fileURLToPath(new URL('../../bin/flb.js', import.meta.url));
const here = fileURLToPath(new URL('.', import.meta.url));
const log = createLogger('bench', 'warn');
const progress = (m: string) => process.stderr.write(`bench: ${m}\n`);
const work = mkdtempSync(join(tmpdir(), 'flb-bench-repo-etcd-'));
const children: ChildProcess[] = [];
const q = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))] ?? Number.NaN;

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024;

async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Server>((resolve) =>
          createServer().listen(0, '127.0.0.1', function (this: Server) {
            resolve(this);
          }),
        ),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

async function startEtcd(): Promise<string[]> {
  const ports = await freePorts(6);
  const cluster = [0, 1, 2].map((i) => `m${i}=http://127.0.0.1:${ports[2 * i + 1]}`).join(',');
  const endpoints = [0, 1, 2].map((i) => `http://127.0.0.1:${ports[2 * i]}`);
  for (const i of [0, 1, 2]) {
    const child = spawn(
      'setpriv',
      [
        '--pdeathsig',
        'KILL',
        '--',
        testBinary('etcd'),
        `--name=m${i}`,
        `--data-dir=${join(work, `m${i}`)}`,
        `--listen-client-urls=${endpoints[i]}`,
        `--advertise-client-urls=${endpoints[i]}`,
        `--listen-peer-urls=http://127.0.0.1:${ports[2 * i + 1]}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${ports[2 * i + 1]}`,
        `--initial-cluster=${cluster}`,
        '--log-level=error',
      ],
      { stdio: 'ignore' },
    );
    children.push(child);
  }
  for (const endpoint of endpoints) {
    for (let tries = 0; ; tries++) {
      const ok = await fetch(`${endpoint}/health`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) break;
      if (tries > 300) throw new Error(`etcd at ${endpoint} did not start`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return endpoints;
}

async function startRepo(store: string[]): Promise<{ child: ChildProcess; base: string }> {
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'taskset', '-c', '0', process.execPath, flb, 'repo', '--listen', '127.0.0.1:0', ...store], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, FLB_LOG_LEVEL: 'warn' },
  });
  children.push(child);
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    child.once('exit', (code) => reject(new Error(`flb repo exited (${code})`)));
  });
  return { child, base: `http://127.0.0.1:${port}` };
}

/** Long-polling workers (bench/lib/repo-workers.ts), one process per replica; resolves when armed. */
async function armWorkers(groups: { base: string; codebases: string[] }[]) {
  const received: number[] = [];
  const total = groups.reduce((n, g) => n + g.codebases.length, 0);
  let all!: () => void;
  const allIn = new Promise<void>((r) => (all = r));
  const processes = await Promise.all(
    groups.map(async ({ base, codebases }) => {
      const child = spawn(process.execPath, [join(here, 'lib/repo-workers.js'), JSON.stringify({ base, codebases, mode: 'push', pollMs: 5000 })], {
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      const lines = createInterface({ input: child.stdout! });
      const armed = new Promise<void>((resolve) =>
        lines.on('line', (line) => {
          if (line === 'armed') resolve();
          else {
            received.push((JSON.parse(line) as { at: number }).at);
            if (received.length === total) all();
          }
        }),
      );
      child.stdin!.write('arm\n');
      await armed;
      return child;
    }),
  );
  return {
    /** Latencies of every worker from t0 (epoch ms), waiting at most 15 s. */
    async after(t0: number) {
      await Promise.race([allIn, new Promise((r) => setTimeout(r, 15_000))]);
      for (const child of processes) child.kill('SIGKILL');
      return { received: received.length, latencies: received.map((at) => at - t0) };
    },
  };
}

const rows: Record<string, string | number>[] = [];
const extra: Record<string, unknown> = { workers: WORKERS, rounds: ROUNDS };
try {
  progress('starting three etcd members and three repo replicas');
  const endpoints = await startEtcd();
  const etcdArgs = ['--etcd-endpoint', endpoints.join(',')];
  const replicas = [await startRepo(etcdArgs), await startRepo(etcdArgs), await startRepo(etcdArgs)];
  const [a] = replicas as [(typeof replicas)[0]];
  const publisher = new Publisher({ url: a.base, log, concurrency: 16, batchMs: 0 });
  progress(`creating ${WORKERS} sidecar codebases on replica A`);
  let version = 0;
  const mesh = () => new Map([['/mesh.json', JSON.stringify({ name: 'flb', version })]]);
  publisher.setMesh(mesh());
  for (let i = 0; i < WORKERS; i++) publisher.setSidecar(`pod.bench.w${i}`, new Map([['/sidecar.json', JSON.stringify({ id: i })]]));
  await publisher.settled();
  const codebases = Array.from({ length: WORKERS }, (_, i) => `/flb/sidecars/pod.bench.w${i}`);
  // Every replica has taken in the last codebase before the rounds start.
  for (const replica of replicas) {
    while ((await fetch(`${replica.base}/repo${codebases.at(-1)}/`)).status !== 200) await new Promise((r) => setTimeout(r, 100));
  }

  // 1. Publish on A: all workers on A, then the same spread over A, B, C; alternated, ROUNDS each.
  const results: Record<'one' | 'three', number[][]> = { one: [], three: [] };
  const cpu0 = replicas.map((r) => cpuSeconds(r.child.pid!));
  const started = performance.now();
  for (let round = 0; round < ROUNDS; round++) {
    for (const layout of ['one', 'three'] as const) {
      progress(`round ${round + 1} of ${ROUNDS}: publish on A to ${WORKERS} workers on ${layout === 'one' ? 'A' : 'A, B and C'}`);
      const groups =
        layout === 'one'
          ? [{ base: a.base, codebases }]
          : replicas.map((replica, r) => ({ base: replica.base, codebases: codebases.filter((_, i) => i % 3 === r) }));
      const workers = await armWorkers(groups);
      const t0 = performance.timeOrigin + performance.now();
      version++;
      publisher.setMesh(mesh());
      await publisher.settled();
      const { received, latencies } = await workers.after(t0);
      if (received < WORKERS) progress(`only ${received} of ${WORKERS} workers had the publish within 15 s`);
      results[layout].push(latencies);
    }
  }
  const seconds = (performance.now() - started) / 1000;
  const roundStats = (layout: 'one' | 'three') => {
    const p99s = results[layout].map((l) => q(l, 0.99));
    const median = results[layout][p99s.indexOf(q(p99s, 0.5))]!;
    return { p50: q(median, 0.5), p99: q(median, 0.99), worst: Math.max(...p99s) };
  };
  const one = roundStats('one');
  const three = roundStats('three');
  rows.push({ measure: `publish on A -> ${WORKERS} workers, all on A (median round)`, 'p50 ms': one.p50, 'p99 ms': one.p99, 'worst round p99 ms': one.worst });
  rows.push({
    measure: `publish on A -> ${WORKERS} workers over A, B, C (median round)`,
    'p50 ms': three.p50,
    'p99 ms': three.p99,
    'worst round p99 ms': three.worst,
    'p99 added ms (goal <= 20)': three.p99 - one.p99,
  });
  replicas.forEach((replica, r) =>
    rows.push({
      measure: `replica ${'ABC'[r]} during the rounds`,
      'RSS MiB': rssMiB(replica.child.pid!),
      'CPU % of a core': (100 * (cpuSeconds(replica.child.pid!) - cpu0[r]!)) / seconds,
    }),
  );
  publisher.stop();

  // 2. Publish throughput: one changed file per publish, one after another, etcd against disk.
  const throughput = async (base: string) => {
    const codebase = '/flb/throughput';
    await fetch(`${base}/api/v1/repo${codebase}`, { method: 'POST', body: '{"main":"/f.json"}' });
    const at = performance.now();
    for (let i = 1; i <= PUBLISHES; i++) {
      const answer = await fetch(`${base}/api/v1/repo${codebase}`, {
        method: 'PATCH',
        body: JSON.stringify({ files: { '/f.json': `{"v":${i}}` }, version: String(i) }),
      });
      if (answer.status !== 201) throw new Error(`publish ${i}: ${answer.status} ${await answer.text()}`);
    }
    return PUBLISHES / ((performance.now() - at) / 1000);
  };
  progress(`${PUBLISHES} publishes on etcd, then on disk`);
  const onEtcd = await throughput(a.base);
  const disk = await startRepo(['--data-dir', join(work, 'disk')]);
  const onDisk = await throughput(disk.base);
  rows.push({ measure: `publishes per second, one after another (${PUBLISHES})`, etcd: onEtcd, disk: onDisk, 'etcd / disk': onEtcd / onDisk });
} finally {
  for (const child of children) child.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
}
const file = report('repo-etcd', 'Config center replicas on etcd: publish to workers over three replicas, throughput, cost', rows, extra);
progress(`results in ${file}`);
