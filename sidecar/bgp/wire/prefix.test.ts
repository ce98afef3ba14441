import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { SocketAddress } from 'node:net';
import { addressBytes, addressText } from './prefix.js';

/** What the contract's canonicalIp() gives (common/contract/primitives.ts): SocketAddress's text. */
const reference = (bytes: Uint8Array) => {
  const groups = Array.from({ length: 8 }, (_, i) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16));
  return new SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
};

describe('IPv6 addresses as text', () => {
  it('match SocketAddress (inet_ntop) for every shape of zero runs, IPv4-mapped and IPv4-compatible ones', () => {
    // Bytes mostly zero, so runs of zero groups of every length and place come up.
    const word = fc.oneof(fc.constant(0), fc.constant(0), fc.constant(0xffff), fc.constant(1), fc.integer({ min: 0, max: 0xffff }));
    fc.assert(
      fc.property(fc.array(word, { minLength: 8, maxLength: 8 }), (words) => {
        const bytes = Uint8Array.from(words.flatMap((w) => [w >> 8, w & 0xff]));
        expect(addressText(bytes)).toBe(reference(bytes));
      }),
      { numRuns: 20_000 },
    );
    for (const text of ['::', '::1', '::2', '::ffff:10.0.0.1', '::10.0.0.1', '2001:db8::', '1::', '1:0:0:2::3', 'fe80::1:0:0:1'])
      expect(addressText(addressBytes(text))).toBe(reference(addressBytes(text)));
  });

  it('read back to the same bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (bytes) => {
        expect(addressBytes(addressText(bytes))).toEqual(bytes);
      }),
    );
  });
});
