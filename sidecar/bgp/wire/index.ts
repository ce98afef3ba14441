// The BGP-4 wire format: encoders for what the speaker sends, one decoder for whatever a peer
// sends. Decoding never throws anything but BgpNotificationError (the NOTIFICATION to answer with).
import { HEADER_LENGTH, MessageType } from './constants.js';
import type { AttributeContext } from './attributes.js';
import { frame, type Frame } from './header.js';
import { decodeNotification, type NotificationMessage } from './notification.js';
import { decodeOpen, type OpenMessage } from './open.js';
import { decodeRouteRefresh, type RouteRefreshMessage } from './route-refresh.js';
import { decodeUpdate, type ReceivedUpdate } from './update.js';

export * from './constants.js';
export * from './errors.js';
export * from './header.js';
export * from './prefix.js';
export * from './open.js';
export * from './attributes.js';
export * from './update.js';
export * from './notification.js';
export * from './route-refresh.js';

export interface KeepaliveMessage {
  type: 'keepalive';
}

export type ReceivedMessage = OpenMessage | ReceivedUpdate | NotificationMessage | KeepaliveMessage | RouteRefreshMessage;

const KEEPALIVE = frame(MessageType.KEEPALIVE, new Uint8Array(0));
/** The same 19 bytes every time. */
export const encodeKeepalive = (): Uint8Array => KEEPALIVE;

/** Decodes one framed message (its header already checked by the Framer). */
export function decodeMessage(message: Frame, context: AttributeContext): ReceivedMessage {
  switch (message.type) {
    case MessageType.OPEN:
      return decodeOpen(message.body);
    case MessageType.UPDATE:
      return decodeUpdate(message.body, context);
    case MessageType.NOTIFICATION:
      return decodeNotification(message.body);
    case MessageType.KEEPALIVE:
      return { type: 'keepalive' };
    case MessageType.ROUTE_REFRESH:
      return decodeRouteRefresh(message.body);
    default:
      throw new RangeError(`message type ${message.type} was not checked by the framer`);
  }
}

export { HEADER_LENGTH };
