/*
 * Time as the balancer sees it. Ejections end and health checks fire on timers; tests swap in a
 * ManualClock so that a 30 s ejection takes no real time and no test waits on wall clocks.
 */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the epoch (what the admin endpoint shows for "ejected until"). */
  now(): number;
  setTimer(callback: () => void, ms: number): Timer;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(callback, ms) {
    const timer = setTimeout(callback, ms);
    // A forgotten ejection or health-check timer must never keep the process (or jest) alive.
    timer.unref();
    return { cancel: () => clearTimeout(timer) };
  },
};

/** A clock that moves only when told to; timers due by then fire in order of their deadline. */
export class ManualClock implements Clock {
  private current: number;
  private sequence = 0;
  private readonly timers = new Map<number, { at: number; callback: () => void }>();

  constructor(start = 1_700_000_000_000) {
    this.current = start;
  }

  now(): number {
    return this.current;
  }

  setTimer(callback: () => void, ms: number): Timer {
    const id = this.sequence++;
    this.timers.set(id, { at: this.current + Math.max(0, ms), callback });
    return { cancel: () => void this.timers.delete(id) };
  }

  /** Pending timers, for tests that check nothing is left running. */
  get pending(): number {
    return this.timers.size;
  }

  advance(ms: number): void {
    const until = this.current + ms;
    for (;;) {
      let nextId: number | undefined;
      let nextAt = Infinity;
      for (const [id, timer] of this.timers) {
        if (timer.at <= until && timer.at < nextAt) {
          nextAt = timer.at;
          nextId = id;
        }
      }
      if (nextId === undefined) break;
      const timer = this.timers.get(nextId)!;
      this.timers.delete(nextId);
      this.current = Math.max(this.current, timer.at);
      timer.callback();
    }
    this.current = until;
  }
}
