import { describe, expect, it } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Durability of `flb repo`: kill -9 during a stream of writes and publishes, restart, and every
 * acknowledged publish is served intact; and, since kill -9 never loses the page cache, a fault
 * hook that kills the process after each step of the write protocol (a publish's journal append,
 * and the snapshot that compacts a journal), and a journal whose last line a crash cut short.
 */
const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));

async function startRepo(dataDir: string, env: Record<string, string> = {}): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [flb, 'repo', '--listen', '127.0.0.1:0', '--data-dir', dataDir], {
    stdio: ['ignore', 'pipe', 'ignore'],
    env: { ...process.env, FLB_LOG_LEVEL: 'warn', ...env },
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    child.once('exit', (code) => reject(new Error(`flb repo exited (${code})`)));
  });
  return { child, port };
}

const exited = (child: ChildProcess) =>
  new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())));

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

const served = async (port: number) => {
  const manifest = await call(port, 'GET', '/repo/flb/mesh/');
  const content = await call(port, 'GET', '/repo/flb/mesh/v.json');
  return {
    etag: manifest.etag,
    files: manifest.text.split('\n').length,
    v: content.status === 200 ? (JSON.parse(content.text) as { v: number }).v : undefined,
  };
};

async function withRepo<T>(dir: string, work: (port: number) => Promise<T>): Promise<T> {
  const { child, port } = await startRepo(dir);
  try {
    return await work(port);
  } finally {
    child.kill('SIGKILL');
    await exited(child);
  }
}

const codebaseFiles = (dir: string) => readdirSync(join(dir, 'codebases'));

describe('flb repo durability', () => {
  it('serves every acknowledged publish intact after kill -9 in a stream of publishes, again and again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flb-repo-crash-'));
    try {
      let { child, port } = await startRepo(dir);
      expect((await call(port, 'POST', '/api/v1/repo/flb/mesh', '{"main":"/v.json"}')).status).toBe(201);
      const generation = () =>
        (JSON.parse(readFileSync(join(dir, 'codebases', `${encodeURIComponent('/flb/mesh')}.json`), 'utf8')) as { journal: string }).journal;
      const created = generation();
      let acknowledged = 0;
      // Each round crosses several journal compactions (the journal outgrows this small snapshot
      // every few dozen publishes), so kills land in appends and in compactions.
      for (let round = 0; round < 3; round++) {
        const first = acknowledged;
        const killAt = Date.now() + 1000;
        for (let v = acknowledged + 1; ; v++) {
          // At least a second and 30 publishes: a loaded machine publishes fewer per second.
          if (Date.now() >= killAt && v - first > 30) {
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
        expect(acknowledged - first).toBeGreaterThan(20);
        ({ child, port } = await startRepo(dir));
        const now = await served(port);
        // The publish in flight when killed may or may not have landed; nothing acknowledged is lost.
        expect([String(acknowledged), String(acknowledged + 1)]).toContain(now.etag);
        expect(now.v).toBe(Number(now.etag));
        acknowledged = Number(now.etag);
      }
      expect(generation()).not.toBe(created);
      child.kill('SIGKILL');
      await exited(child);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // Writes: 1 create (a snapshot); per publish of vN through the API, the draft's blob and draft
  // record (two durable writes) and the publish itself (an append to the journal).
  it.each([
    // The line is whole in the page cache, which kill -9 keeps. A power cut could leave none of it, or
    // part of it: the torn-line test below shows that is version 1.
    ['journal-appended', '2'],
    ['journal-synced', '2'],
  ])('a crash after step %s of publishing v2 leaves version %s served whole', async (step, expected) => {
    const dir = mkdtempSync(join(tmpdir(), 'flb-repo-fault-'));
    try {
      const { child, port } = await startRepo(dir, { FLB_REPO_CRASH_AFTER: `${step}:2` });
      expect((await call(port, 'POST', '/api/v1/repo/flb/mesh', '{"main":"/v.json"}')).status).toBe(201);
      expect(await publish(port, 1)).toBe(true);
      expect(await publish(port, 2)).toBe(false);
      await exited(child);
      expect(child.signalCode).toBe('SIGKILL');
      await withRepo(dir, async (port) => expect(await served(port)).toEqual({ etag: expected, files: 1, v: Number(expected) }));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // v2 adds 1,000 files (one content, so one blob): its difference outweighs the snapshot, so it is
  // written as a new snapshot that starts a new journal. Durable writes: 1 create, 2-3 draft v1,
  // (the v1 publish is appended), 4 the blob of v2, 5 the snapshot.
  it.each([
    ['temp-written', '1', 5],
    ['temp-synced', '1', 5],
    ['renamed', '2', 5],
    ['dir-synced', '2', 5],
    ['journal-removed', '2', 1],
  ])('a crash after step %s of compacting the journal into a snapshot leaves version %s served whole', async (step, expected, occurrence) => {
    const dir = mkdtempSync(join(tmpdir(), 'flb-repo-compact-'));
    try {
      const { child, port } = await startRepo(dir, { FLB_REPO_CRASH_AFTER: `${step}:${occurrence}` });
      expect((await call(port, 'POST', '/api/v1/repo/flb/mesh', '{"main":"/v.json"}')).status).toBe(201);
      expect(await publish(port, 1)).toBe(true);
      const bulk = Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`/bulk/f-${i}.json`, '{"v":2}']));
      await expect(call(port, 'PATCH', '/api/v1/repo/flb/mesh', JSON.stringify({ files: { '/v.json': '{"v":2}', ...bulk }, version: 2 }))).rejects.toThrow();
      await exited(child);
      expect(child.signalCode).toBe('SIGKILL');
      await withRepo(dir, async (port) => {
        // The old version from its snapshot and journal, or the new one from the new snapshot: never a mix.
        expect(await served(port)).toEqual({ etag: expected, files: expected === '1' ? 1 : 1001, v: Number(expected) });
        // What the crash left half-written, and the journal of the generation not taken, are gone.
        expect(codebaseFiles(dir).filter((f) => !f.endsWith('.json'))).toEqual([expect.stringMatching(/\.journal$/)]);
        expect(await publish(port, 3)).toBe(true);
      });
      await withRepo(dir, async (port) => expect(await served(port)).toEqual({ etag: '3', files: expected === '1' ? 1 : 1001, v: 3 }));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('ignores a journal line a crash cut short, and serves what is appended after it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flb-repo-torn-'));
    try {
      await withRepo(dir, async (port) => {
        expect((await call(port, 'POST', '/api/v1/repo/flb/mesh', '{"main":"/v.json"}')).status).toBe(201);
        expect(await publish(port, 1)).toBe(true);
        expect(await publish(port, 2)).toBe(true);
      });
      const [name] = codebaseFiles(dir).filter((f) => f.endsWith('.journal'));
      const journal = join(dir, 'codebases', name!);
      const whole = statSync(journal).size;
      // What the append of a v3 that never returned could leave: the start of a line.
      const lines = readFileSync(journal, 'utf8').split('\n');
      appendFileSync(journal, lines[lines.length - 2]!.replace('"2"', '"3"').slice(0, 40));
      await withRepo(dir, async (port) => {
        expect(await served(port)).toEqual({ etag: '2', files: 1, v: 2 });
        expect(statSync(journal).size).toBe(whole);
        expect(await publish(port, 3)).toBe(true);
      });
      await withRepo(dir, async (port) => expect(await served(port)).toEqual({ etag: '3', files: 1, v: 3 }));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
