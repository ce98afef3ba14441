import type { Logger } from '../../common/log.js';
import { addressOf, ConnectionRecord, NO_ACCESS_LOG, type AccessLog } from '../access-log.js';
import { AttemptPlanner, GIVE_UP, type EndpointPool } from '../balancer/index.js';
import type { ServiceSeries, SidecarMetrics } from '../metrics.js';
import { ForwardOutcome, type OriginalDestination } from '../native/index.js';
import { errnoName, ForwardingListener, type AcceptedConnection, type ForwardedConnection } from './forwarding.js';
import type { HttpProxy } from './http.js';
import type { Lazy } from '../lazy.js';
import type { Http2Proxy } from './http2.js';
import type { Route, RouteTable } from './routes.js';

/** Istio's default for its passthrough cluster: an unreachable external address fails in 10 s, not the kernel's 2 min. */
const PASSTHROUGH_CONNECT_TIMEOUT_MS = 10_000;

/** What the outbound side reads on every connection; swapped whole when the configuration changes. */
export interface OutboundView {
  routes: RouteTable;
  pools: ReadonlyMap<string, EndpointPool>;
  unknownDestination: 'passthrough' | 'deny';
}

export interface OutboundOptions {
  host: string;
  port: number;
  view: () => OutboundView;
  http: HttpProxy;
  /** Loaded when the first HTTP/2 or gRPC connection arrives. */
  http2: Lazy<Http2Proxy>;
  metrics: SidecarMetrics;
  log: Logger;
  accessLog?: AccessLog;
  /** For tests and VMs without interception: where a connection was meant to go (the original destination is then not read). */
  destination?: (peer: { address: string; port: number }) => OriginalDestination;
}

/** A proxy listener as the sidecar drives it. */
export interface ProxyListener {
  readonly port: number;
  /** Stops accepting; open connections go on. */
  stopAccepting(): void;
  /** Natively forwarded connections idle (no byte either way) this long are reset; 0: never. */
  setIdleTimeout(ms: number): void;
  openConnections(): number;
  /** Closes the listener and every connection it forwards. */
  close(): void;
}

/**
 * The transparent outbound listener (15001): recovers where the app meant to connect
 * (SO_ORIGINAL_DST, answered by conntrack under iptables and by the cgroup/getsockopt program
 * under eBPF), maps that VIP:port to a service and balances the connection over its endpoints;
 * HTTP, HTTP/2 and gRPC ports go to the HTTP proxies for per-request balancing. Anything else
 * passes through to where it was going, or is refused, as the mesh says.
 *
 * `tcp` ports are forwarded natively: JavaScript picks the endpoint, retries a failed connect on
 * another, and accounts for the outcome; the bytes never enter it.
 */
export function startOutbound(options: OutboundOptions): ProxyListener {
  const { log, metrics } = options;
  const accessLog = options.accessLog ?? NO_ACCESS_LOG;
  const unknownSeries = metrics.for('outbound', 'unknown');
  const deniedSeries = metrics.for('outbound', 'denied');
  // Passed through as unknown ones are, but counted apart: an endpoint of several services that the
  // endpoint fallback (mesh.json `outbound.endpointFallback`) will not guess between.
  const ambiguousSeries = metrics.for('outbound', 'ambiguous');
  const listener: ForwardingListener = new ForwardingListener((accepted) => route(accepted), log);
  metrics.beforeCollect(() => listener.reportBytes());

  function route(accepted: AcceptedConnection): void {
    const destination = accepted.destination ?? options.destination?.({ address: accepted.peerAddress, port: accepted.peerPort });
    if (!destination) {
      log.debug({ from: accepted.peerAddress }, 'connection without an original destination (not redirected); closed');
      listener.reset(accepted.id);
      return;
    }
    const view = options.view();
    const route = view.routes.lookup(destination.address, destination.port);
    if (!route) {
      const ambiguous = view.unknownDestination === 'passthrough' && view.routes.isAmbiguous(destination.address, destination.port);
      if (ambiguous) log.debug({ destination }, 'an endpoint of several services: passed through, not balanced (outbound.endpointFallback)');
      passThrough(accepted, destination, view.unknownDestination, ambiguous ? ambiguousSeries : unknownSeries);
      return;
    }
    const pool = view.pools.get(route.service.id);
    if (!pool) {
      listener.reset(accepted.id);
      return;
    }
    if (route.port.protocol === 'http') options.http.handle(listener.socket(accepted.id), route, pool);
    else if (route.port.protocol === 'http2' || route.port.protocol === 'grpc') {
      const http2 = options.http2.current();
      if (http2) http2.handle(listener.socket(accepted.id), route, pool);
      else {
        // The connection waits in the forwarder, unread, while node:http2 loads.
        options.http2.get().then(
          (proxy) => {
            try {
              proxy.handle(listener.socket(accepted.id), route, pool);
            } catch (error) {
              // The listener closed while node:http2 loaded: the connection went with it.
              log.debug({ err: error }, 'connection gone before the HTTP/2 proxy was loaded');
            }
          },
          (error: unknown) => {
            log.error({ err: error }, 'the HTTP/2 proxy could not be loaded; connection reset');
            try {
              listener.reset(accepted.id);
            } catch {
              // Closed meanwhile.
            }
          },
        );
      }
    } else {
      const record = accessLog.enabled
        ? new ConnectionRecord(accessLog, 'outbound', addressOf(accepted.peerAddress, accepted.peerPort), route.service.id)
        : undefined;
      new BalancedConnection(accepted, route, pool, listener, metrics.forService('outbound', route.service), log, record).attempt();
    }
  }

  function passThrough(accepted: AcceptedConnection, destination: OriginalDestination, policy: 'passthrough' | 'deny', series: ServiceSeries): void {
    const { id } = accepted;
    const record = accessLog.enabled
      ? new ConnectionRecord(
          accessLog,
          'outbound',
          addressOf(accepted.peerAddress, accepted.peerPort),
          policy === 'deny' ? 'denied' : series === ambiguousSeries ? 'ambiguous' : 'unknown',
        )
      : undefined;
    if (policy === 'deny') {
      deniedSeries.connections.inc();
      log.debug({ destination }, 'unknown destination refused (outbound.unknownDestination: deny)');
      listener.reset(id);
      record?.closed('denied');
      return;
    }
    if (record) record.upstream = addressOf(destination.address, destination.port);
    // The sidecar's own connections are never redirected (its UID is excluded), so this goes out as is.
    const connection = new PassThroughConnection(id, listener, series, record);
    const errno = listener.connect(id, connection, destination.address, destination.port, PASSTHROUGH_CONNECT_TIMEOUT_MS);
    if (errno !== 0) connection.connected(errno);
  }

  try {
    listener.listen(options.host, options.port, options.destination === undefined);
  } catch (error) {
    listener.close();
    throw error;
  }
  return listener;
}

/**
 * A `tcp` connection balanced over a service's endpoints: a failed connect (refused, timed out)
 * is tried again as the attempt planner says (another endpoint at once while there is one, then
 * after a backoff, up to the policy's connect retries); the outcome feeds outlier detection.
 * A class, not closures: one of these per new connection is on the hot path.
 */
class BalancedConnection implements ForwardedConnection {
  private readonly planner: AttemptPlanner;
  private readonly started = performance.now();
  private lastErrno = 0;

  constructor(
    private readonly accepted: AcceptedConnection,
    private readonly route: Route,
    private readonly pool: EndpointPool,
    private readonly listener: ForwardingListener,
    private readonly series: ServiceSeries,
    private readonly log: Logger,
    /** Set while the access log is on. */
    private readonly record: ConnectionRecord | undefined,
  ) {
    series.connections.inc();
    // Hashing on the client address is the only use of the peer address.
    const sourceIp = route.service.policy.loadBalancer.hash?.on === 'source-ip' ? accepted.peerAddress : undefined;
    this.planner = new AttemptPlanner(pool, route.port.port, sourceIp, undefined, false, route.kept);
  }

  attempt(): void {
    for (;;) {
      const target = this.planner.next();
      if (!target) {
        this.giveUp();
        return;
      }
      if (this.record) this.record.upstream = addressOf(target.address, target.port);
      const errno = this.listener.connect(this.accepted.id, this, target.address, target.port, this.pool.connect.timeoutMs);
      if (errno === 0 || !this.retryNow(errno)) return;
    }
  }

  connected(errno: number): void {
    if (errno === 0) {
      this.series.connectSeconds.observe((performance.now() - this.started) / 1000);
      this.series.active.inc();
      return;
    }
    if (this.retryNow(errno)) this.attempt();
  }

  bytes(fromClient: number, fromUpstream: number): void {
    this.series.sent.inc(fromClient);
    this.series.received.inc(fromUpstream);
    this.record?.bytes(fromClient, fromUpstream);
  }

  closed(fromClient: number, fromUpstream: number, outcome: ForwardOutcome): void {
    this.bytes(fromClient, fromUpstream);
    this.series.active.dec();
    this.planner.end(outcome === ForwardOutcome.UpstreamFailed ? 'reset' : 'success');
    this.record?.closed(outcome);
  }

  /** After a failed connect: true to attempt again at once; a later attempt is scheduled, or the connection reset. */
  private retryNow(errno: number): boolean {
    this.lastErrno = errno;
    const delay = this.planner.retryAfterConnectFailure();
    if (delay === GIVE_UP) {
      this.giveUp();
      return false;
    }
    if (delay === 0) return true;
    this.pool.clock.setTimer(() => this.attemptLater(), delay);
    return false;
  }

  private attemptLater(): void {
    try {
      this.attempt();
    } catch (error) {
      // The listener closed during the backoff: the connection went with it.
      this.log.debug({ err: error, service: this.route.service.id }, 'connection gone during a connect backoff');
    }
  }

  private giveUp(): void {
    this.series.connectErrors.inc();
    this.log.warn(
      { service: this.route.service.id, tried: this.planner.tried(), err: this.lastErrno ? errnoName(this.lastErrno) : undefined },
      'no endpoint could be reached; connection reset',
    );
    this.listener.reset(this.accepted.id);
    this.record?.closed(this.lastErrno ? `connect-failed: ${errnoName(this.lastErrno)}` : 'no-endpoint');
  }
}

/** To the original destination, as is (`outbound.unknownDestination: passthrough`). */
class PassThroughConnection implements ForwardedConnection {
  constructor(
    private readonly id: number,
    private readonly listener: ForwardingListener,
    private readonly series: ServiceSeries,
    private readonly record: ConnectionRecord | undefined,
  ) {
    series.connections.inc();
  }

  connected(errno: number): void {
    if (errno === 0) {
      this.series.active.inc();
      return;
    }
    this.series.connectErrors.inc();
    this.listener.reset(this.id);
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
