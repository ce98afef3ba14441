import { isIP } from 'node:net';
import { parseCidr } from '../common/contract/primitives.js';

/** A per-pod annotation whose value could not be understood; the pod is denied with this message. */
export class AnnotationError extends Error {
  override readonly name = 'AnnotationError';
  constructor(
    readonly annotation: string,
    problem: string,
  ) {
    super(`annotation ${annotation}: ${problem}`);
  }
}

function items(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** "5432, 6379" -> [5432, 6379]. Every item must be a port number 1-65535. */
export function parsePortList(annotation: string, value: string): number[] {
  return items(value).map((item) => {
    if (!/^\d+$/.test(item) || Number(item) < 1 || Number(item) > 65535) {
      throw new AnnotationError(annotation, `"${item}" is not a port number 1-65535 (expected a comma-separated list such as "5432,6379")`);
    }
    return Number(item);
  });
}

/** "10.0.0.0/8, 169.254.169.254" -> CIDRs; a bare address means just that host (/32 or /128). */
export function parseCidrList(annotation: string, value: string): string[] {
  return items(value).map((item) => {
    if (isIP(item) === 4) return `${item}/32`;
    if (isIP(item) === 6) return `${item}/128`;
    if (!item.includes('/') || parseCidr(item) === undefined) {
      throw new AnnotationError(annotation, `"${item}" is not an IP address or CIDR (expected a comma-separated list such as "10.0.0.0/8,169.254.169.254/32")`);
    }
    return item;
  });
}

export function union<T>(...lists: T[][]): T[] {
  return [...new Set(lists.flat())];
}
