// The kubelet's prober for one container probe: the first run when the container starts (after
// initialDelaySeconds), then every periodSeconds; successThreshold and failureThreshold turn
// results into a state. HTTP, TCP and gRPC go to the pod's address from the node (the rewritten
// probe ports reach the sidecar, which runs the app's probe); exec runs inside the container.
import type { V1Container, V1Probe } from '@kubernetes/client-node';
import { runNetworkProbe, type NetworkProbe, type ProbeResult } from '../../common/probes.js';

export type ProbeKind = 'startup' | 'liveness' | 'readiness';

/** A port by number or by the name of one of the container's ports. */
export function resolvePort(container: V1Container, port: number | string | undefined): number {
  if (typeof port === 'number') return port;
  if (port !== undefined && /^\d+$/.test(port)) return Number(port);
  const named = container.ports?.find((p) => p.name === port);
  if (!named) throw new Error(`container ${container.name} has no port named ${String(port)}`);
  return named.containerPort;
}

export function networkProbe(probe: V1Probe, container: V1Container, podIp: string): NetworkProbe | undefined {
  if (probe.httpGet) {
    const headers = (probe.httpGet.httpHeaders ?? []).map((h) => ({ name: h.name, value: h.value }));
    const host = probe.httpGet.host ?? podIp;
    return {
      type: 'http',
      host,
      port: resolvePort(container, probe.httpGet.port as number | string),
      path: probe.httpGet.path ?? '/',
      scheme: probe.httpGet.scheme === 'HTTPS' ? 'HTTPS' : 'HTTP',
      headers,
    };
  }
  if (probe.tcpSocket) return { type: 'tcp', host: probe.tcpSocket.host ?? podIp, port: resolvePort(container, probe.tcpSocket.port as number | string) };
  if (probe.grpc) return { type: 'grpc', host: podIp, port: probe.grpc.port, service: probe.grpc.service ?? '' };
  return undefined;
}

export interface ProbeRunnerOptions {
  kind: ProbeKind;
  probe: V1Probe;
  container: V1Container;
  podIp: string;
  /** Runs an exec probe's command in the container; resolves with its exit code. */
  exec: (command: string[], timeoutMs: number) => Promise<number>;
  /** Called when the state flips (and on the first result). */
  onChange: (healthy: boolean, result: ProbeResult) => void;
}

export class ProbeRunner {
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private successes = 0;
  private failures = 0;
  private startedAt = 0;
  private inFlight = false;
  private triggered = false;
  /** undefined until the thresholds decide. */
  healthy: boolean | undefined;
  last?: ProbeResult;

  constructor(private readonly options: ProbeRunnerOptions) {}

  start(): void {
    this.startedAt = Date.now();
    const delayMs = (this.options.probe.initialDelaySeconds ?? 0) * 1000;
    this.timer = setTimeout(() => void this.tick(), delayMs);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /**
   * A run now, besides the period's: a default kubelet does this for the readiness probe of every
   * started container not yet ready each time it works out the pod's status (prober_manager.go,
   * UpdatePodStatus: a non-blocking send on the worker's manualTriggerCh, which holds one), so a
   * container that became ready between ticks is seen at the next status change, not a period
   * later. Like the kubelet: not before initialDelaySeconds, and once more after a run in flight.
   */
  trigger(): void {
    if (this.stopped || this.startedAt === 0) return;
    if (Date.now() - this.startedAt < (this.options.probe.initialDelaySeconds ?? 0) * 1000) return;
    if (this.inFlight) this.triggered = true;
    else void this.probe();
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    const started = Date.now();
    // A triggered run in flight stands for this tick's.
    if (!this.inFlight) await this.probe();
    if (this.stopped) return;
    const periodMs = (this.options.probe.periodSeconds ?? 10) * 1000;
    this.timer = setTimeout(() => void this.tick(), Math.max(0, periodMs - (Date.now() - started)));
  }

  private async probe(): Promise<void> {
    this.inFlight = true;
    const result = await this.runOnce().catch((error: unknown) => ({ ok: false, status: 0, detail: String(error) }));
    this.inFlight = false;
    if (this.stopped) return;
    this.record(result);
    if (this.triggered) {
      this.triggered = false;
      void this.probe();
    }
  }

  private runOnce(): Promise<ProbeResult> {
    const { probe, container, podIp } = this.options;
    const timeoutMs = (probe.timeoutSeconds ?? 1) * 1000;
    const target = networkProbe(probe, container, podIp);
    if (target) return runNetworkProbe(target, timeoutMs);
    if (probe.exec?.command) {
      return this.options
        .exec(probe.exec.command, timeoutMs)
        .then((code) => ({ ok: code === 0, status: code, detail: `exec ${probe.exec!.command!.join(' ')}: exit code ${code}` }));
    }
    return Promise.resolve({ ok: false, status: 0, detail: 'probe has no handler' });
  }

  private record(result: ProbeResult): void {
    this.last = result;
    const { probe, kind } = this.options;
    // Liveness and startup probes need one success (the API refuses more).
    const successThreshold = kind === 'readiness' ? (probe.successThreshold ?? 1) : 1;
    const failureThreshold = probe.failureThreshold ?? 3;
    if (result.ok) {
      this.failures = 0;
      this.successes++;
      if (this.healthy !== true && this.successes >= successThreshold) this.flip(true, result);
    } else {
      this.successes = 0;
      this.failures++;
      if (this.healthy !== false && this.failures >= failureThreshold) this.flip(false, result);
    }
  }

  private flip(healthy: boolean, result: ProbeResult): void {
    this.healthy = healthy;
    this.options.onChange(healthy, result);
  }
}
