/*
 * The one way a component makes its Prometheus registry. Node's process metrics
 * (process_cpu_seconds_total, process_resident_memory_bytes, nodejs_heap_size_used_bytes,
 * nodejs_eventloop_lag_seconds, ...) keep prom-client's standard names in every component, never
 * a prefix: stock Node.js dashboards and alerts then see the repo, the bridge, the injector, the
 * CNI agent and every sidecar alike, told apart by the scrape's job and pod labels.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { formatAddress, listenError } from './errors.js';

/** A component's registry; with `processMetrics: false` (tests, a second handler in one process) only its own metrics. */
export function createMetricsRegistry(options: { processMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  if (options.processMetrics ?? true) collectProcessMetrics(registry);
  return registry;
}

/** Node's process metrics under their standard names, into a registry made elsewhere. */
export function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
}

/**
 * The series names a registry exposes, as a query names them: a histogram's `_bucket`, `_sum` and
 * `_count`, a summary's `_sum` and `_count` besides its quantiles.
 */
export async function exposedSeriesNames(registry: Registry): Promise<Set<string>> {
  const names = new Set<string>();
  for (const metric of await registry.getMetricsAsJSON()) {
    // prom-client's typings say a numeric enum; at run time the type is its name.
    switch (String(metric.type)) {
      case 'histogram':
        for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${metric.name}${suffix}`);
        break;
      case 'summary':
        for (const suffix of ['', '_sum', '_count']) names.add(`${metric.name}${suffix}`);
        break;
      default:
        names.add(metric.name);
    }
  }
  return names;
}

/**
 * A plain HTTP listener answering GET /metrics with the registry, for a component without an HTTP
 * server of its own. `what` names it in the error a busy address gets.
 */
export async function startMetricsServer(
  registry: Registry,
  address: { host: string; port: number },
  listener: { what: string; flag: string },
): Promise<{ port: number; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    if ((req.url ?? '/').split('?')[0] !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try GET /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (error: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(error)}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) => reject(listenError(error, { ...listener, address: formatAddress(address.host, address.port) })));
    server.listen(address.port, address.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
