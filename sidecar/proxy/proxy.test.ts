import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { createServer as createHttpServer, request, type Server as HttpServer } from 'node:http';
import { connect as http2Connect, createServer as createHttp2Server, type Http2Server } from 'node:http2';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { API_VERSION, ServiceSchema, type Service } from '../../common/contract/index.js';
import { createLogger } from '../../common/log.js';
import { EndpointPool } from '../balancer/index.js';
import { SidecarMetrics } from '../metrics.js';
import { HttpProxy } from './http.js';
import { Lazy } from '../lazy.js';
import { Http2Proxy } from './http2.js';
import { startOutbound, type OutboundView, type ProxyListener } from './outbound.js';
import { RouteTable } from './routes.js';

/**
 * The outbound proxy over loopback, with the original destination given by the test instead of
 * SO_ORIGINAL_DST (the e2e suite covers the real redirect): what a client sees when endpoints
 * answer 5xx, refuse, or accept and reset, and what the proxy reports to outlier detection.
 */
const log = createLogger('proxy-test', 'silent');
const VIP = '240.240.0.9';

function service(ports: { port: number; protocol: 'tcp' | 'http' }[], endpoints: { port: number; http?: number }[], policy: Record<string, unknown> = {}): Service {
  return ServiceSchema.parse({
    apiVersion: API_VERSION,
    kind: 'Service',
    id: 'echo.static',
    name: 'echo',
    source: 'static',
    vips: [{ address: VIP, allocation: 'mesh' }],
    ports: ports.map((p, i) => ({ ...p, name: `p${i}` })),
    endpoints: endpoints.map((e) => ({ address: '127.0.0.1', port: e.port, ...(e.http ? { ports: { p1: e.http } } : {}) })),
    policy,
  });
}

const listen = <T extends Server | HttpServer>(server: T) => new Promise<T>((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
const portOf = (server: Server | HttpServer) => (server.address() as { port: number }).port;

describe('the outbound proxy', () => {
  const servers: (Server | HttpServer)[] = [];
  let proxy: ProxyListener;
  let view: OutboundView;
  let metrics: SidecarMetrics;
  let http: HttpProxy;
  let http2: Lazy<Http2Proxy>;
  let pool: EndpointPool;
  /** The VIP port the next connection "was sent to" (connections are made one at a time). */
  let nextPort = 0;

  const use = (svc: Service) => {
    pool?.close();
    pool = new EndpointPool({ activeHealthChecks: false });
    pool.update(svc);
    view = { routes: RouteTable.build([svc]), pools: new Map([[svc.id, pool]]), unknownDestination: 'deny' };
  };
  const dial = (vipPort: number) =>
    new Promise<Socket>((resolve) => {
      nextPort = vipPort;
      const socket = connect({ host: '127.0.0.1', port: proxy.port }, () => resolve(socket));
    });
  const get = (vipPort: number, path = '/', method = 'GET') =>
    new Promise<{ status: number; body: string; endpoint: string }>((resolve, reject) => {
      nextPort = vipPort;
      const req = request({ host: '127.0.0.1', port: proxy.port, path, method, agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, endpoint: String(res.headers['x-endpoint'] ?? '') }));
      });
      req.on('error', reject);
      req.end();
    });

  beforeAll(async () => {
    metrics = new SidecarMetrics();
    http = new HttpProxy('outbound', metrics, log);
    http2 = new Lazy(() => Http2Proxy.load('outbound', metrics, log));
    proxy = startOutbound({
      host: '127.0.0.1',
      port: 0,
      view: () => view,
      http,
      http2,
      metrics,
      log,
      destination: () => ({ address: VIP, port: nextPort, family: 4 }),
    });
  });
  afterEach(() => {
    for (const s of servers.splice(0)) s.close();
  });
  afterAll(() => {
    pool?.close();
    http.close();
    http2.current()?.close();
    proxy.close();
  });

  it('retries an idempotent request on another endpoint after a 503, and never a POST', async () => {
    const answering = (name: string, status: number) =>
      listen(createHttpServer((req, res) => res.writeHead(status, { 'x-endpoint': name }).end(`${name} ${req.method}\n`)));
    const bad = await answering('bad', 503);
    const good = await answering('good', 200);
    servers.push(bad, good);
    use(service([{ port: 1, protocol: 'tcp' }, { port: 80, protocol: 'http' }], [{ port: 9000, http: portOf(bad) }, { port: 9001, http: portOf(good) }], { retries: { attempts: 2, on: ['gateway-error'] } }));
    for (let i = 0; i < 4; i++) expect(await get(80)).toMatchObject({ status: 200, endpoint: 'good' });
    const posts = new Set<number>();
    for (let i = 0; i < 4; i++) posts.add((await get(80, '/', 'POST')).status);
    expect(posts).toEqual(new Set([200, 503]));
    const retries = await metrics.registry.getSingleMetricAsString('flb_sidecar_request_retries_total');
    expect(retries).toMatch(/service="echo.static"} [1-9]/);
  });

  it('retries a connect failure on another endpoint for any method', async () => {
    const good = await listen(createHttpServer((_req, res) => res.writeHead(200, { 'x-endpoint': 'good' }).end('ok\n')));
    const closed = await listen(createServer());
    const deadPort = portOf(closed);
    closed.close();
    servers.push(good);
    use(service([{ port: 1, protocol: 'tcp' }, { port: 80, protocol: 'http' }], [{ port: 9000, http: deadPort }, { port: 9001, http: portOf(good) }]));
    for (let i = 0; i < 4; i++) expect(await get(80, '/', 'POST')).toMatchObject({ status: 200, endpoint: 'good' });
  });

  it('answers 400 to garbage on an HTTP port and closes the connection', async () => {
    const good = await listen(createHttpServer((_req, res) => res.end('ok\n')));
    servers.push(good);
    use(service([{ port: 1, protocol: 'tcp' }, { port: 80, protocol: 'http' }], [{ port: 9000, http: portOf(good) }]));
    const socket = await dial(80);
    socket.write('\x16\x03\x01 not http at all\r\n\r\n');
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString()));
      socket.on('close', () => resolve(text));
    });
    expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request/);
  });

  it('ejects an endpoint that accepts connections and resets them', async () => {
    const resetting = await listen(createServer((socket) => setTimeout(() => socket.resetAndDestroy(), 5)));
    const echo = await listen(createServer((socket) => socket.pipe(socket)));
    servers.push(resetting, echo);
    use(service([{ port: 7, protocol: 'tcp' }], [{ port: portOf(resetting) }, { port: portOf(echo) }], { outlierDetection: { consecutiveConnectFailures: 2, maxEjectionPercent: 50 } }));
    const outcomes: string[] = [];
    for (let i = 0; i < 6; i++) {
      const socket = await dial(7);
      socket.write('ping');
      outcomes.push(
        await new Promise<string>((resolve) => {
          socket.once('data', () => {
            socket.destroy();
            resolve('echo');
          });
          socket.once('error', () => resolve('reset'));
          socket.once('close', () => resolve('closed'));
        }),
      );
    }
    // Two resets, then ejected: every later connection reaches the healthy one.
    expect(outcomes.slice(0, 4).filter((o) => o === 'reset')).toHaveLength(2);
    expect(outcomes.slice(4)).toEqual(['echo', 'echo']);
    expect(pool.snapshot().endpoints.find((e) => e.port === portOf(resetting))).toMatchObject({ ejected: true });
  });

  it('balances each stream of one HTTP/2 connection (a gRPC channel) and passes trailers', async () => {
    const h2 = (name: string) =>
      new Promise<Http2Server>((resolve) => {
        const server = createHttp2Server();
        server.on('stream', (stream) => {
          stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'x-endpoint': name }, { waitForTrailers: true });
          stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'x-served-by': name }));
          stream.end(name);
        });
        server.listen(0, '127.0.0.1', () => resolve(server));
      });
    const a = await h2('a');
    const b = await h2('b');
    const closed = await listen(createServer());
    const deadPort = portOf(closed);
    closed.close();
    servers.push(a as unknown as Server, b as unknown as Server);
    use(ServiceSchema.parse({ ...service([{ port: 50051, protocol: 'tcp' }], []), ports: [{ port: 50051, protocol: 'grpc' }], endpoints: [{ address: '127.0.0.1', port: portOf(a as unknown as Server) }, { address: '127.0.0.1', port: deadPort }, { address: '127.0.0.1', port: portOf(b as unknown as Server) }] }));
    nextPort = 50051;
    const client = http2Connect(`http://127.0.0.1:${proxy.port}`);
    const call = () =>
      new Promise<{ body: string; trailer: string }>((resolve, reject) => {
        const stream = client.request({ ':method': 'POST', ':path': '/echo.Echo/Say', 'content-type': 'application/grpc' });
        let body = '';
        let trailer = '';
        stream.on('data', (d: Buffer) => (body += d.toString()));
        stream.on('trailers', (t) => (trailer = String(t['x-served-by'])));
        stream.on('end', () => resolve({ body, trailer }));
        stream.on('error', reject);
        stream.end('hi');
      });
    const answers = [];
    for (let i = 0; i < 6; i++) answers.push(await call());
    client.close();
    // The dead endpoint is skipped (connect failure, retried elsewhere); a and b alternate on one client connection.
    expect(answers.map((x) => x.body).sort()).toEqual(['a', 'a', 'a', 'b', 'b', 'b']);
    expect(answers.every((x) => x.trailer === x.body)).toBe(true);
  });

  it('moves a TCP connection to another endpoint when one refuses, and resets it when none answers', async () => {
    const echo = await listen(createServer((socket) => socket.pipe(socket)));
    const closed = await listen(createServer());
    const deadPort = portOf(closed);
    closed.close();
    servers.push(echo);
    const roundTrip = async () => {
      const socket = await dial(7);
      socket.write('ping');
      return new Promise<string>((resolve) => {
        socket.once('data', (d: Buffer) => {
          socket.destroy();
          resolve(d.toString());
        });
        socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      });
    };
    use(service([{ port: 7, protocol: 'tcp' }], [{ port: deadPort }, { port: portOf(echo) }]));
    for (let i = 0; i < 4; i++) expect(await roundTrip()).toBe('ping');
    use(service([{ port: 7, protocol: 'tcp' }], [{ port: deadPort }]));
    nextPort = 7;
    const refused = connect({ host: '127.0.0.1', port: proxy.port });
    expect(await new Promise<string>((resolve) => refused.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error')))).toBe('ECONNRESET');
  });

  it('refuses an unknown destination when the mesh says deny', async () => {
    use(service([{ port: 7, protocol: 'tcp' }], [{ port: 1 }]));
    nextPort = 4444;
    const socket = connect({ host: '127.0.0.1', port: proxy.port });
    const result = await new Promise<string>((resolve) => {
      socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      socket.once('close', () => resolve('closed'));
    });
    expect(result).toBe('ECONNRESET');
  });
});
