import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../common/log.js';
import { Publisher } from './publisher.js';
import { Repo } from './repo.js';
import { startRepoServer, type RepoServer } from './server.js';
import { DiskStore } from './store/disk.js';

const log = createLogger('publisher-test', 'silent');
const catalog = (n: number, changed?: number) =>
  new Map<string, string>([
    ['/mesh.json', '{"name":"flb"}'],
    ...Array.from({ length: n }, (_, i) => [`/services/svc-${i}.json`, JSON.stringify({ id: `svc-${i}`, v: i === changed ? 2 : 1 })] as [string, string]),
  ]);

describe('the control plane publisher', () => {
  let dir: string;
  let repo: Repo;
  let server: RepoServer;
  const start = async (port = 0) => {
    repo = await new Repo(await new DiskStore(dir).init()).load();
    server = await startRepoServer({ repo, host: '127.0.0.1', port, log });
  };
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'flb-publisher-test-'));
    await start();
  });
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('publishes the mesh and sidecar codebases, and only what changed after that', async () => {
    const publisher = new Publisher({ url: `http://127.0.0.1:${server.port}`, log });
    publisher.setMesh(catalog(100));
    publisher.setSidecar('pod.shop.a', new Map([['/sidecar.json', '{"id":"a"}']]));
    publisher.setSidecar('pod.shop.b', new Map([['/sidecar.json', '{"id":"b"}']]));
    await publisher.settled();
    expect(repo.get('/flb/mesh')!.version).toBe('1');
    expect(repo.get('/flb/sidecars/pod.shop.a')).toMatchObject({ base: '/flb/mesh', version: '1' });
    expect(publisher.stats).toEqual({ filesWritten: 103, publishes: 3, failures: 0 });

    publisher.setMesh(catalog(100, 42));
    await publisher.settled();
    expect(publisher.stats).toMatchObject({ filesWritten: 104, publishes: 4 });
    expect(repo.get('/flb/mesh')!.version).toBe('2');
    expect(repo.get('/flb/sidecars/pod.shop.a')!.version).toBe('1');

    publisher.setMesh(catalog(100, 42));
    publisher.removeSidecar('pod.shop.b');
    await publisher.settled();
    expect(publisher.stats).toMatchObject({ filesWritten: 104, publishes: 4 });
    expect(repo.get('/flb/sidecars/pod.shop.b')).toBeUndefined();
    publisher.stop();
  });

  it('republishes nothing after a control-plane restart when nothing changed', async () => {
    const restarted = new Publisher({ url: `http://127.0.0.1:${server.port}`, log });
    restarted.setMesh(catalog(100, 42));
    restarted.setSidecar('pod.shop.a', new Map([['/sidecar.json', '{"id":"a"}']]));
    await restarted.settled();
    expect(restarted.stats).toEqual({ filesWritten: 0, publishes: 0, failures: 0 });
    restarted.stop();
  });

  it('keeps the latest desired state while the repo is away and publishes it when it is back', async () => {
    const port = server.port;
    const publisher = new Publisher({ url: `http://127.0.0.1:${port}`, log, maxBackoffMs: 200 });
    publisher.setMesh(catalog(100, 42));
    await publisher.settled();
    await server.close();
    publisher.setMesh(catalog(100, 7));
    publisher.setMesh(catalog(100, 8));
    await new Promise((r) => setTimeout(r, 500));
    expect(publisher.stats.failures).toBeGreaterThan(0);
    await start(port);
    await publisher.settled();
    const served = await (await fetch(`http://127.0.0.1:${port}/repo/flb/mesh/services/svc-8.json`)).json();
    expect(served).toEqual({ id: 'svc-8', v: 2 });
    expect(await (await fetch(`http://127.0.0.1:${port}/repo/flb/mesh/services/svc-7.json`)).json()).toEqual({ id: 'svc-7', v: 1 });
    publisher.stop();
  });
});
