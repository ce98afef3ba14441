import { createHash } from 'node:crypto';
import type { CodebaseRecord, RepoStore } from '../store/store.js';

type Method = 'putRecord' | 'putDraft' | 'putDrafts' | 'clearDrafts' | 'deleteRecord' | 'putBlob' | 'putBlobs';

/**
 * A RepoStore in memory, for tests and fuzzing the request handler in-process: it behaves as the
 * disk store does (records without drafts, drafts apart, content-addressed blobs), and `failNext`
 * makes the next call of a method fail, as a full disk would.
 */
export class MemoryStore implements RepoStore {
  private readonly records = new Map<string, string>();
  private readonly drafts = new Map<string, Map<string, string | null>>();
  private readonly blobs = new Map<string, Buffer>();
  private readonly failures = new Map<Method, Error>();

  /** The next call of `method` throws `error` (ENOSPC unless told) and changes nothing. */
  failNext(method: Method, error: Error = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' })): void {
    this.failures.set(method, error);
  }

  private check(method: Method): void {
    const error = this.failures.get(method);
    if (!error) return;
    this.failures.delete(method);
    throw error;
  }

  async loadAll(): Promise<CodebaseRecord[]> {
    return [...this.records.keys()].sort().map((name) => this.read(name)!);
  }

  async loadRecord(name: string): Promise<CodebaseRecord | undefined> {
    return this.read(name);
  }

  private read(name: string): CodebaseRecord | undefined {
    const stored = this.records.get(name);
    if (stored === undefined) return undefined;
    const record = JSON.parse(stored) as CodebaseRecord;
    record.edits = {};
    for (const [path, sha] of this.drafts.get(name) ?? []) {
      if (sha === null ? path in record.files : record.files[path] !== sha) record.edits[path] = sha;
    }
    return record;
  }

  async putRecord(record: CodebaseRecord): Promise<undefined> {
    this.check('putRecord');
    const { edits: _edits, revision: _revision, ...published } = record;
    this.records.set(record.name, JSON.stringify({ ...published, edits: {} }));
    return undefined;
  }

  async putDraft(codebase: string, path: string, sha: string | null): Promise<void> {
    this.check('putDraft');
    this.draftsOf(codebase).set(path, sha);
  }

  async putDrafts(codebase: string, drafts: [path: string, sha: string | null][]): Promise<void> {
    this.check('putDrafts');
    for (const [path, sha] of drafts) this.draftsOf(codebase).set(path, sha);
  }

  private draftsOf(codebase: string): Map<string, string | null> {
    let drafts = this.drafts.get(codebase);
    if (!drafts) this.drafts.set(codebase, (drafts = new Map()));
    return drafts;
  }

  async clearDrafts(codebase: string, paths: string[]): Promise<void> {
    this.check('clearDrafts');
    for (const path of paths) this.drafts.get(codebase)?.delete(path);
  }

  async deleteRecord(name: string): Promise<void> {
    this.check('deleteRecord');
    this.records.delete(name);
    this.drafts.delete(name);
  }

  async putBlob(content: Buffer): Promise<string> {
    this.check('putBlob');
    return this.store(content);
  }

  async putBlobs(contents: Buffer[]): Promise<string[]> {
    this.check('putBlobs');
    return contents.map((content) => this.store(content));
  }

  private store(content: Buffer): string {
    const sha = createHash('sha256').update(content).digest('hex');
    if (!this.blobs.has(sha)) this.blobs.set(sha, Buffer.from(content));
    return sha;
  }

  async getBlob(sha: string): Promise<Buffer | undefined> {
    return this.blobs.get(sha);
  }

  async close(): Promise<void> {}
}
