import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../common/log.js';
import { Publisher } from '../registry-bridge/sinks/repo-publisher.js';
import { Repo } from '../repo/repo.js';
import { startRepoServer, type RepoServer } from '../repo/server.js';
import { DiskStore } from '../repo/store/disk.js';

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

  it('deletes sidecar codebases nobody wants once told the desired state is complete, never before', async () => {
    await repo.create('/flb/sidecars/pod.shop.gone', { base: '/flb/mesh' });
    const publisher = new Publisher({ url: `http://127.0.0.1:${server.port}`, log });
    publisher.setMesh(catalog(100, 8));
    publisher.setSidecar('pod.shop.a', new Map([['/sidecar.json', '{"id":"a"}']]));
    await publisher.settled();
    expect(repo.get('/flb/sidecars/pod.shop.gone')).toBeDefined();
    publisher.markComplete();
    await publisher.settled();
    expect(repo.get('/flb/sidecars/pod.shop.gone')).toBeUndefined();
    expect(repo.get('/flb/sidecars/pod.shop.a')).toBeDefined();
    expect(repo.get('/flb/mesh')).toBeDefined();
    publisher.stop();
  });

  it('discards drafts a stopped control plane left, instead of publishing them', async () => {
    await repo.writeDraft('/flb/mesh', '/services/stale.json', Buffer.from('{"stale":true}'));
    await repo.eraseFile('/flb/mesh', '/services/svc-1.json');
    const publisher = new Publisher({ url: `http://127.0.0.1:${server.port}`, log });
    publisher.setMesh(catalog(100, 9));
    await publisher.settled();
    const served = repo.servedFiles(repo.get('/flb/mesh')!);
    expect(served['/services/stale.json']).toBeUndefined();
    expect(served['/services/svc-1.json']).toBeDefined();
    expect(repo.info(repo.get('/flb/mesh')!)).toMatchObject({ editFiles: [], erasedFiles: [] });
    publisher.stop();
  });

  it('publishes a large catalog in a few batch requests, drafts first and the publish last', async () => {
    const publisher = new Publisher({ url: `http://127.0.0.1:${server.port}`, log });
    const big = new Map([...catalog(100, 9)].map(([path, content]) => [path, content.padEnd(30_000, ' ')]));
    const versionBefore = Number(repo.get('/flb/mesh')!.version);
    const requestsBefore = await patchCount();
    publisher.setMesh(big);
    await publisher.settled();
    // 101 files of 30 kB, 2 MiB a request: one drafts-only batch and the publishing one, one new version.
    expect((await patchCount()) - requestsBefore).toBe(2);
    expect(Number(repo.get('/flb/mesh')!.version)).toBe(versionBefore + 1);
    expect((await repo.readFile('/flb/mesh', '/services/svc-99.json'))!.length).toBe(30_000);
    publisher.stop();
  });

  it('publishes files nobody holds yet request by request, a version each; a change to files spanning requests still goes out whole', async () => {
    const publisher = new Publisher({ url: `http://127.0.0.1:${server.port}`, log });
    publisher.setMesh(catalog(10));
    await publisher.settled();
    const versionBefore = Number(repo.get('/flb/mesh')!.version);
    const requestsBefore = await patchCount();
    // 100 new files of 30 kB, 2 MiB a request: two requests, each its own version, no draft left.
    const added = (v: number) => Array.from({ length: 100 }, (_, i) => [`/services/new-${i}.json`, `{"id":"new-${i}","v":${v}}`.padEnd(30_000, ' ')] as const);
    for (const [path, content] of added(1)) publisher.setMeshFile(path, content);
    await publisher.settled();
    expect((await patchCount()) - requestsBefore).toBe(2);
    expect(Number(repo.get('/flb/mesh')!.version)).toBe(versionBefore + 2);
    expect(repo.info(repo.get('/flb/mesh')!)).toMatchObject({ editFiles: [], erasedFiles: [] });
    expect((await repo.readFile('/flb/mesh', '/services/new-99.json'))!.toString()).toContain('"v":1');

    // The same files changed: workers hold them, so drafts first and one version.
    for (const [path, content] of added(2)) publisher.setMeshFile(path, content);
    await publisher.settled();
    expect((await patchCount()) - requestsBefore).toBe(4);
    expect(Number(repo.get('/flb/mesh')!.version)).toBe(versionBefore + 3);
    expect((await repo.readFile('/flb/mesh', '/services/new-0.json'))!.toString()).toContain('"v":2');
    expect((await repo.readFile('/flb/mesh', '/services/new-99.json'))!.toString()).toContain('"v":2');
    publisher.stop();
  });

  it('sends a file whose characters outside the BMP straddle a 64 KiB piece of the request intact', async () => {
    const publisher = new Publisher({ url: `http://127.0.0.1:${server.port}`, log });
    // The body is {"files":{"<path>":"<content>" ...: with this 21-character path the content starts at
    // an odd offset, so a surrogate pair spans the 65,536th character.
    const content = '\u{1F600}'.repeat(40_000);
    publisher.setMeshFile('/services/emojis.json', content);
    await publisher.settled();
    expect((await repo.readFile('/flb/mesh', '/services/emojis.json'))!.toString('utf8')).toBe(content);
    publisher.setMeshFile('/services/emojis.json', undefined);
    await publisher.settled();
    publisher.stop();
  });

  it('publishes one changed file of a large catalog without comparing the rest, and removes files', async () => {
    const publisher = new Publisher({ url: `http://127.0.0.1:${server.port}`, log });
    publisher.setMesh(catalog(100, 10));
    await publisher.settled();
    const version = Number(repo.get('/flb/mesh')!.version);
    publisher.setMeshFile('/services/svc-3.json', '{"id":"svc-3","v":3}');
    publisher.setMeshFile('/services/svc-4.json', undefined);
    await publisher.settled();
    expect(Number(repo.get('/flb/mesh')!.version)).toBe(version + 1);
    expect((await repo.readFile('/flb/mesh', '/services/svc-3.json'))!.toString()).toBe('{"id":"svc-3","v":3}');
    expect(repo.servedFiles(repo.get('/flb/mesh')!)['/services/svc-4.json']).toBeUndefined();
    // Setting the same content again publishes nothing.
    publisher.setMeshFile('/services/svc-3.json', '{"id":"svc-3","v":3}');
    await publisher.settled();
    expect(Number(repo.get('/flb/mesh')!.version)).toBe(version + 1);
    publisher.stop();
  });

  it('never publishes different content under a version workers already hold, when the answer to a publish was lost', async () => {
    // Between the publisher and the repo: forwards everything, but loses the answer to the first
    // publish of the mesh after `loseNext` is set (the repo has published it).
    let loseNext = false;
    const proxy: Server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        const lose = loseNext && req.method === 'PATCH' && req.url === '/api/v1/repo/flb/mesh' && body.includes('"version"');
        if (lose) loseNext = false;
        const upstream = request({ host: '127.0.0.1', port: server.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
          const parts: Buffer[] = [];
          answer.on('data', (d: Buffer) => parts.push(d));
          answer.on('end', () => {
            if (lose) res.destroy();
            else res.writeHead(answer.statusCode ?? 502, answer.headers).end(Buffer.concat(parts));
          });
        });
        upstream.end(body);
      });
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    try {
      const publisher = new Publisher({ url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`, log, maxBackoffMs: 200 });
      publisher.setMesh(catalog(10, 1));
      await publisher.settled();
      loseNext = true;
      publisher.setMesh(catalog(10, 2));
      while (publisher.stats.failures === 0) await new Promise((r) => setTimeout(r, 5));
      // The failure names the request it happened to.
      expect(publisher.stats.lastError).toMatch(/^PATCH \/api\/v1\/repo\/flb\/mesh: socket hang up/);
      // Workers got this version, with svc-2 at v 2.
      const held = repo.etag(repo.get('/flb/mesh')!);
      // The desired state moves on while the publisher backs off.
      publisher.setMesh(catalog(10, 3));
      await publisher.settled();
      expect((await repo.readFile('/flb/mesh', '/services/svc-3.json'))!.toString()).toBe('{"id":"svc-3","v":2}');
      // A worker holding that version must see a new one: same etag, other content, and it never would.
      expect(repo.etag(repo.get('/flb/mesh')!)).not.toBe(held);
      publisher.stop();
    } finally {
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    }
  });

  async function patchCount(): Promise<number> {
    const metrics = await server.registry.getSingleMetricAsString('flb_repo_requests_total');
    return [...metrics.matchAll(/route="codebase",status="201"} (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
  }
});
