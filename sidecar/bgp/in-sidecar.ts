// The announcer inside `flb sidecar`: sidecar.ts loads this module only when a sidecar.json with a
// `bgp` section arrives (a sidecar without one never loads the speaker), and hands it every later
// section (or its absence). Changes are applied one at a time, in order:
// - section appears: an announcer starts (sessions, one health gate per VIP);
// - section changes: applied to the running announcer peer by peer and VIP by VIP
//   (Announcer.reconfigure), so only what changed is touched: a peer added, removed or edited gets
//   its own new session or Cease, while every other router keeps its session and our routes with
//   no withdraw and no re-announce. Replacing the whole announcer instead made every router see a
//   Cease and a withdraw of every VIP of this sidecar for a second or two for any edit; a change
//   to the speaker's own AS, router id or timers still restarts every session (each OPEN carries
//   them);
// - section disappears: drained as on SIGTERM (GRACEFUL_SHUTDOWN for drainSeconds, withdrawn,
//   Cease), so traffic moves away before the routes go;
// - a section the announcer cannot honour (TCP MD5): said in the log, and the previous announcer,
//   if any, keeps running; one that fails to start (the passive listener's port taken): said in
//   the log, nothing announced, tried again with the next sidecar.json.
// The speaker lives on the main loop: the proxies forward natively and return to the loop often, so
// a saturated proxy does not hold a keepalive back (test-e2e/bgp.test.ts loads the sidecar for
// longer than a 3 s hold time); a worker thread would cost about 10 MiB per sidecar for nothing.
import type { Registry } from 'prom-client';
import type { Logger } from '../../common/log.js';
import { Announcer, unbuiltFields, type AnnouncerStatus, type BgpConfig } from './announcer.js';
import type { ReadinessSource } from './health.js';
import { registerBgpMetrics, type BgpMetrics } from './metrics.js';

export class SidecarBgp {
  private announcer: Announcer | undefined;
  /** The section the running announcer was made from, as JSON, to tell a change from a repeat. */
  private running: string | undefined;
  private queue: Promise<void> = Promise.resolve();
  private readonly metrics: BgpMetrics;
  private stopped = false;

  constructor(
    private readonly log: Logger,
    registry: Registry,
    /** The app's readiness as the sidecar runs it, for VIPs with `healthCheck: { protocol: readiness }`. */
    private readonly readiness: ReadinessSource,
  ) {
    this.metrics = registerBgpMetrics(registry, () => this.announcer);
  }

  /** sidecar.json's bgp section as last applied (undefined: none); resolves once it is in effect. */
  apply(config: BgpConfig | undefined): Promise<void> {
    return this.enqueue(() => this.reconcile(config));
  }

  /** What `flb bgp status --admin` shows; undefined while no announcer runs. */
  status(): AnnouncerStatus | undefined {
    return this.announcer?.status();
  }

  /** SIGTERM: withdraw with GRACEFUL_SHUTDOWN, wait drainSeconds, withdraw, Cease; later sections are ignored. */
  drain(): Promise<void> {
    return this.enqueue(async () => {
      this.stopped = true;
      await this.retire();
    });
  }

  /**
   * The app's preStop hook (the probe ports' /drain/bgp): the drain SIGTERM does, started before the
   * app stops. Resolves once every VIP is withdrawn, saying which; a second call (another app
   * container's hook, the sidecar's own SIGTERM) waits for the same drain.
   */
  async drainBeforeAppStops(): Promise<string> {
    const announced =
      this.announcer
        ?.status()
        .vips.filter((vip) => vip.announced)
        .map((vip) => vip.prefix) ?? [];
    const drainSeconds = this.announcer?.drainSeconds ?? 0;
    await this.drain();
    return announced.length ? `withdrawn after a ${drainSeconds} s drain: ${announced.join(', ')}` : 'no VIP is announced';
  }

  /** At once, no drain (the sidecar closing without SIGTERM, tests). */
  close(): Promise<void> {
    this.stopped = true;
    this.announcer?.stop();
    this.announcer = undefined;
    this.running = undefined;
    return this.queue;
  }

  private enqueue(step: () => Promise<void>): Promise<void> {
    this.queue = this.queue.then(step).catch((error: unknown) => this.log.error({ err: error }, 'BGP announcer: configuration not applied'));
    return this.queue;
  }

  private async reconcile(config: BgpConfig | undefined): Promise<void> {
    if (this.stopped) return;
    const text = config ? JSON.stringify(config) : undefined;
    if (text === this.running) return;
    if (!config) {
      this.log.info('BGP announcer: the bgp section is gone from sidecar.json, draining');
      await this.retire();
      return;
    }
    const unbuilt = unbuiltFields(config, 'bgp.', 'sidecar');
    if (unbuilt.length) {
      this.log.error(
        { problems: unbuilt },
        `BGP announcer: sidecar.json's bgp section refused (${unbuilt.map((u) => `${u.field}: ${u.message}`).join('; ')}); ${this.announcer ? 'the previous one keeps running' : 'not announcing'}`,
      );
      return;
    }
    if (this.announcer) {
      try {
        const { kept, started, stopped } = await this.announcer.reconfigure(config);
        this.running = text;
        this.log.info({ kept, started, stopped, vips: config.vips.map((v) => v.prefix) }, 'BGP announcer: the bgp section changed, applied peer by peer');
      } catch (error) {
        this.log.error({ err: error }, 'BGP announcer: the changed bgp section could not be applied; the previous one keeps running');
      }
      return;
    }
    const next = new Announcer(config, this.log, this.readiness);
    try {
      await next.start();
    } catch (error) {
      next.stop();
      this.log.error({ err: error }, 'BGP announcer: could not start');
      return;
    }
    this.metrics.watch(next);
    this.announcer = next;
    this.running = text;
    this.log.info({ peers: config.peers.length, vips: config.vips.map((v) => v.prefix) }, 'BGP announcer running in the sidecar');
  }

  private async retire(): Promise<void> {
    const announcer = this.announcer;
    if (!announcer) return;
    await announcer.drain();
    // Gone only once drained: status and metrics show the drain while it lasts.
    if (this.announcer === announcer) {
      this.announcer = undefined;
      this.running = undefined;
    }
  }
}
