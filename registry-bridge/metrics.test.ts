import { describe, expect, it } from '@jest/globals';
import type { BridgeStatus } from './bridge.js';
import { createBridgeMetrics } from './metrics.js';
import { renderBridgeStatus } from './status.js';

const now = Date.now();
const status = (leading: boolean): BridgeStatus => ({
  identity: 'bridge-0',
  leader: leading,
  leaseHolder: leading ? 'bridge-0' : 'bridge-1',
  mesh: { name: 'flb', where: 'ConfigMap flomesh/flb-mesh' },
  catalog: { services: 12, sidecars: 4, rejected: 1, conflicts: 2 },
  sources: [
    {
      name: 'kubernetes',
      kind: 'kubernetes',
      address: 'https://10.96.0.1:443',
      state: 'synced',
      services: 10,
      endpoints: 30,
      sidecars: 4,
      lastContactAt: now - 2000,
      lastSyncAt: now - 5000,
      errors: 0,
      ...(leading ? { syncLagMs: 0 } : {}),
    },
    {
      name: 'consul',
      kind: 'consul',
      address: 'http://consul:8500',
      state: 'stale',
      services: 2,
      endpoints: 6,
      sidecars: 0,
      lastContactAt: now - 90_000,
      lastSyncAt: now - 95_000,
      errors: 7,
      ...(leading ? { syncLagMs: 42_000 } : {}),
    },
  ],
  sinks: leading ? [{ name: 'repo', kind: 'repo', address: 'https://flb-repo:6060', pending: 3, writes: 40, failures: 2, lastWriteAt: now - 1000 }] : [],
});

/** The sample lines of a scrape that start with `name`. */
const samples = (text: string, name: string) => text.split('\n').filter((line) => line.startsWith(name));

describe("the bridge's metrics", () => {
  it('say what flb bridge status says, the lag included, with the counts since start as counters', async () => {
    const text = await createBridgeMetrics(() => status(true), { processMetrics: false }).registry.metrics();
    expect(samples(text, 'flb_bridge_source_sync_lag_seconds{')).toEqual([
      'flb_bridge_source_sync_lag_seconds{source="kubernetes",kind="kubernetes"} 0',
      'flb_bridge_source_sync_lag_seconds{source="consul",kind="consul"} 42',
    ]);
    expect(samples(text, 'flb_bridge_source_errors_total{')).toEqual([
      'flb_bridge_source_errors_total{source="kubernetes",kind="kubernetes"} 0',
      'flb_bridge_source_errors_total{source="consul",kind="consul"} 7',
    ]);
    expect(text).toContain('# TYPE flb_bridge_source_errors_total counter');
    expect(samples(text, 'flb_bridge_source_stale{')).toEqual([
      'flb_bridge_source_stale{source="kubernetes",kind="kubernetes"} 0',
      'flb_bridge_source_stale{source="consul",kind="consul"} 1',
    ]);
    expect(samples(text, 'flb_bridge_source_endpoints{')[1]).toBe('flb_bridge_source_endpoints{source="consul",kind="consul"} 6');
    expect(Number(samples(text, 'flb_bridge_source_last_sync_age_seconds{source="consul"')[0]!.split(' ')[1])).toBeGreaterThanOrEqual(95);
    expect(samples(text, 'flb_bridge_sink_')).toEqual([
      'flb_bridge_sink_pending{sink="repo",kind="repo"} 3',
      'flb_bridge_sink_writes_total{sink="repo",kind="repo"} 40',
      'flb_bridge_sink_failures_total{sink="repo",kind="repo"} 2',
    ]);
    expect(samples(text, 'flb_bridge_catalog_')).toEqual([
      'flb_bridge_catalog_services 12',
      'flb_bridge_catalog_sidecars 4',
      'flb_bridge_catalog_rejected_total 1',
      'flb_bridge_catalog_conflicts_total 2',
    ]);
    expect(samples(text, 'flb_bridge_leader')).toEqual(['flb_bridge_leader 1']);
  });

  it('leave the lag out on a standby, which writes nothing', async () => {
    const text = await createBridgeMetrics(() => status(false), { processMetrics: false }).registry.metrics();
    expect(samples(text, 'flb_bridge_source_sync_lag_seconds{')).toEqual([]);
    expect(samples(text, 'flb_bridge_leader')).toEqual(['flb_bridge_leader 0']);
  });

  it("carry Node's process metrics under their standard names", async () => {
    const text = await createBridgeMetrics(() => status(true)).registry.metrics();
    expect(samples(text, 'process_cpu_seconds_total ')).toHaveLength(1);
    expect(samples(text, 'nodejs_heap_size_used_bytes ')).toHaveLength(1);
  });
});

describe("a Eureka sink's renewals", () => {
  const withEureka = (renewals: { sent: number; failed: number; reregistered: number; late: number }): BridgeStatus => {
    const leading = status(true);
    const eureka = {
      name: 'eureka',
      kind: 'eureka',
      address: 'http://eureka:8761/eureka/',
      pending: 0,
      writes: 30,
      failures: 1,
      lastWriteAt: now - 3000,
      renewals,
    };
    return { ...leading, sinks: [...leading.sinks, eureka] };
  };

  it('are counters of that sink alone, rising as it renews', async () => {
    let renewals = { sent: 120, failed: 2, reregistered: 1, late: 3 };
    const metrics = createBridgeMetrics(() => withEureka(renewals), { processMetrics: false });
    const scrape = async () => samples(await metrics.registry.metrics(), 'flb_bridge_sink_').filter((l) => /renewal|reregistration/.test(l));
    expect(await scrape()).toEqual([
      'flb_bridge_sink_renewals_total{sink="eureka",kind="eureka"} 120',
      'flb_bridge_sink_renewal_failures_total{sink="eureka",kind="eureka"} 2',
      'flb_bridge_sink_reregistrations_total{sink="eureka",kind="eureka"} 1',
      'flb_bridge_sink_late_renewals_total{sink="eureka",kind="eureka"} 3',
    ]);
    expect(await metrics.registry.metrics()).toContain('# TYPE flb_bridge_sink_renewals_total counter');
    renewals = { sent: 150, failed: 2, reregistered: 1, late: 3 };
    expect((await scrape())[0]).toBe('flb_bridge_sink_renewals_total{sink="eureka",kind="eureka"} 150');
  });

  it('show in flb bridge status under the sinks', () => {
    const table = renderBridgeStatus(withEureka({ sent: 120, failed: 2, reregistered: 1, late: 3 }), now).split('\n');
    expect(table.find((l) => l.startsWith('eureka'))).toMatch(/^eureka\s+eureka\s+http:\/\/eureka:8761\/eureka\/\s+0\s+30\s+1\s+3s ago$/);
    expect(table).toContain('eureka renewals: 120 sent, 2 failed, 1 registered again after a 404, 3 late');
    expect(table.filter((l) => l.includes('renewals'))).toHaveLength(1);
  });
});

describe('flb bridge status', () => {
  it('shows each source with its last sync and lag, and the sinks', () => {
    const table = renderBridgeStatus(status(true), now).split('\n');
    expect(table.find((l) => l.startsWith('SOURCE'))).toMatch(
      /^SOURCE\s+KIND\s+ADDRESS\s+STATE\s+SERVICES\s+ENDPOINTS\s+SIDECARS\s+LAST SYNC\s+LAG\s+LAST CONTACT\s+ERRORS$/,
    );
    expect(table.find((l) => l.startsWith('kubernetes'))).toMatch(
      /^kubernetes\s+kubernetes\s+https:\/\/10\.96\.0\.1:443\s+synced\s+10\s+30\s+4\s+5s ago\s+0\.0s\s+2s ago\s+0$/,
    );
    expect(table.find((l) => l.startsWith('consul'))).toMatch(/^consul\s+consul\s+http:\/\/consul:8500\s+stale\s+2\s+6\s+0\s+95s ago\s+42s\s+90s ago\s+7$/);
    expect(table.find((l) => l.startsWith('repo'))).toMatch(/^repo\s+repo\s+https:\/\/flb-repo:6060\s+3\s+40\s+2\s+1s ago$/);
  });

  it("shows no lag on a standby: '-'", () => {
    const table = renderBridgeStatus(status(false), now).split('\n');
    expect(table.find((l) => l.startsWith('consul'))).toMatch(/\s95s ago\s+-\s+90s ago\s/);
    expect(table).toContain('no sinks: this replica is a standby');
  });
});
