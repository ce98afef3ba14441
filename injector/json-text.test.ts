import { GCProfiler } from 'node:v8';
import { describe, expect, it } from '@jest/globals';
import { Base64JsonWriter, deepFreeze, jsonText, rememberJson } from './json-text.js';

/** Median young-generation collection time while `make` runs 400,000 times (after a warm-up). */
function medianScavengeMs(make: (i: number) => number): number {
  for (let i = 0; i < 20_000; i++) make(i);
  const profiler = new GCProfiler();
  profiler.start();
  let sink = 0;
  for (let i = 0; i < 400_000; i++) sink += make(i);
  const costs = profiler
    .stop()
    .statistics.filter((s) => s.gcType === 'Scavenge')
    .map((s) => s.cost / 1000)
    .sort((a, b) => a - b);
  expect(sink).toBeGreaterThan(0);
  expect(costs.length).toBeGreaterThan(2);
  return costs[costs.length >> 1]!;
}

describe('remembered JSON text', () => {
  it('is what JSON.stringify writes, and a copy of the value, which may be changed, does not carry it', () => {
    const value = rememberJson({ name: 'flb-sidecar', ports: [15000] });
    expect(jsonText(value)).toBe('{"name":"flb-sidecar","ports":[15000]}');
    expect(JSON.stringify(value)).toBe(jsonText(value));
    expect(Object.keys(value)).toEqual(['name', 'ports']);
    const copy = { ...value, name: 'changed' };
    expect(jsonText(copy)).toBe('{"name":"changed","ports":[15000]}');
    const inheriting = Object.create(value) as object;
    expect(jsonText(inheriting)).toBe('{}');
  });

  it('must be remembered before the value is frozen, and says so', () => {
    expect(() => rememberJson(deepFreeze({ a: 1 }))).toThrow('JSON text can only be remembered for a value before it is frozen');
  });

  // Every review remembers its answer and its pod's sidecar for a few microseconds. Kept in a
  // WeakMap, those entries made each young-generation collection 35-150 times longer than for
  // the same garbage without them (and forced full collections): the webhook's p99 pauses.
  it('costs young-generation collections no more than the same garbage not remembered', () => {
    const padding = 'x'.repeat(64);
    const plain = medianScavengeMs((i) => jsonText({ id: i, padding }).length);
    const remembered = medianScavengeMs((i) => jsonText(rememberJson({ id: i, padding })).length);
    expect(remembered).toBeLessThan(4 * plain);
  });
});

describe('Base64JsonWriter', () => {
  it('encodes text of any length and script between remembered pieces to the JSON it was given, but for spaces between tokens', () => {
    const piece = rememberJson({ name: 'flb-sidecar', image: 'flomesh/flb-mesh:test', note: 'long enough to be encoded once, apart' });
    for (const between of ['', 'é', 'ab', '😀', 'x'.repeat(5000), 'é😀中'.repeat(3000)]) {
      const writer = new Base64JsonWriter();
      writer.text(`[${JSON.stringify(between)},`);
      writer.value(piece);
      writer.text(`,${JSON.stringify(between)},`);
      writer.value(piece);
      writer.text(']');
      const decoded = Buffer.from(writer.finish(), 'base64').toString('utf8');
      expect(decoded.replace(/\s+(?=[,{\]])/g, '')).toBe(JSON.stringify([between, piece, between, piece]));
      expect(JSON.parse(decoded)).toEqual([between, piece, between, piece]);
    }
  });
});
