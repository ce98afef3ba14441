import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type Direction = 'outbound' | 'inbound';

/** The series of one service (or destination class), bound once: label lookups stay off the hot path. */
export interface ServiceSeries {
  connections: Counter.Internal;
  active: Gauge.Internal<string>;
  sent: Counter.Internal;
  received: Counter.Internal;
  connectErrors: Counter.Internal;
  connectSeconds: Histogram.Internal<string>;
  requests: (codeClass: string) => Counter.Internal;
  retries: Counter.Internal;
  requestSeconds: Histogram.Internal<string>;
}

/** Prometheus metrics of the sidecar, served on the metrics port (15010). */
export class SidecarMetrics {
  readonly registry = new Registry();
  private readonly connections = new Counter({ name: 'flb_sidecar_connections_total', help: 'Connections accepted, by direction and service (unknown: passed through; denied: refused)', labelNames: ['direction', 'service'] as const, registers: [this.registry] });
  private readonly active = new Gauge({ name: 'flb_sidecar_active_connections', help: 'Connections open now', labelNames: ['direction', 'service'] as const, registers: [this.registry] });
  private readonly collectHooks: (() => void)[] = [];
  private readonly bytes = new Counter({
    name: 'flb_sidecar_bytes_total',
    help: 'Bytes proxied; sent is from the connecting side',
    labelNames: ['direction', 'service', 'way'] as const,
    registers: [this.registry],
    // The native forwarder counts bytes itself; open connections' counts are fetched when scraped.
    collect: () => {
      for (const hook of this.collectHooks) hook();
    },
  });
  private readonly connectErrors = new Counter({ name: 'flb_sidecar_connect_errors_total', help: 'Connections that found no endpoint to connect to after retries', labelNames: ['direction', 'service'] as const, registers: [this.registry] });
  private readonly connectSeconds = new Histogram({ name: 'flb_sidecar_upstream_connect_seconds', help: 'Time to connect to an endpoint, retries included', labelNames: ['direction', 'service'] as const, buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5], registers: [this.registry] });
  private readonly requests = new Counter({ name: 'flb_sidecar_requests_total', help: 'HTTP requests by response class', labelNames: ['direction', 'service', 'code'] as const, registers: [this.registry] });
  private readonly retries = new Counter({ name: 'flb_sidecar_request_retries_total', help: 'HTTP requests retried on another endpoint', labelNames: ['direction', 'service'] as const, registers: [this.registry] });
  private readonly requestSeconds = new Histogram({ name: 'flb_sidecar_request_duration_seconds', help: 'HTTP request latency through the sidecar, to the response headers', labelNames: ['direction', 'service'] as const, buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [this.registry] });
  readonly ejections = new Counter({ name: 'flb_sidecar_ejections_total', help: 'Endpoints ejected by outlier detection', labelNames: ['service'] as const, registers: [this.registry] });
  /** Read when scraped, so it follows health checks and ejections between configuration changes. */
  private usableSource: () => Iterable<[service: string, usable: number]> = () => [];
  readonly endpointsUsable = new Gauge({
    name: 'flb_sidecar_endpoints_usable',
    help: 'Endpoints that may be chosen now (healthy, not ejected), per service',
    labelNames: ['service'] as const,
    registers: [this.registry],
    collect: () => {
      this.endpointsUsable.reset();
      for (const [service, usable] of this.usableSource()) this.endpointsUsable.labels({ service }).set(usable);
    },
  });
  readonly configApplied = new Counter({ name: 'flb_sidecar_config_updates_total', help: 'Configuration versions applied', registers: [this.registry] });
  readonly configRejected = new Gauge({ name: 'flb_sidecar_config_rejected_files', help: 'Files of the current configuration refused by validation', registers: [this.registry] });
  private readonly series = new Map<string, ServiceSeries>();

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'flb_sidecar_' });
  }

  /** `hook` runs before the byte counters are read (a scrape). */
  beforeCollect(hook: () => void): void {
    this.collectHooks.push(hook);
  }

  countUsableEndpoints(source: () => Iterable<[service: string, usable: number]>): void {
    this.usableSource = source;
  }

  for(direction: Direction, service: string): ServiceSeries {
    const key = `${direction}\0${service}`;
    let series = this.series.get(key);
    if (!series) {
      const labels = { direction, service };
      const codes = new Map<string, Counter.Internal>();
      series = {
        connections: this.connections.labels(labels),
        active: this.active.labels(labels),
        sent: this.bytes.labels({ ...labels, way: 'sent' }),
        received: this.bytes.labels({ ...labels, way: 'received' }),
        connectErrors: this.connectErrors.labels(labels),
        connectSeconds: this.connectSeconds.labels(labels),
        requests: (code) => {
          let counter = codes.get(code);
          if (!counter) codes.set(code, (counter = this.requests.labels({ ...labels, code })));
          return counter;
        },
        retries: this.retries.labels(labels),
        requestSeconds: this.requestSeconds.labels(labels),
      };
      this.series.set(key, series);
    }
    return series;
  }
}
