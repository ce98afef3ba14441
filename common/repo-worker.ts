/*
 * The sidecar's side of the repo: a worker of its own codebase. It waits for a change by long poll
 * when the repo offers push (flb's repo), polls with HEAD otherwise (a Pipy repo), fetches only the
 * files whose `_etags` entry changed, reports status, and backs off while the repo is away, keeping
 * the last good snapshot. Where it stands (synced, waiting for the codebase, repo unreachable) is
 * kept for the sidecar's readiness, and logged when it changes, not on every retry.
 */
import { KeepAliveClient, type SmallRequest, type SmallResponse } from './http-client.js';
import { ConditionLog, describeError, type Logger } from './log.js';

export interface Snapshot {
  etag: string;
  main: string;
  files: Map<string, Buffer>;
}

/** Beyond a long poll's hold time: how long an answer may take before the repo counts as away. */
const REQUEST_TIMEOUT_SECONDS = 15;

/** Media type of a pushed delta (flb's repo): a worker asks for it with Accept; Pipy workers never do. */
export const DELTA_MEDIA_TYPE = 'application/vnd.flb.repo-delta+json';
interface PushedDelta {
  main: string;
  files: Record<string, { etag: string; content: string; encoding: 'utf8' | 'base64' }>;
  removed: string[];
  /** Every file of the codebase (the answer to a worker with no etag), not a change. */
  full?: boolean;
}

/** The codebase does not exist (yet) or has never been published with a version. */
export class NotPublished extends Error {
  constructor(url: string) {
    super(`${url} is not published`);
  }
}

/** Where the worker stands with the repo, for the sidecar's readiness. */
export interface WorkerCondition {
  /**
   * `connecting`: no answer yet; `synced`: the last exchange succeeded; `not-published`: the repo
   * has no such codebase (yet); `unreachable`: the last exchange failed (`error` says how).
   */
  state: 'connecting' | 'synced' | 'not-published' | 'unreachable';
  error?: string;
  /** Since when (ms since the epoch). */
  since: number;
}

export interface WorkerOptions {
  /** The codebase URL, ending in `/`: http(s)://repo:6060/repo/flb/sidecars/<id>/ */
  url: string;
  onUpdate(snapshot: Snapshot, changed: string[]): void | Promise<void>;
  /** The status body to report; omit to report nothing. */
  status?: () => Record<string, unknown>;
  log: Logger;
  /** Seconds a long poll may be held by the repo (0: poll only). */
  waitSeconds?: number;
  pollIntervalMs?: number;
  statusIntervalMs?: number;
  maxBackoffMs?: number;
  /** Extra request headers (an Authorization bearer token, later). */
  headers?: () => Record<string, string>;
  /** PEM bundle an https repo's certificate must chain to, re-read when it changes (else Node's trust). */
  caFile?: string;
  /** Called when condition() changes. */
  onCondition?(condition: WorkerCondition): void;
}

export class RepoWorker {
  private snapshot?: Snapshot;
  private fileEtags = new Map<string, string>();
  private stopped = false;
  private readonly abort = new AbortController();
  private readonly client: KeepAliveClient;
  private pushSupported = true;
  private loop?: Promise<void>;
  private statusTimer?: NodeJS.Timeout;
  private state: WorkerCondition = { state: 'connecting', since: Date.now() };
  private readonly conditions: ConditionLog;
  /** Files fetched since start, for tests and metrics. */
  fetchedFiles = 0;

  constructor(private readonly options: WorkerOptions) {
    if (!options.url.endsWith('/')) throw new Error(`the worker URL must end with '/': ${options.url}`);
    this.conditions = new ConditionLog(options.log);
    this.client = new KeepAliveClient({
      ...(options.caFile !== undefined ? { caFile: options.caFile } : {}),
      onCaProblem: (message) => options.log.warn({ caFile: options.caFile }, message),
    });
  }

  current(): Snapshot | undefined {
    return this.snapshot;
  }

  condition(): WorkerCondition {
    return this.state;
  }

  start(): void {
    this.loop = this.run();
    if (this.options.status) {
      // The first report follows the first sync (reportSoon): one sent now would open a second
      // connection (TLS handshake included) beside the first GET, on a starting pod's cores.
      this.statusTimer = setInterval(() => void this.reportStatus(), this.options.statusIntervalMs ?? 5000);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    clearInterval(this.statusTimer);
    clearTimeout(this.reportTimer);
    await this.loop?.catch(() => {});
    this.client.close();
  }

  private request(path: string, init: Omit<SmallRequest, 'timeoutMs' | 'signal'> = {}, holdSeconds = 0): Promise<SmallResponse> {
    return this.client.request(new URL(path, this.options.url), {
      ...init,
      signal: this.abort.signal,
      headers: { ...this.options.headers?.(), ...init.headers },
      // A repo that stops answering (gone without closing the connection) is noticed.
      timeoutMs: (holdSeconds + REQUEST_TIMEOUT_SECONDS) * 1000,
    });
  }

  private async run(): Promise<void> {
    let backoff = 0;
    while (!this.stopped) {
      try {
        await this.step();
        backoff = 0;
        this.conditions.clear('the repo answers again', { url: this.options.url, version: this.snapshot?.etag });
        this.setCondition('synced');
      } catch (error) {
        if (this.stopped) return;
        // Not published yet (the control plane creates a sidecar's codebase when its pod appears,
        // which may be after the sidecar starts): ask again soon, and say what is going on.
        const notYet = error instanceof NotPublished;
        backoff = Math.min(notYet ? 2000 : (this.options.maxBackoffMs ?? 30_000), backoff ? backoff * 2 : 500);
        const delay = backoff / 2 + Math.random() * (backoff / 2);
        if (notYet) {
          this.conditions.report('not-published', 'codebase not published yet; waiting for the control plane', { level: 'info', url: this.options.url });
          this.setCondition('not-published');
        } else {
          this.conditions.report('unreachable', 'repo unreachable; keeping the last configuration', {
            error,
            url: this.options.url,
            keeping: this.snapshot?.etag,
          });
          this.setCondition('unreachable', describeError(error));
        }
        await this.sleep(delay);
      }
    }
  }

  private setCondition(state: WorkerCondition['state'], error?: string): void {
    if (this.state.state === state && this.state.error === error) return;
    this.state = { state, ...(error !== undefined ? { error } : {}), since: Date.now() };
    this.options.onCondition?.(this.state);
  }

  private async step(): Promise<void> {
    const etag = this.snapshot?.etag;
    const wait = this.options.waitSeconds ?? 30;
    if (etag !== undefined && !(this.pushSupported && wait > 0)) {
      await this.sleep(this.options.pollIntervalMs ?? 5000);
      if (this.stopped) return;
      const head = await this.request('', { method: 'HEAD' });
      if (head.status === 404) throw new NotPublished(this.options.url);
      if (!head.ok) throw new Error(`HEAD ${this.options.url}: ${head.status}`);
      if (head.headers.get('etag') === etag) return;
    }
    const longPoll = etag !== undefined && this.pushSupported && wait > 0;
    const accept = { accept: `${DELTA_MEDIA_TYPE}, text/plain;q=0.5` };
    // Starting, the worker asks for every file in the answer (flb's repo; Pipy answers with the manifest).
    const headers = longPoll ? { 'if-none-match': etag, prefer: `wait=${wait}`, ...accept } : etag === undefined ? accept : undefined;
    const response = await this.request('', headers ? { headers } : {}, longPoll ? wait : 0);
    if (response.status === 304) return;
    if (response.status === 404) throw new NotPublished(this.options.url);
    if (!response.ok) throw new Error(`GET ${this.options.url}: ${response.status}`);
    if (response.headers.get('content-type') === DELTA_MEDIA_TYPE) {
      const delta = response.json() as PushedDelta;
      if (!delta.full && !this.snapshot) throw new Error(`GET ${this.options.url}: a change to a snapshot this worker does not have`);
      await this.applyDelta(delta, response.headers.get('etag') ?? '');
      return;
    }
    const manifest = response.text();
    const newEtag = response.headers.get('etag') ?? '';
    if (newEtag === etag) {
      // The repo ignored If-None-Match (a Pipy repo): fall back to polling.
      this.pushSupported = false;
      return;
    }
    await this.sync(manifest, newEtag);
  }

  /** A push that carries the changed files (or all of them) itself (flb's repo): current in one round trip. */
  private async applyDelta(delta: PushedDelta, etag: string): Promise<void> {
    const before = delta.full ? undefined : this.snapshot;
    const files = new Map(before?.files);
    const fileEtags = new Map(before ? this.fileEtags : []);
    const changed: string[] = [];
    if (delta.full) for (const path of this.snapshot?.files.keys() ?? []) if (!(path in delta.files)) changed.push(path);
    for (const [path, file] of Object.entries(delta.files)) {
      files.set(path, Buffer.from(file.content, file.encoding === 'base64' ? 'base64' : 'utf8'));
      fileEtags.set(path, file.etag);
      this.fetchedFiles++;
      changed.push(path);
    }
    for (const path of delta.removed) {
      if (files.delete(path)) changed.push(path);
      fileEtags.delete(path);
    }
    this.fileEtags = fileEtags;
    this.snapshot = { etag, main: delta.main, files };
    await this.options.onUpdate(this.snapshot, changed);
    this.reportSoon();
  }

  private async sync(manifest: string, etag: string): Promise<void> {
    const lines = manifest
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
    const main = lines[0] ?? '';
    const etagsResponse = await this.request('_etags');
    const latest = new Map<string, string>();
    if (etagsResponse.ok) {
      for (const line of etagsResponse.text().split('\n').filter(Boolean)) {
        const hash = line.lastIndexOf('#');
        latest.set(hash < 0 ? line : line.slice(0, hash), hash < 0 ? '' : line.slice(hash + 1));
      }
    }
    const files = new Map<string, Buffer>();
    const changed: string[] = [];
    for (const path of lines) {
      const known = this.snapshot?.files.get(path);
      const tag = latest.get(path);
      if (known && tag && this.fileEtags.get(path) === tag) {
        files.set(path, known);
        continue;
      }
      const file = await this.request(path.slice(1));
      // As Pipy workers do: a listed file that is gone is skipped.
      if (file.status === 404) continue;
      if (!file.ok) throw new Error(`GET ${path}: ${file.status}`);
      files.set(path, file.body);
      this.fetchedFiles++;
      changed.push(path);
    }
    for (const path of this.snapshot?.files.keys() ?? []) if (!files.has(path)) changed.push(path);
    this.fileEtags = latest;
    this.snapshot = { etag, main, files };
    await this.options.onUpdate(this.snapshot, changed);
    this.reportSoon();
  }

  private reportTimer?: NodeJS.Timeout;

  /**
   * A report shortly after a new version is applied, besides the periodic one: who holds which
   * version (proxy status, the demo) is then seconds fresher. Coalesced, so a burst of versions
   * costs one report.
   */
  private reportSoon(): void {
    if (!this.options.status || this.reportTimer || this.stopped) return;
    this.reportTimer = setTimeout(() => {
      this.reportTimer = undefined;
      void this.reportStatus();
    }, 100);
  }

  private async reportStatus(): Promise<void> {
    try {
      await this.request('', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...this.options.status!(), version: this.snapshot?.etag ?? '' }),
      });
    } catch {
      // The next report retries; the repo keeps the instance for a minute.
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const onAbort = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.abort.signal.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      this.abort.signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}
