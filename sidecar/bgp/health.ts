// The local check that gates a VIP: a TCP connect or an HTTP GET to the process that serves it,
// every interval, with rise and fall thresholds (healthyThreshold successes in a row to become
// healthy, unhealthyThreshold failures to become unhealthy). A VIP starts unhealthy: nothing is
// announced for a process that has not answered yet.
import { EventEmitter } from 'node:events';
import { request } from 'node:http';
import { connect } from 'node:net';

export interface HealthCheck {
  /** readiness: the app's readiness probes as the sidecar runs them (given to the gate by the sidecar). */
  protocol: 'tcp' | 'http' | 'readiness';
  address: string;
  /** tcp and http. */
  port?: number;
  path?: string;
  /** http: the one status that means healthy; unset, any 2xx or 3xx. */
  expectedStatus?: number;
  intervalMs: number;
  timeoutMs: number;
  healthyThreshold: number;
  unhealthyThreshold: number;
}

export interface ProbeResult {
  ok: boolean;
  /** "connected", "HTTP 200", "ECONNREFUSED", "timed out after 1000 ms", ... */
  detail: string;
}

/** The app's readiness, as `flb sidecar` knows it (its probes from FLB_APP_PROBES). */
export type ReadinessSource = () => Promise<ProbeResult>;

export function probe(check: HealthCheck, readiness?: ReadinessSource): Promise<ProbeResult> {
  if (check.protocol === 'readiness') {
    if (!readiness) return Promise.resolve({ ok: false, detail: 'readiness checks run inside flb sidecar only' });
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<ProbeResult>(
      (resolve) => (timer = setTimeout(() => resolve({ ok: false, detail: `timed out after ${check.timeoutMs} ms` }), check.timeoutMs)),
    );
    return Promise.race([readiness().catch((error: Error) => ({ ok: false, detail: error.message })), timedOut]).finally(() => clearTimeout(timer));
  }
  // The schema refuses tcp and http checks without one.
  const port = check.port ?? 0;
  return new Promise((resolve) => {
    let settled = false;
    const done = (result: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const timer = setTimeout(() => {
      done({ ok: false, detail: `timed out after ${check.timeoutMs} ms` });
      socketOrRequest.destroy();
    }, check.timeoutMs);
    const failed = (error: NodeJS.ErrnoException) => done({ ok: false, detail: error.code ?? error.message });
    let socketOrRequest: { destroy(): void };
    if (check.protocol === 'tcp') {
      const socket = connect({ host: check.address, port }, () => {
        done({ ok: true, detail: 'connected' });
        // Closed politely: a FIN, and whatever the app says read and dropped until it closes too.
        // destroy() here would leave an app's greeting unread and the kernel would answer it with a
        // reset: an app that does not expect ECONNRESET on a fresh connection dies of its check.
        socket.end();
        socket.resume();
        socket.setTimeout(check.timeoutMs, () => socket.destroy());
      });
      socket.on('error', failed);
      socket.on('close', () => socket.destroy());
      socketOrRequest = socket;
    } else {
      const req = request(
        { host: check.address, port, path: check.path ?? '/', method: 'GET', agent: false, headers: { 'user-agent': 'flb-bgp-health' } },
        (res) => {
          res.resume();
          const status = res.statusCode ?? 0;
          const ok = check.expectedStatus !== undefined ? status === check.expectedStatus : status >= 200 && status < 400;
          done({ ok, detail: `HTTP ${status}` });
          req.destroy();
        },
      );
      req.on('error', failed);
      req.end();
      socketOrRequest = req;
    }
  });
}

export interface GateStatus {
  healthy: boolean;
  /** Successes (when last ok) or failures in a row. */
  streak: number;
  lastResult?: ProbeResult & { at: number };
}

/** Events: 'change' (healthy: boolean, result: ProbeResult). */
export class HealthGate extends EventEmitter {
  healthy = false;
  private streak = 0;
  private lastOk: boolean | undefined;
  private last: (ProbeResult & { at: number }) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(
    readonly check: HealthCheck,
    private readonly readiness?: ReadinessSource,
    /** A check replacing another on a VIP that is announced starts healthy: the new check must fail to withdraw it. */
    initiallyHealthy = false,
  ) {
    super();
    this.healthy = initiallyHealthy;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    void this.tick();
  }

  stop(): void {
    this.running = false;
    clearTimeout(this.timer);
  }

  status(): GateStatus {
    return { healthy: this.healthy, streak: this.streak, ...(this.last ? { lastResult: this.last } : {}) };
  }

  private async tick(): Promise<void> {
    const started = Date.now();
    const result = await probe(this.check, this.readiness);
    if (!this.running) return;
    this.record(result);
    // The next check an interval after this one began, so a slow probe does not stretch the period.
    this.timer = setTimeout(() => void this.tick(), Math.max(0, this.check.intervalMs - (Date.now() - started)));
  }

  private record(result: ProbeResult): void {
    this.last = { ...result, at: Date.now() };
    this.streak = result.ok === this.lastOk ? this.streak + 1 : 1;
    this.lastOk = result.ok;
    if (!this.healthy && result.ok && this.streak >= this.check.healthyThreshold) {
      this.healthy = true;
      this.emit('change', true, result);
    } else if (this.healthy && !result.ok && this.streak >= this.check.unhealthyThreshold) {
      this.healthy = false;
      this.emit('change', false, result);
    }
  }
}
