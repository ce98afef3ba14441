/*
 * The CNI node agent's Prometheus metrics (`flb cni agent --metrics-listen`): the calls the plugin
 * forwards, how long a pod sandbox waited on each, and what the repair loop did.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { createMetricsRegistry } from '../common/metrics.js';
import { CniError, type CniReply } from './agent.js';

const COMMANDS = new Set(['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC']);
const ERROR_NAMES = new Map<number, string>(Object.entries(CniError).map(([name, code]) => [code, name]));

export class CniAgentMetrics {
  readonly registry: Registry;
  private readonly calls: Counter<'command' | 'result'>;
  private readonly seconds: Histogram<'command'>;
  private readonly repaired: Counter<'action'>;
  private readonly repairFailing: Gauge;

  constructor(options: { processMetrics?: boolean } = {}) {
    this.registry = createMetricsRegistry(options);
    this.calls = new Counter({
      name: 'flb_cni_requests_total',
      help: 'Calls from the CNI plugin by command and result: ok, the CNI error by name (tryAgainLater, programming, ...), or refused (not a whole request)',
      labelNames: ['command', 'result'] as const,
      registers: [this.registry],
    });
    this.seconds = new Histogram({
      name: 'flb_cni_request_duration_seconds',
      help: 'Time from a whole request to its answer, by command (a pod sandbox waits on ADD)',
      labelNames: ['command'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [this.registry],
    });
    this.repaired = new Counter({
      name: 'flb_cni_repaired_pods_total',
      help: 'Pods without their interception rules the repair loop deleted (a controller recreates them) or labelled',
      labelNames: ['action'] as const,
      registers: [this.registry],
    });
    this.repairFailing = new Gauge({
      name: 'flb_cni_repair_failing',
      help: '1 while repair passes fail (the API away), 0 once one succeeds',
      registers: [this.registry],
    });
  }

  /** One call answered; `startedMs` is performance.now() when the whole request had arrived. */
  answered(command: string, reply: CniReply, startedMs: number): void {
    const known = COMMANDS.has(command) ? command : 'unknown';
    this.calls.inc({ command: known, result: reply.exitCode === 0 ? 'ok' : errorName(reply.stdout) });
    this.seconds.observe({ command: known }, (performance.now() - startedMs) / 1000);
  }

  /** A request refused before it was whole (too big, too slow, malformed framing). */
  refused(): void {
    this.calls.inc({ command: 'unknown', result: 'refused' });
  }

  repairPass(outcome: { deleted: readonly string[]; labelled: readonly string[] } | 'failed'): void {
    this.repairFailing.set(outcome === 'failed' ? 1 : 0);
    if (outcome === 'failed') return;
    this.repaired.inc({ action: 'deleted' }, outcome.deleted.length);
    this.repaired.inc({ action: 'labelled' }, outcome.labelled.length);
  }
}

/** The CNI error's name from an error result (`{"code": 11, ...}`); 'error' if it has none. */
function errorName(stdout: string): string {
  try {
    const code = (JSON.parse(stdout) as { code?: unknown }).code;
    return (typeof code === 'number' && ERROR_NAMES.get(code)) || 'error';
  } catch {
    return 'error';
  }
}
