// ROUTE-REFRESH (RFC 2918): a peer asks for our routes of one family again. The third octet is
// reserved in RFC 2918 and a subtype in RFC 7313 (enhanced route refresh, not negotiated here).
import { MessageType } from './constants.js';
import { Cursor } from './cursor.js';
import { frame } from './header.js';

export interface RouteRefreshMessage {
  type: 'route-refresh';
  afi: number;
  safi: number;
  subtype: number;
}

export function encodeRouteRefresh(afi: number, safi: number, subtype = 0): Uint8Array {
  return frame(MessageType.ROUTE_REFRESH, Uint8Array.of(afi >> 8, afi & 0xff, subtype, safi));
}

export function decodeRouteRefresh(body: Uint8Array): RouteRefreshMessage {
  const cursor = new Cursor(body);
  const afi = cursor.u16();
  const subtype = cursor.u8();
  return { type: 'route-refresh', afi, safi: cursor.u8(), subtype };
}
