import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';

export interface OriginalDestination {
  address: string;
  port: number;
  family: 4 | 6;
}

/** How a forwarded connection ended. */
export const ForwardOutcome = {
  Clean: 0,
  /** The endpoint reset the connection (or a write to it failed): outlier detection counts it. */
  UpstreamFailed: 1,
  /** The client reset it. */
  ClientFailed: 2,
  /** No byte moved either way for the idle timeout: both sides were reset. Nobody's failure. */
  IdleTimeout: 3,
  /** The forwarder could not go on (a socket could not be watched): both sides were reset. Nobody's failure. */
  LocalFailure: 4,
} as const;
export type ForwardOutcome = (typeof ForwardOutcome)[keyof typeof ForwardOutcome];

/** What the forwarder calls; each call is made from the event loop, never re-entrantly. */
export interface ForwarderCallbacks {
  /** A connection was accepted; the callee owns `id` until it calls connect+onClose, release or reset. */
  accept(id: number, tag: number, destinationAddress: string | null, destinationPort: number, peerAddress: string, peerPort: number): void;
  /** A connect() ended: 0, forwarding has started; an errno, the connection waits for another connect() or a reset(). */
  connected(id: number, errno: number): void;
  /** A forwarding connection ended; the bytes are those not yet reported by takeBytes(). */
  closed(id: number, fromClient: number, fromUpstream: number, outcome: ForwardOutcome): void;
}

/**
 * The native L4 forwarder (forwarder.c): accept, original destination, connect and the byte
 * copying. Every method but destroy() throws ERR_FORWARDER_DESTROYED after destroy(); numbers
 * that are not what they must be (a port that is not an integer 0-65535, a timeout that is
 * negative or not finite, an id that cannot be one) throw a TypeError.
 */
export interface NativeForwarder {
  /**
   * Listens on host:port (`::`: 0.0.0.0 and [::] on two sockets); returns the port. With
   * `redirected` false the original destination is not read (accept gets null), for tests.
   */
  listen(tag: number, host: string, port: number, redirected?: boolean): number;
  stopListening(): void;
  /** Starts connecting; 0, or the errno of a failure known at once. Timeouts above 7 days are capped. */
  connect(id: number, address: string, port: number, timeoutMs: number, source?: string): number;
  /** Hands the accepted socket over (its fd), for a net.Socket. */
  release(id: number): number;
  /** Refuses the accepted connection with a reset (before or between connect attempts). */
  reset(id: number): void;
  /**
   * Forwarding connections that move no byte either way for this long are reset on both sides
   * (closed with IdleTimeout), found by a sweep every eighth of it (at most a minute apart); 0,
   * the default, turns it off. Applies to open connections too.
   */
  setIdleTimeout(ms: number): void;
  /** [id, fromClient, fromUpstream, ...] forwarded since the last call, for open connections. */
  takeBytes(): number[];
  openConnections(): number;
  destroy(): void;
}

interface Addon {
  originalDestination(fd: number): OriginalDestination;
  createForwarder(accept: ForwarderCallbacks['accept'], connected: ForwarderCallbacks['connected'], closed: ForwarderCallbacks['closed']): NativeForwarder;
}

const ADDON = 'flb-sidecar.node';

/**
 * Where scripts/setup.sh builds the addon, seen from the sources (sidecar/native), the build
 * (dist/sidecar/native) and the sidecar bundle (dist/sidecar.bundle.mjs). FLB_NATIVE_BUILD=asan
 * loads the AddressSanitizer and UBSan build (build/asan/) that scripts/test.sh runs the
 * forwarder's tests against; it loads only with libasan preloaded.
 */
function addonPath(): string {
  const build = process.env.FLB_NATIVE_BUILD ? `build/${process.env.FLB_NATIVE_BUILD}` : 'build';
  for (const candidate of [`./${build}/${ADDON}`, `../../../sidecar/native/${build}/${ADDON}`, `../sidecar/native/${build}/${ADDON}`]) {
    const path = fileURLToPath(new URL(candidate, import.meta.url));
    if (existsSync(path)) return path;
  }
  throw new Error(`the sidecar's native addon is not built in sidecar/native/${build}: run 'npm run setup' (it compiles sidecar/native/*.c with gcc)`);
}

let addon: Addon | undefined;
const load = (): Addon => (addon ??= createRequire(import.meta.url)(addonPath()) as Addon);

/** The destination a redirected connection was meant for (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST). */
export function originalDestination(socket: Socket): OriginalDestination {
  // net.Socket exposes no public fd; its libuv handle has it.
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) throw new Error('the socket has no file descriptor (closed, or not a TCP socket)');
  return load().originalDestination(fd);
}

export function createForwarder(callbacks: ForwarderCallbacks): NativeForwarder {
  return load().createForwarder(callbacks.accept, callbacks.connected, callbacks.closed);
}
