// The write queue the registry sinks (Consul, Eureka, Kubernetes) drive: which keys (an instance
// id, a Service name) still need comparing with what the registry holds, per-key backoff after a
// failure, the first-sync gate that holds removals until every source has listed everything once,
// and settled() for whoever waits for the writes. A sink keeps only its registry's calls: how to
// read what the registry holds, what a key needs compared with it, and how to write it.
//
// The registry is read before anything is written (a restart or a new leader writes nothing
// unchanged), and again whenever the sink drops what it read (unreachable, a conflict, its resync):
// until then no key is decided, since "not there" may only mean "not read yet".

export const BACKOFF_START_MS = 200;
export const BACKOFF_MAX_MS = 30_000;
/** A key not retried until the registry is read again (someone else's object holds it). */
const NEVER = Number.MAX_SAFE_INTEGER;

/** What a key needs, compared with what the registry holds. */
export type Need = 'none' | 'write' | 'foreign';

export interface WriteQueueTarget {
  /** Whether the sink can write at all yet (its node or writer mark is known); until then nothing runs. */
  canWrite(): boolean;
  /** Whether what the registry holds is known (read, and not dropped since). */
  hasRead(): boolean;
  /** Reads what the registry holds; resolves with the keys it holds (every wanted key is compared again too). */
  read(): Promise<Iterable<string>>;
  /** Whether `key` is wanted in the registry (a removal waits for the gate; a wanted key does not). */
  wanted(key: string): boolean;
  /** Every wanted key, compared again after each read. */
  wantedKeys(): Iterable<string>;
  /**
   * What `key` needs now, given what was read and `removalsAllowed`: 'none' for nothing (a removal
   * before the gate included), 'foreign' when someone else's object holds it.
   */
  needs(key: string, removalsAllowed: boolean): Need;
  /** Writes `key` (decided again inside: an earlier write may have changed what the registry holds); throws to be retried with backoff. */
  write(key: string, removalsAllowed: boolean): Promise<void>;
  /**
   * Writes several keys in one request (with `batchSize` over 1), each decided again inside as in
   * write(); resolves with the failure of each key that was not written (retried with backoff, as
   * a thrown write() is), or throws when none was.
   */
  writeBatch?(keys: readonly string[], removalsAllowed: boolean): Promise<Map<string, unknown>>;
  /** A failed read (`key` undefined) or write: the sink counts, logs, and may drop what it read. */
  failed(key: string | undefined, error: unknown): void;
  /** Someone else's object holds `key`: reported by the sink, and not tried again until the registry is read again. */
  foreign(key: string): void;
}

export interface WriteQueueOptions {
  /** Writes (or batches) in flight at once (the sink may limit further inside write()). */
  concurrency: number;
  /** Keys given to one writeBatch() at most (a registry's transaction limit); 1, the default: write() each. */
  batchSize?: number;
}

export class WriteQueue {
  /** Keys to compare with the registry; every one after a read. */
  private readonly dirty = new Set<string>();
  /** Per key: failures in a row and when it may be tried again. */
  private readonly retryAt = new Map<string, { failures: number; at: number }>();
  private mayRemove = false;
  private running = false;
  private stopped = false;
  private readBackoffMs = BACKOFF_START_MS;
  private wake?: NodeJS.Timeout;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly target: WriteQueueTarget,
    private readonly options: WriteQueueOptions,
  ) {}

  /** Whether removals are allowed: every source has listed everything once. */
  get removalsAllowed(): boolean {
    return this.mayRemove;
  }

  /** `key` may differ from what the registry holds: compared at the next run (kick() starts one). */
  mark(key: string): void {
    this.dirty.add(key);
  }

  /** Keys waiting to be compared or written, in the order they came. */
  waiting(): IterableIterator<string> {
    return this.dirty.values();
  }

  /**
   * Every source has listed everything once: what the registry holds of the sink's and nobody
   * wants may be removed from now on. `held` is what the sink knows the registry holds.
   */
  allowRemovals(held: Iterable<string>): void {
    if (this.mayRemove) return;
    this.mayRemove = true;
    for (const key of held) this.dirty.add(key);
    this.kick();
  }

  kick(): void {
    if (this.stopped || this.running) return;
    this.running = true;
    void this.run().finally(() => {
      this.running = false;
      if (this.work().length > 0 || !this.target.hasRead()) this.later();
      this.notifyIdle();
    });
  }

  /** Marked keys that need a write now or later (removals wait for the gate). */
  private work(): string[] {
    if (!this.target.hasRead()) return [...this.dirty];
    return [...this.dirty].filter((key) => this.target.needs(key, this.mayRemove) !== 'none');
  }

  private later(): void {
    if (this.stopped || this.wake) return;
    const now = Date.now();
    let at = this.target.hasRead() ? Infinity : now + this.readBackoffMs;
    for (const key of this.work()) {
      const retry = this.retryAt.get(key)?.at ?? now;
      if (retry !== NEVER) at = Math.min(at, retry);
    }
    if (at === Infinity) return;
    this.wake = setTimeout(
      () => {
        this.wake = undefined;
        this.kick();
      },
      Math.max(0, at - now),
    );
  }

  private async run(): Promise<void> {
    while (!this.stopped && this.target.canWrite()) {
      if (!this.target.hasRead()) {
        try {
          const held = await this.target.read();
          this.readBackoffMs = BACKOFF_START_MS;
          for (const [key, retry] of this.retryAt) if (retry.at === NEVER) this.retryAt.delete(key);
          for (const key of held) this.dirty.add(key);
          for (const key of this.target.wantedKeys()) this.dirty.add(key);
        } catch (error) {
          this.target.failed(undefined, error);
          this.readBackoffMs = Math.min(this.readBackoffMs * 2, BACKOFF_MAX_MS);
          return;
        }
      }
      const now = Date.now();
      const due = [...this.dirty].filter((key) => (this.retryAt.get(key)?.at ?? 0) <= now);
      if (due.length === 0) return;
      for (const key of due) this.dirty.delete(key);
      const queue = due.filter((key) => {
        const need = this.target.needs(key, this.mayRemove);
        if (need === 'foreign') {
          this.retryAt.set(key, { failures: 1, at: NEVER });
          this.target.foreign(key);
        }
        // A removal not yet allowed is found again by allowRemovals(), which compares everything held.
        return need === 'write';
      });
      const batchSize = this.target.writeBatch ? Math.max(1, this.options.batchSize ?? 1) : 1;
      const batches: string[][] = [];
      for (let at = 0; at < queue.length; at += batchSize) batches.push(queue.slice(at, at + batchSize));
      await Promise.all(
        Array.from({ length: Math.min(this.options.concurrency, batches.length) }, async () => {
          for (let batch = batches.shift(); batch !== undefined && !this.stopped; batch = batches.shift()) await this.write(batch);
        }),
      );
    }
  }

  private async write(keys: string[]): Promise<void> {
    // A failure in this round dropped what was read: decided once it is read again, never as "nothing there".
    if (!this.target.hasRead()) {
      for (const key of keys) this.dirty.add(key);
      return;
    }
    let failures: Map<string, unknown>;
    try {
      if (keys.length > 1 && this.target.writeBatch) failures = await this.target.writeBatch(keys, this.mayRemove);
      else {
        await this.target.write(keys[0]!, this.mayRemove);
        failures = new Map();
      }
    } catch (error) {
      failures = new Map(keys.map((key) => [key, error]));
    }
    for (const key of keys) {
      if (!failures.has(key)) {
        this.retryAt.delete(key);
        continue;
      }
      this.dirty.add(key);
      const failed = (this.retryAt.get(key)?.failures ?? 0) + 1;
      this.retryAt.set(key, { failures: failed, at: Date.now() + Math.min(BACKOFF_START_MS * 2 ** (failed - 1), BACKOFF_MAX_MS) });
      this.target.failed(key, failures.get(key));
    }
  }

  /** Work not written yet that has not failed: what settled() waits for (a failing write is reported, and retried, not awaited). */
  private unsettledCount(): number {
    if (!this.target.hasRead()) return this.readBackoffMs === BACKOFF_START_MS ? this.count(this.dirty, (key) => !this.retryAt.has(key)) : 0;
    return this.count(this.work(), (key) => !this.retryAt.has(key));
  }

  /** Keys that are wanted, or may be removed, and pass `also`. */
  private count(keys: Iterable<string>, also: (key: string) => boolean): number {
    let n = 0;
    for (const key of keys) if ((this.mayRemove || this.target.wanted(key)) && also(key)) n++;
    return n;
  }

  /** Changes not written yet, those someone else's object blocks left out. */
  pending(): number {
    if (!this.target.hasRead()) return this.count(this.dirty, () => true);
    return this.count(this.work(), (key) => this.retryAt.get(key)?.at !== NEVER);
  }

  private notifyIdle(): void {
    if (this.running || this.unsettledCount() > 0) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  /** Resolves once everything marked so far is written, or has failed (retried with backoff, not awaited). */
  async settled(): Promise<void> {
    if (!this.running && this.unsettledCount() === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.wake);
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}
