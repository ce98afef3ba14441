import { describe, expect, it } from '@jest/globals';
import {
  LeastRequest,
  RingHash,
  RoundRobin,
  SmoothWeightedRoundRobin,
  WeightedRandom,
  createBalancer,
  hashString,
  seededRandom,
  type Balancer,
  type Candidate,
} from './algorithms.js';
import { candidates, tally } from './testing/fixtures.js';

const keysOf = (list: readonly Candidate[], balancer: Balancer, n: number, hash = 0) => Array.from({ length: n }, () => list[balancer.pick(hash)]!.key);

describe('round robin', () => {
  it('cycles through every candidate in order, weights ignored', () => {
    const list = candidates({ a: 1, b: 5, c: 1 });
    expect(keysOf(list, new RoundRobin(list), 7)).toEqual(['a', 'b', 'c', 'a', 'b', 'c', 'a']);
    expect(keysOf(list, new RoundRobin(list, 2), 4)).toEqual(['c', 'a', 'b', 'c']);
  });

  it('starts at a random place, and every window of n picks still holds each candidate once', () => {
    const list = candidates({ a: 1, b: 1, c: 1, d: 1 });
    const picks = keysOf(list, createBalancer('round-robin', list, { random: () => 0.6, ringSize: 16 }), 12);
    expect(picks[0]).toBe('c');
    for (let i = 0; i + 4 <= picks.length; i++) expect(new Set(picks.slice(i, i + 4)).size).toBe(4);
  });

  it('skips what a retry excludes and gives -1 when everything is', () => {
    const list = candidates({ a: 1, b: 1, c: 1 });
    const rr = new RoundRobin(list);
    const exclude = new Set(['b']);
    expect(Array.from({ length: 4 }, () => list[rr.pickExcluding(0, exclude)]!.key)).toEqual(['a', 'c', 'a', 'c']);
    expect(rr.pickExcluding(0, new Set(['a', 'b', 'c']))).toBe(-1);
  });
});

describe('smooth weighted round robin', () => {
  it("gives nginx's sequence a a b a c a a for weights 5:1:1, again and again", () => {
    const list = candidates({ a: 5, b: 1, c: 1 });
    const swrr = new SmoothWeightedRoundRobin(list);
    const cycle = ['a', 'a', 'b', 'a', 'c', 'a', 'a'];
    expect(keysOf(list, swrr, 21)).toEqual([...cycle, ...cycle, ...cycle]);
  });

  it('keeps exact proportions over a cycle for uneven weights', () => {
    const list = candidates({ a: 3, b: 2, c: 7 });
    const counts = tally(
      12 * 50,
      (() => {
        const swrr = new SmoothWeightedRoundRobin(list);
        return () => list[swrr.pick()]!.key;
      })(),
    );
    expect(Object.fromEntries(counts)).toEqual({ a: 150, b: 100, c: 350 });
  });

  it('skips excluded peers as nginx skips tried ones', () => {
    const list = candidates({ a: 5, b: 1, c: 1 });
    const swrr = new SmoothWeightedRoundRobin(list);
    const exclude = new Set(['a']);
    const picks = Array.from({ length: 6 }, () => list[swrr.pickExcluding(0, exclude)]!.key);
    expect(picks.filter((k) => k === 'b')).toHaveLength(3);
    expect(picks.filter((k) => k === 'c')).toHaveLength(3);
    expect(swrr.pickExcluding(0, new Set(['a', 'b', 'c']))).toBe(-1);
  });
});

describe('least request (power of two choices)', () => {
  it('always prefers the idle endpoint of two', () => {
    const inFlight = { a: 5, b: 0 };
    const list = candidates({ a: 1, b: 1 }, inFlight);
    const lr = new LeastRequest(list, seededRandom(1));
    expect(new Set(keysOf(list, lr, 200))).toEqual(new Set(['b']));
    inFlight.a = 0;
    inFlight.b = 3;
    expect(new Set(keysOf(list, lr, 200))).toEqual(new Set(['a']));
  });

  it('never picks the busiest of several, and spreads over the idle ones', () => {
    const list = candidates({ a: 1, b: 1, c: 1, d: 1 }, { a: 0, b: 0, c: 0, d: 9 });
    const counts = tally(
      4000,
      (() => {
        const lr = new LeastRequest(list, seededRandom(7));
        return () => list[lr.pick()]!.key;
      })(),
    );
    expect(counts.get('d')).toBeUndefined();
    for (const key of ['a', 'b', 'c']) expect(counts.get(key)).toBeGreaterThan(1000);
  });

  it('weighs in-flight counts by weight', () => {
    // a: (3 + 1) / 4 = 1 per unit of weight, b: (1 + 1) / 1 = 2: a wins though it has more in flight.
    const list = candidates({ a: 4, b: 1 }, { a: 3, b: 1 });
    expect(new Set(keysOf(list, new LeastRequest(list, seededRandom(3)), 100))).toEqual(new Set(['a']));
  });

  it('chooses among those not excluded', () => {
    const list = candidates({ a: 1, b: 1, c: 1 }, { a: 0, b: 4, c: 2 });
    const lr = new LeastRequest(list, seededRandom(5));
    expect(list[lr.pickExcluding(0, new Set(['a']))]!.key).toBe('c');
    expect(list[lr.pickExcluding(0, new Set(['a', 'c']))]!.key).toBe('b');
    expect(lr.pickExcluding(0, new Set(['a', 'b', 'c']))).toBe(-1);
  });
});

describe('ring hash', () => {
  const ten = candidates(Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`10.0.0.${i + 1}|8080`, 1])));
  const keys = Array.from({ length: 20_000 }, (_, i) => `user-${i}`);
  const mapping = (ring: RingHash, list: readonly Candidate[]) => keys.map((k) => list[ring.pick(hashString(k))]!.key);

  it('sends a key to the same endpoint every time, whatever the order of the list', () => {
    const ring = new RingHash(ten, 1024);
    const reversed = [...ten].reverse();
    const other = new RingHash(reversed, 1024);
    expect(mapping(ring, ten)).toEqual(mapping(other, reversed));
    expect(mapping(ring, ten)).toEqual(mapping(ring, ten));
  });

  it('spreads keys evenly enough (each of ten endpoints within 10% +- 3%)', () => {
    const ring = new RingHash(ten, 1024);
    expect(ring.size).toBeGreaterThanOrEqual(1024);
    expect(ring.size).toBeLessThan(2048 + 10);
    const counts = tally(
      keys.length,
      (() => {
        let i = 0;
        return () => ten[ring.pick(hashString(keys[i++]!))]!.key;
      })(),
    );
    for (const count of counts.values()) {
      expect(count / keys.length).toBeGreaterThan(0.07);
      expect(count / keys.length).toBeLessThan(0.13);
    }
  });

  it('remaps only the keys of an endpoint that leaves (1 of 10) and only keys to one that joins', () => {
    const before = mapping(new RingHash(ten, 1024), ten);
    const nine = ten.filter((c) => c.key !== '10.0.0.4|8080');
    const after = mapping(new RingHash(nine, 1024), nine);
    const moved = keys.map((_, i) => i).filter((i) => before[i] !== after[i]);
    expect(moved.every((i) => before[i] === '10.0.0.4|8080')).toBe(true);
    expect(moved.length / keys.length).toBeGreaterThan(0.05);
    expect(moved.length / keys.length).toBeLessThan(0.15);

    const eleven = [...ten, ...candidates({ '10.0.0.11|8080': 1 })];
    const grown = mapping(new RingHash(eleven, 1024), eleven);
    const movedToNew = keys.map((_, i) => i).filter((i) => before[i] !== grown[i]);
    expect(movedToNew.every((i) => grown[i] === '10.0.0.11|8080')).toBe(true);
    expect(movedToNew.length / keys.length).toBeLessThan(0.15);
  });

  it('gives weight its share of points', () => {
    const list = candidates({ a: 3, b: 1 });
    const ring = new RingHash(list, 1024);
    const counts = tally(
      keys.length,
      (() => {
        let i = 0;
        return () => list[ring.pick(hashString(keys[i++]!))]!.key;
      })(),
    );
    expect(counts.get('a')! / keys.length).toBeGreaterThan(0.7);
    expect(counts.get('a')! / keys.length).toBeLessThan(0.8);
  });

  it('retries where the key would go if the tried endpoint had left the ring', () => {
    const ring = new RingHash(ten, 1024);
    const nine = ten.filter((c) => c.key !== '10.0.0.4|8080');
    const without = new RingHash(nine, 1024, 10);
    for (const key of keys.slice(0, 2000)) {
      const h = hashString(key);
      if (ten[ring.pick(h)]!.key !== '10.0.0.4|8080') continue;
      expect(ten[ring.pickExcluding(h, new Set(['10.0.0.4|8080']))]!.key).toBe(nine[without.pick(h)]!.key);
    }
    expect(ring.pickExcluding(0, new Set(ten.map((c) => c.key)))).toBe(-1);
  });
});

describe('random', () => {
  it('is roughly uniform (seeded, so the check is exact, not a coin toss)', () => {
    const list = candidates({ a: 1, b: 1, c: 1 });
    const rnd = new WeightedRandom(list, seededRandom(42));
    const counts = tally(30_000, () => list[rnd.pick()]!.key);
    for (const count of counts.values()) expect(Math.abs(count - 10_000)).toBeLessThan(400);
  });

  it('follows weights, and skips excluded keys', () => {
    const list = candidates({ a: 3, b: 1 });
    const rnd = new WeightedRandom(list, seededRandom(9));
    const counts = tally(20_000, () => list[rnd.pick()]!.key);
    expect(Math.abs(counts.get('a')! - 15_000)).toBeLessThan(400);
    expect(new Set(Array.from({ length: 50 }, () => list[rnd.pickExcluding(0, new Set(['a']))]!.key))).toEqual(new Set(['b']));
    expect(rnd.pickExcluding(0, new Set(['a', 'b']))).toBe(-1);
  });
});

describe('hashString', () => {
  it('is stable and well spread (the ring and any other sidecar depend on it)', () => {
    expect(hashString('10.0.0.1|8080#0')).toBe(hashString('10.0.0.1|8080#0'));
    expect(hashString('a')).not.toBe(hashString('b'));
    // Keys that differ in their last character alone land all over the 32-bit space.
    const buckets = new Set(Array.from({ length: 64 }, (_, i) => hashString(`10.0.0.1|8080#${i}`) >>> 28));
    expect(buckets.size).toBeGreaterThanOrEqual(14);
  });
});
