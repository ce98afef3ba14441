// Path attributes (RFC 4271 §4.3, §5; RFC 4760 MP_REACH/MP_UNREACH; RFC 1997 communities; RFC 6793
// AS4_PATH) with RFC 7606's error handling: each malformed attribute gets the lightest answer that
// keeps the routing state right ("attribute-discard" for what does not change the route,
// "treat-as-withdraw" for what does) and only what makes the NLRI unreadable ends the session.
import { Afi, AS_TRANS, AsPathSegmentType, AttributeFlag, AttributeType, Origin, Safi, UpdateSubcode } from './constants.js';
import { Cursor, Overrun, type Writer } from './cursor.js';
import { malformedAttributeList, updateError, type UpdateErrorAction, type UpdateProblem } from './errors.js';
import { addressBytes, addressText, PrefixError, readPrefixes, writePrefix, type AddressFamily, type Prefix } from './prefix.js';

export interface AsPathSegment {
  type: number;
  asns: number[];
}

export interface MpReach {
  afi: AddressFamily;
  safi: number;
  /** One next hop, or for IPv6 a global and a link-local one (RFC 2545). */
  nextHops: string[];
  nlri: Prefix[];
}

export interface MpUnreach {
  afi: AddressFamily;
  safi: number;
  withdrawn: Prefix[];
}

/** An attribute kept as bytes: one we do not interpret, or an unknown optional transitive one to pass on. */
export interface RawAttribute {
  flags: number;
  type: number;
  value: Uint8Array;
}

export interface PathAttributes {
  origin?: Origin;
  asPath?: AsPathSegment[];
  nextHop?: string;
  med?: number;
  localPref?: number;
  atomicAggregate?: boolean;
  aggregator?: { as: number; address: string };
  /** RFC 1997 communities as 32-bit numbers (ASN << 16 | value). */
  communities?: number[];
  mpReach?: MpReach;
  mpUnreach?: MpUnreach;
  /**
   * Attributes carried as bytes, in the order received. An unknown optional transitive attribute is
   * here with its Partial bit set, as RFC 4271 §5 has it passed on; an unknown non-transitive one is
   * dropped.
   */
  other?: RawAttribute[];
}

/** What the decoder needs to know about the session. */
export interface AttributeContext {
  /** Both sides sent the 4-octet AS capability: AS_PATH and AGGREGATOR carry 4-octet numbers. */
  fourOctetAs: boolean;
  /** The peer is in our AS. */
  ibgp?: boolean;
  /** The peer's AS: from an eBGP peer, AS_PATH must start with it (RFC 4271 §6.3). */
  peerAs?: number;
}

const WELL_KNOWN = AttributeFlag.TRANSITIVE;
const OPTIONAL_TRANSITIVE = AttributeFlag.OPTIONAL | AttributeFlag.TRANSITIVE;
const OPTIONAL = AttributeFlag.OPTIONAL;

/** The Optional and Transitive bits each known attribute must carry, and RFC 7606's answer when it is malformed. */
const KNOWN: Record<number, { flags: number; onError: UpdateErrorAction | 'session-reset'; name: string }> = {
  [AttributeType.ORIGIN]: { flags: WELL_KNOWN, onError: 'treat-as-withdraw', name: 'ORIGIN' },
  [AttributeType.AS_PATH]: { flags: WELL_KNOWN, onError: 'treat-as-withdraw', name: 'AS_PATH' },
  [AttributeType.NEXT_HOP]: { flags: WELL_KNOWN, onError: 'treat-as-withdraw', name: 'NEXT_HOP' },
  [AttributeType.MULTI_EXIT_DISC]: { flags: OPTIONAL, onError: 'treat-as-withdraw', name: 'MULTI_EXIT_DISC' },
  [AttributeType.LOCAL_PREF]: { flags: WELL_KNOWN, onError: 'treat-as-withdraw', name: 'LOCAL_PREF' },
  [AttributeType.ATOMIC_AGGREGATE]: { flags: WELL_KNOWN, onError: 'attribute-discard', name: 'ATOMIC_AGGREGATE' },
  [AttributeType.AGGREGATOR]: { flags: OPTIONAL_TRANSITIVE, onError: 'attribute-discard', name: 'AGGREGATOR' },
  [AttributeType.COMMUNITIES]: { flags: OPTIONAL_TRANSITIVE, onError: 'treat-as-withdraw', name: 'COMMUNITIES' },
  [AttributeType.ORIGINATOR_ID]: { flags: OPTIONAL, onError: 'treat-as-withdraw', name: 'ORIGINATOR_ID' },
  [AttributeType.CLUSTER_LIST]: { flags: OPTIONAL, onError: 'treat-as-withdraw', name: 'CLUSTER_LIST' },
  [AttributeType.MP_REACH_NLRI]: { flags: OPTIONAL, onError: 'session-reset', name: 'MP_REACH_NLRI' },
  [AttributeType.MP_UNREACH_NLRI]: { flags: OPTIONAL, onError: 'session-reset', name: 'MP_UNREACH_NLRI' },
  [AttributeType.EXTENDED_COMMUNITIES]: { flags: OPTIONAL_TRANSITIVE, onError: 'treat-as-withdraw', name: 'EXTENDED_COMMUNITIES' },
  [AttributeType.AS4_PATH]: { flags: OPTIONAL_TRANSITIVE, onError: 'attribute-discard', name: 'AS4_PATH' },
  [AttributeType.AS4_AGGREGATOR]: { flags: OPTIONAL_TRANSITIVE, onError: 'attribute-discard', name: 'AS4_AGGREGATOR' },
  [AttributeType.LARGE_COMMUNITIES]: { flags: OPTIONAL_TRANSITIVE, onError: 'treat-as-withdraw', name: 'LARGE_COMMUNITIES' },
};

export const attributeName = (type: number) => KNOWN[type]?.name ?? `attribute ${type}`;

/** A malformed attribute, answered as KNOWN says for its type (not an Error, as Overrun). */
class Malformed {
  constructor(
    readonly subcode: number,
    readonly message: string,
  ) {}
}

function readAsPath(value: Uint8Array, asSize: 2 | 4): AsPathSegment[] {
  const cursor = new Cursor(value);
  const segments: AsPathSegment[] = [];
  while (cursor.remaining > 0) {
    const type = cursor.u8();
    const count = cursor.u8();
    if (type < AsPathSegmentType.AS_SET || type > AsPathSegmentType.AS_CONFED_SET)
      throw new Malformed(UpdateSubcode.MALFORMED_AS_PATH, `unknown AS_PATH segment type ${type}`);
    if (count === 0) throw new Malformed(UpdateSubcode.MALFORMED_AS_PATH, 'an AS_PATH segment of zero length');
    if (cursor.remaining < count * asSize) throw new Malformed(UpdateSubcode.MALFORMED_AS_PATH, 'an AS_PATH segment runs past the attribute');
    const asns: number[] = [];
    for (let i = 0; i < count; i++) asns.push(asSize === 4 ? cursor.u32() : cursor.u16());
    segments.push({ type, asns });
  }
  return segments;
}

function readNextHops(afi: AddressFamily, bytes: Uint8Array): string[] | undefined {
  if (afi === Afi.IPV4 && bytes.length === 4) return [addressText(bytes)];
  // RFC 2545 (IPv6), RFC 8950 (IPv4 routes over an IPv6 next hop): a global address, optionally a link-local one.
  if (bytes.length === 16) return [addressText(bytes)];
  if (bytes.length === 32) return [addressText(bytes.subarray(0, 16)), addressText(bytes.subarray(16))];
  return undefined;
}

const isUnicastFamily = (afi: number, safi: number): afi is AddressFamily => (afi === Afi.IPV4 || afi === Afi.IPV6) && safi === Safi.UNICAST;

/** MP_REACH_NLRI of a family we read; undefined for another family (kept as bytes). Errors here reset the session. */
function readMpReach(value: Uint8Array): MpReach | undefined {
  const cursor = new Cursor(value);
  const afi = cursor.u16('MP_REACH_NLRI AFI');
  const safi = cursor.u8('MP_REACH_NLRI SAFI');
  const nextHopBytes = cursor.take(cursor.u8('next hop length'), 'MP_REACH_NLRI next hop');
  cursor.u8('MP_REACH_NLRI reserved octet');
  if (!isUnicastFamily(afi, safi)) return undefined;
  // RFC 7606 §7.11: with the next hop's length wrong the NLRI after it cannot be found reliably.
  const nextHops = readNextHops(afi, nextHopBytes);
  if (!nextHops) throw new Overrun(`a ${nextHopBytes.length}-byte next hop for AFI ${afi}`);
  return { afi, safi, nextHops, nlri: readPrefixes(cursor, cursor.end, afi) };
}

function readMpUnreach(value: Uint8Array): MpUnreach | undefined {
  const cursor = new Cursor(value);
  const afi = cursor.u16('MP_UNREACH_NLRI AFI');
  const safi = cursor.u8('MP_UNREACH_NLRI SAFI');
  if (!isUnicastFamily(afi, safi)) return undefined;
  return { afi, safi, withdrawn: readPrefixes(cursor, cursor.end, afi) };
}

function u32s(value: Uint8Array): number[] {
  const cursor = new Cursor(value);
  const out: number[] = [];
  while (cursor.remaining > 0) out.push(cursor.u32());
  return out;
}

function lengthError(value: Uint8Array, expected: string): Malformed {
  return new Malformed(UpdateSubcode.ATTRIBUTE_LENGTH_ERROR, `length ${value.length}, must be ${expected}`);
}

/** Reads one known attribute's value into `into`. Throws Malformed (answered per KNOWN) or BgpNotificationError. */
function readKnown(type: number, flags: number, value: Uint8Array, context: AttributeContext, into: PathAttributes): void {
  switch (type) {
    case AttributeType.ORIGIN: {
      if (value.length !== 1) throw lengthError(value, '1');
      const origin = value[0]!;
      if (origin > Origin.INCOMPLETE) throw new Malformed(UpdateSubcode.INVALID_ORIGIN_ATTRIBUTE, `undefined ORIGIN ${origin}`);
      into.origin = origin as Origin;
      return;
    }
    case AttributeType.AS_PATH: {
      const path = readAsPath(value, context.fourOctetAs ? 4 : 2);
      if (context.ibgp === false && context.peerAs !== undefined) {
        const first = path[0];
        if (!first || first.type !== AsPathSegmentType.AS_SEQUENCE || first.asns[0] !== context.peerAs)
          throw new Malformed(UpdateSubcode.MALFORMED_AS_PATH, `an external peer's AS_PATH must start with its AS ${context.peerAs}`);
      }
      into.asPath = path;
      return;
    }
    case AttributeType.NEXT_HOP:
      if (value.length !== 4) throw lengthError(value, '4');
      into.nextHop = addressText(value);
      return;
    case AttributeType.MULTI_EXIT_DISC:
      if (value.length !== 4) throw lengthError(value, '4');
      into.med = new DataView(value.buffer, value.byteOffset).getUint32(0);
      return;
    case AttributeType.LOCAL_PREF:
      if (value.length !== 4) throw lengthError(value, '4');
      into.localPref = new DataView(value.buffer, value.byteOffset).getUint32(0);
      return;
    case AttributeType.ATOMIC_AGGREGATE:
      if (value.length !== 0) throw lengthError(value, '0');
      into.atomicAggregate = true;
      return;
    case AttributeType.AGGREGATOR: {
      const asSize = context.fourOctetAs ? 4 : 2;
      if (value.length !== asSize + 4) throw lengthError(value, String(asSize + 4));
      const cursor = new Cursor(value);
      into.aggregator = { as: asSize === 4 ? cursor.u32() : cursor.u16(), address: addressText(cursor.take(4)) };
      return;
    }
    case AttributeType.COMMUNITIES:
      if (value.length === 0 || value.length % 4 !== 0) throw lengthError(value, 'a non-zero multiple of 4');
      into.communities = u32s(value);
      return;
    case AttributeType.MP_REACH_NLRI: {
      const reach = readMpReach(value);
      if (reach) into.mpReach = reach;
      else keep(into, flags, type, value);
      return;
    }
    case AttributeType.MP_UNREACH_NLRI: {
      const unreach = readMpUnreach(value);
      if (unreach) into.mpUnreach = unreach;
      else keep(into, flags, type, value);
      return;
    }
    case AttributeType.ORIGINATOR_ID:
    case AttributeType.AS4_AGGREGATOR:
      if (value.length !== (type === AttributeType.ORIGINATOR_ID ? 4 : 8)) throw lengthError(value, type === AttributeType.ORIGINATOR_ID ? '4' : '8');
      break;
    case AttributeType.CLUSTER_LIST:
      if (value.length === 0 || value.length % 4 !== 0) throw lengthError(value, 'a non-zero multiple of 4');
      break;
    case AttributeType.EXTENDED_COMMUNITIES:
      if (value.length % 8 !== 0) throw lengthError(value, 'a multiple of 8');
      break;
    case AttributeType.LARGE_COMMUNITIES:
      if (value.length === 0 || value.length % 12 !== 0) throw lengthError(value, 'a non-zero multiple of 12');
      break;
    case AttributeType.AS4_PATH:
      readAsPath(value, 4);
      break;
  }
  keep(into, flags, type, value);
}

function keep(into: PathAttributes, flags: number, type: number, value: Uint8Array): void {
  // Extended Length says how the length was written, not what the attribute is: the encoder chooses it again.
  (into.other ??= []).push({ flags: flags & (AttributeFlag.OPTIONAL | AttributeFlag.TRANSITIVE | AttributeFlag.PARTIAL), type, value: new Uint8Array(value) });
}

/**
 * Reads the path attributes in `bytes` (the UPDATE's Path Attributes field). Problems RFC 7606
 * answers without a reset are appended to `problems`; the rest throw BgpNotificationError.
 */
export function decodeAttributes(bytes: Uint8Array, context: AttributeContext, problems: UpdateProblem[]): PathAttributes {
  const attributes: PathAttributes = {};
  const seen = new Set<number>();
  const cursor = new Cursor(bytes);
  while (cursor.remaining > 0) {
    const start = cursor.offset;
    const flags = cursor.remaining >= 2 ? cursor.u8() : 0;
    const extended = (flags & AttributeFlag.EXTENDED_LENGTH) !== 0;
    // RFC 7606 §4: too few bytes for an attribute header, or a length past the field's end: the
    // field's own length still says where the NLRI starts, so the routes are withdrawn, not the session.
    if (cursor.remaining < (extended ? 3 : 2)) {
      problems.push({
        action: 'treat-as-withdraw',
        subcode: UpdateSubcode.MALFORMED_ATTRIBUTE_LIST,
        reason: `${bytes.length - start} stray bytes at the end of the path attributes`,
      });
      break;
    }
    const type = cursor.u8();
    const length = extended ? cursor.u16() : cursor.u8();
    if (length > cursor.remaining) {
      problems.push({
        action: 'treat-as-withdraw',
        attributeType: type,
        subcode: UpdateSubcode.ATTRIBUTE_LENGTH_ERROR,
        reason: `${attributeName(type)} of ${length} bytes runs past the path attributes (${cursor.remaining} left)`,
      });
      break;
    }
    const value = cursor.take(length);
    const whole = bytes.subarray(start, cursor.offset);
    const known = KNOWN[type];

    if (!known) {
      if ((flags & AttributeFlag.OPTIONAL) === 0)
        throw updateError(UpdateSubcode.UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE, `unrecognized well-known attribute ${type}`, new Uint8Array(whole));
      if (flags & AttributeFlag.TRANSITIVE) keep(attributes, flags | AttributeFlag.PARTIAL, type, value);
      continue;
    }
    if (seen.has(type)) {
      if (type === AttributeType.MP_REACH_NLRI || type === AttributeType.MP_UNREACH_NLRI) throw malformedAttributeList(`${known.name} appears more than once`);
      problems.push({
        action: 'attribute-discard',
        attributeType: type,
        subcode: UpdateSubcode.MALFORMED_ATTRIBUTE_LIST,
        reason: `${known.name} repeated; the first kept`,
      });
      continue;
    }
    seen.add(type);

    const partialForbidden = (flags & AttributeFlag.OPTIONAL) === 0 || (flags & AttributeFlag.TRANSITIVE) === 0;
    if ((flags & OPTIONAL_TRANSITIVE) !== known.flags || (partialForbidden && flags & AttributeFlag.PARTIAL)) {
      // RFC 7606 §3(c): wrong Optional/Transitive bits make the attribute malformed. MP_* are
      // still read (below) so that their routes can be withdrawn.
      problems.push({
        action: known.onError === 'session-reset' ? 'treat-as-withdraw' : known.onError,
        attributeType: type,
        subcode: UpdateSubcode.ATTRIBUTE_FLAGS_ERROR,
        reason: `${known.name} with flags 0x${flags.toString(16)}`,
      });
      if (known.onError !== 'session-reset') continue;
    }
    try {
      readKnown(type, flags, value, context, attributes);
    } catch (error) {
      if (known.onError === 'session-reset' && (error instanceof Overrun || error instanceof PrefixError))
        throw updateError(UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, `malformed ${known.name}: ${error.message}`, new Uint8Array(whole));
      if (error instanceof Malformed || error instanceof Overrun || error instanceof PrefixError) {
        const subcode = error instanceof Malformed ? error.subcode : UpdateSubcode.ATTRIBUTE_LENGTH_ERROR;
        problems.push({ action: known.onError as UpdateErrorAction, attributeType: type, subcode, reason: `malformed ${known.name}: ${error.message}` });
        continue;
      }
      throw error;
    }
    if (type === AttributeType.LOCAL_PREF && context.ibgp === false) {
      // RFC 7606 §7.5: LOCAL_PREF from an external peer is discarded.
      delete attributes.localPref;
      problems.push({
        action: 'attribute-discard',
        attributeType: type,
        subcode: UpdateSubcode.ATTRIBUTE_FLAGS_ERROR,
        reason: 'LOCAL_PREF from an external peer',
      });
    }
  }
  return attributes;
}

function writeAttribute(writer: Writer, flags: number, type: number, value: (w: Writer) => void): void {
  // Written with a 2-byte length, then shortened when it fits one: values are small and rarely long.
  const start = writer.length;
  writer.u8(flags | AttributeFlag.EXTENDED_LENGTH).u8(type);
  const done = writer.lengthSlot(2);
  value(writer);
  const length = done();
  if (length <= 255) writer.shortenLength(start, length);
}

function writeAsPath(writer: Writer, segments: AsPathSegment[], asSize: 2 | 4): void {
  for (const segment of segments) {
    if (segment.asns.length === 0 || segment.asns.length > 255) throw new RangeError(`an AS_PATH segment holds 1-255 AS numbers, not ${segment.asns.length}`);
    writer.u8(segment.type).u8(segment.asns.length);
    for (const as of segment.asns) {
      if (asSize === 4) writer.u32(as);
      else writer.u16(as > 0xffff ? AS_TRANS : as);
    }
  }
}

/**
 * Writes attributes: MP_REACH/MP_UNREACH first (RFC 7606 §5.1, so a receiver can always find the
 * routes), then the rest by type code. Toward a speaker without 4-octet AS support, AS numbers that
 * need 4 octets go out as AS_TRANS with the real path in AS4_PATH (RFC 6793 §4.2.2).
 */
export function encodeAttributes(writer: Writer, attributes: PathAttributes, context: Pick<AttributeContext, 'fourOctetAs'>): void {
  const { mpReach, mpUnreach } = attributes;
  if (mpReach)
    writeAttribute(writer, OPTIONAL, AttributeType.MP_REACH_NLRI, (w) => {
      w.u16(mpReach.afi).u8(mpReach.safi);
      const nextHops = mpReach.nextHops.map(addressBytes);
      w.u8(nextHops.reduce((n, b) => n + b.length, 0));
      for (const hop of nextHops) w.bytes(hop);
      w.u8(0);
      for (const prefix of mpReach.nlri) writePrefix(w, prefix);
    });
  if (mpUnreach)
    writeAttribute(writer, OPTIONAL, AttributeType.MP_UNREACH_NLRI, (w) => {
      w.u16(mpUnreach.afi).u8(mpUnreach.safi);
      for (const prefix of mpUnreach.withdrawn) writePrefix(w, prefix);
    });
  if (attributes.origin !== undefined) writeAttribute(writer, WELL_KNOWN, AttributeType.ORIGIN, (w) => w.u8(attributes.origin!));
  const asPath = attributes.asPath;
  if (asPath) writeAttribute(writer, WELL_KNOWN, AttributeType.AS_PATH, (w) => writeAsPath(w, asPath, context.fourOctetAs ? 4 : 2));
  if (attributes.nextHop !== undefined) writeAttribute(writer, WELL_KNOWN, AttributeType.NEXT_HOP, (w) => w.bytes(addressBytes(attributes.nextHop!)));
  if (attributes.med !== undefined) writeAttribute(writer, OPTIONAL, AttributeType.MULTI_EXIT_DISC, (w) => w.u32(attributes.med!));
  if (attributes.localPref !== undefined) writeAttribute(writer, WELL_KNOWN, AttributeType.LOCAL_PREF, (w) => w.u32(attributes.localPref!));
  if (attributes.atomicAggregate) writeAttribute(writer, WELL_KNOWN, AttributeType.ATOMIC_AGGREGATE, () => undefined);
  const aggregator = attributes.aggregator;
  if (aggregator)
    writeAttribute(writer, OPTIONAL_TRANSITIVE, AttributeType.AGGREGATOR, (w) => {
      if (context.fourOctetAs) w.u32(aggregator.as);
      else w.u16(aggregator.as > 0xffff ? AS_TRANS : aggregator.as);
      w.bytes(addressBytes(aggregator.address));
    });
  const communities = attributes.communities;
  if (communities?.length)
    writeAttribute(writer, OPTIONAL_TRANSITIVE, AttributeType.COMMUNITIES, (w) => {
      for (const community of communities) w.u32(community);
    });
  if (asPath && !context.fourOctetAs && asPath.some((s) => s.asns.some((as) => as > 0xffff)))
    writeAttribute(writer, OPTIONAL_TRANSITIVE, AttributeType.AS4_PATH, (w) => writeAsPath(w, asPath, 4));
  for (const raw of attributes.other ?? []) writeAttribute(writer, raw.flags & ~AttributeFlag.EXTENDED_LENGTH, raw.type, (w) => w.bytes(raw.value));
}

/** "65000:100" as a 32-bit community. */
export function parseCommunity(text: string): number {
  const match = /^(\d{1,5}):(\d{1,5})$/.exec(text);
  const high = Number(match?.[1]);
  const low = Number(match?.[2]);
  if (!match || high > 0xffff || low > 0xffff) throw new TypeError(`not a community: ${text} (ASN:VALUE, each 0-65535)`);
  return ((high << 16) | low) >>> 0;
}

export const communityText = (community: number) => `${community >>> 16}:${community & 0xffff}`;
