/*
 * Each metric family a user graphs, scraped from the metrics port of the real sidecar (runSidecar,
 * every port chosen by the kernel) after real traffic over loopback: the outbound listener is told
 * where each connection was meant to go (no interception here; the e2e suite has the real
 * redirect), and the numbers must move as the traffic did, on `tcp`, `http` and `http2` ports.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, request, type Server as HttpServer } from 'node:http';
import { connect as http2Connect, createServer as createHttp2Server, type Http2Server } from 'node:http2';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { API_VERSION, type SidecarPorts } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { meshDoc, sidecarDoc } from './config/testing/fixtures.js';
import { runSidecar, type RunningSidecar } from './sidecar.js';

const ID = 'pod.shop.w';
const VIP = '240.240.0.9';
const SERVICE = 'echo.static';
const ANY_PORTS: SidecarPorts = { admin: 0, outbound: 0, inbound: 0, metrics: 0, dns: 0, livenessProbe: 0, readinessProbe: 0, startupProbe: 0 };
const outbound = { direction: 'outbound', service: SERVICE };

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const portOf = (server: Server | HttpServer | Http2Server) => (server.address() as { port: number }).port;
async function serve<T extends Server | HttpServer | Http2Server>(server: T): Promise<T> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => server.close());
  return server;
}
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = portOf(server);
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** The echo service on VIP: a `tcp` port 7, an `http` port 80 and an `http2` port 8443, each to its own endpoint port. */
function echoService(endpoints: { tcp?: number; http?: number; h2?: number }[], policy: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  return {
    apiVersion: API_VERSION,
    kind: 'Service',
    id: SERVICE,
    name: 'echo',
    source: 'static',
    vips: [{ address: VIP, allocation: 'mesh' }],
    ports: [
      { name: 'tcp', port: 7, protocol: 'tcp' },
      { name: 'web', port: 80, protocol: 'http' },
      { name: 'h2', port: 8443, protocol: 'http2' },
    ],
    endpoints: endpoints.map((e) => ({ address: '127.0.0.1', port: e.tcp ?? 1, ports: { web: e.http ?? 1, h2: e.h2 ?? 1 } })),
    policy,
    ...extra,
  };
}

interface Sidecar {
  running: RunningSidecar;
  dir: string;
  /** The VIP port the next outbound connection was "sent to". */
  target(port: number): void;
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  writeService(doc: unknown): void;
}

async function startSidecar(service: unknown): Promise<Sidecar> {
  const dir = mkdtempSync(join(tmpdir(), 'flb-sidecar-metrics-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'services'));
  writeFileSync(join(dir, 'mesh.json'), JSON.stringify(meshDoc()));
  writeFileSync(join(dir, 'sidecar.json'), JSON.stringify(sidecarDoc(ID)));
  const writeService = (doc: unknown) => writeFileSync(join(dir, 'services', `${SERVICE}.json`), JSON.stringify(doc));
  writeService(service);
  let nextPort = 0;
  const running = await runSidecar({
    id: ID,
    ports: ANY_PORTS,
    log: createLogger('metrics-test', 'silent'),
    appHost: '127.0.0.1',
    dnsUpstreams: ['127.0.0.1:9'],
    drainMs: 0,
    config: { kind: 'local', dir, watch: true },
    outboundDestination: () => ({ address: VIP, port: nextPort, family: 4 }),
  });
  cleanups.push(() => running.close());
  return {
    running,
    dir,
    target: (port) => (nextPort = port),
    metric: async (name, labels = {}) => valueOf(await scrape(running.ports.metrics), name, labels),
    writeService,
  };
}

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function scrape(port: number): Promise<string> {
  const answer = await get(port, '/metrics');
  expect(answer.status).toBe(200);
  return answer.body;
}

/** The value of the series `name` whose labels include `labels` (0 when there is none: a counter not moved yet). */
function valueOf(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) return Number(match[3]);
  }
  return 0;
}

async function until(what: string, check: () => Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Writes `request` on a raw connection and reads until `answers` answers have come back whole; the bytes each way. */
async function rawExchange(
  port: number,
  requests: string[],
  answerEnds: (text: string) => number,
): Promise<{ socket: Socket; sent: number; received: number }> {
  const socket = connect({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let text = '';
  let received = 0;
  socket.on('data', (d: Buffer) => {
    received += d.length;
    text += d.toString('latin1');
  });
  let sent = 0;
  for (const [i, message] of requests.entries()) {
    socket.write(message);
    sent += Buffer.byteLength(message);
    await until(`answer ${i + 1}`, () => Promise.resolve(answerEnds(text) >= i + 1));
  }
  return { socket, sent, received };
}

describe('the sidecar metrics', () => {
  it('tcp: connections, active connections, bytes each way (open connections included) and upstream connect time', async () => {
    const echo = await serve(createServer((socket) => socket.pipe(socket)));
    const sidecar = await startSidecar(echoService([{ tcp: portOf(echo) }]));
    sidecar.target(7);
    const { socket, sent, received } = await rawExchange(sidecar.running.ports.outbound, ['x'.repeat(1000), 'y'.repeat(500)], (t) =>
      t.length >= 1500 ? 2 : t.length >= 1000 ? 1 : 0,
    );
    expect([sent, received]).toEqual([1500, 1500]);
    expect(await sidecar.metric('flb_sidecar_connections_total', outbound)).toBe(1);
    expect(await sidecar.metric('flb_sidecar_active_connections', outbound)).toBe(1);
    expect(await sidecar.metric('flb_sidecar_bytes_total', { ...outbound, way: 'sent' })).toBe(1500);
    expect(await sidecar.metric('flb_sidecar_bytes_total', { ...outbound, way: 'received' })).toBe(1500);
    expect(await sidecar.metric('flb_sidecar_upstream_connect_seconds_count', outbound)).toBe(1);
    socket.end();
    await until('the connection to close', async () => (await sidecar.metric('flb_sidecar_active_connections', outbound)) === 0);
    expect(await sidecar.metric('flb_sidecar_bytes_total', { ...outbound, way: 'sent' })).toBe(1500);
  });

  it('http: bytes of the app connection each way, connect time for a new upstream connection only, requests by class, latency', async () => {
    const web = await serve(createHttpServer((req, res) => req.resume().on('end', () => res.writeHead(200, { 'content-type': 'text/plain' }).end('hello\n'))));
    const sidecar = await startSidecar(echoService([{ http: portOf(web) }]));
    sidecar.target(80);
    const body = 'z'.repeat(300);
    const message = `POST /x HTTP/1.1\r\nhost: echo\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
    const answers = (text: string) => text.split('hello\n').length - 1;
    // Two requests on one keep-alive connection: the second reuses the endpoint's connection.
    const { socket, sent, received } = await rawExchange(sidecar.running.ports.outbound, [message, message], answers);
    expect(await sidecar.metric('flb_sidecar_bytes_total', { ...outbound, way: 'sent' })).toBe(sent);
    expect(await sidecar.metric('flb_sidecar_bytes_total', { ...outbound, way: 'received' })).toBe(received);
    expect(await sidecar.metric('flb_sidecar_upstream_connect_seconds_count', outbound)).toBe(1);
    expect(await sidecar.metric('flb_sidecar_requests_total', { ...outbound, code: '2xx' })).toBe(2);
    expect(await sidecar.metric('flb_sidecar_request_duration_seconds_count', outbound)).toBe(2);
    expect(await sidecar.metric('flb_sidecar_connections_total', outbound)).toBe(1);
    socket.destroy();
  });

  it('http2: bytes of the app connection each way, connect time for a new session only, streams by class', async () => {
    const h2 = createHttp2Server();
    h2.on('stream', (stream) => {
      stream.resume();
      stream.on('end', () => {
        stream.respond({ ':status': 200 });
        stream.end('hello over h2\n');
      });
    });
    await serve(h2);
    const sidecar = await startSidecar(echoService([{ h2: portOf(h2) }]));
    sidecar.target(8443);
    const socket = connect({ host: '127.0.0.1', port: sidecar.running.ports.outbound });
    const client = http2Connect('http://echo', { createConnection: () => socket });
    for (let i = 0; i < 2; i++) {
      await new Promise<void>((resolve, reject) => {
        const stream = client.request({ ':method': 'POST', ':path': '/' });
        stream.on('error', reject).resume().on('end', resolve);
        stream.end('q'.repeat(200));
      });
    }
    await new Promise<void>((resolve) => client.close(resolve));
    await until('the connection to close', async () => (await sidecar.metric('flb_sidecar_bytes_total', { ...outbound, way: 'sent' })) === socket.bytesWritten);
    expect(await sidecar.metric('flb_sidecar_bytes_total', { ...outbound, way: 'received' })).toBe(socket.bytesRead);
    expect(socket.bytesWritten).toBeGreaterThan(400);
    expect(await sidecar.metric('flb_sidecar_upstream_connect_seconds_count', outbound)).toBe(1);
    expect(await sidecar.metric('flb_sidecar_requests_total', { ...outbound, code: '2xx' })).toBe(2);
  });

  it('counts a connection or request that could not connect to any endpoint, on tcp, http and http2 ports', async () => {
    const dead = await deadPort();
    const sidecar = await startSidecar(echoService([{ tcp: dead, http: dead, h2: dead }], { connect: { timeoutMs: 500, retries: 0 } }));
    const errors = () => sidecar.metric('flb_sidecar_connect_errors_total', outbound);
    sidecar.target(7);
    const reset = connect({ host: '127.0.0.1', port: sidecar.running.ports.outbound });
    await new Promise((resolve) => reset.on('error', resolve).on('close', resolve));
    expect(await errors()).toBe(1);
    sidecar.target(80);
    expect((await get(sidecar.running.ports.outbound, '/')).status).toBe(502);
    expect(await errors()).toBe(2);
    sidecar.target(8443);
    const client = http2Connect(`http://127.0.0.1:${sidecar.running.ports.outbound}`).on('error', () => {});
    const status = await new Promise<number>((resolve, reject) => {
      const stream = client.request({ ':path': '/' });
      stream.on('response', (h) => resolve(Number(h[':status']))).on('error', reject);
      stream.resume();
    });
    client.close();
    expect(status).toBe(502);
    expect(await errors()).toBe(3);
    expect(await sidecar.metric('flb_sidecar_requests_total', { ...outbound, code: '5xx' })).toBe(2);
  });

  it('retries, ejections and usable endpoints follow an endpoint answering 503', async () => {
    const answering = (status: number) => serve(createHttpServer((_req, res) => res.writeHead(status).end()));
    const bad = await answering(503);
    const good = await answering(200);
    const sidecar = await startSidecar(
      echoService(
        [
          { tcp: portOf(bad), http: portOf(bad) },
          { tcp: portOf(good), http: portOf(good) },
        ],
        {
          retries: { attempts: 2, on: ['gateway-error'], backoffBaseMs: 1, backoffMaxMs: 2 },
          outlierDetection: { consecutive5xx: 1, maxEjectionPercent: 50 },
        },
      ),
    );
    sidecar.target(80);
    expect(await sidecar.metric('flb_sidecar_endpoints_usable', { service: SERVICE })).toBe(2);
    for (let i = 0; i < 2; i++) expect((await get(sidecar.running.ports.outbound, '/')).status).toBe(200);
    expect(await sidecar.metric('flb_sidecar_request_retries_total', outbound)).toBe(1);
    expect(await sidecar.metric('flb_sidecar_ejections_total', { service: SERVICE })).toBe(1);
    expect(await sidecar.metric('flb_sidecar_endpoints_usable', { service: SERVICE })).toBe(1);
  });

  it('configuration: versions applied, and the files refused now (0 again once fixed)', async () => {
    const sidecar = await startSidecar(echoService([{ tcp: 9 }]));
    const updates = () => sidecar.metric('flb_sidecar_config_updates_total');
    const rejected = () => sidecar.metric('flb_sidecar_config_rejected_files');
    expect(await updates()).toBe(1);
    expect(await rejected()).toBe(0);
    sidecar.writeService({ ...echoService([{ tcp: 9 }]), ports: [] });
    await until('the refusal', async () => (await rejected()) === 1);
    expect(await updates()).toBe(1);
    sidecar.writeService(echoService([{ tcp: 10 }]));
    await until('the fixed file', async () => (await rejected()) === 0);
    expect(await updates()).toBe(2);
  });
});
