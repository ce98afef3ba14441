import { Socket } from 'node:net';
import { getSystemErrorName } from 'node:util';
import { DEFAULT_TCP_IDLE_TIMEOUT_SECONDS } from '../../common/contract/mesh.js';
import type { Logger } from '../../common/log.js';
import { createForwarder, type ForwardOutcome, type NativeForwarder, type OriginalDestination } from '../native/index.js';

/** What the listener's owner decides for each accepted connection. */
export interface AcceptedConnection {
  readonly id: number;
  /** Undefined when the connection was not redirected (or the listener does not read it). */
  readonly destination: OriginalDestination | undefined;
  readonly peerAddress: string;
  readonly peerPort: number;
}

/** Follows one connection from its first connect() to its close. */
export interface ForwardedConnection {
  /** 0: connected, forwarding has started. Otherwise the errno; connect() again or reset(). */
  connected(errno: number): void;
  /** Bytes forwarded since the last report, while the connection is open. */
  bytes(fromClient: number, fromUpstream: number): void;
  closed(fromClient: number, fromUpstream: number, outcome: ForwardOutcome): void;
}

/** `ECONNREFUSED` for 111. */
export function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-errno);
  } catch {
    return `errno ${errno}`;
  }
}

/**
 * A listener whose TCP connections are forwarded by the native forwarder (native/forwarder.c):
 * the owner routes each accepted connection and then either connects it to an endpoint (the bytes
 * never reach JavaScript), hands its socket over to a JavaScript proxy (`socket()`), or resets it.
 */
export class ForwardingListener {
  private readonly native: NativeForwarder;
  private readonly open = new Map<number, ForwardedConnection>();
  private handedOver = 0;
  private destroyed = false;
  port = 0;

  constructor(
    private readonly onAccept: (connection: AcceptedConnection) => void,
    private readonly log: Logger,
    /** Until the mesh's `tcp.idleTimeoutSeconds` arrives (setIdleTimeout). */
    idleTimeoutMs = DEFAULT_TCP_IDLE_TIMEOUT_SECONDS * 1000,
  ) {
    this.native = createForwarder({
      accept: (id, _tag, destinationAddress, destinationPort, peerAddress, peerPort) => {
        const destination: OriginalDestination | undefined =
          destinationAddress === null ? undefined : { address: destinationAddress, port: destinationPort, family: destinationAddress.includes(':') ? 6 : 4 };
        try {
          this.onAccept({ id, destination, peerAddress, peerPort });
        } catch (error) {
          this.log.error({ err: error }, 'routing an accepted connection failed; connection reset');
          this.resetQuietly(id);
        }
      },
      connected: (id, errno) => {
        const connection = this.open.get(id);
        // Nobody follows it (a bug): a failed connect would leave it waiting forever.
        if (!connection && errno !== 0) this.resetQuietly(id);
        try {
          connection?.connected(errno);
        } catch (error) {
          this.log.error({ err: error }, 'handling a connect outcome failed; connection reset');
          if (errno !== 0) this.resetQuietly(id);
        }
      },
      closed: (id, fromClient, fromUpstream, outcome) => {
        const connection = this.open.get(id);
        this.open.delete(id);
        try {
          connection?.closed(fromClient, fromUpstream, outcome);
        } catch (error) {
          this.log.error({ err: error }, 'accounting for a closed connection failed');
        }
      },
    });
    this.native.setIdleTimeout(idleTimeoutMs);
  }

  /** Forwarded connections idle (no byte either way) this long are reset; 0: never. Open ones too. */
  setIdleTimeout(ms: number): void {
    if (!this.destroyed) this.native.setIdleTimeout(ms);
  }

  /** Listens (`::`: IPv4 and IPv6); `redirected: false` skips reading original destinations (tests). */
  listen(host: string, port: number, redirected = true): number {
    this.port = this.native.listen(0, host, port, redirected);
    return this.port;
  }

  /** Starts connecting `id` to address:port; 0, or the errno of a failure known at once. */
  connect(id: number, connection: ForwardedConnection, address: string, port: number, timeoutMs: number, source?: string): number {
    this.open.set(id, connection);
    return this.native.connect(id, address, port, timeoutMs, source);
  }

  /** The accepted connection as a net.Socket, for the HTTP proxies. */
  socket(id: number): Socket {
    // TCP_NODELAY is already set: the forwarder sets it on every accepted socket.
    const socket = new Socket({ fd: this.native.release(id), readable: true, writable: true, allowHalfOpen: true });
    this.handedOver++;
    socket.once('close', () => this.handedOver--);
    return socket;
  }

  reset(id: number): void {
    this.open.delete(id);
    this.native.reset(id);
  }

  private resetQuietly(id: number): void {
    try {
      this.reset(id);
    } catch {
      // Already handed over or closed.
    }
  }

  /** Reports the bytes of open connections (call before metrics are read). */
  reportBytes(): void {
    if (this.destroyed) return;
    const counts = this.native.takeBytes();
    for (let i = 0; i < counts.length; i += 3) this.open.get(counts[i]!)?.bytes(counts[i + 1]!, counts[i + 2]!);
  }

  /** Forwarded connections plus sockets handed over and not closed yet. */
  openConnections(): number {
    return this.destroyed ? 0 : this.native.openConnections() + this.handedOver;
  }

  stopAccepting(): void {
    if (!this.destroyed) this.native.stopListening();
  }

  /** Closes the listener and every forwarded connection (handed-over sockets are their proxy's). */
  close(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.native.destroy();
    this.open.clear();
  }
}
