// The 19-byte header every message starts with (RFC 4271 §4.1), and the framer that cuts a TCP
// byte stream into messages. Header errors are found as soon as the header's bytes are there, so a
// peer that sends a bad length is answered before we wait for bytes that will never come.
import { ErrorCode, HEADER_LENGTH, HeaderSubcode, MAX_MESSAGE_LENGTH, MessageType, MIN_LENGTH } from './constants.js';
import { BgpNotificationError } from './errors.js';

export interface Frame {
  type: number;
  /** The message after its header (a view into the received bytes). */
  body: Uint8Array;
}

const u16 = (n: number) => Uint8Array.of(n >> 8, n & 0xff);

/** Checks a header: all-ones marker, a length the type allows, a known type. Returns the message's length. */
export function checkHeader(bytes: Uint8Array, offset = 0): { length: number; type: number } {
  for (let i = 0; i < 16; i++) {
    if (bytes[offset + i] !== 0xff)
      throw new BgpNotificationError(ErrorCode.MESSAGE_HEADER, HeaderSubcode.CONNECTION_NOT_SYNCHRONIZED, 'the header marker is not all ones');
  }
  const length = (bytes[offset + 16]! << 8) | bytes[offset + 17]!;
  const type = bytes[offset + 18]!;
  const badLength = (why: string) =>
    new BgpNotificationError(ErrorCode.MESSAGE_HEADER, HeaderSubcode.BAD_MESSAGE_LENGTH, `bad message length ${length}: ${why}`, u16(length));
  if (length < HEADER_LENGTH || length > MAX_MESSAGE_LENGTH) throw badLength(`must be ${HEADER_LENGTH}-${MAX_MESSAGE_LENGTH}`);
  const min = MIN_LENGTH[type];
  if (min === undefined)
    throw new BgpNotificationError(ErrorCode.MESSAGE_HEADER, HeaderSubcode.BAD_MESSAGE_TYPE, `unknown message type ${type}`, Uint8Array.of(type));
  if (type === MessageType.KEEPALIVE && length !== HEADER_LENGTH) throw badLength(`a KEEPALIVE is ${HEADER_LENGTH} bytes`);
  if (type === MessageType.ROUTE_REFRESH && length !== min) throw badLength(`a ROUTE-REFRESH is ${min} bytes`);
  if (length < min) throw badLength(`message type ${type} needs at least ${min}`);
  return { length, type };
}

/** Header + body. */
export function frame(type: number, body: Uint8Array): Uint8Array {
  const length = HEADER_LENGTH + body.length;
  if (length > MAX_MESSAGE_LENGTH) throw new RangeError(`a BGP message of ${length} bytes is longer than ${MAX_MESSAGE_LENGTH}`);
  const out = new Uint8Array(length);
  out.fill(0xff, 0, 16);
  out[16] = length >> 8;
  out[17] = length & 0xff;
  out[18] = type;
  out.set(body, HEADER_LENGTH);
  return out;
}

/**
 * Cuts a byte stream into frames. push() returns the whole messages received so far and keeps the
 * rest; it throws BgpNotificationError on the first bad header (the session then ends, so what
 * follows is never read).
 */
export class Framer {
  private pending: Uint8Array = new Uint8Array(0);

  push(chunk: Uint8Array): Frame[] {
    const bytes = this.pending.length === 0 ? chunk : concat(this.pending, chunk);
    const frames: Frame[] = [];
    let offset = 0;
    while (bytes.length - offset >= HEADER_LENGTH) {
      const { length, type } = checkHeader(bytes, offset);
      if (bytes.length - offset < length) break;
      frames.push({ type, body: bytes.subarray(offset + HEADER_LENGTH, offset + length) });
      offset += length;
    }
    // A copy, so a large chunk is not kept alive by the few bytes of its last message.
    this.pending = offset === bytes.length ? new Uint8Array(0) : new Uint8Array(bytes.subarray(offset));
    return frames;
  }

  /** Bytes of an unfinished message held. */
  get buffered(): number {
    return this.pending.length;
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
