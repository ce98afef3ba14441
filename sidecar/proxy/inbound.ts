import { ServiceSchema, type Service } from '../../common/contract/catalog.js';
import { INBOUND_FORWARD_SOURCE } from '../../common/contract/interception.js';
import { API_VERSION, routingAddress } from '../../common/contract/primitives.js';

type PortProtocol = Service['ports'][number]['protocol'];
import type { Logger } from '../../common/log.js';
import { addressOf, ConnectionRecord, NO_ACCESS_LOG, type AccessLog } from '../access-log.js';
import { EndpointPool } from '../balancer/index.js';
import type { Lazy } from '../lazy.js';
import type { ServiceSeries, SidecarMetrics } from '../metrics.js';
import type { ForwardOutcome, OriginalDestination } from '../native/index.js';
import { errnoName, ForwardingListener, type AcceptedConnection, type ForwardedConnection } from './forwarding.js';
import type { HttpProxy } from './http.js';
import type { Http2Proxy } from './http2.js';
import type { ProxyListener } from './outbound.js';
import type { Route } from './routes.js';

const EADDRNOTAVAIL = 99;
/** The app is on the same host: a connect that takes this long will not succeed. */
const APP_CONNECT_TIMEOUT_MS = 10_000;

export interface InboundOptions {
  host: string;
  port: number;
  metrics: SidecarMetrics;
  log: Logger;
  /** For tests: where a connection was meant to go (the original destination is then not read). */
  destination?: (peer: { address: string; port: number }) => OriginalDestination;
  /**
   * sidecar.json's `inbound.ports`, read per connection (the object is swapped whole when the
   * configuration changes): a port's name labels its metrics, and `http`, `http2` and `grpc` ports
   * go through the HTTP proxies for server-side request metrics; the rest is forwarded natively.
   */
  ports?: () => ReadonlyMap<number, InboundPort>;
  /** The inbound HTTP proxies (direction `inbound`, connecting from 127.0.0.6). */
  http?: HttpProxy;
  http2?: Lazy<Http2Proxy>;
  accessLog?: AccessLog;
}

export interface InboundPort {
  name?: string | undefined;
  protocol: PortProtocol;
}

/** What the listener knows of one app port, made on its first connection and again after a configuration change. */
interface AppPort {
  series: ServiceSeries;
  label: string;
  /** HTTP ports: the app as a one-endpoint service, per address the port was reached on. */
  http?: { protocol: PortProtocol; routes: Map<string, { route: Route; pool: EndpointPool }> };
}

/**
 * The inbound listener (15003): a connection redirected from the network goes to the app at the
 * address it was sent to, the pod's own IP, not 127.0.0.1, so that an app listening only on
 * loopback stays unreachable from the network, as it would be without the mesh (Istio changed to
 * this in 1.10 for that reason). Forwarded natively, like outbound `tcp` ports.
 *
 * REDIRECT rewrites the destination, not the source, but the app sees the sidecar's connection,
 * so its peer address is 127.0.0.6 rather than the client's: the client's address is lost to the
 * app (a TPROXY mode that keeps it is left for later); HTTP apps can read it from headers the
 * calling side adds (its sidecar appends X-Forwarded-For when the policy says `http.xForwardedFor: append`).
 */
export function startInbound(options: InboundOptions): ProxyListener {
  const { metrics, log } = options;
  const accessLog = options.accessLog ?? NO_ACCESS_LOG;
  const state = { sourceUnavailable: false };
  let knownPorts: ReadonlyMap<number, InboundPort> | undefined;
  const appPorts = new Map<number, AppPort>();
  const appPort = (port: number): AppPort => {
    const ports = options.ports?.();
    if (ports !== knownPorts) {
      for (const known of appPorts.values()) for (const { pool } of known.http?.routes.values() ?? []) pool.close();
      appPorts.clear();
      knownPorts = ports;
    }
    let known = appPorts.get(port);
    if (!known) {
      const declared = ports?.get(port);
      const label = declared?.name ?? String(port);
      const http = declared && declared.protocol !== 'tcp' && options.http ? { protocol: declared.protocol, routes: new Map() } : undefined;
      known = { series: metrics.for('inbound', label), label, ...(http ? { http } : {}) };
      appPorts.set(port, known);
    }
    return known;
  };
  const listener: ForwardingListener = new ForwardingListener((accepted) => {
    const destination = accepted.destination ?? options.destination?.({ address: accepted.peerAddress, port: accepted.peerPort });
    if (!destination || destination.port === listener.port) {
      listener.reset(accepted.id);
      return;
    }
    const address = routingAddress(destination.address);
    const app = appPort(destination.port);
    if (app.http) {
      const { route, pool } = appRoute(app, address, destination.port);
      if (app.http.protocol === 'http') options.http!.handle(listener.socket(accepted.id), route, pool);
      else handOverHttp2(accepted.id, route, pool);
      return;
    }
    const record = accessLog.enabled ? new ConnectionRecord(accessLog, 'inbound', addressOf(accepted.peerAddress, accepted.peerPort), app.label) : undefined;
    if (record) record.upstream = addressOf(address, destination.port);
    new InboundConnection(accepted, address, destination.port, listener, app.series, state, log, record).connect();
  }, log);

  function handOverHttp2(id: number, route: Route, pool: EndpointPool): void {
    const lazy = options.http2;
    const loaded = lazy?.current();
    if (!lazy) listener.reset(id);
    else if (loaded) loaded.handle(listener.socket(id), route, pool);
    else
      // The connection waits in the forwarder, unread, while node:http2 loads.
      lazy.get().then(
        (proxy) => {
          try {
            proxy.handle(listener.socket(id), route, pool);
          } catch (error) {
            log.debug({ err: error }, 'connection gone before the HTTP/2 proxy was loaded');
          }
        },
        (error: unknown) => {
          log.error({ err: error }, 'the HTTP/2 proxy could not be loaded; connection reset');
          try {
            listener.reset(id);
          } catch {
            // Closed meanwhile.
          }
        },
      );
  }

  metrics.beforeCollect(() => listener.reportBytes());
  try {
    listener.listen(options.host, options.port, options.destination === undefined);
  } catch (error) {
    listener.close();
    throw error;
  }
  return listener;
}

class InboundConnection implements ForwardedConnection {
  private readonly started = performance.now();
  private readonly family: 4 | 6;

  constructor(
    private readonly accepted: AcceptedConnection,
    private readonly address: string,
    private readonly port: number,
    private readonly listener: ForwardingListener,
    private readonly series: ServiceSeries,
    private readonly state: { sourceUnavailable: boolean },
    private readonly log: Logger,
    private readonly record: ConnectionRecord | undefined,
  ) {
    series.connections.inc();
    this.family = address.includes(':') ? 6 : 4;
  }

  connect(): void {
    const { family, state } = this;
    const source = family === 6 && state.sourceUnavailable ? undefined : INBOUND_FORWARD_SOURCE[family];
    const errno = this.listener.connect(this.accepted.id, this, this.address, this.port, APP_CONNECT_TIMEOUT_MS, source);
    if (errno === EADDRNOTAVAIL && source !== undefined) {
      // ::6 is not a loopback address unless the pod's setup adds it to lo: go without.
      if (!state.sourceUnavailable) this.log.warn({ source }, `cannot bind ${source}; inbound connections reach the app from the pod's own address`);
      state.sourceUnavailable = true;
      this.connect();
      return;
    }
    if (errno !== 0) this.connected(errno);
  }

  connected(errno: number): void {
    if (errno === 0) {
      this.series.connectSeconds.observe((performance.now() - this.started) / 1000);
      this.series.active.inc();
      return;
    }
    this.series.connectErrors.inc();
    this.log.debug({ err: errnoName(errno), destination: `${this.address}:${this.port}` }, 'the app refused an inbound connection');
    this.listener.reset(this.accepted.id);
    this.record?.closed(`connect-failed: ${errnoName(errno)}`);
  }

  bytes(fromClient: number, fromUpstream: number): void {
    this.series.sent.inc(fromClient);
    this.series.received.inc(fromUpstream);
    this.record?.bytes(fromClient, fromUpstream);
  }

  closed(fromClient: number, fromUpstream: number, outcome: ForwardOutcome): void {
    this.bytes(fromClient, fromUpstream);
    this.series.active.dec();
    this.record?.closed(outcome);
  }
}

/**
 * The app's port as a service of one endpoint, for the HTTP proxies: its id is the port's name
 * (the `service` label of inbound metrics), one attempt with the native path's connect timeout,
 * no outlier detection (there is nowhere else to go).
 */
function appRoute(app: AppPort, address: string, port: number): { route: Route; pool: EndpointPool } {
  const routes = app.http!.routes;
  let found = routes.get(address);
  if (found) return found;
  const parsed = ServiceSchema.parse({
    apiVersion: API_VERSION,
    kind: 'Service',
    id: 'app',
    name: app.label,
    source: 'static',
    ports: [{ port, protocol: app.http!.protocol }],
    endpoints: [{ address, port }],
    policy: { connect: { timeoutMs: APP_CONNECT_TIMEOUT_MS, retries: 0 } },
  });
  const service = { ...parsed, id: app.label };
  const pool = new EndpointPool({ activeHealthChecks: false });
  pool.update(service);
  found = { route: { service, port: service.ports[0]! }, pool };
  routes.set(address, found);
  return found;
}

/** Where the inbound HTTP proxies connect to the app from: 127.0.0.6, as the native path (IPv6: the pod's own address, ::6 is seldom on lo). */
export function inboundHttpSource(address: string): string | undefined {
  return address.includes(':') ? undefined : INBOUND_FORWARD_SOURCE[4];
}
