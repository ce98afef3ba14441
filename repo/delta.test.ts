import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../common/log.js';
import { DELTA_MEDIA_TYPE } from '../common/repo-worker.js';
import { Repo } from './repo.js';
import { startRepoServer, type RepoServer } from './server.js';
import { DiskStore } from './store/disk.js';

const log = createLogger('delta-test', 'silent');
const MESH = '/flb/mesh';
const SIDECAR = '/flb/sidecars/pod.shop.d';

describe('pushed deltas', () => {
  let dir: string;
  let repo: Repo;
  let server: RepoServer;
  const publish = (codebase: string, files: Record<string, string | null>, version: string) =>
    repo.writeFiles(codebase, new Map(Object.entries(files).map(([p, c]) => [p, c === null ? null : Buffer.from(c)])), { version });
  const sha = async (codebase: string, path: string) => repo.servedFiles(repo.get(codebase)!)[path];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'flb-delta-test-'));
    repo = await new Repo(await new DiskStore(dir).init()).load();
    server = await startRepoServer({ repo, host: '127.0.0.1', port: 0, log });
    await repo.create(MESH, { main: '/mesh.json' });
    await publish(MESH, { '/mesh.json': '{}', '/services/a.json': 'a1', '/services/b.json': 'b1' }, '1');
    await repo.create(SIDECAR, { base: MESH });
    await publish(SIDECAR, { '/sidecar.json': 's1' }, '1');
  });
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('names exactly the files that changed since the etag a worker holds, through the base', async () => {
    const held = repo.etag(repo.get(SIDECAR)!);
    expect(held).toBe('1+1');
    await publish(MESH, { '/services/a.json': 'a2', '/services/b.json': null, '/services/c.json': 'c1' }, '2');
    await publish(SIDECAR, { '/sidecar.json': 's2' }, '2');
    const delta = repo.delta(repo.get(SIDECAR)!, held)!;
    expect(Object.fromEntries(delta)).toEqual({
      '/services/a.json': await sha(MESH, '/services/a.json'),
      '/services/b.json': null,
      '/services/c.json': await sha(MESH, '/services/c.json'),
      '/sidecar.json': await sha(SIDECAR, '/sidecar.json'),
    });
    // From an etag between the two publishes: only the sidecar's own file.
    expect([...repo.delta(repo.get(SIDECAR)!, '1+2')!.keys()]).toEqual(['/sidecar.json']);
    expect(repo.delta(repo.get(SIDECAR)!, repo.etag(repo.get(SIDECAR)!))!.size).toBe(0);
  });

  it('has no delta from a state it does not remember, or that was published in place', async () => {
    expect(repo.delta(repo.get(SIDECAR)!, '1+99')).toBeUndefined();
    expect(repo.delta(repo.get(SIDECAR)!, 'nonsense')).toBeUndefined();
    const before = repo.etag(repo.get(MESH)!);
    await repo.writeDraft(MESH, '/services/a.json', Buffer.from('a-in-place'));
    await repo.patch(MESH, {});
    // Workers holding this etag may have either content of /services/a.json.
    expect(repo.etag(repo.get(MESH)!)).toBe(before);
    await publish(MESH, { '/services/d.json': 'd1' }, '3');
    expect(repo.delta(repo.get(MESH)!, before)).toBeUndefined();
  });

  it('answers a long poll with the changed files when asked, and with the manifest otherwise', async () => {
    const base = `http://127.0.0.1:${server.port}/repo${SIDECAR}/`;
    const held = repo.etag(repo.get(SIDECAR)!);
    const asked = fetch(base, { headers: { 'if-none-match': held, prefer: 'wait=5', accept: DELTA_MEDIA_TYPE } });
    const plain = fetch(base, { headers: { 'if-none-match': held, prefer: 'wait=5' } });
    await new Promise((r) => setTimeout(r, 50));
    await publish(MESH, { '/services/a.json': 'a3', '/services/d.json': null }, '4');
    const pushed = await asked;
    expect(pushed.headers.get('content-type')).toBe(DELTA_MEDIA_TYPE);
    expect(pushed.headers.get('etag')).toBe(repo.etag(repo.get(SIDECAR)!));
    expect(await pushed.json()).toEqual({
      main: '/mesh.json',
      files: { '/services/a.json': { etag: (await sha(MESH, '/services/a.json'))!.slice(0, 16), content: 'a3', encoding: 'utf8' } },
      removed: ['/services/d.json'],
    });
    const manifest = await plain;
    expect(manifest.headers.get('content-type')).toBe('text/plain');
    expect((await manifest.text()).split('\n')[0]).toBe('/mesh.json');
    // An older etag it still remembers, asked without waiting (a worker back after missing publishes): the delta at once.
    const behind = await fetch(base, { headers: { 'if-none-match': held, accept: DELTA_MEDIA_TYPE } });
    expect(behind.headers.get('content-type')).toBe(DELTA_MEDIA_TYPE);
    expect(((await behind.json()) as { removed: string[] }).removed).toEqual(['/services/d.json']);
    // Unknown etag: the manifest, and the worker syncs the usual way.
    const unknown = await fetch(base, { headers: { 'if-none-match': '7+7', accept: DELTA_MEDIA_TYPE } });
    expect(unknown.headers.get('content-type')).toBe('text/plain');
  });

  it('refuses a batch that is not path -> string or null, and a version with +, changing nothing', async () => {
    const before = JSON.stringify(repo.get(MESH));
    for (const body of [{ files: [] }, { files: { '/a.json': 1 } }, { files: { '../x': 'x' } }, { files: { '/a.json': 'x' }, version: '5+1' }]) {
      const r = await fetch(`http://127.0.0.1:${server.port}/api/v1/repo${MESH}`, { method: 'PATCH', body: JSON.stringify(body) });
      expect(r.status).toBe(400);
      expect(await r.text()).toMatch(/Invalid/);
    }
    expect(JSON.stringify(repo.get(MESH))).toBe(before);
  });

  it('keeps a batch without a version as drafts, across a restart', async () => {
    const r = await fetch(`http://127.0.0.1:${server.port}/api/v1/repo${MESH}`, {
      method: 'PATCH',
      body: JSON.stringify({ files: { '/services/e.json': 'e1', '/services/a.json': null } }),
    });
    expect(r.status).toBe(201);
    const reloaded = await new Repo(await new DiskStore(dir).init()).load();
    const info = reloaded.info(reloaded.get(MESH)!);
    expect(info).toMatchObject({ editFiles: ['/services/e.json'], erasedFiles: ['/services/a.json'] });
    expect((await reloaded.readFile(MESH, '/services/e.json'))!.toString()).toBe('e1');
  });
});
