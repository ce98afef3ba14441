import { describe, expect, it } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Durability of `flb repo`: kill -9 during a stream of writes and publishes, restart, and every
 * acknowledged publish is served intact; and, since kill -9 never loses the page cache, a fault
 * hook that kills the process after each step of the write protocol.
 */
const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));

async function startRepo(dataDir: string, env: Record<string, string> = {}): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [flb, 'repo', '--listen', '127.0.0.1:0', '--data-dir', dataDir], { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, FLB_LOG_LEVEL: 'warn', ...env } });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    child.once('exit', (code) => reject(new Error(`flb repo exited (${code})`)));
  });
  return { child, port };
}

const exited = (child: ChildProcess) => new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())));

async function call(port: number, method: string, path: string, body?: string): Promise<{ status: number; text: string; etag: string | null }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method, ...(body !== undefined ? { body } : {}) });
  return { status: res.status, text: await res.text(), etag: res.headers.get('etag') };
}

async function publish(port: number, version: number): Promise<boolean> {
  try {
    if ((await call(port, 'POST', '/api/v1/repo-files/flb/mesh/v.json', JSON.stringify({ v: version }))).status !== 201) return false;
    return (await call(port, 'PATCH', '/api/v1/repo/flb/mesh', JSON.stringify({ version }))).status === 201;
  } catch {
    return false;
  }
}

describe('flb repo durability', () => {
  it('serves every acknowledged publish intact after kill -9 in a stream of publishes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flb-repo-crash-'));
    try {
      let { child, port } = await startRepo(dir);
      expect((await call(port, 'POST', '/api/v1/repo/flb/mesh', '{"main":"/v.json"}')).status).toBe(201);
      let acknowledged = 0;
      const killAt = Date.now() + 1500;
      for (let v = 1; ; v++) {
        if (Date.now() >= killAt) {
          // Kill while a publish is in flight, not between two.
          const inFlight = publish(port, v);
          child.kill('SIGKILL');
          if (await inFlight) acknowledged = v;
          break;
        }
        if (!(await publish(port, v))) break;
        acknowledged = v;
      }
      await exited(child);
      expect(acknowledged).toBeGreaterThan(20);
      ({ child, port } = await startRepo(dir));
      try {
        const manifest = await call(port, 'GET', '/repo/flb/mesh/');
        const served = Number(manifest.etag);
        // The publish in flight when killed may or may not have landed; nothing acknowledged is lost.
        expect(served === acknowledged || served === acknowledged + 1).toBe(true);
        expect(JSON.parse((await call(port, 'GET', '/repo/flb/mesh/v.json')).text)).toEqual({ v: served });
      } finally {
        child.kill('SIGKILL');
        await exited(child);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // Writes: 1 create, 2-3 draft v1 (blob, record), 4 publish v1, 5-6 draft v2, 7 publish v2.
  it.each([
    ['temp-written', '1'],
    ['temp-synced', '1'],
    ['renamed', '2'],
    ['dir-synced', '2'],
  ])('a crash after step %s of publishing v2 leaves version %s served whole', async (step, expected) => {
    const dir = mkdtempSync(join(tmpdir(), 'flb-repo-fault-'));
    try {
      let { child, port } = await startRepo(dir, { FLB_REPO_CRASH_AFTER: `${step}:7` });
      expect((await call(port, 'POST', '/api/v1/repo/flb/mesh', '{"main":"/v.json"}')).status).toBe(201);
      expect(await publish(port, 1)).toBe(true);
      expect(await publish(port, 2)).toBe(false);
      await exited(child);
      expect(child.signalCode).toBe('SIGKILL');
      ({ child, port } = await startRepo(dir));
      try {
        const manifest = await call(port, 'GET', '/repo/flb/mesh/');
        expect(manifest.etag).toBe(expected);
        expect(JSON.parse((await call(port, 'GET', '/repo/flb/mesh/v.json')).text)).toEqual({ v: Number(expected) });
        // What the crash left half-written is gone, never served.
        expect(readdirSync(join(dir, 'codebases')).filter((f) => f.endsWith('.tmp'))).toEqual([]);
      } finally {
        child.kill('SIGKILL');
        await exited(child);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
