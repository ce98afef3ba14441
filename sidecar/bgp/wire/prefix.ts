// NLRI prefixes (RFC 4271 §4.3, RFC 4760 §5): a length in bits, then just enough bytes to hold it.
// The same encoding carries IPv4 routes in the UPDATE's own fields and IPv6 routes in MP_REACH and
// MP_UNREACH. Addresses are kept as canonical text (RFC 5952 for IPv6), so prefixes compare as strings.
import { isIPv4, isIPv6 } from 'node:net';
import ipaddr from 'ipaddr.js';
import { Afi } from './constants.js';
import { Cursor, Overrun, type Writer } from './cursor.js';

export type AddressFamily = typeof Afi.IPV4 | typeof Afi.IPV6;

export interface Prefix {
  afi: AddressFamily;
  /** The network address, host bits zero. */
  address: string;
  length: number;
}

export const maxLength = (afi: AddressFamily) => (afi === Afi.IPV4 ? 32 : 128);

export const prefixText = (prefix: Prefix) => `${prefix.address}/${prefix.length}`;

export function addressBytes(address: string): Uint8Array {
  if (isIPv4(address)) return Uint8Array.from(address.split('.'), Number);
  if (!isIPv6(address)) throw new TypeError(`not an IP address: ${address}`);
  return Uint8Array.from(ipaddr.parse(address).toByteArray());
}

/**
 * An address as text. IPv6 in the form the contract keeps (common/contract/primitives.ts: what
 * SocketAddress and inet_ntop print): the first longest run of two or more zero groups as `::`,
 * and the last 32 bits in dotted decimal for IPv4-mapped and IPv4-compatible addresses. Written
 * out rather than through SocketAddress, which costs 6 µs an address (a router's full table is
 * hundreds of thousands); prefix.test.ts checks it against SocketAddress.
 */
export function addressText(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((bytes[i]! << 8) | bytes[i + 1]!);
  let bestBase = -1;
  let bestLength = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let end = i;
    while (end < 8 && words[end] === 0) end++;
    if (end - i > bestLength) [bestBase, bestLength] = [i, end - i];
    i = end;
  }
  if (bestLength < 2) bestBase = -1;
  const ipv4Tail = bestBase === 0 && (bestLength === 6 || (bestLength === 7 && words[7] !== 1) || (bestLength === 5 && words[5] === 0xffff));
  let text = '';
  for (let i = 0; i < 8; i++) {
    if (bestBase >= 0 && i >= bestBase && i < bestBase + bestLength) {
      if (i === bestBase) text += ':';
      continue;
    }
    if (i !== 0) text += ':';
    if (i === 6 && ipv4Tail) return `${text}${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
    text += words[i]!.toString(16);
  }
  return bestBase >= 0 && bestBase + bestLength === 8 ? `${text}:` : text;
}

/** "192.0.2.10/32" or "2001:db8::10/128" (a bare address is a host route); host bits are cleared. */
export function parsePrefix(text: string): Prefix {
  const slash = text.indexOf('/');
  const address = slash < 0 ? text : text.slice(0, slash);
  const afi: AddressFamily | undefined = isIPv4(address) ? Afi.IPV4 : isIPv6(address) ? Afi.IPV6 : undefined;
  if (afi === undefined) throw new TypeError(`not a prefix: ${text} (an IPv4 or IPv6 address, optionally /length)`);
  const lengthText = slash < 0 ? String(maxLength(afi)) : text.slice(slash + 1);
  const length = /^\d{1,3}$/.test(lengthText) ? Number(lengthText) : NaN;
  if (!(length <= maxLength(afi))) throw new TypeError(`not a prefix: ${text} (length must be 0-${maxLength(afi)})`);
  return { afi, address: addressText(masked(addressBytes(address), length)), length };
}

function masked(bytes: Uint8Array, length: number): Uint8Array {
  const out = bytes.slice();
  for (let bit = length; bit < out.length * 8; bit++) out[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return out;
}

/** Writes one prefix in NLRI form. */
export function writePrefix(writer: Writer, prefix: Prefix): void {
  const bytes = addressBytes(prefix.address);
  writer.u8(prefix.length).bytes(bytes.subarray(0, (prefix.length + 7) >> 3));
}

export const encodedPrefixLength = (prefix: Prefix) => 1 + ((prefix.length + 7) >> 3);

/**
 * Reads prefixes up to `end`. A length beyond the family's maximum or bytes running past `end`
 * throws `PrefixError`; the caller knows which error that is where it found the prefixes. Bits past
 * the length are ignored (RFC 4271: "the value of trailing bits is irrelevant").
 */
export function readPrefixes(cursor: Cursor, end: number, afi: AddressFamily): Prefix[] {
  const out: Prefix[] = [];
  const size = afi === Afi.IPV4 ? 4 : 16;
  const max = maxLength(afi);
  const inner = new Cursor(cursor.bytes, cursor.offset, end);
  try {
    while (inner.remaining > 0) {
      const length = inner.u8();
      if (length > max) throw new PrefixError(`prefix length ${length} is longer than ${max}`);
      const bytes = new Uint8Array(size);
      bytes.set(inner.take((length + 7) >> 3, `a /${length} prefix`));
      out.push({ afi, address: addressText(masked(bytes, length)), length });
    }
  } catch (error) {
    if (error instanceof Overrun) throw new PrefixError(`a prefix runs past its field (${error.message})`);
    throw error;
  }
  cursor.offset = end;
  return out;
}

/** Not an Error, as Overrun: the caller turns it into the error its field calls for. */
export class PrefixError {
  constructor(readonly message: string) {}
}
