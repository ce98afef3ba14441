/*
 * The admin port's /ready as a waiter (flb-init, the postStart hook) uses it: `?wait=` holds the
 * answer until the sidecar is ready, so the pod goes on the moment it is, while plain /ready (the
 * kubelet's view) answers at once.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { createLogger } from '../common/log.js';
import { waitUntilReady } from '../common/sidecar-ready.js';
import { NO_ACCESS_LOG } from './access-log.js';
import { startAdmin, type Readiness } from './admin.js';

let readiness: Readiness;
let questions = 0;
const servers: Server[] = [];

async function admin(): Promise<number> {
  questions = 0;
  const server = await startAdmin({
    host: '127.0.0.1',
    port: 0,
    readiness: () => readiness,
    configDump: () => ({}),
    endpoints: () => [],
    registry: new Registry(),
    log: createLogger('admin-test', 'silent'),
    accessLog: NO_ACCESS_LOG,
  });
  server.on('request', () => questions++);
  servers.push(server);
  return (server.address() as AddressInfo).port;
}

async function get(port: number, path: string): Promise<{ status: number; body: string; ms: number }> {
  const asked = Date.now();
  const answer = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: answer.status, body: await answer.text(), ms: Date.now() - asked };
}

const becomeReadyIn = (ms: number): Promise<number> =>
  new Promise((resolve) =>
    setTimeout(() => {
      readiness = { ready: true, reason: 'ready' };
      resolve(Date.now());
    }, ms),
  );

afterEach(async () => {
  for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
});

describe('the admin port /ready', () => {
  it('answers at once without ?wait=, ready or not, as the probes expect', async () => {
    readiness = { ready: false, reason: 'waiting for the codebase from the repo' };
    const port = await admin();
    const readyLater = becomeReadyIn(2000);
    const answer = await get(port, '/ready');
    expect(answer.status).toBe(503);
    expect(answer.body).toBe('not ready: waiting for the codebase from the repo\n');
    await readyLater;
  });

  it('holds /ready?wait= until the sidecar is ready and answers within milliseconds of it', async () => {
    readiness = { ready: false, reason: 'starting: listeners not up yet' };
    const port = await admin();
    const [answer, readyAt] = await Promise.all([get(port, '/ready?wait=5s'), becomeReadyIn(300)]);
    expect(answer.status).toBe(200);
    expect(answer.body).toBe('ready\n');
    expect(answer.ms).toBeGreaterThanOrEqual(290);
    expect(Date.now() - readyAt).toBeLessThan(100);
  });

  it('answers a held /ready?wait= not ready, with the reason, once the time is up', async () => {
    readiness = { ready: false, reason: 'repo unreachable' };
    const port = await admin();
    const answer = await get(port, '/ready?wait=200ms');
    expect(answer.status).toBe(503);
    expect(answer.body).toBe('not ready: repo unreachable\n');
    expect(answer.ms).toBeGreaterThanOrEqual(190);
  });

  it('refuses a wait it cannot read or will not hold, saying how to ask', async () => {
    readiness = { ready: false, reason: 'starting' };
    const port = await admin();
    const bad = await get(port, '/ready?wait=soon');
    expect(bad.status).toBe(400);
    expect(bad.body).toContain('"soon" is not a duration');
    expect(bad.body).toContain('/ready?wait=5s');
    const long = await get(port, '/ready?wait=2m');
    expect(long.status).toBe(400);
    expect(long.body).toContain('longer than the 60 s');
  });

  it('lets the server close without waiting out a held request', async () => {
    readiness = { ready: false, reason: 'starting' };
    const port = await admin();
    const held = get(port, '/ready?wait=30s');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const server = servers.pop()!;
    const closed = new Promise((resolve) => server.close(resolve));
    const answer = await held;
    expect(answer.status).toBe(503);
    expect(answer.ms).toBeLessThan(5000);
    await closed;
  });
});

describe('waiting for the sidecar (flb-init, wait-ready)', () => {
  // Asked every 50 ms, a waiter learnt of the readiness up to 50 ms late, at one request per 50 ms.
  it('returns within milliseconds of the sidecar being ready, on one held question', async () => {
    readiness = { ready: false, reason: 'waiting for the codebase from the repo' };
    const port = await admin();
    const [, readyAt] = await Promise.all([waitUntilReady({ adminPort: port, timeoutMs: 10_000 }), becomeReadyIn(400)]);
    expect(Date.now() - readyAt).toBeLessThan(30);
    expect(questions).toBe(1);
  });
});
