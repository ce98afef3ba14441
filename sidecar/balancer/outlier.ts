/*
 * Passive health: endpoints that keep failing real traffic are ejected for a while, as Envoy's
 * outlier detection does with consecutive_5xx and consecutive_local_origin_failure.
 */
import type { ServicePolicy } from '../../common/contract/catalog.js';
import { systemClock, type Clock, type Timer } from './clock.js';

export type OutlierConfig = NonNullable<ServicePolicy['outlierDetection']>;

/**
 * How one attempt on an endpoint ended. Report exactly one outcome per attempt, when it is known:
 * a connection that was accepted and then reset before a response is `reset`, not a `success` at
 * connect time followed by a failure (which would clear the counter it should have raised).
 */
export type Outcome = 'success' | 'connect-failure' | '5xx' | 'reset';

interface HostState {
  consecutiveConnectFailures: number;
  consecutive5xx: number;
  /** The ejection-time multiplier: ejections so far, less what good behaviour has earned back. */
  ejections: number;
  ejectedUntil: number | undefined;
  lastUnejectedAt: number | undefined;
  timer: Timer | undefined;
}

export interface OutlierDetectorOptions {
  clock?: Clock;
  onEject?(key: string, untilMs: number, ejections: number): void;
  onUneject?(key: string): void;
}

export class OutlierDetector {
  private config: OutlierConfig | undefined;
  private readonly hosts = new Map<string, HostState>();
  private eligible: ReadonlySet<string> = new Set();
  private readonly clock: Clock;
  /** Ejections since start (a Prometheus counter). */
  ejectionsTotal = 0;
  /** Ejections refused because maxEjectionPercent was reached. */
  ejectionsOverflowTotal = 0;

  constructor(private readonly options: OutlierDetectorOptions = {}) {
    this.clock = options.clock ?? systemClock;
  }

  /** A changed policy applies to the next ejection; ejections under way run their course. */
  configure(config: OutlierConfig | undefined): void {
    this.config = config;
    if (config) return;
    for (const [key, host] of this.hosts) {
      host.consecutiveConnectFailures = 0;
      host.consecutive5xx = 0;
      if (host.ejectedUntil !== undefined) this.uneject(key, host);
    }
  }

  /**
   * The service's endpoints after an update: state is kept for those that remain, so a new service
   * file does not forgive an endpoint that was just ejected. `eligible` are the ones that count
   * for maxEjectionPercent (the pool passes registry-healthy endpoints with a weight), because the
   * limit is there to keep enough capacity in service.
   */
  setEndpoints(keys: Iterable<string>, eligible: ReadonlySet<string>): void {
    const wanted = new Set(keys);
    for (const [key, host] of this.hosts) {
      if (!wanted.has(key)) {
        host.timer?.cancel();
        this.hosts.delete(key);
      }
    }
    for (const key of wanted) {
      if (!this.hosts.has(key)) {
        this.hosts.set(key, {
          consecutiveConnectFailures: 0,
          consecutive5xx: 0,
          ejections: 0,
          ejectedUntil: undefined,
          lastUnejectedAt: undefined,
          timer: undefined,
        });
      }
    }
    this.eligible = eligible;
  }

  /** Returns true when this report ejected the endpoint. */
  report(key: string, outcome: Outcome): boolean {
    const config = this.config;
    const host = this.hosts.get(key);
    // Late reports from attempts that were under way when the endpoint was ejected change nothing.
    if (!config || !host || host.ejectedUntil !== undefined) return false;
    switch (outcome) {
      case 'success':
        host.consecutiveConnectFailures = 0;
        host.consecutive5xx = 0;
        return false;
      case 'connect-failure':
      case 'reset':
        host.consecutiveConnectFailures++;
        return host.consecutiveConnectFailures >= config.consecutiveConnectFailures && this.eject(key, host, config);
      case '5xx':
        // It answered, so it is reachable: only the 5xx streak goes on.
        host.consecutiveConnectFailures = 0;
        host.consecutive5xx++;
        return host.consecutive5xx >= config.consecutive5xx && this.eject(key, host, config);
    }
  }

  isEjected(key: string): boolean {
    return this.hosts.get(key)?.ejectedUntil !== undefined;
  }

  ejectedUntil(key: string): number | undefined {
    return this.hosts.get(key)?.ejectedUntil;
  }

  /** The current multiplier of an endpoint's ejection time. */
  ejections(key: string): number {
    return this.hosts.get(key)?.ejections ?? 0;
  }

  ejectedCount(): number {
    let count = 0;
    for (const host of this.hosts.values()) if (host.ejectedUntil !== undefined) count++;
    return count;
  }

  stop(): void {
    for (const host of this.hosts.values()) {
      host.timer?.cancel();
      host.timer = undefined;
    }
  }

  private eject(key: string, host: HostState, config: OutlierConfig): boolean {
    if (!this.eligible.has(key)) return false;
    let ejected = 0;
    for (const k of this.eligible) if (this.hosts.get(k)?.ejectedUntil !== undefined) ejected++;
    // Stricter than Envoy, which ejects one host even when the percentage allows none: the issue
    // asks that no more than the set share is ever ejected, so 50% of one endpoint is none. The
    // streak stays at the threshold, so the next failure tries again once others are back.
    if ((ejected + 1) * 100 > config.maxEjectionPercent * this.eligible.size) {
      this.ejectionsOverflowTotal++;
      return false;
    }
    const now = this.clock.now();
    // As Envoy does, good behaviour earns the multiplier back: one step per base ejection time
    // spent in service since the last ejection ended.
    if (host.lastUnejectedAt !== undefined && config.baseEjectionTimeMs > 0) {
      host.ejections = Math.max(0, host.ejections - Math.floor((now - host.lastUnejectedAt) / config.baseEjectionTimeMs));
    }
    host.ejections++;
    const cap = Math.max(config.maxEjectionTimeMs, config.baseEjectionTimeMs);
    const duration = Math.min(config.baseEjectionTimeMs * host.ejections, cap);
    host.ejectedUntil = now + duration;
    host.consecutiveConnectFailures = 0;
    host.consecutive5xx = 0;
    host.timer = this.clock.setTimer(() => this.uneject(key, host), duration);
    this.ejectionsTotal++;
    this.options.onEject?.(key, host.ejectedUntil, host.ejections);
    return true;
  }

  private uneject(key: string, host: HostState): void {
    host.timer?.cancel();
    host.timer = undefined;
    host.ejectedUntil = undefined;
    host.lastUnejectedAt = this.clock.now();
    this.options.onUneject?.(key);
  }
}
