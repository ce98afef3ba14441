import { createHash, randomUUID } from 'node:crypto';
import { mkdir, open, readFile, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { CodebaseRecord, RepoStore } from './store.js';

/**
 * The local-disk store. Every write follows the same protocol, so that a crash at any point
 * leaves the last acknowledged state: write a temp file, fsync it, rename it over the target,
 * fsync the directory. Blobs are content-addressed and written before the record that refers
 * to them, so a record on disk never points at a missing blob.
 *
 * `faults` lets a test crash the write path after a chosen step to prove each step matters.
 */
export type WriteStep = 'temp-written' | 'temp-synced' | 'renamed' | 'dir-synced';

export class DiskStore implements RepoStore {
  private readonly records: string;
  private readonly blobs: string;
  private readonly drafts: string;

  constructor(
    readonly dataDir: string,
    private readonly faults?: { crashAfter?: WriteStep; occurrence?: number },
  ) {
    this.records = join(dataDir, 'codebases');
    this.blobs = join(dataDir, 'blobs');
    this.drafts = join(dataDir, 'drafts');
  }

  async init(): Promise<this> {
    await mkdir(this.records, { recursive: true });
    await mkdir(this.blobs, { recursive: true });
    await mkdir(this.drafts, { recursive: true });
    await syncDir(this.dataDir);
    // Temp files are what a crash mid-write leaves; they were never acknowledged.
    for (const dir of [this.records, this.blobs, ...(await readdir(this.drafts)).map((d) => join(this.drafts, d))]) {
      for (const f of await readdir(dir)) if (f.endsWith('.tmp')) await rm(join(dir, f), { force: true });
    }
    return this;
  }

  async loadAll(): Promise<CodebaseRecord[]> {
    const out: CodebaseRecord[] = [];
    for (const f of (await readdir(this.records)).filter((f) => f.endsWith('.json')).sort()) {
      const record = JSON.parse(await readFile(join(this.records, f), 'utf8')) as CodebaseRecord;
      record.edits = {};
      const dir = this.draftDir(record.name);
      for (const d of (await readdir(dir).catch(() => [] as string[])).filter((d) => d.endsWith('.json'))) {
        const { path, sha } = JSON.parse(await readFile(join(dir, d), 'utf8')) as { path: string; sha: string | null };
        // A crash between a publish and the removal of its drafts leaves drafts that are published already.
        if (sha === null ? !(path in record.files) : record.files[path] === sha) continue;
        record.edits[path] = sha;
      }
      out.push(record);
    }
    return out;
  }

  putRecord(record: CodebaseRecord): Promise<void> {
    const { edits: _edits, ...published } = record;
    return this.durableWrite(this.records, `${encodeURIComponent(record.name)}.json`, Buffer.from(JSON.stringify({ ...published, edits: {} })));
  }

  async deleteRecord(name: string): Promise<void> {
    // Drafts first: a codebase recreated under the same name must not find old drafts.
    await rm(this.draftDir(name), { recursive: true, force: true });
    await syncDir(this.drafts);
    await rm(join(this.records, `${encodeURIComponent(name)}.json`), { force: true });
    await syncDir(this.records);
  }

  private draftDir(codebase: string): string {
    return join(this.drafts, encodeURIComponent(codebase));
  }

  async putDraft(codebase: string, path: string, sha: string | null): Promise<void> {
    const dir = this.draftDir(codebase);
    if ((await mkdir(dir, { recursive: true })) !== undefined) await syncDir(this.drafts);
    await this.durableWrite(dir, `${encodeURIComponent(path)}.json`, Buffer.from(JSON.stringify({ path, sha })));
  }

  async putDrafts(codebase: string, drafts: [path: string, sha: string | null][]): Promise<void> {
    if (drafts.length === 0) return;
    const dir = this.draftDir(codebase);
    if ((await mkdir(dir, { recursive: true })) !== undefined) await syncDir(this.drafts);
    await this.durableWriteMany(dir, drafts.map(([path, sha]) => [`${encodeURIComponent(path)}.json`, Buffer.from(JSON.stringify({ path, sha }))]));
  }

  async clearDrafts(codebase: string, paths: string[]): Promise<void> {
    if (paths.length === 0) return;
    const dir = this.draftDir(codebase);
    await Promise.all(paths.map((p) => rm(join(dir, `${encodeURIComponent(p)}.json`), { force: true })));
    await syncDir(dir).catch(() => {});
  }

  async putBlob(content: Buffer): Promise<string> {
    const sha = createHash('sha256').update(content).digest('hex');
    try {
      // Already there: content-addressed, so the same bytes. Its directory entry may not be synced
      // yet (another writer between rename and fsync, or a crash right after rename): sync it.
      await (await open(join(this.blobs, sha), 'r')).close();
      await syncDir(this.blobs);
      return sha;
    } catch {
      await this.durableWrite(this.blobs, sha, content);
      return sha;
    }
  }

  async putBlobs(contents: Buffer[]): Promise<string[]> {
    const shas = contents.map((content) => createHash('sha256').update(content).digest('hex'));
    const missing = new Map<string, Buffer>();
    await inParallel(shas.map((sha, i) => [sha, contents[i]!] as const), async ([sha, content]) => {
      if (missing.has(sha)) return;
      try {
        await (await open(join(this.blobs, sha), 'r')).close();
      } catch {
        missing.set(sha, content);
      }
    });
    // Blobs that exist may have unsynced directory entries (see putBlob): the one sync below covers them.
    if (missing.size === 0) await syncDir(this.blobs);
    else await this.durableWriteMany(this.blobs, [...missing]);
    return shas;
  }

  async getBlob(sha: string): Promise<Buffer | undefined> {
    if (!/^[0-9a-f]{64}$/.test(sha)) return undefined;
    try {
      return await readFile(join(this.blobs, sha));
    } catch {
      return undefined;
    }
  }

  async close(): Promise<void> {}

  private seen = 0;

  private step(step: WriteStep): void {
    if (this.faults?.crashAfter !== step) return;
    if (++this.seen >= (this.faults.occurrence ?? 1)) process.kill(process.pid, 'SIGKILL');
  }

  /**
   * The same protocol for many files in one directory: every temp file written and synced (in
   * parallel: fsyncs of different files overlap), then renamed, then one directory sync, which
   * makes all the renames durable together.
   */
  private async durableWriteMany(dir: string, files: [name: string, content: Buffer][]): Promise<void> {
    const temps = new Map<string, string>();
    try {
      await inParallel(files, async ([name, content]) => {
        const temp = join(dir, `${name}.${randomUUID()}.tmp`);
        temps.set(name, temp);
        const handle = await open(temp, 'wx');
        try {
          await handle.writeFile(content);
          this.step('temp-written');
          await handle.sync();
          this.step('temp-synced');
        } finally {
          await handle.close();
        }
      });
    } catch (error) {
      await Promise.all([...temps.values()].map((temp) => rm(temp, { force: true })));
      throw error;
    }
    await inParallel([...temps], async ([name, temp]) => {
      await rename(temp, join(dir, name));
      this.step('renamed');
    });
    await syncDir(dir);
    this.step('dir-synced');
  }

  private async durableWrite(dir: string, name: string, content: Buffer): Promise<void> {
    // Unique, and created exclusively: two writers of the same content must never share a temp file.
    const temp = join(dir, `${name}.${randomUUID()}.tmp`);
    const handle = await open(temp, 'wx');
    try {
      await handle.writeFile(content);
      this.step('temp-written');
      await handle.sync();
      this.step('temp-synced');
    } finally {
      await handle.close();
    }
    await rename(temp, join(dir, name));
    this.step('renamed');
    await syncDir(dir);
    this.step('dir-synced');
  }
}

/** Bounded, because ten thousand files opened at once would run out of descriptors. */
async function inParallel<T>(items: readonly T[], work: (item: T) => Promise<void>, limit = 32): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
