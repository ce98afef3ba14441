// Pieces of bench/registry.ts around `flb bridge run` and `flb repo` as processes: children that die
// with the benchmark, the repo's plain HTTP, the simulated sidecars (catalog-watchers.ts) and what
// they saw, the bridge's RSS and its connections.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Publisher } from '../../registry-bridge/sinks/repo-publisher.js';

export const flb = fileURLToPath(new URL('../../../bin/flb.js', import.meta.url));
const here = fileURLToPath(new URL('.', import.meta.url));
export const now = () => performance.timeOrigin + performance.now();
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
/** Nearest rank: p99 of 100 samples is the 99th smallest, not the largest. */
export const quantile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.max(0, Math.ceil(p * xs.length) - 1)] ?? Number.NaN;

const children: ChildProcess[] = [];

export function startChild(args: string[], options: { env?: NodeJS.ProcessEnv; stderr?: 'inherit' | 'pipe' } = {}): ChildProcess {
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', process.execPath, ...args], {
    stdio: ['ignore', 'pipe', options.stderr ?? 'inherit'],
    env: { ...process.env, ...options.env },
  });
  children.push(child);
  return child;
}

export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

export function killChildren(): void {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  repoAgent.destroy();
}

export function lines(child: ChildProcess, onLine: (line: string) => void): void {
  createInterface({ input: child.stdout! }).on('line', onLine);
}

export async function startRepo(dataDir: string): Promise<{ child: ChildProcess; url: string }> {
  const child = startChild([flb, 'repo', '--listen', '127.0.0.1:0', '--data-dir', dataDir], { env: { FLB_LOG_LEVEL: 'warn' } });
  const port = await new Promise<number>((resolve) => child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
  return { child, url: `http://127.0.0.1:${port}` };
}

const repoAgent = new HttpAgent({ keepAlive: true, maxSockets: 16 });
export function repoRequest(url: string, method = 'GET', headers: Record<string, string> = {}): Promise<{ status: number; etag: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method, agent: repoAgent, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, etag: String(res.headers.etag ?? ''), body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Keys seen with the times they were seen; waits for a number of them. */
export class Tally {
  private readonly seen = new Map<string, number[]>();
  private readonly waiting = new Map<string, { count: number; resolve: () => void }>();

  add(key: string, at: number): void {
    let times = this.seen.get(key);
    if (!times) this.seen.set(key, (times = []));
    times.push(at);
    const waiter = this.waiting.get(key);
    if (waiter && times.length >= waiter.count) {
      this.waiting.delete(key);
      waiter.resolve();
    }
  }

  /** The times `key` was seen, once there are `count` of them or after `timeoutMs` (then fewer). */
  async until(key: string, count: number, timeoutMs: number): Promise<number[]> {
    if ((this.seen.get(key)?.length ?? 0) < count) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        this.waiting.set(key, {
          count,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
      });
      this.waiting.delete(key);
    }
    const times = this.seen.get(key) ?? [];
    this.seen.delete(key);
    return times;
  }
}

/**
 * Simulated sidecars (catalog-watchers.ts): `<set> <mark>` keys, one time per worker. `mark`: the
 * pattern whose first group is a change's number in the files it moves.
 */
export async function startWatchers(sets: { base: string; codebases: string[] }[], mark?: string): Promise<{ child: ChildProcess; tally: Tally }> {
  const child = startChild([join(here, 'catalog-watchers.js'), JSON.stringify({ sets, ...(mark ? { mark } : {}) })]);
  const tally = new Tally();
  const ready = new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the simulated sidecars exited (${code}) before they were ready`)));
    lines(child, (line) => {
      if (line === 'ready') return resolve();
      const [set, , found, at] = line.split(' ');
      tally.add(`${set} ${found}`, Number(at));
    });
  });
  await ready;
  return { child, tally };
}

/** Sidecar codebases (VM ids) derived from /flb/mesh, `count` of them. */
export async function makeWorkerCodebases(publisher: Publisher, prefix: string, count: number): Promise<string[]> {
  for (let i = 0; i < count; i++) publisher.setSidecar(`vm.${prefix}-w${i}`, new Map([['/sidecar.json', `${JSON.stringify({ worker: i })}\n`]]));
  await publisher.settled();
  return Array.from({ length: count }, (_, i) => `/flb/sidecars/vm.${prefix}-w${i}`);
}

/**
 * When the repo serves `count` services in /flb/mesh (and mesh.json), no draft left: seen by a long
 * poll on the codebase, so the moment is the publish's, not a status poll's.
 */
export async function untilPublished(bridge: ChildProcess, repoUrl: string, count: number, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  let etag: string | undefined;
  while (performance.now() < deadline) {
    if (bridge.exitCode !== null) throw new Error(`the bridge exited (${bridge.exitCode}) before publishing`);
    const head = await repoRequest(`${repoUrl}/repo/flb/mesh/`, 'HEAD', etag === undefined ? {} : { 'if-none-match': etag, prefer: 'wait=5' });
    const at = now();
    if (head.status === 404) {
      await sleep(20);
      continue;
    }
    if (head.status !== 200 && head.status !== 304) throw new Error(`HEAD /repo/flb/mesh/: HTTP ${head.status}`);
    if (head.status === 304 && etag !== undefined) continue;
    etag = head.etag;
    const info = JSON.parse((await repoRequest(`${repoUrl}/api/v1/repo/flb/mesh`)).body) as { files: string[]; editFiles: string[] };
    if (info.files.length >= count + 1 && info.editFiles.length === 0) return at;
  }
  throw new Error(`the bridge did not publish ${count} services within ${timeoutMs / 1000} s`);
}

export const rssOf = (pid: number) => {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(text)?.[1] ?? Number.NaN);
  return { rssMiB: kib('VmRSS') / 1024, peakMiB: kib('VmHWM') / 1024 };
};

/** Established TCP connections process `pid` holds to `port` on this host (ss -p). */
export function connectionsTo(pid: number, port: number): number {
  const out = execFileSync('ss', ['-Htnp', 'state', 'established', 'dport', '=', `:${port}`], { encoding: 'utf8' });
  return out.split('\n').filter((line) => line.includes(`pid=${pid},`)).length;
}
