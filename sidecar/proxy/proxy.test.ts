/*
 * The outbound proxy over loopback, with the original destination given by the test instead of
 * SO_ORIGINAL_DST (the e2e suite covers the real redirect): what a client sees when endpoints
 * answer 5xx, refuse, or accept and reset, and what the proxy reports to outlier detection.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { createServer as createHttpServer, request, type Server as HttpServer } from 'node:http';
import { connect as http2Connect, createServer as createHttp2Server, type ClientHttp2Session, type Http2Server, type ServerHttp2Stream } from 'node:http2';
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

const log = createLogger('proxy-test', 'silent');
const VIP = '240.240.0.9';

function service(
  ports: { port: number; protocol: 'tcp' | 'http' }[],
  endpoints: { port: number; http?: number }[],
  policy: Record<string, unknown> = {},
): Service {
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
  /** The VIP and port the next connection "was sent to" (connections are made one at a time). */
  let nextPort = 0;
  let nextAddress = VIP;

  const use = (svc: Service) => {
    pool?.close();
    pool = new EndpointPool({ activeHealthChecks: false });
    pool.update(svc);
    view = { routes: RouteTable.build([svc]), pools: new Map([[svc.id, pool]]), unknownDestination: 'deny' };
  };
  const dial = (vipPort: number) =>
    new Promise<Socket>((resolve, reject) => {
      nextPort = vipPort;
      const socket = connect({ host: '127.0.0.1', port: proxy.port }, () => resolve(socket));
      socket.once('error', reject);
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
      destination: () => ({ address: nextAddress, port: nextPort, family: nextAddress.includes(':') ? 6 : 4 }),
    });
  });
  afterEach(() => {
    nextAddress = VIP;
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
    use(
      service(
        [
          { port: 1, protocol: 'tcp' },
          { port: 80, protocol: 'http' },
        ],
        [
          { port: 9000, http: portOf(bad) },
          { port: 9001, http: portOf(good) },
        ],
        { retries: { attempts: 2, on: ['gateway-error'] } },
      ),
    );
    for (let i = 0; i < 4; i++) expect(await get(80)).toMatchObject({ status: 200, endpoint: 'good' });
    const posts = new Set<number>();
    for (let i = 0; i < 4; i++) posts.add((await get(80, '/', 'POST')).status);
    expect(posts).toEqual(new Set([200, 503]));
    const retries = await metrics.registry.getSingleMetricAsString('flb_sidecar_request_retries_total');
    expect(retries).toMatch(/service="echo.static"[^}]*} [1-9]/);
  });

  it('retries a connect failure on another endpoint for any method', async () => {
    const good = await listen(createHttpServer((_req, res) => res.writeHead(200, { 'x-endpoint': 'good' }).end('ok\n')));
    const closed = await listen(createServer());
    const deadPort = portOf(closed);
    closed.close();
    servers.push(good);
    use(
      service(
        [
          { port: 1, protocol: 'tcp' },
          { port: 80, protocol: 'http' },
        ],
        [
          { port: 9000, http: deadPort },
          { port: 9001, http: portOf(good) },
        ],
      ),
    );
    for (let i = 0; i < 4; i++) expect(await get(80, '/', 'POST')).toMatchObject({ status: 200, endpoint: 'good' });
  });

  it('answers 400 to garbage on an HTTP port and closes the connection', async () => {
    const good = await listen(createHttpServer((_req, res) => res.end('ok\n')));
    servers.push(good);
    use(
      service(
        [
          { port: 1, protocol: 'tcp' },
          { port: 80, protocol: 'http' },
        ],
        [{ port: 9000, http: portOf(good) }],
      ),
    );
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
    use(
      service([{ port: 7, protocol: 'tcp' }], [{ port: portOf(resetting) }, { port: portOf(echo) }], {
        outlierDetection: { consecutiveConnectFailures: 2, maxEjectionPercent: 50 },
      }),
    );
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
    use(
      ServiceSchema.parse({
        ...service([{ port: 50051, protocol: 'tcp' }], []),
        ports: [{ port: 50051, protocol: 'grpc' }],
        endpoints: [
          { address: '127.0.0.1', port: portOf(a as unknown as Server) },
          { address: '127.0.0.1', port: deadPort },
          { address: '127.0.0.1', port: portOf(b as unknown as Server) },
        ],
      }),
    );
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

  it('retries HTTP/2: an idempotent request after a 503, never a POST or a large body; a gRPC UNAVAILABLE when asked; a streaming call is not held back', async () => {
    const h2 = (handler: (stream: ServerHttp2Stream) => void) =>
      new Promise<Http2Server>((resolve) => {
        const server = createHttp2Server();
        server.on('stream', (stream) => {
          stream.on('error', () => {});
          handler(stream);
        });
        server.listen(0, '127.0.0.1', () => resolve(server));
      });
    // Both drain the request first: the answer goes out once the whole request is in.
    const bad = await h2((stream) => stream.on('data', () => {}).on('end', () => stream.respond({ ':status': 503, 'x-endpoint': 'bad' }, { endStream: true })));
    const good = await h2((stream) => {
      let got = 0;
      stream.respond({ ':status': 200, 'x-endpoint': 'good' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'x-got': String(got) }));
      // Echoes as it reads: a client that waits for its echo before ending must get it.
      stream.on('data', (d: Buffer) => {
        got += d.length;
        stream.write(d);
      });
      stream.on('end', () => stream.end());
    });
    const unavailable = await h2((stream) =>
      stream
        .on('data', () => {})
        .on('end', () =>
          stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'x-endpoint': 'unavailable' }, { endStream: true }),
        ),
    );
    servers.push(bad as unknown as Server, good as unknown as Server, unavailable as unknown as Server);
    const h2Service = (endpoints: Http2Server[], on: string[]) =>
      ServiceSchema.parse({
        ...service([{ port: 1, protocol: 'tcp' }], []),
        ports: [{ port: 8443, protocol: 'http2' }],
        endpoints: endpoints.map((s) => ({ address: '127.0.0.1', port: portOf(s as unknown as Server) })),
        policy: { retries: { attempts: 2, on } },
      });
    const call = (client: ClientHttp2Session, method: string, body?: Buffer) =>
      new Promise<{ status: number; endpoint: string; trailers: Record<string, unknown>; body: string }>((resolve, reject) => {
        const stream = client.request({ ':method': method, ':path': '/x' });
        let status = 0;
        let endpoint = '';
        let text = '';
        let trailers: Record<string, unknown> = {};
        stream.on('response', (h) => {
          status = Number(h[':status']);
          endpoint = String(h['x-endpoint']);
        });
        stream.on('data', (d: Buffer) => (text += d.toString()));
        stream.on('trailers', (t) => (trailers = t));
        stream.on('end', () => resolve({ status, endpoint, trailers, body: text }));
        stream.on('error', reject);
        // Node's client ends a GET's stream at once.
        if (method !== 'GET') stream.end(body ?? Buffer.from('hello'));
      });
    const connectClient = () => http2Connect(`http://127.0.0.1:${proxy.port}`).on('error', () => {});
    nextPort = 8443;

    use(h2Service([bad, good], ['gateway-error']));
    let client = connectClient();
    for (let i = 0; i < 4; i++) expect(await call(client, 'GET')).toMatchObject({ status: 200, endpoint: 'good', trailers: { 'x-got': '0' } });
    const posts = new Set<number>();
    for (let i = 0; i < 4; i++) posts.add((await call(client, 'POST')).status);
    expect(posts).toEqual(new Set([200, 503]));
    // Over 64 KiB is not kept, so not sent twice: the 503 comes through.
    const large = new Set<number>();
    for (let i = 0; i < 4; i++) large.add((await call(client, 'PUT', Buffer.alloc(100 * 1024, 1))).status);
    expect(large).toEqual(new Set([200, 503]));
    const retries = await metrics.registry.getSingleMetricAsString('flb_sidecar_request_retries_total');
    expect(retries).toMatch(/service="echo.static"[^}]*} [1-9]/);

    // A streaming call (retries on: its body is kept as it goes): the client waits for its first
    // message's echo before it ends the stream, so the proxy must not wait for the end to send it.
    client.close();
    use(h2Service([good], ['gateway-error']));
    client = connectClient();
    const streaming = await new Promise<string>((resolve, reject) => {
      const stream = client.request({ ':method': 'PUT', ':path': '/stream' });
      let text = '';
      stream.on('data', (d: Buffer) => {
        text += d.toString();
        if (text === 'ping') stream.end('pong');
      });
      stream.on('end', () => resolve(text));
      stream.on('error', reject);
      stream.write('ping');
    });
    expect(streaming).toBe('pingpong');
    client.close();

    use(h2Service([unavailable, good], ['unavailable']));
    client = connectClient();
    for (let i = 0; i < 4; i++)
      expect(await call(client, 'POST')).toMatchObject({ status: 200, endpoint: 'good', trailers: { 'grpc-status': '0', 'x-got': '5' } });
    client.close();
  });

  it('leaves X-Forwarded-For alone, or appends the app address when the policy says so (HTTP/1.1 and HTTP/2)', async () => {
    const echoHeaders = await listen(
      createHttpServer((req, res) =>
        res.writeHead(200, { 'x-endpoint': `${req.headers['x-forwarded-for'] ?? '-'} ${req.headers['x-forwarded-proto'] ?? '-'}` }).end(),
      ),
    );
    const h2Echo = createHttp2Server();
    h2Echo.on('stream', (stream, headers) =>
      stream.respond(
        { ':status': 200, 'x-endpoint': `${String(headers['x-forwarded-for'] ?? '-')} ${String(headers['x-forwarded-proto'] ?? '-')}` },
        { endStream: true },
      ),
    );
    await new Promise<void>((resolve) => h2Echo.listen(0, '127.0.0.1', resolve));
    servers.push(echoHeaders, h2Echo as unknown as Server);
    const withPolicy = (http?: unknown) =>
      ServiceSchema.parse({
        ...service([{ port: 1, protocol: 'tcp' }], []),
        ports: [
          { name: 'web', port: 80, protocol: 'http' },
          { name: 'h2', port: 8443, protocol: 'http2' },
        ],
        endpoints: [{ address: '127.0.0.1', port: portOf(echoHeaders), ports: { h2: portOf(h2Echo as unknown as Server) } }],
        ...(http ? { policy: { http } } : {}),
      });
    const h2Get = () =>
      new Promise<string>((resolve, reject) => {
        nextPort = 8443;
        const client = http2Connect(`http://127.0.0.1:${proxy.port}`).on('error', reject);
        const stream = client.request({ ':path': '/', 'x-forwarded-for': '10.9.9.9' });
        stream.on('response', (h) => resolve(String(h['x-endpoint'])));
        stream.on('end', () => client.close());
        stream.resume();
      });
    use(withPolicy());
    expect((await get(80)).endpoint).toBe('- -');
    expect(await h2Get()).toBe('10.9.9.9 -');
    use(withPolicy({ xForwardedFor: 'append' }));
    expect((await get(80)).endpoint).toBe('127.0.0.1 http');
    expect(await h2Get()).toBe('10.9.9.9, 127.0.0.1 http');
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

  it('routes an IPv6 VIP written uncompressed: the contract reads it in the form the forwarder reports destinations in', async () => {
    const echo = await listen(createServer((socket) => socket.pipe(socket)));
    servers.push(echo);
    use(
      ServiceSchema.parse({
        ...service([{ port: 7, protocol: 'tcp' }], [{ port: portOf(echo) }]),
        vips: [{ address: 'FD00:0:0:0:0:0:0:10', allocation: 'mesh' }],
      }),
    );
    // inet_ntop's form, as the native forwarder prints SO_ORIGINAL_DST.
    nextAddress = 'fd00::10';
    const socket = await dial(7);
    socket.write('ping');
    const answer = await new Promise<string>((resolve) => {
      socket.once('data', (d: Buffer) => {
        socket.destroy();
        resolve(d.toString());
      });
      socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    expect(answer).toBe('ping');
  });

  it('waits out a restart of the only endpoint: once every endpoint was tried, a TCP connection tries again after a backoff', async () => {
    const closed = await listen(createServer());
    const port = portOf(closed);
    closed.close();
    const echo = createServer((socket) => socket.pipe(socket));
    servers.push(echo);
    const svc = service([{ port: 7, protocol: 'tcp' }], [{ port }], { outlierDetection: { consecutiveConnectFailures: 1, maxEjectionPercent: 100 } });
    pool?.close();
    // The endpoint comes back the moment its first refusal is reported (it is ejected for it, so the pool says so).
    pool = new EndpointPool({ activeHealthChecks: false, onEvent: (event) => event.type === 'ejected' && echo.listen(port) });
    pool.update(svc);
    view = { routes: RouteTable.build([svc]), pools: new Map([[svc.id, pool]]), unknownDestination: 'deny' };
    const socket = await dial(7);
    socket.write('ping');
    const answer = await new Promise<string>((resolve) => {
      socket.once('data', (d: Buffer) => {
        socket.destroy();
        resolve(d.toString());
      });
      socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    expect(answer).toBe('ping');
    expect(pool.counters().ejectionsTotal).toBe(1);
  });

  it('keeps the client address for ring hash when HTTP/2 retries go back to endpoints already tried', async () => {
    const hits: string[] = [];
    const failing = (name: string) =>
      new Promise<Http2Server>((resolve) => {
        const server = createHttp2Server();
        server.on('stream', (stream) => {
          hits.push(name);
          stream.respond({ ':status': 503 }, { endStream: true });
        });
        server.listen(0, '127.0.0.1', () => resolve(server));
      });
    const a = await failing('a');
    const b = await failing('b');
    servers.push(a as unknown as Server, b as unknown as Server);
    use(
      ServiceSchema.parse({
        ...service([{ port: 1, protocol: 'tcp' }], []),
        ports: [{ port: 8443, protocol: 'http2' }],
        endpoints: [a, b].map((s) => ({ address: '127.0.0.1', port: portOf(s as unknown as Server) })),
        policy: {
          loadBalancer: { algorithm: 'ring-hash', hash: { on: 'source-ip' } },
          retries: { attempts: 3, on: ['gateway-error'], backoffBaseMs: 1, backoffMaxMs: 2 },
        },
      }),
    );
    nextPort = 8443;
    const client = http2Connect(`http://127.0.0.1:${proxy.port}`).on('error', () => {});
    const sequences: string[] = [];
    for (let i = 0; i < 8; i++) {
      hits.length = 0;
      const status = await new Promise<number>((resolve, reject) => {
        const stream = client.request({ ':path': '/' });
        stream.on('response', (h) => resolve(Number(h[':status'])));
        stream.on('error', reject);
        stream.resume();
      });
      expect(status).toBe(503);
      sequences.push(hits.join(''));
    }
    client.close();
    // The owner of 127.0.0.1's point, the other one, then the owner again each time (not a random endpoint).
    const owner = sequences[0]![0]!;
    const other = owner === 'a' ? 'b' : 'a';
    expect(new Set(sequences)).toEqual(new Set([`${owner}${other}${owner}${owner}`]));
  });

  it("balances a connection to a Kubernetes service's pod address (a socket load balancer chose it) and fails over from a dead one; passes one two services list through, counted as ambiguous", async () => {
    const named = (name: string) => listen(createServer((socket) => socket.end(name)));
    const [a, b, closed] = await Promise.all([named('a'), named('b'), listen(createServer())]);
    const deadPort = portOf(closed);
    closed.close();
    servers.push(a, b);
    const kubernetes = (id: string, ports: number[], vips: unknown[]) =>
      ServiceSchema.parse({
        apiVersion: API_VERSION,
        kind: 'Service',
        id,
        name: id.split('.')[0],
        namespace: 'shop',
        source: 'kubernetes',
        vips,
        ports: [{ port: 7, protocol: 'tcp' }],
        endpoints: ports.map((port) => ({ address: '127.0.0.1', port })),
      });
    const web = kubernetes('web.shop', [deadPort, portOf(a), portOf(b)], [{ address: '10.96.0.10', allocation: 'cluster-ip' }]);
    // A headless service (a StatefulSet's) that lists b's pod too.
    const peers = kubernetes('web-peers.shop', [portOf(b)], []);
    pool?.close();
    pool = new EndpointPool({ activeHealthChecks: false });
    pool.update(web);
    view = { routes: RouteTable.build([web, peers], { endpointFallback: true }), pools: new Map([[web.id, pool]]), unknownDestination: 'passthrough' };
    const answer = async (port: number) => {
      nextAddress = '127.0.0.1';
      const socket = await dial(port);
      return new Promise<string>((resolve) => {
        let body = '';
        socket.on('data', (d: Buffer) => (body += d.toString()));
        socket.once('close', () => resolve(body));
        socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      });
    };
    const counted = async (service: string) =>
      Number(
        (await metrics.registry.getSingleMetricAsString('flb_sidecar_connections_total')).match(new RegExp(`service="${service}"[^}]*} (\\d+)`))?.[1] ?? 0,
      );
    const before = { web: await counted('web.shop'), ambiguous: await counted('ambiguous') };
    // The balancer picked the dead pod: the connection goes to a live one of the service instead.
    expect(['a', 'b']).toContain(await answer(deadPort));
    // Sent to a's pod address every time, yet spread over the service's pods.
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) seen.add(await answer(portOf(a)));
    expect(seen).toEqual(new Set(['a', 'b']));
    expect((await counted('web.shop')) - before.web).toBe(7);
    // b's address:port is an endpoint of both services: it goes where it was sent, and is counted apart.
    for (let i = 0; i < 3; i++) expect(await answer(portOf(b))).toBe('b');
    expect((await counted('ambiguous')) - before.ambiguous).toBe(3);
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
