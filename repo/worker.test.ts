import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../common/log.js';
import { Repo } from './repo.js';
import { startRepoServer, type RepoServer } from './server.js';
import { DiskStore } from './store/disk.js';
import { RepoWorker, type Snapshot } from '../common/repo-worker.js';

const log = createLogger('worker-test', 'silent');

describe('the repo worker client', () => {
  let dir: string;
  let repo: Repo;
  let server: RepoServer;
  let port: number;
  const start = async (listenPort = 0) => {
    repo = await new Repo(await new DiskStore(dir).init()).load();
    server = await startRepoServer({ repo, host: '127.0.0.1', port: listenPort, log });
    port = server.port;
  };
  const publish = async (codebase: string, files: Record<string, string>, version: string) => {
    for (const [path, content] of Object.entries(files)) await repo.writeDraft(codebase, path, Buffer.from(content));
    await repo.patch(codebase, { version });
  };
  const until = async (what: string, check: () => boolean, timeoutMs = 3000) => {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };

  const servedRequests = async () => {
    const metrics = await server.registry.getSingleMetricAsString('flb_repo_requests_total');
    return [...metrics.matchAll(/route="served",status="200"} (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'flb-worker-test-'));
    await start();
    await repo.create('/flb/mesh', { main: '/mesh.json' });
    await publish('/flb/mesh', { '/mesh.json': '{"mesh":1}', '/services/a.json': '{"a":1}', '/services/b.json': '{"b":1}' }, '1');
    await repo.create('/flb/sidecars/pod.shop.w', { base: '/flb/mesh' });
    await publish('/flb/sidecars/pod.shop.w', { '/sidecar.json': '{"id":"w"}' }, '1');
  });
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('gets its codebase, a pushed publish in well under a second, and only the changed file', async () => {
    const updates: { snapshot: Snapshot; changed: string[] }[] = [];
    const worker = new RepoWorker({
      url: `http://127.0.0.1:${port}/repo/flb/sidecars/pod.shop.w/`,
      onUpdate: (snapshot, changed) => void updates.push({ snapshot, changed }),
      status: () => ({ uuid: 'worker-uuid-1', name: 'pod.shop.w', timestamp: Date.now() }),
      statusIntervalMs: 100,
      log,
    });
    const servedAtStart = await servedRequests();
    worker.start();
    try {
      await until('the first snapshot', () => updates.length === 1);
      expect([...updates[0]!.snapshot.files.keys()].sort()).toEqual(['/mesh.json', '/services/a.json', '/services/b.json', '/sidecar.json']);
      expect(updates[0]!.snapshot.main).toBe('/mesh.json');
      expect(updates[0]!.snapshot.files.get('/sidecar.json')!.toString()).toBe('{"id":"w"}');
      // Every file came in the answer to the first GET (a Pipy worker's way: manifest, _etags, 4 files).
      expect((await servedRequests()) - servedAtStart).toBe(1);
      expect(worker.fetchedFiles).toBe(4);
      await new Promise((r) => setTimeout(r, 100));
      const fetchedBefore = worker.fetchedFiles;
      const servedBefore = await servedRequests();
      const published = performance.now();
      await publish('/flb/mesh', { '/services/a.json': '{"a":2}' }, '2');
      await until('the pushed update', () => updates.length === 2);
      const latencyMs = performance.now() - published;
      expect(latencyMs).toBeLessThan(500);
      expect(updates[1]!.changed).toEqual(['/services/a.json']);
      expect(worker.fetchedFiles - fetchedBefore).toBe(1);
      // The push carried the file: the long poll is the only request (plus the next one waiting).
      expect((await servedRequests()) - servedBefore).toBe(1);
      expect(updates[1]!.snapshot.files.get('/services/a.json')!.toString()).toBe('{"a":2}');
      await until('a status report', () => Object.keys(repo.info(repo.get('/flb/sidecars/pod.shop.w')!).instances as object).length > 0);
      const instances = repo.info(repo.get('/flb/sidecars/pod.shop.w')!).instances as Record<string, { status: { uuid: string; version: string } }>;
      expect(Object.values(instances)[0]!.status).toMatchObject({ uuid: 'worker-uuid-1' });
    } finally {
      await worker.stop();
    }
  });

  it('polls with HEAD when push is off, and keeps its snapshot while the repo is away', async () => {
    const updates: Snapshot[] = [];
    const worker = new RepoWorker({
      url: `http://127.0.0.1:${port}/repo/flb/sidecars/pod.shop.w/`,
      onUpdate: (s) => void updates.push(s),
      waitSeconds: 0,
      pollIntervalMs: 100,
      maxBackoffMs: 400,
      log,
    });
    worker.start();
    try {
      await until('the first snapshot', () => updates.length === 1);
      await publish('/flb/mesh', { '/services/b.json': '{"b":2}' }, '3');
      await until('the polled update', () => updates.length === 2, 1000);
      const kept = worker.current();
      const listenPort = port;
      await server.close();
      await new Promise((r) => setTimeout(r, 600));
      expect(worker.current()).toBe(kept);
      await start(listenPort);
      await publish('/flb/mesh', { '/services/b.json': '{"b":3}' }, '4');
      await until('the update after the repo came back', () => updates.length === 3, 3000);
      expect(updates[2]!.files.get('/services/b.json')!.toString()).toBe('{"b":3}');
    } finally {
      await worker.stop();
    }
  });

  it('syncs file by file a codebase too big to send in one answer', async () => {
    const big = 'x'.repeat(700 * 1024);
    await repo.create('/flb/sidecars/pod.shop.big', { base: '/flb/mesh' });
    await publish('/flb/sidecars/pod.shop.big', { '/sidecar.json': '{"id":"big"}', '/big-1.txt': big, '/big-2.txt': big }, '1');
    const updates: Snapshot[] = [];
    const worker = new RepoWorker({ url: `http://127.0.0.1:${port}/repo/flb/sidecars/pod.shop.big/`, onUpdate: (s) => void updates.push(s), log });
    const servedAtStart = await servedRequests();
    worker.start();
    try {
      await until('the first snapshot', () => updates.length === 1);
      expect(updates[0]!.files.get('/big-2.txt')!.length).toBe(big.length);
      expect(updates[0]!.files.size).toBe(6);
      // The manifest, _etags and the six files.
      expect((await servedRequests()) - servedAtStart).toBe(8);
    } finally {
      await worker.stop();
    }
  });

  it('waits for a codebase that is not published yet, and takes it once it is', async () => {
    const updates: Snapshot[] = [];
    const worker = new RepoWorker({ url: `http://127.0.0.1:${port}/repo/flb/sidecars/pod.shop.later/`, onUpdate: (s) => void updates.push(s), log });
    worker.start();
    try {
      await new Promise((r) => setTimeout(r, 300));
      expect(updates).toHaveLength(0);
      await repo.create('/flb/sidecars/pod.shop.later', { base: '/flb/mesh' });
      await publish('/flb/sidecars/pod.shop.later', { '/sidecar.json': '{"id":"later"}' }, '1');
      // Not-published retries are capped at 2 s (with jitter), not the 30 s of an unreachable
      // repo: 6 s leaves room for a loaded machine (3 s failed in CI beside the other workers).
      await until('the codebase once published', () => updates.length === 1, 6000);
      expect(updates[0]!.files.get('/sidecar.json')!.toString()).toBe('{"id":"later"}');
    } finally {
      await worker.stop();
    }
  });
});
