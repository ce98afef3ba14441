import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import { parseDuration } from '../common/duration.js';
import { LOG_LEVELS, type Logger } from '../common/log.js';
import type { AccessLog } from './access-log.js';
import { listen } from './listen.js';

/** The sidecar's readiness: `reason` says why not (or `ready`). */
export interface Readiness {
  ready: boolean;
  reason: string;
}

/** /ready's answer, on the admin port and the probe ports alike: 200 `ready`, or 503 with the reason. */
export function answerReady(res: ServerResponse, readiness: Readiness): void {
  res.writeHead(readiness.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(readiness.ready ? 'ready\n' : `not ready: ${readiness.reason}\n`);
}

/** The longest `/ready?wait=` the admin port holds a request; a waiter asks again after it. */
export const MAX_READY_WAIT_MS = 60_000;
/**
 * How often a held `/ready?wait=` looks at the readiness again: a function call in this process,
 * not a question over HTTP, so a few milliseconds cost nothing worth counting.
 */
const READY_RECHECK_MS = 5;

/**
 * `/ready?wait=DURATION` (e.g. `5s`): held until the sidecar is ready or the time is up, then
 * answered as plain /ready would be. flb-init and the postStart waiter use it to learn of the
 * readiness the moment it comes, where asking every 50 ms was 25 ms late on average and cost the
 * starting sidecar a request each time. The kubelet's probes, on the probe ports, never wait.
 */
function answerReadyWhenReady(req: IncomingMessage, res: ServerResponse, wait: string, readiness: () => Readiness, server: Server): void {
  let waitMs: number;
  try {
    waitMs = parseDuration(wait);
  } catch (error) {
    return void res
      .writeHead(400, { 'content-type': 'text/plain' })
      .end(`${(error as Error).message}: /ready?wait=5s holds the answer until ready, up to that long\n`);
  }
  if (waitMs > MAX_READY_WAIT_MS)
    return void res
      .writeHead(400, { 'content-type': 'text/plain' })
      .end(`/ready?wait=${wait} is longer than the ${MAX_READY_WAIT_MS / 1000} s the admin port holds a request: ask again after it\n`);
  const deadline = Date.now() + waitMs;
  const answerNowIfDone = (): boolean => {
    const now = readiness();
    // A closing server is not held open by its waiters: they get the answer of the moment.
    if (!now.ready && Date.now() < deadline && server.listening) return false;
    answerReady(res, now);
    return true;
  };
  if (answerNowIfDone()) return;
  const timer = setInterval(() => {
    if (answerNowIfDone()) clearInterval(timer);
  }, READY_RECHECK_MS);
  // The waiter gave up or went away: nothing to answer.
  req.socket.once('close', () => clearInterval(timer));
}

export interface AdminOptions {
  host: string;
  port: number;
  readiness: () => Readiness;
  configDump: () => unknown;
  endpoints: () => unknown;
  /** The BGP announcer's status (`flb bgp status --admin`); undefined when sidecar.json has no bgp section. */
  bgp?: () => unknown;
  registry: Registry;
  /** The sidecar's logger, whose level `/logging` reads and sets. */
  log: Logger;
  accessLog: AccessLog;
}

const PATHS = ['/ready', '/live', '/config_dump', '/endpoints', '/metrics', '/logging', '/access_log', '/bgp'];

const json = (res: ServerResponse, status: number, body: unknown): void =>
  void res.writeHead(status, { 'content-type': 'application/json' }).end(`${JSON.stringify(body, null, 2)}\n`);

async function metrics(res: ServerResponse, registry: Registry): Promise<void> {
  res.writeHead(200, { 'content-type': registry.contentType }).end(await registry.metrics());
}

/**
 * `/logging`: GET says the level; POST or PUT `?level=debug` sets it (as Envoy's admin
 * `/logging?level=`), until the next change or a restart (which goes back to FLB_LOG_LEVEL).
 */
function logging(req: IncomingMessage, res: ServerResponse, query: URLSearchParams, log: Logger): void {
  if (req.method === 'GET' || req.method === 'HEAD') return json(res, 200, { level: log.level });
  const level = query.get('level')?.trim().toLowerCase();
  if (!level || !(LOG_LEVELS as readonly string[]).includes(level))
    return json(res, 400, { error: `say the level: /logging?level=LEVEL, one of ${LOG_LEVELS.join(', ')}`, level: log.level });
  const previous = log.level;
  if (level !== previous) {
    // Said at the old level's reach and the new one's: whoever reads the logs sees why they changed.
    log.level = 'info';
    log.info({ level, previous }, 'log level changed on the admin port');
    log.level = level;
  }
  json(res, 200, { level, previous });
}

/** `/access_log`: GET says whether it is on; POST or PUT `?enabled=true|false` turns it on or off until the next mesh.json change. */
function accessLogSwitch(req: IncomingMessage, res: ServerResponse, query: URLSearchParams, accessLog: AccessLog, log: Logger): void {
  if (req.method === 'GET' || req.method === 'HEAD') return json(res, 200, { enabled: accessLog.enabled });
  const value = query.get('enabled');
  if (value !== 'true' && value !== 'false') return json(res, 400, { error: 'say /access_log?enabled=true or ?enabled=false', enabled: accessLog.enabled });
  const enabled = value === 'true';
  if (enabled !== accessLog.enabled) log.info({ enabled }, 'access log switched on the admin port');
  accessLog.setEnabled(enabled);
  json(res, 200, { enabled });
}

/**
 * The admin port (15000, loopback only, as Envoy's): /ready (`?wait=5s`: held until ready), /live, /config_dump (what the sidecar
 * runs: version, mesh, sidecar.json, services, refused files), /endpoints (every endpoint with its
 * health, ejection and load), /metrics, /logging (the log level, read and set), /access_log (on or off).
 */
export function startAdmin(options: AdminOptions): Promise<Server> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const [path, search] = (req.url ?? '/').split('?', 2) as [string, string | undefined];
    const query = new URLSearchParams(search ?? '');
    if (path === '/logging' || path === '/access_log') {
      if (req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'POST' && req.method !== 'PUT')
        return void res.writeHead(405, { allow: 'GET, POST, PUT' }).end();
      return path === '/logging' ? logging(req, res, query, options.log) : accessLogSwitch(req, res, query, options.accessLog, options.log);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { allow: 'GET' }).end();
    switch (path) {
      case '/ready': {
        const wait = query.get('wait');
        return wait === null ? answerReady(res, options.readiness()) : answerReadyWhenReady(req, res, wait, options.readiness, server);
      }
      case '/live':
      case '/healthz':
        return void res.writeHead(200, { 'content-type': 'text/plain' }).end('live\n');
      case '/config_dump':
        return json(res, 200, options.configDump());
      case '/endpoints':
      case '/clusters':
        return json(res, 200, options.endpoints());
      case '/metrics':
      case '/stats/prometheus':
        return void metrics(res, options.registry);
      case '/bgp': {
        const status = options.bgp?.();
        return status === undefined ? json(res, 404, { error: 'no BGP announcer runs: sidecar.json has no bgp section' }) : json(res, 200, status);
      }
      default:
        return json(res, 404, { error: `no such admin path ${path}`, paths: PATHS });
    }
  });
  return listen(server, options.host, options.port).then(() => server);
}

/** The metrics port (15010, on every address, for Prometheus to scrape). */
export function startMetricsServer(host: string, port: number, registry: Registry): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics' || path === '/stats/prometheus') return void metrics(res, registry);
    res.writeHead(404, { 'content-type': 'text/plain' }).end('metrics are at /metrics\n');
  });
  return listen(server, host, port).then(() => server);
}
