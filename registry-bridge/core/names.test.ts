import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { dnsName } from '../../common/contract/index.js';
import { dnsLabelOf, HostnameBook, LabelBook } from './names.js';

describe('dnsLabelOf', () => {
  it.each([
    ['web', 'web'],
    ['Web', 'web'],
    ['web_api', 'web-api'],
    ['Web.API', 'web-api'],
    ['web  api', 'web-api'],
    ['-web-', 'web'],
    ['web--api', 'web-api'],
    ['zahlungsdienst-ü', 'zahlungsdienst'],
    ['ORDERS', 'orders'],
  ])('%j becomes %j', (raw, label) => {
    expect(dnsLabelOf(raw)).toBe(label);
  });

  it('gives no label to a name with nothing a label can hold', () => {
    expect(dnsLabelOf('___')).toBeUndefined();
    expect(dnsLabelOf('日本')).toBeUndefined();
  });

  it('cuts a long name to 63 characters and keeps two long names with one prefix apart', () => {
    const a = `${'x'.repeat(70)}a`;
    const b = `${'x'.repeat(70)}b`;
    expect(dnsLabelOf(a)).toHaveLength(63);
    expect(dnsLabelOf(a)).not.toBe(dnsLabelOf(b));
    expect(dnsLabelOf(a)).toMatch(/^x{56}-[0-9a-f]{6}$/);
  });

  it('always gives a DNS label, or none', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 100 }), (raw) => {
        const label = dnsLabelOf(raw);
        if (label !== undefined) expect(dnsName.safeParse(label).success && !label.includes('.')).toBe(true);
      }),
    );
  });
});

describe('LabelBook', () => {
  it('gives a shared label to the name equal to it, else the smallest name, whatever the order of arrival', () => {
    const names = ['web_api', 'Web-API', 'web-api', 'WEB.API'];
    const labelsInOrder = (order: string[]) => {
      const book = new LabelBook();
      for (const n of order) book.add(n);
      return Object.fromEntries(names.map((n) => [n, book.labelOf(n)]));
    };
    const forward = labelsInOrder(names);
    expect(forward['web-api']).toBe('web-api');
    for (const other of ['web_api', 'Web-API', 'WEB.API']) expect(forward[other]).toMatch(/^web-api-[0-9a-f]{6}$/);
    expect(new Set(Object.values(forward)).size).toBe(4);
    expect(labelsInOrder([...names].reverse())).toEqual(forward);

    const book = new LabelBook();
    book.add('web_api');
    book.add('Web-API');
    // 'Web-API' < 'web_api' (W before w): it holds the label until the exact name comes.
    expect(book.labelOf('Web-API')).toBe('web-api');
    expect(book.add('web-api')).toEqual(['web-api', 'Web-API']);
    expect(book.remove('web-api')).toEqual(['Web-API']);
    expect(book.labelOf('Web-API')).toBe('web-api');
    expect(book.rivalsOf('Web-API')).toEqual(['web_api']);
  });

  it('refuses a name that cannot be a label', () => {
    expect(new LabelBook().add('***')).toBeUndefined();
  });
});

describe('HostnameBook', () => {
  const consul = (id: string, rank = 1) => ({ id, rank, kubernetes: false });

  it('gives a hostname to the source listed first, then the smaller id, never to the last claimant', () => {
    const book = new HostnameBook();
    book.claim(consul('web.dc2.consul', 2), ['web.service.consul', 'web.service.dc2.consul']);
    const changed = book.claim(consul('web.dc1.consul', 1), ['web.service.consul', 'web.service.dc1.consul']);
    expect(changed).toEqual(new Set(['web.dc2.consul']));
    expect(book.held('web.dc1.consul', ['web.service.consul', 'web.service.dc1.consul'])).toEqual(['web.service.consul', 'web.service.dc1.consul']);
    expect(book.held('web.dc2.consul', ['web.service.consul', 'web.service.dc2.consul'])).toEqual(['web.service.dc2.consul']);
    expect(book.conflicts()).toEqual([{ hostname: 'web.service.consul', holder: 'web.dc1.consul', losers: ['web.dc2.consul'] }]);
    expect(book.release('web.dc1.consul')).toEqual(new Set(['web.dc2.consul']));
    expect(book.holder('web.service.consul')).toBe('web.dc2.consul');
  });

  it('never lets a bare registry name shadow a Kubernetes Service of that name', () => {
    const book = new HostnameBook();
    book.claim({ id: 'orders.prod.eureka', rank: 0, kubernetes: false }, ['orders', 'orders.prod.eureka']);
    const changed = book.claim({ id: 'orders.shop', rank: 5, kubernetes: true }, ['orders']);
    expect(changed).toEqual(new Set(['orders.prod.eureka']));
    expect(book.held('orders.prod.eureka', ['orders', 'orders.prod.eureka'])).toEqual(['orders.prod.eureka']);
    expect(book.release('orders.shop')).toEqual(new Set(['orders.prod.eureka']));
    expect(book.holder('orders')).toBe('orders.prod.eureka');
  });

  it('moves a hostname when its holder stops claiming it', () => {
    const book = new HostnameBook();
    book.claim(consul('a.dc1.consul'), ['x.service.consul']);
    book.claim(consul('b.dc1.consul'), ['x.service.consul']);
    expect(book.holder('x.service.consul')).toBe('a.dc1.consul');
    expect(book.claim(consul('a.dc1.consul'), ['a.service.consul'])).toEqual(new Set(['b.dc1.consul']));
    expect(book.holder('x.service.consul')).toBe('b.dc1.consul');
  });
});
