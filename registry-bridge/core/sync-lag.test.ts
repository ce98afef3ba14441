import { describe, expect, it } from '@jest/globals';
import { API_VERSION, type Service } from '../../common/contract/index.js';
import { SyncLag } from './sync-lag.js';
import type { CatalogUpdates, Sink, SinkStatus } from './types.js';

/** A sink that writes only when the test says so: settled() waits for write(). */
class SlowSink implements Sink {
  readonly name = 'slow';
  readonly kind = 'test';
  private waiters: (() => void)[] = [];
  setMesh() {}
  setService() {}
  setSidecar() {}
  complete() {}
  settled(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  /** Everything told so far is written. */
  async write(): Promise<void> {
    // Whoever was about to ask asks first.
    await new Promise((resolve) => setImmediate(resolve));
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
    // Lets the lag see the answer.
    await new Promise((resolve) => setImmediate(resolve));
  }
  async stop() {}
  status(): SinkStatus {
    return { name: this.name, kind: this.kind, address: '', pending: 0, writes: 0, failures: 0, lastWriteAt: 0 };
  }
}

const catalog: CatalogUpdates = { upsertService() {}, removeService() {}, upsertSidecar() {}, removeSidecar() {}, synced() {} };
const service = { apiVersion: API_VERSION, kind: 'Service', id: 'orders.shop' } as Service;

function setUp() {
  let now = 1_000_000;
  let sinks: Sink[] = [];
  const sink = new SlowSink();
  const lag = new SyncLag(
    catalog,
    ['k8s', 'consul'],
    () => sinks,
    () => now,
  );
  return {
    lag,
    sink,
    lead: () => {
      sinks = [sink];
      lag.sinksChanged();
    },
    follow: () => {
      sinks = [];
      lag.sinksChanged();
    },
    advance: (ms: number) => (now += ms),
  };
}

describe("a source's sync lag", () => {
  it('is the age of its oldest change the sinks have not written, 0 once they have', async () => {
    const { lag, sink, lead, advance } = setUp();
    lead();
    await sink.write();
    expect([lag.lagMs('k8s'), lag.lagMs('consul')]).toEqual([0, 0]);

    lag.upsertService('k8s', service);
    advance(1500);
    lag.removeService('k8s', 'orders.shop');
    advance(500);
    expect([lag.lagMs('k8s'), lag.lagMs('consul')]).toEqual([2000, 0]);
    await sink.write();
    expect(lag.lagMs('k8s')).toBe(0);
  });

  it('keeps counting a change that came while the sinks were writing earlier ones', async () => {
    const { lag, sink, lead, advance } = setUp();
    lead();
    await sink.write();
    lag.upsertService('k8s', service);
    await new Promise((resolve) => setImmediate(resolve));
    advance(1000);
    // Reported after the sinks were asked to settle: their next answer does not cover it.
    lag.upsertSidecar('consul', 'pod.shop.a', {} as never);
    advance(3000);
    expect([lag.lagMs('k8s'), lag.lagMs('consul')]).toEqual([4000, 3000]);
    await sink.write();
    expect([lag.lagMs('k8s'), lag.lagMs('consul')]).toEqual([0, 3000]);
    advance(250);
    await sink.write();
    expect([lag.lagMs('k8s'), lag.lagMs('consul')]).toEqual([0, 0]);
  });

  it('counts from the start of leadership until the new sinks hold the whole catalog, and is undefined on a standby', async () => {
    const { lag, sink, lead, follow, advance } = setUp();
    lag.upsertService('k8s', service);
    expect(lag.lagMs('k8s')).toBeUndefined();
    lead();
    advance(700);
    expect([lag.lagMs('k8s'), lag.lagMs('consul')]).toEqual([700, 700]);
    await sink.write();
    expect([lag.lagMs('k8s'), lag.lagMs('consul')]).toEqual([0, 0]);
    // Leadership lost while a change waits: nothing is left behind to count when leading again.
    lag.upsertService('k8s', service);
    follow();
    advance(60_000);
    expect(lag.lagMs('k8s')).toBeUndefined();
    lead();
    advance(10);
    await sink.write();
    expect(lag.lagMs('k8s')).toBe(0);
  });

  it('passes every report on to the catalog', () => {
    const calls: string[] = [];
    const recording: CatalogUpdates = {
      upsertService: (source, s) => calls.push(`upsert ${source} ${s.id}`),
      removeService: (source, id) => calls.push(`remove ${source} ${id}`),
      upsertSidecar: (source, id) => calls.push(`sidecar ${source} ${id}`),
      removeSidecar: (source, id) => calls.push(`remove-sidecar ${source} ${id}`),
      synced: (source) => calls.push(`synced ${source}`),
    };
    const lag = new SyncLag(recording, ['k8s'], () => []);
    lag.upsertService('k8s', service);
    lag.removeService('k8s', 'orders.shop');
    lag.upsertSidecar('k8s', 'pod.shop.a', {} as never);
    lag.removeSidecar('k8s', 'pod.shop.a');
    lag.synced('k8s');
    expect(calls).toEqual(['upsert k8s orders.shop', 'remove k8s orders.shop', 'sidecar k8s pod.shop.a', 'remove-sidecar k8s pod.shop.a', 'synced k8s']);
  });
});
