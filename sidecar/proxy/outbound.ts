import { connect as netConnect, createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../../common/log.js';
import { ConnectError, dialWithRetries, tcpDial, type EndpointPool } from '../balancer/index.js';
import type { SidecarMetrics } from '../metrics.js';
import { originalDestination, type OriginalDestination } from '../native/index.js';
import type { HttpProxy } from './http.js';
import type { Http2Proxy } from './http2.js';
import { plainAddress, type Route, type RouteTable } from './routes.js';
import { splice } from './splice.js';

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
  http2: Http2Proxy;
  metrics: SidecarMetrics;
  log: Logger;
  /** For tests and VMs without interception: where a connection was meant to go. */
  destination?: (socket: Socket) => OriginalDestination;
}

/**
 * The transparent outbound listener (15001): recovers where the app meant to connect
 * (SO_ORIGINAL_DST, answered by conntrack under iptables and by the cgroup/getsockopt program
 * under eBPF), maps that VIP:port to a service and balances the connection over its endpoints;
 * HTTP, HTTP/2 and gRPC ports go to the HTTP proxies for per-request balancing. Anything else passes through to where
 * it was going, or is refused, as the mesh says.
 */
export async function startOutbound(options: OutboundOptions): Promise<{ server: Server; port: number }> {
  const { log, metrics } = options;
  const destinationOf = options.destination ?? originalDestination;
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    socket.on('error', () => {});
    let destination: OriginalDestination;
    try {
      destination = destinationOf(socket);
    } catch (error) {
      log.debug({ err: error, from: socket.remoteAddress }, 'connection without an original destination (not redirected); closed');
      socket.destroy();
      return;
    }
    // Connected to the listener itself (no redirect): forwarding would loop back here.
    if (destination.port === listeningPort && plainAddress(destination.address) === plainAddress(socket.localAddress ?? '')) {
      socket.destroy();
      return;
    }
    const view = options.view();
    const route = view.routes.lookup(destination.address, destination.port);
    if (!route) {
      passThrough(socket, destination, view.unknownDestination);
      return;
    }
    const pool = view.pools.get(route.service.id);
    if (!pool) {
      socket.resetAndDestroy();
      return;
    }
    if (route.port.protocol === 'http') options.http.handle(socket, route, pool);
    else if (route.port.protocol === 'http2' || route.port.protocol === 'grpc') options.http2.handle(socket, route, pool);
    else balanceConnection(socket, route, pool);
  });

  function balanceConnection(socket: Socket, route: Route, pool: EndpointPool): void {
    const series = metrics.for('outbound', route.service.id);
    series.connections.inc();
    const started = performance.now();
    // The peer address costs a getpeername() per connection: asked only when the policy hashes on it.
    const sourceIp = route.service.policy.loadBalancer.hash?.on === 'source-ip' ? socket.remoteAddress : undefined;
    dialWithRetries(pool, { servicePort: route.port.port, sourceIp }, tcpDial).then(
      ({ value: upstream, target }) => {
        series.connectSeconds.observe((performance.now() - started) / 1000);
        if (socket.destroyed) {
          upstream.destroy();
          pool.end(target.key, 'success');
          return;
        }
        upstream.setNoDelay(true);
        series.active.inc();
        splice(socket, upstream, ({ outcome, sent, received }) => {
          series.active.dec();
          series.sent.inc(sent);
          series.received.inc(received);
          pool.end(target.key, outcome);
        });
      },
      (error: unknown) => {
        series.connectErrors.inc();
        log.warn({ service: route.service.id, err: error instanceof ConnectError ? { message: error.message, tried: error.tried } : error }, 'no endpoint could be reached; connection reset');
        socket.resetAndDestroy();
      },
    );
  }

  function passThrough(socket: Socket, destination: OriginalDestination, policy: 'passthrough' | 'deny'): void {
    if (policy === 'deny') {
      metrics.for('outbound', 'denied').connections.inc();
      log.debug({ destination }, 'unknown destination refused (outbound.unknownDestination: deny)');
      socket.resetAndDestroy();
      return;
    }
    const series = metrics.for('outbound', 'unknown');
    series.connections.inc();
    // The sidecar's own connections are never redirected (its UID is excluded), so this goes out as is.
    const upstream = netConnect({ host: destination.address, port: destination.port, noDelay: true, allowHalfOpen: true });
    let connected = false;
    upstream.once('connect', () => {
      connected = true;
      series.active.inc();
      splice(socket, upstream, ({ sent, received }) => {
        series.active.dec();
        series.sent.inc(sent);
        series.received.inc(received);
      });
    });
    upstream.once('error', () => {
      if (connected) return;
      series.connectErrors.inc();
      socket.resetAndDestroy();
    });
  }

  let listeningPort = options.port;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: options.host, port: options.port, ipv6Only: false }, () => resolve());
  });
  const address = server.address();
  listeningPort = typeof address === 'object' && address ? address.port : options.port;
  return { server, port: listeningPort };
}
