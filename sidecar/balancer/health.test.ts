import { afterEach, describe, expect, it } from '@jest/globals';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { ManualClock } from './clock.js';
import { ActiveHealthChecker, probeHttp, probeTcp, type HealthCheckConfig, type ProbeResult } from './health.js';
import { EndpointPool } from './pool.js';
import { makeService, tally } from './testing/fixtures.js';

const until = async (what: string, check: () => boolean, timeoutMs = 5000) => {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

const listen = async <T extends Server | HttpServer>(server: T, port = 0): Promise<number> => {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return (server.address() as AddressInfo).port;
};
const close = (server: Server | HttpServer) => new Promise<void>((resolve) => server.close(() => resolve()));

/** A port nothing listens on: connections to it are refused. */
const deadPort = async () => {
  const server = createServer();
  const port = await listen(server);
  await close(server);
  return port;
};

const tcpCheck = (over: Partial<HealthCheckConfig> = {}): HealthCheckConfig => ({
  protocol: 'tcp',
  expectedStatuses: [[200, 399]],
  intervalMs: 15,
  timeoutMs: 1000,
  healthyThreshold: 2,
  unhealthyThreshold: 3,
  ...over,
});

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function watch(random: () => number = () => 0, clock?: ManualClock) {
  const results: ProbeResult[] = [];
  const changes: { state: string; after: ProbeResult[] }[] = [];
  const checker = new ActiveHealthChecker({
    onChange: (_key, state) => changes.push({ state, after: [...results] }),
    onResult: (_key, result) => results.push(result),
    random,
    ...(clock && { clock }),
  });
  cleanups.push(() => checker.stop());
  return { checker, results, changes };
}

describe('active health checks against real servers', () => {
  it('TCP: healthy at the first success, unhealthy after unhealthyThreshold refusals, healthy again after healthyThreshold', async () => {
    const server = createServer((socket) => socket.destroy());
    const port = await listen(server);
    cleanups.push(() => server.listening && close(server));
    const { checker, changes } = watch();
    checker.update(tcpCheck(), [{ key: 'a', address: '127.0.0.1', port }]);

    await until('healthy', () => changes.length === 1);
    expect(changes[0]!.state).toBe('healthy');
    expect(changes[0]!.after).toHaveLength(1);
    expect(checker.state('a')).toBe('healthy');

    await close(server);
    await until('unhealthy', () => changes.length === 2);
    expect(changes[1]!.state).toBe('unhealthy');
    const down = changes[1]!.after;
    expect(down.slice(-3).map((r) => r.ok)).toEqual([false, false, false]);
    expect(down.at(-4)!.ok).toBe(true);
    expect(down.at(-1)!.reason).toBe('ECONNREFUSED');

    await listen(server, port);
    await until('healthy again', () => changes.length === 3);
    expect(changes[2]!.state).toBe('healthy');
    const up = changes[2]!.after;
    expect(up.slice(-3).map((r) => r.ok)).toEqual([false, true, true]);
  });

  it('HTTP: GETs the path on a fresh connection and judges the status by the expected ranges', async () => {
    let status = 200;
    const requests: IncomingMessage[] = [];
    const perConnection = new Map<unknown, number>();
    const server = createHttpServer((req, res) => {
      requests.push(req);
      perConnection.set(req.socket, (perConnection.get(req.socket) ?? 0) + 1);
      res.writeHead(status).end('ok');
    });
    const port = await listen(server);
    cleanups.push(() => close(server));
    const { checker, changes } = watch();
    checker.update(tcpCheck({ protocol: 'http', path: '/healthz', expectedStatuses: [[200, 299]] }), [{ key: 'a', address: '127.0.0.1', port }]);

    await until('healthy', () => changes.length === 1);
    status = 503;
    await until('unhealthy', () => changes.length === 2);
    expect(changes[1]!.state).toBe('unhealthy');
    expect(changes[1]!.after.slice(-3).map((r) => r.reason)).toEqual(['status 503', 'status 503', 'status 503']);
    status = 204;
    await until('healthy again', () => changes.length === 3);
    checker.stop();

    expect(new Set(requests.map((r) => `${r.method} ${r.url} ${r.headers.connection}`))).toEqual(new Set(['GET /healthz close']));
    // No connection is reused: a pooled one could hide an endpoint that stopped accepting.
    expect(Math.max(...perConnection.values())).toBe(1);
  });

  it('fails a check that gets no answer within the timeout, and one that is refused', async () => {
    const server = createHttpServer(() => {
      /* never answers */
    });
    const port = await listen(server);
    cleanups.push(() => {
      server.closeAllConnections();
      return close(server);
    });
    const started = Date.now();
    const slow = await probeHttp('127.0.0.1', port, '/', [[200, 399]], 50).result;
    expect(slow).toEqual({ ok: false, reason: 'no answer within 50 ms' });
    expect(Date.now() - started).toBeLessThan(1000);
    expect(await probeTcp('127.0.0.1', await deadPort(), 500).result).toEqual({ ok: false, reason: 'ECONNREFUSED' });
    expect(await probeTcp('127.0.0.1', port, 500).result).toEqual({ ok: true });
  });

  it('jitters the first check within the interval and stops cleanly', async () => {
    let connections = 0;
    const server = createServer((socket) => {
      connections++;
      socket.destroy();
    });
    const port = await listen(server);
    cleanups.push(() => close(server));
    const clock = new ManualClock();
    const { checker, results } = watch(() => 0.5, clock);
    checker.update(tcpCheck({ intervalMs: 1000 }), [{ key: 'a', address: '127.0.0.1', port }]);
    clock.advance(499);
    await new Promise((r) => setTimeout(r, 50));
    expect(connections).toBe(0);
    clock.advance(1);
    await until('the first check', () => results.length === 1);
    expect(connections).toBe(1);
    checker.stop();
    expect(clock.pending).toBe(0);
    clock.advance(10_000);
    await new Promise((r) => setTimeout(r, 50));
    expect(results).toHaveLength(1);
  });

  it('keeps the state of endpoints that remain when the endpoint set changes, and forgets the rest', async () => {
    const server = createServer((socket) => socket.destroy());
    const port = await listen(server);
    cleanups.push(() => close(server));
    const dead = await deadPort();
    const { checker, changes } = watch();
    checker.update(tcpCheck({ unhealthyThreshold: 1 }), [
      { key: 'live', address: '127.0.0.1', port },
      { key: 'dead', address: '127.0.0.1', port: dead },
    ]);
    await until('both checked', () => changes.length === 2);
    checker.update(tcpCheck({ unhealthyThreshold: 1 }), [{ key: 'dead', address: '127.0.0.1', port: dead }]);
    expect(checker.state('dead')).toBe('unhealthy');
    expect(checker.state('live')).toBe('unknown');
    checker.update(undefined, []);
    expect(checker.state('dead')).toBe('unknown');
  });

  it('drives the pool: an endpoint that fails its check is not chosen', async () => {
    const server = createServer((socket) => socket.destroy());
    const port = await listen(server);
    cleanups.push(() => close(server));
    const dead = await deadPort();
    const service = (weight: number) =>
      makeService(
        [
          { address: '127.0.0.1', port, weight },
          { address: '127.0.0.1', port: dead },
        ],
        { healthCheck: { protocol: 'tcp', intervalMs: 100, timeoutMs: 500, unhealthyThreshold: 1 } },
      );
    const pool = new EndpointPool();
    cleanups.push(() => pool.close());
    pool.update(service(1));
    await until('the dead endpoint is found out', () => pool.snapshot().endpoints[1]!.activeHealth === 'unhealthy');
    expect([...tally(50, () => pool.pick()?.key).keys()]).toEqual([`127.0.0.1|${port}`]);
    pool.update(service(2));
    expect(pool.snapshot().endpoints[1]!.activeHealth).toBe('unhealthy');
    expect(pool.counters().healthCheckFailuresTotal).toBeGreaterThanOrEqual(1);
  });
});
