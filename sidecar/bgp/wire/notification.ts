// NOTIFICATION (RFC 4271 §4.5), with names for logs and the shutdown message of RFC 9003.
import { CeaseSubcode, ErrorCode, MessageType } from './constants.js';
import { Cursor } from './cursor.js';
import { frame } from './header.js';

export interface NotificationMessage {
  type: 'notification';
  code: number;
  subcode: number;
  data: Uint8Array;
}

export function encodeNotification(code: number, subcode: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const body = new Uint8Array(2 + data.length);
  body[0] = code;
  body[1] = subcode;
  body.set(data, 2);
  return frame(MessageType.NOTIFICATION, body);
}

/** Administrative shutdown or reset with a message for the router's operator (RFC 9003, at most 255 bytes of UTF-8). */
export function shutdownData(message: string): Uint8Array {
  let bytes = new TextEncoder().encode(message);
  if (bytes.length > 255) bytes = bytes.subarray(0, 255);
  return Uint8Array.of(bytes.length, ...bytes);
}

export function decodeNotification(body: Uint8Array): NotificationMessage {
  const cursor = new Cursor(body);
  return { type: 'notification', code: cursor.u8(), subcode: cursor.u8(), data: new Uint8Array(body.subarray(2)) };
}

const CODE_NAMES: Record<number, string> = {
  [ErrorCode.MESSAGE_HEADER]: 'Message Header Error',
  [ErrorCode.OPEN_MESSAGE]: 'OPEN Message Error',
  [ErrorCode.UPDATE_MESSAGE]: 'UPDATE Message Error',
  [ErrorCode.HOLD_TIMER_EXPIRED]: 'Hold Timer Expired',
  [ErrorCode.FSM]: 'Finite State Machine Error',
  [ErrorCode.CEASE]: 'Cease',
  [ErrorCode.ROUTE_REFRESH_MESSAGE]: 'ROUTE-REFRESH Message Error',
};

const SUBCODE_NAMES: Record<number, Record<number, string>> = {
  [ErrorCode.MESSAGE_HEADER]: { 1: 'Connection Not Synchronized', 2: 'Bad Message Length', 3: 'Bad Message Type' },
  [ErrorCode.OPEN_MESSAGE]: {
    1: 'Unsupported Version Number',
    2: 'Bad Peer AS',
    3: 'Bad BGP Identifier',
    4: 'Unsupported Optional Parameter',
    6: 'Unacceptable Hold Time',
    7: 'Unsupported Capability',
  },
  [ErrorCode.UPDATE_MESSAGE]: {
    1: 'Malformed Attribute List',
    2: 'Unrecognized Well-known Attribute',
    3: 'Missing Well-known Attribute',
    4: 'Attribute Flags Error',
    5: 'Attribute Length Error',
    6: 'Invalid ORIGIN Attribute',
    8: 'Invalid NEXT_HOP Attribute',
    9: 'Optional Attribute Error',
    10: 'Invalid Network Field',
    11: 'Malformed AS_PATH',
  },
  [ErrorCode.FSM]: { 1: 'Unexpected Message in OpenSent', 2: 'Unexpected Message in OpenConfirm', 3: 'Unexpected Message in Established' },
  [ErrorCode.CEASE]: {
    [CeaseSubcode.MAXIMUM_PREFIXES_REACHED]: 'Maximum Number of Prefixes Reached',
    [CeaseSubcode.ADMINISTRATIVE_SHUTDOWN]: 'Administrative Shutdown',
    [CeaseSubcode.PEER_DECONFIGURED]: 'Peer De-configured',
    [CeaseSubcode.ADMINISTRATIVE_RESET]: 'Administrative Reset',
    [CeaseSubcode.CONNECTION_REJECTED]: 'Connection Rejected',
    [CeaseSubcode.OTHER_CONFIGURATION_CHANGE]: 'Other Configuration Change',
    [CeaseSubcode.CONNECTION_COLLISION_RESOLUTION]: 'Connection Collision Resolution',
    [CeaseSubcode.OUT_OF_RESOURCES]: 'Out of Resources',
    [CeaseSubcode.HARD_RESET]: 'Hard Reset',
  },
  [ErrorCode.ROUTE_REFRESH_MESSAGE]: { 1: 'Invalid Message Length' },
};

/** "Cease / Administrative Shutdown: maintenance" as a person reads it. */
export function describeNotification(code: number, subcode: number, data: Uint8Array = new Uint8Array(0)): string {
  const codeName = CODE_NAMES[code] ?? `error code ${code}`;
  const subcodeName = SUBCODE_NAMES[code]?.[subcode] ?? (subcode === 0 ? '' : `subcode ${subcode}`);
  let text = subcodeName ? `${codeName} / ${subcodeName}` : codeName;
  const shutdown = code === ErrorCode.CEASE && (subcode === CeaseSubcode.ADMINISTRATIVE_SHUTDOWN || subcode === CeaseSubcode.ADMINISTRATIVE_RESET);
  if (shutdown && data.length > 0 && data[0]! + 1 <= data.length) {
    const message = new TextDecoder('utf-8', { fatal: false }).decode(data.subarray(1, 1 + data[0]!));
    if (message) text += `: ${JSON.stringify(message)}`;
  }
  return text;
}
