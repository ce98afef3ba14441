/*
 * The VIPs a pod's sidecar announces over BGP, on the pod's loopback: routers send traffic for a
 * VIP to the pod's address, and the kernel delivers it locally only when the VIP is one of the
 * namespace's own addresses (Linux accepts a local address arriving on any interface). lo, not
 * the pod's interface: a /32 there would still be local, but lo belongs to no CNI plugin (none
 * renames, re-addresses or replaces it) and an address on it sends no DAD or gratuitous ARP out.
 * The init container (iptables mode) and the CNI node agent apply it with the rules; the plan is
 * pure, so goldens show what `ip -batch` is given.
 */
import { isIP } from 'node:net';
import { canonicalIp } from '../common/contract/primitives.js';
import { ActionableError } from '../common/errors.js';
import type { IptablesOptions } from './iptables.js';
import { run } from './netns-run.js';

/** The host routes on lo, `address/prefixlen` as canonical text, from `ip -j address show dev lo`. */
export function parseLoopbackAddresses(json: string): string[] {
  const links = JSON.parse(json) as { addr_info?: { local?: unknown; prefixlen?: unknown }[] }[];
  const out: string[] = [];
  for (const link of links) {
    for (const info of link.addr_info ?? []) {
      if (typeof info.local !== 'string' || typeof info.prefixlen !== 'number' || isIP(info.local) === 0) continue;
      out.push(`${canonicalIp(info.local)}/${info.prefixlen}`);
    }
  }
  return out;
}

/** The VIPs not yet on lo, in the settings' order, each once. */
export function vipsToAdd(vips: readonly string[], live: readonly string[]): string[] {
  return [...new Set(vips)].filter((vip) => !live.includes(vip));
}

/** The VIPs of ours still on lo (what DEL or clean takes off). */
export function vipsToRemove(vips: readonly string[], live: readonly string[]): string[] {
  return [...new Set(vips)].filter((vip) => live.includes(vip));
}

/** The `ip -batch -` document that adds or deletes these addresses on lo; undefined when there is nothing to do. */
export function loopbackDocument(action: 'add' | 'delete', vips: readonly string[]): string | undefined {
  if (vips.length === 0) return undefined;
  return vips.map((vip) => `address ${action} ${vip} dev lo\n`).join('');
}

/** What lo holds now. */
export async function readLoopback(options: IptablesOptions = {}): Promise<string[]> {
  return parseLoopbackAddresses(await run('ip', ['-j', 'address', 'show', 'dev', 'lo'], options));
}

/**
 * Puts the VIPs on lo, only those missing (a restarted init container or a repeated CNI ADD adds
 * nothing). One `ip -batch` stops at its first failure: what it added before is taken off again,
 * so a failure leaves lo as it was.
 */
export async function addLoopbackVips(vips: readonly string[], options: IptablesOptions = {}): Promise<{ added: string[] }> {
  if (vips.length === 0) return { added: [] };
  const missing = vipsToAdd(vips, await readLoopback(options));
  const document = loopbackDocument('add', missing);
  if (!document) return { added: [] };
  try {
    await run('ip', ['-batch', '-'], options, document);
  } catch (error) {
    const partly = vipsToRemove(missing, await readLoopback(options).catch(() => []));
    const undo = loopbackDocument('delete', partly);
    if (undo) await run('ip', ['-batch', '-'], options, undo).catch(() => {});
    throw new ActionableError(
      `could not put the BGP VIPs ${missing.join(', ')} on lo: ${(error as Error).message}`,
      missing.some((vip) => vip.includes(':')) ? 'an IPv6 VIP needs IPv6 enabled in the pod (net.ipv6.conf.lo.disable_ipv6=0)' : undefined,
    );
  }
  return { added: missing };
}

/** Takes the VIPs off lo, those still there; nothing to do is not an error. */
export async function removeLoopbackVips(vips: readonly string[], options: IptablesOptions = {}): Promise<{ removed: string[] }> {
  if (vips.length === 0) return { removed: [] };
  const present = vipsToRemove(vips, await readLoopback(options));
  const document = loopbackDocument('delete', present);
  if (document) await run('ip', ['-batch', '-'], options, document);
  return { removed: present };
}

/** Lines a user can read for each VIP the settings name that lo lacks. */
export function loopbackProblems(vips: readonly string[], live: readonly string[]): string[] {
  return vipsToAdd(vips, live).map((vip) => `missing BGP VIP ${vip} on lo`);
}
