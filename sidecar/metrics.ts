import type { Socket } from 'node:net';
import { Counter, Gauge, Registry } from 'prom-client';
import { collectProcessMetrics } from '../common/metrics.js';
import { counterFamily, gaugeFamily, histogramFamily, type CounterCell, type GaugeCell, type HistogramCell } from './series.js';

export type Direction = 'outbound' | 'inbound';
/** `http2` is HTTP/2 that is not gRPC (a `grpc` port, or `content-type: application/grpc*` on an `http2` one). */
export type RequestProtocol = 'http' | 'http2' | 'grpc';

/** The pod (or VM) this sidecar runs beside: the source of outbound requests, the destination of inbound ones. */
export interface WorkloadIdentity {
  workload: string;
  namespace: string;
}

/** What a series is about: a catalog service, or a class with no service (`unknown`, `denied`, an inbound port). */
export interface Destination {
  id: string;
  name?: string | undefined;
  namespace?: string | undefined;
}

const UNKNOWN = 'unknown';

/**
 * The injector's env (injector/mesh-parts.ts): FLB_WORKLOAD_NAME is the pod's Deployment (or other
 * owner), POD_NAMESPACE comes from the downward API. Outside a pod (a VM, a test) both are `unknown`.
 */
export function workloadFromEnvironment(env: NodeJS.ProcessEnv = process.env): WorkloadIdentity {
  return { workload: env.FLB_WORKLOAD_NAME || UNKNOWN, namespace: env.POD_NAMESPACE || UNKNOWN };
}

/** The count and duration of the requests of one (protocol, response code, gRPC status) of a service. */
export interface ResponseSeries {
  requests: CounterCell;
  seconds: HistogramCell;
}

/** The series of one service (or destination class), bound once: updates are field writes (series.ts). */
export interface ServiceSeries {
  connections: CounterCell;
  active: GaugeCell;
  sent: CounterCell;
  received: CounterCell;
  connectErrors: CounterCell;
  connectSeconds: HistogramCell;
  retries: CounterCell;
  /** The series of a finished request; `grpcStatus` as it came (a string from the trailers), undefined if none. */
  response(protocol: RequestProtocol, status: number, grpcStatus: string | undefined): ResponseSeries;
}

/**
 * Distinct (protocol, response code, gRPC status) series a service may have per direction; a new
 * one beyond this is counted as `response_code="other"`. HTTP codes are already 100-599 and gRPC
 * statuses 0-16 (anything else is `other` too), so this only bites a service answering with
 * dozens of different codes.
 */
export const MAX_RESPONSE_SERIES = 32;
const PROTOCOLS: readonly RequestProtocol[] = ['http', 'http2', 'grpc'];
const NO_GRPC_STATUS = 17;
const OTHER_GRPC_STATUS = 18;

/** 0-16 for a gRPC status as sent ("0" to "16"), NO_GRPC_STATUS for none, OTHER_GRPC_STATUS for anything else; allocates nothing. */
function grpcIndex(status: string | undefined): number {
  if (status === undefined) return NO_GRPC_STATUS;
  const first = status.charCodeAt(0) - 48;
  if (status.length === 1 && first >= 0 && first <= 9) return first;
  if (status.length === 2 && first === 1) {
    const second = status.charCodeAt(1) - 48;
    if (second >= 0 && second <= 6) return 10 + second;
  }
  return OTHER_GRPC_STATUS;
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
  private readonly requests = counterFamily(
    this.registry,
    'flb_sidecar_requests_total',
    'HTTP requests, HTTP/2 streams and gRPC calls finished, by protocol, exact response code and gRPC status',
  );
  private readonly retries = counterFamily(this.registry, 'flb_sidecar_request_retries_total', 'HTTP requests retried on another endpoint');
  private readonly requestSeconds = histogramFamily(
    this.registry,
    'flb_sidecar_request_duration_seconds',
    'Request duration through the sidecar, from the request arriving to the last byte (or trailers) of the response',
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
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
  /** By the catalog's Service object itself: a lookup per connection builds no string. */
  private readonly byService = { outbound: new WeakMap<object, ServiceSeries>(), inbound: new WeakMap<object, ServiceSeries>() };
  /** Sockets of the HTTP proxies, by what they counted last. */
  private readonly sockets = new Map<Socket, { series: ServiceSeries; read: number; written: number }>();

  constructor(readonly identity: WorkloadIdentity = workloadFromEnvironment()) {
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

  /** The series of a catalog service; the same object for the same Service, found without building a key. */
  forService(direction: Direction, service: Destination & object): ServiceSeries {
    const cache = this.byService[direction];
    let series = cache.get(service);
    if (!series) cache.set(service, (series = this.for(direction, service)));
    return series;
  }

  /** The series of a service or class; a string is a class (`unknown`, `denied`, an inbound port). Made once per key. */
  for(direction: Direction, destination: string | Destination): ServiceSeries {
    const { id, name, namespace } = typeof destination === 'string' ? { id: destination, name: undefined, namespace: undefined } : destination;
    const key = `${direction}\0${id}`;
    let series = this.series.get(key);
    if (series) return series;
    const own = this.identity;
    // Istio's names: the source reports outbound requests, the destination inbound ones. The peer
    // on the other side is not known here (no peer metadata exchange yet): `unknown`.
    const labels = {
      direction,
      service: id,
      reporter: direction === 'outbound' ? 'source' : 'destination',
      source_workload: direction === 'outbound' ? own.workload : UNKNOWN,
      source_workload_namespace: direction === 'outbound' ? own.namespace : UNKNOWN,
      destination_service: id,
      destination_service_name: name ?? id,
      destination_service_namespace: namespace ?? (direction === 'inbound' ? own.namespace : UNKNOWN),
      destination_workload: direction === 'inbound' ? own.workload : UNKNOWN,
      destination_workload_namespace: direction === 'inbound' ? own.namespace : UNKNOWN,
    };
    const responses = new Map<number, ResponseSeries>();
    let other: ResponseSeries | undefined;
    const response = (protocol: RequestProtocol, status: number, grpcStatus: string | undefined): ResponseSeries => {
      const grpc = grpcIndex(grpcStatus);
      const code = Number.isInteger(status) && status >= 100 && status <= 599 ? status : 0;
      const protocolIndex = protocol === 'http' ? 0 : protocol === 'http2' ? 1 : 2;
      const key = (protocolIndex * 1000 + code) * 32 + grpc;
      let found = responses.get(key);
      if (found) return found;
      if (responses.size >= MAX_RESPONSE_SERIES || code === 0) {
        other ??= this.responseSeries(labels, 'other', 'other', 'other');
        return other;
      }
      const grpcLabel = grpc === NO_GRPC_STATUS ? '' : grpc === OTHER_GRPC_STATUS ? 'other' : String(grpc);
      found = this.responseSeries(labels, PROTOCOLS[protocolIndex]!, String(code), grpcLabel);
      responses.set(key, found);
      return found;
    };
    series = {
      connections: this.connections.cell(labels),
      active: this.active.cell(labels),
      sent: this.bytes.cell({ ...labels, way: 'sent' }),
      received: this.bytes.cell({ ...labels, way: 'received' }),
      connectErrors: this.connectErrors.cell(labels),
      connectSeconds: this.connectSeconds.cell(labels),
      retries: this.retries.cell(labels),
      response,
    };
    this.series.set(key, series);
    return series;
  }

  private responseSeries(labels: Record<string, string>, protocol: string, code: string, grpcStatus: string): ResponseSeries {
    const responseLabels = { ...labels, request_protocol: protocol, response_code: code, grpc_response_status: grpcStatus };
    return { requests: this.requests.cell(responseLabels), seconds: this.requestSeconds.cell(responseLabels) };
  }
}
