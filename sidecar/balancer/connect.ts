import { connect as netConnect, type Socket } from 'node:net';
import { systemClock, type Clock } from './clock.js';
import type { EndpointPool, PickContext, PickedEndpoint } from './pool.js';

/**
 * The dial loop of the policy's `connect`: each attempt gets `timeoutMs`, a failed attempt is
 * reported as a connect failure (it feeds outlier detection) and the next one goes to an endpoint
 * not tried yet, up to `retries` more times. Generic over what is dialled, so the proxy can use it
 * for plain TCP (tcpDial) and for whatever it layers on top later (TLS).
 */
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

/**
 * On success the attempt stays begun: the caller owns it and must call `pool.end(target.key,
 * outcome)` when the connection or request is over.
 */
export async function dialWithRetries<T>(
  pool: EndpointPool,
  ctx: PickContext,
  dial: (target: PickedEndpoint, signal: AbortSignal) => Promise<T>,
  clock: Clock = systemClock,
): Promise<Dialed<T>> {
  const { timeoutMs, retries } = pool.connect;
  const tried = new Set<string>(ctx.exclude ?? []);
  const order: string[] = [];
  let lastError: unknown;
  for (let attempt = 1; attempt <= retries + 1; attempt++) {
    const target = pool.pick({ ...ctx, exclude: tried });
    if (!target) break;
    tried.add(target.key);
    order.push(target.key);
    pool.begin(target.key);
    const controller = new AbortController();
    const timer = clock.setTimer(
      () => controller.abort(new ConnectTimeoutError(`no connection to ${target.address}:${target.port} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    try {
      const value = await dial(target, controller.signal);
      timer.cancel();
      return { value, target, attempts: attempt };
    } catch (error) {
      timer.cancel();
      pool.end(target.key, 'connect-failure');
      lastError = controller.signal.aborted ? controller.signal.reason : error;
    }
  }
  const service = pool.service || 'the service';
  throw new ConnectError(
    order.length === 0 ? `no endpoint of ${service} may be chosen` : `could not connect to ${service} after ${order.length} attempt(s): ${order.join(', ')}`,
    order.length,
    order,
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
