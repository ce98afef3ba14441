import { isIP } from 'node:net';
import { canonicalIp, parseCidr } from '../common/contract/primitives.js';
import type { InvalidSetting } from './policy.js';

/** A per-pod annotation whose value could not be understood; the pod is refused naming it and every bad item. */
export class AnnotationError extends Error {
  override readonly name = 'AnnotationError';
  constructor(
    readonly annotation: string,
    problem: string,
  ) {
    super(`annotation ${annotation}: ${problem}`);
  }

  get setting(): InvalidSetting {
    return { kind: 'annotation', key: this.annotation, message: this.message, problem: `pod annotation ${this.annotation} is invalid` };
  }
}

function items(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** `"a" is not ...` or `"a", "b" are not ...`: every bad item of a list at once. */
function refuse(annotation: string, bad: string[], what: string, example: string): AnnotationError {
  const quoted = bad.map((item) => JSON.stringify(item)).join(', ');
  return new AnnotationError(annotation, `${quoted} ${bad.length === 1 ? 'is not' : 'are not'} ${what} (expected a comma-separated list such as "${example}")`);
}

/** "5432, 6379" -> [5432, 6379]. Every item must be a port number 1-65535. */
export function parsePortList(annotation: string, value: string): number[] {
  const list = items(value);
  const bad = list.filter((item) => !/^\d+$/.test(item) || Number(item) < 1 || Number(item) > 65535);
  if (bad.length) throw refuse(annotation, bad, bad.length === 1 ? 'a port number 1-65535' : 'port numbers 1-65535', '5432,6379');
  return list.map(Number);
}

/** "10.0.0.0/8, 169.254.169.254" -> CIDRs; a bare address means just that host (/32 or /128). */
export function parseCidrList(annotation: string, value: string): string[] {
  const list = items(value);
  const bad = list.filter((item) => isIP(item) === 0 && (!item.includes('/') || parseCidr(item) === undefined));
  if (bad.length) throw refuse(annotation, bad, bad.length === 1 ? 'an IP address or CIDR' : 'IP addresses or CIDRs', '10.0.0.0/8,169.254.169.254/32');
  return list.map((item) => (isIP(item) === 4 ? `${item}/32` : isIP(item) === 6 ? `${item}/128` : item));
}

/**
 * "10.0.0.100, 2001:db8::100/128" -> host routes for the pod's lo. An address, or an address with
 * /32 (IPv4) or /128 (IPv6); a wider prefix is refused, since on lo it would make the whole range
 * the pod's own. Repeats are kept once.
 */
export function parseVipList(annotation: string, value: string): string[] {
  const list = items(value);
  const hostLength = (item: string) => {
    const slash = item.lastIndexOf('/');
    const address = slash < 0 ? item : item.slice(0, slash);
    const family = isIP(address);
    // A zone (fe80::1%eth0) names another interface: it cannot go on lo.
    if (family === 0 || address.includes('%')) return undefined;
    const bits = slash < 0 ? String(family === 4 ? 32 : 128) : item.slice(slash + 1);
    return bits === (family === 4 ? '32' : '128') ? `${canonicalIp(address)}/${bits}` : undefined;
  };
  const bad = list.filter((item) => hostLength(item) === undefined);
  if (bad.length) {
    throw refuse(
      annotation,
      bad,
      bad.length === 1 ? 'an IP address (a /32 or /128 at most)' : 'IP addresses (a /32 or /128 at most)',
      '10.0.0.100/32,2001:db8::100/128',
    );
  }
  return [...new Set(list.map((item) => hostLength(item)!))];
}

export function union<T>(...lists: T[][]): T[] {
  return [...new Set(lists.flat())];
}
