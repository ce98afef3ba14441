import { describe, expect, it } from '@jest/globals';
import { InterceptionSchema } from '../common/contract/index.js';
import { KEY_SIZE, MAP, cidrKey, keyCookie, namespaceEntries } from './maps.js';

// The byte layouts bpf/src/redirect.bpf.c reads; a change on one side only would misread every key.
const COOKIE = 0x0102030405060708n;
const settings = (overrides: Record<string, unknown> = {}) => InterceptionSchema.parse({ version: 1, mode: 'cni', ...overrides });

describe('the map entries of one network namespace', () => {
  it('writes struct flb_settings: proxy UID and GID, outbound and DNS ports, flags', () => {
    const { settings: entry } = namespaceEntries(
      COOKIE,
      settings({ proxyUid: 1500, proxyGid: 1600, includeOutboundIpRanges: ['10.0.0.0/8'], ipv6: 'disabled' }),
    );
    expect(entry.key.toString('hex')).toBe('0807060504030201');
    // uid 1500, gid 1600, port 15001, port 15053, flags include-only | capture-dns | no-ipv6
    expect(entry.value.toString('hex')).toBe(['dc050000', '40060000', '993a', 'cd3a', '07000000'].join(''));
    const plain = namespaceEntries(COOKIE, settings({ captureDns: false })).settings.value;
    expect(plain.readUInt32LE(4)).toBe(0);
    expect(plain.readUInt32LE(12)).toBe(0);
  });

  it('keys an excluded port by cookie and port, once however often it is listed', () => {
    const { excludedPorts } = namespaceEntries(COOKIE, settings({ excludeOutboundPorts: [9090, 9090, 5432] }));
    expect(excludedPorts.map((k) => k.toString('hex'))).toEqual([
      '0807060504030201' + '8223' + '0000' + '00000000',
      '0807060504030201' + '3815' + '0000' + '00000000',
    ]);
    expect(excludedPorts[0]).toHaveLength(KEY_SIZE[MAP.excludedPorts]);
  });

  it('keys an IPv4 range as ::ffff:a.b.c.d with 64 + 96 + n bits, its host bits cleared', () => {
    const key = cidrKey(COOKIE, '10.201.7.9/24');
    expect(key).toHaveLength(28);
    expect(key.readUInt32LE(0)).toBe(64 + 96 + 24);
    expect(key.subarray(4, 12).toString('hex')).toBe('0807060504030201');
    expect(key.subarray(12).toString('hex')).toBe('00000000000000000000ffff0ac90700');
  });

  it('keys an IPv6 range with 64 + n bits', () => {
    const key = cidrKey(COOKIE, 'fd00:200::5/64');
    expect(key.readUInt32LE(0)).toBe(64 + 64);
    expect(key.subarray(12).toString('hex')).toBe('fd000200000000000000000000000000');
  });

  it('finds the cookie in every kind of key, so a namespace is removed from all maps', () => {
    const entries = namespaceEntries(
      COOKIE,
      settings({ excludeOutboundPorts: [1], excludeOutboundIpRanges: ['1.2.3.4/32'], includeOutboundIpRanges: ['::/0'] }),
    );
    expect(keyCookie(MAP.settings, entries.settings.key)).toBe(COOKIE);
    expect(keyCookie(MAP.excludedPorts, entries.excludedPorts[0]!)).toBe(COOKIE);
    expect(keyCookie(MAP.excludedCidrs, entries.excludedCidrs[0]!)).toBe(COOKIE);
    expect(keyCookie(MAP.includedCidrs, entries.includedCidrs[0]!)).toBe(COOKIE);
  });
});

describe("the namespace's own addresses", () => {
  it('are excluded one address each, beside the excluded ranges', () => {
    const { excludedCidrs } = namespaceEntries(COOKIE, settings({ excludeOutboundIpRanges: ['10.0.0.0/8'] }), ['10.210.0.1', 'fd00:210::1']);
    expect(excludedCidrs.map((k) => k.readUInt32LE(0))).toEqual([64 + 96 + 8, 64 + 96 + 32, 64 + 128]);
    expect(excludedCidrs[2]!.subarray(12).toString('hex')).toBe('fd000210000000000000000000000001');
  });
});
