// What the decoder says about bytes that break the protocol. RFC 4271 §6 answers most errors with
// a NOTIFICATION and a closed session; RFC 7606 softens this for UPDATE attributes, so a decoded
// UPDATE carries its lesser problems (treat-as-withdraw, attribute-discard) and only what must
// still end the session is thrown.
import { ErrorCode, UpdateSubcode } from './constants.js';

/** Send a NOTIFICATION with this code, subcode and data, and close the session ("session reset"). */
export class BgpNotificationError extends Error {
  override readonly name = 'BgpNotificationError';
  readonly code: number;
  readonly subcode: number;
  readonly data: Uint8Array;

  constructor(code: number, subcode: number, message: string, data: Uint8Array = new Uint8Array(0)) {
    // No stack trace: the message says what the peer sent, the stack only that the decoder read it,
    // and a peer decides how many of these we make.
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message);
    Error.stackTraceLimit = limit;
    this.code = code;
    this.subcode = subcode;
    this.data = data;
  }
}

/**
 * RFC 7606 §2: "treat-as-withdraw" (the UPDATE's routes are withdrawn instead of announced, the
 * session stays up) and "attribute-discard" (the attribute is dropped, the routes stand).
 */
export type UpdateErrorAction = 'treat-as-withdraw' | 'attribute-discard';

export interface UpdateProblem {
  action: UpdateErrorAction;
  /** The attribute at fault, when one is. */
  attributeType?: number;
  /** The UPDATE Message Error subcode RFC 4271 would have sent, for logs and counters. */
  subcode: number;
  reason: string;
}

export const updateError = (subcode: number, message: string, data?: Uint8Array) => new BgpNotificationError(ErrorCode.UPDATE_MESSAGE, subcode, message, data);

export const malformedAttributeList = (message: string) => updateError(UpdateSubcode.MALFORMED_ATTRIBUTE_LIST, message);
