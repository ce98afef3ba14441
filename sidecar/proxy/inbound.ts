import { connect as netConnect, createServer, type Server, type Socket } from 'node:net';
import { INBOUND_FORWARD_SOURCE } from '../../common/contract/index.js';
import type { Logger } from '../../common/log.js';
import type { SidecarMetrics } from '../metrics.js';
import { originalDestination, type OriginalDestination } from '../native/index.js';
import { plainAddress } from './routes.js';
import { listen } from '../listen.js';
import { splice } from './splice.js';


export interface InboundOptions {
  host: string;
  port: number;
  metrics: SidecarMetrics;
  log: Logger;
  destination?: (socket: Socket) => OriginalDestination;
  /** Names of inbound ports for metrics (sidecar.json inbound.ports). */
  portName?: (port: number) => string | undefined;
}

/**
 * The inbound listener (15003): a connection redirected from the network goes to the app at the
 * address it was sent to, the pod's own IP, not 127.0.0.1, so that an app listening only on
 * loopback stays unreachable from the network, as it would be without the mesh (Istio changed to
 * this in 1.10 for that reason).
 *
 * REDIRECT rewrites the destination, not the source, but the app sees the sidecar's connection,
 * so its peer address is 127.0.0.6 rather than the client's: the client's address is lost to the
 * app (a TPROXY mode that keeps it is left for later); HTTP apps can read it from headers the
 * calling side adds (we add none: x-forwarded-for is untouched).
 */
export async function startInbound(options: InboundOptions): Promise<{ server: Server; port: number }> {
  const { metrics, log } = options;
  const destinationOf = options.destination ?? originalDestination;
  let sourceUnavailable = false;
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    socket.on('error', () => {});
    let destination: OriginalDestination;
    try {
      destination = destinationOf(socket);
    } catch {
      socket.destroy();
      return;
    }
    const address = plainAddress(destination.address);
    if (destination.port === listeningPort) {
      socket.destroy();
      return;
    }
    const series = metrics.for('inbound', options.portName?.(destination.port) ?? String(destination.port));
    series.connections.inc();
    const family = address.includes(':') ? 6 : 4;
    const started = performance.now();
    const connect = (withSource: boolean) => {
      const upstream = netConnect({ host: address, port: destination.port, noDelay: true, allowHalfOpen: true, ...(withSource ? { localAddress: INBOUND_FORWARD_SOURCE[family] } : {}) });
      let connected = false;
      upstream.once('connect', () => {
        connected = true;
        series.connectSeconds.observe((performance.now() - started) / 1000);
        series.active.inc();
        splice(socket, upstream, ({ sent, received }) => {
          series.active.dec();
          series.sent.inc(sent);
          series.received.inc(received);
        });
      });
      upstream.once('error', (error: NodeJS.ErrnoException) => {
        if (connected) return;
        if (withSource && error.code === 'EADDRNOTAVAIL') {
          // ::6 is not a loopback address unless the pod's setup adds it to lo: go without.
          if (!sourceUnavailable) log.warn({ source: INBOUND_FORWARD_SOURCE[family] }, `cannot bind ${INBOUND_FORWARD_SOURCE[family]}; inbound connections reach the app from the pod's own address`);
          sourceUnavailable = true;
          connect(false);
          return;
        }
        series.connectErrors.inc();
        log.debug({ err: error, destination }, 'the app refused an inbound connection');
        socket.resetAndDestroy();
      });
    };
    connect(!(family === 6 && sourceUnavailable));
  });
  let listeningPort = options.port;
  listeningPort = await listen(server, options.host, options.port);
  return { server, port: listeningPort };
}
