import { INBOUND_FORWARD_SOURCE, routingAddress } from '../../common/contract/index.js';
import type { Logger } from '../../common/log.js';
import type { ServiceSeries, SidecarMetrics } from '../metrics.js';
import type { OriginalDestination } from '../native/index.js';
import { errnoName, ForwardingListener, type AcceptedConnection, type ForwardedConnection } from './forwarding.js';
import type { ProxyListener } from './outbound.js';

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
  /** Names of inbound ports for metrics (sidecar.json inbound.ports). */
  portName?: (port: number) => string | undefined;
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
  const state = { sourceUnavailable: false };
  const listener: ForwardingListener = new ForwardingListener((accepted) => {
    const destination = accepted.destination ?? options.destination?.({ address: accepted.peerAddress, port: accepted.peerPort });
    if (!destination || destination.port === listener.port) {
      listener.reset(accepted.id);
      return;
    }
    const series = metrics.for('inbound', options.portName?.(destination.port) ?? String(destination.port));
    new InboundConnection(accepted, routingAddress(destination.address), destination.port, listener, series, state, log).connect();
  }, log);
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
  }

  bytes(fromClient: number, fromUpstream: number): void {
    this.series.sent.inc(fromClient);
    this.series.received.inc(fromUpstream);
  }

  closed(fromClient: number, fromUpstream: number): void {
    this.bytes(fromClient, fromUpstream);
    this.series.active.dec();
  }
}
