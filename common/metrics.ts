/*
 * The one way a component makes its Prometheus registry. Node's process metrics
 * (process_cpu_seconds_total, process_resident_memory_bytes, nodejs_heap_size_used_bytes,
 * nodejs_eventloop_lag_seconds, ...) keep prom-client's standard names in every component, never
 * a prefix: stock Node.js dashboards and alerts then see the repo, the bridge, the injector, the
 * CNI agent and every sidecar alike, told apart by the scrape's job and pod labels.
 */
import { Registry, collectDefaultMetrics } from 'prom-client';

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
