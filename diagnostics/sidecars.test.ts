import { describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { endpointHealth, proxyConfigView, proxyStatusRows, renderProxyConfig, renderProxyStatus, sidecarTarget, type RepoInstance } from './sidecars.js';

const NOW = Date.parse('2031-05-01T12:00:00Z');
const example = (name: string) => readFileSync(new URL(`../common/contract/examples/${name}`, import.meta.url), 'utf8');

const instance = (agoMs: number, status: Record<string, unknown>): RepoInstance => ({ ip: '10.244.1.5', timestamp: NOW - agoMs, status });

describe('proxy-status rows', () => {
  it('reads applied against latest from the instance that reported last (a restarted sidecar leaves its old one for a minute)', () => {
    const [row] = proxyStatusRows(
      [
        {
          id: 'pod.shop.a',
          latest: '4+12',
          instances: [
            instance(20_000, { ready: true, appliedVersion: '3+11', source: 'repo' }),
            instance(1000, { ready: true, appliedVersion: '4+12', source: 'repo' }),
          ],
        },
      ],
      undefined,
      NOW,
      30_000,
    );
    expect(row).toEqual({
      id: 'pod.shop.a',
      state: 'SYNCED',
      ready: true,
      applied: '4+12',
      latest: '4+12',
      source: 'repo',
      rejected: [],
      lastReportAgoMs: 1000,
      instances: 2,
    });
  });

  it('tells behind, not ready, silent, not reporting, not published and injected pods with no codebase apart', () => {
    const rows = proxyStatusRows(
      [
        { id: 'pod.shop.behind', latest: '5+1', instances: [instance(1000, { ready: true, appliedVersion: '4+1' })] },
        { id: 'pod.shop.unready', latest: '5+1', instances: [instance(1000, { ready: false, appliedVersion: '' })] },
        { id: 'pod.shop.silent', latest: '5+1', instances: [instance(45_000, { ready: true, appliedVersion: '5+1' })] },
        { id: 'pod.shop.quiet', latest: '5+1', instances: [] },
        { id: 'vm.billing-1', instances: [] },
      ],
      ['pod.shop.behind', 'pod.shop.new'],
      NOW,
      30_000,
    );
    expect(rows.map((r) => [r.id, r.state])).toEqual([
      ['pod.shop.behind', 'BEHIND'],
      ['pod.shop.new', 'NO CODEBASE'],
      ['pod.shop.quiet', 'NOT REPORTING'],
      ['pod.shop.silent', 'SILENT'],
      ['pod.shop.unready', 'NOT READY'],
      ['vm.billing-1', 'NOT PUBLISHED'],
    ]);
  });

  it('lists each refused file with its reason under the table, and what each state means', () => {
    const rows = proxyStatusRows(
      [
        {
          id: 'pod.shop.a',
          latest: '5+2',
          instances: [
            instance(2000, {
              ready: true,
              appliedVersion: '5+1',
              source: 'repo',
              rejected: [{ path: 'services/orders.shop.json', error: 'endpoints[1].port: must be a port number, 1-65535' }],
              rejectedOmitted: 3,
            }),
          ],
        },
      ],
      undefined,
      NOW,
      30_000,
    );
    expect(rows[0]!.rejected).toEqual([{ path: 'services/orders.shop.json', error: 'endpoints[1].port: must be a port number, 1-65535' }]);
    expect(renderProxyStatus(rows)).toBe(
      [
        'SIDECAR     STATE   APPLIED  LATEST  REJECTED  SOURCE  LAST REPORT',
        'pod.shop.a  BEHIND  5+1      5+2     4         repo    2s ago',
        '',
        'pod.shop.a: refused services/orders.shop.json: endpoints[1].port: must be a port number, 1-65535',
        'pod.shop.a: and 3 more refused files (its report had no room for them)',
        '',
        'BEHIND: runs an older version than the latest (a newer one is on its way, or was refused: see below)',
        '',
      ].join('\n'),
    );
  });

  it('says when there is no sidecar at all', () => {
    expect(renderProxyStatus([])).toContain('no sidecars');
  });
});

describe('proxy-config targets', () => {
  it('takes a sidecar id, NAMESPACE/NAME, pod/NAME, a bare NAME in the namespace given, and a VM either way', () => {
    expect(sidecarTarget('pod.shop.orders-7d9f-x2x4', 'default')).toEqual({
      id: 'pod.shop.orders-7d9f-x2x4',
      pod: { namespace: 'shop', name: 'orders-7d9f-x2x4' },
    });
    expect(sidecarTarget('shop/orders-1', 'default')).toEqual({ id: 'pod.shop.orders-1', pod: { namespace: 'shop', name: 'orders-1' } });
    expect(sidecarTarget('pod/orders-1', 'shop')).toEqual({ id: 'pod.shop.orders-1', pod: { namespace: 'shop', name: 'orders-1' } });
    expect(sidecarTarget('orders-1', 'shop')).toEqual({ id: 'pod.shop.orders-1', pod: { namespace: 'shop', name: 'orders-1' } });
    expect(sidecarTarget('vm/billing-1', 'shop')).toEqual({ id: 'vm.billing-1' });
    expect(sidecarTarget('vm.billing-1', 'shop')).toEqual({ id: 'vm.billing-1' });
  });
});

describe('proxy-config view', () => {
  const files = {
    'mesh.json': example('mesh.json'),
    'sidecar.json': example('sidecar.json'),
    'services/orders.shop.json': example('service-kubernetes.json'),
    'services/payments.eureka-prod.eureka.json': example('service-eureka.json'),
  };
  const facts = {
    id: 'pod.shop.orders-7d9f8c6b5-x2x4q',
    latest: '7+30',
    instances: [instance(3000, { ready: true, appliedVersion: '7+30' })],
    files,
    catalogSize: 12,
    unreadable: [],
    now: NOW,
  };

  it("shows the services it may reach, their endpoints with the registry's health, listeners from mesh.json, inbound ports and DNS", () => {
    const view = proxyConfigView(facts);
    expect(view.applied).toBe('7+30');
    expect(view.services.map((s) => s.id)).toEqual(['orders.shop', 'payments.eureka-prod.eureka']);
    const orders = view.services[0]!;
    expect(orders).toMatchObject({ vips: ['10.96.14.20'], loadBalancer: 'least-request', hostnames: ['orders.shop.svc.cluster.local'] });
    expect(orders.endpoints.map((e) => [e.address, e.healthy])).toEqual([
      ['10.244.1.5', true],
      ['10.244.2.7', true],
      ['10.244.3.9', false],
    ]);
    expect(view.listeners.find((l) => l.port === 15001)?.what).toContain('outbound');
    expect(view.inbound).toEqual([{ port: 8080, protocol: 'http', name: 'http' }]);
    expect(view.dns).toEqual([{ name: 'payments', type: 'A', address: '240.240.0.17', service: 'payments.eureka-prod.eureka' }]);
    const text = renderProxyConfig(view);
    expect(text).toContain('sidecar pod.shop.orders-7d9f8c6b5-x2x4q: pod shop/orders-7d9f8c6b5-x2x4q, zone east-1a');
    expect(text).toContain('configuration: applied 7+30 (the latest); reported 3s ago, ready');
    expect(text).toMatch(/orders\.shop +10\.244\.3\.9:8080 +east-1b +1 +0 +UNHEALTHY \(registry\)$/m);
    expect(text).toContain('SERVICES (2 this sidecar may reach, of 12 in the catalog)');
    // This report (an older sidecar's) carries no results of the sidecar's own checks, and says so.
    expect(text).toContain("ENDPOINTS (health as the registry says: the sidecar's last report carries no results of its own checks)");
    expect(text).toContain('not reported by the sidecar, so not shown: requests in flight per endpoint');
  });

  it("shows the endpoints the sidecar's active checks failed and its outlier detection ejected, from its last report", () => {
    const view = proxyConfigView({
      ...facts,
      instances: [
        instance(3000, {
          ready: true,
          appliedVersion: '7+30',
          unhealthyEndpoints: [
            { service: 'orders.shop', endpoint: '10.244.1.5:8080', activeHealth: 'unhealthy', ejected: false },
            { service: 'orders.shop', endpoint: '10.244.2.7:8080', activeHealth: 'healthy', ejected: true, ejectedUntil: '2026-12-06T07:00:30.000Z' },
            { service: 'gone.shop', endpoint: '10.0.0.1:80', activeHealth: 'unhealthy', ejected: false },
            'garbage',
          ],
          unhealthyEndpointsOmitted: 2,
        }),
      ],
    });
    expect(view.services[0]!.endpoints.map((e) => endpointHealth(e))).toEqual([
      'UNHEALTHY (active check)',
      'EJECTED until 2026-12-06T07:00:30.000Z',
      'UNHEALTHY (registry)',
    ]);
    const text = renderProxyConfig(view);
    expect(text).toContain("ENDPOINTS (health: the registry's, then the sidecar's active checks and outlier ejections, as of its last report)");
    expect(text).toMatch(/orders\.shop +10\.244\.1\.5:8080 +east-1a +1 +0 +UNHEALTHY \(active check\)$/m);
    expect(text).toContain('and 2 more endpoints taken out by the sidecar that its report had no room for');
    expect(text).not.toContain('active health-check results per endpoint');
  });

  it('says when the applied version is not the latest shown, and names a file that fails the contract and a service the catalog lacks', () => {
    const view = proxyConfigView({
      ...facts,
      instances: [instance(3000, { ready: true, appliedVersion: '6+29', rejected: [{ path: 'services/orders.shop.json', error: 'bad' }] })],
      files: { ...files, 'services/payments.eureka-prod.eureka.json': '{"apiVersion":"flb.flomesh.io/v1alpha1","kind":"Service"}' },
    });
    expect(view.invalid.map((f) => f.path)).toEqual(['services/payments.eureka-prod.eureka.json']);
    expect(view.missingServices).toEqual(['payments.eureka-prod.eureka']);
    const text = renderProxyConfig(view);
    expect(text).toContain('applied 6+29; the latest is 7+30, shown below');
    expect(text).toContain('refused by the sidecar: services/orders.shop.json: bad');
    expect(text).toContain('fails the contract as served now: services/payments.eureka-prod.eureka.json: id: required');
  });
});
