// UPDATE (RFC 4271 §4.3): withdrawn IPv4 routes, path attributes, IPv4 NLRI; IPv6 rides in
// MP_REACH/MP_UNREACH (RFC 4760). A decoded UPDATE says whether RFC 7606 turned it into a withdraw.
import { Afi, AttributeType, MessageType, Safi, UpdateSubcode } from './constants.js';
import { Cursor, Overrun, Writer } from './cursor.js';
import { malformedAttributeList, updateError, type UpdateProblem } from './errors.js';
import { frame } from './header.js';
import { decodeAttributes, encodeAttributes, type AttributeContext, type PathAttributes } from './attributes.js';
import { PrefixError, readPrefixes, writePrefix, type AddressFamily, type Prefix } from './prefix.js';

export interface UpdateMessage {
  type: 'update';
  /** IPv4 routes withdrawn in the UPDATE's own field (IPv6 ones are in attributes.mpUnreach). */
  withdrawn: Prefix[];
  attributes: PathAttributes;
  /** IPv4 routes announced in the UPDATE's own field (IPv6 ones are in attributes.mpReach). */
  nlri: Prefix[];
}

export interface ReceivedUpdate extends UpdateMessage {
  /** RFC 7606: the routes this UPDATE announces are to be taken as withdrawn. */
  treatAsWithdraw: boolean;
  problems: UpdateProblem[];
}

export function encodeUpdate(update: Omit<UpdateMessage, 'type'>, context: Pick<AttributeContext, 'fourOctetAs'>): Uint8Array {
  const writer = new Writer();
  const withdrawn = writer.lengthSlot(2);
  for (const prefix of update.withdrawn) writePrefix(writer, prefix);
  withdrawn();
  const attributes = writer.lengthSlot(2);
  encodeAttributes(writer, update.attributes, context);
  attributes();
  for (const prefix of update.nlri) writePrefix(writer, prefix);
  return frame(MessageType.UPDATE, writer.finish());
}

/** RFC 4724 §2: End-of-RIB is an empty UPDATE (IPv4 unicast) or one holding only an empty MP_UNREACH. */
export function encodeEndOfRib(afi: AddressFamily, context: Pick<AttributeContext, 'fourOctetAs'>): Uint8Array {
  const attributes: PathAttributes = afi === Afi.IPV4 ? {} : { mpUnreach: { afi, safi: Safi.UNICAST, withdrawn: [] } };
  return encodeUpdate({ withdrawn: [], attributes, nlri: [] }, context);
}

/** The family an UPDATE marks the end of the initial routes for, or undefined when it is not End-of-RIB. */
export function endOfRib(update: UpdateMessage): AddressFamily | undefined {
  if (update.withdrawn.length || update.nlri.length) return undefined;
  const { mpUnreach, ...rest } = update.attributes;
  if (!mpUnreach) return Object.keys(update.attributes).length === 0 ? Afi.IPV4 : undefined;
  return mpUnreach.withdrawn.length === 0 && Object.keys(rest).length === 0 ? mpUnreach.afi : undefined;
}

function readNlriField(cursor: Cursor, end: number, what: string): Prefix[] {
  try {
    return readPrefixes(cursor, end, Afi.IPV4);
  } catch (error) {
    // RFC 7606 §5.3: NLRI that cannot be read cannot be withdrawn either.
    if (error instanceof PrefixError) throw updateError(UpdateSubcode.INVALID_NETWORK_FIELD, `${what}: ${error.message}`);
    throw error;
  }
}

export function decodeUpdate(body: Uint8Array, context: AttributeContext): ReceivedUpdate {
  const cursor = new Cursor(body);
  const problems: UpdateProblem[] = [];
  let withdrawnEnd: number;
  let attributesEnd: number;
  try {
    const withdrawnLength = cursor.u16();
    withdrawnEnd = cursor.offset + withdrawnLength;
    if (withdrawnEnd + 2 > body.length) throw new Overrun('withdrawn routes');
    cursor.offset = withdrawnEnd;
    const attributesLength = cursor.u16();
    attributesEnd = cursor.offset + attributesLength;
    if (attributesEnd > body.length) throw new Overrun('path attributes');
  } catch (error) {
    if (error instanceof Overrun) throw malformedAttributeList(`the withdrawn routes and path attributes lengths do not fit the message (${error.message})`);
    throw error;
  }
  const withdrawnCursor = new Cursor(body, 2);
  const withdrawn = readNlriField(withdrawnCursor, withdrawnEnd, 'withdrawn routes');
  const attributes = decodeAttributes(body.subarray(withdrawnEnd + 2, attributesEnd), context, problems);
  const nlri = readNlriField(new Cursor(body, attributesEnd), body.length, 'NLRI');

  // RFC 7606 §3(d): a missing well-known mandatory attribute withdraws what the UPDATE announces.
  const announces = nlri.length > 0 || (attributes.mpReach?.nlri.length ?? 0) > 0;
  if (announces) {
    const missing: string[] = [];
    if (attributes.origin === undefined && !problems.some((p) => p.attributeType === AttributeType.ORIGIN)) missing.push('ORIGIN');
    if (attributes.asPath === undefined && !problems.some((p) => p.attributeType === AttributeType.AS_PATH)) missing.push('AS_PATH');
    if (nlri.length > 0 && attributes.nextHop === undefined && !problems.some((p) => p.attributeType === AttributeType.NEXT_HOP)) missing.push('NEXT_HOP');
    if (missing.length)
      problems.push({
        action: 'treat-as-withdraw',
        subcode: UpdateSubcode.MISSING_WELL_KNOWN_ATTRIBUTE,
        reason: `missing well-known attribute ${missing.join(', ')}`,
      });
  }
  const treatAsWithdraw = problems.some((p) => p.action === 'treat-as-withdraw');
  return { type: 'update', withdrawn, attributes, nlri, treatAsWithdraw, problems };
}

/**
 * What an UPDATE means for the routes received: announced and withdrawn prefixes of every family.
 * A treat-as-withdraw UPDATE withdraws what it would have announced.
 */
export function routesOf(update: ReceivedUpdate): { announced: Prefix[]; withdrawn: Prefix[] } {
  const announced = [...update.nlri, ...(update.attributes.mpReach?.nlri ?? [])];
  const withdrawn = [...update.withdrawn, ...(update.attributes.mpUnreach?.withdrawn ?? [])];
  return update.treatAsWithdraw ? { announced: [], withdrawn: [...withdrawn, ...announced] } : { announced, withdrawn };
}
