/*
 * The dial loop of a connection the sidecar makes itself (an HTTP upgrade, later TLS): each
 * attempt gets the policy's `connect.timeoutMs`, and the attempt planner (attempts.ts) decides
 * where the next one goes and after how long. Generic over what is dialled, so the proxy can use it
 * for plain TCP (tcpDial) and for whatever it layers on top later.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { AttemptPlanner, GIVE_UP } from './attempts.js';
import type { EndpointPool, PickedEndpoint } from './pool.js';

export interface Dialed<T> {
  value: T;
  target: PickedEndpoint;
  /** 1 when the first endpoint answered. */
  attempts: number;
}

export class ConnectError extends Error {
  override readonly name = 'ConnectError';
  constructor(
    message: string,
    readonly attempts: number,
    readonly tried: readonly string[],
    override readonly cause?: unknown,
  ) {
    super(message);
  }
}

export class ConnectTimeoutError extends Error {
  override readonly name = 'ConnectTimeoutError';
}

/** Where the connection is going: the service port dialled and, for ring hash, the client's address. */
export interface DialContext {
  servicePort?: number;
  sourceIp?: string;
  /** The endpoint the app dialled itself (`directDial: keep`), tried first while it may be chosen. */
  kept?: string | undefined;
}

/**
 * On success the attempt stays begun: the caller owns it and must call `pool.end(target.key,
 * outcome)` when the connection or request is over. Timers run on the pool's clock.
 */
export async function dialWithRetries<T>(
  pool: EndpointPool,
  ctx: DialContext,
  dial: (target: PickedEndpoint, signal: AbortSignal) => Promise<T>,
): Promise<Dialed<T>> {
  const { timeoutMs } = pool.connect;
  const planner = new AttemptPlanner(pool, ctx.servicePort, ctx.sourceIp, undefined, false, ctx.kept);
  let lastError: unknown;
  for (;;) {
    const target = planner.next();
    if (!target) break;
    const controller = new AbortController();
    const timer = pool.clock.setTimer(
      () => controller.abort(new ConnectTimeoutError(`no connection to ${target.address}:${target.port} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    try {
      const value = await dial(target, controller.signal);
      timer.cancel();
      return { value, target, attempts: planner.attempts };
    } catch (error) {
      timer.cancel();
      lastError = controller.signal.aborted ? controller.signal.reason : error;
    }
    const delay = planner.retryAfterConnectFailure();
    if (delay === GIVE_UP) break;
    await planner.wait(delay);
  }
  const service = pool.service || 'the service';
  const tried = planner.tried();
  throw new ConnectError(
    tried.length === 0 ? `no endpoint of ${service} may be chosen` : `could not connect to ${service} after ${tried.length} attempt(s): ${tried.join(', ')}`,
    tried.length,
    tried,
    lastError,
  );
}

/** A TCP connection to the target, destroyed if the signal aborts before it is established. */
export function tcpDial(target: PickedEndpoint, signal: AbortSignal): Promise<Socket> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const socket = netConnect({ host: target.address, port: target.port });
    const onAbort = () => {
      socket.destroy();
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    const onError = (error: Error) => {
      signal.removeEventListener('abort', onAbort);
      reject(error);
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      signal.removeEventListener('abort', onAbort);
      // From here errors are the caller's to handle, on the socket it gets.
      socket.removeListener('error', onError);
      resolve(socket);
    });
  });
}
