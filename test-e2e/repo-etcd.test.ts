import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { repoContract } from '../repo/testing/contract.js';
import { startControlPlane, type ControlPlane } from './harness/controlplane.js';

/** Two `flb repo` replicas on one etcd (the test control plane's): they serve the same data. */
const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));

async function replica(etcd: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [flb, 'repo', '--listen', '127.0.0.1:0', '--etcd-endpoint', etcd, '--sync-interval', '200ms'], { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, FLB_LOG_LEVEL: 'warn' } });
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

  describe('the REST API contract, on an etcd replica', () => {
    repoContract(() => `http://127.0.0.1:${a.port}`, 'e');
  });
});
