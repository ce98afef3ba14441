// The bridge's Prometheus metrics (`/metrics` on its admin port), read from its status at each
// scrape so they always say what `flb bridge status` says. Counts the sources and sinks keep since
// they started are counters (`_total`): a sink is made anew each time this replica starts leading,
// and Prometheus' rate() takes such a restart as a counter reset.
import { Counter, Gauge, type Registry } from 'prom-client';
import { createMetricsRegistry } from '../common/metrics.js';
import type { BridgeStatus } from './bridge.js';
import type { RenewalCounts } from './core/types.js';

export interface BridgeMetrics {
  readonly registry: Registry;
  /** Kubernetes Events not raised, by reason (the recorder and the mesh settings report them). */
  readonly eventsDropped: Counter<'reason'>;
}

export function createBridgeMetrics(status: () => BridgeStatus, options: { processMetrics?: boolean } = {}): BridgeMetrics {
  const registry = createMetricsRegistry(options);
  const eventsDropped = new Counter({
    name: 'flb_bridge_events_dropped_total',
    help: 'Kubernetes Events not raised, by reason',
    labelNames: ['reason'] as const,
    registers: [registry],
  });

  type Read = (s: BridgeStatus, set: (labels: Record<string, string>, value: number) => void) => void;
  const gauge = (name: string, help: string, labelNames: string[], read: Read) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        read(status(), (labels, value) => this.set(labels, value));
      },
    });
  const counter = (name: string, help: string, labelNames: string[], read: Read) =>
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        read(status(), (labels, value) => this.inc(labels, value));
      },
    });
  const perSource = (read: (x: BridgeStatus['sources'][number]) => number | undefined): Read => {
    return (s, set) => {
      for (const x of s.sources) {
        const value = read(x);
        if (value !== undefined) set({ source: x.name, kind: x.kind }, value);
      }
    };
  };
  const perSink = (read: (x: BridgeStatus['sinks'][number]) => number): Read => {
    return (s, set) => {
      for (const x of s.sinks) set({ sink: x.name, kind: x.kind }, read(x));
    };
  };
  const ageSeconds = (at: number) => (at ? Math.max(0, Date.now() - at) / 1000 : undefined);

  gauge('flb_bridge_leader', '1 while this replica leads (writes to the sinks)', [], (s, set) => set({}, s.leader ? 1 : 0));
  gauge('flb_bridge_catalog_services', 'Services in the catalog, from every source', [], (s, set) => set({}, s.catalog.services));
  gauge('flb_bridge_catalog_sidecars', 'Sidecars (injected pods) the catalog writes a sidecar.json for', [], (s, set) => set({}, s.catalog.sidecars));
  counter('flb_bridge_catalog_rejected_total', 'Services and sidecar.json documents refused by the contract', [], (s, set) => set({}, s.catalog.rejected));
  counter('flb_bridge_catalog_conflicts_total', 'Service ids and hostnames two services claimed (one kept, the other warned about)', [], (s, set) =>
    set({}, s.catalog.conflicts),
  );

  const source = ['source', 'kind'];
  gauge(
    'flb_bridge_source_synced',
    '1 once the source has listed everything (and is not stale)',
    source,
    perSource((x) => (x.state === 'synced' ? 1 : 0)),
  );
  gauge(
    'flb_bridge_source_stale',
    '1 while the source has not been heard from for its staleAfterSeconds',
    source,
    perSource((x) => (x.state === 'stale' ? 1 : 0)),
  );
  gauge(
    'flb_bridge_source_services',
    'Services the source puts in the catalog',
    source,
    perSource((x) => x.services),
  );
  gauge(
    'flb_bridge_source_endpoints',
    'Endpoints of those services',
    source,
    perSource((x) => x.endpoints),
  );
  gauge(
    'flb_bridge_source_sidecars',
    'Sidecars (injected pods) the source reports',
    source,
    perSource((x) => x.sidecars),
  );
  gauge(
    'flb_bridge_source_last_contact_age_seconds',
    'Seconds since the source last heard from its registry (absent: never)',
    source,
    perSource((x) => ageSeconds(x.lastContactAt)),
  );
  gauge(
    'flb_bridge_source_last_sync_age_seconds',
    'Seconds since the source last had everything its registry holds (absent: never)',
    source,
    perSource((x) => ageSeconds(x.lastSyncAt)),
  );
  gauge(
    'flb_bridge_source_sync_lag_seconds',
    'Age of the oldest change the source reported that the sinks have not written yet (0: all written; absent on a standby, which writes nothing)',
    source,
    perSource((x) => (x.syncLagMs === undefined ? undefined : x.syncLagMs / 1000)),
  );
  counter(
    'flb_bridge_source_errors_total',
    'List, watch and fetch errors of the source',
    source,
    perSource((x) => x.errors),
  );

  const sink = ['sink', 'kind'];
  gauge(
    'flb_bridge_sink_pending',
    'Changes told to the sink and not written yet',
    sink,
    perSink((x) => x.pending),
  );
  counter(
    'flb_bridge_sink_writes_total',
    'Writes (publishes) the sink made',
    sink,
    perSink((x) => x.writes),
  );
  counter(
    'flb_bridge_sink_failures_total',
    'Failed write rounds of the sink',
    sink,
    perSink((x) => x.failures),
  );
  const perRenewingSink = (read: (x: RenewalCounts) => number): Read => {
    return (s, set) => {
      for (const x of s.sinks) {
        const renewals = x.renewals;
        if (renewals) set({ sink: x.name, kind: x.kind }, read(renewals));
      }
    };
  };
  counter(
    'flb_bridge_sink_renewals_total',
    'Renewals the sink sent to keep its registrations alive (Eureka), whatever the answer',
    sink,
    perRenewingSink((x) => x.sent),
  );
  counter(
    'flb_bridge_sink_renewal_failures_total',
    'Renewals not answered, or answered with neither 200 nor 404',
    sink,
    perRenewingSink((x) => x.failed),
  );
  counter(
    'flb_bridge_sink_reregistrations_total',
    'Instances registered again after a renewal was answered 404 (the server had lost them)',
    sink,
    perRenewingSink((x) => x.reregistered),
  );
  counter(
    'flb_bridge_sink_late_renewals_total',
    'Renewals sent more than the renewal interval after the one before for that instance',
    sink,
    perRenewingSink((x) => x.late),
  );
  return { registry, eventsDropped };
}
