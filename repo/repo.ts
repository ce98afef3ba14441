/*
 * The repo's model: codebases with drafts and published versions, derived codebases that inherit
 * their base's files, the served tree workers poll, and the instances that report status. State
 * lives in memory and every accepted write is in the store before the caller is answered.
 *
 * Differences from Pipy (repo/PIPY-API.md), on purpose:
 * - A derived codebase's etag is computed from its own version and its base's etag, so publishing a
 *   base changes what 1,000 derived codebases serve without rewriting any of them.
 * - File etags are content hashes, so `_etags` tells a worker exactly which files changed.
 * - Names are checked (segments of [A-Za-z0-9._-], no `..`, no nesting of one codebase in another).
 */
import { createHash } from 'node:crypto';
import { keptStatus, truncated } from './status.js';
import { StoreConflict, type CodebaseRecord, type RepoStore } from './store/store.js';

export class RepoError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** Sent with the error answer, e.g. Retry-After. */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export interface Instance {
  index: number;
  ip: string;
  timestamp: number;
  status: Record<string, unknown>;
  codebase: string;
  uuid: string;
  /** What keeping it costs, roughly (its status as JSON, and the bookkeeping). */
  bytes: number;
}

/**
 * Instances kept, at most: per codebase (a sidecar's codebase has one, a Pipy fleet's a few
 * hundred), overall, and by the size of their statuses overall. Past a limit the instance that
 * reported least recently goes first; it comes back with its next report.
 */
export const MAX_INSTANCES_PER_CODEBASE = 256;
export const MAX_INSTANCES = 10_000;
export const MAX_INSTANCE_BYTES = 16 * 1024 * 1024;
const INSTANCE_OVERHEAD_BYTES = 256;

const SEGMENT = /^[A-Za-z0-9._-]+$/;
export const MAX_NAME_LENGTH = 512;

/** A codebase or file path: `/a/b`, segments of [A-Za-z0-9._-], no `.`/`..`, no NUL, bounded length. */
export function checkPath(path: string, what: string): string {
  if (path.length === 0 || path.length > MAX_NAME_LENGTH) throw new RepoError(400, `Invalid ${what}: must be 1-${MAX_NAME_LENGTH} characters`);
  if (!path.startsWith('/') || path.endsWith('/')) throw new RepoError(400, `Invalid ${what}: must start with / and not end with /`);
  for (const segment of path.slice(1).split('/')) {
    if (!SEGMENT.test(segment) || segment === '.' || segment === '..') {
      throw new RepoError(400, `Invalid ${what}: segment ${JSON.stringify(segment)} (letters, digits, '.', '_' and '-' only; no '..')`);
    }
  }
  return path;
}

function checkVersion(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0 || value > 2 ** 31 - 1) throw new RepoError(400, 'Invalid version number');
    return String(Math.trunc(value));
  }
  // `+` joins versions in a derived codebase's etag, which the delta of a push is computed from.
  if (typeof value === 'string' && value.length > 0 && value.length <= 128 && !/[\s#+]/.test(value)) return value;
  throw new RepoError(400, "Invalid version: 1-128 characters, no whitespace, '#' or '+'");
}

export const INSTANCE_TIMEOUT_MS = 60_000;
/** Versions of each codebase remembered for computing the delta a pushed worker receives. */
const HISTORY_VERSIONS = 16;
/** Paths the changed-path lists may hold together (8 bytes each) before they are dropped. */
const MAX_CHANGED_PATHS_CACHED = 1_000_000;
/** Blobs are immutable (content-addressed), so a cache needs no invalidation; bounded by bytes. */
const BLOB_CACHE_BYTES = 64 * 1024 * 1024;

/** What changed between two served states: path -> new content sha, or null when removed. */
export type Delta = Map<string, string | null>;

/**
 * A record as a string that is equal for equal records whatever order their keys were set in (one
 * parsed from the store and one built here); with 'served', only what workers are served.
 */
function canonical(record: CodebaseRecord | undefined, part: 'all' | 'served' = 'all'): string {
  if (!record) return '';
  const sorted = (entries: Record<string, unknown>) => Object.entries(entries).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const served = [record.name, record.base ?? null, record.version, record.main, sorted(record.files)];
  return JSON.stringify(part === 'served' ? served : [...served, sorted(record.edits), record.draftMain ?? null, record.revision ?? null]);
}

export class Repo {
  private readonly codebases = new Map<string, CodebaseRecord>();
  /** Per codebase, by uuid; each map in report order, least recent first. */
  private readonly instances = new Map<string, Map<string, Instance>>();
  /** Every instance, in report order (least recent first), for the overall limits. */
  private readonly instancesByReport = new Set<Instance>();
  private instanceBytes = 0;
  private instanceCounter = 0;
  /** Writes to one codebase are serialised: concurrent writers see each other's results, in order. */
  private readonly queues = new Map<string, Promise<unknown>>();
  /** For each refresh under way, the codebases a local write finished on since its load began. */
  private readonly writtenDuringRefresh = new Set<Set<string>>();

  private readonly listeners = new Set<(name: string) => void>();
  /**
   * Published file sets by version, per codebase, newest last. A version published in place (PATCH
   * without a version) maps to null: workers holding it may have either content, so no delta from it.
   */
  private readonly history = new Map<string, Map<string, Record<string, string> | null>>();
  /** Paths that may differ between a codebase's older etag and its current one, cached per pair. */
  private readonly changedPathsCache = new Map<string, readonly string[]>();
  /** Paths in the lists changedPathsCache made (not counting lists shared with a base). */
  private changedPathsCached = 0;
  private readonly blobCache = new Map<string, Buffer>();
  private readonly blobReads = new Map<string, Promise<Buffer | undefined>>();
  private blobCacheBytes = 0;

  constructor(private readonly store: RepoStore) {}

  private remember(record: CodebaseRecord, inPlace = false): void {
    let versions = this.history.get(record.name);
    if (!versions) this.history.set(record.name, (versions = new Map()));
    const previous = versions.get(record.version);
    const same = previous !== undefined && previous !== null && JSON.stringify(previous) === JSON.stringify(record.files);
    versions.delete(record.version);
    versions.set(record.version, (inPlace && previous !== undefined && !same) || previous === null ? null : record.files);
    while (versions.size > HISTORY_VERSIONS) versions.delete(versions.keys().next().value!);
    if (this.changedPathsCache.size > 4096) this.forgetChangedPaths();
  }

  /** Called with a codebase's name whenever what it serves may have changed (publish, delete). */
  onPublish(listener: (name: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private published(name: string): void {
    for (const listener of this.listeners) listener(name);
  }

  /** The codebase and its bases, nearest first. */
  chain(name: string): string[] {
    const out: string[] = [];
    for (let c = this.codebases.get(name); c; c = c.base ? this.codebases.get(c.base) : undefined) out.push(c.name);
    return out;
  }

  async load(): Promise<this> {
    for (const record of await this.store.loadAll()) {
      this.codebases.set(record.name, record);
      this.remember(record);
    }
    return this;
  }

  /**
   * Takes in what other replicas wrote to a shared store (etcd), and wakes the workers waiting on
   * any codebase whose served state changed. Returns the names that changed.
   */
  async refresh(): Promise<string[]> {
    const written = new Set<string>();
    this.writtenDuringRefresh.add(written);
    try {
      const fresh = new Map((await this.store.loadAll()).map((r) => [r.name, r]));
      const names = [...new Set([...this.codebases.keys(), ...fresh.keys()])].filter(
        (name) => canonical(this.codebases.get(name)) !== canonical(fresh.get(name)),
      );
      // In each codebase's queue: a write in flight lands first, and is never overwritten by a load made before it.
      const results = await Promise.allSettled(
        names.map((name) =>
          this.queued(name, async () => {
            // A local write finished since the load began, so the load may not hold it: read again,
            // now that no write to this codebase is in flight.
            const after = written.has(name) ? await this.store.loadRecord(name) : fresh.get(name);
            return this.adopt(name, after);
          }),
        ),
      );
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
      return names.filter((_, i) => (results[i] as PromiseFulfilledResult<boolean>).value);
    } finally {
      this.writtenDuringRefresh.delete(written);
    }
  }

  /**
   * Takes in these codebases as the store holds them now (another replica wrote them; a watch said
   * so), each read inside its own write queue: after any local write in flight, and never older
   * than what an earlier call took in. Wakes the workers of each one whose served state changed, and
   * only of those, so reading a codebase again publishes nothing twice. Returns the names that changed.
   */
  async reload(names: Iterable<string>): Promise<string[]> {
    const list = [...names];
    const results = await Promise.allSettled(list.map((name) => this.queued(name, async () => this.adopt(name, await this.store.loadRecord(name)))));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    return list.filter((_, i) => (results[i] as PromiseFulfilledResult<boolean>).value);
  }

  /** Makes `after`, what the store holds, this codebase's state (undefined: deleted); false if it already was. */
  private adopt(name: string, after: CodebaseRecord | undefined): boolean {
    const before = this.codebases.get(name);
    if (canonical(before) === canonical(after)) return false;
    if (after) {
      this.codebases.set(name, after);
      this.remember(after, before?.version === after.version);
    } else {
      this.codebases.delete(name);
      this.history.delete(name);
    }
    // Another replica's draft changes nothing a worker is served: no publish to count or wake for.
    if (canonical(before, 'served') !== canonical(after, 'served')) this.published(name);
    return true;
  }

  /** Writes the record; if another replica changed the codebase first, takes in its state and has the writer retry. */
  private async storeRecord(record: CodebaseRecord, changed?: readonly string[], blobs?: Buffer[]): Promise<void> {
    try {
      const revision =
        blobs && this.store.putRecordWithBlobs ? await this.store.putRecordWithBlobs(record, blobs, changed) : await this.store.putRecord(record, changed);
      if (revision !== undefined) record.revision = revision;
    } catch (error) {
      throw this.conflict(record.name, error);
    }
  }

  private conflict(name: string, error: unknown): unknown {
    if (!(error instanceof StoreConflict)) return error;
    this.adopt(name, error.current);
    return new RepoError(409, 'codebase changed on another replica; retry');
  }

  private exclusive<T>(name: string, work: () => Promise<T>): Promise<T> {
    return this.queued(name, async () => {
      try {
        return await work();
      } finally {
        for (const written of this.writtenDuringRefresh) written.add(name);
      }
    });
  }

  private queued<T>(name: string, work: () => Promise<T>): Promise<T> {
    const previous = this.queues.get(name) ?? Promise.resolve();
    const next = previous.then(work, work);
    this.queues.set(
      name,
      next.catch(() => undefined),
    );
    return next;
  }

  list(): string[] {
    return [...this.codebases.keys()].sort();
  }

  get(name: string): CodebaseRecord | undefined {
    return this.codebases.get(name);
  }

  private require(name: string): CodebaseRecord {
    const record = this.codebases.get(name);
    if (!record) throw new RepoError(404, `Codebase not found: ${name}`);
    return record;
  }

  /** The codebase that `path` (a codebase name followed by a file path) belongs to. */
  resolve(path: string): { codebase: CodebaseRecord; file: string } | undefined {
    for (let cut = path.lastIndexOf('/'); cut > 0; cut = path.lastIndexOf('/', cut - 1)) {
      const codebase = this.codebases.get(path.slice(0, cut));
      if (codebase) return { codebase, file: path.slice(cut) };
    }
    return undefined;
  }

  derivedOf(name: string): string[] {
    return [...this.codebases.values()]
      .filter((c) => c.base === name)
      .map((c) => c.name)
      .sort();
  }

  create(name: string, body: { base?: unknown; main?: unknown; version?: unknown }): Promise<void> {
    checkPath(name, 'codebase name');
    return this.exclusive(name, async () => {
      if (this.codebases.has(name)) throw new RepoError(400, 'Codebase already exists');
      for (const other of this.codebases.keys()) {
        if (other.startsWith(`${name}/`) || name.startsWith(`${other}/`))
          throw new RepoError(400, `Codebase ${name} would nest with ${other}; nested codebases are not supported`);
      }
      if (body.base !== undefined && typeof body.base !== 'string') throw new RepoError(400, 'Invalid base codebase');
      const base = body.base === undefined ? undefined : this.codebases.get(body.base as string);
      if (body.base !== undefined && !base) throw new RepoError(400, 'Base codebase not found');
      if (body.main !== undefined && (typeof body.main !== 'string' || !body.main.startsWith('/'))) throw new RepoError(400, 'Invalid main filename');
      const record: CodebaseRecord = {
        name,
        ...(base ? { base: base.name } : {}),
        version: checkVersion(body.version) ?? '0',
        main: (body.main as string | undefined) ?? base?.main ?? '/main.js',
        files: {},
        edits: {},
      };
      await this.storeRecord(record);
      this.codebases.set(name, record);
      this.remember(record);
    });
  }

  /** PATCH: set main, and with a version publish the drafts (without one, drafts are published in place). */
  patch(name: string, body: { main?: unknown; version?: unknown }): Promise<void> {
    checkPath(name, 'codebase name');
    if (body.main !== undefined && (typeof body.main !== 'string' || !body.main.startsWith('/'))) throw new RepoError(400, 'Invalid main filename');
    const version = checkVersion(body.version);
    return this.exclusive(name, () => this.publishLocked(this.require(name), body.main as string | undefined, version));
  }

  /**
   * flb's batch extension: the given files (content, or null to erase) become drafts and, with a
   * version, are published with every other draft, in one request. Blobs are written together
   * (one directory sync) and the drafts are never written when publishing, so a 10,000-file
   * publish costs a few fsyncs per file instead of a request and four fsyncs each.
   */
  writeFiles(name: string, files: Map<string, Buffer | null>, options: { version?: unknown; main?: unknown } = {}): Promise<void> {
    checkPath(name, 'codebase name');
    for (const file of files.keys()) checkPath(file, 'filename');
    if (options.main !== undefined && (typeof options.main !== 'string' || !options.main.startsWith('/'))) throw new RepoError(400, 'Invalid main filename');
    const version = checkVersion(options.version);
    return this.exclusive(name, async () => {
      const record = this.require(name);
      const contents = [...files].filter((entry): entry is [string, Buffer] => entry[1] !== null);
      // A store that writes a publish's blobs with its record (etcd: one quorum write, not two) gets them there.
      const withRecord = version !== undefined && this.store.putRecordWithBlobs !== undefined;
      const blobs = contents.map(([, content]) => content);
      const shas = withRecord ? blobs.map((content) => createHash('sha256').update(content).digest('hex')) : await this.store.putBlobs(blobs);
      const edits = { ...record.edits };
      contents.forEach(([file], i) => (edits[file] = shas[i]!));
      for (const [file, content] of files) {
        if (content !== null) continue;
        if (record.files[file]) edits[file] = null;
        else delete edits[file];
      }
      // Memory changes only once the store has the batch: a write refused (a full disk) must leave
      // nothing that a later publish would take or a restart would lose.
      const drafted: CodebaseRecord = { ...record, edits };
      if (version !== undefined) {
        // This batch's drafts were never written: only earlier ones have records to remove.
        await this.publishLocked(drafted, options.main as string | undefined, version, Object.keys(record.edits), withRecord ? blobs : undefined);
        return;
      }
      await this.store.putDrafts(
        name,
        Object.entries(edits).filter(([file]) => files.has(file)),
      );
      const erasedBeforehand = [...files].filter(([file, content]) => content === null && !record.files[file] && file in record.edits).map(([file]) => file);
      await this.store.clearDrafts(name, erasedBeforehand);
      this.codebases.set(name, drafted);
    });
  }

  /** Publishes `current` (the codebase as it is, or with a batch's drafts that are not in memory yet). */
  private async publishLocked(
    current: CodebaseRecord,
    main: string | undefined,
    version: string | undefined,
    draftsOnDisk?: string[],
    /** Blobs the store writes with the record (putRecordWithBlobs). */
    blobs?: Buffer[],
  ): Promise<void> {
    const name = current.name;
    const files = { ...current.files };
    for (const [path, sha] of Object.entries(current.edits)) {
      if (sha === null) delete files[path];
      else files[path] = sha;
    }
    const next: CodebaseRecord = { ...current, files, edits: {}, ...(main !== undefined ? { main } : {}), ...(version !== undefined ? { version } : {}) };
    // Only the drafts' paths can differ from what was last written.
    await this.storeRecord(next, Object.keys(current.edits), blobs);
    this.codebases.set(name, next);
    this.remember(next, version === undefined || version === current.version);
    // Durable now: waiting workers hear of it even if removing the drafts fails (they are dropped
    // at the next start anyway, being published).
    this.published(name);
    await this.store.clearDrafts(name, draftsOnDisk ?? Object.keys(current.edits));
  }

  delete(name: string): Promise<void> {
    checkPath(name, 'codebase name');
    return this.exclusive(name, async () => {
      const record = this.require(name);
      const derived = this.derivedOf(name);
      if (derived.length)
        throw new RepoError(
          409,
          `Codebase ${name} has derived codebases (${derived.slice(0, 5).join(', ')}${derived.length > 5 ? ', ...' : ''}); delete them first`,
        );
      await this.store.deleteRecord(name, record.revision).catch((error: unknown) => {
        throw this.conflict(name, error);
      });
      this.codebases.delete(name);
      this.history.delete(name);
      for (const instance of [...(this.instances.get(name)?.values() ?? [])]) this.dropInstance(instance);
      this.published(name);
    });
  }

  /** A draft or published file, own first, then the base chain's published files. */
  async readFile(name: string, file: string): Promise<Buffer | undefined> {
    const record = this.require(name);
    const edit = record.edits[file];
    const sha = edit === null ? this.inheritedSha(record, file) : (edit ?? record.files[file] ?? this.inheritedSha(record, file));
    return sha ? this.blob(sha) : undefined;
  }

  private inheritedSha(record: CodebaseRecord, file: string): string | undefined {
    for (let base = record.base ? this.codebases.get(record.base) : undefined; base; base = base.base ? this.codebases.get(base.base) : undefined) {
      if (base.files[file]) return base.files[file];
    }
    return undefined;
  }

  writeDraft(name: string, file: string, content: Buffer): Promise<void> {
    checkPath(file, 'filename');
    return this.exclusive(name, async () => {
      const record = this.require(name);
      const sha = await this.store.putBlob(content);
      await this.store.putDraft(name, file, sha);
      this.codebases.set(name, { ...record, edits: { ...record.edits, [file]: sha } });
    });
  }

  discardDraft(name: string, file: string): Promise<void> {
    checkPath(file, 'filename');
    return this.exclusive(name, async () => {
      const record = this.require(name);
      if (!(file in record.edits)) return;
      const edits = { ...record.edits };
      delete edits[file];
      await this.store.clearDrafts(name, [file]);
      this.codebases.set(name, { ...record, edits });
    });
  }

  eraseFile(name: string, file: string): Promise<void> {
    checkPath(file, 'filename');
    return this.exclusive(name, async () => {
      const record = this.require(name);
      const edits = { ...record.edits };
      if (record.files[file]) {
        edits[file] = null;
        await this.store.putDraft(name, file, null);
      } else {
        delete edits[file];
        await this.store.clearDrafts(name, [file]);
      }
      this.codebases.set(name, { ...record, edits });
    });
  }

  /** The published file set a worker sees: own files over the base chain's. */
  servedFiles(record: CodebaseRecord): Record<string, string> {
    const chain: CodebaseRecord[] = [];
    for (let c: CodebaseRecord | undefined = record; c; c = c.base ? this.codebases.get(c.base) : undefined) chain.unshift(c);
    return Object.assign({}, ...chain.map((c) => c.files)) as Record<string, string>;
  }

  /**
   * What workers compare: the version for a plain codebase; for a derived one its own version and
   * its base's etag, so a base publish changes every derived etag without writing any of them.
   */
  etag(record: CodebaseRecord): string {
    const base = record.base ? this.codebases.get(record.base) : undefined;
    return base ? `${record.version}+${this.etag(base)}` : record.version;
  }

  /** Served only once published with a version (as in Pipy): version "0" with no files is not served. */
  isServed(record: CodebaseRecord): boolean {
    return record.version !== '0' || Object.keys(this.servedFiles(record)).length > 0;
  }

  manifest(record: CodebaseRecord): string {
    const files = Object.keys(this.servedFiles(record))
      .filter((f) => f !== record.main)
      .sort();
    return [record.main, ...files].join('\n');
  }

  etagsListing(record: CodebaseRecord): string {
    return Object.entries(this.servedFiles(record))
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([path, sha]) => `${path}#${sha.slice(0, 16)}\n`)
      .join('');
  }

  info(record: CodebaseRecord): Record<string, unknown> {
    const inherited = record.base ? Object.keys(this.servedFiles(this.codebases.get(record.base)!)).sort() : [];
    return {
      version: record.version,
      path: record.name,
      main: record.main,
      files: Object.keys(record.files).sort(),
      editFiles: Object.entries(record.edits)
        .filter(([, v]) => v !== null)
        .map(([k]) => k)
        .sort(),
      erasedFiles: Object.entries(record.edits)
        .filter(([, v]) => v === null)
        .map(([k]) => k)
        .sort(),
      baseFiles: inherited,
      derived: this.derivedOf(record.name),
      ...(record.base ? { base: record.base } : {}),
      instances: Object.fromEntries(
        [...(this.instances.get(record.name)?.values() ?? [])]
          .sort((a, b) => a.index - b.index)
          .map((i) => [String(i.index), { ip: i.ip, timestamp: i.timestamp, status: i.status }]),
      ),
    };
  }

  /** Records a worker's status report; only what status.ts keeps of it, within the instance limits. */
  reportStatus(name: string, report: Record<string, unknown>, ip: string, now = Date.now()): void {
    const { status, bytes } = keptStatus(report);
    const uuid = typeof status.uuid === 'string' ? status.uuid : '';
    // Looked up in this codebase only: a sidecar cannot take over another codebase's instance.
    const existing = this.instances.get(name)?.get(uuid);
    // Dropping a codebase's only instance removes its map: look it up after, or the new report goes
    // into a detached map and the sidecar vanishes from every other report (seen by flb proxy-status).
    if (existing) this.dropInstance(existing);
    let set = this.instances.get(name);
    if (!set) this.instances.set(name, (set = new Map()));
    const instance: Instance = {
      index: existing?.index ?? ++this.instanceCounter,
      ip: truncated(ip, 64) ?? '',
      timestamp: now,
      status,
      codebase: name,
      uuid,
      bytes: bytes + INSTANCE_OVERHEAD_BYTES,
    };
    set.set(uuid, instance);
    this.instancesByReport.add(instance);
    this.instanceBytes += instance.bytes;
    while (set.size > MAX_INSTANCES_PER_CODEBASE) this.dropInstance(set.values().next().value!);
    while (this.instancesByReport.size > MAX_INSTANCES || this.instanceBytes > MAX_INSTANCE_BYTES)
      this.dropInstance(this.instancesByReport.values().next().value!);
  }

  private dropInstance(instance: Instance): void {
    const set = this.instances.get(instance.codebase);
    if (set?.get(instance.uuid) === instance) {
      set.delete(instance.uuid);
      if (set.size === 0) this.instances.delete(instance.codebase);
    }
    if (this.instancesByReport.delete(instance)) this.instanceBytes -= instance.bytes;
  }

  /** Instances kept now, and what they cost; for tests and metrics. */
  instanceUsage(): { instances: number; bytes: number } {
    return { instances: this.instancesByReport.size, bytes: this.instanceBytes };
  }

  expireInstances(now = Date.now()): number {
    let expired = 0;
    for (const instance of [...this.instancesByReport]) {
      if (now - instance.timestamp >= INSTANCE_TIMEOUT_MS) {
        this.dropInstance(instance);
        expired++;
      }
    }
    return expired;
  }

  blob(sha: string): Promise<Buffer | undefined> {
    const cached = this.blobCache.get(sha);
    if (cached) return Promise.resolve(cached);
    // A publish wakes 1,000 workers at once: they share one read of each changed file.
    const pending = this.blobReads.get(sha);
    if (pending) return pending;
    const read = this.store.getBlob(sha).then((content) => {
      if (content && content.length <= BLOB_CACHE_BYTES / 64) {
        this.blobCache.set(sha, content);
        this.blobCacheBytes += content.length;
        for (const [old, buffer] of this.blobCache) {
          if (this.blobCacheBytes <= BLOB_CACHE_BYTES) break;
          this.blobCache.delete(old);
          this.blobCacheBytes -= buffer.length;
        }
      }
      return content;
    });
    this.blobReads.set(sha, read);
    const forget = () => this.blobReads.delete(sha);
    read.then(forget, forget);
    return read;
  }

  /**
   * What changed for a worker holding `fromEtag` of `record`, for a push that carries the changed
   * files themselves; undefined when that state is not remembered (the worker then syncs the
   * usual way, manifest and `_etags`). Cost follows the number of changed paths, not the size of
   * the codebase, and the base's part is computed once for all its derived codebases.
   */
  delta(record: CodebaseRecord, fromEtag: string): Delta | undefined {
    const from = this.stateAt(record, fromEtag);
    if (!from) return undefined;
    const paths = this.changedPaths(record, fromEtag);
    if (!paths) return undefined;
    const delta: Delta = new Map();
    for (const path of paths) {
      const before = this.shaIn(from, path);
      const now = this.shaIn(
        this.chainOf(record).map((c) => c.files),
        path,
      );
      if (before !== now) delta.set(path, now ?? null);
    }
    return delta;
  }

  private chainOf(record: CodebaseRecord): CodebaseRecord[] {
    const chain: CodebaseRecord[] = [];
    for (let c: CodebaseRecord | undefined = record; c; c = c.base ? this.codebases.get(c.base) : undefined) chain.push(c);
    return chain;
  }

  private shaIn(chainFiles: Record<string, string>[], path: string): string | undefined {
    for (const files of chainFiles) if (files[path]) return files[path];
    return undefined;
  }

  /** The file sets (own first, then the bases') a worker holding `etag` was served. */
  private stateAt(record: CodebaseRecord, etag: string): Record<string, string>[] | undefined {
    const out: Record<string, string>[] = [];
    let rest = etag;
    for (const c of this.chainOf(record)) {
      const cut = c.base ? rest.indexOf('+') : rest.length;
      if (cut < 0) return undefined;
      const files = this.history.get(c.name)?.get(rest.slice(0, cut));
      if (!files) return undefined;
      out.push(files);
      rest = rest.slice(cut + 1);
    }
    return out;
  }

  private changedPaths(record: CodebaseRecord, fromEtag: string): readonly string[] | undefined {
    const key = `${record.name}\0${fromEtag}\0${this.etag(record)}`;
    const cached = this.changedPathsCache.get(key);
    if (cached) return cached;
    const cut = record.base ? fromEtag.indexOf('+') : fromEtag.length;
    const own = this.history.get(record.name)?.get(fromEtag.slice(0, cut));
    if (!own) return undefined;
    const paths = new Set<string>();
    if (own !== record.files) {
      for (const path of Object.keys(own)) if (own[path] !== record.files[path]) paths.add(path);
      for (const path of Object.keys(record.files)) if (own[path] !== record.files[path]) paths.add(path);
    }
    const base = record.base ? this.codebases.get(record.base) : undefined;
    let basePaths: readonly string[] | undefined;
    if (base) {
      const fromBase = fromEtag.slice(cut + 1);
      if (fromBase !== this.etag(base)) {
        basePaths = this.changedPaths(base, fromBase);
        if (!basePaths) return undefined;
      }
    }
    // A sidecar codebase that did not change itself shares its base's list: after a catalog rebuild
    // a thousand derived codebases would otherwise each keep a copy of every changed path.
    let result: readonly string[];
    if (paths.size === 0) result = basePaths ?? [];
    else {
      for (const path of basePaths ?? []) paths.add(path);
      result = [...paths];
      if (this.changedPathsCached + result.length > MAX_CHANGED_PATHS_CACHED) this.forgetChangedPaths();
      this.changedPathsCached += result.length;
    }
    this.changedPathsCache.set(key, result);
    return result;
  }

  private forgetChangedPaths(): void {
    this.changedPathsCache.clear();
    this.changedPathsCached = 0;
  }
}
