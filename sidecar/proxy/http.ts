import {
  Agent,
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
} from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../../common/log.js';
import { AttemptPlanner, dialWithRetries, GIVE_UP, tcpDial, type EndpointPool, type PickedEndpoint } from '../balancer/index.js';
import { addressOf, headerValue, NO_ACCESS_LOG, type AccessLog } from '../access-log.js';
import type { Direction, ServiceSeries, SidecarMetrics } from '../metrics.js';
import { forwardedHeaders } from './forwarded.js';
import type { Route } from './routes.js';
import { splice } from './splice.js';

/** Replayable on another endpoint: RFC 9110's idempotent methods. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);
/** Bodies up to this size are kept so an idempotent request can be retried; larger ones stream. */
const MAX_REPLAY_BODY = 64 * 1024;
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

interface Bound {
  route: Route;
  pool: EndpointPool;
  series: ServiceSeries;
}

class AttemptError extends Error {
  constructor(
    message: string,
    readonly kind: 'connect-failure' | 'reset' | 'timeout',
    /** Whether the request may have reached the endpoint (then only idempotent ones are retried). */
    readonly reached: boolean,
  ) {
    super(message);
  }
}

function forwardHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const named = String(headers.connection ?? '')
    .toLowerCase()
    .split(',')
    .map((h) => h.trim());
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || named.includes(name)) continue;
    out[name] = value;
  }
  return out;
}

/**
 * HTTP/1.1-aware proxying for service ports whose protocol is `http`: each request is balanced on
 * its own (so one keep-alive client spreads over every endpoint), a failed attempt is retried as
 * the attempt planner says (balancer/attempts.ts: a connect failure for any method, a 5xx, reset or
 * per-try timeout the policy names for idempotent ones), and 5xx responses feed outlier detection. Headers pass as they are (Host stays what the
 * app sent); `x-forwarded-*` is not added or changed unless the policy asks (forwarded.ts).
 *
 * node:http's parser (llhttp) takes the connections: a client that sends something that is not
 * HTTP gets a 400 and its connection closed, as Node's server does.
 */
export class HttpProxy {
  private readonly server = createServer({ requestTimeout: 0, keepAliveTimeout: 60_000 });
  private readonly bound = new WeakMap<Socket, Bound>();
  private readonly agents = new Map<string, Agent>();

  constructor(
    private readonly direction: Direction,
    private readonly metrics: SidecarMetrics,
    private readonly log: Logger,
    private readonly accessLog: AccessLog = NO_ACCESS_LOG,
    /** Where connections to endpoints come from (inbound: 127.0.0.6, so the sidecar's own redirect leaves them alone). */
    private readonly localAddress?: (address: string) => string | undefined,
  ) {
    this.server.on('request', (req, res) => void this.request(req, res));
    this.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.upgrade(req, socket, head));
  }

  handle(socket: Socket, route: Route, pool: EndpointPool): void {
    const series = this.metrics.forService(this.direction, route.service);
    this.bound.set(socket, { route, pool, series });
    series.connections.inc();
    this.metrics.countSocketBytes(socket, series);
    this.server.emit('connection', socket);
  }

  /** Pooled keep-alive connections per endpoint; dropped for endpoints that left the catalog. */
  retainAgents(keys: ReadonlySet<string>): void {
    for (const [key, agent] of this.agents) {
      if (keys.has(key)) continue;
      agent.destroy();
      this.agents.delete(key);
    }
  }

  close(): void {
    for (const agent of this.agents.values()) agent.destroy();
    this.agents.clear();
    this.server.closeAllConnections();
  }

  private agent(target: PickedEndpoint): Agent {
    let agent = this.agents.get(target.key);
    if (!agent) this.agents.set(target.key, (agent = new Agent({ keepAlive: true, scheduling: 'lifo', timeout: 60_000 })));
    return agent;
  }

  private async request(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const bound = this.bound.get(req.socket);
    if (!bound) {
      res.writeHead(500).end();
      return;
    }
    const { route, pool, series } = bound;
    const started = performance.now();
    const policy = route.service.policy.retries;
    const method = req.method ?? 'GET';
    const headers = forwardedHeaders(forwardHeaders(req.headers), route, req.socket.remoteAddress);
    const length = Number(req.headers['content-length'] ?? 0);
    const chunked = req.headers['transfer-encoding'] !== undefined;
    // A small body is read first, so that the request can be sent again: to another endpoint
    // after a connect failure (it never arrived: safe for any method), or after a 5xx or a reset
    // when the method is idempotent. A large or chunked body streams once.
    const replayable = !chunked && length <= MAX_REPLAY_BODY;
    const logged = this.accessLog.enabled;
    let bytesReceived = 0;
    if (logged && !replayable) req.on('data', (chunk: Buffer) => (bytesReceived += chunk.length));
    const body = replayable ? await readAll(req) : undefined;
    if (body) bytesReceived = body.length;
    const resendable = body !== undefined;
    let attempts = 0;
    let upstreamAddress: string | undefined;
    let bytesSent = 0;
    /** Counted once the response is over (or the client went away), as Istio and Linkerd count. */
    const finished = (status: number) => {
      const response = series.response('http', status, undefined);
      response.requests.inc();
      response.seconds.observe((performance.now() - started) / 1000);
      if (logged)
        this.accessLog.request({
          direction: this.direction,
          protocol: 'http',
          startedAt: started,
          method,
          path: req.url ?? '',
          authority: req.headers.host,
          status,
          grpcStatus: undefined,
          bytesReceived,
          bytesSent,
          upstream: upstreamAddress,
          source: addressOf(req.socket.remoteAddress, req.socket.remotePort),
          destination: route.service.id,
          attempts,
          userAgent: req.headers['user-agent'],
          requestId: headerValue(req.headers['x-request-id']),
        });
    };
    const planner = new AttemptPlanner(pool, route.port.port, req.socket.remoteAddress, policy, IDEMPOTENT.has(method), route.kept);
    planner.header = (name: string) => {
      const value = req.headers[name.toLowerCase()];
      return Array.isArray(value) ? value[0] : value;
    };
    planner.cookie = (name: string) => cookieValue(req.headers.cookie, name);
    for (;;) {
      const target = planner.next();
      if (!target) {
        series.connectErrors.inc();
        this.reply(res, 503, `no healthy endpoint for ${route.service.id}\n`);
        finished(503);
        return;
      }
      attempts++;
      if (logged) upstreamAddress = addressOf(target.address, target.port);
      let delay: number;
      let failure: AttemptError;
      try {
        const upstream = await this.send(req, target, pool.connect.timeoutMs, policy?.perTryTimeoutMs, method, headers, body, () =>
          series.connectSeconds.observe((performance.now() - started) / 1000),
        );
        const status = upstream.statusCode ?? 502;
        delay = planner.retryAfterResponse(status, undefined, resendable);
        if (delay !== GIVE_UP) {
          upstream.resume();
          series.retries.inc();
          await planner.wait(delay);
          continue;
        }
        res.once('close', () => finished(status));
        res.writeHead(status, upstream.statusMessage, forwardHeaders(upstream.headers));
        upstream.on('data', (chunk: Buffer) => {
          bytesSent += chunk.length;
          if (!res.write(chunk)) upstream.pause();
        });
        res.on('drain', () => upstream.resume());
        upstream.on('end', () => {
          res.end();
          planner.end(status >= 500 ? '5xx' : 'success');
        });
        upstream.on('error', () => {
          planner.end('reset');
          res.destroy();
        });
        return;
      } catch (error) {
        failure = error instanceof AttemptError ? error : new AttemptError(String(error), 'reset', true);
        delay =
          failure.kind === 'connect-failure'
            ? planner.retryAfterConnectFailure(resendable)
            : failure.kind === 'timeout'
              ? planner.retryAfterTimeout(resendable)
              : planner.retryAfterReset(resendable);
      }
      if (delay !== GIVE_UP) {
        series.retries.inc();
        await planner.wait(delay);
        continue;
      }
      this.log.debug({ service: route.service.id, endpoint: target.key, err: failure.message }, 'request failed');
      if (failure.kind === 'connect-failure') series.connectErrors.inc();
      const status = failure.kind === 'timeout' ? 504 : 502;
      this.reply(res, status, `upstream ${target.address}:${target.port} of ${route.service.id}: ${failure.message}\n`);
      finished(status);
      return;
    }
  }

  private send(
    req: IncomingMessage,
    target: PickedEndpoint,
    connectTimeoutMs: number,
    perTryTimeoutMs: number | undefined,
    method: string,
    headers: OutgoingHttpHeaders,
    body: Buffer | undefined,
    /** A new connection to the endpoint is up (not called for a kept-alive one). */
    onConnected: () => void,
  ): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      let reached = false;
      const upstream = httpRequest({
        host: target.address,
        port: target.port,
        method,
        path: req.url,
        headers,
        agent: this.agent(target),
        setHost: false,
        localAddress: this.localAddress?.(target.address),
      });
      let connectTimer: NodeJS.Timeout | undefined;
      upstream.on('socket', (socket: Socket) => {
        if (!socket.connecting) {
          reached = true;
          return;
        }
        connectTimer = setTimeout(
          () => upstream.destroy(new AttemptError(`no connection within ${connectTimeoutMs} ms`, 'connect-failure', false)),
          connectTimeoutMs,
        );
        socket.once('connect', () => {
          clearTimeout(connectTimer);
          reached = true;
          onConnected();
        });
      });
      const tryTimer = perTryTimeoutMs
        ? setTimeout(() => upstream.destroy(new AttemptError(`no response within ${perTryTimeoutMs} ms`, 'timeout', true)), perTryTimeoutMs)
        : undefined;
      upstream.on('response', (response) => {
        clearTimeout(tryTimer);
        resolve(response);
      });
      upstream.on('error', (error: NodeJS.ErrnoException) => {
        clearTimeout(connectTimer);
        clearTimeout(tryTimer);
        if (error instanceof AttemptError) reject(error);
        else if (!reached || error.code === 'ECONNREFUSED') reject(new AttemptError(error.message, 'connect-failure', false));
        else reject(new AttemptError(error.message, 'reset', true));
      });
      if (body !== undefined) upstream.end(body);
      else req.pipe(upstream);
    });
  }

  /** WebSocket and other upgrades: balanced once, then a plain byte stream. */
  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const bound = this.bound.get(socket);
    if (!bound) {
      socket.destroy();
      return;
    }
    const { route, pool } = bound;
    dialWithRetries(pool, { servicePort: route.port.port, sourceIp: socket.remoteAddress, kept: route.kept }, tcpDial).then(
      ({ value: upstream, target }) => {
        const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`];
        for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
        upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
        if (head.length) upstream.write(head);
        splice(socket, upstream, ({ outcome }) => pool.end(target.key, outcome));
      },
      () => socket.end('HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n'),
    );
  }

  private reply(res: ServerResponse, status: number, message: string): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(message), 'x-flb-error': 'upstream' }).end(message);
  }
}

function readAll(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
