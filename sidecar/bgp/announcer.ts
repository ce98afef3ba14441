// The announcer a user runs (`flb bgp --config`, and the sidecar later): the BGP section of the
// contract turned into a speaker and one health gate per VIP. A VIP is announced while its check
// passes and withdrawn when it fails (an UPDATE; the sessions stay up). Drain (SIGTERM): every VIP
// still announced is sent again with GRACEFUL_SHUTDOWN (65535:0, RFC 8326) so routers that honour
// it move traffic away first, then withdrawn after drainSeconds, then the sessions end with Cease.
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { BgpSchema } from '../../common/contract/sidecar.js';
import { HealthGate, type GateStatus, type ReadinessSource } from './health.js';
import { BgpSpeaker, type SpeakerOptions, type SpeakerStatus } from './speaker.js';
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

type Vip = BgpConfig['vips'][number];

function speakerOptions(config: BgpConfig, log: Logger): SpeakerOptions {
  return {
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
  };
}

export class Announcer {
  readonly speaker: BgpSpeaker;
  /** By prefix text, in the configuration's order. */
  private gates = new Map<string, { vip: Vip; gate: HealthGate }>();
  private draining = false;

  constructor(
    private config: BgpConfig,
    private readonly log: Logger,
    /** For `protocol: readiness` checks (the sidecar gives it). */
    private readonly readiness?: ReadinessSource,
  ) {
    this.speaker = new BgpSpeaker(speakerOptions(config, log));
    for (const vip of config.vips) this.gates.set(prefixText(parsePrefix(vip.prefix)), { vip, gate: this.gateFor(vip) });
  }

  private gateFor(vip: Vip, initiallyHealthy = false): HealthGate {
    const prefix = prefixText(parsePrefix(vip.prefix));
    const gate = new HealthGate(vip.healthCheck, this.readiness, initiallyHealthy);
    gate.on('change', (healthy: boolean, result: { detail: string }) => {
      const current = this.gates.get(prefix);
      // A gate replaced or removed by reconfigure() has no say any more.
      if (this.draining || current?.gate !== gate) return;
      this.log.info({ vip: prefix, healthy, check: result.detail }, healthy ? 'VIP healthy: announcing' : 'VIP unhealthy: withdrawing');
      if (healthy) this.announce(current.vip);
      else this.speaker.withdraw(prefix);
    });
    return gate;
  }

  private announce(vip: Vip, extraCommunities: string[] = []): void {
    this.speaker.announce(vip.prefix, {
      communities: [...vip.communities, ...extraCommunities],
      ...(vip.localPreference !== undefined ? { localPreference: vip.localPreference } : {}),
      ...(vip.med !== undefined ? { med: vip.med } : {}),
    });
  }

  /**
   * A new section for the running announcer, applied peer by peer and VIP by VIP, so that what did
   * not change is not touched: a peer kept keeps its session and its routes (no withdraw, no
   * re-announce); a VIP kept keeps its check's state; a VIP whose attributes changed is sent again
   * with them (an UPDATE); one whose check changed keeps its route until the new check fails; a VIP
   * removed is withdrawn; one added is announced once its check passes. Throws, changing nothing,
   * when the listener for passive peers cannot open.
   */
  async reconfigure(config: BgpConfig): Promise<{ kept: string[]; started: string[]; stopped: string[] }> {
    if (this.draining) throw new Error('the announcer is draining');
    const peers = await this.speaker.reconfigure(speakerOptions(config, this.log));
    this.config = config;
    const previous = this.gates;
    this.gates = new Map();
    for (const vip of config.vips) {
      const prefix = prefixText(parsePrefix(vip.prefix));
      const old = previous.get(prefix);
      previous.delete(prefix);
      if (old && JSON.stringify(old.vip.healthCheck) === JSON.stringify(vip.healthCheck)) {
        this.gates.set(prefix, { vip, gate: old.gate });
        if (this.speaker.announced(prefix)) this.announce(vip);
        continue;
      }
      old?.gate.stop();
      const gate = this.gateFor(vip, this.speaker.announced(prefix));
      this.gates.set(prefix, { vip, gate });
      if (this.speaker.announced(prefix)) this.announce(vip);
      gate.start();
    }
    for (const [prefix, { gate }] of previous) {
      gate.stop();
      this.speaker.withdraw(prefix);
    }
    return peers;
  }

  /** How long drain() keeps the VIPs announced with GRACEFUL_SHUTDOWN before withdrawing them. */
  get drainSeconds(): number {
    return this.config.drainSeconds;
  }

  async start(): Promise<void> {
    await this.speaker.start();
    for (const { gate } of this.gates.values()) gate.start();
  }

  status(): AnnouncerStatus {
    return {
      ...this.speaker.status(),
      draining: this.draining,
      vips: [...this.gates].map(([prefix, { gate }]) => ({ prefix, announced: this.speaker.announced(prefix), ...gate.status() })),
    };
  }

  /** Stops at once: no more checks, Cease to every peer (the routers drop our routes). */
  stop(): void {
    for (const { gate } of this.gates.values()) gate.stop();
    this.speaker.stop('the announcer is stopping');
  }

  /** Graceful shutdown: GRACEFUL_SHUTDOWN, then after the drain time everything withdrawn and the sessions closed. */
  async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    for (const { gate } of this.gates.values()) gate.stop();
    const announced = [...this.gates].map(([prefix, { vip }]) => ({ prefix, vip })).filter(({ prefix }) => this.speaker.announced(prefix));
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
