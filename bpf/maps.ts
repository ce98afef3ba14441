/*
 * The per-namespace settings as the programs in bpf/src/redirect.bpf.c read them: the same
 * layouts byte for byte (little-endian hosts; the feature check refuses others). Pure, so the
 * encoding is unit-tested without a kernel.
 */
import ipaddr from 'ipaddr.js';
import type { Interception } from '../common/contract/index.js';

export const MAP = {
  settings: 'flb_settings',
  excludedPorts: 'flb_excl_ports',
  excludedCidrs: 'flb_excl_cidrs',
  includedCidrs: 'flb_incl_cidrs',
  originalByCookie: 'flb_orig_cookie',
  originalByTuple: 'flb_orig_tuple',
  dnsServerByCookie: 'flb_dns_cookie',
} as const;

export const KEY_SIZE = {
  [MAP.settings]: 8,
  [MAP.excludedPorts]: 16,
  [MAP.excludedCidrs]: 28,
  [MAP.includedCidrs]: 28,
} as const;

const FLAG = { includeOnly: 1, captureDns: 2, noIpv6: 4 } as const;

/** The map entries that make one namespace meshed, keyed by its cookie. */
export interface NamespaceEntries {
  settings: { key: Buffer; value: Buffer };
  excludedPorts: Buffer[];
  excludedCidrs: Buffer[];
  includedCidrs: Buffer[];
}

export function cookieKey(cookie: bigint): Buffer {
  const key = Buffer.alloc(8);
  key.writeBigUInt64LE(cookie);
  return key;
}

function portKey(cookie: bigint, port: number): Buffer {
  const key = Buffer.alloc(KEY_SIZE[MAP.excludedPorts]);
  key.writeBigUInt64LE(cookie, 0);
  key.writeUInt16LE(port, 8);
  return key;
}

/** An LPM key: the cookie's 64 bits always match whole, then the range in IPv6 form (IPv4 as ::ffff:a.b.c.d/96+n). */
export function cidrKey(cookie: bigint, cidr: string): Buffer {
  const [address, bits] = ipaddr.parseCIDR(cidr);
  const key = Buffer.alloc(KEY_SIZE[MAP.excludedCidrs]);
  let bytes: number[];
  let prefix: number;
  if (address.kind() === 'ipv4') {
    bytes = [...Array<number>(10).fill(0), 0xff, 0xff, ...ipaddr.IPv4.networkAddressFromCIDR(cidr).toByteArray()];
    prefix = 96 + bits;
  } else {
    bytes = ipaddr.IPv6.networkAddressFromCIDR(cidr).toByteArray();
    prefix = bits;
  }
  key.writeUInt32LE(64 + prefix, 0);
  key.writeBigUInt64LE(cookie, 4);
  Buffer.from(bytes).copy(key, 12);
  return key;
}

/** Which keys belong to a namespace: every key of ours starts with its cookie (after an LPM key's prefix length). */
export function keyCookie(map: keyof typeof KEY_SIZE, key: Buffer): bigint {
  return key.readBigUInt64LE(map === MAP.excludedCidrs || map === MAP.includedCidrs ? 4 : 0);
}

/**
 * `ownAddresses`: the namespace's own addresses, which an app reaches directly (the iptables rules
 * let everything that leaves through lo pass; connect() comes before any route, so here they are
 * excluded ranges of one address each).
 */
export function namespaceEntries(cookie: bigint, settings: Interception, ownAddresses: readonly string[] = []): NamespaceEntries {
  const value = Buffer.alloc(16);
  value.writeUInt32LE(settings.proxyUid, 0);
  value.writeUInt32LE(settings.proxyGid ?? 0, 4);
  value.writeUInt16LE(settings.outboundPort, 8);
  value.writeUInt16LE(settings.dnsPort, 10);
  const flags =
    (settings.includeOutboundIpRanges.length > 0 ? FLAG.includeOnly : 0) |
    (settings.captureDns ? FLAG.captureDns : 0) |
    (settings.ipv6 === 'disabled' ? FLAG.noIpv6 : 0);
  value.writeUInt32LE(flags, 12);
  const unique = (keys: Buffer[]) => [...new Map(keys.map((k) => [k.toString('hex'), k])).values()];
  return {
    settings: { key: cookieKey(cookie), value },
    excludedPorts: unique(settings.excludeOutboundPorts.map((p) => portKey(cookie, p))),
    excludedCidrs: unique(
      [...settings.excludeOutboundIpRanges, ...ownAddresses.map((a) => `${a}/${a.includes(':') ? 128 : 32}`)].map((c) => cidrKey(cookie, c)),
    ),
    includedCidrs: unique(settings.includeOutboundIpRanges.map((c) => cidrKey(cookie, c))),
  };
}
