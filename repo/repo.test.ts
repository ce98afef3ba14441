/*
 * The repo's memory follows its store: a write the store refused (a full disk) changes nothing a
 * later publish could pick up or a restart could lose, and a retry of the same write succeeds.
 */
import { describe, expect, it } from '@jest/globals';
import { Repo } from './repo.js';
import { MemoryStore } from './testing/memory-store.js';

const NAME = '/flb/mesh';
const files = (entries: Record<string, string | null>) =>
  new Map(Object.entries(entries).map(([path, content]) => [path, content === null ? null : Buffer.from(content)]));

async function setUp(): Promise<{ store: MemoryStore; repo: Repo }> {
  const store = new MemoryStore();
  const repo = await new Repo(store).load();
  await repo.create(NAME, { main: '/mesh.json' });
  await repo.writeFiles(NAME, files({ '/mesh.json': 'm1', '/old.json': 'o1' }), { version: '1' });
  return { store, repo };
}

/** What workers are served: path -> content. */
async function served(repo: Repo): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [path, sha] of Object.entries(repo.servedFiles(repo.get(NAME)!))) out[path] = (await repo.blob(sha))!.toString();
  return out;
}

/** The live repo and one restarted from its store hold the same codebase: nothing only in memory. */
async function expectMemoryIsDurable(store: MemoryStore, repo: Repo): Promise<void> {
  const restarted = await new Repo(store).load();
  const { revision: _a, ...live } = repo.get(NAME)!;
  const { revision: _b, ...durable } = restarted.get(NAME)!;
  expect(live).toEqual(durable);
}

describe('a write the store refuses', () => {
  it('a batch of drafts whose write failed is not published by the next publish, and its retry succeeds', async () => {
    const { store, repo } = await setUp();
    store.failNext('putDrafts');
    await expect(repo.writeFiles(NAME, files({ '/new.json': 'n2', '/mesh.json': 'm2', '/old.json': null }))).rejects.toThrow(/ENOSPC/);
    expect(repo.info(repo.get(NAME)!)).toMatchObject({ editFiles: [], erasedFiles: [] });
    await expectMemoryIsDurable(store, repo);

    await repo.patch(NAME, { version: '2' });
    expect(await served(repo)).toEqual({ '/mesh.json': 'm1', '/old.json': 'o1' });

    await repo.writeFiles(NAME, files({ '/new.json': 'n2', '/mesh.json': 'm2', '/old.json': null }));
    await repo.patch(NAME, { version: '3' });
    expect(await served(repo)).toEqual({ '/mesh.json': 'm2', '/new.json': 'n2' });
    await expectMemoryIsDurable(store, repo);
  });

  it('a batch that publishes, whose record write failed, leaves neither drafts nor a publish behind, and its retry succeeds', async () => {
    const { store, repo } = await setUp();
    store.failNext('putRecord');
    await expect(repo.writeFiles(NAME, files({ '/new.json': 'n2', '/old.json': null }), { version: '2' })).rejects.toThrow(/ENOSPC/);
    expect(repo.get(NAME)).toMatchObject({ version: '1', edits: {} });
    await expectMemoryIsDurable(store, repo);

    // Another writer's publish in between takes only its own change.
    await repo.writeDraft(NAME, '/mesh.json', Buffer.from('m2'));
    await repo.patch(NAME, { version: '2' });
    expect(await served(repo)).toEqual({ '/mesh.json': 'm2', '/old.json': 'o1' });

    await repo.writeFiles(NAME, files({ '/new.json': 'n3', '/old.json': null }), { version: '3' });
    expect(await served(repo)).toEqual({ '/mesh.json': 'm2', '/new.json': 'n3' });
    await expectMemoryIsDurable(store, repo);
  });

  it('a draft, an erase or a discard whose write failed changes nothing', async () => {
    const { store, repo } = await setUp();
    await repo.writeDraft(NAME, '/kept.json', Buffer.from('k'));
    const before = repo.get(NAME);
    store.failNext('putDraft');
    await expect(repo.writeDraft(NAME, '/x.json', Buffer.from('x'))).rejects.toThrow(/ENOSPC/);
    store.failNext('putDraft');
    await expect(repo.eraseFile(NAME, '/old.json')).rejects.toThrow(/ENOSPC/);
    store.failNext('clearDrafts');
    await expect(repo.discardDraft(NAME, '/kept.json')).rejects.toThrow(/ENOSPC/);
    expect(repo.get(NAME)).toBe(before);
    await expectMemoryIsDurable(store, repo);
  });

  it('a publish that is durable wakes the workers waiting for it even if removing its drafts then fails', async () => {
    const { store, repo } = await setUp();
    const woken: string[] = [];
    repo.onPublish((name) => woken.push(name));
    await repo.writeDraft(NAME, '/mesh.json', Buffer.from('m2'));
    store.failNext('clearDrafts');
    await expect(repo.patch(NAME, { version: '2' })).rejects.toThrow(/ENOSPC/);
    expect(repo.etag(repo.get(NAME)!)).toBe('2');
    expect(await served(repo)).toEqual({ '/mesh.json': 'm2', '/old.json': 'o1' });
    expect(woken).toEqual([NAME]);
    await expectMemoryIsDurable(store, repo);
  });
});
