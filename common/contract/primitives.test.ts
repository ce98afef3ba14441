import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { isIP } from 'node:net';
import { API_VERSION, ServiceSchema, canonicalIp, ipAddress, routingAddress } from './index.js';

// What glibc's inet_ntop prints for each (checked with Python's socket.inet_ntop, which calls it):
// the form the native forwarder reports original destinations in.
const INET_NTOP: [written: string, printed: string][] = [
  ['fd00:0:0:0:0:0:0:10', 'fd00::10'],
  ['FD00::10', 'fd00::10'],
  ['2001:DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
  ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
  ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
  ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
  ['::1:0:0:0:0:0', '0:0:1::'],
  ['1:0:0:0:0:0:0:0', '1::'],
  ['0:0:0:0:0:0:0:0', '::'],
  ['1:2:3:4:5:6:7:0', '1:2:3:4:5:6:7:0'],
  ['0:0:0:0:0:ffff:0a00:0001', '::ffff:10.0.0.1'],
  ['::FFFF:10.0.0.1', '::ffff:10.0.0.1'],
  ['::10.0.0.1', '::10.0.0.1'],
  ['::0.0.0.1', '::1'],
  ['::ffff:0:10.0.0.1', '::ffff:0:a00:1'],
  ['64:ff9b::1.2.3.4', '64:ff9b::102:304'],
];

describe('one form of an IP address', () => {
  it.each(INET_NTOP)('reads %s as inet_ntop prints it: %s', (written, printed) => {
    expect(ipAddress.parse(written)).toBe(printed);
  });

  it('keeps IPv4 and a zone as written, and refuses what is not an address', () => {
    expect(ipAddress.parse('10.96.0.10')).toBe('10.96.0.10');
    expect(ipAddress.parse('FE80:0::1%eth0')).toBe('fe80::1%eth0');
    for (const bad of ['010.0.0.1', '10.0.0', 'fd00::10::1', 'orders', '']) {
      expect(ipAddress.safeParse(bad).error?.issues.map((i) => i.message)).toEqual(['must be an IPv4 or IPv6 address']);
    }
  });

  it('is one form whatever the spelling: canonical again is itself, and the same address whatever the case or zeros', () => {
    const spellings = fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }).chain((words) =>
      // Zeros are common in real addresses: half the words become 0, so `::` runs of every length appear.
      fc.tuple(fc.constant(words), fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }), fc.boolean()),
    );
    fc.assert(
      fc.property(spellings, ([words, zeroed, upper]) => {
        const full = words.map((w, i) => (zeroed[i] ? 0 : w).toString(16).padStart(4, '0')).join(':');
        const written = upper ? full.toUpperCase() : full;
        const canonical = canonicalIp(written)!;
        expect(isIP(canonical)).toBe(6);
        expect(canonicalIp(canonical)).toBe(canonical);
        expect(canonical).toBe(canonical.toLowerCase());
        expect(canonicalIp(full.replace(/(^|:)0+(?=[0-9a-f])/g, '$1'))).toBe(canonical);
      }),
      { numRuns: 2000 },
    );
  });

  it('routes an IPv4-mapped address as its IPv4 address, and nothing else differently', () => {
    expect(routingAddress(ipAddress.parse('::FFFF:240.240.0.20'))).toBe('240.240.0.20');
    expect(routingAddress('240.240.0.20')).toBe('240.240.0.20');
    expect(routingAddress('::10.0.0.1')).toBe('::10.0.0.1');
    expect(routingAddress('fd00::10')).toBe('fd00::10');
  });

  it('hands every consumer of a service the canonical VIP and endpoint addresses', () => {
    const service = ServiceSchema.parse({
      apiVersion: API_VERSION,
      kind: 'Service',
      id: 'orders.shop',
      name: 'orders',
      namespace: 'shop',
      source: 'kubernetes',
      vips: [{ address: 'FD00:0:0:0:0:0:0:10', allocation: 'cluster-ip' }],
      ports: [{ port: 80 }],
      endpoints: [{ address: '2001:DB8:0:0:0:0:0:7', port: 8080 }],
    });
    expect(service.vips[0]!.address).toBe('fd00::10');
    expect(service.endpoints[0]!.address).toBe('2001:db8::7');
  });
});
