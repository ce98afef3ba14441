// The announcer a user runs (`flb bgp --config`, and the sidecar later): the BGP section of the
// contract turned into a speaker and one health gate per VIP. A VIP is announced while its check
// passes and withdrawn when it fails (an UPDATE; the sessions stay up). Drain (SIGTERM): every VIP
// still announced is sent again with GRACEFUL_SHUTDOWN (65535:0, RFC 8326) so routers that honour
// it move traffic away first, then withdrawn after drainSeconds, then the sessions end with Cease.
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { BgpSchema } from '../../common/contract/sidecar.js';
import { HealthGate, type GateStatus, type ReadinessSource } from './health.js';
import { BgpSpeaker, type SpeakerStatus } from './speaker.js';
import { Afi, communityText, parsePrefix, prefixText, WellKnownCommunity } from './wire/index.js';

export type BgpConfig = z.output<typeof BgpSchema>;

export interface VipStatus extends GateStatus {
  prefix: string;
  announced: boolean;
}

export interface AnnouncerStatus extends SpeakerStatus {
  vips: VipStatus[];
  draining: boolean;
}

/** Fields the schema takes that the announcer cannot honour yet (the sidecar refuses them too). */
export function unbuiltFields(config: BgpConfig, prefix = '', where: 'standalone' | 'sidecar' = 'standalone'): { field: string; message: string }[] {
  return [
    ...config.peers.flatMap((peer, i) =>
      peer.passwordRef !== undefined ? [{ field: `${prefix}peers[${i}].passwordRef`, message: 'TCP MD5 (RFC 2385) is not built yet' }] : [],
    ),
    ...(where === 'standalone'
      ? config.vips.flatMap((vip, i) =>
          vip.healthCheck.protocol === 'readiness'
            ? [
                {
                  field: `${prefix}vips[${i}].healthCheck.protocol`,
                  message: "readiness is the app's readiness as flb sidecar sees it: use tcp or http with flb bgp",
                },
              ]
            : [],
        )
      : []),
  ];
}

const GRACEFUL_SHUTDOWN = communityText(WellKnownCommunity.GRACEFUL_SHUTDOWN);

export class Announcer {
  readonly speaker: BgpSpeaker;
  private readonly gates: { prefix: string; vip: BgpConfig['vips'][number]; gate: HealthGate }[];
  private draining = false;

  constructor(
    private readonly config: BgpConfig,
    private readonly log: Logger,
    /** For `protocol: readiness` checks (the sidecar gives it). */
    readiness?: ReadinessSource,
  ) {
    this.speaker = new BgpSpeaker({
      localAs: config.localAs,
      routerId: config.routerId,
      holdTimeSeconds: config.holdTimeSeconds,
      connectRetryMs: config.connectRetrySeconds * 1000,
      listen: { ...(config.listenAddress ? { address: config.listenAddress } : {}), port: config.listenPort },
      peers: config.peers.map((peer) => ({
        address: peer.address,
        remoteAs: peer.remoteAs,
        port: peer.port,
        ...(peer.localAddress ? { localAddress: peer.localAddress } : {}),
        ...(peer.nextHop ? { nextHop: peer.nextHop } : {}),
        families: peer.addressFamilies.map((f) => (f === 'ipv4-unicast' ? Afi.IPV4 : Afi.IPV6)),
        passive: peer.passive,
      })),
      log,
    });
    this.gates = config.vips.map((vip) => {
      const prefix = prefixText(parsePrefix(vip.prefix));
      const gate = new HealthGate(vip.healthCheck, readiness);
      gate.on('change', (healthy: boolean, result: { detail: string }) => {
        if (this.draining) return;
        this.log.info({ vip: prefix, healthy, check: result.detail }, healthy ? 'VIP healthy: announcing' : 'VIP unhealthy: withdrawing');
        if (healthy) this.announce(vip);
        else this.speaker.withdraw(prefix);
      });
      return { prefix, vip, gate };
    });
  }

  private announce(vip: BgpConfig['vips'][number], extraCommunities: string[] = []): void {
    this.speaker.announce(vip.prefix, {
      communities: [...vip.communities, ...extraCommunities],
      ...(vip.localPreference !== undefined ? { localPreference: vip.localPreference } : {}),
      ...(vip.med !== undefined ? { med: vip.med } : {}),
    });
  }

  /** How long drain() keeps the VIPs announced with GRACEFUL_SHUTDOWN before withdrawing them. */
  get drainSeconds(): number {
    return this.config.drainSeconds;
  }

  async start(): Promise<void> {
    await this.speaker.start();
    for (const { gate } of this.gates) gate.start();
  }

  status(): AnnouncerStatus {
    return {
      ...this.speaker.status(),
      draining: this.draining,
      vips: this.gates.map(({ prefix, gate }) => ({ prefix, announced: this.speaker.announced(prefix), ...gate.status() })),
    };
  }

  /** Stops at once: no more checks, Cease to every peer (the routers drop our routes). */
  stop(): void {
    for (const { gate } of this.gates) gate.stop();
    this.speaker.stop('the announcer is stopping');
  }

  /** Graceful shutdown: GRACEFUL_SHUTDOWN, then after the drain time everything withdrawn and the sessions closed. */
  async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    for (const { gate } of this.gates) gate.stop();
    const announced = this.gates.filter(({ prefix }) => this.speaker.announced(prefix));
    if (announced.length && this.config.drainSeconds > 0) {
      for (const { vip } of announced) this.announce(vip, [GRACEFUL_SHUTDOWN]);
      this.log.info(
        { vips: announced.map((a) => a.prefix), drainSeconds: this.config.drainSeconds },
        `draining: VIPs announced with GRACEFUL_SHUTDOWN (${GRACEFUL_SHUTDOWN})`,
      );
      await new Promise((resolve) => setTimeout(resolve, this.config.drainSeconds * 1000));
    }
    for (const { prefix } of announced) this.speaker.withdraw(prefix);
    // The withdrawals go out (a microtask) before Cease closes the sessions.
    await new Promise((resolve) => setTimeout(resolve, 50));
    this.speaker.stop('the announcer is stopping');
  }
}
