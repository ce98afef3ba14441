// The control plane's publisher, the repo sink's engine: keeps `/flb/mesh` (mesh.json,
// services/*.json) and one derived codebase per sidecar current in the repo. It is told the desired
// state and reconciles: only files whose content changed are written, one publish per codebase per
// round, sidecar codebases in parallel up to a bound, rounds coalesced, and when the repo is away
// it retries with backoff and publishes the latest desired state (never a stale one) once it is
// back.
import { createHash } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Logger } from '../../common/log.js';
import { MESH_CODEBASE, sidecarCodebase } from '../../common/contract/identity.js';

export interface PublisherOptions {
  /** The repo's base URL, e.g. http://127.0.0.1:6060 */
  url: string;
  /** PEM: the repo's CA, and the client certificate and key it requires for writes (CN flb-control-plane). */
  tls?: { ca?: string | Buffer; cert: string | Buffer; key: string | Buffer };
  log: Logger;
  concurrency?: number;
  /** Changes within this window go out in one round. */
  batchMs?: number;
  maxBackoffMs?: number;
  headers?: () => Record<string, string>;
}

type Files = Map<string, string>;
/** Under the repo's 8 MiB body limit with room for JSON escaping. */
const BATCH_BYTES = 2 * 1024 * 1024;
const hash = (content: string) => createHash('sha256').update(content).digest('hex');

export class Publisher {
  private readonly desired = new Map<string, Files>();
  /**
   * Codebases to look at in the next round: 'all' after a whole file set was given, else the paths
   * changed one by one, so a change to one service of 10,000 costs one comparison.
   */
  private readonly dirty = new Map<string, Set<string> | 'all'>();
  private readonly published = new Map<string, Map<string, { content?: string; hash?: string }>>();
  private readonly versions = new Map<string, number>();
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private again = false;
  private backoff = 0;
  private stopped = false;
  private waiters: (() => void)[] = [];
  /** flb's repo takes a codebase's files and the publish in one request (the batch PATCH). */
  private batchSupported = false;
  private collectGarbage = false;
  /**
   * The mesh codebase's desired files are known whole: every source has listed (markComplete), or
   * the caller gave the whole codebase (setMesh). Until then a file of the mesh codebase is erased
   * only when the caller removed it by name, never because it is not desired: a restarted control
   * plane whose registry source has not answered yet (Consul down) desires none of that registry's
   * services, and erasing them would take them from every sidecar.
   */
  private meshWhole = false;
  private readonly adopted = new Set<string>();
  /** Counts for tests and metrics. */
  readonly stats: { filesWritten: number; publishes: number; failures: number; lastError?: string } = { filesWritten: 0, publishes: 0, failures: 0 };

  constructor(private readonly options: PublisherOptions) {}

  setMesh(files: Files): void {
    this.meshWhole = true;
    this.desired.set(MESH_CODEBASE, new Map(files));
    this.dirty.set(MESH_CODEBASE, 'all');
    this.schedule();
  }

  /** One file of the mesh codebase (a service of the catalog), or undefined to remove it. */
  setMeshFile(path: string, content: string | undefined): void {
    let files = this.desired.get(MESH_CODEBASE);
    if (!files) this.desired.set(MESH_CODEBASE, (files = new Map()));
    if (content === undefined) files.delete(path);
    else files.set(path, content);
    const dirty = this.dirty.get(MESH_CODEBASE);
    if (dirty === undefined) this.dirty.set(MESH_CODEBASE, new Set([path]));
    else if (dirty !== 'all') dirty.add(path);
    this.schedule();
  }

  setSidecar(id: string, files: Files): void {
    this.desired.set(sidecarCodebase(id), new Map(files));
    this.dirty.set(sidecarCodebase(id), 'all');
    this.schedule();
  }

  removeSidecar(id: string): void {
    this.desired.delete(sidecarCodebase(id));
    this.dirty.set(sidecarCodebase(id), 'all');
    this.schedule();
  }

  /**
   * Says the desired state is complete (the control plane has listed every pod and VM): sidecar
   * codebases in the repo that are not desired, left by pods that went away while the control
   * plane was down, are deleted in the next round. Never before: a restarted control plane that
   * has not listed its pods yet would delete live sidecars' configuration.
   */
  markComplete(): void {
    this.collectGarbage = true;
    if (!this.meshWhole) {
      this.meshWhole = true;
      // Mesh files held back until now (services of a source that had not listed) go in this round.
      if (this.desired.has(MESH_CODEBASE)) this.dirty.set(MESH_CODEBASE, 'all');
    }
    this.schedule();
  }

  /** Resolves when everything desired so far is published. */
  settled(): Promise<void> {
    if (!this.timer && !this.running && !this.again) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.agent?.destroy();
  }

  private schedule(delay = this.options.batchMs ?? 50): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.round().finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.schedule(0);
        } else if (!this.timer) {
          for (const resolve of this.waiters.splice(0)) resolve();
        }
      });
    }, delay);
  }

  private async round(): Promise<void> {
    try {
      // The mesh first: sidecar codebases derive from it.
      if (this.desired.has(MESH_CODEBASE) && this.dirty.has(MESH_CODEBASE)) await this.reconcile(MESH_CODEBASE, undefined);
      if (this.collectGarbage) await this.adoptOrphans();
      // Only what changed since the last successful round (a failed round leaves its codebases dirty).
      const codebases = [...this.dirty.keys()].filter((c) => c !== MESH_CODEBASE);
      const queue = [...codebases];
      const workers = Array.from({ length: Math.min(this.options.concurrency ?? 8, queue.length) }, async () => {
        for (let next = queue.shift(); next; next = queue.shift()) {
          if (this.desired.has(next)) await this.reconcile(next, MESH_CODEBASE);
          else await this.remove(next);
        }
      });
      await Promise.all(workers);
      this.backoff = 0;
      delete this.stats.lastError;
    } catch (error) {
      // stop() cut the round short: nothing failed.
      if (this.stopped) return;
      this.stats.failures++;
      this.stats.lastError = (error as Error).message;
      this.backoff = Math.min(this.options.maxBackoffMs ?? 30_000, this.backoff ? this.backoff * 2 : 200);
      this.options.log.warn({ err: error, retryInMs: this.backoff }, 'publishing to the repo failed; will retry with the latest state');
      this.again = false;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.schedule(0);
      }, this.backoff);
    }
  }

  private async adoptOrphans(): Promise<void> {
    const list = await this.call('GET', '/api/v1/repo');
    if (!list.ok) throw new Error(`listing codebases: ${list.status}`);
    // Pods' codebases only: a VM's lives as long as its install, not as long as anything listed here.
    const prefix = sidecarCodebase('pod.');
    for (const name of (await list.text()).split('\n')) {
      if (name.startsWith(prefix) && !this.desired.has(name) && !this.published.has(name)) {
        this.published.set(name, new Map());
        this.dirty.set(name, 'all');
      }
    }
    this.collectGarbage = false;
  }

  /**
   * Published files of the mesh codebase whose path passes `wanted`, by path: what an earlier run
   * or another replica published (VIPs are read back from it). Empty when the codebase does not
   * exist yet.
   */
  async readMeshFiles(wanted: (path: string) => boolean, concurrency = 8): Promise<Map<string, string>> {
    const info = await this.call('GET', `/api/v1/repo${MESH_CODEBASE}`);
    if (info.status === 404) return new Map();
    if (!info.ok) throw new Error(`GET ${MESH_CODEBASE}: ${info.status} ${await info.text()}`);
    const record = (await info.json()) as { files?: unknown };
    const paths = (Array.isArray(record.files) ? record.files : []).filter((p): p is string => typeof p === 'string' && wanted(p));
    const out = new Map<string, string>();
    const queue = [...paths];
    const workers = Array.from({ length: Math.min(concurrency, queue.length) }, async () => {
      for (let path = queue.shift(); path !== undefined; path = queue.shift()) {
        const r = await this.call('GET', `/repo${MESH_CODEBASE}${path}`);
        // Erased since the listing: nothing to read back.
        if (r.status === 404) continue;
        if (!r.ok) throw new Error(`GET ${MESH_CODEBASE}${path}: ${r.status}`);
        out.set(path, await r.text());
      }
    });
    await Promise.all(workers);
    return out;
  }

  private agent?: HttpAgent;

  private async call(method: string, path: string, body?: string): Promise<RepoResponse> {
    const url = new URL(path, this.options.url);
    const tls = url.protocol === 'https:';
    this.agent ??= tls ? new HttpsAgent({ keepAlive: true, ...(this.options.tls ?? {}) }) : new HttpAgent({ keepAlive: true });
    const response = await new Promise<RepoResponse>((resolve, reject) => {
      const req = (tls ? httpsRequest : httpRequest)(
        url,
        {
          method,
          agent: this.agent,
          timeout: 60_000,
          headers: {
            ...this.options.headers?.(),
            ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)), 'content-type': 'application/json' } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => resolve(new RepoResponse(res.statusCode ?? 0, res.headers, Buffer.concat(chunks).toString('utf8'))));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`no answer from the repo within 60 s`)));
      // Named by its request: 'socket hang up' alone does not say which of a round's calls failed.
      req.on('error', (error) => reject(Object.assign(error, { message: `${method} ${url.pathname}: ${error.message}` })));
      if (body !== undefined) writeInPieces(req, body);
      req.end();
    });
    this.batchSupported = response.headers.server === 'flb-repo';
    return response;
  }

  private async ensure(codebase: string, base: string | undefined): Promise<void> {
    if (this.versions.has(codebase)) return;
    const info = await this.call('GET', `/api/v1/repo${codebase}`);
    if (info.ok) {
      const record = (await info.json()) as { version: string; files: string[]; editFiles?: string[]; erasedFiles?: string[] };
      this.versions.set(codebase, Number.parseInt(record.version, 10) || 0);
      // Drafts left by a control plane that stopped mid-round would be published with our next
      // version: discard them (an empty PATCH discards a draft).
      for (const path of [...(record.editFiles ?? []), ...(record.erasedFiles ?? [])]) {
        const r = await this.call('PATCH', `/api/v1/repo-files${codebase}${path}`, '');
        if (r.status !== 201) throw new Error(`discarding the stale draft ${codebase}${path}: ${r.status} ${await r.text()}`);
      }
      // Published by an earlier run: flb's repo names each file by a prefix of its content hash in
      // _etags, so a restarted control plane republishes nothing that did not change. (Other repos'
      // etags do not match; everything is then written once.)
      const known = new Map<string, { hash: string }>();
      const etags = await this.call('GET', `/repo${codebase}/_etags`);
      if (etags.ok) {
        for (const line of (await etags.text()).split('\n').filter(Boolean)) {
          const at = line.lastIndexOf('#');
          if (at > 0 && record.files.includes(line.slice(0, at))) known.set(line.slice(0, at), { hash: line.slice(at + 1) });
        }
      }
      this.published.set(codebase, known);
      this.adopted.add(codebase);
      return;
    }
    if (info.status !== 404) throw new Error(`GET ${codebase}: ${info.status} ${await info.text()}`);
    const created = await this.call('POST', `/api/v1/repo${codebase}`, JSON.stringify(base ? { base } : { main: '/mesh.json' }));
    if (created.status !== 201) throw new Error(`creating ${codebase}: ${created.status} ${await created.text()}`);
    this.versions.set(codebase, 0);
    this.published.set(codebase, new Map());
  }

  private async reconcile(codebase: string, base: string | undefined): Promise<void> {
    await this.ensure(codebase, base);
    const want = this.desired.get(codebase)!;
    const have = this.published.get(codebase)!;
    const dirty = this.dirty.get(codebase) ?? 'all';
    // Taken for this attempt: changes made while it is in flight mark the codebase dirty again.
    this.dirty.delete(codebase);
    try {
      await this.reconcileChanges(codebase, want, have, dirty);
    } catch (error) {
      const now = this.dirty.get(codebase);
      this.dirty.set(codebase, now === 'all' || dirty === 'all' ? 'all' : new Set([...dirty, ...(now ?? [])]));
      // A publish whose answer was lost may have landed, and workers may hold its version: the next
      // attempt reads the codebase's version and files from the repo again rather than publishing
      // other content under that same version, which no worker holding it would ever fetch.
      this.versions.delete(codebase);
      throw error;
    }
  }

  private async reconcileChanges(
    codebase: string,
    want: Files,
    have: Map<string, { content?: string; hash?: string }>,
    dirty: Set<string> | 'all',
  ): Promise<void> {
    // A just-adopted codebase (after a restart) is compared whole: its files' origin is unknown.
    const whole = dirty === 'all' || this.adopted.has(codebase);
    const candidates = whole ? [...want] : [...dirty].filter((p) => want.has(p)).map((p) => [p, want.get(p)!] as [string, string]);
    const writes = candidates.filter(([path, content]) => {
      const known = have.get(path);
      // Published by this publisher: the content itself is kept, and comparing strings is far
      // cheaper than hashing 10,000 files for one change. Adopted after a restart: a hash prefix.
      if (known === undefined) return true;
      return known.content !== undefined ? known.content !== content : !hash(content).startsWith(known.hash!);
    });
    const heldBack = codebase === MESH_CODEBASE && !this.meshWhole;
    const erases = (heldBack ? (dirty === 'all' ? [] : [...dirty]) : whole ? [...have.keys()] : [...dirty]).filter((path) => have.has(path) && !want.has(path));
    if (writes.length === 0 && erases.length === 0) {
      this.adopted.delete(codebase);
      return;
    }
    if (this.batchSupported) await this.publishBatch(codebase, writes, erases, have);
    else {
      const version = (this.versions.get(codebase) ?? 0) + 1;
      await this.publishFileByFile(codebase, writes, erases, version);
      this.versions.set(codebase, version);
      this.stats.publishes++;
      for (const [path, content] of writes) have.set(path, { content });
      for (const path of erases) have.delete(path);
    }
    this.adopted.delete(codebase);
  }

  /**
   * Requests of at most BATCH_BYTES: one for a typical change. A change that spans several is
   * written as drafts with the last request publishing, so workers get it whole. One that only adds
   * files (a catalog published for the first time) is published request by request instead, a
   * version each: nobody holds an older copy of those files to see half of a change, and the repo
   * keeps no draft record per file (10,000 new services: about 40 % less time in the repo).
   */
  private async publishBatch(codebase: string, writes: [string, string][], erases: string[], have: Map<string, { content?: string }>): Promise<void> {
    const chunks: [string, string][][] = [[]];
    let size = 0;
    for (const write of writes) {
      if (size + write[1].length > BATCH_BYTES && size > 0) {
        chunks.push([]);
        size = 0;
      }
      chunks.at(-1)!.push(write);
      size += write[1].length + write[0].length;
    }
    const onlyAdds = erases.length === 0 && writes.every(([path]) => !have.has(path));
    for (const [i, chunk] of chunks.entries()) {
      const last = i === chunks.length - 1;
      const files: Record<string, string | null> = Object.fromEntries(chunk);
      if (last) for (const path of erases) files[path] = null;
      const version = last || onlyAdds ? (this.versions.get(codebase) ?? 0) + 1 : undefined;
      const r = await this.call('PATCH', `/api/v1/repo${codebase}`, JSON.stringify(version === undefined ? { files } : { files, version: String(version) }));
      if (r.status !== 201) throw new Error(`${version === undefined ? 'writing drafts of' : 'publishing'} ${codebase}: ${r.status} ${await r.text()}`);
      this.stats.filesWritten += chunk.length;
      if (version === undefined) continue;
      this.versions.set(codebase, version);
      this.stats.publishes++;
      // Published: what the publish carried, and with the last one every draft before it.
      for (const [path, content] of onlyAdds ? chunk : writes) have.set(path, { content });
      if (last) for (const path of erases) have.delete(path);
    }
  }

  /** The plain Pipy API: a draft per file, then the publish. */
  private async publishFileByFile(codebase: string, writes: [string, string][], erases: string[], version: number): Promise<void> {
    for (const [path, content] of writes) {
      const r = await this.call('POST', `/api/v1/repo-files${codebase}${path}`, content);
      if (r.status !== 201) throw new Error(`writing ${codebase}${path}: ${r.status} ${await r.text()}`);
      this.stats.filesWritten++;
    }
    for (const path of erases) {
      const r = await this.call('DELETE', `/api/v1/repo-files${codebase}${path}`);
      if (r.status !== 204) throw new Error(`erasing ${codebase}${path}: ${r.status}`);
    }
    const r = await this.call('PATCH', `/api/v1/repo${codebase}`, JSON.stringify({ version: String(version) }));
    if (r.status !== 201) throw new Error(`publishing ${codebase}: ${r.status} ${await r.text()}`);
  }

  private async remove(codebase: string): Promise<void> {
    const r = await this.call('DELETE', `/api/v1/repo${codebase}`);
    if (r.status !== 204 && r.status !== 404) throw new Error(`deleting ${codebase}: ${r.status} ${await r.text()}`);
    this.published.delete(codebase);
    this.versions.delete(codebase);
    this.dirty.delete(codebase);
  }
}

const WRITE_PIECE = 64 * 1024;

/**
 * A request body of megabytes (a 2 MiB batch) written in pieces of 64 KiB: Node encodes each write
 * into a buffer of its size from malloc, and the arena that megabyte buffers grow is not given back
 * while fragments of it are in use (10,000 services from scratch peaked 35 MiB higher in RSS). A
 * piece never ends between the two halves of a surrogate pair, which would become two replacement
 * characters.
 */
function writeInPieces(req: { write(chunk: string): boolean }, body: string): void {
  for (let at = 0; at < body.length;) {
    let end = Math.min(body.length, at + WRITE_PIECE);
    const lastUnit = body.charCodeAt(end - 1);
    if (end < body.length && lastUnit >= 0xd800 && lastUnit <= 0xdbff) end--;
    req.write(body.slice(at, end));
    at = end;
  }
}

/** What a repo call answered (the fetch Response's shape, which this code was written against). */
class RepoResponse {
  constructor(
    readonly status: number,
    readonly headers: IncomingHttpHeaders,
    private readonly body: string,
  ) {}

  get ok(): boolean {
    return this.status >= 200 && this.status < 300;
  }

  async text(): Promise<string> {
    return this.body;
  }

  async json(): Promise<unknown> {
    return JSON.parse(this.body) as unknown;
  }
}
