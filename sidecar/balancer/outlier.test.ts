import { describe, expect, it } from '@jest/globals';
import { ManualClock } from './clock.js';
import { OutlierDetector, type OutlierConfig } from './outlier.js';

const config = (over: Partial<OutlierConfig> = {}): OutlierConfig => ({
  consecutiveConnectFailures: 3,
  consecutive5xx: 3,
  baseEjectionTimeMs: 30_000,
  maxEjectionTimeMs: 300_000,
  maxEjectionPercent: 50,
  ...over,
});

function setup(keys = ['a', 'b', 'c', 'd'], over: Partial<OutlierConfig> = {}) {
  const clock = new ManualClock();
  const events: string[] = [];
  const detector = new OutlierDetector({
    clock,
    onEject: (key, until, ejections) => events.push(`eject ${key} for ${(until - clock.now()) / 1000}s (#${ejections})`),
    onUneject: (key) => events.push(`back ${key}`),
  });
  detector.configure(config(over));
  detector.setEndpoints(keys, new Set(keys));
  return { clock, events, detector };
}

const fail = (detector: OutlierDetector, key: string, times: number, outcome: 'connect-failure' | '5xx' | 'reset' = 'connect-failure') => {
  for (let i = 0; i < times; i++) detector.report(key, outcome);
};

describe('outlier detection', () => {
  it('ejects after the consecutive connect failures, and a success in between resets the streak', () => {
    const { detector, events } = setup();
    fail(detector, 'a', 2);
    detector.report('a', 'success');
    fail(detector, 'a', 2);
    expect(detector.isEjected('a')).toBe(false);
    expect(detector.report('a', 'connect-failure')).toBe(true);
    expect(detector.isEjected('a')).toBe(true);
    expect(events).toEqual(['eject a for 30s (#1)']);
    expect(detector.ejectionsTotal).toBe(1);
  });

  it('counts an endpoint that accepts and then resets as a failure', () => {
    const { detector } = setup();
    fail(detector, 'b', 3, 'reset');
    expect(detector.isEjected('b')).toBe(true);
  });

  it('ejects on consecutive 5xx; a 5xx proves the endpoint reachable and ends a connect streak', () => {
    const { detector } = setup();
    fail(detector, 'a', 2);
    detector.report('a', '5xx');
    fail(detector, 'a', 2);
    expect(detector.isEjected('a')).toBe(false);
    fail(detector, 'c', 3, '5xx');
    expect(detector.isEjected('c')).toBe(true);
  });

  it('brings an endpoint back when its time is up, then ejects it for longer each time, up to the maximum', () => {
    const { detector, events, clock } = setup(['a', 'b'], { maxEjectionTimeMs: 100_000 });
    const durations: number[] = [];
    for (let round = 0; round < 5; round++) {
      fail(detector, 'a', 3);
      const until = detector.ejectedUntil('a')!;
      durations.push(until - clock.now());
      clock.advance(until - clock.now() - 1);
      expect(detector.isEjected('a')).toBe(true);
      clock.advance(1);
      expect(detector.isEjected('a')).toBe(false);
    }
    expect(durations).toEqual([30_000, 60_000, 90_000, 100_000, 100_000]);
    expect(events.filter((e) => e === 'back a')).toHaveLength(5);
  });

  it('earns the multiplier back while the endpoint behaves', () => {
    const { detector, clock } = setup(['a', 'b']);
    fail(detector, 'a', 3);
    clock.advance(30_000);
    fail(detector, 'a', 3);
    expect(detector.ejections('a')).toBe(2);
    clock.advance(60_000);
    // Two base ejection times in service: back to the base time.
    clock.advance(60_000);
    fail(detector, 'a', 3);
    expect(detector.ejections('a')).toBe(1);
    expect(detector.ejectedUntil('a')! - clock.now()).toBe(30_000);
  });

  it('never ejects more than maxEjectionPercent of the endpoints', () => {
    const { detector } = setup(['a', 'b', 'c', 'd']);
    for (const key of ['a', 'b', 'c', 'd']) fail(detector, key, 3);
    expect(['a', 'b', 'c', 'd'].filter((k) => detector.isEjected(k))).toEqual(['a', 'b']);
    expect(detector.ejectedCount()).toBe(2);
    expect(detector.ejectionsOverflowTotal).toBe(2);
  });

  it('ejects none when the share allows none: 50% of a single endpoint, or 0%', () => {
    const single = setup(['a']);
    fail(single.detector, 'a', 10);
    expect(single.detector.isEjected('a')).toBe(false);
    const none = setup(['a', 'b', 'c'], { maxEjectionPercent: 0 });
    fail(none.detector, 'a', 10);
    expect(none.detector.isEjected('a')).toBe(false);
    const all = setup(['a'], { maxEjectionPercent: 100 });
    fail(all.detector, 'a', 3);
    expect(all.detector.isEjected('a')).toBe(true);
  });

  it('tries again on the next failure once another endpoint is back', () => {
    const { detector, clock } = setup(['a', 'b']);
    fail(detector, 'a', 3);
    fail(detector, 'b', 3);
    expect(detector.isEjected('b')).toBe(false);
    clock.advance(30_000);
    detector.report('b', 'connect-failure');
    expect(detector.isEjected('b')).toBe(true);
  });

  it('ignores reports while ejected and for unknown endpoints', () => {
    const { detector, clock } = setup(['a', 'b']);
    fail(detector, 'a', 3);
    fail(detector, 'a', 10);
    expect(detector.ejections('a')).toBe(1);
    expect(detector.report('zzz', 'connect-failure')).toBe(false);
    clock.advance(30_000);
    fail(detector, 'a', 2);
    expect(detector.isEjected('a')).toBe(false);
  });

  it('keeps state for endpoints that remain across setEndpoints, and forgets (and stops timing) the others', () => {
    const { detector, clock } = setup(['a', 'b', 'c', 'd']);
    fail(detector, 'a', 3);
    fail(detector, 'b', 3);
    fail(detector, 'c', 2);
    expect(clock.pending).toBe(2);
    detector.setEndpoints(['a', 'c', 'e'], new Set(['a', 'c', 'e']));
    expect(detector.isEjected('a')).toBe(true);
    expect(clock.pending).toBe(1);
    expect(detector.isEjected('b')).toBe(false);
    // c's streak survived the update: one more failure ejects it... but a is already 1 of 3 (33%).
    detector.report('c', 'connect-failure');
    expect(detector.isEjected('c')).toBe(false);
    expect(detector.ejectionsOverflowTotal).toBe(1);
  });

  it('ejects nobody without a policy, and dropping the policy brings everyone back', () => {
    const { detector, events } = setup(['a', 'b']);
    fail(detector, 'a', 3);
    detector.configure(undefined);
    expect(detector.isEjected('a')).toBe(false);
    expect(events).toContain('back a');
    fail(detector, 'b', 10);
    expect(detector.isEjected('b')).toBe(false);
  });

  it('counts only eligible endpoints for the share and never ejects an ineligible one', () => {
    const clock = new ManualClock();
    const detector = new OutlierDetector({ clock });
    detector.configure(config());
    detector.setEndpoints(['a', 'b', 'c', 'd'], new Set(['a', 'b']));
    fail(detector, 'c', 5);
    expect(detector.isEjected('c')).toBe(false);
    fail(detector, 'a', 3);
    fail(detector, 'b', 3);
    expect([detector.isEjected('a'), detector.isEjected('b')]).toEqual([true, false]);
  });

  it('stop() cancels the timers', () => {
    const { detector, clock } = setup(['a', 'b']);
    fail(detector, 'a', 3);
    detector.stop();
    expect(clock.pending).toBe(0);
  });
});
