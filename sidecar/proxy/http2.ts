import type * as Http2 from 'node:http2';
import type { ClientHttp2Session, ClientHttp2Stream, Http2Server, IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import type { Logger } from '../../common/log.js';
import { AttemptPlanner, GIVE_UP, type EndpointPool, type PickedEndpoint } from '../balancer/index.js';
import { addressOf, headerValue, NO_ACCESS_LOG, type AccessLog } from '../access-log.js';
import type { Direction, RequestProtocol, ServiceSeries, SidecarMetrics } from '../metrics.js';
import { forwardedHeaders } from './forwarded.js';
import type { Route } from './routes.js';

/** Replayable on another endpoint: RFC 9110's idempotent methods. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);
/** Bodies up to this size are kept so a request can be sent again; larger ones stream once. */
const MAX_REPLAY_BODY = 64 * 1024;

/** Headers HTTP/2 forbids or that belong to one hop (RFC 9113 8.2.2), and pseudo-headers we set ourselves. */
const NOT_FORWARDED = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', ':status']);

interface Bound {
  route: Route;
  pool: EndpointPool;
  series: ServiceSeries;
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
 * the method (retries as the attempt planner says, balancer/attempts.ts). Responses, including gRPC trailers and Trailers-Only answers, pass through as they
 * are; a stream reset by the endpoint is reset to the client, and counts as a failure.
 */
export class Http2Proxy {
  /**
   * node:http2 costs ~3 MiB of memory once loaded: a sidecar whose services have no HTTP/2 or
   * gRPC port never loads it.
   */
  static async load(
    direction: Direction,
    metrics: SidecarMetrics,
    log: Logger,
    accessLog: AccessLog = NO_ACCESS_LOG,
    localAddress?: (address: string) => string | undefined,
  ): Promise<Http2Proxy> {
    return new Http2Proxy(direction, metrics, log, await import('node:http2'), accessLog, localAddress);
  }

  private readonly server: Http2Server;
  private readonly sessions = new Map<string, Promise<ClientHttp2Session>>();

  constructor(
    private readonly direction: Direction,
    private readonly metrics: SidecarMetrics,
    private readonly log: Logger,
    private readonly http2: Http2Module,
    private readonly accessLog: AccessLog = NO_ACCESS_LOG,
    /** Where connections to endpoints come from (inbound: 127.0.0.6, as the native path). */
    private readonly localAddress?: (address: string) => string | undefined,
  ) {
    this.server = http2.createServer({ maxSessionMemory: 64 });
    this.server.on('stream', (stream, headers) => void this.stream(stream, headers));
    this.server.on('session', (session) => session.on('error', () => {}));
  }

  handle(socket: Socket, route: Route, pool: EndpointPool): void {
    const series = this.metrics.forService(this.direction, route.service);
    (socket as BoundSocket)[BOUND] = { route, pool, series };
    series.connections.inc();
    this.metrics.countSocketBytes(socket, series);
    this.server.emit('connection', socket);
  }

  retainSessions(keys: ReadonlySet<string>): void {
    for (const [key, session] of this.sessions) {
      if (keys.has(key)) continue;
      this.sessions.delete(key);
      void session.then(
        (s) => s.close(),
        () => {},
      );
    }
  }

  close(): void {
    for (const session of this.sessions.values())
      void session.then(
        (s) => s.destroy(),
        () => {},
      );
    this.sessions.clear();
  }

  /** One connection per endpoint, shared by every stream; a broken one is replaced on next use. */
  private session(target: PickedEndpoint, connectTimeoutMs: number, onConnected: () => void): Promise<ClientHttp2Session> {
    const existing = this.sessions.get(target.key);
    if (existing) return existing;
    const host = target.address.includes(':') ? `[${target.address}]` : target.address;
    const pending = new Promise<ClientHttp2Session>((resolve, reject) => {
      const localAddress = this.localAddress?.(target.address);
      const session = this.http2.connect(
        `http://${host}:${target.port}`,
        localAddress ? { createConnection: () => netConnect({ host: target.address, port: target.port, localAddress }) } : {},
      );
      const timer = setTimeout(() => session.destroy(new Error(`no connection within ${connectTimeoutMs} ms`)), connectTimeoutMs);
      session.once('connect', () => {
        clearTimeout(timer);
        onConnected();
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
    const { route, pool, series } = bound;
    const started = performance.now();
    const policy = route.service.policy.retries;
    const method = String(headers[':method'] ?? 'GET');
    const contentType = headers['content-type'];
    const protocol: RequestProtocol =
      route.port.protocol === 'grpc' || (typeof contentType === 'string' && contentType.startsWith('application/grpc')) ? 'grpc' : 'http2';
    const logged = this.accessLog.enabled;
    const exchange: Exchange = { bytesReceived: 0, bytesSent: 0, attempts: 0, upstream: undefined };
    if (logged) stream.on('data', (chunk: Buffer) => (exchange.bytesReceived += chunk.length));
    /** Counted once the stream is over, with the gRPC status of its trailers (or of a Trailers-Only answer). */
    const finished = (status: number, grpcStatus: string | undefined) => {
      const response = series.response(protocol, status, grpcStatus);
      response.requests.inc();
      response.seconds.observe((performance.now() - started) / 1000);
      if (logged)
        this.accessLog.request({
          direction: this.direction,
          protocol,
          startedAt: started,
          method,
          path: String(headers[':path'] ?? ''),
          authority: headerValue(headers[':authority']),
          status,
          grpcStatus,
          bytesReceived: exchange.bytesReceived,
          bytesSent: exchange.bytesSent,
          upstream: exchange.upstream,
          source: addressOf(stream.session?.socket?.remoteAddress, stream.session?.socket?.remotePort),
          destination: route.service.id,
          attempts: exchange.attempts,
          userAgent: headerValue(headers['user-agent']),
          requestId: headerValue(headers['x-request-id']),
        });
    };
    const request = new RequestBody(stream, policy ? MAX_REPLAY_BODY : 0);
    const sent = forwardedHeaders(forward(headers), route, stream.session?.socket?.remoteAddress);
    const planner = new AttemptPlanner(pool, route.port.port, stream.session?.socket?.remoteAddress, policy, IDEMPOTENT.has(method), route.kept);
    planner.header = (name: string) => {
      const value = headers[name.toLowerCase()];
      return Array.isArray(value) ? value[0] : value;
    };
    for (;;) {
      const target = planner.next();
      if (!target) {
        series.connectErrors.inc();
        if (!stream.headersSent && !stream.destroyed)
          stream.respond({ ':status': 503, 'content-type': 'text/plain', 'x-flb-error': 'upstream' }, { endStream: false });
        stream.end(`no healthy endpoint for ${route.service.id}\n`);
        finished(503, undefined);
        return;
      }
      exchange.attempts++;
      if (logged) exchange.upstream = addressOf(target.address, target.port);
      let session: ClientHttp2Session;
      try {
        session = await this.session(target, pool.connect.timeoutMs, () => series.connectSeconds.observe((performance.now() - started) / 1000));
      } catch (error) {
        // Nothing of the stream was sent: safe to move on whatever the method.
        const delay = planner.retryAfterConnectFailure();
        if (delay !== GIVE_UP) {
          series.retries.inc();
          await planner.wait(delay);
          if (stream.destroyed) return;
          continue;
        }
        series.connectErrors.inc();
        if (!stream.headersSent && !stream.destroyed) stream.respond({ ':status': 502, 'x-flb-error': 'upstream' }, { endStream: true });
        finished(502, undefined);
        this.log.debug({ service: route.service.id, endpoint: target.key, err: error }, 'http2 connect failed');
        return;
      }
      if (stream.destroyed) {
        planner.end();
        return;
      }
      const answer = await this.attempt(stream, sent, request, session, policy?.perTryTimeoutMs);
      // Sent again only when all of it was kept (a small body, ended before the answer) and the
      // method may be repeated (the planner's rules).
      const delay =
        answer.kind === 'response'
          ? planner.retryAfterResponse(answer.status, answer.grpcStatus, request.replayable())
          : answer.kind === 'timeout'
            ? planner.retryAfterTimeout(request.replayable())
            : planner.retryAfterReset(request.replayable());
      if (delay !== GIVE_UP) {
        answer.upstream.close(this.http2.constants.NGHTTP2_CANCEL);
        series.retries.inc();
        await planner.wait(delay);
        if (stream.destroyed) return;
        continue;
      }
      if (answer.kind === 'response') this.pass(stream, answer, planner, finished, logged ? exchange : undefined);
      else {
        finished(answer.kind === 'timeout' ? 504 : 502, undefined);
        answer.upstream.close(this.http2.constants.NGHTTP2_CANCEL);
        if (stream.destroyed) return;
        if (!stream.headersSent) stream.respond({ ':status': answer.kind === 'timeout' ? 504 : 502, 'x-flb-error': 'upstream' }, { endStream: true });
        else stream.close(this.http2.constants.NGHTTP2_INTERNAL_ERROR);
      }
      return;
    }
  }

  /** Sends the request on `session` (what was kept of its body, then the rest as it comes) and waits for the answer's headers. */
  private attempt(
    stream: ServerHttp2Stream,
    headers: OutgoingHttpHeaders,
    request: RequestBody,
    session: ClientHttp2Session,
    perTryTimeoutMs: number | undefined,
  ): Promise<Attempt> {
    const upstream = session.request(headers);
    // Trailers may come in the same read as the headers, before whoever takes the answer listens.
    const received: { trailers?: IncomingHttpHeaders } = {};
    upstream.on('error', () => {});
    upstream.once('trailers', (trailers) => (received.trailers = trailers));
    request.sendTo(upstream);
    return new Promise((resolve) => {
      let settled = false;
      const settle = (answer: Attempt) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(answer);
      };
      const timer = perTryTimeoutMs ? setTimeout(() => settle({ kind: 'timeout', upstream }), perTryTimeoutMs) : undefined;
      upstream.once('response', (response, flags) => {
        const endStream = (flags & this.http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
        const grpcStatus = response['grpc-status'];
        settle({
          kind: 'response',
          upstream,
          response,
          status: Number(response[':status'] ?? 502),
          grpcStatus: typeof grpcStatus === 'string' ? grpcStatus : undefined,
          endStream,
          received,
        });
      });
      upstream.once('close', () => settle({ kind: 'reset', upstream }));
      stream.once('close', () => settle({ kind: 'reset', upstream }));
    });
  }

  private pass(
    stream: ServerHttp2Stream,
    answer: Extract<Attempt, { kind: 'response' }>,
    planner: AttemptPlanner,
    finished: (status: number, grpcStatus: string | undefined) => void,
    /** Set when the access log wants the response's bytes. */
    exchange: Exchange | undefined,
  ): void {
    const { upstream, response, status, endStream, received } = answer;
    // A gRPC failure is an HTTP 200 with grpc-status in the trailers; only UNAVAILABLE (14) says the endpoint is unwell.
    let outcome: 'success' | '5xx' | 'reset' = status >= 500 || answer.grpcStatus === '14' ? '5xx' : 'success';
    if (exchange) upstream.on('data', (chunk: Buffer) => (exchange.bytesSent += chunk.length));
    const trailers = () => {
      if (received.trailers?.['grpc-status'] === '14') outcome = '5xx';
      return received.trailers ? forward(received.trailers) : {};
    };
    const closed = () => {
      trailers();
      const grpcStatus = received.trailers?.['grpc-status'];
      finished(status, typeof grpcStatus === 'string' ? grpcStatus : answer.grpcStatus);
      planner.end(outcome);
      if (upstream.rstCode && upstream.rstCode !== this.http2.constants.NGHTTP2_NO_ERROR && !stream.destroyed) stream.close(upstream.rstCode);
    };
    if (upstream.closed) closed();
    else upstream.once('close', closed);
    upstream.on('error', () => {
      outcome = 'reset';
      if (!stream.destroyed) stream.close(this.http2.constants.NGHTTP2_INTERNAL_ERROR);
    });
    stream.on('close', () => {
      if (!upstream.closed) upstream.close(this.http2.constants.NGHTTP2_CANCEL);
    });
    if (stream.destroyed) return;
    stream.respond({ ...forward(response), ':status': status }, endStream ? { endStream: true } : { waitForTrailers: true });
    if (endStream) return;
    // Asked once the body is through, by which time the endpoint's trailers (if any) are in.
    stream.on('wantTrailers', () => stream.sendTrailers(trailers()));
    upstream.pipe(stream);
  }
}

/** What the access log says of a stream, filled in as it goes. */
interface Exchange {
  bytesReceived: number;
  bytesSent: number;
  attempts: number;
  upstream: string | undefined;
}

type Attempt =
  | {
      kind: 'response';
      upstream: ClientHttp2Stream;
      response: IncomingHttpHeaders;
      status: number;
      grpcStatus: string | undefined;
      endStream: boolean;
      received: { trailers?: IncomingHttpHeaders };
    }
  | { kind: 'timeout' | 'reset'; upstream: ClientHttp2Stream };

/**
 * The client's request body, read once and sent to each attempt in turn: as Envoy does, it goes
 * to the endpoint as it arrives (a streaming call is never held back) while up to `keep` bytes
 * are kept, so a request that ended within that can be sent again to another endpoint.
 */
class RequestBody {
  private readonly kept: Buffer[] = [];
  private keptBytes = 0;
  private overflowed: boolean;
  private ended = false;
  private current: ClientHttp2Stream | undefined;

  constructor(
    private readonly stream: ServerHttp2Stream,
    private readonly keep: number,
  ) {
    this.overflowed = keep === 0;
    stream.on('data', (chunk: Buffer) => {
      if (!this.overflowed) {
        this.keptBytes += chunk.length;
        if (this.keptBytes > this.keep) {
          this.overflowed = true;
          this.kept.length = 0;
        } else this.kept.push(chunk);
      }
      const to = this.current;
      if (to && !to.destroyed && !to.write(chunk)) {
        stream.pause();
        to.once('drain', () => stream.resume());
      }
    });
    stream.on('end', () => {
      this.ended = true;
      if (this.current && !this.current.destroyed) this.current.end();
    });
    stream.pause();
  }

  /** All of the body is kept: it can be sent again. */
  replayable(): boolean {
    return this.ended && !this.overflowed;
  }

  sendTo(upstream: ClientHttp2Stream): void {
    this.current = upstream;
    for (const chunk of this.kept) upstream.write(chunk);
    if (this.ended) upstream.end();
    else this.stream.resume();
  }
}
