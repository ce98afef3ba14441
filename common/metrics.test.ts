import { describe, expect, it } from '@jest/globals';
import { Counter, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics, createMetricsRegistry, exposedSeriesNames } from './metrics.js';

describe('component registries', () => {
  it("carry Node's process metrics under the standard names stock dashboards query", async () => {
    const text = await createMetricsRegistry().metrics();
    for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds'])
      expect(text).toMatch(new RegExp(`^${name} `, 'm'));
    expect(text).not.toMatch(/^flb_\w*(process|nodejs)_/m);
  });

  it('leave them out when asked, and add them to a registry made elsewhere', async () => {
    const bare = createMetricsRegistry({ processMetrics: false });
    expect(await bare.metrics()).toBe('\n');
    const other = new Registry();
    collectProcessMetrics(other);
    expect(await exposedSeriesNames(other)).toContain('process_cpu_seconds_total');
  });

  it("name the series a query sees: a histogram's buckets, sum and count", async () => {
    const registry = createMetricsRegistry({ processMetrics: false });
    new Counter({ name: 'x_total', help: 'x', registers: [registry] });
    new Histogram({ name: 'y_seconds', help: 'y', registers: [registry] });
    expect([...(await exposedSeriesNames(registry))].sort()).toEqual(['x_total', 'y_seconds_bucket', 'y_seconds_count', 'y_seconds_sum']);
  });
});
