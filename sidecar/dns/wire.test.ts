import { describe, expect, it } from '@jest/globals';
import dnsPacket, { type Answer } from 'dns-packet';
import { DROP, RCODE_BADVERS, RCODE_FORMERR, RCODE_NOTIMP, forwardedResponse, parseQuery, parseResponse, skipName, wireKey, type Query } from './wire.js';

const opt = (udpPayloadSize: number, extra: Record<string, unknown> = {}) =>
  ({ type: 'OPT', name: '.', udpPayloadSize, flags: 0, options: [], ...extra }) as unknown as Answer;
const question = (name: string, additionals: Answer[] = []) =>
  dnsPacket.encode({ type: 'query', id: 9, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: 'A', class: 'IN' }], additionals });

describe('DNS wire format', () => {
  it('reads a query in place: lowercase key, EDNS size and DO bit', () => {
    const q = parseQuery(question('Orders.Shop', [opt(4096, { flags: dnsPacket.DNSSEC_OK })])) as Query;
    expect(q).toMatchObject({ qtype: 1, qclass: 1, edns: true, udpSize: 4096, dnssecOk: true, name: wireKey('orders.shop') });
    expect(parseQuery(question('orders.shop'))).toMatchObject({ edns: false, udpSize: 512 });
  });

  it('tells FORMERR, NOTIMP, BADVERS and what to drop', () => {
    expect(parseQuery(Buffer.from([1]))).toBe(DROP);
    expect(parseQuery(Buffer.from([1, 2, 3]))).toBe(RCODE_FORMERR);
    const response = question('a.example');
    response[2]! |= 0x80;
    expect(parseQuery(response)).toBe(DROP);
    const notify = question('a.example');
    notify[2] = 4 << 3;
    expect(parseQuery(notify)).toBe(RCODE_NOTIMP);
    expect(parseQuery(question('a.example', [opt(1232), opt(1232)]))).toBe(RCODE_FORMERR);
    expect(parseQuery(question('a.example').subarray(0, 20))).toBe(RCODE_FORMERR);
    expect(parseQuery(question('a.example', [opt(1232, { ednsVersion: 1 })]))).toBe(RCODE_BADVERS);
  });

  it('finds the TTL to cache for: the least of the records, or for NXDOMAIN the SOA negative TTL', () => {
    const q = question('x.example');
    const questionEnd = (parseQuery(q) as Query).questionEnd;
    const answer = (packet: Partial<dnsPacket.Packet>) =>
      dnsPacket.encode({ type: 'response', id: 9, questions: [{ name: 'x.example', type: 'A' }], ...packet });
    expect(
      parseResponse(
        answer({
          answers: [
            { type: 'A', name: 'x.example', ttl: 30, data: '192.0.2.1' },
            { type: 'A', name: 'x.example', ttl: 20, data: '192.0.2.2' },
          ],
        }),
        questionEnd,
      ),
    ).toMatchObject({ cacheSeconds: 20, an: 2, ttls: [30, 20] });
    const soa: Answer = {
      type: 'SOA',
      name: 'example',
      ttl: 300,
      data: { mname: 'ns.example', rname: 'h.example', serial: 1, refresh: 1, retry: 1, expire: 1, minimum: 45 },
    };
    expect(parseResponse(answer({ flags: 3, authorities: [soa] }), questionEnd)).toMatchObject({ rcode: 3, cacheSeconds: 45 });
    expect(parseResponse(answer({ flags: 3 }), questionEnd)).toMatchObject({ rcode: 3, cacheSeconds: 0 });
    expect(parseResponse(answer({ flags: 2, answers: [] }), questionEnd)).toMatchObject({ rcode: 2, cacheSeconds: 0 });
    expect(parseResponse(answer({ answers: [{ type: 'A', name: 'x.example', ttl: 30, data: '192.0.2.1' }] }).subarray(0, 40), questionEnd)).toBeUndefined();
  });

  it('drops the upstream OPT, even from the middle of the additional section, and replays the rest', () => {
    const q = question('x.example', [opt(1232)]);
    const parsed = parseQuery(q) as Query;
    const upstream = dnsPacket.encode({
      type: 'response',
      id: 9,
      questions: [{ name: 'x.example', type: 'A' }],
      answers: [{ type: 'A', name: 'x.example', ttl: 30, data: '192.0.2.1' }],
      additionals: [opt(4096), { type: 'A', name: 'ns.example', ttl: 30, data: '192.0.2.53' }],
    });
    const f = parseResponse(upstream, parsed.questionEnd)!;
    expect(f).toMatchObject({ an: 1, ar: 1 });
    const replayed = dnsPacket.decode(forwardedResponse(q, parsed, f, 1232, 5));
    expect(replayed.answers).toEqual([expect.objectContaining({ ttl: 25, data: '192.0.2.1' })]);
    expect(replayed.additionals).toEqual([
      expect.objectContaining({ name: 'ns.example', ttl: 25 }),
      expect.objectContaining({ type: 'OPT', udpPayloadSize: 1232 }),
    ]);
  });

  it('refuses a malformed upstream answer rather than walking off it or replaying what a client would misread', () => {
    const q = question('x.example');
    const questionEnd = (parseQuery(q) as Query).questionEnd;
    const head = (counts: [number, number, number], rcode = 0) => {
      const h = Buffer.from(q.subarray(0, questionEnd));
      h[2] = 0x81;
      h[3] = 0x80 | rcode;
      h.writeUInt16BE(counts[0], 6);
      h.writeUInt16BE(counts[1], 8);
      h.writeUInt16BE(counts[2], 10);
      return h;
    };
    const rr = (owner: number[], type: number, rdata: number[], rdlength = rdata.length) =>
      Buffer.from([...owner, type >> 8, type & 0xff, 0, 1, 0, 0, 0, 30, rdlength >> 8, rdlength & 0xff, ...rdata]);
    const a = rr([0xc0, 12], 1, [192, 0, 2, 1]);
    expect(parseResponse(Buffer.concat([head([1, 0, 0]), a]), questionEnd)).toMatchObject({ an: 1, cacheSeconds: 30 });
    const refused = {
      'counts larger than the records': Buffer.concat([head([3, 0, 0]), a]),
      'a count of 65,535 and no records': head([0xffff, 0xffff, 0xffff]),
      'an A of RDLENGTH 0': Buffer.concat([head([1, 0, 0]), rr([0xc0, 12], 1, [])]),
      'an AAAA of 4 bytes': Buffer.concat([head([1, 0, 0]), rr([0xc0, 12], 28, [1, 2, 3, 4])]),
      'a CNAME of RDLENGTH 0 followed by a record': Buffer.concat([head([2, 0, 0]), rr([0xc0, 12], 5, []), a]),
      'an MX whose name runs past its RDATA': Buffer.concat([head([1, 0, 0]), rr([0xc0, 12], 15, [0, 10, 3, 0x6d, 0x78], 4), Buffer.from([0x78, 0])]),
      'a TXT whose string runs past its RDATA': Buffer.concat([head([1, 0, 0]), rr([0xc0, 12], 16, [9, 0x61])]),
      'an SOA whose names end past its RDATA': Buffer.concat([
        head([0, 1, 0], 3),
        rr([0], 6, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 20),
        Buffer.from([0]),
      ]),
      'a pointer at itself': Buffer.concat([head([1, 0, 0]), rr([0xc0, questionEnd], 1, [192, 0, 2, 1])]),
      'a pointer forward': Buffer.concat([head([1, 0, 0]), rr([0xc0, questionEnd + 2], 1, [192, 0, 2, 1])]),
      'a pointer into the header': Buffer.concat([head([1, 0, 0]), rr([0xc0, 0], 1, [192, 0, 2, 1])]),
      'an OPT in the authority section': Buffer.concat([head([0, 1, 0]), rr([0], 41, [])]),
      'an OPT not owned by the root': Buffer.concat([head([0, 0, 1]), rr([0xc0, 12], 41, [])]),
      'a message cut inside a record': Buffer.concat([head([1, 0, 0]), a]).subarray(0, questionEnd + 12),
      // Back and past the header, but at no name: the last byte of the first record's TTL (30, read
      // as a label's length), which a replay rewrites as the answer ages.
      'a pointer into a TTL': Buffer.concat([head([2, 0, 0]), a, rr([0xc0, questionEnd + 9], 1, [192, 0, 2, 2])]),
      'a pointer into opaque RDATA': Buffer.concat([
        head([2, 0, 0]),
        rr([0xc0, 12], 0xff00, [3, 0x66, 0x6f, 0x6f, 0]),
        rr([0xc0, questionEnd + 12], 1, [192, 0, 2, 2]),
      ]),
    };
    for (const [what, response] of Object.entries(refused)) expect([what, parseResponse(response, questionEnd)]).toEqual([what, undefined]);
    // A pointer may land on any label of a name before it: here 'example' of the question, the root of the first record's name.
    const labelOfQuestion = Buffer.concat([head([2, 0, 0]), a, rr([0xc0, 14], 1, [192, 0, 2, 2])]);
    expect(dnsPacket.decode(labelOfQuestion).answers![1]).toMatchObject({ name: 'example' });
    expect(parseResponse(labelOfQuestion, questionEnd)).toMatchObject({ an: 2 });
    const root = Buffer.concat([head([1, 0, 1]), rr([0xc0, 12], 5, [1, 0x79, 0]), rr([0xc0, questionEnd + 14], 1, [192, 0, 2, 3])]);
    expect(parseResponse(root, questionEnd)).toMatchObject({ an: 1, ar: 1 });
    // A walk that starts from a failed one (-1, or NaN from arithmetic on it) fails at once.
    expect([skipName(q, -1), skipName(q, Number.NaN), skipName(q, q.length), skipName(q, 12, q.length + 1)]).toEqual([-1, -1, -1, -1]);
  });
});
