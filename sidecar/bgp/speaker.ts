// The announcer: one BgpSession per peer, and the set of routes every peer should have. Announcing
// or withdrawing a VIP changes that set and each established session sends the difference at once
// (an UPDATE; the sessions stay up). Sessions that are down get the whole set when they come up.
// A new peer list (reconfigure) touches only the peers whose settings changed: a router whose
// session is kept sees no withdraw, no re-announce and no reset when another peer is added,
// removed or edited.
import { EventEmitter, once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { formatAddress, listenError } from '../../common/errors.js';
import { BgpSession, type SessionOptions, type SessionStatus } from './session.js';
import type { Route } from './routes.js';
import { Afi, parseCommunity, parsePrefix, prefixText, type AddressFamily } from './wire/index.js';

export interface PeerOptions {
  address: string;
  remoteAs: number;
  port?: number;
  localAddress?: string;
  nextHop?: { ipv4?: string; ipv6?: string };
  families?: AddressFamily[];
  /** Wait for the peer to connect (to `listen`) instead of connecting. */
  passive?: boolean;
}

export interface SpeakerOptions {
  localAs: number;
  routerId: string;
  holdTimeSeconds: number;
  connectRetryMs?: number;
  /** Where passive peers connect to; the listener runs only when some peer is passive. */
  listen?: { address?: string; port: number };
  peers: PeerOptions[];
  log: Logger;
}

export interface RouteOptions {
  /** ASN:VALUE. */
  communities?: readonly string[];
  localPreference?: number;
  med?: number;
}

export interface SpeakerStatus {
  localAs: number;
  routerId: string;
  peers: SessionStatus[];
  /** The prefixes announced (to every peer that can take them). */
  routes: string[];
}

/** Events: 'session' (session: BgpSession), for each session made, at start and by reconfigure(). */
export class BgpSpeaker extends EventEmitter {
  private sessions: { settings: string; session: BgpSession }[] = [];
  private readonly routes = new Map<string, Route>();
  private publishQueued = false;
  private listener: Server | undefined;
  /** The listen settings the running listener was opened with. */
  private listening: string | undefined;

  constructor(private options: SpeakerOptions) {
    super();
    this.replaceSessions(options);
  }

  /** Starts every session, and the listener for passive peers (refused with the address and how to move it). */
  async start(): Promise<void> {
    for (const { session } of this.sessions) session.start();
    await this.listenFor(this.options);
  }

  /**
   * Makes the running sessions match `options`: a peer whose session settings (its own, and the
   * speaker's AS, router id, hold and connect-retry times, which every OPEN carries) are unchanged
   * keeps its session as it is; a removed or changed one is closed with Cease, and an added or
   * changed one starts with the routes every peer has now. A listener that cannot open throws
   * before any session is touched.
   */
  async reconfigure(options: SpeakerOptions): Promise<{ kept: string[]; started: string[]; stopped: string[] }> {
    await this.listenFor(options);
    const changes = this.replaceSessions(options);
    for (const { session } of this.sessions) session.start();
    return changes;
  }

  private replaceSessions(options: SpeakerOptions): { kept: string[]; started: string[]; stopped: string[] } {
    this.options = options;
    const previous = new Map(this.sessions.map((entry) => [entry.settings, entry]));
    const kept: string[] = [];
    const started: string[] = [];
    this.sessions = options.peers.map((peer) => {
      const sessionOptions = this.sessionOptions(peer);
      const settings = JSON.stringify(sessionOptions);
      const existing = previous.get(settings);
      if (existing) {
        previous.delete(settings);
        kept.push(existing.session.status().peer);
        return existing;
      }
      const session = new BgpSession({ ...sessionOptions, log: options.log });
      session.setRoutes(new Map(this.routes));
      this.emit('session', session);
      started.push(session.status().peer);
      return { settings, session };
    });
    const stopped = [...previous.values()].map(({ session }) => {
      session.stop('the peer was removed or changed in the configuration');
      return session.status().peer;
    });
    return { kept, started, stopped };
  }

  private sessionOptions(peer: PeerOptions): Omit<SessionOptions, 'log'> {
    const { options } = this;
    return {
      localAs: options.localAs,
      routerId: options.routerId,
      holdTimeSeconds: options.holdTimeSeconds,
      peerAddress: peer.address,
      peerPort: peer.port ?? 179,
      remoteAs: peer.remoteAs,
      ...(peer.localAddress ? { localAddress: peer.localAddress } : {}),
      nextHops: { ...(peer.nextHop?.ipv4 ? { [Afi.IPV4]: peer.nextHop.ipv4 } : {}), ...(peer.nextHop?.ipv6 ? { [Afi.IPV6]: peer.nextHop.ipv6 } : {}) },
      ...(peer.families ? { families: peer.families } : {}),
      ...(options.connectRetryMs !== undefined ? { connectRetryMs: options.connectRetryMs } : {}),
      ...(peer.passive ? { passive: true } : {}),
    };
  }

  /**
   * Opens, moves or closes the listener for `options`' passive peers. Connections already accepted
   * are the sessions', not the listener's: closing it leaves them up. Moved to another address on
   * the same port, the old listener may hold that port (`::` covers every address): it closes
   * first then, and opens again if the new one cannot.
   */
  private async listenFor(options: SpeakerOptions): Promise<void> {
    const wanted = options.peers.some((peer) => peer.passive) ? { address: options.listen?.address ?? '::', port: options.listen?.port ?? 179 } : undefined;
    const settings = wanted ? JSON.stringify(wanted) : undefined;
    if (settings === this.listening) return;
    const running =
      this.listener && this.listening ? { server: this.listener, where: JSON.parse(this.listening) as { address: string; port: number } } : undefined;
    // The port bound, not the one asked for: 0 there means the kernel chose it.
    const samePort = wanted !== undefined && running !== undefined && wanted.port !== 0 && this.listenPort === wanted.port;
    if (samePort) running.server.close();
    try {
      const server = wanted ? await this.openListener(wanted) : undefined;
      if (!samePort) running?.server.close();
      this.listener = server;
      this.listening = settings;
    } catch (error) {
      if (samePort) this.listener = await this.openListener({ address: running.where.address, port: wanted.port }).catch(() => undefined);
      if (samePort && !this.listener) this.listening = undefined;
      throw error;
    }
  }

  private async openListener(where: { address: string; port: number }): Promise<Server> {
    const server = createServer((socket) => this.incoming(socket));
    server.listen({ host: where.address, port: where.port });
    try {
      await once(server, 'listening');
      return server;
    } catch (error) {
      throw listenError(error, {
        what: 'the BGP listener for passive peers',
        address: formatAddress(where.address, where.port),
        flag: 'listenAddress/listenPort in the configuration',
      });
    }
  }

  /** The port passive peers connect to (the one asked for, or the one the kernel chose for 0). */
  get listenPort(): number | undefined {
    const address = this.listener?.address();
    return typeof address === 'object' && address ? address.port : undefined;
  }

  private incoming(socket: Socket): void {
    const remote = socket.remoteAddress ?? '';
    // A dual-stack listener shows an IPv4 peer as ::ffff:a.b.c.d.
    const address = remote.startsWith('::ffff:') && remote.includes('.') ? remote.slice(7) : remote;
    const session = this.sessions.find(({ session: s }) => s.passive && s.peerAddress === address)?.session;
    if (!session) {
      this.options.log.warn({ from: remote }, 'BGP connection from an address that is no passive peer: closed');
      socket.on('error', () => undefined);
      socket.destroy();
      return;
    }
    session.accept(socket);
  }

  /** Announces `prefix` (a VIP: an address, or a prefix) to every peer, or changes its attributes. */
  announce(prefix: string, options: RouteOptions = {}): void {
    const parsed = parsePrefix(prefix);
    const route: Route = {
      prefix: parsed,
      communities: (options.communities ?? []).map(parseCommunity),
      ...(options.localPreference !== undefined ? { localPreference: options.localPreference } : {}),
      ...(options.med !== undefined ? { med: options.med } : {}),
    };
    this.routes.set(prefixText(parsed), route);
    this.publish();
  }

  withdraw(prefix: string): void {
    if (this.routes.delete(prefixText(parsePrefix(prefix)))) this.publish();
  }

  announced(prefix: string): boolean {
    return this.routes.has(prefixText(parsePrefix(prefix)));
  }

  /**
   * Changes made in one turn of the event loop go out together: a thousand withdraw() calls make
   * one diff and as few UPDATEs as fit, not a thousand of each.
   */
  private publish(): void {
    if (this.publishQueued) return;
    this.publishQueued = true;
    queueMicrotask(() => {
      this.publishQueued = false;
      const snapshot = new Map(this.routes);
      for (const { session } of this.sessions) session.setRoutes(snapshot);
    });
  }

  status(): SpeakerStatus {
    const { localAs, routerId } = this.options;
    return { localAs, routerId, peers: this.sessions.map(({ session }) => session.status()), routes: [...this.routes.keys()] };
  }

  /** The sessions, for tests and for waiting on them. */
  get peers(): readonly BgpSession[] {
    return this.sessions.map(({ session }) => session);
  }

  /** Ends every session with Cease / Administrative Shutdown (the routers drop our routes at once). */
  stop(message = 'shutting down'): void {
    for (const { session } of this.sessions) session.stop(message);
    this.listener?.close();
    this.listener = undefined;
    this.listening = undefined;
  }
}
