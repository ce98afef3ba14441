import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../common/log.js';
import { Repo } from '../../repo/repo.js';
import { startRepoServer, type RepoServer } from '../../repo/server.js';
import { DiskStore } from '../../repo/store/disk.js';
import { localConfigSource, repoConfigSource, sidecarCodebaseUrl, sidecarIdFromUrl } from './source.js';
import type { ConfigChange, SidecarState } from './state.js';
import { json, meshDoc, serviceDoc, sidecarDoc } from './testing/fixtures.js';

const log = createLogger('config-test', 'silent');

const until = async (what: string, check: () => boolean, timeoutMs = 5000) => {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

type Update = { state: SidecarState; change: ConfigChange };
const recorder = () => {
  const updates: Update[] = [];
  return { updates, onUpdate: (state: SidecarState, change: ConfigChange) => void updates.push({ state, change }) };
};

describe('codebase URLs', () => {
  it('names the sidecar codebase and reads the id back', () => {
    const url = sidecarCodebaseUrl('http://127.0.0.1:6060', 'pod.shop.orders-7d9f-x2x4');
    expect(url).toBe('http://127.0.0.1:6060/repo/flb/sidecars/pod.shop.orders-7d9f-x2x4/');
    expect(sidecarIdFromUrl(url)).toBe('pod.shop.orders-7d9f-x2x4');
    expect(sidecarIdFromUrl('http://127.0.0.1:6060/repo/flb/mesh/')).toBeUndefined();
    expect(() => repoConfigSource({ url: 'http://127.0.0.1:6060/repo/flb/mesh/', cacheDir: '/nonexistent', log, onUpdate: () => {} })).toThrow(
      /cannot tell the sidecar id/,
    );
  });
});

describe('repoConfigSource', () => {
  const MESH = '/flb/mesh';
  const SIDECAR = '/flb/sidecars/pod.shop.w';
  let repoDir: string;
  let cacheDir: string;
  let repo: Repo;
  let server: RepoServer;
  let port: number;
  const startRepo = async (listenPort = 0) => {
    repo = await new Repo(await new DiskStore(repoDir).init()).load();
    server = await startRepoServer({ repo, host: '127.0.0.1', port: listenPort, log });
    port = server.port;
  };
  const publish = (codebase: string, files: Record<string, unknown>, version: string) =>
    repo.writeFiles(codebase, new Map(Object.entries(files).map(([path, doc]) => [path, doc === null ? null : json(doc)])), { version });
  const instances = () => Object.values(repo.info(repo.get(SIDECAR)!).instances as Record<string, { status: Record<string, unknown> }>).map((i) => i.status);

  const a = serviceDoc('a', { vip: '240.240.0.1' });
  const b = serviceDoc('b', { vip: '240.240.0.2' });
  const c = serviceDoc('c', { vip: '240.240.0.3' });

  beforeAll(async () => {
    repoDir = mkdtempSync(join(tmpdir(), 'flb-config-repo-'));
    cacheDir = mkdtempSync(join(tmpdir(), 'flb-config-cache-'));
    await startRepo();
    await repo.create(MESH, { main: '/mesh.json' });
    await publish(MESH, { '/mesh.json': meshDoc(), '/services/a.static.json': a, '/services/b.static.json': b }, '1');
    await repo.create(SIDECAR, { base: MESH });
    await publish(SIDECAR, { '/sidecar.json': sidecarDoc('pod.shop.w') }, '1');
  });
  afterAll(async () => {
    await server.close();
    rmSync(repoDir, { recursive: true, force: true });
    rmSync(cacheDir, { recursive: true, force: true });
  });

  it('applies its codebase and each publish with a change summary, refuses bad services and reports them to the repo', async () => {
    const { updates, onUpdate } = recorder();
    const source = repoConfigSource({
      url: sidecarCodebaseUrl(`http://127.0.0.1:${port}`, 'pod.shop.w'),
      cacheDir,
      log,
      onUpdate,
      statusIntervalMs: 100,
      instanceId: 'first',
      reportExtra: () => ({ unhealthyEndpoints: [{ service: 'a.static', endpoint: '10.0.0.2:8080', activeHealth: 'unhealthy', ejected: false }] }),
    });
    await source.start();
    try {
      await until('the first configuration', () => updates.length === 1);
      expect(source.current()!.version).toBe('1+1');
      expect(updates[0]!.change).toEqual({ mesh: true, sidecar: true, services: { added: ['a.static', 'b.static'], changed: [], removed: [] } });
      expect(source.status()).toMatchObject({ source: 'repo', ready: true, appliedVersion: '1+1', sidecarId: 'pod.shop.w', rejected: [] });

      await publish(
        MESH,
        { '/services/a.static.json': serviceDoc('a', { vip: '240.240.0.1', endpoints: 2 }), '/services/b.static.json': null, '/services/c.static.json': c },
        '2',
      );
      await until('the pushed publish', () => updates.length === 2);
      expect(updates[1]!.change).toEqual({ mesh: false, sidecar: false, services: { added: ['c.static'], changed: ['a.static'], removed: ['b.static'] } });
      expect(updates[1]!.state.version).toBe('1+2');

      // A bad new version of a, and a new service on c's VIP:port.
      await publish(
        MESH,
        { '/services/a.static.json': serviceDoc('a', { vip: '10.0.0.9' }), '/services/d.static.json': serviceDoc('d', { vip: '240.240.0.3' }) },
        '3',
      );
      await until('the refusals', () => source.rejected().length === 2);
      expect(source.rejected()).toEqual([
        {
          path: 'services/a.static.json',
          error: expect.stringContaining('invalid services/a.static.json: vips[0].address: mesh-allocated VIP 10.0.0.9 is outside'),
        },
        { path: 'services/d.static.json', error: expect.stringContaining('vips[0].address: 240.240.0.3:80 is already served by c.static') },
      ]);
      expect(source.current()!.version).toBe('1+3');
      expect(source.current()!.services.get('a.static')!.endpoints).toHaveLength(2);
      expect([...source.current()!.services.keys()]).toEqual(['a.static', 'c.static']);
      // Nothing this sidecar runs changed, so there was nothing to apply.
      expect(updates).toHaveLength(2);

      await until('the status report with the refusals', () => instances().some((s) => s.uuid === 'first' && (s.rejected as unknown[]).length === 2));
      const reported = instances().find((s) => s.uuid === 'first')!;
      expect(reported).toMatchObject({
        name: 'pod.shop.w',
        sidecarId: 'pod.shop.w',
        version: '1+3',
        appliedVersion: '1+3',
        ready: true,
        rejected: [{ path: 'services/a.static.json' }, { path: 'services/d.static.json' }],
        // What the sidecar adds (its endpoints' health), kept by the repo.
        unhealthyEndpoints: [{ service: 'a.static', endpoint: '10.0.0.2:8080', activeHealth: 'unhealthy', ejected: false }],
      });
    } finally {
      await source.stop();
    }
  });

  it('comes up from the cache while the repo is down, then follows the repo again', async () => {
    const listenPort = port;
    await server.close();
    const { updates, onUpdate } = recorder();
    const source = repoConfigSource({
      url: sidecarCodebaseUrl(`http://127.0.0.1:${listenPort}`, 'pod.shop.w'),
      cacheDir,
      log,
      onUpdate,
      maxBackoffMs: 400,
      statusIntervalMs: 100,
      instanceId: 'second',
    });
    await source.start();
    try {
      // Before the repo answered: the last good configuration, with the kept version of a.
      expect(source.current()!.version).toBe('1+3');
      expect([...source.current()!.services.keys()]).toEqual(['a.static', 'c.static']);
      expect(source.current()!.services.get('a.static')!.endpoints).toHaveLength(2);
      expect(source.status()).toMatchObject({ source: 'cache', ready: true, appliedVersion: '1+3', cache: { version: '1+3' } });
      expect(updates).toHaveLength(1);

      await startRepo(listenPort);
      await until('the repo again', () => source.status().source === 'repo');
      expect(source.rejected().map((r) => r.path)).toEqual(['services/a.static.json', 'services/d.static.json']);
      expect(updates).toHaveLength(1);

      await publish(MESH, { '/services/a.static.json': serviceDoc('a', { vip: '240.240.0.1', endpoints: 3 }), '/services/d.static.json': null }, '4');
      await until('the fixed service', () => updates.length === 2);
      expect(updates[1]!.change.services).toEqual({ added: [], changed: ['a.static'], removed: [] });
      expect(source.rejected()).toEqual([]);
      await until('a clean status report', () =>
        instances().some((s) => s.uuid === 'second' && s.appliedVersion === '1+4' && (s.rejected as unknown[]).length === 0),
      );
    } finally {
      await source.stop();
    }
  });
});

describe('localConfigSource', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'flb-config-local-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const write = (path: string, content: Buffer | string) => writeFileSync(join(dir, path), content);

  it('fails to start on a directory that does not exist', async () => {
    await expect(localConfigSource({ dir: join(dir, 'nope'), log, onUpdate: () => {} }).start()).rejects.toThrow(/does not exist/);
  });

  it('reads the directory, and with watch follows changes; a half-written file is refused until it is whole', async () => {
    mkdirSync(join(dir, 'services'));
    write('mesh.json', json(meshDoc()));
    write('sidecar.json', json(sidecarDoc('vm.billing-1')));
    write('services/a.static.json', json(serviceDoc('a', { vip: '240.240.0.1' })));
    const { updates, onUpdate } = recorder();
    const source = localConfigSource({ dir, log, onUpdate, watch: true, debounceMs: 30, sidecarId: 'vm.billing-1' });
    await source.start();
    try {
      expect(updates).toHaveLength(1);
      expect([...source.current()!.services.keys()]).toEqual(['a.static']);
      expect(source.current()!.version).toMatch(/^local-[0-9a-f]{16}$/);

      write('services/b.static.json', json(serviceDoc('b', { vip: '240.240.0.2' })));
      await until('b', () => updates.length === 2);
      expect(updates[1]!.change.services).toEqual({ added: ['b.static'], changed: [], removed: [] });

      const kept = source.current()!.services.get('a.static');
      const next = json(serviceDoc('a', { vip: '240.240.0.1', endpoints: 2 }));
      write('services/a.static.json', next.subarray(0, 40));
      await until('the refusal', () => source.rejected().length === 1);
      expect(source.rejected()[0]).toMatchObject({ path: 'services/a.static.json', error: expect.stringContaining('not valid JSON') });
      expect(source.current()!.services.get('a.static')).toBe(kept);

      write('services/a.static.json', next);
      await until('the whole file', () => updates.length === 3);
      expect(updates[2]!.change.services).toEqual({ added: [], changed: ['a.static'], removed: [] });
      expect(source.rejected()).toEqual([]);

      // services/ replaced wholesale (as a restore or a ConfigMap swap would): still followed.
      rmSync(join(dir, 'services'), { recursive: true });
      await until('the removal', () => updates.length === 4);
      expect(updates[3]!.change.services.removed).toEqual(['a.static', 'b.static']);
      mkdirSync(join(dir, 'services'));
      write('services/c.static.json', json(serviceDoc('c', { vip: '240.240.0.3' })));
      await until('c', () => source.current()!.services.has('c.static'));
      write('services/c.static.json', json(serviceDoc('c', { vip: '240.240.0.3', endpoints: 2 })));
      await until('c changed', () => source.current()!.services.get('c.static')!.endpoints.length === 2);

      write('mesh.json', json(meshDoc({ dns: { domains: ['consul'] } })));
      await until('the mesh change', () => updates.at(-1)!.change.mesh);
      expect(source.status()).toMatchObject({ source: 'local', ready: true, watch: true, rejected: [] });
    } finally {
      await source.stop();
    }
  });
});
