import { connect as netConnect, createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../../common/log.js';
import type { EndpointPool } from '../balancer/index.js';
import type { SidecarMetrics } from '../metrics.js';
import { originalDestination, type OriginalDestination } from '../native/index.js';
import type { HttpProxy } from './http.js';
import type { Http2Proxy } from './http2.js';
import { plainAddress, type Route, type RouteTable } from './routes.js';
import { listen } from '../listen.js';
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
    const tried = new Set<string>();
    const { timeoutMs, retries } = pool.connect;
    // The same loop as balancer/connect.ts's dialWithRetries, written with callbacks: this runs
    // for every new connection, and its promises and AbortController were ~5 % of the proxy's
    // CPU per connection in bench:sidecar's profile.
    const giveUp = (lastError?: Error) => {
      if (socket.destroyed) return;
      series.connectErrors.inc();
      log.warn({ service: route.service.id, tried: [...tried], err: lastError?.message }, 'no endpoint could be reached; connection reset');
      socket.resetAndDestroy();
    };
    const attempt = (retriesLeft: number, lastError?: Error) => {
      const target = socket.destroyed ? undefined : pool.pick({ servicePort: route.port.port, sourceIp, exclude: tried });
      if (!target) {
        giveUp(lastError);
        return;
      }
      tried.add(target.key);
      pool.begin(target.key);
      const upstream = netConnect({ host: target.address, port: target.port, noDelay: true, allowHalfOpen: true });
      const timer = setTimeout(() => upstream.destroy(new Error(`no connection to ${target.address}:${target.port} within ${timeoutMs} ms`)), timeoutMs);
      const failed = (error: Error) => {
        clearTimeout(timer);
        pool.end(target.key, 'connect-failure');
        if (retriesLeft > 0) attempt(retriesLeft - 1, error);
        else giveUp(error);
      };
      upstream.once('error', failed);
      upstream.once('connect', () => {
        clearTimeout(timer);
        upstream.removeListener('error', failed);
        series.connectSeconds.observe((performance.now() - started) / 1000);
        if (socket.destroyed) {
          upstream.destroy();
          pool.end(target.key, 'success');
          return;
        }
        series.active.inc();
        splice(socket, upstream, ({ outcome, sent, received }) => {
          series.active.dec();
          series.sent.inc(sent);
          series.received.inc(received);
          pool.end(target.key, outcome);
        });
      });
    };
    attempt(retries);
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
  listeningPort = await listen(server, options.host, options.port);
  return { server, port: listeningPort };
}
