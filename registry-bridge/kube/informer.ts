// A lean list-and-watch of one Kubernetes resource, written for the control plane's scale: it keeps
// only what `transform` returns (a compact record) instead of whole objects, so 10,000 Services and
// their EndpointSlices cost megabytes, not the hundreds a full-object cache with managedFields
// takes (client-node's ListWatch keeps whole objects and takes no field selector). It lists in
// pages, watches from the listed resourceVersion with bookmarks, resumes after a dropped watch
// from the last version it saw, and lists again when the apiserver answers 410 Gone, emitting only
// what changed meanwhile. While the apiserver is away it keeps what it has: nothing is deleted
// until a list succeeds and no longer has it.
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../../common/log.js';

export interface KubeObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  deletionTimestamp?: string;
}

export interface RawObject {
  metadata?: KubeObjectMeta;
  [field: string]: unknown;
}

export type InformerEvent<T> = { type: 'upsert'; key: string; object: T; previous: T | undefined } | { type: 'delete'; key: string; previous: T };

export interface InformerOptions<T> {
  kubeConfig: KubeConfig;
  /** The collection, e.g. `/api/v1/services` or `/apis/discovery.k8s.io/v1/endpointslices`. */
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** The record kept for an object; undefined drops it (as if it did not exist). */
  transform: (object: RawObject) => T | undefined;
  onEvent: (event: InformerEvent<T>) => void;
  /** After every complete list (the first one is the initial sync). */
  onSynced?: () => void;
  log: Logger;
  pageSize?: number;
  watchTimeoutSeconds?: number;
  maxBackoffMs?: number;
}

interface Entry<T> {
  record: T;
  resourceVersion: string;
}

export interface InformerStats {
  lists: number;
  watches: number;
  events: number;
  relistsAfterGone: number;
  errors: number;
  lastError?: string;
  connected: boolean;
  synced: boolean;
  /** When the last list completed or the last watch event arrived (ms since the epoch). */
  lastContactAt: number;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export const keyOf = (meta: KubeObjectMeta | undefined): string => (meta?.namespace ? `${meta.namespace}/${meta.name}` : (meta?.name ?? ''));

export class Informer<T> {
  private readonly store = new Map<string, Entry<T>>();
  private resourceVersion = '';
  private stopped = false;
  private current?: { destroy(): void };
  private backoffMs = 0;
  private loop?: Promise<void>;
  private wake?: () => void;
  readonly stats: InformerStats = { lists: 0, watches: 0, events: 0, relistsAfterGone: 0, errors: 0, connected: false, synced: false, lastContactAt: 0 };

  constructor(private readonly options: InformerOptions<T>) {}

  get synced(): boolean {
    return this.stats.synced;
  }

  get size(): number {
    return this.store.size;
  }

  get(key: string): T | undefined {
    return this.store.get(key)?.record;
  }

  *entries(): IterableIterator<[string, T]> {
    for (const [key, entry] of this.store) yield [key, entry.record];
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.current?.destroy();
    this.wake?.();
    await this.loop;
  }

  private async run(): Promise<void> {
    let needList = true;
    while (!this.stopped) {
      try {
        if (needList) {
          await this.list();
          needList = false;
        }
        await this.watch();
        this.backoffMs = 0;
      } catch (error) {
        if (this.stopped) return;
        this.stats.connected = false;
        this.stats.errors++;
        this.stats.lastError = (error as Error).message;
        if (error instanceof HttpError && error.status === 410) {
          // The version we hold is compacted away: list again and emit the difference.
          this.stats.relistsAfterGone++;
          needList = true;
          this.options.log.info({ resource: this.options.path }, 'watch answered 410 Gone; listing again');
          continue;
        }
        this.backoffMs = Math.min(this.options.maxBackoffMs ?? 30_000, this.backoffMs ? this.backoffMs * 2 : 500);
        this.options.log.warn(
          { resource: this.options.path, err: (error as Error).message, retryInMs: this.backoffMs },
          'list/watch failed; keeping what we have and retrying',
        );
        await this.sleep(this.backoffMs);
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private query(extra: Record<string, string>): string {
    const params = new URLSearchParams(extra);
    if (this.options.labelSelector) params.set('labelSelector', this.options.labelSelector);
    if (this.options.fieldSelector) params.set('fieldSelector', this.options.fieldSelector);
    return `${this.options.path}?${params.toString()}`;
  }

  private async open(path: string): Promise<IncomingMessage> {
    const cluster = this.options.kubeConfig.getCurrentCluster();
    if (!cluster) throw new Error('the kubeconfig names no current cluster');
    const url = new URL(path, cluster.server);
    const options: RequestOptions = { method: 'GET', headers: { accept: 'application/json' } };
    await this.options.kubeConfig.applyToHTTPSOptions(options);
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = send(url, { ...options, agent: false }, (res) => {
        if (res.statusCode !== 200) {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c.length < 4096 ? c : ''));
          res.on('end', () => reject(new HttpError(res.statusCode ?? 0, `GET ${url.pathname}: HTTP ${res.statusCode}: ${body.slice(0, 500)}`)));
          res.on('error', reject);
          return;
        }
        resolve(res);
      });
      this.current = req;
      req.on('error', reject);
      req.end();
    });
  }

  private async getJson(path: string): Promise<{ metadata?: { resourceVersion?: string; continue?: string }; items?: RawObject[] }> {
    const res = await this.open(path);
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as { metadata?: { resourceVersion?: string; continue?: string }; items?: RawObject[] };
  }

  /** A full list, in pages; then the store becomes exactly what was listed, emitting the differences. */
  private async list(): Promise<void> {
    const seen = new Map<string, Entry<T>>();
    let continueToken = '';
    let resourceVersion = '';
    do {
      const page = await this.getJson(this.query({ limit: String(this.options.pageSize ?? 500), ...(continueToken ? { continue: continueToken } : {}) }));
      if (this.stopped) return;
      for (const raw of page.items ?? []) {
        const key = keyOf(raw.metadata);
        const record = this.options.transform(raw);
        if (record !== undefined) seen.set(key, { record, resourceVersion: raw.metadata?.resourceVersion ?? '' });
      }
      continueToken = page.metadata?.continue ?? '';
      resourceVersion = page.metadata?.resourceVersion ?? resourceVersion;
    } while (continueToken);
    for (const [key, entry] of seen) {
      const previous = this.store.get(key);
      this.store.set(key, entry);
      if (!previous || previous.resourceVersion !== entry.resourceVersion) this.emit({ type: 'upsert', key, object: entry.record, previous: previous?.record });
    }
    for (const [key, previous] of this.store) {
      if (seen.has(key)) continue;
      this.store.delete(key);
      this.emit({ type: 'delete', key, previous: previous.record });
    }
    this.resourceVersion = resourceVersion;
    this.stats.lists++;
    this.stats.synced = true;
    this.stats.lastContactAt = Date.now();
    this.options.onSynced?.();
  }

  private emit(event: InformerEvent<T>): void {
    this.stats.events++;
    try {
      this.options.onEvent(event);
    } catch (error) {
      this.options.log.error({ err: error, resource: this.options.path, key: event.key }, 'handling a watch event failed');
    }
  }

  /** One watch request, until the apiserver ends it (timeoutSeconds) or it fails. */
  private async watch(): Promise<void> {
    const res = await this.open(
      this.query({
        watch: '1',
        resourceVersion: this.resourceVersion,
        allowWatchBookmarks: 'true',
        timeoutSeconds: String(this.options.watchTimeoutSeconds ?? 300),
      }),
    );
    this.stats.watches++;
    this.stats.connected = true;
    let buffered = '';
    res.setEncoding('utf8');
    for await (const chunk of res as AsyncIterable<string>) {
      if (this.stopped) return;
      buffered += chunk;
      let newline = buffered.indexOf('\n');
      while (newline >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        if (line.trim()) this.onWatchLine(line);
        newline = buffered.indexOf('\n');
      }
    }
  }

  private onWatchLine(line: string): void {
    const event = JSON.parse(line) as { type: string; object: RawObject & { code?: number; message?: string } };
    this.stats.lastContactAt = Date.now();
    if (event.type === 'ERROR') {
      const status = event.object;
      throw new HttpError(status.code ?? 500, `watch error: ${status.message ?? JSON.stringify(status)}`);
    }
    const meta = event.object.metadata;
    if (meta?.resourceVersion) this.resourceVersion = meta.resourceVersion;
    if (event.type === 'BOOKMARK') return;
    const key = keyOf(meta);
    const previous = this.store.get(key);
    const record = event.type === 'DELETED' ? undefined : this.options.transform(event.object);
    if (record === undefined) {
      if (!previous) return;
      this.store.delete(key);
      this.emit({ type: 'delete', key, previous: previous.record });
      return;
    }
    this.store.set(key, { record, resourceVersion: meta?.resourceVersion ?? '' });
    this.emit({ type: 'upsert', key, object: record, previous: previous?.record });
  }
}
