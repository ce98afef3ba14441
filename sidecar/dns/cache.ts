import type { Forwarded } from './wire.js';

export interface CacheEntry {
  answer: Forwarded;
  storedAt: number;
  expiresAt: number;
}

/** What an entry costs besides its answer's bytes: the key, the objects, the TTL arrays (about). */
const ENTRY_OVERHEAD = 256;
const entryBytes = (key: string, answer: Forwarded) => ENTRY_OVERHEAD + key.length + answer.body.length + 16 * answer.ttls.length;

/**
 * Upstream answers by (name, type, class, DO/CD), for as long as their TTL (or, negative, the SOA's)
 * allows and at most `maxTtlSeconds`. Bounded in entries and in bytes: an answer over TCP may be
 * 64 KiB, and anyone who can make an app resolve names of theirs could otherwise fill 10,000 entries
 * with those. A Map keeps insertion order, so re-inserting on a hit makes its first key the least
 * recently used, the first to go.
 */
export class DnsCache {
  private readonly entries = new Map<string, CacheEntry & { bytes: number }>();
  private heldBytes = 0;

  constructor(
    readonly maxEntries = 10_000,
    readonly maxTtlSeconds = 300,
    readonly maxBytes = 8 * 1024 * 1024,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** Bytes held, as entryBytes counts them. */
  get bytes(): number {
    return this.heldBytes;
  }

  get(key: string, now: number): CacheEntry | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    this.entries.delete(key);
    if (entry.expiresAt <= now) {
      this.heldBytes -= entry.bytes;
      return undefined;
    }
    this.entries.set(key, entry);
    return entry;
  }

  set(key: string, answer: Forwarded, now: number): void {
    const seconds = Math.min(answer.cacheSeconds, this.maxTtlSeconds);
    const bytes = entryBytes(key, answer);
    // One answer may take a sixteenth of the bytes at most, so that one name cannot empty the cache.
    if (seconds <= 0 || this.maxEntries <= 0 || bytes > this.maxBytes / 16) return;
    // Served TTLs count down from what we keep, so a client's cache never outlives ours.
    if (answer.ttls.some((t) => t > seconds)) answer = { ...answer, ttls: answer.ttls.map((t) => Math.min(t, seconds)) };
    this.remove(key);
    this.entries.set(key, { answer, storedAt: now, expiresAt: now + seconds * 1000, bytes });
    this.heldBytes += bytes;
    while (this.entries.size > this.maxEntries || this.heldBytes > this.maxBytes) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.remove(oldest.value);
    }
  }

  clear(): void {
    this.entries.clear();
    this.heldBytes = 0;
  }

  private remove(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.heldBytes -= entry.bytes;
  }
}
