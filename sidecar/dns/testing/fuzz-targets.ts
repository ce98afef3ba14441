// Fuzz targets of the sidecar's DNS server (run by sidecar/dns/fuzz.test.ts through
// common/testing/fuzz.ts). Two kinds of bytes reach it from others:
//  - dns-query: whatever a client sends, through the server's own query path (Resolver.handle:
//    parseQuery, the table, the cache, a forward to an in-process upstream, the answer), over UDP
//    and TCP. Every input gets no answer (a drop) or exactly one well-formed response.
//  - upstream-answer: whatever an upstream sends back for a question, through the checks the
//    forwarder makes, parseResponse, the cache and forwardedResponse: truncated messages, zero-length
//    RDATA of every type, pointer loops, counts larger than the records. A replayed answer must be
//    well-formed, and where dns-packet (the reference) reads the upstream's message it must read
//    the replay the same way.
// Seeds (fuzz/corpus/<target>/) are made by fuzz-seeds.ts from dns-packet and a real dnsmasq.
import dnsPacket from 'dns-packet';
import type fc from 'fast-check';
import { pino } from 'pino';
import { fuzzInputs } from '../../../common/testing/fuzz-inputs.js';
import type { FuzzCheck, FuzzTarget } from '../../../common/testing/fuzz-runner.js';
import { DnsCache } from '../cache.js';
import { DnsMetrics } from '../metrics.js';
import { Resolver } from '../server.js';
import { buildDnsTable } from '../table.js';
import {
  DROP,
  MAX_UDP_PAYLOAD,
  forwardedResponse,
  mixCase,
  parseQuery,
  parseResponse,
  sameQuestion,
  upstreamQuery,
  wireName,
  type Forwarded,
  type Query,
} from '../wire.js';
import { orders, service } from './fixtures.js';

const TYPES = [1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 43, 46, 47, 48, 64, 65, 251, 252, 255, 0, 0xffff];
const NAMES = [
  'orders.shop.svc.cluster.local',
  'orders.shop',
  '_grpc._tcp.orders.shop.svc.cluster.local',
  'big.example',
  'dual.example',
  '20.14.96.10.in-addr.arpa',
  'example.com',
  'gone.example.com',
  'a.b.c.d.e.f.example.org',
  '',
];

function concat(parts: readonly (Uint8Array | readonly number[])[]): Uint8Array {
  const arrays = parts.map((p) => (p instanceof Uint8Array ? p : Uint8Array.from(p)));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let offset = 0;
  for (const a of arrays) {
    out.set(a, offset);
    offset += a.length;
  }
  return out;
}
const u16 = (n: number) => [(n >> 8) & 0xff, n & 0xff];
const u32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];

/** A name as a client or a hostile upstream may write it: the usual ones in any letter case, pointers anywhere (back, forward, at itself), junk. */
function casedName(check: FuzzCheck): fc.Arbitrary<Uint8Array> {
  return check.tuple(check.constantFrom(...NAMES), check.integer()).map(([name, bits]) => {
    const bytes = new Uint8Array(wireName(name));
    for (let i = 0; i < bytes.length; i++) if (bytes[i]! >= 97 && bytes[i]! <= 122 && (bits >> (i % 31)) & 1) bytes[i]! -= 32;
    return bytes;
  });
}

function nameBytes(check: FuzzCheck): fc.Arbitrary<Uint8Array> {
  const cased = casedName(check);
  const target = check.oneof(check.integer({ min: 0, max: 320 }), check.integer({ min: 0, max: 0x3fff }));
  const labels = check
    .array(
      check.uint8Array({ minLength: 0, maxLength: 70 }).map((l) => concat([[l.length], l])),
      { maxLength: 5 },
    )
    .map(concat);
  return check.oneof(
    { arbitrary: cased, weight: 4 },
    { arbitrary: check.constant(Uint8Array.of(0xc0, 0x0c)), weight: 2 },
    {
      arbitrary: check
        .tuple(
          check.oneof(
            cased.map((n) => n.subarray(0, n.length - 1)),
            labels,
          ),
          target,
        )
        .map(([prefix, to]) => concat([prefix, [0xc0 | (to >> 8), to & 0xff]])),
      weight: 2,
    },
    { arbitrary: labels.map((l) => concat([l, [0]])), weight: 1 },
    { arbitrary: check.uint8Array({ maxLength: 12 }), weight: 1 },
  );
}

/** A question's name: mostly one a resolver would ask, in any case; sometimes anything. */
function questionName(check: FuzzCheck): fc.Arbitrary<Uint8Array> {
  const labels = check
    .array(
      check.uint8Array({ minLength: 1, maxLength: 63 }).map((l) => concat([[l.length], l])),
      { maxLength: 6 },
    )
    .map((l) => concat([...l, [0]]));
  return check.oneof({ arbitrary: nameBytes(check), weight: 1 }, { arbitrary: labels, weight: 2 }, { arbitrary: casedName(check), weight: 7 });
}

/** RDATA for a type, well-formed or not: empty, cut short, random. */
function rdataBytes(check: FuzzCheck, type: number): fc.Arbitrary<Uint8Array> {
  const name = nameBytes(check);
  const fixed = (n: number) => check.uint8Array({ minLength: n, maxLength: n });
  let valid: fc.Arbitrary<Uint8Array>;
  switch (type) {
    case 1:
      valid = fixed(4);
      break;
    case 28:
      valid = fixed(16);
      break;
    case 2:
    case 5:
    case 12:
      valid = name;
      break;
    case 15:
      valid = check.tuple(fixed(2), name).map(concat);
      break;
    case 33:
      valid = check.tuple(fixed(6), name).map(concat);
      break;
    case 6:
      valid = check.tuple(name, name, fixed(20)).map(concat);
      break;
    case 16:
      valid = check
        .array(
          check.uint8Array({ maxLength: 40 }).map((s) => concat([[s.length], s])),
          { maxLength: 3 },
        )
        .map(concat);
      break;
    case 41:
      valid = check
        .array(
          check
            .tuple(check.integer({ min: 0, max: 0xffff }), check.uint8Array({ maxLength: 12 }))
            .map(([code, data]) => concat([u16(code), u16(data.length), data])),
          { maxLength: 2 },
        )
        .map(concat);
      break;
    default:
      valid = check.uint8Array({ maxLength: 40 });
  }
  return check.oneof(
    { arbitrary: valid, weight: 6 },
    { arbitrary: check.constant(new Uint8Array(0)), weight: 2 },
    { arbitrary: check.tuple(valid, check.nat()).map(([v, cut]) => v.subarray(0, v.length === 0 ? 0 : cut % v.length)), weight: 1 },
    { arbitrary: check.uint8Array({ maxLength: 30 }), weight: 1 },
  );
}

/** A resource record, its RDLENGTH true or a lie. */
function recordBytes(check: FuzzCheck, types: readonly number[] = TYPES): fc.Arbitrary<Uint8Array> {
  return check.constantFrom(...types).chain((type) =>
    check
      .tuple(
        // An OPT is owned by the root, or it is malformed.
        type === 41 ? check.oneof({ arbitrary: check.constant(Uint8Array.of(0)), weight: 6 }, { arbitrary: nameBytes(check), weight: 1 }) : nameBytes(check),
        check.constantFrom(1, 1, 1, 255, 3, 512, 1232, 4096),
        check.constantFrom(0, 1, 30, 300, 0x7fffffff, 0x80000000, 0xffffffff),
        rdataBytes(check, type),
        check.oneof(
          { arbitrary: check.constant(-1), weight: 16 },
          { arbitrary: check.constantFrom(0, 1, 2, 0xffff), weight: 1 },
          { arbitrary: check.integer({ min: 0, max: 300 }), weight: 1 },
        ),
      )
      .map(([owner, klass, ttl, rdata, lie]) => concat([owner, u16(type), u16(klass), u32(ttl), u16(lie < 0 ? rdata.length : lie), rdata])),
  );
}

/** A DNS message: header, question, records placed in sections by counts that may lie, maybe cut short. */
export function messageBytes(check: FuzzCheck, response: boolean): fc.Arbitrary<Uint8Array> {
  const question = check
    .tuple(questionName(check), check.constantFrom(...TYPES, 1, 1, 28, 33, 12), check.constantFrom(1, 1, 1, 255, 3, 0))
    .map(([name, type, klass]) => concat([name, u16(type), u16(klass)]));
  const records = response
    ? check.array(recordBytes(check), { maxLength: 8 })
    : check.oneof(
        { arbitrary: check.constant([]), weight: 3 },
        { arbitrary: recordBytes(check, [41]).map((r) => [r]), weight: 3 },
        { arbitrary: check.array(recordBytes(check, [41, ...TYPES]), { maxLength: 3 }), weight: 1 },
      );
  return check
    .tuple(
      check.integer({ min: 0, max: 0xffff }),
      response
        ? check.constantFrom(0x81, 0x81, 0x83, 0x80, 0x85)
        : check.oneof({ arbitrary: check.constantFrom(0x01, 0x00), weight: 8 }, { arbitrary: check.constantFrom(0x81, 0x11, 0x29, 0x31, 0x03), weight: 1 }),
      check.constantFrom(0x00, 0x10, 0x20, 0x80, 0x83, 0x82, 0x85, 0xb0),
      check.oneof({ arbitrary: check.constant(1), weight: 16 }, { arbitrary: check.constantFrom(0, 2, 0xffff), weight: 1 }),
      question,
      records,
      check.tuple(check.nat(), check.nat()),
      check.oneof({ arbitrary: check.constant(-1), weight: 16 }, { arbitrary: check.constantFrom(0, 1, 2, 3, 0xffff), weight: 1 }),
      check.oneof({ arbitrary: check.constant(-1), weight: 10 }, { arbitrary: check.nat(), weight: 1 }),
    )
    .map(([id, flags, flags2, qd, q, rrs, [split1, split2], lie, cut]) => {
      // Section counts that add up to the records, split at random (a query's mostly all additional); or a lie in the answer count.
      const an = rrs.length === 0 || (!response && split1 % 4 !== 0) ? 0 : split1 % (rrs.length + 1);
      const ns = rrs.length - an === 0 || (!response && split2 % 4 !== 0) ? 0 : split2 % (rrs.length - an + 1);
      const ar = rrs.length - an - ns;
      const message = concat([u16(id), [flags, flags2], u16(qd), u16(lie < 0 ? an : lie), u16(ns), u16(ar), q, ...rrs]);
      return cut < 0 ? message : message.subarray(0, cut % (message.length + 1));
    });
}

/** The harness's mix (noise, mutated seeds, mutated messages), with as many messages as made besides: most noise is FORMERR at the first check. */
const inputs = (check: FuzzCheck, seeds: readonly Uint8Array[], messages: fc.Arbitrary<Uint8Array>) =>
  check.oneof({ arbitrary: fuzzInputs(check, seeds, messages), weight: 1 }, { arbitrary: messages, weight: 1 });

/** Logs at warn or above, kept to fail the input that caused them: a handled bug still is a bug. */
function problemLog() {
  const problems: string[] = [];
  const log = pino({ level: 'warn' }, { write: (line: string) => problems.push(line) });
  return { log, problems };
}

function fail(what: string, details: Record<string, unknown> = {}): never {
  throw new Error(`${what} ${JSON.stringify(details, (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v))}`);
}

const table = buildDnsTable(
  [
    orders,
    service({
      id: 'dual.static',
      name: 'dual',
      source: 'static',
      hostnames: ['dual.example'],
      vips: [
        { address: '240.240.0.18', allocation: 'mesh' },
        { address: 'fd00::18', allocation: 'mesh' },
      ],
    }),
    service({
      id: 'big.static',
      name: 'big',
      source: 'static',
      hostnames: ['big.example'],
      vips: Array.from({ length: 100 }, (_, i) => ({ address: `240.240.9.${i + 1}`, allocation: 'mesh' as const })),
    }),
  ],
  [],
  ['shop.svc.cluster.local', 'svc.cluster.local', 'cluster.local'],
);

/**
 * The upstream the query target forwards to, answering at once from the question it was sent (in
 * the letter case the forwarder gave it; checkResponse wants the client's back): an
 * address, NXDOMAIN with an SOA, SERVFAIL, a referral with its OPT in the middle, or nothing (every
 * attempt failed), by the question's length; TTL 0 for some so that the cache both fills and misses.
 */
function inProcessUpstream(msg: Buffer, q: Query, done: (response: Buffer | undefined) => void): void {
  const sent = upstreamQuery(0x5a5a, msg, q);
  // As the forwarder sends it: the name in random case, which the client must never see.
  mixCase(sent, q.questionEnd, () => (Math.random() * 256) | 0);
  const head = Buffer.from(sent.subarray(0, q.questionEnd));
  head[2] = 0x81;
  const kind = q.questionEnd % 5;
  const soa = concat([[0xc0, 0x0c], u16(6), u16(1), u32(30), u16(2 + 2 + 20), [0xc0, 0x0c, 0xc0, 0x0c], new Uint8Array(16), u32(45)]);
  const a = concat([[0xc0, 0x0c], u16(1), u16(1), u32(q.questionEnd % 2 ? 0 : 60), u16(4), [192, 0, 2, 1]]);
  const opt = concat([[0], u16(41), u16(4096), u32(0), u16(0)]);
  const parts: { rcode: number; an: Uint8Array[]; ns: Uint8Array[]; ar: Uint8Array[] }[] = [
    { rcode: 0, an: [a, a], ns: [], ar: [opt] },
    { rcode: 3, an: [], ns: [soa], ar: [] },
    { rcode: 2, an: [], ns: [], ar: [opt] },
    { rcode: 0, an: [], ns: [soa], ar: [opt, a] },
  ];
  if (kind === 4) {
    done(undefined);
    return;
  }
  const { rcode, an, ns, ar } = parts[kind]!;
  head[3] = 0x80 | rcode;
  head.writeUInt16BE(an.length, 6);
  head.writeUInt16BE(ns.length, 8);
  head.writeUInt16BE(ar.length, 10);
  const response = Buffer.from(concat([head, ...an, ...ns, ...ar]));
  done(sameQuestion(response, sent, q.questionEnd, true) ? response : undefined);
}

/**
 * What every response we send must be: for this query, within the size allowed, and readable by
 * dns-packet (a replayed upstream answer only where dns-packet read the upstream's message: we pass
 * on RDATA we do not read).
 */
function checkResponse(query: Buffer, response: Buffer, udp: boolean, parsed: Query | number, readable = true): void {
  const limit = !udp ? 65535 : typeof parsed !== 'number' && parsed.edns ? Math.min(parsed.udpSize, MAX_UDP_PAYLOAD) : 512;
  if (response.length < 12 || response.length > limit) fail('response size out of bounds', { length: response.length, limit });
  if (response[0] !== query[0] || response[1] !== (query[1] ?? 0)) fail('response id differs from the query id');
  if (!(response[2]! & 0x80)) fail('response without QR');
  const qd = response.readUInt16BE(4);
  if (qd > 1) fail('response with more than one question');
  if (qd === 1 && typeof parsed !== 'number' && !response.subarray(12, parsed.questionEnd).equals(query.subarray(12, parsed.questionEnd)))
    fail('response question differs from the one asked');
  if (!readable) return;
  let decoded: dnsPacket.DecodedPacket;
  try {
    decoded = dnsPacket.decode(response);
  } catch (error) {
    fail(`dns-packet cannot read our response: ${(error as Error).message}`, { response });
  }
  const opts = (decoded.additionals ?? []).filter((r) => r.type === 'OPT');
  if (opts.length > 1) fail('response with two OPT records');
  if (response[2]! & 0x02 && (decoded.answers ?? []).length > 0) fail('truncated response that carries answers');
}

function queryTarget(): FuzzTarget {
  const { log, problems } = problemLog();
  const resolver = new Resolver(table, 5, new DnsCache(256, 300), new DnsMetrics(), log);
  resolver.forwarder = { forward: inProcessUpstream };
  return {
    run(input) {
      const query = Buffer.from(input);
      const parsed = parseQuery(query);
      for (const udp of [true, false]) {
        const responses: Buffer[] = [];
        const answered = resolver.handle(query, udp, (response) => responses.push(response));
        if (problems.length > 0) fail('the query path logged a problem', { problem: problems.splice(0).join('\n') });
        if (!answered) {
          if (parsed !== DROP) fail('a query dropped that parseQuery did not drop', { parsed });
          if (responses.length > 0) fail('a dropped query was answered');
          continue;
        }
        if (parsed === DROP) fail('a query answered that parseQuery drops');
        if (responses.length !== 1) fail('not exactly one response', { responses: responses.length });
        checkResponse(query, responses[0]!, udp, parsed);
      }
    },
    inputs: (check, seeds) => inputs(check, seeds, messageBytes(check, false)),
  };
}

/**
 * Types whose RDATA dns-packet reads by its structure, past RDLENGTH when that lies, and we pass on
 * as opaque bytes (wire.ts's rdataFits checks the types stub resolvers read): a message with one of
 * them is no reference for ours.
 */
const OPAQUE_TO_US = new Set(['HINFO', 'RP', 'NAPTR', 'DS', 'SSHFP', 'RRSIG', 'NSEC', 'DNSKEY', 'NSEC3', 'TLSA', 'CAA']);

/** The upstream's message as dns-packet reads it, or undefined where it will not or is no reference. */
function reference(msg: Buffer): dnsPacket.DecodedPacket | undefined {
  let packet: dnsPacket.DecodedPacket;
  try {
    packet = dnsPacket.decode(msg);
  } catch {
    return undefined;
  }
  const records = [...(packet.answers ?? []), ...(packet.authorities ?? []), ...(packet.additionals ?? [])];
  return records.some((r) => OPAQUE_TO_US.has(r.type)) ? undefined : packet;
}

function checkForwarded(f: Forwarded, response: Buffer, questionEnd: number): void {
  if (!Number.isInteger(f.cacheSeconds) || f.cacheSeconds < 0) fail('cacheSeconds is not a non-negative integer', { cacheSeconds: f.cacheSeconds });
  for (const count of [f.an, f.ns, f.ar])
    if (!Number.isInteger(count) || count < 0 || count > 0xffff) fail('a section count out of range', { an: f.an, ns: f.ns, ar: f.ar });
  if (
    f.an + f.ns + f.ar > response.readUInt16BE(6) + response.readUInt16BE(8) + response.readUInt16BE(10) ||
    f.body.length > response.length - questionEnd + 0xffff
  )
    fail('more records kept than the upstream sent');
  if (f.ttls.length !== f.ttlOffsets.length) fail('TTLs and their offsets disagree');
  for (const offset of f.ttlOffsets)
    if (!Number.isInteger(offset) || offset < 0 || offset + 4 > f.body.length) fail('a TTL offset outside the body', { offset, body: f.body.length });
}

/** A client query for the question an upstream answer carries, with EDNS or without. */
function queryFor(response: Buffer, edns: boolean): { msg: Buffer; q: Query } | undefined {
  if (response.length < 12) return undefined;
  const asked = Buffer.from(response);
  asked[2] = 0x01;
  asked[3] = 0;
  asked.writeUInt16BE(1, 4);
  asked.fill(0, 6, 12);
  const q = parseQuery(asked);
  if (typeof q === 'number') return undefined;
  const question = asked.subarray(0, q.questionEnd);
  if (!edns) return { msg: question, q };
  const msg = Buffer.concat([question, Buffer.from([0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0])]);
  msg.writeUInt16BE(1, 10);
  const withOpt = parseQuery(msg);
  return typeof withOpt === 'number' ? undefined : { msg, q: withOpt };
}

function upstreamTarget(): FuzzTarget {
  const cache = new DnsCache(64, 300);
  return {
    run(input) {
      const response = Buffer.from(input);
      for (const edns of [false, true]) {
        const client = queryFor(response, edns);
        if (!client) return;
        const { msg, q } = client;
        // As the forwarder checks an answer before it believes it, against the query it sent.
        const sent = upstreamQuery(response.readUInt16BE(0), msg, q);
        if (!(response[2]! & 0x80) || !sameQuestion(response, sent, q.questionEnd)) return;
        const f = parseResponse(response, q.questionEnd);
        if (!f) return;
        checkForwarded(f, response, q.questionEnd);
        // Through the cache as a hit 1.5 s later would be served: TTLs capped and counted down.
        cache.clear();
        cache.set(q.name, f, 0);
        const cached = cache.get(q.name, 1500);
        const upstreamRead = reference(response);
        for (const [answer, age] of [
          [f, -1],
          [cached?.answer ?? f, 1],
        ] as const) {
          // As the server picks the limit: the client's UDP size (512 without EDNS), or TCP's.
          for (const limit of [q.edns ? Math.min(q.udpSize, MAX_UDP_PAYLOAD) : 512, 65535]) {
            const replay = forwardedResponse(msg, q, answer, limit, age);
            checkResponse(msg, replay, limit < 65535, q, upstreamRead !== undefined);
            if (!upstreamRead || replay[2]! & 0x02) continue;
            // dns-packet read the upstream's message: it must read our replay of it alike.
            const replayRead = reference(replay)!;
            const records = (p: dnsPacket.DecodedPacket) => [
              (p.answers ?? []).length,
              (p.authorities ?? []).length,
              (p.additionals ?? []).filter((r) => r.type !== 'OPT').length,
            ];
            if (records(replayRead).join() !== records(upstreamRead).join())
              fail('the replay has other records than the upstream answer', { upstream: records(upstreamRead), replay: records(replayRead) });
          }
        }
      }
    },
    inputs: (check, seeds) => inputs(check, seeds, messageBytes(check, true)),
  };
}

export const fuzzTargets: Record<string, FuzzTarget> = {
  'dns-query': queryTarget(),
  'upstream-answer': upstreamTarget(),
};
