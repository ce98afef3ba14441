import { describe, expect, it } from '@jest/globals';
import { cidrContains } from '../../common/contract/index.js';
import { VipAllocator } from './vips.js';

describe('VipAllocator', () => {
  it('gives every id an address of the ranges, the same one for the same id on any replica', () => {
    const a = new VipAllocator(['240.240.0.0/16']);
    const b = new VipAllocator(['240.240.0.0/16']);
    const ids = Array.from({ length: 500 }, (_, i) => `svc-${i}.dc1.consul`);
    const fromA = ids.map((id) => a.allocate(id)!);
    const fromB = [...ids].reverse().map((id) => b.allocate(id)!);
    expect(new Set(fromA).size).toBe(500);
    for (const address of fromA) expect(cidrContains('240.240.0.0/16', address)).toBe(true);
    expect(fromA.filter((address) => address.endsWith('.0.0') || address.endsWith('.255.255'))).toEqual([]);
    // Arrival order moves only those whose hash points at a taken address.
    const same = ids.filter((id, i) => fromA[i] === fromB[ids.length - 1 - i]).length;
    expect(same).toBeGreaterThan(490);
  });

  it('gives a released id the same address again when nobody took it', () => {
    const vips = new VipAllocator(['240.240.0.0/16']);
    const first = vips.allocate('orders.dc1.consul');
    vips.release('orders.dc1.consul');
    expect(vips.allocate('orders.dc1.consul')).toBe(first);
  });

  it('fills a small range and then says it is full', () => {
    const vips = new VipAllocator(['240.240.0.0/30']);
    expect([vips.allocate('a'), vips.allocate('b')].sort()).toEqual(['240.240.0.1', '240.240.0.2']);
    expect(vips.allocate('c')).toBeUndefined();
  });

  it('prefers stored addresses: moves their ids there, displaces whoever held them, keeps them for ids not back yet', () => {
    const vips = new VipAllocator(['240.240.0.0/16']);
    const a = vips.allocate('a')!;
    const b = vips.allocate('b')!;
    // The published catalog says a had b's address, and c (not seen yet) has a's.
    const changed = vips.adoptStored(
      new Map([
        ['a', b],
        ['c', a],
      ]),
    );
    expect(changed).toEqual(new Set(['a', 'b']));
    expect(vips.addressOf('a')).toBe(b);
    expect(vips.addressOf('b')).not.toBe(a);
    expect(vips.addressOf('b')).not.toBe(b);
    // a's old address waits for c: nobody else gets it.
    for (let i = 0; i < 300; i++) expect(vips.allocate(`other-${i}`)).not.toBe(a);
    expect(vips.allocate('c')).toBe(a);
  });

  it('frees stored addresses of services that never came back', () => {
    const vips = new VipAllocator(['240.240.0.0/30']);
    vips.adoptStored(new Map([['gone', '240.240.0.1']]));
    vips.allocate('x');
    expect(vips.allocate('y')).toBeUndefined();
    vips.forgetUnclaimedStored();
    expect(vips.allocate('y')).toBe('240.240.0.1');
  });

  it('releases addresses outside new ranges', () => {
    const vips = new VipAllocator(['240.240.0.0/16']);
    vips.allocate('a');
    expect(vips.setRanges(['240.241.0.0/16'])).toEqual(['a']);
    expect(cidrContains('240.241.0.0/16', vips.allocate('a')!)).toBe(true);
  });

  it('allocates from IPv6 ranges', () => {
    const vips = new VipAllocator(['fd00:240::/112']);
    expect(cidrContains('fd00:240::/112', vips.allocate('a')!)).toBe(true);
  });
});
