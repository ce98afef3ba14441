// One BGP session to one peer: the RFC 4271 §8 state machine, simplified where an announcer can
// be: it connects (active peering only, so no connection collisions), offers its capabilities,
// keeps the session with keepalives and the hold timer, and keeps the peer's view of our routes
// equal to the set it is given (announce what is new or changed, withdraw what is gone) without
// dropping the session. Routes the peer sends are counted, never used. Any error is answered with
// its NOTIFICATION, the connection closed, and a new one tried after the connect-retry time.
import { EventEmitter } from 'node:events';
import { connect, isIPv4, isIPv6, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { announcements, routesToSend, withdrawals, type PeerView, type Route } from './routes.js';
import {
  Afi,
  BgpNotificationError,
  CeaseSubcode,
  decodeMessage,
  describeNotification,
  encodeEndOfRib,
  encodeKeepalive,
  encodeNotification,
  encodeOpen,
  ErrorCode,
  Framer,
  FsmSubcode,
  OpenSubcode,
  peerAs,
  prefixText,
  routesOf,
  Safi,
  shutdownData,
  type AddressFamily,
  type Capability,
  type OpenMessage,
  type ReceivedMessage,
} from './wire/index.js';

export type SessionState = 'Idle' | 'Connect' | 'Active' | 'OpenSent' | 'OpenConfirm' | 'Established';

export interface SessionOptions {
  localAs: number;
  routerId: string;
  /** Proposed hold time; the session uses the smaller of ours and the peer's (0: no keepalives). */
  holdTimeSeconds: number;
  peerAddress: string;
  peerPort: number;
  remoteAs: number;
  /** Source address of the connection; the kernel chooses when unset. */
  localAddress?: string;
  /** Next hop per family; unset, the connection's own address for its family. */
  nextHops?: Partial<Record<AddressFamily, string>>;
  /** Families offered (multiprotocol capabilities). */
  families?: AddressFamily[];
  /** Never connect: wait for the peer to (the speaker's listener hands its connections over with accept()). */
  passive?: boolean;
  /** Wait between a failed or lost connection and the next attempt (RFC 4271 ConnectRetryTimer, jittered 75-100 %). */
  connectRetryMs?: number;
  /** A connection attempt that has not succeeded in this long is abandoned. */
  connectTimeoutMs?: number;
  log: Logger;
}

export interface SessionStatus {
  peer: string;
  remoteAs: number;
  state: SessionState;
  /** When the session reached its current state (ms since the epoch). */
  since: number;
  holdTimeSeconds?: number;
  families: string[];
  prefixesSent: number;
  prefixesReceived: number;
  /** Why the session last went down. */
  lastError?: string;
}

/** RFC 4271 §10: a large hold time while waiting for the peer's OPEN. */
const OPEN_HOLD_MS = 240_000;
/** Received routes kept (to count them) at most: an announcer's peer should send none, a full table must not eat the sidecar. */
const MAX_RECEIVED_TRACKED = 10_000;

/**
 * Events: 'state' (state: SessionState), 'established', 'down' (reason: string), 'notification'
 * (direction: 'sent' | 'received', code: number, subcode: number), 'updates' (count: number, sent).
 */
export class BgpSession extends EventEmitter {
  state: SessionState = 'Idle';
  private since = Date.now();
  private socket: Socket | undefined;
  private framer = new Framer();
  private readonly timers: Partial<Record<'connectRetry' | 'hold' | 'keepalive' | 'connectTimeout', NodeJS.Timeout>> = {};
  private negotiatedHoldSeconds = 0;
  private view: PeerView | undefined;
  /** What the peer has from us now, by prefix text. */
  private advertised = new Map<string, Route>();
  private desired: ReadonlyMap<string, Route> = new Map();
  private readonly received = new Set<string>();
  private readonly unsendableSaid = new Set<string>();
  private lastError: string | undefined;
  private stopped = true;
  private readonly log: Logger;
  private readonly families: AddressFamily[];

  constructor(private readonly options: SessionOptions) {
    super();
    this.log = options.log.child({ peer: options.peerAddress, remoteAs: options.remoteAs });
    this.families = options.families ?? [Afi.IPV4, Afi.IPV6];
  }

  get ibgp(): boolean {
    return this.options.remoteAs === this.options.localAs;
  }

  get passive(): boolean {
    return this.options.passive === true;
  }

  get peerAddress(): string {
    return this.options.peerAddress;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    if (this.passive) this.setState('Active');
    else this.connect();
  }

  /**
   * A connection the peer opened to us (passive peering). Taken when the session has none; with one
   * under way or Established it is refused with Cease / Connection Collision Resolution (RFC 4271
   * §6.8 keeps an Established connection; a passive session never opens one of its own to collide).
   */
  accept(socket: Socket): void {
    if (this.stopped || this.socket) {
      this.log.warn({ state: this.state }, 'second connection from the peer refused');
      socket.on('error', () => undefined);
      socket.end(encodeNotification(ErrorCode.CEASE, CeaseSubcode.CONNECTION_COLLISION_RESOLUTION));
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    clearTimeout(this.timers.connectRetry);
    this.framer = new Framer();
    this.attach(socket);
    this.sendOpen();
  }

  /** Replaces the routes this peer should have; sent at once when Established, else on establishment. */
  setRoutes(routes: ReadonlyMap<string, Route>): void {
    this.desired = routes;
    if (this.state === 'Established') this.sync();
  }

  /** Ends the session with Cease (Administrative Shutdown and `message`, RFC 9003) and stops reconnecting. */
  stop(message = 'shutting down'): void {
    this.stopped = true;
    this.clearTimers();
    if (this.socket && (this.state === 'OpenSent' || this.state === 'OpenConfirm' || this.state === 'Established')) {
      this.socket.end(encodeNotification(ErrorCode.CEASE, CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, shutdownData(message)));
      this.emit('notification', 'sent', ErrorCode.CEASE, CeaseSubcode.ADMINISTRATIVE_SHUTDOWN);
      this.log.info({ message }, 'BGP session shut down');
    } else {
      this.socket?.destroy();
    }
    this.socket = undefined;
    this.setState('Idle');
  }

  status(): SessionStatus {
    return {
      peer: `${this.options.peerAddress}:${this.options.peerPort}`,
      remoteAs: this.options.remoteAs,
      state: this.state,
      since: this.since,
      ...(this.state === 'Established' ? { holdTimeSeconds: this.negotiatedHoldSeconds } : {}),
      families: [...(this.view?.families ?? [])].map((f) => (f === Afi.IPV4 ? 'ipv4-unicast' : 'ipv6-unicast')),
      prefixesSent: this.state === 'Established' ? this.advertised.size : 0,
      prefixesReceived: this.received.size,
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }

  private setState(state: SessionState): void {
    if (state === this.state) return;
    const from = this.state;
    this.state = state;
    this.since = Date.now();
    this.log.debug({ from, to: state }, 'BGP state');
    this.emit('state', state);
  }

  private clearTimers(): void {
    for (const [name, timer] of Object.entries(this.timers)) {
      clearTimeout(timer);
      delete this.timers[name as keyof typeof this.timers];
    }
  }

  private connect(): void {
    if (this.stopped) return;
    this.setState('Connect');
    this.framer = new Framer();
    const socket = connect({
      host: this.options.peerAddress,
      port: this.options.peerPort,
      ...(this.options.localAddress ? { localAddress: this.options.localAddress } : {}),
    });
    this.attach(socket);
    this.timers.connectTimeout = setTimeout(
      () => this.drop(`no TCP connection within ${this.options.connectTimeoutMs ?? 5000} ms`),
      this.options.connectTimeoutMs ?? 5000,
    );
    socket.once('connect', () => {
      clearTimeout(this.timers.connectTimeout);
      this.sendOpen();
    });
  }

  private attach(socket: Socket): void {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.receive(socket, chunk));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (socket === this.socket) this.drop(error.code ? `${error.code}: ${error.message}` : error.message);
    });
    socket.on('close', () => {
      if (socket === this.socket) this.drop('the peer closed the connection');
    });
  }

  private sendOpen(): void {
    const capabilities: Capability[] = [
      ...this.families.map((afi) => ({ kind: 'multiprotocol' as const, afi, safi: Safi.UNICAST })),
      { kind: 'route-refresh' },
      { kind: 'four-octet-as', as: this.options.localAs },
      // RFC 4724 with no address family: End-of-RIB, and nothing kept for us when we go away, so
      // a crashed announcer's routes leave the router at once.
      { kind: 'graceful-restart', restarted: false, notification: false, restartTimeSeconds: 0, families: [] },
    ];
    this.write(encodeOpen({ myAs: this.options.localAs, holdTimeSeconds: this.options.holdTimeSeconds, bgpId: this.options.routerId, capabilities }));
    this.setState('OpenSent');
    this.restartHold(OPEN_HOLD_MS);
  }

  private write(bytes: Uint8Array): void {
    this.socket?.write(bytes);
  }

  private receive(socket: Socket, chunk: Buffer): void {
    if (socket !== this.socket) return;
    try {
      for (const frame of this.framer.push(chunk)) {
        const message = decodeMessage(frame, { fourOctetAs: this.view?.fourOctetAs ?? true, ibgp: this.ibgp, peerAs: this.options.remoteAs });
        this.handle(message);
        if (socket !== this.socket) return;
      }
    } catch (error) {
      if (error instanceof BgpNotificationError) this.fail(error);
      else this.fail(new BgpNotificationError(ErrorCode.CEASE, CeaseSubcode.OUT_OF_RESOURCES, `internal error: ${(error as Error).stack ?? String(error)}`));
    }
  }

  private handle(message: ReceivedMessage): void {
    if (message.type === 'notification') {
      this.emit('notification', 'received', message.code, message.subcode);
      this.drop(`the peer sent NOTIFICATION ${describeNotification(message.code, message.subcode, message.data)}`, false);
      return;
    }
    switch (this.state) {
      case 'OpenSent':
        if (message.type !== 'open') throw fsmError(FsmSubcode.UNEXPECTED_IN_OPEN_SENT, message.type, 'OpenSent');
        this.acceptOpen(message);
        return;
      case 'OpenConfirm':
        if (message.type !== 'keepalive') throw fsmError(FsmSubcode.UNEXPECTED_IN_OPEN_CONFIRM, message.type, 'OpenConfirm');
        this.restartHold();
        this.established();
        return;
      case 'Established':
        this.restartHold();
        if (message.type === 'open') throw fsmError(FsmSubcode.UNEXPECTED_IN_ESTABLISHED, message.type, 'Established');
        if (message.type === 'update') {
          for (const problem of message.problems) this.log.warn({ ...problem }, 'malformed UPDATE from the peer (RFC 7606)');
          const { announced, withdrawn } = routesOf(message);
          for (const prefix of withdrawn) this.received.delete(prefixText(prefix));
          for (const prefix of announced) if (this.received.size < MAX_RECEIVED_TRACKED) this.received.add(prefixText(prefix));
        } else if (message.type === 'route-refresh') {
          const afi = message.afi as AddressFamily;
          if (message.safi === Safi.UNICAST && this.view?.families.has(afi)) this.sendAll(afi);
        }
        return;
      default:
        return;
    }
  }

  private acceptOpen(open: OpenMessage): void {
    const as = peerAs(open);
    if (as !== this.options.remoteAs)
      throw new BgpNotificationError(
        ErrorCode.OPEN_MESSAGE,
        OpenSubcode.BAD_PEER_AS,
        `the peer says it is AS ${as}, configured as AS ${this.options.remoteAs}`,
      );
    if (this.ibgp && open.bgpId === this.options.routerId)
      throw new BgpNotificationError(ErrorCode.OPEN_MESSAGE, OpenSubcode.BAD_BGP_IDENTIFIER, `the internal peer has our own router id ${open.bgpId}`);
    const offered = open.capabilities.filter((c) => c.kind === 'multiprotocol');
    // RFC 4760 §8: a peer that sends no multiprotocol capability speaks IPv4 unicast alone.
    const theirs = offered.length
      ? new Set(offered.flatMap((c) => (c.kind === 'multiprotocol' && c.safi === Safi.UNICAST ? [c.afi] : [])))
      : new Set<number>([Afi.IPV4]);
    const families = new Set(this.families.filter((afi) => theirs.has(afi)));
    const local = this.socket?.localAddress ?? '';
    const localIpv4 = isIPv4(local) ? local : local.startsWith('::ffff:') && isIPv4(local.slice(7)) ? local.slice(7) : undefined;
    const nextHops: Partial<Record<AddressFamily, string>> = {
      ...(localIpv4 ? { [Afi.IPV4]: localIpv4 } : {}),
      ...(isIPv6(local) && !localIpv4 ? { [Afi.IPV6]: local } : {}),
      ...this.options.nextHops,
    };
    this.view = {
      localAs: this.options.localAs,
      ibgp: this.ibgp,
      fourOctetAs: open.capabilities.some((c) => c.kind === 'four-octet-as'),
      families,
      nextHops,
    };
    this.negotiatedHoldSeconds = Math.min(this.options.holdTimeSeconds, open.holdTimeSeconds);
    this.write(encodeKeepalive());
    this.setState('OpenConfirm');
    this.restartHold();
    this.startKeepalives();
    this.log.debug({ peerRouterId: open.bgpId, holdTimeSeconds: this.negotiatedHoldSeconds, families: [...families] }, 'BGP OPEN accepted');
  }

  private established(): void {
    this.setState('Established');
    this.advertised.clear();
    this.log.info({ holdTimeSeconds: this.negotiatedHoldSeconds, families: this.status().families }, 'BGP session established');
    this.sync();
    for (const afi of this.view!.families) this.write(encodeEndOfRib(afi, this.view!));
    this.emit('established');
  }

  /** Sends what changed between what the peer has and what it should have. */
  private sync(): void {
    const view = this.view!;
    const wanted = new Map(routesToSend(this.desired.values(), view, this.log, this.unsendableSaid).map((r) => [prefixText(r.prefix), r]));
    const changed = [...wanted].filter(([key, route]) => !sameRoute(this.advertised.get(key), route)).map(([, route]) => route);
    const gone = [...this.advertised].filter(([key]) => !wanted.has(key)).map(([, route]) => route.prefix);
    const messages = [...withdrawals(gone, view), ...announcements(changed, view)];
    for (const message of messages) this.write(message);
    if (messages.length) this.emit('updates', messages.length);
    if (gone.length || changed.length) this.log.info({ announced: changed.map((r) => prefixText(r.prefix)), withdrawn: gone.map(prefixText) }, 'routes sent');
    this.advertised = wanted;
  }

  /** ROUTE-REFRESH: everything we advertise of one family, again. */
  private sendAll(afi: AddressFamily): void {
    const routes = [...this.advertised.values()].filter((r) => r.prefix.afi === afi);
    const messages = announcements(routes, this.view!);
    for (const message of messages) this.write(message);
    if (messages.length) this.emit('updates', messages.length);
  }

  private restartHold(ms = this.negotiatedHoldSeconds * 1000): void {
    clearTimeout(this.timers.hold);
    if (ms === 0) return;
    this.timers.hold = setTimeout(() => {
      this.fail(new BgpNotificationError(ErrorCode.HOLD_TIMER_EXPIRED, 0, `nothing from the peer for ${ms / 1000} s (hold time)`));
    }, ms);
  }

  private startKeepalives(): void {
    clearInterval(this.timers.keepalive);
    if (this.negotiatedHoldSeconds === 0) return;
    // RFC 4271 §10: a third of the hold time.
    this.timers.keepalive = setInterval(() => this.write(encodeKeepalive()), (this.negotiatedHoldSeconds * 1000) / 3);
  }

  /** Answers an error with its NOTIFICATION and closes. */
  private fail(error: BgpNotificationError): void {
    const notification = describeNotification(error.code, error.subcode, error.data);
    this.log.warn({ code: error.code, subcode: error.subcode, error: error.message }, `sending NOTIFICATION ${notification}`);
    if (this.socket && this.state !== 'Connect') {
      this.socket.end(encodeNotification(error.code, error.subcode, error.data));
      this.emit('notification', 'sent', error.code, error.subcode);
    }
    this.drop(`we sent NOTIFICATION ${notification}: ${error.message}`, false);
  }

  /** The connection is gone (or abandoned): back to Idle, and a new attempt after the connect-retry time. */
  private drop(reason: string, destroy = true): void {
    const socket = this.socket;
    this.socket = undefined;
    if (socket && destroy) socket.destroy();
    else if (socket) setTimeout(() => socket.destroy(), 1000).unref();
    const wasEstablished = this.state === 'Established';
    this.clearTimers();
    this.lastError = reason;
    this.advertised.clear();
    this.received.clear();
    this.view = undefined;
    if (wasEstablished) this.log.warn({ reason }, 'BGP session down');
    else this.log.debug({ reason }, 'BGP connection failed');
    this.setState(this.stopped ? 'Idle' : 'Active');
    this.emit('down', reason);
    if (this.stopped) return;
    const retry = this.options.connectRetryMs ?? 5000;
    // A passive session waits in Active for the peer's next connection.
    if (!this.passive) this.timers.connectRetry = setTimeout(() => this.connect(), retry * (0.75 + Math.random() * 0.25));
  }
}

function fsmError(subcode: number, type: string, state: string): BgpNotificationError {
  return new BgpNotificationError(ErrorCode.FSM, subcode, `unexpected ${type.toUpperCase()} in ${state}`);
}

function sameRoute(a: Route | undefined, b: Route): boolean {
  return (
    a !== undefined &&
    a.localPreference === b.localPreference &&
    a.med === b.med &&
    a.communities.length === b.communities.length &&
    a.communities.every((c, i) => c === b.communities[i])
  );
}
