import { describe, expect, it } from '@jest/globals';
import { createHash } from 'node:crypto';
import { Repo, RepoError } from './repo.js';
import { StoreConflict, type CodebaseRecord, type RepoStore } from './store/store.js';

/**
 * Replicas sharing a store, as on etcd: a store with revisions that refuses a record write based on
 * an older revision (as EtcdStore does with a transaction), and whose loads can be held back to
 * catch a refresh in the middle. The same against a real etcd is in test-e2e/repo-etcd.test.ts.
 */
class SharedStore implements RepoStore {
  private revision = 0;
  private readonly records = new Map<string, { json: string; revision: string }>();
  private readonly drafts = new Map<string, Map<string, string | null>>();
  private readonly blobs = new Map<string, Buffer>();
  /** When set, loadAll reads the store at once but answers only when this resolves. */
  hold: Promise<void> | undefined;

  private read(name: string): CodebaseRecord | undefined {
    const stored = this.records.get(name);
    if (!stored) return undefined;
    const record = { ...(JSON.parse(stored.json) as CodebaseRecord), edits: {} as Record<string, string | null>, revision: stored.revision };
    for (const [path, sha] of this.drafts.get(name) ?? []) if (sha === null ? path in record.files : record.files[path] !== sha) record.edits[path] = sha;
    return record;
  }

  async loadAll(): Promise<CodebaseRecord[]> {
    const out = [...this.records.keys()].map((name) => this.read(name)!);
    await this.hold;
    return out;
  }
  async loadRecord(name: string): Promise<CodebaseRecord | undefined> {
    return this.read(name);
  }
  async putRecord(record: CodebaseRecord): Promise<string> {
    const { revision, ...stored } = record;
    if (this.records.get(record.name)?.revision !== revision) throw new StoreConflict(this.read(record.name));
    const next = String(++this.revision);
    this.records.set(record.name, { json: JSON.stringify({ ...stored, edits: {} }), revision: next });
    return next;
  }
  async putDraft(codebase: string, path: string, sha: string | null): Promise<void> {
    if (!this.drafts.has(codebase)) this.drafts.set(codebase, new Map());
    this.drafts.get(codebase)!.set(path, sha);
    this.revision++;
  }
  async putDrafts(codebase: string, drafts: [string, string | null][]): Promise<void> {
    for (const [path, sha] of drafts) await this.putDraft(codebase, path, sha);
  }
  async clearDrafts(codebase: string, paths: string[]): Promise<void> {
    for (const path of paths) this.drafts.get(codebase)?.delete(path);
  }
  async deleteRecord(name: string, revision?: string): Promise<void> {
    if (revision !== undefined && this.records.get(name)?.revision !== revision) throw new StoreConflict(this.read(name));
    this.records.delete(name);
    this.drafts.delete(name);
  }
  async putBlob(content: Buffer): Promise<string> {
    const sha = createHash('sha256').update(content).digest('hex');
    this.blobs.set(sha, content);
    return sha;
  }
  async putBlobs(contents: Buffer[]): Promise<string[]> {
    return Promise.all(contents.map((c) => this.putBlob(c)));
  }
  async getBlob(sha: string): Promise<Buffer | undefined> {
    return this.blobs.get(sha);
  }
  async close(): Promise<void> {}
}

const files = (entries: Record<string, string>) => new Map(Object.entries(entries).map(([path, content]) => [path, Buffer.from(content)]));
const status = (promise: Promise<unknown>) =>
  promise.then(
    () => 201,
    (error: unknown) => (error instanceof RepoError ? error.status : 500),
  );

describe('repo replicas on one shared store', () => {
  it('never lets a refresh overwrite a draft written while it was loading', async () => {
    const store = new SharedStore();
    const repo = await new Repo(store).load();
    await repo.create('/mesh', {});
    let release!: () => void;
    store.hold = new Promise((resolve) => (release = resolve));
    const refreshing = repo.refresh();
    await repo.writeDraft('/mesh', '/a.json', Buffer.from('a'));
    release();
    await refreshing;
    expect(repo.info(repo.get('/mesh')!).editFiles).toEqual(['/a.json']);
    await repo.patch('/mesh', { version: '1' });
    expect(repo.get('/mesh')!.files['/a.json']).toBeDefined();
  });

  it('still takes in another replica’s publish when a local write raced the refresh', async () => {
    const store = new SharedStore();
    const a = await new Repo(store).load();
    await a.create('/mesh', {});
    const b = await new Repo(store).load();
    let release!: () => void;
    store.hold = new Promise((resolve) => (release = resolve));
    const refreshing = b.refresh();
    await a.writeFiles('/mesh', files({ '/a.json': 'a' }), { version: '1' });
    await b.writeDraft('/mesh', '/b.json', Buffer.from('b'));
    release();
    await refreshing;
    expect(b.get('/mesh')).toMatchObject({ version: '1', edits: { '/b.json': expect.any(String) } });
    expect(b.get('/mesh')!.files['/a.json']).toBeDefined();
  });

  it('answers 409 to a publish from a stale copy, takes in the other replica’s record, and accepts the retry', async () => {
    const store = new SharedStore();
    const a = await new Repo(store).load();
    await a.create('/mesh', {});
    const b = await new Repo(store).load();
    await a.writeFiles('/mesh', files({ '/a.json': 'a' }), { version: '1' });
    const woken: string[] = [];
    b.onPublish((name) => woken.push(name));
    const stale = b.writeFiles('/mesh', files({ '/b.json': 'b' }), { version: '2' });
    await expect(stale).rejects.toMatchObject({ status: 409, message: 'codebase changed on another replica; retry' });
    // Nothing of the refused publish stays, not even as drafts: the writer sends it again.
    expect(b.get('/mesh')).toMatchObject({ version: '1', edits: {} });
    expect(woken).toEqual(['/mesh']);
    await b.writeFiles('/mesh', files({ '/b.json': 'b' }), { version: '2' });
    expect(Object.keys((await new Repo(store).load()).get('/mesh')!.files).sort()).toEqual(['/a.json', '/b.json']);
    // Drafts written before the refused publish are in the store, so publishing them again works.
    await a.writeDraft('/mesh', '/c.json', Buffer.from('c'));
    expect(await status(a.patch('/mesh', { version: '3' }))).toBe(409);
    expect(await status(a.patch('/mesh', { version: '3' }))).toBe(201);
    expect(Object.keys(a.get('/mesh')!.files).sort()).toEqual(['/a.json', '/b.json', '/c.json']);
  });

  it('refuses creating or deleting a codebase another replica created or changed', async () => {
    const store = new SharedStore();
    const a = await new Repo(store).load();
    const b = await new Repo(store).load();
    await a.create('/mesh', {});
    expect(await status(b.create('/mesh', {}))).toBe(409);
    expect(b.get('/mesh')).toBeDefined();
    await a.writeFiles('/mesh', files({ '/a.json': 'a' }), { version: '1' });
    expect(await status(b.delete('/mesh'))).toBe(409);
    expect(b.get('/mesh')!.version).toBe('1');
    expect(await status(b.delete('/mesh'))).toBe(201);
    expect(await store.loadAll()).toEqual([]);
  });

  it('loses no acknowledged publish when two replicas publish one codebase at once', async () => {
    const store = new SharedStore();
    const replicas = [await new Repo(store).load(), await new Repo(store).load()];
    await replicas[0]!.create('/mesh', {});
    await replicas[1]!.refresh();
    const acknowledged: string[] = [];
    let conflicts = 0;
    await Promise.all(
      replicas.map(async (repo, r) => {
        for (let i = 0; i < 20; i++) {
          const path = `/r${r}-${i}.json`;
          for (;;) {
            const answer = await status(repo.writeFiles('/mesh', files({ [path]: path }), { version: `${r}.${i}` }));
            if (answer === 201) break;
            expect(answer).toBe(409);
            conflicts++;
          }
          acknowledged.push(path);
        }
      }),
    );
    expect(conflicts).toBeGreaterThan(0);
    expect(Object.keys((await new Repo(store).load()).get('/mesh')!.files).sort()).toEqual(acknowledged.sort());
  });

  it('reload (what a watch event triggers) wakes workers once per change of what is served, not for drafts or a second read', async () => {
    const store = new SharedStore();
    const a = await new Repo(store).load();
    await a.create('/mesh', {});
    const b = await new Repo(store).load();
    const woken: string[] = [];
    b.onPublish((name) => woken.push(name));
    await a.writeFiles('/mesh', files({ '/a.json': 'a' }), { version: '1' });
    expect(await b.reload(['/mesh'])).toEqual(['/mesh']);
    // The same event delivered again (a watch resumed from an older revision, a reload after compaction).
    expect(await b.reload(['/mesh'])).toEqual([]);
    expect(await b.refresh()).toEqual([]);
    // Another replica's draft is taken in, but workers are served nothing new.
    await a.writeDraft('/mesh', '/b.json', Buffer.from('b'));
    expect(await b.reload(['/mesh'])).toEqual(['/mesh']);
    expect(b.info(b.get('/mesh')!).editFiles).toEqual(['/b.json']);
    await a.patch('/mesh', { version: '2' });
    await b.reload(['/mesh']);
    expect(woken).toEqual(['/mesh', '/mesh']);
    expect(b.get('/mesh')!.version).toBe('2');
  });
});
