import { createHash } from 'node:crypto';
import type { CodebaseRecord, RepoStore } from './store.js';

/**
 * The etcd store, for several repo replicas serving the same data. It speaks etcd's v3 JSON
 * gateway with fetch (no client library needed for put/range/txn). Every file is its own small key
 * (etcd limits a request to 1.5 MiB), so a change moves one file. Replicas pick up each other's
 * writes through `revision()` and a reload (see Repo.refresh).
 */
const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');
const unb64 = (s: string) => Buffer.from(s, 'base64');
/** The key just after every key that starts with `prefix`, for a range over the prefix. */
const rangeEnd = (prefix: string) => {
  const bytes = Buffer.from(prefix);
  bytes[bytes.length - 1]!++;
  return bytes;
};

export class EtcdStore implements RepoStore {
  constructor(
    private readonly endpoint: string,
    private readonly prefix = 'flb-repo/',
  ) {}

  private async call<T>(path: string, body: unknown): Promise<T> {
    const response = await fetch(`${this.endpoint}/v3/${path}`, { method: 'POST', body: JSON.stringify(body) });
    const text = await response.text();
    if (!response.ok) throw new Error(`etcd ${path}: ${response.status} ${text.slice(0, 200)}`);
    return JSON.parse(text) as T;
  }

  private async range(prefix: string): Promise<{ key: string; value: Buffer }[]> {
    const out = await this.call<{ kvs?: { key: string; value?: string }[] }>('kv/range', { key: b64(prefix), range_end: b64(rangeEnd(prefix)) });
    return (out.kvs ?? []).map((kv) => ({ key: unb64(kv.key).toString(), value: unb64(kv.value ?? '') }));
  }

  private put(key: string, value: Buffer | string): Promise<unknown> {
    return this.call('kv/put', { key: b64(key), value: b64(value) });
  }

  /** The store's revision: it changes with every write by any replica. */
  async revision(): Promise<string> {
    const out = await this.call<{ header: { revision: string } }>('kv/range', { key: b64(`${this.prefix}records/`), range_end: b64(rangeEnd(`${this.prefix}records/`)), count_only: true });
    return out.header.revision;
  }

  async loadAll(): Promise<CodebaseRecord[]> {
    const drafts = new Map<string, Record<string, string | null>>();
    for (const { value } of await this.range(`${this.prefix}drafts/`)) {
      const { codebase, path, sha } = JSON.parse(value.toString()) as { codebase: string; path: string; sha: string | null };
      drafts.set(codebase, { ...drafts.get(codebase), [path]: sha });
    }
    return (await this.range(`${this.prefix}records/`)).map(({ value }) => {
      const record = JSON.parse(value.toString()) as CodebaseRecord;
      record.edits = {};
      for (const [path, sha] of Object.entries(drafts.get(record.name) ?? {})) {
        if (sha === null ? path in record.files : record.files[path] !== sha) record.edits[path] = sha;
      }
      return record;
    });
  }

  async putRecord(record: CodebaseRecord): Promise<void> {
    await this.put(`${this.prefix}records/${record.name}`, JSON.stringify({ ...record, edits: {} }));
  }

  async deleteRecord(name: string): Promise<void> {
    await this.call('kv/deleterange', { key: b64(`${this.prefix}records/${name}`) });
    const prefix = `${this.prefix}drafts/${name}\u0000`;
    await this.call('kv/deleterange', { key: b64(prefix), range_end: b64(rangeEnd(prefix)) });
  }

  async putDraft(codebase: string, path: string, sha: string | null): Promise<void> {
    await this.put(`${this.prefix}drafts/${codebase}\u0000${path}`, JSON.stringify({ codebase, path, sha }));
  }

  async putDrafts(codebase: string, drafts: [path: string, sha: string | null][]): Promise<void> {
    // etcd limits a transaction to 128 operations by default: plain puts, a few at a time.
    for (let i = 0; i < drafts.length; i += 16) await Promise.all(drafts.slice(i, i + 16).map(([path, sha]) => this.putDraft(codebase, path, sha)));
  }

  async clearDrafts(codebase: string, paths: string[]): Promise<void> {
    for (const path of paths) await this.call('kv/deleterange', { key: b64(`${this.prefix}drafts/${codebase}\u0000${path}`) });
  }

  async putBlob(content: Buffer): Promise<string> {
    const sha = createHash('sha256').update(content).digest('hex');
    const key = b64(`${this.prefix}blobs/${sha}`);
    // Only when absent: content-addressed, so an existing blob is the same bytes.
    await this.call('kv/txn', { compare: [{ key, target: 'CREATE', result: 'EQUAL', create_revision: '0' }], success: [{ request_put: { key, value: b64(content) } }] });
    return sha;
  }

  async putBlobs(contents: Buffer[]): Promise<string[]> {
    const shas: string[] = [];
    for (let i = 0; i < contents.length; i += 16) shas.push(...(await Promise.all(contents.slice(i, i + 16).map((c) => this.putBlob(c)))));
    return shas;
  }

  async getBlob(sha: string): Promise<Buffer | undefined> {
    if (!/^[0-9a-f]{64}$/.test(sha)) return undefined;
    const out = await this.call<{ kvs?: { value?: string }[] }>('kv/range', { key: b64(`${this.prefix}blobs/${sha}`) });
    return out.kvs?.[0] ? unb64(out.kvs[0].value ?? '') : undefined;
  }

  async close(): Promise<void> {}
}
