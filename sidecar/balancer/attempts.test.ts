/*
 * The attempt planner on a manual clock: where each attempt of a connection or request goes, which
 * failures are tried again, within which budget, and how long it waits first.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { AttemptPlanner, GIVE_UP, type RetryPolicy } from './attempts.js';
import { ManualClock } from './clock.js';
import { EndpointPool } from './pool.js';
import { endpoints, makeService } from './testing/fixtures.js';

const pools: EndpointPool[] = [];
afterEach(() => {
  for (const pool of pools.splice(0)) pool.close();
});

/** A pool of `count` endpoints 10.0.0.1..count:8080; random() = `draw` (0.5: backoffs in the middle of their range). */
function poolOf(count: number, policy: Record<string, unknown> = {}, draw = 0.5) {
  const clock = new ManualClock();
  const pool = new EndpointPool({ clock, random: () => draw, activeHealthChecks: false });
  pool.update(makeService(endpoints(count), policy));
  pools.push(pool);
  return { pool, clock };
}

const retries = (fields: Partial<RetryPolicy> = {}): RetryPolicy => ({ attempts: 2, on: ['gateway-error'], backoffBaseMs: 25, backoffMaxMs: 250, ...fields });
const address = (key: string | undefined) => key?.split('|')[0];

describe('the attempt planner', () => {
  it('fails over to an endpoint not tried yet at once, then to tried ones again after a backoff, within connect.retries', () => {
    const { pool } = poolOf(2, { connect: { timeoutMs: 100, retries: 3 } });
    const planner = new AttemptPlanner(pool, 80, undefined);
    const first = planner.next()!;
    expect(planner.retryAfterConnectFailure()).toBe(0);
    const second = planner.next()!;
    expect(second.key).not.toBe(first.key);
    // Every endpoint tried: the next retry goes back to one, but not before a backoff (25 ms ceiling, half to all of it).
    expect(planner.retryAfterConnectFailure()).toBe(18.75);
    expect(planner.next()).toBeDefined();
    expect(planner.retryAfterConnectFailure()).toBe(37.5);
    planner.next();
    // retries: 3 spent.
    expect(planner.retryAfterConnectFailure()).toBe(GIVE_UP);
    expect(planner.attempts).toBe(4);
    expect(planner.tried().slice(0, 2).map(address).sort()).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(planner.tried()).toHaveLength(4);
    // Each attempt was ended as a connect failure: nothing is left in flight.
    expect(pool.counters().inFlight).toBe(0);
  });

  it('waits on the pool clock, doubling up to backoffMaxMs, jittered over the upper half', async () => {
    const { pool, clock } = poolOf(1, { connect: { timeoutMs: 100, retries: 10 } }, 0.999);
    const planner = new AttemptPlanner(pool, 80, undefined, retries({ backoffBaseMs: 10, backoffMaxMs: 50 }));
    const waits: number[] = [];
    for (let i = 0; i < 5; i++) {
      planner.next();
      waits.push(Math.round(planner.retryAfterConnectFailure()));
    }
    expect(waits).toEqual([10, 20, 40, 50, 50]);
    const low = poolOf(1, {}, 0).pool;
    const lowPlanner = new AttemptPlanner(low, 80, undefined, retries({ backoffBaseMs: 10, backoffMaxMs: 50 }));
    lowPlanner.next();
    expect(lowPlanner.retryAfterConnectFailure()).toBe(5);

    let waited = false;
    void planner.wait(50).then(() => (waited = true));
    clock.advance(49);
    await Promise.resolve();
    expect(waited).toBe(false);
    clock.advance(1);
    await Promise.resolve();
    expect(waited).toBe(true);
  });

  it('keeps two budgets: connect.retries for connect failures, retries.attempts for answers', () => {
    const { pool } = poolOf(3, { connect: { timeoutMs: 100, retries: 1 } });
    const planner = new AttemptPlanner(pool, 80, undefined, retries({ attempts: 1 }), true);
    planner.next();
    expect(planner.retryAfterConnectFailure()).toBe(0);
    planner.next();
    expect(planner.retryAfterResponse(503, undefined, true)).toBe(18.75);
    planner.next();
    // Both spent: a 503 is passed on (still the caller's attempt), a connect failure gives up.
    expect(planner.retryAfterResponse(503, undefined, true)).toBe(GIVE_UP);
    expect(pool.counters().inFlight).toBe(1);
    expect(planner.retryAfterConnectFailure()).toBe(GIVE_UP);
    expect(pool.counters().inFlight).toBe(0);
  });

  it('retries an answer only for a condition the policy names, a request it can send whole, and a method it may repeat', () => {
    const { pool } = poolOf(3);
    const plan = (policy: RetryPolicy | undefined, idempotent: boolean) => {
      const planner = new AttemptPlanner(pool, 80, undefined, policy, idempotent);
      planner.next();
      return planner;
    };
    const gateway = retries({ on: ['gateway-error'] });
    expect(plan(gateway, true).retryAfterResponse(503, undefined, true)).toBeGreaterThan(0);
    expect(plan(gateway, true).retryAfterResponse(500, undefined, true)).toBe(GIVE_UP);
    expect(plan(retries({ on: ['5xx'] }), true).retryAfterResponse(500, undefined, true)).toBeGreaterThan(0);
    expect(plan(gateway, true).retryAfterResponse(503, undefined, false)).toBe(GIVE_UP);
    expect(plan(gateway, false).retryAfterResponse(503, undefined, true)).toBe(GIVE_UP);
    expect(plan(undefined, true).retryAfterResponse(503, undefined, true)).toBe(GIVE_UP);
    // gRPC UNAVAILABLE (Trailers-Only): any method, when asked for.
    expect(plan(retries({ on: ['unavailable'] }), false).retryAfterResponse(200, '14', true)).toBeGreaterThan(0);
    expect(plan(gateway, false).retryAfterResponse(200, '14', true)).toBe(GIVE_UP);
    // Resets and per-try timeouts: `reset` and `gateway-error`, idempotent requests only.
    expect(plan(retries({ on: ['reset'] }), true).retryAfterReset(true)).toBeGreaterThan(0);
    expect(plan(retries({ on: ['reset'] }), false).retryAfterReset(true)).toBe(GIVE_UP);
    expect(plan(gateway, true).retryAfterReset(true)).toBe(GIVE_UP);
    expect(plan(gateway, true).retryAfterTimeout(true)).toBeGreaterThan(0);
    // A connect failure never reached the endpoint: any method, without a retry policy, but only if the request is still whole.
    expect(plan(undefined, false).retryAfterConnectFailure()).toBe(0);
    expect(plan(undefined, false).retryAfterConnectFailure(false)).toBe(GIVE_UP);
  });

  it('reports each attempt to outlier detection as it ended', () => {
    const { pool } = poolOf(1, { outlierDetection: { consecutive5xx: 2, consecutiveConnectFailures: 2, maxEjectionPercent: 100 } });
    const planner = new AttemptPlanner(pool, 80, undefined, retries({ attempts: 5 }), true);
    planner.next();
    planner.retryAfterResponse(503, undefined, true);
    planner.next();
    planner.retryAfterResponse(503, undefined, true);
    expect(pool.counters().ejectionsTotal).toBe(1);
  });

  it('gives up at once when no endpoint may be chosen, without waiting', () => {
    const { pool } = poolOf(0);
    const planner = new AttemptPlanner(pool, 80, undefined);
    expect(planner.next()).toBeUndefined();
    const { pool: one } = poolOf(1);
    const lone = new AttemptPlanner(one, 80, undefined);
    lone.next();
    one.update(makeService([]));
    expect(lone.retryAfterConnectFailure()).toBe(GIVE_UP);
  });

  it('keeps the source address for ring hash on every attempt, the tried-again ones included', () => {
    const { pool } = poolOf(4, { loadBalancer: { algorithm: 'ring-hash', hash: { on: 'source-ip' } }, connect: { timeoutMs: 100, retries: 10 } });
    for (const source of ['10.1.0.1', '10.1.0.2', '10.1.0.3', '10.1.0.4', '10.1.0.5', '10.1.0.6']) {
      const owner = pool.pick({ servicePort: 80, sourceIp: source })!.key;
      const planner = new AttemptPlanner(pool, 80, source);
      const keys = [planner.next()!.key];
      for (let i = 0; i < 5; i++) {
        planner.retryAfterConnectFailure();
        keys.push(planner.next()!.key);
      }
      // The key's owner, then the rest along the ring, then (all tried) the owner again, every time.
      expect(keys[0]).toBe(owner);
      expect(new Set(keys.slice(0, 4)).size).toBe(4);
      expect(keys.slice(4)).toEqual([owner, owner]);
    }
  });

  it('keeps a header for ring hash on a retry', () => {
    const { pool } = poolOf(4, { loadBalancer: { algorithm: 'ring-hash', hash: { on: 'header', name: 'x-user' } }, connect: { timeoutMs: 100, retries: 10 } });
    const owner = pool.pick({ servicePort: 80, header: () => 'alice' })!.key;
    const planner = new AttemptPlanner(pool, 80, undefined);
    planner.header = () => 'alice';
    expect(planner.next()!.key).toBe(owner);
    for (let i = 0; i < 3; i++) {
      planner.retryAfterConnectFailure();
      planner.next();
    }
    planner.retryAfterConnectFailure();
    expect(planner.next()!.key).toBe(owner);
  });
});
