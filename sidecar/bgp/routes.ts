// What the speaker announces, turned into UPDATE messages for one session: the attributes a VIP's
// route carries toward an internal or external peer, grouped so that routes sharing attributes
// share an UPDATE, packed under the 4096-byte limit; withdrawals likewise.
import type { Logger } from 'pino';
import {
  Afi,
  AsPathSegmentType,
  encodedPrefixLength,
  encodeUpdate,
  MAX_MESSAGE_LENGTH,
  Origin,
  prefixText,
  Safi,
  type AddressFamily,
  type PathAttributes,
  type Prefix,
} from './wire/index.js';

export interface Route {
  prefix: Prefix;
  /** RFC 1997 communities (32-bit). */
  communities: number[];
  /** Sent to internal peers only (RFC 4271 §5.1.5); 100 when not set. */
  localPreference?: number;
  /** MULTI_EXIT_DISC. */
  med?: number;
}

/** What an UPDATE toward this peer depends on, fixed once the session is up. */
export interface PeerView {
  localAs: number;
  ibgp: boolean;
  fourOctetAs: boolean;
  families: ReadonlySet<AddressFamily>;
  /** The next hop for each family; a family without one cannot be announced to this peer. */
  nextHops: Partial<Record<AddressFamily, string>>;
}

export const DEFAULT_LOCAL_PREFERENCE = 100;

function attributesFor(route: Route, peer: PeerView): PathAttributes {
  return {
    origin: Origin.IGP,
    asPath: peer.ibgp ? [] : [{ type: AsPathSegmentType.AS_SEQUENCE, asns: [peer.localAs] }],
    ...(route.med !== undefined ? { med: route.med } : {}),
    ...(peer.ibgp ? { localPref: route.localPreference ?? DEFAULT_LOCAL_PREFERENCE } : {}),
    ...(route.communities.length ? { communities: route.communities } : {}),
  };
}

/** Why a route cannot go to this peer, or undefined when it can. */
export function unsendable(route: Route, peer: PeerView): string | undefined {
  const family = route.prefix.afi === Afi.IPV4 ? 'IPv4' : 'IPv6';
  if (!peer.families.has(route.prefix.afi)) return `the peer did not negotiate ${family} unicast`;
  if (!peer.nextHops[route.prefix.afi]) return `no ${family} next hop for this peer (set the peer's nextHop, or peer over ${family})`;
  return undefined;
}

/** UPDATEs announcing `routes` (each must be sendable), as few as fit. */
export function announcements(routes: Iterable<Route>, peer: PeerView): Uint8Array[] {
  const groups = new Map<string, { afi: AddressFamily; attributes: PathAttributes; prefixes: Prefix[] }>();
  for (const route of routes) {
    const attributes = attributesFor(route, peer);
    const key = `${route.prefix.afi} ${JSON.stringify(attributes)}`;
    let group = groups.get(key);
    if (!group) groups.set(key, (group = { afi: route.prefix.afi, attributes, prefixes: [] }));
    group.prefixes.push(route.prefix);
  }
  const messages: Uint8Array[] = [];
  for (const { afi, attributes, prefixes } of groups.values()) {
    const nextHop = peer.nextHops[afi]!;
    const build = (batch: Prefix[]) =>
      afi === Afi.IPV4
        ? encodeUpdate({ withdrawn: [], attributes: { ...attributes, nextHop }, nlri: batch }, peer)
        : encodeUpdate(
            { withdrawn: [], attributes: { ...attributes, mpReach: { afi, safi: Safi.UNICAST, nextHops: [nextHop], nlri: batch } }, nlri: [] },
            peer,
          );
    // +1: an MP_REACH_NLRI that grows past 255 bytes takes a 2-byte length.
    const overhead = build([]).length + (afi === Afi.IPV6 ? 1 : 0);
    for (const batch of packed(prefixes, overhead)) messages.push(build(batch));
  }
  return messages;
}

/** UPDATEs withdrawing `prefixes`: IPv4 in the withdrawn routes field, IPv6 in MP_UNREACH_NLRI. */
export function withdrawals(prefixes: Iterable<Prefix>, peer: Pick<PeerView, 'fourOctetAs'>): Uint8Array[] {
  const ipv4: Prefix[] = [];
  const ipv6: Prefix[] = [];
  for (const prefix of prefixes) (prefix.afi === Afi.IPV4 ? ipv4 : ipv6).push(prefix);
  const messages: Uint8Array[] = [];
  for (const batch of packed(ipv4, 23)) messages.push(encodeUpdate({ withdrawn: batch, attributes: {}, nlri: [] }, peer));
  for (const batch of packed(ipv6, 23 + 4 + 3 + 1))
    messages.push(encodeUpdate({ withdrawn: [], attributes: { mpUnreach: { afi: Afi.IPV6, safi: Safi.UNICAST, withdrawn: batch } }, nlri: [] }, peer));
  return messages;
}

function* packed(prefixes: Prefix[], overhead: number): Generator<Prefix[]> {
  let batch: Prefix[] = [];
  let size = overhead;
  for (const prefix of prefixes) {
    const length = encodedPrefixLength(prefix);
    if (size + length > MAX_MESSAGE_LENGTH && batch.length) {
      yield batch;
      batch = [];
      size = overhead;
    }
    batch.push(prefix);
    size += length;
  }
  if (batch.length) yield batch;
}

/** Logs each route that cannot go to a peer once per reason, so a missing next hop is said, not repeated. */
export function routesToSend(routes: Iterable<Route>, peer: PeerView, log: Logger, said: Set<string>): Route[] {
  const out: Route[] = [];
  for (const route of routes) {
    const why = unsendable(route, peer);
    if (!why) {
      out.push(route);
      continue;
    }
    const key = `${prefixText(route.prefix)}: ${why}`;
    if (!said.has(key)) {
      said.add(key);
      log.warn({ prefix: prefixText(route.prefix), reason: why }, 'route not announced to this peer');
    }
  }
  return out;
}
