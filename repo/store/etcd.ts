/*
 * The etcd store, for several repo replicas serving the same data. It speaks etcd's v3 JSON
 * gateway with fetch (no client library needed for put/range/txn). Every file is its own small key
 * (etcd limits a request to 1.5 MiB), so a change moves one file. Replicas pick up each other's
 * writes through `revision()` and a reload (see Repo.refresh). A record is written only if its
 * mod_revision is still the one the writer's copy was read or written at (an etcd transaction), so
 * two replicas publishing the same codebase cannot silently overwrite each other.
 */
import { createHash } from 'node:crypto';
import { StoreConflict, type CodebaseRecord, type RepoStore } from './store.js';

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');
const unb64 = (s: string) => Buffer.from(s, 'base64');
/** The key just after every key that starts with `prefix`, for a range over the prefix. */
const rangeEnd = (prefix: string) => {
  const bytes = Buffer.from(prefix);
  bytes[bytes.length - 1]!++;
  return bytes;
};

interface KeyValue {
  key: string;
  value?: string;
  mod_revision?: string;
}
interface TxnResponse {
  header: { revision: string };
  /** Omitted when false (proto3 JSON). */
  succeeded?: boolean;
  responses?: { response_range?: { kvs?: KeyValue[] } }[];
}

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

  private put(key: string, value: Buffer | string): Promise<unknown> {
    return this.call('kv/put', { key: b64(key), value: b64(value) });
  }

  /** The store's revision: it changes with every write by any replica. */
  async revision(): Promise<string> {
    const out = await this.call<{ header: { revision: string } }>('kv/range', {
      key: b64(`${this.prefix}records/`),
      range_end: b64(rangeEnd(`${this.prefix}records/`)),
      count_only: true,
    });
    return out.header.revision;
  }

  private recordKey(name: string): string {
    return `${this.prefix}records/${name}`;
  }

  private draftPrefix(name: string): string {
    return `${this.prefix}drafts/${name}\u0000`;
  }

  /** A record with its drafts; its revision is the record key's mod_revision. */
  private toRecord(kv: KeyValue, drafts: KeyValue[]): CodebaseRecord {
    const record = JSON.parse(unb64(kv.value ?? '').toString()) as CodebaseRecord;
    record.edits = {};
    record.revision = kv.mod_revision!;
    for (const draft of drafts) {
      const { path, sha } = JSON.parse(unb64(draft.value ?? '').toString()) as { path: string; sha: string | null };
      if (sha === null ? path in record.files : record.files[path] !== sha) record.edits[path] = sha;
    }
    return record;
  }

  /** Ranges over one codebase's record and drafts, in a transaction so that both are read at one revision. */
  private readOps(name: string): unknown[] {
    const drafts = this.draftPrefix(name);
    return [{ request_range: { key: b64(this.recordKey(name)) } }, { request_range: { key: b64(drafts), range_end: b64(rangeEnd(drafts)) } }];
  }

  private recordOf(out: TxnResponse): CodebaseRecord | undefined {
    const kv = out.responses?.[0]?.response_range?.kvs?.[0];
    return kv ? this.toRecord(kv, out.responses?.[1]?.response_range?.kvs ?? []) : undefined;
  }

  async loadAll(): Promise<CodebaseRecord[]> {
    const records = `${this.prefix}records/`;
    const drafts = `${this.prefix}drafts/`;
    // One transaction: a publish between two separate reads would pair a record with drafts of another moment.
    const out = await this.call<TxnResponse>('kv/txn', {
      success: [
        { request_range: { key: b64(records), range_end: b64(rangeEnd(records)) } },
        { request_range: { key: b64(drafts), range_end: b64(rangeEnd(drafts)) } },
      ],
    });
    const byCodebase = new Map<string, KeyValue[]>();
    for (const kv of out.responses?.[1]?.response_range?.kvs ?? []) {
      const codebase = unb64(kv.key).toString().slice(drafts.length).split('\u0000')[0]!;
      byCodebase.set(codebase, [...(byCodebase.get(codebase) ?? []), kv]);
    }
    return (out.responses?.[0]?.response_range?.kvs ?? []).map((kv) => this.toRecord(kv, byCodebase.get(unb64(kv.key).toString().slice(records.length)) ?? []));
  }

  async loadRecord(name: string): Promise<CodebaseRecord | undefined> {
    return this.recordOf(await this.call<TxnResponse>('kv/txn', { success: this.readOps(name) }));
  }

  /** Absent when the writer never saw the record; otherwise still at the revision the writer's copy is from. */
  private unchanged(name: string, revision: string | undefined): unknown {
    const key = b64(this.recordKey(name));
    return revision === undefined
      ? { key, target: 'CREATE', result: 'EQUAL', create_revision: '0' }
      : { key, target: 'MOD', result: 'EQUAL', mod_revision: revision };
  }

  async putRecord(record: CodebaseRecord): Promise<string> {
    const { revision, ...stored } = record;
    const out = await this.call<TxnResponse>('kv/txn', {
      compare: [this.unchanged(record.name, revision)],
      success: [{ request_put: { key: b64(this.recordKey(record.name)), value: b64(JSON.stringify({ ...stored, edits: {} })) } }],
      // What another replica wrote instead, so the writer's copy is brought up to date in the same round trip.
      failure: this.readOps(record.name),
    });
    if (!out.succeeded) throw new StoreConflict(this.recordOf(out));
    return out.header.revision;
  }

  async deleteRecord(name: string, revision?: string): Promise<void> {
    const drafts = this.draftPrefix(name);
    const out = await this.call<TxnResponse>('kv/txn', {
      compare: revision === undefined ? [] : [this.unchanged(name, revision)],
      success: [{ request_delete_range: { key: b64(this.recordKey(name)) } }, { request_delete_range: { key: b64(drafts), range_end: b64(rangeEnd(drafts)) } }],
      failure: this.readOps(name),
    });
    if (!out.succeeded) throw new StoreConflict(this.recordOf(out));
  }

  async putDraft(codebase: string, path: string, sha: string | null): Promise<void> {
    await this.put(`${this.draftPrefix(codebase)}${path}`, JSON.stringify({ codebase, path, sha }));
  }

  async putDrafts(codebase: string, drafts: [path: string, sha: string | null][]): Promise<void> {
    // etcd limits a transaction to 128 operations by default: plain puts, a few at a time.
    for (let i = 0; i < drafts.length; i += 16) await Promise.all(drafts.slice(i, i + 16).map(([path, sha]) => this.putDraft(codebase, path, sha)));
  }

  async clearDrafts(codebase: string, paths: string[]): Promise<void> {
    for (const path of paths) await this.call('kv/deleterange', { key: b64(`${this.draftPrefix(codebase)}${path}`) });
  }

  async putBlob(content: Buffer): Promise<string> {
    const sha = createHash('sha256').update(content).digest('hex');
    const key = b64(`${this.prefix}blobs/${sha}`);
    // Only when absent: content-addressed, so an existing blob is the same bytes.
    await this.call('kv/txn', {
      compare: [{ key, target: 'CREATE', result: 'EQUAL', create_revision: '0' }],
      success: [{ request_put: { key, value: b64(content) } }],
    });
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
