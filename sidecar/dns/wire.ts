/**
 * DNS wire format, written by hand for the hot path. dns-packet decodes a query into objects and
 * encodes an answer from them, which costs tens of microseconds per query and most of a core at the
 * rates a sidecar must serve; here a query is checked in place, answers for the table's names are
 * encoded once per table (answer records name their owner with a pointer to the question, offset 12,
 * so the same bytes serve every name and any letter case), and a response is the client's header
 * and question with those bytes behind them. Upstream answers are kept as bytes too; only their TTLs
 * are patched when served from the cache. dns-packet remains the reference (the tests decode every
 * response with it) and the fallback for the rare upstream answer this code will not cut.
 */
import dnsPacket from 'dns-packet';
import ipaddr from 'ipaddr.js';
import type { DnsAnswer, DnsTable } from './table.js';

export const TYPE_A = 1;
export const TYPE_NS = 2;
export const TYPE_CNAME = 5;
export const TYPE_SOA = 6;
export const TYPE_PTR = 12;
export const TYPE_MX = 15;
export const TYPE_TXT = 16;
export const TYPE_AAAA = 28;
export const TYPE_SRV = 33;
export const TYPE_DNAME = 39;
export const TYPE_OPT = 41;
export const TYPE_IXFR = 251;
export const TYPE_AXFR = 252;
export const TYPE_ANY = 255;
export const CLASS_IN = 1;
export const CLASS_ANY = 255;

export const RCODE_NOERROR = 0;
export const RCODE_FORMERR = 1;
export const RCODE_SERVFAIL = 2;
export const RCODE_NXDOMAIN = 3;
export const RCODE_NOTIMP = 4;
export const RCODE_REFUSED = 5;
/** Extended (EDNS) rcode 16: the upper bits travel in the OPT record. */
export const RCODE_BADVERS = 16;
/** parseQuery's verdict for packets that get no answer at all. */
export const DROP = -1;

/** The UDP payload size we advertise and never exceed (DNS flag day 2020: no fragments). */
export const MAX_UDP_PAYLOAD = 1232;
const OPT_LEN = 11;

export interface Query {
  /** Offset just past QTYPE and QCLASS: bytes 12..questionEnd are the question, echoed as sent. */
  questionEnd: number;
  qtype: number;
  qclass: number;
  /** The question name in wire format, lowercased, as a latin1 string: the table's and cache's key. */
  name: string;
  edns: boolean;
  /** The client's advertised UDP payload size; 512 without EDNS. */
  udpSize: number;
  dnssecOk: boolean;
}

/**
 * Checks a query in place. Returns the Query, an rcode to answer with (FORMERR, NOTIMP, BADVERS), or
 * DROP for what deserves no answer: responses (answering them could start a loop between two
 * servers) and packets too short to hold an id.
 */
export function parseQuery(msg: Buffer): Query | number {
  const len = msg.length;
  if (len < 12) return len < 2 || (len >= 3 && msg[2]! & 0x80) ? DROP : RCODE_FORMERR;
  const flags = msg[2]!;
  if (flags & 0x80) return DROP;
  if (flags & 0x78) return RCODE_NOTIMP;
  if (msg[4] !== 0 || msg[5] !== 1) return RCODE_FORMERR;
  const nameEnd = skipQuestionName(msg);
  if (nameEnd < 0 || nameEnd + 4 > len) return RCODE_FORMERR;
  const qtype = (msg[nameEnd]! << 8) | msg[nameEnd + 1]!;
  const qclass = (msg[nameEnd + 2]! << 8) | msg[nameEnd + 3]!;
  const questionEnd = nameEnd + 4;
  const answers = ((msg[6]! << 8) | msg[7]!) + ((msg[8]! << 8) | msg[9]!);
  const records = answers + ((msg[10]! << 8) | msg[11]!);
  let edns = false;
  let udpSize = 512;
  let dnssecOk = false;
  let version = 0;
  let p = questionEnd;
  for (let i = 0; i < records; i++) {
    const owner = p;
    p = skipName(msg, p);
    if (p < 0 || p + 10 > len) return RCODE_FORMERR;
    const type = (msg[p]! << 8) | msg[p + 1]!;
    const end = p + 10 + ((msg[p + 8]! << 8) | msg[p + 9]!);
    if (end > len) return RCODE_FORMERR;
    if (type === TYPE_OPT) {
      // RFC 6891: one OPT, in the additional section, owned by the root.
      if (edns || i < answers || msg[owner] !== 0) return RCODE_FORMERR;
      edns = true;
      udpSize = Math.max(512, (msg[p + 2]! << 8) | msg[p + 3]!);
      version = msg[p + 5]!;
      dnssecOk = (msg[p + 6]! & 0x80) !== 0;
    }
    p = end;
  }
  if (version !== 0) return RCODE_BADVERS;
  return { questionEnd, qtype, qclass, name: msg.toString('latin1', 12, nameEnd).toLowerCase(), edns, udpSize, dnssecOk };
}

/** The question name: plain labels only (nothing precedes it to point at), at most 255 bytes. */
function skipQuestionName(msg: Buffer): number {
  let p = 12;
  while (p < msg.length) {
    const label = msg[p]!;
    if (label === 0) return p + 1;
    if (label > 63) return -1;
    p += label + 1;
    if (p - 12 > 254) return -1;
  }
  return -1;
}

/**
 * Steps over a name that must end by `limit`: labels, then a zero byte or a pointer. -1 when it does
 * not, and for a start that is no position in the message (negative, NaN, past the end), so that a
 * caller's -1 fed back in cannot start a walk off the message. Pointers are not followed; each must
 * point back into an earlier part of the message past the header (RFC 1035 4.1.4: a prior
 * occurrence), so that a name we replay can send no decoder round a loop. Every step moves forward:
 * the walk ends within `limit - start` steps. With `labels`, where the names walked so far start a
 * label (or end), the name's own labels are marked there and a pointer must land on a mark: one
 * into a TTL, a type or opaque RDATA would read as a name bytes that are no name, and bytes we
 * rewrite on replay (TTLs) would make it another name, or none.
 */
export function skipName(msg: Buffer, start: number, limit = msg.length, labels?: Uint8Array): number {
  if (!(start >= 0 && limit <= msg.length)) return -1;
  let p = start;
  while (p < limit) {
    const label = msg[p]!;
    if (labels) labels[p] = 1;
    if (label === 0) return p + 1;
    if (label >= 0xc0) {
      if (p + 2 > limit) return -1;
      const target = ((label & 0x3f) << 8) | msg[p + 1]!;
      if (!(target >= 12 && target < start)) return -1;
      return labels && labels[target] !== 1 ? -1 : p + 2;
    }
    // 0x40 and 0x80 are label types nobody uses (RFC 6891 6.1.3).
    if (label > 63) return -1;
    p += label + 1;
    if (p - start > 254) return -1;
  }
  return -1;
}

/**
 * Whether a record's RDATA (rdata..end) is what its type says, for the types whose RDATA a client
 * reads by its structure rather than by RDLENGTH: a decoder reads an A of RDLENGTH 0 or a CNAME whose
 * name runs past its RDATA from the bytes that follow, and those are not the same bytes once we
 * have dropped the upstream's OPT or added ours. Other types pass as opaque bytes.
 */
function rdataFits(msg: Buffer, type: number, rdata: number, end: number, labels: Uint8Array): boolean {
  switch (type) {
    case TYPE_A:
      return end - rdata === 4;
    case TYPE_AAAA:
      return end - rdata === 16;
    case TYPE_NS:
    case TYPE_CNAME:
    case TYPE_PTR:
    case TYPE_DNAME:
      return skipName(msg, rdata, end, labels) === end;
    case TYPE_MX:
      return skipName(msg, rdata + 2, end, labels) === end;
    case TYPE_SRV:
      return skipName(msg, rdata + 6, end, labels) === end;
    case TYPE_SOA:
      return skipName(msg, skipName(msg, rdata, end, labels), end, labels) === end - 20;
    case TYPE_TXT: {
      let p = rdata;
      while (p < end) p += 1 + msg[p]!;
      return p === end;
    }
    default:
      return true;
  }
}

/** 'orders.shop' -> the key parseQuery gives for it: wire format with the root byte, lowercase. */
export function wireKey(name: string): string {
  let key = '';
  for (const label of name.toLowerCase().split('.')) if (label !== '') key += String.fromCharCode(label.length) + label;
  return `${key}\0`;
}

export function wireName(name: string): Buffer {
  const labels = name
    .replace(/\.$/, '')
    .split('.')
    .filter((l) => l !== '');
  const out = Buffer.alloc(labels.reduce((n, l) => n + l.length + 1, 1));
  let p = 0;
  for (const label of labels) {
    out[p++] = label.length;
    p += out.write(label, p, 'latin1');
  }
  out[p] = 0;
  return out;
}

/** Answer records after the question, with the counts the header must carry. */
export interface Body {
  bytes: Buffer;
  an: number;
  ns: number;
  ar: number;
}

/** One table name's answers per type; types it has nothing for get `nodata` (NOERROR, empty). */
export interface CompiledName {
  a: Body;
  aaaa: Body;
  srv: Body;
  ptr: Body;
  any: Body;
  nodata: Body;
}

export type CompiledTable = Map<string, CompiledName>;

const EMPTY: Body = { bytes: Buffer.alloc(0), an: 0, ns: 0, ar: 0 };

export function selectBody(name: CompiledName, qtype: number): Body {
  switch (qtype) {
    case TYPE_A:
      return name.a;
    case TYPE_AAAA:
      return name.aaaa;
    case TYPE_SRV:
      return name.srv;
    case TYPE_PTR:
      return name.ptr;
    case TYPE_ANY:
      return name.any;
    default:
      return name.nodata;
  }
}

function record(owner: number | Buffer, type: number, ttl: number, rdata: Buffer): Buffer {
  const head = typeof owner === 'number' ? Buffer.from([0xc0 | (owner >> 8), owner & 0xff]) : owner;
  const fixed = Buffer.alloc(10);
  fixed.writeUInt16BE(type, 0);
  fixed.writeUInt16BE(CLASS_IN, 2);
  fixed.writeUInt32BE(ttl, 4);
  fixed.writeUInt16BE(rdata.length, 8);
  return Buffer.concat([head, fixed, rdata]);
}

const addressBytes = (address: string) => Buffer.from(ipaddr.parse(address).toByteArray());

const addressRecords = (owner: number, answer: Pick<DnsAnswer, 'a' | 'aaaa'>, ttl: number) => [
  ...answer.a.map((a) => record(owner, TYPE_A, ttl, addressBytes(a))),
  ...answer.aaaa.map((a) => record(owner, TYPE_AAAA, ttl, addressBytes(a))),
];

const body = (an: Buffer[], ar: Buffer[] = []): Body =>
  an.length === 0 ? EMPTY : { bytes: Buffer.concat([...an, ...ar]), an: an.length, ns: 0, ar: ar.length };

/** Where an SRV target sits in the question: the owner less its `_port._proto.` labels, or -1. */
const targetOffset = (owner: string, target: string) => (owner.endsWith(`.${target}`) ? 12 + owner.length - target.length : -1);

function encodeName(name: string, answer: DnsAnswer, table: DnsTable, ttl: number): CompiledName {
  const a = addressRecords(12, { a: answer.a, aaaa: [] }, ttl);
  const aaaa = addressRecords(12, { a: [], aaaa: answer.aaaa }, ttl);
  const srv: Buffer[] = [];
  const glue: Buffer[] = [];
  for (const target of answer.srv) {
    const rdata = Buffer.alloc(6);
    rdata.writeUInt16BE(0, 0);
    rdata.writeUInt16BE(100, 2);
    rdata.writeUInt16BE(target.port, 4);
    const offset = targetOffset(name, target.name);
    const targetName = offset >= 0 ? Buffer.from([0xc0 | (offset >> 8), offset & 0xff]) : wireName(target.name);
    srv.push(record(12, TYPE_SRV, ttl, Buffer.concat([rdata, targetName])));
    const targetAnswer = table.lookup(target.name);
    if (targetAnswer && offset >= 0) glue.push(...addressRecords(offset, targetAnswer, ttl));
  }
  const ptr = answer.ptr.map((n) => record(12, TYPE_PTR, ttl, wireName(n)));
  return { a: body(a), aaaa: body(aaaa), srv: body(srv, glue), ptr: body(ptr), any: body([...a, ...aaaa, ...srv, ...ptr]), nodata: EMPTY };
}

/**
 * Encodes every name of a table once. Names that share a DnsAnswer (a service's hostnames and their
 * searched forms) share the bytes, since owners are pointers to the question; and answers whose
 * content did not change since the previous table are reused, so that swapping in a 10,000-service
 * catalog where one service moved costs a pass over the names, not a re-encoding of all of them.
 */
export class AnswerCompiler {
  private previous = new Map<string, CompiledName>();

  constructor(private readonly ttl: number) {}

  compile(table: DnsTable): CompiledTable {
    const run = this.run(table);
    while (!run.next().done);
    return run.result;
  }

  /**
   * The same, yielding to the event loop every few milliseconds: a 10,000-service catalog has some
   * 80,000 names, and the proxy shares this thread. Resolves undefined if `stale()` turns true
   * (a newer table came) before it is done.
   */
  async compileAsync(table: DnsTable, stale: () => boolean, sliceMs = 5): Promise<CompiledTable | undefined> {
    const run = this.run(table);
    let sliceStart = performance.now();
    for (let step = run.next(); !step.done; step = run.next()) {
      if (performance.now() - sliceStart < sliceMs) continue;
      await new Promise((resolve) => setImmediate(resolve));
      if (stale()) return undefined;
      sliceStart = performance.now();
    }
    return run.result;
  }

  /** A step per 256 names; `result` is complete (and the reuse memo replaced) after the last. */
  private run(table: DnsTable): { next(): { done: boolean }; result: CompiledTable } {
    const out: CompiledTable = new Map();
    const byContent = new Map<string, CompiledName>();
    const byAnswer = new Map<DnsAnswer, CompiledName>();
    const names = table.names();
    const step = () => {
      for (let i = 0; i < 256; i++) {
        const item = names.next();
        if (item.done) {
          this.previous = byContent;
          return { done: true };
        }
        const [name, answer] = item.value;
        // SRV bytes point into the question at an offset that depends on the name asked.
        let compiled = answer.srv.length === 0 ? byAnswer.get(answer) : undefined;
        if (!compiled) {
          let content = `${answer.a.join(',')}|${answer.aaaa.join(',')}|${answer.ptr.join(',')}`;
          for (const target of answer.srv) {
            const offset = targetOffset(name, target.name);
            const glue = offset >= 0 ? table.lookup(target.name) : undefined;
            content += `|${target.port}@${offset >= 0 ? offset : target.name}=${glue?.a.join(',')};${glue?.aaaa.join(',')}`;
          }
          compiled = byContent.get(content) ?? this.previous.get(content) ?? encodeName(name, answer, table, this.ttl);
          byContent.set(content, compiled);
          if (answer.srv.length === 0) byAnswer.set(answer, compiled);
        }
        out.set(wireKey(name), compiled);
      }
      return { done: false };
    };
    return { next: step, result: out };
  }
}

function writeOpt(out: Buffer, at: number, extendedRcode: number, dnssecOk: boolean): void {
  out[at] = 0;
  out.writeUInt16BE(TYPE_OPT, at + 1);
  out.writeUInt16BE(MAX_UDP_PAYLOAD, at + 3);
  out[at + 5] = extendedRcode;
  out[at + 6] = 0;
  out[at + 7] = dnssecOk ? 0x80 : 0;
  out[at + 8] = 0;
  out[at + 9] = 0;
  out[at + 10] = 0;
}

function writeCounts(out: Buffer, an: number, ns: number, ar: number): void {
  out[4] = 0;
  out[5] = 1;
  out[6] = an >> 8;
  out[7] = an & 0xff;
  out[8] = ns >> 8;
  out[9] = ns & 0xff;
  out[10] = ar >> 8;
  out[11] = ar & 0xff;
}

/**
 * An answer from the table: authoritative, RA set (we recurse by forwarding). When it would not fit
 * in `limit` bytes (UDP) the answer goes out empty with TC set, and the client asks again over TCP.
 */
export function localResponse(msg: Buffer, q: Query, answer: Body, limit: number): Buffer {
  const qEnd = q.questionEnd;
  const opt = q.edns ? OPT_LEN : 0;
  let size = qEnd + answer.bytes.length + opt;
  const truncated = size > limit;
  if (truncated) size = qEnd + opt;
  const out = Buffer.allocUnsafe(size);
  out[0] = msg[0]!;
  out[1] = msg[1]!;
  out[2] = 0x84 | (truncated ? 0x02 : 0) | (msg[2]! & 0x01);
  out[3] = 0x80 | (msg[3]! & 0x10);
  if (truncated) writeCounts(out, 0, 0, opt ? 1 : 0);
  else {
    writeCounts(out, answer.an, answer.ns, answer.ar + (opt ? 1 : 0));
    answer.bytes.copy(out, qEnd);
  }
  msg.copy(out, 12, 12, qEnd);
  if (opt) writeOpt(out, size - OPT_LEN, 0, q.dnssecOk);
  return out;
}

/**
 * FORMERR, NOTIMP, SERVFAIL, REFUSED or BADVERS for a query: its id when there is one, its question
 * when it can be read, no records.
 */
export function errorResponse(msg: Buffer, rcode: number, q?: Query): Buffer {
  let qEnd = 12;
  if (q) qEnd = q.questionEnd;
  else if (msg.length >= 12 && msg[4] === 0 && msg[5] === 1) {
    const nameEnd = skipQuestionName(msg);
    if (nameEnd > 0 && nameEnd + 4 <= msg.length) qEnd = nameEnd + 4;
  }
  const opt = q?.edns || rcode > 15 ? OPT_LEN : 0;
  const out = Buffer.alloc(qEnd + opt);
  out[0] = msg[0] ?? 0;
  out[1] = msg[1] ?? 0;
  const flags = msg[2] ?? 0;
  out[2] = 0x80 | (flags & 0x78) | (flags & 0x01);
  out[3] = 0x80 | (rcode & 0x0f);
  writeCounts(out, 0, 0, opt ? 1 : 0);
  if (qEnd === 12) out[5] = 0;
  else msg.copy(out, 12, 12, qEnd);
  if (opt) writeOpt(out, qEnd, rcode >> 4, q?.dnssecOk ?? false);
  return out;
}

/**
 * The query we send upstream for a client's: a fresh id, recursion desired, the client's question
 * and CD bit, and our own OPT so that every answer we cache was asked for the same way (the client's
 * EDNS size matters only when we answer it).
 */
export function upstreamQuery(id: number, msg: Buffer, q: Query): Buffer {
  const qEnd = q.questionEnd;
  const out = Buffer.allocUnsafe(qEnd + OPT_LEN);
  out[0] = id >> 8;
  out[1] = id & 0xff;
  out[2] = 0x01;
  out[3] = msg[3]! & 0x10;
  writeCounts(out, 0, 0, 1);
  msg.copy(out, 12, 12, qEnd);
  writeOpt(out, qEnd, 0, q.dnssecOk);
  return out;
}

/** The upstream's answer as bytes to replay: its records less the OPT, and where their TTLs are. */
export interface Forwarded {
  rcode: number;
  authenticData: boolean;
  body: Buffer;
  an: number;
  ns: number;
  ar: number;
  ttlOffsets: number[];
  ttls: number[];
  /** Seconds it may be cached: min TTL, or for NXDOMAIN/NODATA the SOA's negative TTL; 0 for never. */
  cacheSeconds: number;
}

/** parseResponse's label marks, reused: one answer is read at a time, and 64 KiB is the longest. */
const labelMarks = new Uint8Array(65536);

/**
 * Reads an upstream response whose id and question were already checked; undefined if malformed.
 * Every record must lie within the message and the counts: a count larger than the records there
 * are, a name or RDATA that runs past its end, an OPT outside the additional section, and RDATA
 * that is not what its type says (rdataFits) make the answer malformed, never a longer walk.
 */
export function parseResponse(msg: Buffer, questionEnd: number, reencoded = false): Forwarded | undefined {
  const len = msg.length;
  // The header, a name of one byte at least, QTYPE and QCLASS.
  if (!(questionEnd >= 17 && questionEnd <= len)) return undefined;
  const an = msg.readUInt16BE(6);
  const ns = msg.readUInt16BE(8);
  const ar = msg.readUInt16BE(10);
  const total = an + ns + ar;
  const ttlOffsets: number[] = [];
  const ttls: number[] = [];
  let minTtl = Number.POSITIVE_INFINITY;
  let negativeTtl = -1;
  let optStart = -1;
  let optEnd = -1;
  // Where the names start a label: the only places a pointer may land (skipName). The question's
  // name first: plain labels (the id and question were checked by the caller).
  const labels = labelMarks.subarray(0, len).fill(0);
  if (skipName(msg, 12, questionEnd - 4, labels) !== questionEnd - 4) return undefined;
  let p = questionEnd;
  // Each record takes 11 bytes at least, so this loop ends within (len - questionEnd) / 11 rounds.
  for (let i = 0; i < total; i++) {
    const start = p;
    p = skipName(msg, p, len, labels);
    if (p < 0 || p + 10 > len) return undefined;
    const type = msg.readUInt16BE(p);
    const ttl = msg.readUInt32BE(p + 4);
    const rdata = p + 10;
    const end = rdata + msg.readUInt16BE(p + 8);
    if (end > len) return undefined;
    if (type === TYPE_OPT) {
      // RFC 6891: at most one, in the additional section, owned by the root.
      if (optStart >= 0 || i < an + ns || msg[start] !== 0) return undefined;
      optStart = start;
      optEnd = end;
    } else {
      if (!rdataFits(msg, type, rdata, end, labels)) return undefined;
      // RFC 2181: a TTL with the top bit set means zero.
      const seconds = ttl > 0x7fffffff ? 0 : ttl;
      ttlOffsets.push(p + 4 - questionEnd);
      ttls.push(seconds);
      minTtl = Math.min(minTtl, seconds);
      // RFC 2308: a negative answer is cached for the least of the SOA's TTL and its MINIMUM.
      if (type === TYPE_SOA && i >= an && i < an + ns) negativeTtl = Math.min(seconds, msg.readUInt32BE(end - 4));
    }
    p = end;
  }
  if (optStart >= 0 && optEnd !== p) {
    // Cutting an OPT out of the middle would move the names later records point at: let
    // dns-packet decode it and encode it again, uncompressed, with the OPT left out.
    if (reencoded) return undefined;
    let again: Buffer;
    try {
      const packet = dnsPacket.decode(msg);
      packet.additionals = (packet.additionals ?? []).filter((r) => r.type !== 'OPT');
      again = dnsPacket.encode(packet);
    } catch {
      return undefined;
    }
    // dns-packet reads labels as UTF-8 text: a question of other bytes would not come back as sent.
    if (again.length < questionEnd || !again.subarray(12, questionEnd).equals(msg.subarray(12, questionEnd))) return undefined;
    return parseResponse(again, questionEnd, true);
  }
  const rcode = msg[3]! & 0x0f;
  let cacheSeconds = 0;
  if (rcode === RCODE_NXDOMAIN || (rcode === RCODE_NOERROR && an === 0)) cacheSeconds = Math.max(0, negativeTtl);
  else if (rcode === RCODE_NOERROR) cacheSeconds = Number.isFinite(minTtl) ? minTtl : 0;
  return {
    rcode,
    authenticData: (msg[3]! & 0x20) !== 0,
    body: Buffer.from(msg.subarray(questionEnd, optStart >= 0 ? optStart : p)),
    an,
    ns,
    ar: ar - (optStart >= 0 ? 1 : 0),
    ttlOffsets,
    ttls,
    cacheSeconds,
  };
}

/**
 * An upstream answer replayed to a client: its id, question (same length as the one asked
 * upstream, so the names the body points at are where they were) and flags, TTLs less the seconds
 * the answer has been held (a negative age: as received, untouched).
 */
export function forwardedResponse(msg: Buffer, q: Query, f: Forwarded, limit: number, ageSeconds: number): Buffer {
  const qEnd = q.questionEnd;
  const opt = q.edns ? OPT_LEN : 0;
  let size = qEnd + f.body.length + opt;
  const truncated = size > limit;
  if (truncated) size = qEnd + opt;
  const out = Buffer.allocUnsafe(size);
  out[0] = msg[0]!;
  out[1] = msg[1]!;
  out[2] = 0x80 | (truncated ? 0x02 : 0) | (msg[2]! & 0x01);
  // AD only for clients that asked to see it (RFC 6840 5.8).
  const ad = f.authenticData && (q.dnssecOk || (msg[3]! & 0x20) !== 0) ? 0x20 : 0;
  out[3] = 0x80 | ad | (msg[3]! & 0x10) | f.rcode;
  msg.copy(out, 12, 12, qEnd);
  if (truncated) writeCounts(out, 0, 0, opt ? 1 : 0);
  else {
    writeCounts(out, f.an, f.ns, f.ar + (opt ? 1 : 0));
    f.body.copy(out, qEnd);
    if (ageSeconds >= 0) {
      for (let i = 0; i < f.ttlOffsets.length; i++) out.writeUInt32BE(Math.max(0, f.ttls[i]! - ageSeconds), qEnd + f.ttlOffsets[i]!);
    }
  }
  if (opt) writeOpt(out, size - OPT_LEN, 0, q.dnssecOk);
  return out;
}

/**
 * 0x20 (draft-vixie-dnsext-dns0x20): each letter of the question name of a query we send upstream in
 * upper or lower case by a random bit, to be found again byte for byte in the answer, so that an
 * off-path spoofer must guess a bit per letter besides the id and the port. The name was checked by
 * parseQuery: plain labels, ending at the root byte before QTYPE and QCLASS.
 */
export function mixCase(query: Buffer, questionEnd: number, randomByte: () => number): void {
  const nameEnd = questionEnd - 4;
  let bits = 0;
  let left = 0;
  let p = 12;
  while (p < nameEnd) {
    const end = p + 1 + query[p]!;
    for (let i = p + 1; i < end; i++) {
      const lower = query[i]! | 0x20;
      if (lower < 0x61 || lower > 0x7a) continue;
      if (left === 0) {
        bits = randomByte();
        left = 8;
      }
      query[i] = bits & 1 ? lower & ~0x20 : lower;
      bits >>= 1;
      left -= 1;
    }
    p = end;
  }
}

/**
 * Whether an upstream response answers the question we asked: same name, type and class; the name
 * byte for byte with `exactCase` (what we sent with mixCase), else in any letter case.
 */
export function sameQuestion(response: Buffer, query: Buffer, questionEnd: number, exactCase = false): boolean {
  if (response.length < questionEnd || response[4] !== 0 || response[5] !== 1) return false;
  if (exactCase) return response.compare(query, 12, questionEnd, 12, questionEnd) === 0;
  for (let i = 12; i < questionEnd; i++) {
    let x = response[i]!;
    let y = query[i]!;
    if (x !== y) {
      if (x >= 65 && x <= 90) x += 32;
      if (y >= 65 && y <= 90) y += 32;
      if (x !== y) return false;
    }
  }
  return true;
}
