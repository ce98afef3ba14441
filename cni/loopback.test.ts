import { describe, expect, it } from '@jest/globals';
import { existsSync, readFileSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InterceptionSchema, parseDocument } from '../common/contract/index.js';
import { loopbackDocument, loopbackProblems, parseLoopbackAddresses, vipsToAdd, vipsToRemove } from './loopback.js';

/**
 * Golden `ip -batch` documents for the pod's BGP VIPs on lo, one per case (what lo holds, what the
 * settings name); UPDATE_GOLDEN=1 regenerates, stale goldens fail, as the rule goldens do.
 */
const dir = fileURLToPath(new URL('./testdata/loopback/', import.meta.url));
const update = process.env.UPDATE_GOLDEN === '1';
const FRESH_LO = ['127.0.0.1/8', '::1/128'];
const cases: Record<string, { vips: string[]; live: string[] }> = {
  'fresh-pod': { vips: ['10.0.0.100/32', '2001:0DB8::0100/128'], live: FRESH_LO },
  // A restarted init container, or a second CNI ADD: only what is missing.
  'partly-there': { vips: ['10.0.0.100/32', '10.0.0.101/32', '2001:db8::100/128'], live: [...FRESH_LO, '10.0.0.100/32', '2001:db8::100/128'] },
  'all-there': { vips: ['10.0.0.100/32'], live: [...FRESH_LO, '10.0.0.100/32'] },
};
/** The settings as the init container and the agent read them (canonical host routes). */
const vipsOf = (vips: string[]) => InterceptionSchema.parse({ version: 1, mode: 'iptables', bgpVips: vips }).bgpVips ?? [];

describe('the BGP VIPs on lo', () => {
  it('has no stale goldens', () => {
    const stale = readdirSync(dir).filter((f) => !Object.keys(cases).some((c) => f === `${c}.add.golden` || f === `${c}.delete.golden`));
    if (update) for (const f of stale) unlinkSync(join(dir, f));
    else expect(stale).toEqual([]);
  });

  describe.each(Object.entries(cases))('%s', (name, { vips, live }) => {
    it.each([
      ['add', vipsToAdd],
      ['delete', vipsToRemove],
    ] as const)('%s matches its golden (UPDATE_GOLDEN=1 regenerates)', (action, choose) => {
      const doc = loopbackDocument(action, choose(vipsOf(vips), live)) ?? '';
      const file = join(dir, `${name}.${action}.golden`);
      if (update) writeFileSync(file, doc);
      expect(existsSync(file)).toBe(true);
      expect(doc).toBe(readFileSync(file, 'utf8'));
    });
  });

  it('adds nothing when every VIP is already there, and removes only ours', () => {
    expect(loopbackDocument('add', vipsToAdd(vipsOf(['10.0.0.100/32']), cases['all-there']!.live))).toBeUndefined();
    expect(vipsToRemove(vipsOf(['10.0.0.100/32', '10.0.0.101/32']), [...FRESH_LO, '10.0.0.100/32', '10.9.9.9/32'])).toEqual(['10.0.0.100/32']);
  });

  it('reads lo from `ip -j address show dev lo`, IPv6 in the form the settings hold', () => {
    const json = JSON.stringify([
      {
        ifname: 'lo',
        addr_info: [
          { family: 'inet', local: '127.0.0.1', prefixlen: 8 },
          { family: 'inet', local: '10.0.0.100', prefixlen: 32 },
          { family: 'inet6', local: '2001:db8::100', prefixlen: 128 },
          { family: 'inet6', local: '::1', prefixlen: 128 },
        ],
      },
    ]);
    const live = parseLoopbackAddresses(json);
    expect(live).toEqual(['127.0.0.1/8', '10.0.0.100/32', '2001:db8::100/128', '::1/128']);
    expect(loopbackProblems(vipsOf(['10.0.0.100/32', '2001:DB8:0::100/128', '10.0.0.101/32']), live)).toEqual(['missing BGP VIP 10.0.0.101/32 on lo']);
  });

  it('refuses, in the settings, a VIP that is not one address, naming the field', () => {
    expect(() =>
      parseDocument(InterceptionSchema, { version: 1, mode: 'iptables', bgpVips: ['10.0.0.100/32', '10.0.0.0/24', 'vip'] }, 'FLB_INTERCEPTION'),
    ).toThrow(/bgpVips\[1\]: must be one address as a host route, such as 10\.0\.0\.100\/32 or 2001:db8::100\/128.*bgpVips\[2\]: must be one address/s);
  });
});
