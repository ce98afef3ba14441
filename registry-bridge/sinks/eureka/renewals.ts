// When each instance the Eureka sink holds is renewed. Every instance renews once per interval at
// its own phase, a hash of its key, so renewals spread evenly over the interval whatever the order
// instances came in (10,000 services of 3 pods at 30 s is about 1,000 renewals a second, never one
// burst of 30,000), and a new leader or a restart renews each at the same phase as before.
import { createHash } from 'node:crypto';

/** The resolution of the schedule: renewals due within one slot go out together. */
export const SLOT_MS = 100;

export class RenewalSchedule {
  private readonly slots: Set<string>[];
  private readonly slotOf = new Map<string, number>();

  constructor(readonly intervalMs: number) {
    this.slots = Array.from({ length: Math.max(1, Math.ceil(intervalMs / SLOT_MS)) }, () => new Set<string>());
  }

  get size(): number {
    return this.slotOf.size;
  }

  has(key: string): boolean {
    return this.slotOf.has(key);
  }

  /** Where in the interval `key` renews, in ms from its start. */
  phaseOf(key: string): number {
    const hash = createHash('sha256').update(key).digest();
    return hash.readUIntBE(0, 6) % this.intervalMs;
  }

  add(key: string): void {
    if (this.slotOf.has(key)) return;
    const slot = Math.floor(this.phaseOf(key) / SLOT_MS) % this.slots.length;
    this.slotOf.set(key, slot);
    this.slots[slot]!.add(key);
  }

  delete(key: string): void {
    const slot = this.slotOf.get(key);
    if (slot === undefined) return;
    this.slotOf.delete(key);
    this.slots[slot]!.delete(key);
  }

  clear(): void {
    this.slotOf.clear();
    for (const slot of this.slots) slot.clear();
  }

  /** Keys whose renewal falls after `fromMs` up to `toMs` (ms since the epoch); all of them when that spans an interval. */
  due(fromMs: number, toMs: number): string[] {
    const first = Math.floor(fromMs / SLOT_MS) + 1;
    const last = Math.floor(toMs / SLOT_MS);
    if (last < first) return [];
    if (last - first + 1 >= this.slots.length) return [...this.slotOf.keys()];
    const out: string[] = [];
    for (let t = first; t <= last; t++) out.push(...this.slots[t % this.slots.length]!);
    return out;
  }
}
