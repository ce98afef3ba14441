import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { repoContract } from '../repo/testing/contract.js';
import { startControlPlane, type ControlPlane } from '../devenv/controlplane.js';

/**
 * Two `flb repo` replicas on one etcd (the test control plane's): they serve the same data, and
 * neither silently overwrites what the other published.
 */
const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));

async function replica(etcd: string, syncInterval = '200ms'): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [flb, 'repo', '--listen', '127.0.0.1:0', '--etcd-endpoint', etcd, '--sync-interval', syncInterval], {
    stdio: ['ignore', 'pipe', 'ignore'],
    env: { ...process.env, FLB_LOG_LEVEL: 'warn' },
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    child.once('exit', (code) => reject(new Error(`flb repo exited (${code})`)));
  });
  return { child, port };
}
const call = async (port: number, method: string, path: string, body?: string, headers: Record<string, string> = {}) => {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
  return { status: res.status, text: await res.text(), etag: res.headers.get('etag') };
};

describe('repo replicas on etcd', () => {
  let plane: ControlPlane;
  let a: { child: ChildProcess; port: number };
  let b: { child: ChildProcess; port: number };
  beforeAll(async () => {
    plane = await startControlPlane();
    a = await replica(plane.etcdUrl);
    b = await replica(plane.etcdUrl);
  });
  afterAll(async () => {
    a?.child.kill('SIGKILL');
    b?.child.kill('SIGKILL');
    await plane?.stop();
  });

  it('serves a publish made on one replica from the other within one sync interval, and wakes its long polls', async () => {
    expect((await call(a.port, 'POST', '/api/v1/repo/flb/mesh', '{"main":"/mesh.json"}')).status).toBe(201);
    await call(a.port, 'POST', '/api/v1/repo-files/flb/mesh/mesh.json', '{"v":1}');
    await call(a.port, 'PATCH', '/api/v1/repo/flb/mesh', '{"version":"1"}');
    await new Promise((r) => setTimeout(r, 500));
    expect(await call(b.port, 'GET', '/repo/flb/mesh/mesh.json')).toMatchObject({ status: 200, text: '{"v":1}' });

    const waiting = call(b.port, 'GET', '/repo/flb/mesh/', undefined, { 'if-none-match': '1', prefer: 'wait=10' });
    const started = performance.now();
    await call(a.port, 'POST', '/api/v1/repo-files/flb/mesh/mesh.json', '{"v":2}');
    await call(a.port, 'PATCH', '/api/v1/repo/flb/mesh', '{"version":"2"}');
    const answer = await waiting;
    expect(answer).toMatchObject({ status: 200, etag: '2' });
    expect(performance.now() - started).toBeLessThan(1500);
  });

  it('keeps serving every acknowledged publish when one replica is killed mid-stream', async () => {
    let acknowledged = 2;
    const deadline = Date.now() + 800;
    for (let v = 3; Date.now() < deadline; v++) {
      await call(a.port, 'POST', '/api/v1/repo-files/flb/mesh/mesh.json', JSON.stringify({ v }));
      if ((await call(a.port, 'PATCH', '/api/v1/repo/flb/mesh', JSON.stringify({ version: String(v) }))).status === 201) acknowledged = v;
    }
    const inFlight = call(a.port, 'PATCH', '/api/v1/repo/flb/mesh', JSON.stringify({ version: String(acknowledged + 1) })).catch(() => undefined);
    a.child.kill('SIGKILL');
    await inFlight;
    await new Promise((r) => setTimeout(r, 600));
    const served = await call(b.port, 'GET', '/repo/flb/mesh/');
    expect(Number(served.etag)).toBeGreaterThanOrEqual(acknowledged);
    expect(JSON.parse((await call(b.port, 'GET', '/repo/flb/mesh/mesh.json')).text).v).toBeGreaterThanOrEqual(acknowledged);
    // A new replica started afterwards serves the same.
    a = await replica(plane.etcdUrl);
    expect((await call(a.port, 'GET', '/repo/flb/mesh/')).etag).toBe(served.etag);
  });

  /** A batch publish of one new file; the writer retries on 409 as it is told to. Returns how many 409s it got. */
  const publishFile = async (port: number, codebase: string, file: string, version: string) => {
    for (let conflicts = 0; ; conflicts++) {
      const answer = await call(port, 'PATCH', `/api/v1/repo${codebase}`, JSON.stringify({ files: { [file]: file }, version }));
      if (answer.status === 201) return conflicts;
      expect(answer).toMatchObject({ status: 409, text: 'codebase changed on another replica; retry' });
    }
  };
  const servedFiles = async (port: number, codebase: string) => (await call(port, 'GET', `/repo${codebase}/`)).text.split('\n').sort();

  it("refuses a publish from a replica that had not seen the other one's (409), and takes the retry", async () => {
    // Replicas that never sync on their own: only the compare in etcd can tell them apart.
    const c = await replica(plane.etcdUrl, '1h');
    expect((await call(c.port, 'POST', '/api/v1/repo/flb/race', '{"main":"/c1.json"}')).status).toBe(201);
    const d = await replica(plane.etcdUrl, '1h');
    try {
      expect(await publishFile(c.port, '/flb/race', '/c1.json', '1')).toBe(0);
      expect(await publishFile(d.port, '/flb/race', '/d1.json', '2')).toBe(1);
      expect(await servedFiles(d.port, '/flb/race')).toEqual(['/c1.json', '/d1.json']);
      expect(await publishFile(c.port, '/flb/race', '/c2.json', '3')).toBe(1);
      expect(await servedFiles(c.port, '/flb/race')).toEqual(['/c1.json', '/c2.json', '/d1.json']);
      // d syncs only when told it is stale; b, syncing every 200 ms, serves all three.
      expect(await servedFiles(d.port, '/flb/race')).toEqual(['/c1.json', '/d1.json']);
      await new Promise((r) => setTimeout(r, 500));
      expect(await servedFiles(b.port, '/flb/race')).toEqual(['/c1.json', '/c2.json', '/d1.json']);
      // A create that another replica made first is refused too (then the codebase exists here).
      expect((await call(c.port, 'POST', '/api/v1/repo/flb/race2', '{}')).status).toBe(201);
      expect((await call(d.port, 'POST', '/api/v1/repo/flb/race2', '{}')).status).toBe(409);
      expect((await call(d.port, 'POST', '/api/v1/repo/flb/race2', '{}')).status).toBe(400);
    } finally {
      c.child.kill('SIGKILL');
      d.child.kill('SIGKILL');
    }
  });

  it('loses no publish when both replicas publish one codebase at once: each is served, or refused with 409 and retried', async () => {
    expect((await call(a.port, 'POST', '/api/v1/repo/flb/both', '{"main":"/a-0.json"}')).status).toBe(201);
    await new Promise((r) => setTimeout(r, 500));
    await Promise.all(
      [a, b].map(async (r, i) => {
        for (let n = 0; n < 15; n++) await publishFile(r.port, '/flb/both', `/${'ab'[i]}-${n}.json`, `${'ab'[i]}${n}`);
      }),
    );
    await new Promise((r) => setTimeout(r, 600));
    const all = ['a', 'b'].flatMap((x) => Array.from({ length: 15 }, (_, n) => `/${x}-${n}.json`)).sort();
    expect(await servedFiles(a.port, '/flb/both')).toEqual(all);
    expect(await servedFiles(b.port, '/flb/both')).toEqual(all);
  });

  describe('the REST API contract, on an etcd replica', () => {
    repoContract(() => `http://127.0.0.1:${a.port}`, 'e');
  });
});
