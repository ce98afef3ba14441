import type { Forwarded } from './wire.js';

export interface CacheEntry {
  answer: Forwarded;
  storedAt: number;
  expiresAt: number;
}

/**
 * Upstream answers by (name, type, class, DO/CD), for as long as their TTL (or, negative, the SOA's)
 * allows and at most `maxTtlSeconds`. Bounded: a Map keeps insertion order, so re-inserting on a hit
 * makes its first key the least recently used.
 */
export class DnsCache {
  private readonly entries = new Map<string, CacheEntry>();

  constructor(
    readonly maxEntries = 10_000,
    readonly maxTtlSeconds = 300,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  get(key: string, now: number): CacheEntry | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    this.entries.delete(key);
    if (entry.expiresAt <= now) return undefined;
    this.entries.set(key, entry);
    return entry;
  }

  set(key: string, answer: Forwarded, now: number): void {
    const seconds = Math.min(answer.cacheSeconds, this.maxTtlSeconds);
    if (seconds <= 0 || this.maxEntries <= 0) return;
    // Served TTLs count down from what we keep, so a client's cache never outlives ours.
    if (answer.ttls.some((t) => t > seconds)) answer = { ...answer, ttls: answer.ttls.map((t) => Math.min(t, seconds)) };
    this.entries.delete(key);
    this.entries.set(key, { answer, storedAt: now, expiresAt: now + seconds * 1000 });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
  }

  clear(): void {
    this.entries.clear();
  }
}
