import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../common/log.js';
import { Repo } from './repo.js';
import { startRepoServer, type RepoServer } from './server.js';
import { DiskStore } from './store/disk.js';
import { repoContract } from './testing/contract.js';

async function startOurs(dir: string): Promise<RepoServer> {
  const repo = await new Repo(await new DiskStore(dir).init()).load();
  return startRepoServer({ repo, host: '127.0.0.1', port: 0, log: createLogger('repo-test', 'silent') });
}

describe('the repo REST API (flb repo)', () => {
  let server: RepoServer;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'flb-repo-test-'));
    server = await startOurs(dir);
  });
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  repoContract(() => `http://127.0.0.1:${server.port}`, 'c');

  // node:http rather than fetch: fetch resolves `..` in paths, and these tests send them on purpose.
  const call = (method: string, path: string, body?: string) =>
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: server.port, method, path }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('error', reject);
      req.end(body);
    });

  it('serves what was published after a restart, exactly', async () => {
    const before = await Promise.all(
      ['/repo/cmesh/', '/repo/csidecar/', '/repo/csidecar/_etags', '/repo/csidecar/mesh.json', '/api/v1/repo/csidecar'].map((p) => call('GET', p)),
    );
    await server.close();
    server = await startOurs(dir);
    const after = await Promise.all(
      ['/repo/cmesh/', '/repo/csidecar/', '/repo/csidecar/_etags', '/repo/csidecar/mesh.json', '/api/v1/repo/csidecar'].map((p) => call('GET', p)),
    );
    // Instances live in memory only (workers report every few seconds).
    after[4]!.text = after[4]!.text.replace(/"instances":\{.*\}\}$/, '');
    before[4]!.text = before[4]!.text.replace(/"instances":\{.*\}\}$/, '');
    expect(after).toEqual(before);
  });

  it.each([
    ['a .. segment', 'POST', '/api/v1/repo/a/../b', '{}', 400, /"\.\." segments are not allowed/],
    ['an encoded NUL', 'POST', '/api/v1/repo/a%00b', '{}', 400, /NUL/],
    ['an over-long name', 'POST', `/api/v1/repo/${'x'.repeat(600)}`, '{}', 400, /1-512 characters/],
    ['a body that is not JSON', 'POST', '/api/v1/repo/fresh', '{nope', 400, /Invalid JSON/],
    ['a bad version', 'PATCH', '/api/v1/repo/cmesh', '{"version":null}', 400, /Invalid version/],
    ['PATCH of a missing codebase', 'PATCH', '/api/v1/repo/missing', '{"version":"1"}', 404, /Codebase not found/],
    ['deleting a base with derived codebases', 'DELETE', '/api/v1/repo/cmesh', undefined, 409, /has derived codebases/],
    ['a draft in a missing codebase', 'POST', '/api/v1/repo-files/missing/x.json', '{}', 404, /Codebase not found/],
    ['a status report for a missing codebase', 'POST', '/repo/missing/', '{}', 404, /Codebase not found/],
    ['nesting one codebase in another', 'POST', '/api/v1/repo/cmesh/inner', '{}', 400, /nested codebases are not supported/],
  ])('refuses %s with a clear 4xx, changing nothing', async (_what, method, path, body, status, message) => {
    const published = await call('GET', '/repo/cmesh/mesh.json');
    const answer = await call(method as string, path as string, body as string | undefined);
    expect(answer.status).toBe(status);
    expect(answer.text).toMatch(message as RegExp);
    expect(await call('GET', '/repo/cmesh/mesh.json')).toEqual(published);
  });

  it('refuses a body over the size limit with 413', async () => {
    const answer = await call('POST', '/api/v1/repo-files/cmesh/big.json', 'x'.repeat(9 * 1024 * 1024));
    expect(answer.status).toBe(413);
    expect((await call('GET', '/api/v1/repo-files/cmesh/big.json')).status).toBe(404);
  });

  it('serialises concurrent writers to one codebase: every write lands', async () => {
    await Promise.all(Array.from({ length: 20 }, (_, i) => call('POST', `/api/v1/repo-files/cmesh/f${i}.json`, String(i))));
    await call('PATCH', '/api/v1/repo/cmesh', '{"version":"10"}');
    const manifest = (await call('GET', '/repo/cmesh/')).text.split('\n');
    for (let i = 0; i < 20; i++) expect(manifest).toContain(`/f${i}.json`);
  });

  it('pushes a publish to a worker waiting with If-None-Match and Prefer: wait (long poll)', async () => {
    const head = async () => (await fetch(`http://127.0.0.1:${server.port}/repo/csidecar/`, { method: 'HEAD' })).headers.get('etag')!;
    const etag = await head();
    const unchanged = await fetch(`http://127.0.0.1:${server.port}/repo/csidecar/`, { headers: { 'if-none-match': etag } });
    expect(unchanged.status).toBe(304);
    const started = performance.now();
    const waiting = fetch(`http://127.0.0.1:${server.port}/repo/csidecar/`, { headers: { 'if-none-match': etag, prefer: 'wait=30' } });
    await new Promise((r) => setTimeout(r, 300));
    // A publish of the base reaches the derived codebase's waiter.
    await call('POST', '/api/v1/repo-files/cmesh/mesh.json', '{"v":"pushed"}');
    const publishedAt = performance.now();
    await call('PATCH', '/api/v1/repo/cmesh', '{"version":"11"}');
    const answer = await waiting;
    const latency = performance.now() - publishedAt;
    expect(answer.status).toBe(200);
    expect(answer.headers.get('etag')).not.toBe(etag);
    expect(performance.now() - started).toBeGreaterThan(250);
    expect(latency).toBeLessThan(1000);
    const timedOut = await fetch(`http://127.0.0.1:${server.port}/repo/csidecar/`, {
      headers: { 'if-none-match': answer.headers.get('etag')!, prefer: 'wait=1' },
    });
    expect(timedOut.status).toBe(304);
  });

  it('exports Prometheus metrics', async () => {
    expect((await call('GET', '/metrics')).text).toMatch(/flb_repo_requests_total\{route="served",status="200"\} \d+/);
  });
});

// The one suite allowed to skip: no registry ships Pipy. PIPY_BIN=/path/to/pipy runs it against a real Pipy repo.
const pipyBin = process.env.PIPY_BIN;
(pipyBin ? describe : describe.skip)(
  `the same contract against a real Pipy repo${pipyBin ? '' : ' (skipped: set PIPY_BIN to a Pipy binary to run it)'}`,
  () => {
    let pipy: ChildProcess;
    const port = 16060 + (process.pid % 1000);
    beforeAll(async () => {
      pipy = spawn(pipyBin!, [`--admin-port=127.0.0.1:${port}`], { stdio: 'ignore' });
      for (let i = 0; i < 100; i++) {
        if (
          await fetch(`http://127.0.0.1:${port}/api/v1/repo`).then(
            (r) => r.ok,
            () => false,
          )
        )
          return;
        await new Promise((r) => setTimeout(r, 100));
      }
    });
    afterAll(() => void pipy?.kill('SIGKILL'));
    repoContract(() => `http://127.0.0.1:${port}`, `p${Date.now()}`);
  },
);
if (!pipyBin) console.warn('repo contract against a real Pipy repo skipped: set PIPY_BIN to a Pipy binary to run it');
