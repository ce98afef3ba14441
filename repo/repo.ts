import type { CodebaseRecord, RepoStore } from './store/store.js';

/**
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
export class RepoError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface Instance {
  index: number;
  ip: string;
  timestamp: number;
  status: Record<string, unknown>;
}

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
  if (typeof value === 'string' && value.length > 0 && value.length <= 128 && !/[\s#]/.test(value)) return value;
  throw new RepoError(400, 'Invalid version');
}

export const INSTANCE_TIMEOUT_MS = 60_000;

export class Repo {
  private readonly codebases = new Map<string, CodebaseRecord>();
  private readonly instances = new Map<string, Map<string, Instance>>();
  private instanceCounter = 0;
  /** Writes to one codebase are serialised: concurrent writers see each other's results, in order. */
  private readonly queues = new Map<string, Promise<unknown>>();

  private readonly listeners = new Set<(name: string) => void>();

  constructor(private readonly store: RepoStore) {}

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
    for (const record of await this.store.loadAll()) this.codebases.set(record.name, record);
    return this;
  }

  /**
   * Takes in what other replicas wrote to a shared store (etcd), and wakes the workers waiting on
   * any codebase whose served state changed. Returns the names that changed.
   */
  async refresh(): Promise<string[]> {
    const fresh = new Map((await this.store.loadAll()).map((r) => [r.name, r]));
    const changed: string[] = [];
    for (const name of new Set([...this.codebases.keys(), ...fresh.keys()])) {
      const before = this.codebases.get(name);
      const after = fresh.get(name);
      if (JSON.stringify(before) === JSON.stringify(after)) continue;
      if (after) this.codebases.set(name, after);
      else this.codebases.delete(name);
      changed.push(name);
    }
    for (const name of changed) this.published(name);
    return changed;
  }

  private exclusive<T>(name: string, work: () => Promise<T>): Promise<T> {
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
    return [...this.codebases.values()].filter((c) => c.base === name).map((c) => c.name).sort();
  }

  create(name: string, body: { base?: unknown; main?: unknown; version?: unknown }): Promise<void> {
    checkPath(name, 'codebase name');
    return this.exclusive(name, async () => {
      if (this.codebases.has(name)) throw new RepoError(400, 'Codebase already exists');
      for (const other of this.codebases.keys()) {
        if (other.startsWith(`${name}/`) || name.startsWith(`${other}/`)) throw new RepoError(400, `Codebase ${name} would nest with ${other}; nested codebases are not supported`);
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
      await this.store.putRecord(record);
      this.codebases.set(name, record);
    });
  }

  /** PATCH: set main, and with a version publish the drafts (without one, drafts are published in place). */
  patch(name: string, body: { main?: unknown; version?: unknown }): Promise<void> {
    checkPath(name, 'codebase name');
    if (body.main !== undefined && (typeof body.main !== 'string' || !body.main.startsWith('/'))) throw new RepoError(400, 'Invalid main filename');
    const version = checkVersion(body.version);
    return this.exclusive(name, async () => {
      const current = this.require(name);
      const files = { ...current.files };
      for (const [path, sha] of Object.entries(current.edits)) {
        if (sha === null) delete files[path];
        else files[path] = sha;
      }
      const next: CodebaseRecord = { ...current, files, edits: {}, ...(body.main !== undefined ? { main: body.main as string } : {}), ...(version !== undefined ? { version } : {}) };
      await this.store.putRecord(next);
      this.codebases.set(name, next);
      await this.store.clearDrafts(name, Object.keys(current.edits));
      this.published(name);
    });
  }

  delete(name: string): Promise<void> {
    checkPath(name, 'codebase name');
    return this.exclusive(name, async () => {
      this.require(name);
      const derived = this.derivedOf(name);
      if (derived.length) throw new RepoError(409, `Codebase ${name} has derived codebases (${derived.slice(0, 5).join(', ')}${derived.length > 5 ? ', ...' : ''}); delete them first`);
      await this.store.deleteRecord(name);
      this.codebases.delete(name);
      this.instances.delete(name);
      this.published(name);
    });
  }

  /** A draft or published file, own first, then the base chain's published files. */
  async readFile(name: string, file: string): Promise<Buffer | undefined> {
    const record = this.require(name);
    const edit = record.edits[file];
    const sha = edit === null ? this.inheritedSha(record, file) : (edit ?? record.files[file] ?? this.inheritedSha(record, file));
    return sha ? this.store.getBlob(sha) : undefined;
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
    const files = Object.keys(this.servedFiles(record)).filter((f) => f !== record.main).sort();
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
      editFiles: Object.entries(record.edits).filter(([, v]) => v !== null).map(([k]) => k).sort(),
      erasedFiles: Object.entries(record.edits).filter(([, v]) => v === null).map(([k]) => k).sort(),
      baseFiles: inherited,
      derived: this.derivedOf(record.name),
      ...(record.base ? { base: record.base } : {}),
      instances: Object.fromEntries([...(this.instances.get(record.name)?.values() ?? [])].map((i) => [String(i.index), { ip: i.ip, timestamp: i.timestamp, status: i.status }])),
    };
  }

  reportStatus(name: string, status: Record<string, unknown>, ip: string, now = Date.now()): void {
    const uuid = typeof status.uuid === 'string' ? status.uuid : '';
    // Looked up in this codebase only: a sidecar cannot take over another codebase's instance.
    const existing = this.instances.get(name)?.get(uuid);
    const { metrics: _metrics, ...kept } = status;
    const instance: Instance = { index: existing?.index ?? ++this.instanceCounter, ip, timestamp: now, status: kept };
    if (!this.instances.has(name)) this.instances.set(name, new Map());
    this.instances.get(name)!.set(uuid, instance);
  }

  expireInstances(now = Date.now()): number {
    let expired = 0;
    for (const set of this.instances.values()) {
      for (const [uuid, instance] of set) {
        if (now - instance.timestamp >= INSTANCE_TIMEOUT_MS) {
          set.delete(uuid);
          expired++;
        }
      }
    }
    return expired;
  }

  async blob(sha: string): Promise<Buffer | undefined> {
    return this.store.getBlob(sha);
  }
}
