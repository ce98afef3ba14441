import { afterEach, describe, expect, it } from '@jest/globals';
import { once } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Server } from 'node:net';
import { HealthGate, probe, type HealthCheck } from './health.js';

const servers: Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await new Promise((r) => server.close(r));
});

async function listen(server: Server): Promise<number> {
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as { port: number }).port;
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

const check = (over: Partial<HealthCheck>): HealthCheck => ({
  protocol: 'tcp',
  address: '127.0.0.1',
  port: 1,
  intervalMs: 50,
  timeoutMs: 500,
  healthyThreshold: 2,
  unhealthyThreshold: 3,
  ...over,
});

describe('a local health check', () => {
  it('tcp: a connection accepted is healthy, a refused one is not', async () => {
    const port = await listen(createServer((s) => s.destroy()));
    expect(await probe(check({ port }))).toEqual({ ok: true, detail: 'connected' });
    expect(await probe(check({ port: await closedPort() }))).toEqual({ ok: false, detail: 'ECONNREFUSED' });
  });

  it('tcp: closes without a reset, so an app that greets on connect sees no error', async () => {
    const errors: string[] = [];
    let closed = 0;
    const port = await listen(
      createServer((s) => {
        s.on('error', (error: NodeJS.ErrnoException) => errors.push(error.code ?? error.message));
        s.on('close', () => closed++);
        s.end('hello\n');
      }),
    );
    for (let i = 0; i < 5; i++) expect((await probe(check({ port }))).ok).toBe(true);
    while (closed < 5) await new Promise((r) => setTimeout(r, 10));
    expect(errors).toEqual([]);
  });

  it('http: any 2xx or 3xx by default, exactly expectedStatus when set; a hung server times out', async () => {
    let status = 204;
    const port = await listen(createHttpServer((req, res) => (req.url === '/hang' ? undefined : res.writeHead(status).end())) as unknown as Server);
    expect(await probe(check({ protocol: 'http', port, path: '/health' }))).toEqual({ ok: true, detail: 'HTTP 204' });
    status = 503;
    expect(await probe(check({ protocol: 'http', port }))).toEqual({ ok: false, detail: 'HTTP 503' });
    status = 302;
    expect((await probe(check({ protocol: 'http', port }))).ok).toBe(true);
    expect(await probe(check({ protocol: 'http', port, expectedStatus: 200 }))).toEqual({ ok: false, detail: 'HTTP 302' });
    const started = Date.now();
    expect(await probe(check({ protocol: 'http', port, path: '/hang', timeoutMs: 200 }))).toEqual({ ok: false, detail: 'timed out after 200 ms' });
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('becomes healthy after healthyThreshold passes in a row and unhealthy after unhealthyThreshold failures', async () => {
    const app = createServer((s) => s.destroy());
    const port = await listen(app);
    const gate = new HealthGate(check({ port }));
    const changes: [boolean, number][] = [];
    const started = Date.now();
    gate.on('change', (healthy: boolean) => changes.push([healthy, Date.now() - started]));
    gate.start();
    expect(gate.healthy).toBe(false);
    while (changes.length < 1) await new Promise((r) => setTimeout(r, 10));
    // the second check, one interval after the first
    expect(changes[0]![1]).toBeGreaterThanOrEqual(45);
    servers.splice(servers.indexOf(app), 1);
    await new Promise((r) => app.close(r));
    const down = Date.now();
    while (changes.length < 2) await new Promise((r) => setTimeout(r, 10));
    gate.stop();
    expect(changes.map(([healthy]) => healthy)).toEqual([true, false]);
    // three failures: three intervals (150 ms) after the app went, with room for a busy machine
    expect(Date.now() - down).toBeLessThan(500);
    expect(gate.status()).toMatchObject({ healthy: false, streak: 3, lastResult: { ok: false, detail: 'ECONNREFUSED' } });
  });
});
