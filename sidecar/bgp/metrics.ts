// Prometheus metrics of the announcer (`flb bgp`'s GET /metrics; the sidecar's registry while it
// announces). States are read from the announcer when scraped; events are counted as they happen.
// Registered once per registry: the gauges read whichever announcer runs now (the sidecar starts a
// new one when a bgp section comes back after it went), and every session it makes is watched.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Announcer, AnnouncerStatus } from './announcer.js';
import type { BgpSession } from './session.js';

export interface BgpMetrics {
  /** Counts the events of this announcer's sessions, those it makes later included (call once per announcer). */
  watch(announcer: Announcer): void;
}

const NONE: Pick<AnnouncerStatus, 'peers' | 'vips'> = { peers: [], vips: [] };

export function registerBgpMetrics(registry: Registry, current: Announcer | (() => Announcer | undefined)): BgpMetrics {
  const status = () => (typeof current === 'function' ? current() : current)?.status() ?? NONE;
  new Gauge({
    name: 'flb_bgp_session_established',
    help: 'BGP sessions Established (1) or not (0), by peer',
    labelNames: ['peer', 'remote_as'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const p of status().peers) this.set({ peer: p.peer, remote_as: String(p.remoteAs) }, p.state === 'Established' ? 1 : 0);
    },
  });
  new Gauge({
    name: 'flb_bgp_prefixes_sent',
    help: 'Prefixes the peer has from us now',
    labelNames: ['peer'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const p of status().peers) this.set({ peer: p.peer }, p.prefixesSent);
    },
  });
  new Gauge({
    name: 'flb_bgp_prefixes_received',
    help: 'Prefixes the peer announced to us (counted, never used; at most 10,000 tracked)',
    labelNames: ['peer'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const p of status().peers) this.set({ peer: p.peer }, p.prefixesReceived);
    },
  });
  new Gauge({
    name: 'flb_bgp_vip_healthy',
    help: "A VIP's local check passes (1) or not (0)",
    labelNames: ['vip'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const v of status().vips) this.set({ vip: v.prefix }, v.healthy ? 1 : 0);
    },
  });
  new Gauge({
    name: 'flb_bgp_vip_announced',
    help: 'A VIP is announced (1) or withdrawn (0)',
    labelNames: ['vip'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const v of status().vips) this.set({ vip: v.prefix }, v.announced ? 1 : 0);
    },
  });
  const notifications = new Counter({
    name: 'flb_bgp_notifications_total',
    help: 'NOTIFICATIONs sent and received, by peer, direction, error code and subcode',
    labelNames: ['peer', 'direction', 'code', 'subcode'] as const,
    registers: [registry],
  });
  const downs = new Counter({
    name: 'flb_bgp_session_down_total',
    help: 'Established sessions that went down',
    labelNames: ['peer'] as const,
    registers: [registry],
  });
  const updates = new Counter({
    name: 'flb_bgp_updates_sent_total',
    help: 'UPDATE messages sent (announcements and withdrawals)',
    labelNames: ['peer'] as const,
    registers: [registry],
  });
  const watchSession = (session: BgpSession) => {
    const peer = session.status().peer;
    session.on('notification', (direction: string, code: number, subcode: number) =>
      notifications.inc({ peer, direction, code: String(code), subcode: String(subcode) }),
    );
    session.on('updates', (count: number) => updates.inc({ peer }, count));
    let established = false;
    session.on('established', () => (established = true));
    session.on('down', () => {
      if (established) downs.inc({ peer });
      established = false;
    });
  };
  const watch = (announcer: Announcer) => {
    for (const session of announcer.speaker.peers) watchSession(session);
    // Peers added to a running announcer (sidecar.json's bgp section edited) get sessions of their own.
    announcer.speaker.on('session', watchSession);
  };
  if (typeof current !== 'function') watch(current);
  return { watch };
}
