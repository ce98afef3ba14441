import { createHash, randomUUID } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { SIDECAR_ID_PATTERN, SIDECARS_CODEBASE_PREFIX, sidecarCodebase } from '../../common/contract/identity.js';
import type { Logger } from '../../common/log.js';
import { RepoWorker, type Snapshot } from '../../common/repo-worker.js';
import { ConfigCache } from './cache.js';
import { MESH_FILE, SIDECAR_FILE, buildState, isEmptyChange, sourceFiles, type ConfigChange, type RejectedFile, type SidecarState } from './state.js';

/** Where the sidecar's configuration comes from: its repo codebase, or a directory (tests, VMs). */
export interface ConfigSource {
  /** Resolves once a cached or local configuration (if any) is applied; the repo is not awaited. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** The configuration in force; undefined until there is a usable one (the sidecar is not ready). */
  current(): SidecarState | undefined;
  /** The files the last update refused (what they would have replaced stays in force). */
  rejected(): readonly RejectedFile[];
  /** For the admin endpoint; the repo source also reports it to the repo. */
  status(): Record<string, unknown>;
  /**
   * Why there is no configuration in force, for /ready: what was refused (which file, why) and,
   * for the repo, where the worker stands (waiting for the codebase, repo unreachable).
   */
  waitingFor(): string;
}

/**
 * Called with each new state, one call at a time, only when something in it changed (a new
 * version that changes nothing this sidecar uses is not an update). A throw is logged and reported
 * in the status; the state stays current, so the next change is a diff against it.
 */
export type UpdateHandler = (state: SidecarState, change: ConfigChange) => void | Promise<void>;

export interface RepoConfigSourceOptions {
  /** The sidecar's codebase URL, ending in `/`: http(s)://repo:6060/repo/flb/sidecars/<id>/ (see sidecarCodebaseUrl). */
  url: string;
  /** Where the last good configuration is kept for a restart without the repo. */
  cacheDir: string;
  log: Logger;
  onUpdate: UpdateHandler;
  /** Request headers (a bearer token that rotates, so asked for on every request). */
  headers?: () => Record<string, string>;
  /** PEM bundle the repo's certificate must chain to, re-read when it changes. */
  caFile?: string;
  /** Called when what waitingFor() or rejected() say may have changed. */
  onStatusChange?: () => void;
  /** How long the repo may hold a long poll (0: HEAD polling only). */
  waitSeconds?: number;
  pollIntervalMs?: number;
  statusIntervalMs?: number;
  maxBackoffMs?: number;
  /** Defaults to the id in `url`. */
  sidecarId?: string;
  /** The instance uuid in status reports; a new one per process by default. */
  instanceId?: string;
  /**
   * More of the sidecar's state for each status report: the endpoints its own checks took out
   * (`flb proxy-config` reads them from the repo, since the admin port binds 127.0.0.1).
   */
  reportExtra?: () => Record<string, unknown>;
}

export interface LocalConfigSourceOptions {
  /** Holds mesh.json, sidecar.json and services/<id>.json. */
  dir: string;
  log: Logger;
  onUpdate: UpdateHandler;
  /** Reload when a file changes. */
  watch?: boolean;
  /** Quiet time after the last change before a reload, so a burst of writes is one update. */
  debounceMs?: number;
  /** When set, a sidecar.json for another sidecar is refused. */
  sidecarId?: string;
  /** Called when what waitingFor() or rejected() say may have changed. */
  onStatusChange?: () => void;
}

/** `http://repo:6060` + `pod.shop.orders-x` -> `http://repo:6060/repo/flb/sidecars/pod.shop.orders-x/`. */
export function sidecarCodebaseUrl(repoUrl: string, id: string): string {
  return new URL(`repo${sidecarCodebase(id)}/`, repoUrl.endsWith('/') ? repoUrl : `${repoUrl}/`).toString();
}

/** The sidecar id in a codebase URL, or undefined when the URL is not a sidecar's codebase. */
export function sidecarIdFromUrl(url: string): string | undefined {
  const path = decodeURIComponent(new URL(url).pathname);
  const at = path.lastIndexOf(SIDECARS_CODEBASE_PREFIX);
  if (at < 0) return undefined;
  const id = path.slice(at + SIDECARS_CODEBASE_PREFIX.length).replace(/\/$/, '');
  return SIDECAR_ID_PATTERN.test(id) ? id : undefined;
}

export function repoConfigSource(options: RepoConfigSourceOptions): ConfigSource {
  return new RepoConfigSource(options);
}

export function localConfigSource(options: LocalConfigSourceOptions): ConfigSource {
  return new LocalConfigSource(options);
}

/** What both sources share: build, log what was refused, hand the state on. */
class Applier {
  state?: SidecarState;
  rejectedFiles: RejectedFile[] = [];
  applyError?: string;

  constructor(
    private readonly log: Logger,
    private readonly onUpdate: UpdateHandler,
    private readonly sidecarId: string | undefined,
    private readonly onStatusChange: (() => void) | undefined,
  ) {}

  /** Returns the new state when one was built (changed or not). */
  async apply(files: ReadonlyMap<string, Buffer>, version: string, origin: string): Promise<SidecarState | undefined> {
    try {
      return await this.build(files, version, origin);
    } finally {
      this.onStatusChange?.();
    }
  }

  /** Why there is no state: the refused mesh.json or sidecar.json, if that is why. */
  refusal(): string | undefined {
    if (this.state) return undefined;
    const blocking = this.rejectedFiles.filter((r) => r.path === MESH_FILE || r.path === SIDECAR_FILE);
    return blocking.length ? `configuration rejected: ${blocking.map((r) => r.error).join('; ')}` : undefined;
  }

  private async build(files: ReadonlyMap<string, Buffer>, version: string, origin: string): Promise<SidecarState | undefined> {
    const result = buildState(files, this.state, version, this.sidecarId !== undefined ? { sidecarId: this.sidecarId } : {});
    this.reportRejections(result.rejected, version);
    if (!result.state) {
      this.log.warn(
        { version, origin, rejected: result.rejected.length },
        this.state ? 'configuration refused; keeping the previous one' : 'no usable configuration yet: not ready',
      );
      return undefined;
    }
    this.state = result.state;
    if (isEmptyChange(result.change)) {
      this.log.debug({ version, origin }, 'new version changes nothing this sidecar uses');
      return result.state;
    }
    const { services } = result.change;
    this.log.info(
      {
        version,
        origin,
        mesh: result.change.mesh,
        sidecar: result.change.sidecar,
        added: services.added,
        changed: services.changed,
        removed: services.removed,
        services: result.state.services.size,
      },
      'configuration applied',
    );
    try {
      await this.onUpdate(result.state, result.change);
      this.applyError = undefined;
    } catch (error) {
      this.applyError = (error as Error).message ?? String(error);
      this.log.error({ err: error, version }, 'applying the configuration failed');
    }
    return result.state;
  }

  private reportRejections(rejected: RejectedFile[], version: string): void {
    // Each problem is logged once, not again with every unrelated update.
    const before = new Map(this.rejectedFiles.map((r) => [r.path, r.error]));
    for (const r of rejected) if (before.get(r.path) !== r.error) this.log.warn({ path: r.path, version, error: r.error }, 'refused a configuration file');
    const now = new Set(rejected.map((r) => r.path));
    for (const path of before.keys()) if (!now.has(path)) this.log.info({ path, version }, 'configuration file accepted again');
    this.rejectedFiles = rejected;
  }

  status(): Record<string, unknown> {
    return {
      ready: this.state !== undefined,
      appliedVersion: this.state?.version ?? '',
      rejected: this.rejectedFiles,
      ...(this.applyError !== undefined ? { applyError: this.applyError } : {}),
    };
  }
}

class RepoConfigSource implements ConfigSource {
  private readonly id: string;
  private readonly uuid: string;
  private readonly since = Date.now();
  private readonly applier: Applier;
  private readonly cache: ConfigCache;
  private worker?: RepoWorker;
  private origin: 'none' | 'cache' | 'repo' = 'none';
  private cacheError?: string;
  private savedVersion?: string;
  private pendingSave?: SidecarState;
  private saving?: Promise<void>;

  constructor(private readonly options: RepoConfigSourceOptions) {
    const id = options.sidecarId ?? sidecarIdFromUrl(options.url);
    if (!id)
      throw new Error(`cannot tell the sidecar id from ${options.url}: expected a codebase URL ending in ${SIDECARS_CODEBASE_PREFIX}<id>/, or pass sidecarId`);
    this.id = id;
    this.uuid = options.instanceId ?? randomUUID();
    this.applier = new Applier(options.log, options.onUpdate, id, options.onStatusChange);
    this.cache = new ConfigCache(options.cacheDir);
  }

  async start(): Promise<void> {
    if (this.worker) throw new Error('the config source is already started');
    await this.loadCache();
    this.worker = new RepoWorker({
      url: this.options.url,
      log: this.options.log,
      onUpdate: (snapshot) => this.onSnapshot(snapshot),
      status: () => this.status(),
      onCondition: () => this.options.onStatusChange?.(),
      ...(this.options.headers ? { headers: this.options.headers } : {}),
      ...(this.options.caFile !== undefined ? { caFile: this.options.caFile } : {}),
      ...(this.options.waitSeconds !== undefined ? { waitSeconds: this.options.waitSeconds } : {}),
      ...(this.options.pollIntervalMs !== undefined ? { pollIntervalMs: this.options.pollIntervalMs } : {}),
      ...(this.options.statusIntervalMs !== undefined ? { statusIntervalMs: this.options.statusIntervalMs } : {}),
      ...(this.options.maxBackoffMs !== undefined ? { maxBackoffMs: this.options.maxBackoffMs } : {}),
    });
    this.worker.start();
  }

  async stop(): Promise<void> {
    await this.worker?.stop();
    while (this.saving) await this.saving;
  }

  current(): SidecarState | undefined {
    return this.applier.state;
  }

  rejected(): readonly RejectedFile[] {
    return this.applier.rejectedFiles;
  }

  status(): Record<string, unknown> {
    return {
      // Pipy's status fields first, so a Pipy repo's GUI shows this instance too.
      uuid: this.uuid,
      name: this.id,
      since: this.since,
      timestamp: Date.now(),
      sidecarId: this.id,
      source: this.origin,
      ...this.applier.status(),
      receivedVersion: this.worker?.current()?.etag ?? '',
      cache: { dir: this.options.cacheDir, version: this.savedVersion ?? '', ...(this.cacheError !== undefined ? { error: this.cacheError } : {}) },
      ...this.options.reportExtra?.(),
    };
  }

  waitingFor(): string {
    const reasons: string[] = [];
    const refusal = this.applier.refusal();
    if (refusal) reasons.push(refusal);
    const condition = this.worker?.condition();
    const url = this.options.url;
    if (!condition || condition.state === 'connecting') reasons.push(`waiting for the codebase from the repo (${url})`);
    else if (condition.state === 'not-published')
      reasons.push(`waiting for the codebase: ${url} is not published yet (the control plane creates it once it knows the pod)`);
    else if (condition.state === 'unreachable') reasons.push(`repo unreachable (${url}): ${condition.error ?? 'no answer'}`);
    else if (!refusal) reasons.push(`the codebase ${url} gave no usable configuration yet`);
    return reasons.join('; ');
  }

  private async loadCache(): Promise<void> {
    const { log, cacheDir } = this.options;
    try {
      const cached = await this.cache.load();
      if (!cached) {
        log.info({ cacheDir }, 'no cached configuration; waiting for the repo');
        return;
      }
      this.savedVersion = cached.version;
      const state = await this.applier.apply(cached.files, cached.version, 'cache');
      if (state) {
        this.origin = 'cache';
        log.info({ version: cached.version, savedAt: cached.savedAt, cacheDir }, 'running from the cached configuration until the repo answers');
      }
    } catch (error) {
      this.cacheError = (error as Error).message;
      log.warn({ err: error, cacheDir }, 'cannot use the configuration cache; waiting for the repo');
    }
  }

  private async onSnapshot(snapshot: Snapshot): Promise<void> {
    const state = await this.applier.apply(snapshot.files, snapshot.etag, 'repo');
    if (!state) return;
    this.origin = 'repo';
    this.scheduleSave(state);
  }

  /** Saves run one at a time, off the update path; a burst of updates saves only the latest. */
  private scheduleSave(state: SidecarState): void {
    this.pendingSave = state;
    if (this.saving) return;
    this.saving = this.saveLatest().finally(() => {
      this.saving = undefined;
      // Scheduled between the loop's last check and here.
      if (this.pendingSave) this.scheduleSave(this.pendingSave);
    });
  }

  private async saveLatest(): Promise<void> {
    while (this.pendingSave) {
      const next = this.pendingSave;
      this.pendingSave = undefined;
      const files = sourceFiles(next);
      if (!files) continue;
      try {
        await this.cache.save(next.version, files);
        this.savedVersion = next.version;
        this.cacheError = undefined;
      } catch (error) {
        this.cacheError = (error as Error).message;
        this.options.log.error(
          { err: error, cacheDir: this.options.cacheDir, version: next.version },
          'cannot save the configuration cache; a restart without the repo would use an older one',
        );
      }
    }
  }
}

class LocalConfigSource implements ConfigSource {
  private readonly applier: Applier;
  private readonly watchers = new Map<string, FSWatcher>();
  private timer?: NodeJS.Timeout;
  private reloading?: Promise<void>;
  private again = false;
  private stopped = false;
  private lastRead?: string;
  private readError?: string;

  constructor(private readonly options: LocalConfigSourceOptions) {
    this.applier = new Applier(options.log, options.onUpdate, options.sidecarId, options.onStatusChange);
  }

  async start(): Promise<void> {
    const info = await stat(this.options.dir).catch(() => undefined);
    if (!info?.isDirectory())
      throw new Error(`the configuration directory ${this.options.dir} does not exist (it holds mesh.json, sidecar.json and services/<id>.json)`);
    // Watching before reading: a change made while the files are read is not missed.
    if (this.options.watch) this.arm();
    await this.reload();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    await this.reloading;
  }

  current(): SidecarState | undefined {
    return this.applier.state;
  }

  rejected(): readonly RejectedFile[] {
    return this.applier.rejectedFiles;
  }

  status(): Record<string, unknown> {
    return {
      source: 'local',
      dir: this.options.dir,
      watch: this.options.watch ?? false,
      ...this.applier.status(),
      ...(this.readError !== undefined ? { readError: this.readError } : {}),
    };
  }

  waitingFor(): string {
    const refusal = this.applier.refusal();
    if (refusal) return refusal;
    if (this.readError !== undefined) return `cannot read the configuration directory ${this.options.dir}: ${this.readError}`;
    return `no configuration in ${this.options.dir} yet (mesh.json and sidecar.json)`;
  }

  private async readFiles(): Promise<Map<string, Buffer>> {
    const { dir } = this.options;
    const files = new Map<string, Buffer>();
    const read = async (path: string) => {
      try {
        files.set(path, await readFile(join(dir, path)));
      } catch (error) {
        // Gone between listing and reading: deleted, which the next build sees as removed.
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    };
    await read(MESH_FILE);
    await read(SIDECAR_FILE);
    let names: string[] = [];
    try {
      names = await readdir(join(dir, 'services'));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    for (const name of names.filter((n) => n.endsWith('.json')).sort()) await read(`services/${name}`);
    return files;
  }

  private async reload(): Promise<void> {
    let files: Map<string, Buffer>;
    try {
      files = await this.readFiles();
      this.readError = undefined;
    } catch (error) {
      // An unreadable file (permissions, say) must not read as a deleted one: keep everything.
      this.readError = (error as Error).message;
      this.options.onStatusChange?.();
      this.options.log.warn({ err: error, dir: this.options.dir }, 'cannot read the configuration directory; keeping the current configuration');
      return;
    }
    const hash = createHash('sha256');
    for (const [path, content] of files) hash.update(path).update('\0').update(String(content.length)).update('\0').update(content);
    const version = `local-${hash.digest('hex').slice(0, 16)}`;
    if (version === this.lastRead) return;
    this.lastRead = version;
    await this.applier.apply(files, version, 'local');
  }

  /** Watches the directory and services/; a watcher whose directory went away is made again. */
  private arm(): void {
    if (this.stopped) return;
    const services = join(this.options.dir, 'services');
    for (const dir of [this.options.dir, services]) {
      if (this.watchers.has(dir)) continue;
      try {
        const watcher = watch(dir, () => {
          // services/ may have been replaced (deleted and made again, or a ConfigMap's symlink swap):
          // its watcher would watch the old one, so it is remade before the reload reads it.
          if (dir !== services) this.drop(services);
          this.schedule();
        });
        watcher.on('error', () => {
          this.drop(dir);
          this.schedule();
        });
        this.watchers.set(dir, watcher);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') this.options.log.warn({ err: error, dir }, 'cannot watch the configuration directory');
      }
    }
  }

  private drop(dir: string): void {
    this.watchers.get(dir)?.close();
    this.watchers.delete(dir);
  }

  private schedule(): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.runReload(), this.options.debounceMs ?? 100);
  }

  private async runReload(): Promise<void> {
    if (this.reloading) {
      this.again = true;
      return;
    }
    this.reloading = (async () => {
      do {
        this.again = false;
        this.arm();
        try {
          await this.reload();
        } catch (error) {
          this.options.log.error({ err: error }, 'reloading the configuration failed');
        }
      } while (this.again && !this.stopped);
    })();
    await this.reloading;
    this.reloading = undefined;
  }
}
