// The VIP on the host, in standalone mode: the app must receive traffic for the VIP, so `flb bgp`
// run as root puts each host-route VIP (/32, /128) on the loopback at start and takes it off when it
// exits, only the ones it added (a VIP someone else put there stays). Not root, it says so once and
// expects the VIP to be there. The host must not answer ARP for it on other interfaces
// (net.ipv4.conf.all.arp_ignore=1, arp_announce=2; see README).
import { execa } from 'execa';
import type { Logger } from 'pino';
import { Afi, maxLength, parsePrefix, prefixText } from './wire/index.js';

export interface LoopbackVips {
  /** The VIPs this process added. */
  added: string[];
  /** Takes off what was added. */
  remove(): Promise<void>;
}

export async function addVipsToLoopback(prefixes: readonly string[], log: Logger, isRoot = process.getuid?.() === 0): Promise<LoopbackVips> {
  const added: string[] = [];
  const hosts = prefixes.map(parsePrefix).filter((p) => p.length === maxLength(p.afi));
  if (!isRoot) {
    if (hosts.length) log.info({ vips: hosts.map(prefixText) }, 'not root: the VIPs must already be on this host (e.g. ip addr add VIP/32 dev lo)');
    return { added, remove: async () => undefined };
  }
  for (const prefix of hosts) {
    const text = prefixText(prefix);
    const result = await execa('ip', [prefix.afi === Afi.IPV4 ? '-4' : '-6', 'addr', 'add', text, 'dev', 'lo'], { reject: false });
    if (result.exitCode === 0) {
      added.push(text);
      log.info({ vip: text }, 'VIP added to lo');
    } else if (/File exists/.test(result.stderr)) {
      log.debug({ vip: text }, 'VIP already on lo: left as it is');
    } else {
      log.warn({ vip: text, error: result.stderr.trim() || String(result.exitCode) }, 'could not add the VIP to lo: traffic to it will not reach the app');
    }
  }
  return {
    added,
    async remove() {
      for (const text of added) {
        const result = await execa('ip', ['addr', 'del', text, 'dev', 'lo'], { reject: false });
        if (result.exitCode === 0) log.info({ vip: text }, 'VIP removed from lo');
        else log.warn({ vip: text, error: result.stderr.trim() }, 'could not remove the VIP from lo');
      }
    },
  };
}
