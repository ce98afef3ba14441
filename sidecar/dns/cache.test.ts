import { describe, expect, it } from '@jest/globals';
import { DnsCache } from './cache.js';
import type { Forwarded } from './wire.js';

/** An upstream answer of `bytes` bytes of records, to be kept for a minute. */
const answer = (bytes: number): Forwarded => ({
  rcode: 0,
  authenticData: false,
  body: Buffer.alloc(bytes),
  an: 1,
  ns: 0,
  ar: 0,
  ttlOffsets: [6],
  ttls: [60],
  cacheSeconds: 60,
});

describe('the DNS cache', () => {
  it('keeps 10,000 ordinary answers', () => {
    const cache = new DnsCache();
    for (let i = 0; i < 10_000; i++) cache.set(`name-${i}.example.com`, answer(120), 0);
    expect(cache.size).toBe(10_000);
    expect(cache.get('name-0.example.com', 1000)?.answer.body.length).toBe(120);
  });

  it('holds at most its bytes when answers are big, dropping the least recently used', () => {
    // 64 KiB is what one answer over TCP may be: 10,000 of them would be 640 MiB.
    const cache = new DnsCache(10_000, 300, 8 * 1024 * 1024);
    cache.set('kept.example.com', answer(100), 0);
    for (let i = 0; i < 1000; i++) {
      cache.set(`big-${i}.example.com`, answer(60_000), 0);
      // Asked all along: recently used, so never the one to go.
      expect(cache.get('kept.example.com', 0)).toBeDefined();
    }
    expect(cache.bytes).toBeLessThanOrEqual(8 * 1024 * 1024);
    expect(cache.size).toBeLessThan(150);
    expect(cache.get('big-999.example.com', 0)).toBeDefined();
    expect(cache.get('big-0.example.com', 0)).toBeUndefined();
  });

  it('does not keep one answer bigger than a sixteenth of its bytes, and counts what expires', () => {
    const cache = new DnsCache(10_000, 300, 512 * 1024);
    cache.set('huge.example.com', answer(65_000), 0);
    expect(cache.get('huge.example.com', 0)).toBeUndefined();
    cache.set('small.example.com', answer(100), 0);
    expect(cache.bytes).toBeGreaterThan(0);
    expect(cache.get('small.example.com', 61_000)).toBeUndefined();
    expect([cache.size, cache.bytes]).toEqual([0, 0]);
  });
});
