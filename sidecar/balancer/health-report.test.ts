import { describe, expect, it } from '@jest/globals';
import { endpointHealthReport } from './health-report.js';
import type { EndpointSnapshot, PoolSnapshot } from './pool.js';

const endpoint = (address: string, more: Partial<EndpointSnapshot> = {}): EndpointSnapshot => ({
  key: `${address}|8080`,
  address,
  port: 8080,
  weight: 1,
  priority: 0,
  registryHealthy: true,
  activeHealth: 'healthy',
  ejected: false,
  ejections: 0,
  inFlight: 0,
  usable: true,
  ...more,
});
const pool = (service: string, endpoints: EndpointSnapshot[]): PoolSnapshot => ({ service, algorithm: 'round-robin', panic: false, levels: [], endpoints });

describe("a sidecar's report of the endpoints its own checks took out", () => {
  it('lists endpoints failing active checks and ejected ones, with when the ejection ends, and nothing for a healthy mesh', () => {
    expect(endpointHealthReport([pool('a.shop', [endpoint('10.0.0.1'), endpoint('10.0.0.2', { activeHealth: 'unknown' })])])).toEqual({
      unhealthyEndpoints: [],
    });
    const report = endpointHealthReport([
      pool('a.shop', [endpoint('10.0.0.1'), endpoint('10.0.0.2', { activeHealth: 'unhealthy', usable: false })]),
      pool('b.shop', [endpoint('fd00::5', { ejected: true, ejectedUntil: '2026-12-06T07:00:30.000Z', ejections: 2, usable: false })]),
    ]);
    expect(report).toEqual({
      unhealthyEndpoints: [
        { service: 'a.shop', endpoint: '10.0.0.2:8080', activeHealth: 'unhealthy', ejected: false },
        { service: 'b.shop', endpoint: '[fd00::5]:8080', activeHealth: 'healthy', ejected: true, ejectedUntil: '2026-12-06T07:00:30.000Z' },
      ],
    });
  });

  it('carries at most the limit and counts the rest', () => {
    const many = Array.from({ length: 50 }, (_, i) => endpoint(`10.0.1.${i}`, { activeHealth: 'unhealthy' }));
    const report = endpointHealthReport([pool('c.shop', many)], 40);
    expect(report.unhealthyEndpoints).toHaveLength(40);
    expect(report.unhealthyEndpointsOmitted).toBe(10);
  });
});
