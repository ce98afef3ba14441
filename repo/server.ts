/*
 * `flb repo`: the Pipy 1.5 repo REST API (repo/PIPY-API.md) over a Repo. Errors are text/plain
 * messages, as Pipy's are, so Pipy's own tools read them; every bad request gets a 4xx and changes
 * nothing.
 */
import { isUtf8 } from 'node:buffer';
import { createServer, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Logger } from '../common/log.js';
import { createMetricsRegistry } from '../common/metrics.js';
import { DELTA_MEDIA_TYPE } from '../common/repo-worker.js';
import { Authenticator, TooManyTokenReviews, authorize } from './auth.js';
import { RepoError, checkPath, type Delta, type Repo } from './repo.js';
import { StoreUnavailable, type CodebaseRecord } from './store/store.js';

export const MAX_BODY_BYTES = 8 * 1024 * 1024;
/** Longest a worker's long poll is held; below common proxy idle timeouts. */
export const MAX_WAIT_SECONDS = 55;
/**
 * Requests one connection may have unanswered at once. HTTP/1.1 pipelining lets a client send
 * thousands without waiting (each a held long poll, a timer, a listener); no worker pipelines, so a
 * connection past this is closed.
 */
export const MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION = 16;

export interface RepoServer {
  readonly port: number;
  readonly registry: Registry;
  close(): Promise<void>;
}

class Reply {
  /** For the answer to a long poll a publish woke: when that publish happened (performance.now()). */
  pushedAt: number | undefined;
  constructor(
    readonly status: number,
    readonly body: string | Buffer = '',
    readonly headers: Record<string, string> = {},
  ) {}
}

const text = (status: number, body: string, headers: Record<string, string> = {}) => new Reply(status, body, { 'content-type': 'text/plain', ...headers });

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES) {
      reject(new RepoError(413, `Request body over ${MAX_BODY_BYTES} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.destroy();
        reject(new RepoError(413, `Request body over ${MAX_BODY_BYTES} bytes`));
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function parseJsonObject(body: Buffer): Record<string, unknown> {
  if (body.length === 0) return {};
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw new RepoError(400, 'Invalid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new RepoError(400, 'Invalid JSON: expected an object');
  return value as Record<string, unknown>;
}

/** flb's batch extension of PATCH /api/v1/repo/<codebase>: `files` maps paths to UTF-8 content, or null to erase. */
function parseBatchFiles(value: unknown): Map<string, Buffer | null> {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new RepoError(400, 'Invalid files: expected an object of path -> content (string) or null');
  const files = new Map<string, Buffer | null>();
  for (const [path, content] of Object.entries(value as Record<string, unknown>)) {
    if (content !== null && typeof content !== 'string') throw new RepoError(400, `Invalid files: ${JSON.stringify(path)} must be a string or null`);
    files.set(path, content === null ? null : Buffer.from(content, 'utf8'));
  }
  return files;
}

const MAX_DELTA_BYTES = 1024 * 1024;
/** Encoded deltas kept for the workers that ask for the same change: at most this many, of this many bytes. */
const MAX_DELTA_BODIES = 256;
export const MAX_DELTA_CACHE_BYTES = 32 * 1024 * 1024;

export interface RepoHandlerOptions {
  repo: Repo;
  log: Logger;
  /** Default: everyone may do everything (only for a repo bound to loopback). */
  auth?: Authenticator;
  /** Where the metrics go; default: a new registry with the process metrics. */
  registry?: Registry;
  /** Longest a long poll is held, in ms (MAX_WAIT_SECONDS unless told; a fuzz test shortens it). */
  maxWaitMs?: number;
  /** What `GET /healthz` adds about the store (etcd: reachable, watch lag); the disk store has nothing to add. */
  storeHealth?: () => { writable: boolean } & Record<string, unknown>;
}

export interface RepoServerOptions extends Omit<RepoHandlerOptions, 'registry'> {
  host: string;
  port: number;
  /** HTTPS with these; `ca` verifies client certificates (which stay optional: tokens work too). */
  tls?: { cert: string; key: string; ca?: string };
}

/** Where a reply goes: a ServerResponse, or in a test anything that takes the status, headers and body. */
export interface ReplySink {
  readonly headersSent: boolean;
  writeHead(status: number, headers: OutgoingHttpHeaders): unknown;
  end(body?: string | Buffer): unknown;
}

export interface RepoHandler {
  readonly registry: Registry;
  /** Answers one request; resolves once the answer is written. Never rejects. */
  handle(req: IncomingMessage, res: ReplySink): Promise<void>;
  /** Answers every held long poll and stops listening to the repo. */
  close(): void;
}

/** The request handler of `flb repo`, without a server: startRepoServer puts it behind one, a fuzz test calls it directly. */
export function createRepoHandler(options: RepoHandlerOptions): RepoHandler {
  const { repo, log } = options;
  const auth = options.auth ?? new Authenticator({ trustAnonymous: true });
  const maxWaitMs = options.maxWaitMs ?? MAX_WAIT_SECONDS * 1000;
  const registry = options.registry ?? createMetricsRegistry();
  const requests = new Counter({
    name: 'flb_repo_requests_total',
    help: 'Requests by route and status',
    labelNames: ['route', 'status'] as const,
    registers: [registry],
  });
  new Counter({
    name: 'flb_repo_bearer_tokens_total',
    help: 'Bearer tokens by outcome: cached, refused-locally (not a token for the repo, expired), reviewed (a TokenReview was made), rate-limited, review-failed',
    labelNames: ['outcome'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [outcome, count] of Object.entries(auth.counts)) this.inc({ outcome }, count);
    },
  });
  const closedConnections = new Counter({
    name: 'flb_repo_connections_closed_total',
    help: `Connections closed for having more than ${MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION} requests unanswered`,
    registers: [registry],
  });
  /** Unanswered requests per connection. */
  const inFlight = new WeakMap<object, number>();
  /** Connections with a long poll held. */
  const holding = new WeakSet<object>();
  new Gauge({
    name: 'flb_repo_long_polls',
    help: 'Long polls held now (workers waiting for a publish)',
    registers: [registry],
    collect() {
      this.set(waiters.size);
    },
  });
  new Gauge({
    name: 'flb_repo_connected_sidecars',
    help: 'Workers (flb sidecars, Pipy workers) whose last status report is under 60 s old, over all codebases',
    registers: [registry],
    collect() {
      this.set(repo.instanceUsage().instances);
    },
  });
  const publishes = new Counter({
    name: 'flb_repo_publishes_total',
    help: 'Changes to what a codebase serves: publishes (here or through another replica) and deletes',
    registers: [registry],
  });
  const pushLatency = new Histogram({
    name: 'flb_repo_push_latency_seconds',
    help: 'From a publish to the answer of each long poll it woke being written (delta encoding included)',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });

  async function route(req: IncomingMessage): Promise<{ route: string; reply: Reply }> {
    const method = req.method ?? 'GET';
    const rawPath = (req.url ?? '/').split('?')[0]!;
    let path: string;
    try {
      path = decodeURIComponent(rawPath);
    } catch {
      throw new RepoError(400, 'Invalid URL encoding');
    }
    if (path.includes('\0')) throw new RepoError(400, 'Invalid path: NUL byte');
    // No `.`/`..` segments anywhere: authorization compares path prefixes, so paths must be plain.
    if (path.split('/').some((segment) => segment === '.' || segment === '..')) throw new RepoError(400, 'Invalid path: "." and ".." segments are not allowed');

    // Before authentication: kubelet probes carry no credentials. Reads are served either way, so
    // the answer is 200; `writable: false` says writes get 503 until the store is back.
    if (path === '/healthz' && (method === 'GET' || method === 'HEAD')) {
      const store = options.storeHealth?.() ?? { writable: true };
      return {
        route: 'healthz',
        reply: new Reply(200, JSON.stringify({ status: store.writable ? 'ok' : 'degraded', ...store }), { 'content-type': 'application/json' }),
      };
    }

    let principal;
    try {
      principal = await auth.authenticate(req);
    } catch (error) {
      if (error instanceof TooManyTokenReviews) throw new RepoError(429, error.message, { 'retry-after': String(error.retryAfterSeconds) });
      log.warn({ err: error }, 'could not check credentials');
      throw new RepoError(503, 'cannot check credentials right now (TokenReview failed); retry');
    }
    if (!principal) throw new RepoError(401, 'authentication required: a client certificate, or a ServiceAccount token for the repo audience');
    if (!authorize(principal, method, path)) {
      throw new RepoError(
        403,
        `${principal.kind === 'sidecar' ? `sidecar ${principal.id}` : principal.kind} may not ${method} ${path}; sidecars read only the mesh codebase and their own`,
      );
    }

    if (path === '/metrics' && method === 'GET')
      return { route: 'metrics', reply: new Reply(200, await registry.metrics(), { 'content-type': registry.contentType }) };

    if (path === '/api/v1/repo' || path === '/api/v1/repo/') {
      if (method !== 'GET') return { route: 'list', reply: new Reply(405) };
      return { route: 'list', reply: text(200, repo.list().join('\n')) };
    }
    if (path.startsWith('/api/v1/repo/')) {
      const name = path.slice('/api/v1/repo'.length);
      const exact = repo.get(name);
      switch (method) {
        case 'GET': {
          if (exact) return { route: 'codebase', reply: new Reply(200, JSON.stringify(repo.info(exact)), { 'content-type': 'application/json' }) };
          const found = repo.resolve(name);
          const content = found ? await repo.readFile(found.codebase.name, found.file) : undefined;
          return { route: 'codebase', reply: content ? text(200, content.toString('utf8')) : new Reply(404) };
        }
        case 'POST':
          await repo.create(name, parseJsonObject(await readBody(req)));
          return { route: 'codebase', reply: new Reply(201) };
        case 'PATCH': {
          const body = parseJsonObject(await readBody(req));
          if (body.files === undefined) await repo.patch(name, body);
          else await repo.writeFiles(name, parseBatchFiles(body.files), { version: body.version, main: body.main });
          return { route: 'codebase', reply: new Reply(201) };
        }
        case 'DELETE':
          await repo.delete(name);
          return { route: 'codebase', reply: new Reply(204) };
        default:
          return { route: 'codebase', reply: new Reply(405) };
      }
    }
    if (path.startsWith('/api/v1/repo-files/')) {
      const rest = path.slice('/api/v1/repo-files'.length);
      checkPath(rest, 'filename');
      const found = repo.resolve(rest);
      if (!found) return { route: 'files', reply: text(404, 'Codebase not found') };
      const { codebase, file } = found;
      switch (method) {
        case 'GET': {
          const content = await repo.readFile(codebase.name, file);
          return { route: 'files', reply: content ? new Reply(200, content, { 'content-type': 'text/plain' }) : new Reply(404) };
        }
        case 'POST':
          await repo.writeDraft(codebase.name, file, await readBody(req));
          return { route: 'files', reply: new Reply(201) };
        case 'PATCH': {
          const body = await readBody(req);
          if (body.length === 0) await repo.discardDraft(codebase.name, file);
          else await repo.writeDraft(codebase.name, file, body);
          return { route: 'files', reply: new Reply(201) };
        }
        case 'DELETE':
          await repo.eraseFile(codebase.name, file);
          return { route: 'files', reply: new Reply(204) };
        default:
          return { route: 'files', reply: new Reply(405) };
      }
    }
    if (path === '/repo' || path.startsWith('/repo/')) return { route: 'served', reply: await served(req, method, path.slice('/repo'.length)) };
    return { route: 'unknown', reply: text(404, `No such route: ${method} ${rawPath}`) };
  }

  /** The tree workers poll: manifests, files, _etags, status reports. */
  async function served(req: IncomingMessage, method: string, path: string): Promise<Reply> {
    if (path.endsWith('/') && path.length > 1) {
      const record = repo.get(path.slice(0, -1));
      if (record && method === 'POST') {
        const body = await readBody(req);
        repo.reportStatus(record.name, parseJsonObject(body), req.socket.remoteAddress ?? '');
        return new Reply(201);
      }
      if (record && (method === 'GET' || method === 'HEAD') && repo.isServed(record)) {
        const known = req.headers['if-none-match'];
        let current = record;
        let pushedAt: number | undefined;
        if (known !== undefined && known === repo.etag(record)) {
          // Push by long poll: `Prefer: wait=N` (RFC 7240) holds the request until the etag
          // changes, so a publish reaches waiting workers at once; Pipy workers, which never send
          // If-None-Match, keep polling as before.
          const wait = Math.min(maxWaitMs, Number(/wait=(\d+)/.exec(String(req.headers.prefer ?? ''))?.[1] ?? 0) * 1000);
          // One held poll per connection: others on it (pipelined) are answered at once.
          if (wait > 0 && !holding.has(req.socket)) {
            holding.add(req.socket);
            try {
              pushedAt = await waitForChange(record.name, known, wait, req);
            } finally {
              holding.delete(req.socket);
            }
          }
          const now = repo.get(record.name);
          if (!now || !repo.isServed(now)) return pushed(new Reply(404), pushedAt);
          if (repo.etag(now) === known) return new Reply(304, '', { etag: known });
          current = now;
        }
        if (method === 'GET' && String(req.headers.accept ?? '').includes(DELTA_MEDIA_TYPE)) {
          // A pushed worker, or one back with an older etag the repo still remembers: the change
          // itself. A worker starting (no etag): every file at once, so a new sidecar is configured
          // after one round trip instead of 2 + one per file.
          const delta = await deltaReply(current, known);
          if (delta) return pushed(delta, pushedAt);
        }
        return pushed(text(200, repo.manifest(current), { etag: repo.etag(current) }), pushedAt);
      }
      if (!record && method === 'POST') return text(404, `Codebase not found: ${path.slice(0, -1)}`);
    } else if (method === 'GET' || method === 'HEAD') {
      const found = path ? repo.resolve(path) : undefined;
      if (found && repo.isServed(found.codebase)) {
        if (found.file === '/_etags') return text(200, repo.etagsListing(found.codebase), { etag: '' });
        const sha = repo.servedFiles(found.codebase)[found.file];
        const content = sha ? await repo.blob(sha) : undefined;
        if (content) return new Reply(200, content, { 'content-type': 'text/plain', etag: sha!.slice(0, 16) });
        return new Reply(404);
      }
    }
    if (method !== 'GET' && method !== 'HEAD') return new Reply(405);
    if (method === 'HEAD') return new Reply(404);
    const prefix = path.endsWith('/') ? path : `${path}/`;
    const listed = repo.list().filter((name) => name.startsWith(prefix));
    return listed.length ? text(200, listed.map((n) => `${n}/\n`).join('')) : new Reply(404);
  }

  /**
   * A push that carries what changed (files and their etags, removed paths) in the answer to the
   * long poll itself, so a pushed worker is current after one round trip instead of three
   * (manifest, `_etags`, files). Bodies are shared by every worker with the same change: a mesh
   * publish answers 1,000 derived codebases with one encoding. A worker that asks with no etag
   * (starting) gets every file the same way, marked `full`.
   */
  const deltaBodies = new Map<string, Promise<Buffer | undefined>>();
  /** Bytes of the encoded bodies in deltaBodies: each may be over a MiB, and a client can ask for many. */
  let deltaBytes = 0;
  async function deltaReply(record: CodebaseRecord, from: string | undefined): Promise<Reply | undefined> {
    const delta = from === undefined ? new Map(Object.entries(repo.servedFiles(record))) : repo.delta(record, from);
    if (!delta) return undefined;
    const full = from === undefined;
    const reply = (encoded: Buffer | undefined) =>
      encoded ? new Reply(200, encoded, { 'content-type': DELTA_MEDIA_TYPE, etag: repo.etag(record) }) : undefined;
    // A derived codebase's whole set is its own (sidecar.json differs): nothing to share, so not cached.
    if (full) return reply(await encodeDelta(record.main, delta, full));
    const key = `${record.main}\0${[...delta].join('\0')}`;
    let body = deltaBodies.get(key);
    if (!body) {
      if (deltaBodies.size >= MAX_DELTA_BODIES || deltaBytes > MAX_DELTA_CACHE_BYTES) {
        deltaBodies.clear();
        deltaBytes = 0;
      }
      // Cached as a promise: the workers a publish wakes all ask at once.
      const encoding = encodeDelta(record.main, delta, false);
      deltaBodies.set(key, (body = encoding));
      void encoding.then((encoded) => {
        if (deltaBodies.get(key) === encoding) deltaBytes += encoded?.length ?? 0;
      });
    }
    return reply(await body);
  }
  async function encodeDelta(main: string, delta: Delta, full: boolean): Promise<Buffer | undefined> {
    const files: Record<string, { etag: string; content: string; encoding: 'utf8' | 'base64' }> = {};
    const removed: string[] = [];
    let size = 0;
    for (const [path, sha] of delta) {
      if (sha === null) {
        removed.push(path);
        continue;
      }
      const content = await repo.blob(sha);
      if (!content) return undefined;
      size += content.length;
      if (size > MAX_DELTA_BYTES) return undefined;
      files[path] = isUtf8(content)
        ? { etag: sha.slice(0, 16), content: content.toString('utf8'), encoding: 'utf8' }
        : { etag: sha.slice(0, 16), content: content.toString('base64'), encoding: 'base64' };
    }
    return Buffer.from(JSON.stringify({ main, files, removed, ...(full ? { full } : {}) }));
  }

  function pushed(reply: Reply, publishedAt: number | undefined): Reply {
    reply.pushedAt = publishedAt;
    return reply;
  }

  const waiters = new Set<{ name: string; wake: (publishedAt: number) => void; cancel: () => void }>();
  const unsubscribe = repo.onPublish((changed) => {
    publishes.inc();
    const publishedAt = performance.now();
    for (const waiter of waiters) if (repo.chain(waiter.name).includes(changed) || waiter.name === changed) waiter.wake(publishedAt);
  });
  /** Resolves when the codebase's etag moves (with the time of the publish that moved it) or the wait is over (undefined). */
  function waitForChange(name: string, etag: string, timeoutMs: number, req: IncomingMessage): Promise<number | undefined> {
    return new Promise((resolve) => {
      const done = (publishedAt?: number) => {
        clearTimeout(timer);
        waiters.delete(waiter);
        req.socket.off('close', hungUp);
        resolve(publishedAt);
      };
      const hungUp = () => done();
      const waiter = {
        name,
        wake: (publishedAt: number) => {
          const record = repo.get(name);
          if (!record || repo.etag(record) !== etag) done(publishedAt);
        },
        cancel: () => done(),
      };
      const timer = setTimeout(() => done(), timeoutMs);
      waiters.add(waiter);
      // A worker that hangs up stops waiting.
      req.socket.once('close', hungUp);
    });
  }

  async function handle(req: IncomingMessage, res: ReplySink): Promise<void> {
    const pending = (inFlight.get(req.socket) ?? 0) + 1;
    if (pending > MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION) {
      closedConnections.inc();
      req.socket.destroy();
      return;
    }
    inFlight.set(req.socket, pending);
    try {
      const { route: name, reply } = await route(req);
      requests.inc({ route: name, status: String(reply.status) });
      const body = req.method === 'HEAD' ? '' : reply.body;
      res.writeHead(reply.status, { server: 'flb-repo', 'content-length': String(Buffer.byteLength(reply.body)), ...reply.headers });
      res.end(body);
      if (reply.pushedAt !== undefined) pushLatency.observe((performance.now() - reply.pushedAt) / 1000);
    } catch (error) {
      const status = error instanceof RepoError ? error.status : error instanceof StoreUnavailable ? 503 : 500;
      const message = error instanceof Error ? error.message : String(error);
      // An unreachable store is logged once by the replica sync, not on every refused write.
      if (status >= 500 && !(error instanceof StoreUnavailable)) log.error({ err: error, url: req.url }, 'repo request failed');
      requests.inc({ route: 'error', status: String(status) });
      const headers = {
        server: 'flb-repo',
        'content-type': 'text/plain',
        connection: status === 413 ? 'close' : 'keep-alive',
        ...(error instanceof RepoError ? error.headers : {}),
        ...(error instanceof StoreUnavailable ? { 'retry-after': '1' } : {}),
      };
      if (!res.headersSent) {
        res.writeHead(status, headers);
        res.end(message);
      }
    } finally {
      inFlight.set(req.socket, (inFlight.get(req.socket) ?? 1) - 1);
    }
  }

  return {
    registry,
    handle,
    close: () => {
      unsubscribe();
      for (const waiter of [...waiters]) waiter.cancel();
    },
  };
}

export async function startRepoServer(options: RepoServerOptions): Promise<RepoServer> {
  const { repo } = options;
  const repoHandler = createRepoHandler(options);
  const { registry } = repoHandler;
  const handler = (req: IncomingMessage, res: ServerResponse) => void repoHandler.handle(req, res);
  const server: Server = options.tls
    ? createHttpsServer(
        {
          cert: options.tls.cert,
          key: options.tls.key,
          minVersion: 'TLSv1.2',
          ...(options.tls.ca ? { ca: options.tls.ca, requestCert: true, rejectUnauthorized: false } : {}),
        },
        handler,
      )
    : createServer(handler);
  // Workers polling every 5 s keep their connection (Node announces `Keep-Alive: timeout=65`,
  // which fetch honours), so a poll costs no TLS handshake.
  server.keepAliveTimeout = 65_000;
  const connections = new Counter({
    name: 'flb_repo_connections_total',
    help: 'Connections accepted; with TLS, whether the session was resumed',
    labelNames: ['tls'] as const,
    registers: [registry],
  });
  if (options.tls) server.on('secureConnection', (socket: TLSSocket) => connections.inc({ tls: socket.isSessionReused() ? 'resumed' : 'full-handshake' }));
  else server.on('connection', () => connections.inc({ tls: 'none' }));
  const expiry = setInterval(() => repo.expireInstances(), 5000);
  expiry.unref();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    registry,
    close: () =>
      new Promise<void>((resolve) => {
        clearInterval(expiry);
        repoHandler.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
