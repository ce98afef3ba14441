import type * as Http2 from 'node:http2';
import type { ClientHttp2Session, Http2Server, IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { Logger } from '../../common/log.js';
import type { EndpointPool, PickedEndpoint } from '../balancer/index.js';
import type { Direction, SidecarMetrics } from '../metrics.js';
import type { Route } from './routes.js';

/** Headers HTTP/2 forbids or that belong to one hop (RFC 9113 8.2.2), and pseudo-headers we set ourselves. */
const NOT_FORWARDED = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', ':status']);

interface Bound {
  route: Route;
  pool: EndpointPool;
}
/**
 * Kept on the socket itself: a stream's session exposes its socket only through a proxy object,
 * which reads properties through to the socket but is not the same key for a WeakMap.
 */
const BOUND = Symbol('flb.http2.bound');
type Http2Module = typeof Http2;
type BoundSocket = Socket & { [BOUND]?: Bound };

function forward(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined && !NOT_FORWARDED.has(name)) out[name] = value;
  return out;
}

/**
 * HTTP/2 (and gRPC) ports, cleartext with prior knowledge as gRPC clients speak it inside a mesh:
 * every stream is balanced on its own, over one multiplexed connection per endpoint, so a
 * long-lived gRPC channel spreads its calls over every endpoint instead of pinning one (the reason
 * gRPC needs an L7 balancer at all). A stream is sent only once its endpoint's connection is up: a
 * connect failure moves the stream to another endpoint before any of it has been read, whatever
 * the method. Responses, including gRPC trailers and Trailers-Only answers, pass through as they
 * are; a stream reset by the endpoint is reset to the client, and counts as a failure.
 */
export class Http2Proxy {
  /**
   * node:http2 costs ~3 MiB of memory once loaded: a sidecar whose services have no HTTP/2 or
   * gRPC port never loads it.
   */
  static async load(direction: Direction, metrics: SidecarMetrics, log: Logger): Promise<Http2Proxy> {
    return new Http2Proxy(direction, metrics, log, await import('node:http2'));
  }

  private readonly server: Http2Server;
  private readonly sessions = new Map<string, Promise<ClientHttp2Session>>();

  constructor(
    private readonly direction: Direction,
    private readonly metrics: SidecarMetrics,
    private readonly log: Logger,
    private readonly http2: Http2Module,
  ) {
    this.server = http2.createServer({ maxSessionMemory: 64 });
    this.server.on('stream', (stream, headers) => void this.stream(stream, headers));
    this.server.on('session', (session) => session.on('error', () => {}));
  }

  handle(socket: Socket, route: Route, pool: EndpointPool): void {
    (socket as BoundSocket)[BOUND] = { route, pool };
    this.metrics.for(this.direction, route.service.id).connections.inc();
    this.server.emit('connection', socket);
  }

  retainSessions(keys: ReadonlySet<string>): void {
    for (const [key, session] of this.sessions) {
      if (keys.has(key)) continue;
      this.sessions.delete(key);
      void session.then((s) => s.close(), () => {});
    }
  }

  close(): void {
    for (const session of this.sessions.values()) void session.then((s) => s.destroy(), () => {});
    this.sessions.clear();
  }

  /** One connection per endpoint, shared by every stream; a broken one is replaced on next use. */
  private session(target: PickedEndpoint, connectTimeoutMs: number): Promise<ClientHttp2Session> {
    const existing = this.sessions.get(target.key);
    if (existing) return existing;
    const host = target.address.includes(':') ? `[${target.address}]` : target.address;
    const pending = new Promise<ClientHttp2Session>((resolve, reject) => {
      const session = this.http2.connect(`http://${host}:${target.port}`);
      const timer = setTimeout(() => session.destroy(new Error(`no connection within ${connectTimeoutMs} ms`)), connectTimeoutMs);
      session.once('connect', () => {
        clearTimeout(timer);
        resolve(session);
      });
      session.on('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      session.on('close', () => {
        if (this.sessions.get(target.key) === pending) this.sessions.delete(target.key);
      });
      session.on('goaway', () => {
        if (this.sessions.get(target.key) === pending) this.sessions.delete(target.key);
      });
    });
    pending.catch(() => {
      if (this.sessions.get(target.key) === pending) this.sessions.delete(target.key);
    });
    this.sessions.set(target.key, pending);
    return pending;
  }

  private async stream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): Promise<void> {
    stream.on('error', () => {});
    const bound = (stream.session?.socket as BoundSocket | undefined)?.[BOUND];
    if (!bound) {
      stream.close(this.http2.constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    const { route, pool } = bound;
    const series = this.metrics.for(this.direction, route.service.id);
    const started = performance.now();
    const tried = new Set<string>();
    const headerOf = (name: string) => {
      const value = headers[name.toLowerCase()];
      return Array.isArray(value) ? value[0] : value;
    };
    let connectRetries = pool.connect.retries;
    for (;;) {
      const target = pool.pick({ servicePort: route.port.port, sourceIp: stream.session?.socket?.remoteAddress, header: headerOf, exclude: tried });
      if (!target) {
        series.connectErrors.inc();
        series.requests('5xx').inc();
        if (!stream.headersSent) stream.respond({ ':status': 503, 'content-type': 'text/plain', 'x-flb-error': 'upstream' }, { endStream: false });
        stream.end(`no healthy endpoint for ${route.service.id}\n`);
        return;
      }
      tried.add(target.key);
      pool.begin(target.key);
      let session: ClientHttp2Session;
      try {
        session = await this.session(target, pool.connect.timeoutMs);
      } catch (error) {
        pool.end(target.key, 'connect-failure');
        if (connectRetries-- > 0) {
          series.retries.inc();
          continue;
        }
        series.requests('5xx').inc();
        if (!stream.headersSent && !stream.destroyed) stream.respond({ ':status': 502, 'x-flb-error': 'upstream' }, { endStream: true });
        this.log.debug({ service: route.service.id, endpoint: target.key, err: error }, 'http2 connect failed');
        return;
      }
      this.pass(stream, headers, session, target, pool, series, started);
      return;
    }
  }

  private pass(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, session: ClientHttp2Session, target: PickedEndpoint, pool: EndpointPool, series: ReturnType<SidecarMetrics['for']>, started: number): void {
    const upstream = session.request(forward(headers));
    let outcome: 'success' | '5xx' | 'reset' = 'success';
    let trailers: OutgoingHttpHeaders | undefined;
    stream.pipe(upstream);
    upstream.on('response', (response, flags) => {
      const status = Number(response[':status'] ?? 502);
      series.requestSeconds.observe((performance.now() - started) / 1000);
      series.requests(`${Math.floor(status / 100)}xx`).inc();
      if (status >= 500) outcome = '5xx';
      // A gRPC failure is an HTTP 200 with grpc-status in the trailers; only UNAVAILABLE (14) says the endpoint is unwell.
      if (response['grpc-status'] === '14') outcome = '5xx';
      const endStream = (flags & this.http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
      if (stream.destroyed) return;
      stream.respond({ ...forward(response), ':status': status }, endStream ? { endStream: true } : { waitForTrailers: true });
      if (endStream) return;
      stream.on('wantTrailers', () => stream.sendTrailers(trailers ?? {}));
      upstream.pipe(stream);
    });
    upstream.on('trailers', (received) => {
      trailers = forward(received);
      if (received['grpc-status'] === '14') outcome = '5xx';
    });
    upstream.on('close', () => {
      pool.end(target.key, outcome);
      if (upstream.rstCode && upstream.rstCode !== this.http2.constants.NGHTTP2_NO_ERROR && !stream.destroyed) stream.close(upstream.rstCode);
    });
    upstream.on('error', () => {
      outcome = 'reset';
      if (!stream.destroyed) stream.close(this.http2.constants.NGHTTP2_INTERNAL_ERROR);
    });
    stream.on('close', () => {
      if (!upstream.closed) upstream.close(this.http2.constants.NGHTTP2_CANCEL);
    });
  }
}
