// The probe ports' preStop path, /drain/bgp: what the kubelet sees when it calls the hook the
// injector writes (the answer's status and text, and when it comes), and FLB_APP_PRESTOP read
// without trusting it.
import { afterEach, describe, expect, it } from '@jest/globals';
import { once } from 'node:events';
import { createServer, request, type Server } from 'node:http';
import { pino } from 'pino';
import type { Readiness } from './admin.js';
import type { AppPreStop } from '../common/contract/index.js';
import { parseAppPreStops, startProbeServers } from './probes.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function recordingLog() {
  const lines: { level: number; msg: string; [key: string]: unknown }[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[number]) });
  return { log, lines };
}

async function probeServer(drainBgp: () => Promise<string>, appPreStops: ReadonlyMap<string, AppPreStop> = new Map()): Promise<string> {
  const [server] = await startProbeServers({
    ports: [0],
    host: '127.0.0.1',
    probes: () => new Map(),
    appHost: '127.0.0.1',
    readiness: (): Readiness => ({ ready: true, reason: 'ready' }),
    log: pino({ level: 'silent' }),
    drainBgp,
    appPreStops,
  });
  cleanups.push(() => new Promise((r) => server!.close(r)));
  return `http://127.0.0.1:${(server!.address() as { port: number }).port}`;
}

async function appHookServer(status: number): Promise<{ port: number; calls: number[] }> {
  const calls: number[] = [];
  const server: Server = createServer((_req, res) => {
    calls.push(Date.now());
    res.writeHead(status).end();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(() => new Promise((r) => server.close(r)));
  return { port: (server.address() as { port: number }).port, calls };
}

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const drainTaking =
  (ms: number, what = 'withdrawn after a 0 s drain: 198.51.100.10/32') =>
  () =>
    new Promise<string>((r) => setTimeout(() => r(what), ms));

describe('/drain/bgp, the preStop hook', () => {
  it('answers 200 only once the drain is done, saying what it withdrew', async () => {
    const url = await probeServer(drainTaking(300));
    const started = Date.now();
    const answer = await get(`${url}/drain/bgp`);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(answer).toEqual({ status: 200, body: 'withdrawn after a 0 s drain: 198.51.100.10/32\n' });
  });

  it("runs the container's own httpGet hook after the drain, and answers 500 with its status when it fails", async () => {
    const hook = await appHookServer(503);
    const url = await probeServer(drainTaking(200), new Map([['web', { type: 'http', port: hook.port, path: '/stop', scheme: 'HTTP', headers: [] }]]));
    const started = Date.now();
    const answer = await get(`${url}/drain/bgp?container=web`);
    expect(answer.status).toBe(500);
    expect(answer.body).toBe(`withdrawn after a 0 s drain: 198.51.100.10/32; the app's own preStop: http 127.0.0.1:${hook.port}/stop: 503\n`);
    expect(hook.calls).toHaveLength(1);
    expect(hook.calls[0]! - started).toBeGreaterThanOrEqual(190);
  });

  it("sleeps a container's own sleep hook after the drain; another container's name runs nothing more", async () => {
    const url = await probeServer(drainTaking(0), new Map([['web', { type: 'sleep', seconds: 1 }]]));
    let started = Date.now();
    expect(await get(`${url}/drain/bgp?container=web`)).toEqual({
      status: 200,
      body: "withdrawn after a 0 s drain: 198.51.100.10/32; the app's own preStop: slept 1 s\n",
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(990);
    started = Date.now();
    expect((await get(`${url}/drain/bgp?container=worker`)).status).toBe(200);
    expect(Date.now() - started).toBeLessThan(500);
  });

  it('answers 500 with the reason when the drain fails, and the server keeps answering', async () => {
    const url = await probeServer(() => Promise.reject(new Error('the announcer is gone')));
    expect(await get(`${url}/drain/bgp`)).toEqual({ status: 500, body: 'BGP drain failed: Error: the announcer is gone\n' });
    expect((await get(`${url}/ready`)).status).toBe(200);
  });
});

describe('FLB_APP_PRESTOP', () => {
  it('keeps the valid hooks with their defaults and names each dropped one in the log', () => {
    const { log, lines } = recordingLog();
    const hooks = parseAppPreStops(
      JSON.stringify({ web: { type: 'http', port: 8080 }, nap: { type: 'sleep', seconds: 3 }, bad: { type: 'http', port: 70000 }, odd: { type: 'exec' } }),
      log,
    );
    expect([...hooks]).toEqual([
      ['web', { type: 'http', port: 8080, path: '/', scheme: 'HTTP', headers: [] }],
      ['nap', { type: 'sleep', seconds: 3 }],
    ]);
    expect(lines.filter((l) => l.level === 50).map((l) => l.container)).toEqual(['bad', 'odd']);
  });

  it('runs no app hook when it is not a JSON object, and says so', () => {
    for (const value of ['{not json', '"web"', '[1]', 'null']) {
      const { log, lines } = recordingLog();
      expect(parseAppPreStops(value, log).size).toBe(0);
      expect(lines.map((l) => l.msg)).toEqual([
        expect.stringMatching(/^FLB_APP_PRESTOP is not (JSON|a JSON object); the app containers' own preStop hooks will not run/),
      ]);
    }
  });
});
