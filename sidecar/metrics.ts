import type { Socket } from 'node:net';
import { Counter, Gauge, Registry } from 'prom-client';
import { collectProcessMetrics } from '../common/metrics.js';
import { counterFamily, gaugeFamily, histogramFamily, type CounterCell, type GaugeCell, type HistogramCell } from './series.js';

export type Direction = 'outbound' | 'inbound';

/** The series of one service (or destination class), bound once: updates are field writes (series.ts). */
export interface ServiceSeries {
  connections: CounterCell;
  active: GaugeCell;
  sent: CounterCell;
  received: CounterCell;
  connectErrors: CounterCell;
  connectSeconds: HistogramCell;
  requests: (codeClass: string) => CounterCell;
  retries: CounterCell;
  requestSeconds: HistogramCell;
}

/** Prometheus metrics of the sidecar, served on the metrics port (15010). */
export class SidecarMetrics {
  readonly registry = new Registry();
  private readonly connections = counterFamily(
    this.registry,
    'flb_sidecar_connections_total',
    'Connections accepted, by direction and service (unknown: passed through; denied: refused)',
  );
  private readonly active = gaugeFamily(this.registry, 'flb_sidecar_active_connections', 'Connections open now');
  private readonly collectHooks: (() => void)[] = [];
  // The native forwarder counts bytes itself; open connections' counts are fetched when scraped.
  private readonly bytes = counterFamily(this.registry, 'flb_sidecar_bytes_total', 'Bytes proxied; sent is from the connecting side', () => {
    for (const hook of this.collectHooks) hook();
  });
  private readonly connectErrors = counterFamily(
    this.registry,
    'flb_sidecar_connect_errors_total',
    'Connections and HTTP requests that could not connect to any endpoint, retries spent',
  );
  private readonly connectSeconds = histogramFamily(
    this.registry,
    'flb_sidecar_upstream_connect_seconds',
    'Time from a connection or request arriving to a new connection to its endpoint, failed attempts included (HTTP: only requests that opened one)',
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5],
  );
  private readonly requests = counterFamily(this.registry, 'flb_sidecar_requests_total', 'HTTP requests by response class');
  private readonly retries = counterFamily(this.registry, 'flb_sidecar_request_retries_total', 'HTTP requests retried on another endpoint');
  private readonly requestSeconds = histogramFamily(
    this.registry,
    'flb_sidecar_request_duration_seconds',
    'HTTP request latency through the sidecar, to the response headers',
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  );
  readonly ejections = new Counter({
    name: 'flb_sidecar_ejections_total',
    help: 'Endpoints ejected by outlier detection',
    labelNames: ['service'] as const,
    registers: [this.registry],
  });
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
  /** Read when scraped: a file is refused or accepted again with or without any change to apply. */
  private rejectedSource: () => number = () => 0;
  readonly configRejected: Gauge = new Gauge({
    name: 'flb_sidecar_config_rejected_files',
    help: 'Files of the current configuration refused by validation',
    registers: [this.registry],
    collect: (): void => this.configRejected.set(this.rejectedSource()),
  });
  private readonly series = new Map<string, ServiceSeries>();
  /** Sockets of the HTTP proxies, by what they counted last. */
  private readonly sockets = new Map<Socket, { series: ServiceSeries; read: number; written: number }>();

  constructor() {
    collectProcessMetrics(this.registry);
    this.beforeCollect(() => {
      for (const [socket, counted] of this.sockets) this.countBytes(socket, counted);
    });
  }

  countRejectedFiles(source: () => number): void {
    this.rejectedSource = source;
  }

  /**
   * Bytes of a connection the HTTP proxies take over from the forwarder, counted on the app's
   * socket as the forwarder counts a `tcp` connection's: what the app sent (headers and framing
   * included) and what it was sent back, on every scrape and when the socket closes.
   */
  countSocketBytes(socket: Socket, series: ServiceSeries): void {
    const counted = { series, read: 0, written: 0 };
    this.sockets.set(socket, counted);
    socket.once('close', () => {
      this.countBytes(socket, counted);
      this.sockets.delete(socket);
    });
  }

  private countBytes(socket: Socket, counted: { series: ServiceSeries; read: number; written: number }): void {
    const read = socket.bytesRead;
    const written = socket.bytesWritten;
    counted.series.sent.inc(read - counted.read);
    counted.series.received.inc(written - counted.written);
    counted.read = read;
    counted.written = written;
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
      const codes = new Map<string, CounterCell>();
      series = {
        connections: this.connections.cell(labels),
        active: this.active.cell(labels),
        sent: this.bytes.cell({ ...labels, way: 'sent' }),
        received: this.bytes.cell({ ...labels, way: 'received' }),
        connectErrors: this.connectErrors.cell(labels),
        connectSeconds: this.connectSeconds.cell(labels),
        requests: (code) => {
          let counter = codes.get(code);
          if (!counter) codes.set(code, (counter = this.requests.cell({ ...labels, code })));
          return counter;
        },
        retries: this.retries.cell(labels),
        requestSeconds: this.requestSeconds.cell(labels),
      };
      this.series.set(key, series);
    }
    return series;
  }
}
