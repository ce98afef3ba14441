import { afterEach, describe, expect, it } from '@jest/globals';
import { WriteQueue, type Need } from './write-queue.js';

/**
 * A registry of key -> value as a sink sees it: what it holds (read back), what is wanted, and
 * every request made. A value of someone else's is `foreign:...`.
 */
class FakeRegistry {
  stored = new Map<string, string>();
  wanted = new Map<string, string>();
  held?: Map<string, string>;
  requests: string[] = [];
  writeTimes = new Map<string, number[]>();
  /** Fails reads or writes of a key with this, while set. */
  failing?: (what: string) => Error | undefined;
  ready = true;
  inFlight = 0;
  maxInFlight = 0;
  reported: string[] = [];
  failures: string[] = [];

  readonly queue: WriteQueue;

  /** With `batchSize`, keys come in batches through writeBatch(), each recorded as `batch a,b`. */
  constructor(concurrency = 4, batchSize?: number) {
    this.queue = new WriteQueue(
      {
        canWrite: () => this.ready,
        hasRead: () => this.held !== undefined,
        read: async () => {
          await Promise.resolve();
          this.requests.push('read');
          const error = this.failing?.('read');
          if (error) throw error;
          this.held = new Map(this.stored);
          return this.held.keys();
        },
        wanted: (key) => this.wanted.has(key),
        wantedKeys: () => this.wanted.keys(),
        needs: (key, removalsAllowed) => this.needs(key, removalsAllowed),
        write: (key, removalsAllowed) => this.write(key, removalsAllowed),
        failed: (key, error) => {
          this.failures.push(`${key ?? 'read'}: ${(error as Error).message}`);
          // Unreachable: what was read may be stale.
          if ((error as Error).message === 'unreachable') this.held = undefined;
        },
        foreign: (key) => this.reported.push(key),
        ...(batchSize ? { writeBatch: (keys: readonly string[], removalsAllowed: boolean) => this.writeBatch(keys, removalsAllowed) } : {}),
      },
      { concurrency, ...(batchSize ? { batchSize } : {}) },
    );
  }

  needs(key: string, removalsAllowed: boolean): Need {
    const held = this.held?.get(key);
    const wanted = this.wanted.get(key);
    if (held?.startsWith('foreign:')) return 'foreign';
    if (wanted === undefined) return held !== undefined && removalsAllowed ? 'write' : 'none';
    return held === wanted ? 'none' : 'write';
  }

  async write(key: string, removalsAllowed: boolean): Promise<void> {
    if (this.needs(key, removalsAllowed) !== 'write') return;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise((resolve) => setTimeout(resolve, 5));
      const wanted = this.wanted.get(key);
      this.requests.push(wanted === undefined ? `delete ${key}` : `put ${key}=${wanted}`);
      this.writeTimes.set(key, [...(this.writeTimes.get(key) ?? []), Date.now()]);
      const error = this.failing?.(key);
      if (error) throw error;
      if (wanted === undefined) {
        this.stored.delete(key);
        this.held?.delete(key);
      } else {
        this.stored.set(key, wanted);
        this.held?.set(key, wanted);
      }
    } finally {
      this.inFlight--;
    }
  }

  async writeBatch(keys: readonly string[], removalsAllowed: boolean): Promise<Map<string, unknown>> {
    await new Promise((resolve) => setTimeout(resolve, 5));
    this.requests.push(`batch ${keys.join(',')}`);
    const failures = new Map<string, unknown>();
    for (const key of keys) {
      if (this.needs(key, removalsAllowed) !== 'write') continue;
      const error = this.failing?.(key);
      if (error) failures.set(key, error);
      else this.stored.set(key, this.wanted.get(key)!);
      if (!error) this.held?.set(key, this.wanted.get(key)!);
    }
    return failures;
  }

  want(key: string, value: string | undefined): void {
    if (value === undefined) this.wanted.delete(key);
    else this.wanted.set(key, value);
    this.queue.mark(key);
    this.queue.kick();
  }

  writes(): string[] {
    return this.requests.filter((r) => r !== 'read');
  }
}

const registries: FakeRegistry[] = [];
const registry = (concurrency?: number, batchSize?: number) => {
  const r = new FakeRegistry(concurrency, batchSize);
  registries.push(r);
  return r;
};
afterEach(() => {
  for (const r of registries.splice(0)) r.queue.stop();
});

async function until(what: string, ok: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('the write queue the registry sinks drive', () => {
  it('reads what the registry holds before writing, writes only what differs, and nothing again while nothing changes', async () => {
    const r = registry();
    r.stored.set('a', '1');
    r.want('a', '1');
    r.want('b', '2');
    await r.queue.settled();
    expect(r.requests).toEqual(['read', 'put b=2']);
    expect(r.queue.pending()).toBe(0);
    r.want('b', '2');
    r.want('a', '1');
    await r.queue.settled();
    expect(r.requests).toEqual(['read', 'put b=2']);
    r.want('a', '3');
    await r.queue.settled();
    expect(r.writes()).toEqual(['put b=2', 'put a=3']);
  });

  it('removes nothing before every source listed everything once, then what nobody wants', async () => {
    const r = registry();
    r.stored.set('gone', '1');
    r.stored.set('kept', '1');
    r.want('kept', '1');
    r.want('new', '1');
    r.want('new', undefined);
    await r.queue.settled();
    expect(r.writes()).toEqual([]);
    // Not written, and not pending either: a removal waits for the gate.
    expect(r.queue.pending()).toBe(0);
    r.queue.allowRemovals(r.held!.keys());
    expect(r.queue.removalsAllowed).toBe(true);
    await r.queue.settled();
    expect(r.writes()).toEqual(['delete gone']);
    expect([...r.stored.keys()]).toEqual(['kept']);
  });

  it('retries a failing key with backoff doubling from 200 ms, writes the others meanwhile, and does not make settled() wait for it', async () => {
    const r = registry();
    let refusals = 0;
    r.failing = (what) => (what === 'bad' && refusals++ < 3 ? new Error('refused') : undefined);
    r.want('bad', '1');
    r.want('good', '1');
    await r.queue.settled();
    expect(r.stored.get('good')).toBe('1');
    expect(r.stored.has('bad')).toBe(false);
    expect(r.queue.pending()).toBe(1);
    expect(r.failures).toEqual(['bad: refused']);
    await until('written at the fourth try', () => r.stored.get('bad') === '1', 3000);
    const times = r.writeTimes.get('bad')!;
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    expect(gaps).toHaveLength(3);
    // 200, 400 and 800 ms (with the 5 ms write and a timer's slack, short of the next doubling).
    [200, 400, 800].forEach((backoff, i) => {
      expect(gaps[i]).toBeGreaterThanOrEqual(backoff);
      expect(gaps[i]).toBeLessThan(backoff * 2);
    });
    expect(r.queue.pending()).toBe(0);
  });

  it("leaves a key someone else's object holds alone until the registry is read again, and counts it as pending no more", async () => {
    const r = registry();
    r.stored.set('taken', 'foreign:someone');
    r.want('taken', '1');
    await r.queue.settled();
    expect(r.reported).toEqual(['taken']);
    expect(r.writes()).toEqual([]);
    expect(r.queue.pending()).toBe(0);
    // Its owner deletes it; the sink reads again (its resync).
    r.stored.delete('taken');
    r.held = undefined;
    r.queue.kick();
    await r.queue.settled();
    expect(r.writes()).toEqual(['put taken=1']);
    expect(r.reported).toEqual(['taken']);
  });

  it('reads again before writing anything after the registry was unreachable (it may be back empty)', async () => {
    const r = registry();
    r.want('a', '1');
    await r.queue.settled();
    let away = true;
    r.failing = () => (away ? new Error('unreachable') : undefined);
    // While away the registry restarts empty.
    r.stored.clear();
    r.want('b', '1');
    await until('the failure seen', () => r.failures.length >= 1);
    away = false;
    await until('both written again', () => r.stored.size === 2, 3000);
    // Decided on what was read after it came back, never on what was read before.
    expect(r.requests.filter((q) => q === 'read').length).toBeGreaterThanOrEqual(2);
    expect(r.writes().slice(-2).sort()).toEqual(['put a=1', 'put b=1']);
  });

  it('decides nothing more in a round once a write found the registry unreachable: the rest wait for it to be read again', async () => {
    const r = registry(1);
    r.want('a', '1');
    await r.queue.settled();
    r.failing = (what) => (what === 'b' && r.failures.length === 0 ? new Error('unreachable') : undefined);
    // Both told before the round starts, as a sink tells a whole Service's instances.
    r.wanted.set('b', '1');
    r.wanted.set('c', '1');
    r.queue.mark('b');
    r.queue.mark('c');
    r.queue.kick();
    await until('both written', () => r.stored.size === 3, 3000);
    // Not c on what was read before b's failure: a read first.
    expect(r.requests.slice(r.requests.indexOf('put b=1'))).toEqual(['put b=1', 'read', 'put c=1', 'put b=1']);
  });

  it('retries a failed read with backoff, and settled() does not hang on a registry that cannot be read', async () => {
    const r = registry();
    let reads = 0;
    r.failing = (what) => (what === 'read' && reads++ < 2 ? new Error('no answer') : undefined);
    r.want('a', '1');
    await r.queue.settled();
    expect(r.failures).toEqual(['read: no answer']);
    expect(r.queue.pending()).toBe(1);
    await until('written once read', () => r.stored.get('a') === '1', 3000);
    expect(r.failures).toEqual(['read: no answer', 'read: no answer']);
  });

  it('writes at most `concurrency` keys at once, and nothing while the sink cannot write yet', async () => {
    const r = registry(3);
    r.ready = false;
    for (let i = 0; i < 20; i++) r.want(`k${i}`, '1');
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(r.requests).toEqual([]);
    r.ready = true;
    r.queue.kick();
    await r.queue.settled();
    expect(r.stored.size).toBe(20);
    expect(r.maxInFlight).toBe(3);
  });

  it('hands keys to writeBatch() at most batchSize at a time, and retries with backoff only the keys a batch failed', async () => {
    const r = registry(1, 3);
    let refusals = 0;
    r.failing = (what) => (what === 'k4' && refusals++ < 1 ? new Error('refused') : undefined);
    for (let i = 0; i < 7; i++) r.wanted.set(`k${i}`, '1');
    for (let i = 0; i < 7; i++) r.queue.mark(`k${i}`);
    r.queue.kick();
    await r.queue.settled();
    // A batch of one is a plain write().
    expect(r.writes()).toEqual(['batch k0,k1,k2', 'batch k3,k4,k5', 'put k6=1']);
    expect(r.failures).toEqual(['k4: refused']);
    expect(r.queue.pending()).toBe(1);
    await until('k4 written again', () => r.stored.size === 7, 3000);
    expect(r.writes().slice(3)).toEqual(['put k4=1']);
  });

  it('stops: no write after stop(), and settled() resolves', async () => {
    const r = registry();
    r.want('a', '1');
    r.queue.stop();
    await r.queue.settled();
    r.want('b', '1');
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(r.writes()).toEqual([]);
  });
});
