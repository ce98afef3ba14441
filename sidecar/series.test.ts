import { describe, expect, it } from '@jest/globals';
import { Registry } from 'prom-client';
import { counterFamily, gaugeFamily, histogramFamily } from './series.js';

describe('hot-path series exposed through prom-client', () => {
  it('writes counters, gauges and histograms in the Prometheus text format, labels escaped', async () => {
    const registry = new Registry();
    let reads = 0;
    const counter = counterFamily(registry, 'x_total', 'Things', () => reads++);
    const gauge = gaugeFamily(registry, 'x_open', 'Open things');
    const histogram = histogramFamily(registry, 'x_seconds', 'How long', [0.1, 1]);
    const a = counter.cell({ service: 'a' });
    a.inc();
    a.inc(4);
    counter.cell({ service: 'say "hi"\n' }).inc();
    expect(counter.cell({ service: 'a' })).toBe(a);
    const open = gauge.cell({ service: 'a' });
    open.inc();
    open.inc();
    open.dec();
    const h = histogram.cell({ service: 'a' });
    for (const v of [0.05, 0.1, 0.5, 3]) h.observe(v);
    const text = await registry.metrics();
    expect(reads).toBe(1);
    expect(text).toContain('# HELP x_total Things\n# TYPE x_total counter\nx_total{service="a"} 5\nx_total{service="say \\"hi\\"\\n"} 1\n');
    expect(text).toContain('# TYPE x_open gauge\nx_open{service="a"} 1\n');
    expect(text).toContain(
      [
        '# TYPE x_seconds histogram',
        'x_seconds_bucket{service="a",le="0.1"} 2',
        'x_seconds_bucket{service="a",le="1"} 3',
        'x_seconds_bucket{service="a",le="+Inf"} 4',
        'x_seconds_sum{service="a"} 3.65',
        'x_seconds_count{service="a"} 4',
      ].join('\n'),
    );
    expect(await registry.getSingleMetricAsString('x_open')).toContain('x_open{service="a"} 1');
    registry.resetMetrics();
    expect(await registry.metrics()).not.toContain('x_total{');
  });
});
