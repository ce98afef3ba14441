import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
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

export interface AdminOptions {
  host: string;
  port: number;
  readiness: () => Readiness;
  configDump: () => unknown;
  endpoints: () => unknown;
  registry: Registry;
}

const json = (res: ServerResponse, status: number, body: unknown) =>
  res.writeHead(status, { 'content-type': 'application/json' }).end(`${JSON.stringify(body, null, 2)}\n`);

async function metrics(res: ServerResponse, registry: Registry): Promise<void> {
  res.writeHead(200, { 'content-type': registry.contentType }).end(await registry.metrics());
}

/**
 * The admin port (15000, loopback only, as Envoy's): /ready, /live, /config_dump (what the sidecar
 * runs: version, mesh, sidecar.json, services, refused files), /endpoints (every endpoint with its
 * health, ejection and load), /metrics.
 */
export function startAdmin(options: AdminOptions): Promise<Server> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { allow: 'GET' }).end();
    switch (path) {
      case '/ready':
        return answerReady(res, options.readiness());
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
      default:
        return json(res, 404, { error: `no such admin path ${path}`, paths: ['/ready', '/live', '/config_dump', '/endpoints', '/metrics'] });
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
