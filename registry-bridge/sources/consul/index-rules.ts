// Consul's rules for the index a blocking query sends next (its API docs, "Blocking Queries",
// implementation details): an index that went backwards (a snapshot restore, a server that lost
// data, an index kept per service) is not waited past, or changes would be missed until it caught
// up: the answer is taken as the whole truth and its index used; an index of 0 would make the
// next query return at once, over and over, so it is never sent below 1.

export interface IndexStep {
  /** The index to send with the next blocking query. */
  next: bigint;
  /** The answer may hold news (the index moved, either way, or this was the first answer). */
  changed: boolean;
  /** The index went backwards. */
  reset: boolean;
}

export function nextIndex(previous: bigint, returned: bigint | undefined): IndexStep {
  if (returned === undefined) return { next: previous > 0n ? previous : 1n, changed: true, reset: false };
  const next = returned < 1n ? 1n : returned;
  if (previous === 0n) return { next, changed: true, reset: false };
  if (returned < previous) return { next, changed: true, reset: true };
  return { next, changed: returned > previous, reset: false };
}

/**
 * When the next query of a watch may go: not sooner than `minIntervalMs` after the last one went
 * (Consul asks clients to rate-limit blocking queries; under constant change a watch that re-asks
 * at once costs Consul a full answer per write), and after failures an exponential backoff.
 */
export function nextQueryDelay(lastSentAt: number, now: number, minIntervalMs: number, failures: number, maxBackoffMs = 10_000): number {
  const backoff = failures === 0 ? 0 : Math.min(maxBackoffMs, 250 * 2 ** (failures - 1));
  return Math.max(backoff, lastSentAt + minIntervalMs - now, 0);
}
