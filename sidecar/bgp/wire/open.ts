// OPEN (RFC 4271 §4.2) and the capabilities we negotiate (RFC 5492): multiprotocol (RFC 4760),
// route refresh (RFC 2918), graceful restart (RFC 4724) and 4-octet AS numbers (RFC 6793). Other
// capabilities are kept as bytes: a peer may offer what we do not use.
import { AS_TRANS, BGP_VERSION, CapabilityCode, ErrorCode, MessageType, OpenSubcode, OptionalParameterType } from './constants.js';
import { Cursor, Overrun, Writer } from './cursor.js';
import { BgpNotificationError } from './errors.js';
import { frame } from './header.js';
import { addressBytes, addressText } from './prefix.js';

export interface Family {
  afi: number;
  safi: number;
}

export type Capability =
  | { kind: 'multiprotocol'; afi: number; safi: number }
  | { kind: 'route-refresh' }
  | { kind: 'four-octet-as'; as: number }
  | {
      kind: 'graceful-restart';
      /** The R bit: the sender has restarted. */
      restarted: boolean;
      /** The N bit (RFC 8538): the sender does graceful restart on NOTIFICATION too. */
      notification: boolean;
      restartTimeSeconds: number;
      /** Families whose forwarding the sender keeps over a restart; empty: none (End-of-RIB only). */
      families: (Family & { forwardingPreserved: boolean })[];
    }
  | { kind: 'unknown'; code: number; value: Uint8Array };

export interface OpenMessage {
  type: 'open';
  version: number;
  /** The AS as the peer wrote it in the 2-octet field (AS_TRANS when its AS needs 4 octets). */
  myAs: number;
  holdTimeSeconds: number;
  /** The BGP identifier, as an IPv4 address. */
  bgpId: string;
  capabilities: Capability[];
}

/** The peer's AS: its 4-octet AS capability when it sent one, else the OPEN's field. */
export function peerAs(open: OpenMessage): number {
  const fourOctet = open.capabilities.find((c) => c.kind === 'four-octet-as');
  return fourOctet?.kind === 'four-octet-as' ? fourOctet.as : open.myAs;
}

const openError = (subcode: number, message: string, data?: Uint8Array) => new BgpNotificationError(ErrorCode.OPEN_MESSAGE, subcode, message, data);

function writeCapability(writer: Writer, capability: Capability): void {
  switch (capability.kind) {
    case 'multiprotocol':
      writer.u8(CapabilityCode.MULTIPROTOCOL).u8(4).u16(capability.afi).u8(0).u8(capability.safi);
      return;
    case 'route-refresh':
      writer.u8(CapabilityCode.ROUTE_REFRESH).u8(0);
      return;
    case 'four-octet-as':
      writer.u8(CapabilityCode.FOUR_OCTET_AS).u8(4).u32(capability.as);
      return;
    case 'graceful-restart': {
      writer.u8(CapabilityCode.GRACEFUL_RESTART);
      const done = writer.lengthSlot(1);
      const flags = (capability.restarted ? 0x8 : 0) | (capability.notification ? 0x4 : 0);
      writer.u16((flags << 12) | (capability.restartTimeSeconds & 0xfff));
      for (const f of capability.families)
        writer
          .u16(f.afi)
          .u8(f.safi)
          .u8(f.forwardingPreserved ? 0x80 : 0);
      done();
      return;
    }
    case 'unknown':
      writer.u8(capability.code).u8(capability.value.length).bytes(capability.value);
  }
}

export function encodeOpen(open: Omit<OpenMessage, 'type' | 'version'> & { version?: number }): Uint8Array {
  const writer = new Writer();
  writer
    .u8(open.version ?? BGP_VERSION)
    .u16(open.myAs > 0xffff ? AS_TRANS : open.myAs)
    .u16(open.holdTimeSeconds)
    .bytes(addressBytes(open.bgpId));
  const parameters = writer.lengthSlot(1);
  if (open.capabilities.length > 0) {
    // All capabilities in one Capabilities parameter, as BIRD and GoBGP send them.
    writer.u8(OptionalParameterType.CAPABILITIES);
    const capabilities = writer.lengthSlot(1);
    for (const capability of open.capabilities) writeCapability(writer, capability);
    capabilities();
  }
  parameters();
  return frame(MessageType.OPEN, writer.finish());
}

function readCapability(code: number, value: Uint8Array): Capability {
  const cursor = new Cursor(value);
  const malformed = (what: string) => openError(OpenSubcode.UNSPECIFIC, `malformed ${what} capability (${value.length} bytes)`);
  switch (code) {
    case CapabilityCode.MULTIPROTOCOL: {
      if (value.length !== 4) throw malformed('multiprotocol');
      const afi = cursor.u16();
      cursor.u8();
      return { kind: 'multiprotocol', afi, safi: cursor.u8() };
    }
    case CapabilityCode.ROUTE_REFRESH:
      if (value.length !== 0) throw malformed('route refresh');
      return { kind: 'route-refresh' };
    case CapabilityCode.FOUR_OCTET_AS:
      if (value.length !== 4) throw malformed('4-octet AS');
      return { kind: 'four-octet-as', as: cursor.u32() };
    case CapabilityCode.GRACEFUL_RESTART: {
      if (value.length < 2 || (value.length - 2) % 4 !== 0) throw malformed('graceful restart');
      const word = cursor.u16();
      const families = [];
      while (cursor.remaining > 0) {
        const afi = cursor.u16();
        const safi = cursor.u8();
        families.push({ afi, safi, forwardingPreserved: (cursor.u8() & 0x80) !== 0 });
      }
      return { kind: 'graceful-restart', restarted: (word & 0x8000) !== 0, notification: (word & 0x4000) !== 0, restartTimeSeconds: word & 0xfff, families };
    }
    default:
      return { kind: 'unknown', code, value: new Uint8Array(value) };
  }
}

/** Reads the capabilities of one Capabilities optional parameter (RFC 5492 §4: several may share it). */
function readCapabilities(value: Uint8Array, into: Capability[]): void {
  const cursor = new Cursor(value);
  while (cursor.remaining > 0) {
    const code = cursor.u8();
    const length = cursor.u8();
    into.push(readCapability(code, cursor.take(length)));
  }
}

/**
 * Decodes an OPEN's body. Checks what the message alone can tell (version, hold time 1 or 2, a
 * zero identifier, parameters); whether the AS and identifier are acceptable is the session's call.
 */
export function decodeOpen(body: Uint8Array): OpenMessage {
  const cursor = new Cursor(body);
  try {
    const version = cursor.u8();
    if (version !== BGP_VERSION)
      throw openError(OpenSubcode.UNSUPPORTED_VERSION_NUMBER, `BGP version ${version} is not supported (only 4)`, Uint8Array.of(0, BGP_VERSION));
    const myAs = cursor.u16();
    const holdTimeSeconds = cursor.u16();
    if (holdTimeSeconds === 1 || holdTimeSeconds === 2)
      throw openError(OpenSubcode.UNACCEPTABLE_HOLD_TIME, `hold time ${holdTimeSeconds} s is not allowed (0 or at least 3, RFC 4271)`);
    const bgpId = addressText(cursor.take(4));
    if (bgpId === '0.0.0.0') throw openError(OpenSubcode.BAD_BGP_IDENTIFIER, 'the BGP identifier is 0.0.0.0');
    let parametersLength = cursor.u8();
    // RFC 9072: a first parameter of type 255 says lengths are 2 octets from here on.
    const extended = parametersLength === 255 && cursor.remaining > 0 && body[cursor.offset] === OptionalParameterType.EXTENDED_LENGTH;
    if (extended) {
      cursor.u8();
      parametersLength = cursor.u16();
    }
    if (parametersLength !== cursor.remaining)
      throw openError(OpenSubcode.UNSPECIFIC, `the optional parameters length (${parametersLength}) does not match the ${cursor.remaining} bytes left`);
    const capabilities: Capability[] = [];
    while (cursor.remaining > 0) {
      const type = cursor.u8();
      const value = cursor.take(extended ? cursor.u16() : cursor.u8(), 'an optional parameter');
      if (type !== OptionalParameterType.CAPABILITIES)
        throw openError(OpenSubcode.UNSUPPORTED_OPTIONAL_PARAMETER, `optional parameter type ${type} is not supported`);
      readCapabilities(value, capabilities);
    }
    return { type: 'open', version, myAs, holdTimeSeconds, bgpId, capabilities };
  } catch (error) {
    if (error instanceof Overrun) throw openError(OpenSubcode.UNSPECIFIC, `malformed OPEN: ${error.message}`);
    throw error;
  }
}
