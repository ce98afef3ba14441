/*
 * Active health checks: each endpoint of a service is probed on its own timer (TCP connect, or an
 * HTTP GET whose status must fall in the expected ranges), with thresholds against flapping.
 */
import { request } from 'node:http';
import { connect } from 'node:net';
import type { ServicePolicy } from '../../common/contract/catalog.js';
import { systemClock, type Clock, type Timer } from './clock.js';

export type HealthCheckConfig = NonNullable<ServicePolicy['healthCheck']>;

/**
 * `unknown` until the first check completes; the pool treats it as healthy, so a new endpoint
 * (or a restarted sidecar) serves at once instead of waiting up to an interval for its first check.
 */
export type ActiveHealth = 'unknown' | 'healthy' | 'unhealthy';

export interface HealthTarget {
  key: string;
  address: string;
  /** The port to check (the policy's healthCheck.port, else the endpoint's). */
  port: number;
}

export interface ProbeResult {
  ok: boolean;
  reason?: string;
}

export interface HealthCheckerOptions {
  onChange(key: string, state: 'healthy' | 'unhealthy'): void;
  /** Every completed check, for counters and debugging. */
  onResult?(key: string, result: ProbeResult): void;
  clock?: Clock;
  random?: () => number;
}

class Target {
  state: ActiveHealth = 'unknown';
  successes = 0;
  failures = 0;
  timer: Timer | undefined;
  cancelProbe: (() => void) | undefined;
  /** Bumped whenever the target's checks are halted, so a late result from before is dropped. */
  generation = 0;

  constructor(
    readonly key: string,
    public address: string,
    public port: number,
  ) {}
}

export class ActiveHealthChecker {
  private config: HealthCheckConfig | undefined;
  private configText = '';
  private readonly targets = new Map<string, Target>();
  private readonly clock: Clock;
  private readonly random: () => number;
  private stopped = false;
  checksTotal = 0;
  failuresTotal = 0;

  constructor(private readonly options: HealthCheckerOptions) {
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
  }

  /**
   * Applies a service's (possibly changed) check and endpoint set. Targets that remain keep their
   * state, so a new service file neither forgets a dead endpoint nor doubts a good one; a changed
   * check restarts their streaks and timers but not their state.
   */
  update(config: HealthCheckConfig | undefined, targets: Iterable<HealthTarget>): void {
    if (this.stopped) return;
    if (!config) {
      for (const target of this.targets.values()) this.halt(target);
      this.targets.clear();
      this.config = undefined;
      this.configText = '';
      return;
    }
    const text = JSON.stringify(config);
    const changed = text !== this.configText;
    this.config = config;
    this.configText = text;
    const seen = new Set<string>();
    for (const wanted of targets) {
      seen.add(wanted.key);
      let target = this.targets.get(wanted.key);
      if (!target) {
        target = new Target(wanted.key, wanted.address, wanted.port);
        this.targets.set(wanted.key, target);
        this.schedule(target, this.firstDelay(config));
        continue;
      }
      if (changed || target.address !== wanted.address || target.port !== wanted.port) {
        this.halt(target);
        target.address = wanted.address;
        target.port = wanted.port;
        target.successes = 0;
        target.failures = 0;
        this.schedule(target, this.firstDelay(config));
      }
    }
    for (const [key, target] of this.targets) {
      if (!seen.has(key)) {
        this.halt(target);
        this.targets.delete(key);
      }
    }
  }

  state(key: string): ActiveHealth {
    return this.targets.get(key)?.state ?? 'unknown';
  }

  stop(): void {
    this.stopped = true;
    for (const target of this.targets.values()) this.halt(target);
    this.targets.clear();
  }

  /**
   * Spread over the whole interval, so a sidecar that starts with a hundred endpoints (or a
   * thousand sidecars that got the same file) do not probe them all in the same millisecond.
   */
  private firstDelay(config: HealthCheckConfig): number {
    return Math.floor(this.random() * config.intervalMs);
  }

  private halt(target: Target): void {
    target.timer?.cancel();
    target.timer = undefined;
    target.cancelProbe?.();
    target.cancelProbe = undefined;
    target.generation++;
  }

  private schedule(target: Target, delayMs: number): void {
    target.timer = this.clock.setTimer(() => void this.run(target), delayMs);
  }

  private async run(target: Target): Promise<void> {
    target.timer = undefined;
    const config = this.config;
    if (!config || this.stopped) return;
    const generation = target.generation;
    const probe =
      config.protocol === 'http'
        ? probeHttp(target.address, target.port, config.path ?? '/', config.expectedStatuses, config.timeoutMs, this.clock)
        : probeTcp(target.address, target.port, config.timeoutMs, this.clock);
    target.cancelProbe = probe.cancel;
    const result = await probe.result;
    if (generation !== target.generation || this.stopped) return;
    target.cancelProbe = undefined;
    this.record(target, result, config);
    // The next check is timed from the end of this one, so a slow endpoint is never probed twice at once.
    this.schedule(target, config.intervalMs);
  }

  private record(target: Target, result: ProbeResult, config: HealthCheckConfig): void {
    this.checksTotal++;
    if (!result.ok) this.failuresTotal++;
    this.options.onResult?.(target.key, result);
    // The first result decides at once (Envoy's rule on startup); after that the thresholds apply.
    if (result.ok) {
      target.failures = 0;
      target.successes++;
      if (target.state !== 'healthy' && (target.state === 'unknown' || target.successes >= config.healthyThreshold)) {
        target.state = 'healthy';
        this.options.onChange(target.key, 'healthy');
      }
    } else {
      target.successes = 0;
      target.failures++;
      if (target.state !== 'unhealthy' && (target.state === 'unknown' || target.failures >= config.unhealthyThreshold)) {
        target.state = 'unhealthy';
        this.options.onChange(target.key, 'unhealthy');
      }
    }
  }
}

export interface Probe {
  result: Promise<ProbeResult>;
  cancel(): void;
}

/** Healthy when a TCP connection is accepted within the timeout; it is closed at once. */
export function probeTcp(address: string, port: number, timeoutMs: number, clock: Clock = systemClock): Probe {
  let finish: (result: ProbeResult) => void = () => {};
  const result = new Promise<ProbeResult>((resolve) => {
    const socket = connect({ host: address, port });
    let settled = false;
    finish = (r) => {
      if (settled) return;
      settled = true;
      timer.cancel();
      socket.destroy();
      resolve(r);
    };
    const timer = clock.setTimer(() => finish({ ok: false, reason: `no connection within ${timeoutMs} ms` }), timeoutMs);
    socket.once('connect', () => finish({ ok: true }));
    socket.on('error', (error: NodeJS.ErrnoException) => finish({ ok: false, reason: error.code ?? error.message }));
  });
  return { result, cancel: () => finish({ ok: false, reason: 'cancelled' }) };
}

/**
 * Healthy when GET `path` answers within the timeout with a status in one of the [low, high]
 * ranges. No agent and `Connection: close`: a check must open its own connection, or a pooled
 * one would keep an endpoint "healthy" after it stopped accepting.
 */
export function probeHttp(
  address: string,
  port: number,
  path: string,
  expectedStatuses: readonly (readonly [number, number])[],
  timeoutMs: number,
  clock: Clock = systemClock,
): Probe {
  let finish: (result: ProbeResult) => void = () => {};
  const result = new Promise<ProbeResult>((resolve) => {
    const req = request({
      host: address,
      port,
      path,
      method: 'GET',
      agent: false,
      headers: { host: formatHostPort(address, port), connection: 'close', 'user-agent': 'flb-mesh-health-check' },
    });
    let settled = false;
    finish = (r) => {
      if (settled) return;
      settled = true;
      timer.cancel();
      req.destroy();
      resolve(r);
    };
    const timer = clock.setTimer(() => finish({ ok: false, reason: `no answer within ${timeoutMs} ms` }), timeoutMs);
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      res.resume();
      const ok = expectedStatuses.some(([low, high]) => status >= low && status <= high);
      finish(ok ? { ok } : { ok, reason: `status ${status}` });
    });
    req.on('error', (error: NodeJS.ErrnoException) => finish({ ok: false, reason: error.code ?? error.message }));
    req.end();
  });
  return { result, cancel: () => finish({ ok: false, reason: 'cancelled' }) };
}

function formatHostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}
