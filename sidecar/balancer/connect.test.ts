import { afterEach, describe, expect, it } from '@jest/globals';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { ConnectError, ConnectTimeoutError, dialWithRetries, tcpDial } from './connect.js';
import { EndpointPool } from './pool.js';
import { makeService } from './testing/fixtures.js';

const listen = async (server: Server): Promise<number> => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return (server.address() as AddressInfo).port;
};
const close = (server: Server) => new Promise<void>((resolve) => server.close(() => resolve()));
const deadPort = async () => {
  const server = createServer();
  const port = await listen(server);
  await close(server);
  return port;
};

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function poolOf(ports: number[], policy: Record<string, unknown> = {}) {
  // random() = 0: round robin starts at the first endpoint, so the order of attempts is known.
  const pool = new EndpointPool({ activeHealthChecks: false, random: () => 0 });
  pool.update(
    makeService(
      ports.map((port) => ({ address: '127.0.0.1', port })),
      policy,
    ),
  );
  cleanups.push(() => pool.close());
  return pool;
}

describe('connect with retries on another endpoint', () => {
  it('moves on from a refused endpoint to one that accepts, and reports the failure', async () => {
    const server = createServer((socket) => socket.end());
    const live = await listen(server);
    cleanups.push(() => close(server));
    const dead = await deadPort();
    const pool = poolOf([dead, live], {
      outlierDetection: { consecutiveConnectFailures: 1, maxEjectionPercent: 50 },
    });
    const { value: socket, target, attempts } = await dialWithRetries(pool, {}, tcpDial);
    cleanups.push(() => socket.destroy());
    expect(attempts).toBe(2);
    expect(target.port).toBe(live);
    expect(socket.remotePort).toBe(live);
    expect(pool.counters()).toMatchObject({ inFlight: 1, ejected: 1, ejectionsTotal: 1 });
    // The caller ends what it began.
    pool.end(target.key, 'success');
    expect(pool.counters().inFlight).toBe(0);
    // The refused endpoint is ejected now: the next dial goes straight to the live one.
    const again = await dialWithRetries(pool, {}, tcpDial);
    again.value.destroy();
    expect(again.attempts).toBe(1);
  });

  it('gives each attempt the connect timeout', async () => {
    const pool = poolOf([1001, 1002, 1003], { connect: { timeoutMs: 20, retries: 1 } });
    const tried: number[] = [];
    const hang = (target: { port: number }, signal: AbortSignal) =>
      new Promise<Socket>((_, reject) => {
        tried.push(target.port);
        signal.addEventListener('abort', () => reject(signal.reason));
      });
    const error = await dialWithRetries(pool, {}, hang).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).attempts).toBe(2);
    expect((error as ConnectError).cause).toBeInstanceOf(ConnectTimeoutError);
    expect(tried).toEqual([1001, 1002]);
    expect(pool.counters().inFlight).toBe(0);
  });

  it('fails after retries + 1 attempts: every endpoint once first, then tried ones again after a backoff; says which were tried', async () => {
    const dead = [await deadPort(), await deadPort()];
    const pool = poolOf(dead, { connect: { timeoutMs: 1000, retries: 3 } });
    const started = Date.now();
    const error = (await dialWithRetries(pool, {}, tcpDial).catch((e: unknown) => e)) as ConnectError;
    expect(error).toBeInstanceOf(ConnectError);
    expect(error.tried.slice(0, 2)).toEqual(dead.map((p) => `127.0.0.1|${p}`));
    expect(error.tried).toHaveLength(4);
    expect(error.message).toMatch(/after 4 attempt/);
    expect((error.cause as NodeJS.ErrnoException).code).toBe('ECONNREFUSED');
    // Two backoffs (12.5-25 ms, then 25-50 ms) before the two attempts on endpoints already tried.
    expect(Date.now() - started).toBeGreaterThanOrEqual(36);
  });

  it('says so when there is no endpoint to try', async () => {
    const pool = poolOf([]);
    await expect(dialWithRetries(pool, {}, tcpDial)).rejects.toThrow('no endpoint of orders.shop may be chosen');
  });
});
