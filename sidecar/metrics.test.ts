/*
 * Each metric family a user graphs, scraped from the metrics port of the real sidecar (runSidecar,
 * every port chosen by the kernel) after real traffic over loopback: the outbound listener is told
 * where each connection was meant to go (no interception here; the e2e suite has the real
 * redirect), and the numbers must move as the traffic did, on `tcp`, `http` and `http2` ports.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, request, type Server as HttpServer } from 'node:http';
import { connect as http2Connect, createServer as createHttp2Server, type ClientHttp2Session, type Http2Server } from 'node:http2';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { API_VERSION, type SidecarPorts } from '../common/contract/index.js';
import { createLogger, type Logger } from '../common/log.js';
import { meshDoc, sidecarDoc } from './config/testing/fixtures.js';
import { MAX_RESPONSE_SERIES, SidecarMetrics } from './metrics.js';
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

interface SidecarSetup {
  mesh?: Record<string, unknown>;
  sidecar?: Record<string, unknown>;
  /** Where inbound connections were meant to go (the app's address and port). */
  inboundTo?: () => { address: string; port: number };
  log?: Logger;
}

async function startSidecar(service: unknown, setup: SidecarSetup = {}): Promise<Sidecar> {
  const dir = mkdtempSync(join(tmpdir(), 'flb-sidecar-metrics-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'services'));
  writeFileSync(join(dir, 'mesh.json'), JSON.stringify(meshDoc(setup.mesh)));
  writeFileSync(join(dir, 'sidecar.json'), JSON.stringify(sidecarDoc(ID, setup.sidecar)));
  const writeService = (doc: unknown) => writeFileSync(join(dir, 'services', `${SERVICE}.json`), JSON.stringify(doc));
  writeService(service);
  let nextPort = 0;
  const running = await runSidecar({
    id: ID,
    ports: ANY_PORTS,
    log: setup.log ?? createLogger('metrics-test', 'silent'),
    workload: { workload: 'web', namespace: 'shop' },
    appHost: '127.0.0.1',
    dnsUpstreams: ['127.0.0.1:9'],
    drainMs: 0,
    config: { kind: 'local', dir, watch: true },
    outboundDestination: () => ({ address: VIP, port: nextPort, family: 4 }),
    ...(setup.inboundTo ? { inboundDestination: () => ({ ...setup.inboundTo!(), family: 4 as const }) } : {}),
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
    expect(await sidecar.metric('flb_sidecar_requests_total', { ...outbound, response_code: '200', request_protocol: 'http' })).toBe(2);
    expect(await sidecar.metric('flb_sidecar_request_duration_seconds_count', { ...outbound, response_code: '200' })).toBe(2);
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
    expect(await sidecar.metric('flb_sidecar_requests_total', { ...outbound, response_code: '200', request_protocol: 'http2' })).toBe(2);
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
    expect(await sidecar.metric('flb_sidecar_requests_total', { ...outbound, response_code: '502', request_protocol: 'http' })).toBe(1);
    expect(await sidecar.metric('flb_sidecar_requests_total', { ...outbound, response_code: '502', request_protocol: 'http2' })).toBe(1);
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

/** A gRPC-shaped call over `client`: the answer's HTTP status and its grpc-status (trailers, or the headers of a Trailers-Only answer). */
function grpcCall(client: ClientHttp2Session, path: string): Promise<{ status: number; grpcStatus: string | undefined }> {
  return new Promise((resolve, reject) => {
    const stream = client.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
    let status = 0;
    let grpcStatus: string | undefined;
    stream.on('response', (headers) => {
      status = Number(headers[':status']);
      if (headers['grpc-status'] !== undefined) grpcStatus = String(headers['grpc-status']);
    });
    stream.on('trailers', (trailers) => (grpcStatus = String(trailers['grpc-status'])));
    stream
      .on('error', reject)
      .resume()
      .on('end', () => resolve({ status, grpcStatus }));
    stream.end(Buffer.from([0, 0, 0, 0, 0]));
  });
}

/** An HTTP/2 server answering as a gRPC server would: /pkg.Svc/<Name> ends with the status its name says. */
function grpcServer(): Http2Server {
  const statuses: Record<string, string> = { Ok: '0', NotFound: '5' };
  const server = createHttp2Server();
  server.on('stream', (stream, headers) => {
    stream.resume();
    const method = String(headers[':path']).split('/').pop()!;
    stream.on('end', () => {
      if (method === 'Down') {
        // Trailers-Only: the status is in the only HEADERS frame.
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14' }, { endStream: true });
        return;
      }
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': statuses[method] ?? '12' }));
      stream.end(Buffer.from([0, 0, 0, 0, 0]));
    });
  });
  return server;
}

/** A logger whose JSON lines are kept, at `level`. */
function capturingLogger(level: string): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { log, lines };
}

function adminCall(port: number, method: string, path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: body ? (JSON.parse(body) as Record<string, unknown>) : {} }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The labels every outbound series of this sidecar carries: what Istio's and Linkerd's dashboards group by. */
const outboundPeers = {
  ...outbound,
  reporter: 'source',
  source_workload: 'web',
  source_workload_namespace: 'shop',
  destination_service: SERVICE,
  destination_service_name: 'echo',
};

describe('request metrics for dashboards', () => {
  it('http/1.1: every request by exact response code, to the end of its response, with the source workload and destination service', async () => {
    const web = await serve(
      createHttpServer((req, res) => {
        req.resume();
        if (req.url === '/missing') return void res.writeHead(404).end();
        if (req.url === '/slow') {
          res.writeHead(200).write('first part, ');
          return void setTimeout(() => res.end('then the rest\n'), 200);
        }
        res.writeHead(200).end('hello\n');
      }),
    );
    const sidecar = await startSidecar(echoService([{ http: portOf(web) }]));
    sidecar.target(80);
    for (const path of ['/', '/', '/missing', '/slow']) await get(sidecar.running.ports.outbound, path);
    const http = { ...outboundPeers, request_protocol: 'http', grpc_response_status: '' };
    expect(await sidecar.metric('flb_sidecar_requests_total', { ...http, response_code: '200' })).toBe(3);
    expect(await sidecar.metric('flb_sidecar_requests_total', { ...http, response_code: '404' })).toBe(1);
    expect(await sidecar.metric('flb_sidecar_request_duration_seconds_count', { ...http, response_code: '200' })).toBe(3);
    expect(await sidecar.metric('flb_sidecar_request_duration_seconds_bucket', { ...http, response_code: '200', le: '+Inf' })).toBe(3);
    // The slow answer's headers came at once, its end 200 ms later: the duration runs to the end.
    expect(await sidecar.metric('flb_sidecar_request_duration_seconds_sum', { ...http, response_code: '200' })).toBeGreaterThanOrEqual(0.19);
    expect(await sidecar.metric('flb_sidecar_request_duration_seconds_bucket', { ...http, response_code: '200', le: '0.1' })).toBe(2);
  });

  it('grpc: calls by grpc-status, from the trailers and from a Trailers-Only answer, on an http2 port', async () => {
    const server = await serve(grpcServer());
    const sidecar = await startSidecar(echoService([{ h2: portOf(server) }]));
    sidecar.target(8443);
    const client = http2Connect(`http://127.0.0.1:${sidecar.running.ports.outbound}`);
    cleanups.push(() => client.close());
    expect(await grpcCall(client, '/pkg.Svc/Ok')).toEqual({ status: 200, grpcStatus: '0' });
    expect(await grpcCall(client, '/pkg.Svc/Ok')).toEqual({ status: 200, grpcStatus: '0' });
    expect(await grpcCall(client, '/pkg.Svc/NotFound')).toEqual({ status: 200, grpcStatus: '5' });
    expect(await grpcCall(client, '/pkg.Svc/Down')).toEqual({ status: 200, grpcStatus: '14' });
    const grpc = { ...outboundPeers, request_protocol: 'grpc', response_code: '200' };
    expect(await sidecar.metric('flb_sidecar_requests_total', { ...grpc, grpc_response_status: '0' })).toBe(2);
    expect(await sidecar.metric('flb_sidecar_requests_total', { ...grpc, grpc_response_status: '5' })).toBe(1);
    expect(await sidecar.metric('flb_sidecar_requests_total', { ...grpc, grpc_response_status: '14' })).toBe(1);
    expect(await sidecar.metric('flb_sidecar_request_duration_seconds_count', { ...grpc, grpc_response_status: '5' })).toBe(1);
    // Not gRPC: an HTTP/2 request without the gRPC content type.
    await new Promise<void>((resolve, reject) => client.request({ ':path': '/plain' }).on('error', reject).resume().on('end', resolve));
    expect(await sidecar.metric('flb_sidecar_requests_total', { ...outboundPeers, request_protocol: 'http2', response_code: '200' })).toBe(1);
  });

  it("inbound: the app's http and grpc ports answer through the sidecar (from 127.0.0.6), which counts them as their destination", async () => {
    const peers: string[] = [];
    const app = await serve(
      createHttpServer((req, res) => {
        peers.push(req.socket.remoteAddress ?? '');
        req.resume().on('end', () => res.writeHead(201).end('made\n'));
      }),
    );
    const grpcApp = await serve(grpcServer());
    let appPort = portOf(app);
    const sidecar = await startSidecar(echoService([]), {
      mesh: { telemetry: { inboundRequestMetrics: true } },
      sidecar: {
        inbound: {
          ports: [
            { port: portOf(app), protocol: 'http', name: 'web' },
            { port: portOf(grpcApp), protocol: 'grpc', name: 'api' },
          ],
        },
      },
      inboundTo: () => ({ address: '127.0.0.1', port: appPort }),
    });
    const answer = await get(sidecar.running.ports.inbound, '/things');
    expect(answer).toEqual({ status: 201, body: 'made\n' });
    expect(peers).toEqual(['127.0.0.6']);
    const inbound = {
      direction: 'inbound',
      reporter: 'destination',
      destination_workload: 'web',
      destination_workload_namespace: 'shop',
      source_workload: 'unknown',
    };
    expect(await sidecar.metric('flb_sidecar_requests_total', { ...inbound, service: 'web', request_protocol: 'http', response_code: '201' })).toBe(1);
    expect(await sidecar.metric('flb_sidecar_connections_total', { ...inbound, service: 'web' })).toBe(1);
    appPort = portOf(grpcApp);
    const client = http2Connect(`http://127.0.0.1:${sidecar.running.ports.inbound}`);
    cleanups.push(() => client.close());
    expect(await grpcCall(client, '/pkg.Svc/NotFound')).toEqual({ status: 200, grpcStatus: '5' });
    expect(await sidecar.metric('flb_sidecar_requests_total', { ...inbound, service: 'api', request_protocol: 'grpc', grpc_response_status: '5' })).toBe(1);
  });

  it('inbound: unless telemetry.inboundRequestMetrics is on, an http port is forwarded natively (connections and bytes, no requests)', async () => {
    const app = await serve(createHttpServer((req, res) => req.resume().on('end', () => res.writeHead(200).end('ok\n'))));
    const sidecar = await startSidecar(echoService([]), {
      sidecar: { inbound: { ports: [{ port: portOf(app), protocol: 'http', name: 'web' }] } },
      inboundTo: () => ({ address: '127.0.0.1', port: portOf(app) }),
    });
    expect((await get(sidecar.running.ports.inbound, '/')).status).toBe(200);
    await until(
      'the connection to be counted',
      async () => (await sidecar.metric('flb_sidecar_connections_total', { direction: 'inbound', service: 'web' })) === 1,
    );
    expect(await scrape(sidecar.running.ports.metrics)).not.toMatch(/flb_sidecar_requests_total\{[^}]*direction="inbound"/);
  });

  it('keeps at most MAX_RESPONSE_SERIES response series per service; the rest, and codes that are not HTTP or gRPC ones, count as other', async () => {
    const metrics = new SidecarMetrics({ workload: 'web', namespace: 'shop' });
    const series = metrics.for('outbound', { id: 'orders.shop', name: 'orders', namespace: 'shop' });
    expect(series.response('http', 200, undefined)).toBe(series.response('http', 200, undefined));
    for (let code = 200; code < 300; code++) series.response('http', code, undefined).requests.inc();
    series.response('grpc', 200, '99').requests.inc();
    series.response('http', 700, undefined).requests.inc();
    const text = await metrics.registry.getSingleMetricAsString('flb_sidecar_requests_total');
    const lines = text.split('\n').filter((l) => l.startsWith('flb_sidecar_requests_total{'));
    expect(lines).toHaveLength(MAX_RESPONSE_SERIES + 1);
    expect(valueOf(text, 'flb_sidecar_requests_total', { response_code: 'other', grpc_response_status: 'other' })).toBe(100 - MAX_RESPONSE_SERIES + 2);
    expect(valueOf(text, 'flb_sidecar_requests_total', { response_code: '200', destination_service_namespace: 'shop', source_workload: 'web' })).toBe(1);
  });
});

describe('access logs and the log level', () => {
  it('writes one line per HTTP request and per tcp connection when mesh.json turns it on, whatever the log level; the admin port turns it off', async () => {
    const web = await serve(createHttpServer((req, res) => req.resume().on('end', () => res.writeHead(200, { 'content-type': 'text/plain' }).end('hello\n'))));
    const echo = await serve(createServer((socket) => socket.pipe(socket)));
    const { log, lines } = capturingLogger('warn');
    const sidecar = await startSidecar(echoService([{ http: portOf(web), tcp: portOf(echo) }]), { mesh: { telemetry: { accessLog: true } }, log });
    const access = () => lines.filter((l) => l.msg === 'access');
    sidecar.target(80);
    const body = 'z'.repeat(300);
    const { socket } = await rawExchange(
      sidecar.running.ports.outbound,
      [`POST /orders?id=1 HTTP/1.1\r\nhost: echo\r\nuser-agent: test/1\r\nx-request-id: r-1\r\ncontent-length: ${body.length}\r\n\r\n${body}`],
      (t) => t.split('hello\n').length - 1,
    );
    await until('the request line', () => Promise.resolve(access().length === 1));
    expect(access()[0]).toMatchObject({
      level: 30,
      direction: 'outbound',
      protocol: 'http',
      method: 'POST',
      path: '/orders?id=1',
      authority: 'echo',
      status: 200,
      bytes_received: 300,
      bytes_sent: 6,
      upstream: `127.0.0.1:${portOf(web)}`,
      source: `127.0.0.1:${socket.localPort}`,
      destination: SERVICE,
      attempts: 1,
      user_agent: 'test/1',
      request_id: 'r-1',
    });
    expect(Date.parse(String(access()[0]!.start))).toBeGreaterThan(Date.now() - 10_000);
    expect(access()[0]!.duration_ms).toEqual(expect.any(Number));
    socket.destroy();

    sidecar.target(7);
    const tcp = await rawExchange(sidecar.running.ports.outbound, ['x'.repeat(1000)], (t) => (t.length >= 1000 ? 1 : 0));
    tcp.socket.end();
    await until('the connection line', () => Promise.resolve(access().length === 2));
    expect(access()[1]).toMatchObject({
      direction: 'outbound',
      protocol: 'tcp',
      bytes_received: 1000,
      bytes_sent: 1000,
      upstream: `127.0.0.1:${portOf(echo)}`,
      destination: SERVICE,
      outcome: 'closed',
    });
    // Only access lines: the sidecar's own info lines stay under its level (warn).
    expect(lines.filter((l) => l.msg !== 'access' && (l.level as number) < 40)).toEqual([]);

    expect(await adminCall(sidecar.running.ports.admin, 'POST', '/access_log?enabled=false')).toEqual({ status: 200, body: { enabled: false } });
    sidecar.target(80);
    expect((await get(sidecar.running.ports.outbound, '/')).status).toBe(200);
    expect(await adminCall(sidecar.running.ports.admin, 'GET', '/access_log')).toEqual({ status: 200, body: { enabled: false } });
    expect(access()).toHaveLength(2);
  });

  it('writes no access line unless asked', async () => {
    const web = await serve(createHttpServer((_req, res) => res.writeHead(200).end()));
    const { log, lines } = capturingLogger('info');
    const sidecar = await startSidecar(echoService([{ http: portOf(web) }]), { log });
    sidecar.target(80);
    expect((await get(sidecar.running.ports.outbound, '/')).status).toBe(200);
    expect(lines.filter((l) => l.msg === 'access')).toEqual([]);
    expect(await adminCall(sidecar.running.ports.admin, 'GET', '/access_log')).toEqual({ status: 200, body: { enabled: false } });
  });

  it('changes the log level at run time on the admin port, and refuses a word that is not a level', async () => {
    const { log, lines } = capturingLogger('info');
    const sidecar = await startSidecar(echoService([{ tcp: 9 }]), { log });
    const admin = sidecar.running.ports.admin;
    expect(await adminCall(admin, 'GET', '/logging')).toEqual({ status: 200, body: { level: 'info' } });
    sidecar.writeService(echoService([{ tcp: 10 }]));
    await until('the change', async () => (await sidecar.metric('flb_sidecar_config_updates_total')) === 2);
    expect(lines.some((l) => l.msg === 'data plane updated')).toBe(false);

    expect(await adminCall(admin, 'PUT', '/logging?level=debug')).toEqual({ status: 200, body: { level: 'debug', previous: 'info' } });
    expect(await adminCall(admin, 'GET', '/logging')).toEqual({ status: 200, body: { level: 'debug' } });
    sidecar.writeService(echoService([{ tcp: 11 }]));
    await until('a debug line', () => Promise.resolve(lines.some((l) => l.msg === 'data plane updated')));

    const refused = await adminCall(admin, 'POST', '/logging?level=loud');
    expect(refused.status).toBe(400);
    expect(refused.body.error).toContain('fatal, error, warn, info, debug, trace, silent');
    expect(await adminCall(admin, 'GET', '/logging')).toEqual({ status: 200, body: { level: 'debug' } });
    expect((await adminCall(admin, 'DELETE', '/logging')).status).toBe(405);
  });
});
