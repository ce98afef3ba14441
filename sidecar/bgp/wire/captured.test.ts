// Bytes real routers sent, captured by sidecar/bgp/testing/capture-routers.ts from BIRD 2.0.12 and
// GoBGP 3.10.0 (Debian 12) playing an eBGP peer (AS 65000) to our AS 65001: each must decode to
// what the router was configured to send, and what the speaker would send back must decode alike.
import { describe, expect, it } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  Afi,
  decodeMessage,
  describeNotification,
  encodeKeepalive,
  encodeEndOfRib,
  encodeOpen,
  encodeRouteRefresh,
  encodeUpdate,
  endOfRib,
  Framer,
  parseCommunity,
  peerAs,
  prefixText,
  routesOf,
  type OpenMessage,
  type ReceivedMessage,
  type ReceivedUpdate,
} from './index.js';

const CAPTURED = fileURLToPath(new URL('../testing/captured/', import.meta.url));
const FROM_ROUTER = { fourOctetAs: true, ibgp: false, peerAs: 65000 };

function read(router: string, file: string): { wire: Uint8Array; message: ReceivedMessage } {
  const wire = new Uint8Array(readFileSync(`${CAPTURED}${router}/${file}`));
  const frames = new Framer().push(wire);
  expect(frames).toHaveLength(1);
  return { wire, message: decodeMessage(frames[0]!, FROM_ROUTER) };
}

const updatesOf = (router: string) =>
  readdirSync(`${CAPTURED}${router}`)
    .filter((f) => /^update-\d/.test(f))
    .map((f) => read(router, f).message as ReceivedUpdate);

/** Every announced route as "prefix via next hop", sorted. */
const routes = (updates: ReceivedUpdate[]) =>
  updates
    .flatMap((u) =>
      routesOf(u).announced.map((p) => `${prefixText(p)} via ${p.afi === Afi.IPV4 ? u.attributes.nextHop : u.attributes.mpReach?.nextHops.join(',')}`),
    )
    .sort();

describe('messages captured from BIRD 2.0.12', () => {
  const router = 'bird-2.0.12';

  it('OPEN: AS 65000, hold time 240, MP IPv4 and IPv6, route refresh, graceful restart without families, 4-octet AS', () => {
    const open = read(router, 'open.bin').message as OpenMessage;
    expect({ as: peerAs(open), hold: open.holdTimeSeconds, id: open.bgpId }).toEqual({ as: 65000, hold: 240, id: '192.0.2.254' });
    expect(open.capabilities.map((c) => c.kind)).toEqual([
      'multiprotocol',
      'multiprotocol',
      'route-refresh',
      'graceful-restart',
      'four-octet-as',
      'unknown',
      'unknown',
    ]);
    expect(open.capabilities[3]).toEqual({ kind: 'graceful-restart', restarted: false, notification: false, restartTimeSeconds: 120, families: [] });
    // Enhanced route refresh (70) and long-lived graceful restart (71): offered, not used by us.
    expect(open.capabilities.slice(5).map((c) => (c.kind === 'unknown' ? c.code : 0))).toEqual([70, 71]);
    // Re-encoded, it reads the same (BIRD orders capabilities as we would not; the set is what matters).
    expect(decodeMessage(new Framer().push(encodeOpen(open))[0]!, FROM_ROUTER)).toEqual(open);
  });

  it('UPDATEs: its static routes with the export filter attributes, IPv6 in MP_REACH with the Extended Length bit', () => {
    const updates = updatesOf(router);
    expect(updates.every((u) => u.problems.length === 0)).toBe(true);
    expect(routes(updates)).toEqual(['198.51.100.0/25 via 10.255.0.1', '2001:db8:ff::/48 via 2001:db8::254', '203.0.113.0/24 via 10.255.0.1']);
    const ipv4 = updates.find((u) => u.nlri.length > 0)!;
    expect(ipv4.attributes).toMatchObject({ origin: 0, asPath: [{ type: 2, asns: [65000] }], med: 10, communities: [parseCommunity('65000:100')] });
    const ipv6 = updates.find((u) => u.attributes.mpReach)!;
    // BIRD sent MP_REACH_NLRI with flags 0x90 (Extended Length on a 28-byte value)
    expect(Buffer.from(read(router, 'update-2-ipv6.bin').wire.subarray(23, 25)).toString('hex')).toBe('900e');
    expect(ipv6.attributes.other).toEqual([{ flags: 0xc0, type: 32, value: Uint8Array.of(0, 0, 0xfd, 0xe8, 0, 0, 0, 1, 0, 0, 0, 2) }]);
  });

  it('End-of-RIB for both families, ROUTE-REFRESH and KEEPALIVE are byte for byte what we send', () => {
    expect(read(router, 'update-end-of-rib-ipv4.bin').wire).toEqual(encodeEndOfRib(Afi.IPV4, FROM_ROUTER));
    expect(read(router, 'update-end-of-rib-ipv6.bin').wire).toEqual(encodeEndOfRib(Afi.IPV6, FROM_ROUTER));
    expect(endOfRib(read(router, 'update-end-of-rib-ipv6.bin').message as ReceivedUpdate)).toBe(Afi.IPV6);
    expect(read(router, 'route-refresh.bin').wire).toEqual(encodeRouteRefresh(Afi.IPV4, 1));
    expect(read(router, 'keepalive.bin').wire).toEqual(encodeKeepalive());
  });

  it('NOTIFICATION for a message of unknown type: Message Header Error / Bad Message Type with the type as data', () => {
    const notification = read(router, 'notification-bad-message-type.bin').message;
    expect(notification).toEqual({ type: 'notification', code: 1, subcode: 3, data: Uint8Array.of(9) });
  });
});

describe('messages captured from GoBGP 3.10.0', () => {
  const router = 'gobgp-3.10.0';

  it('OPEN: hold time 90, graceful restart listing both families without forwarding state, FQDN and extended next hop offered', () => {
    const open = read(router, 'open.bin').message as OpenMessage;
    expect({ as: peerAs(open), hold: open.holdTimeSeconds, id: open.bgpId }).toEqual({ as: 65000, hold: 90, id: '192.0.2.253' });
    expect(open.capabilities.find((c) => c.kind === 'graceful-restart')).toEqual({
      kind: 'graceful-restart',
      restarted: false,
      notification: false,
      restartTimeSeconds: 90,
      families: [
        { afi: 1, safi: 1, forwardingPreserved: false },
        { afi: 2, safi: 1, forwardingPreserved: false },
      ],
    });
    expect(open.capabilities.flatMap((c) => (c.kind === 'unknown' ? [c.code] : []))).toEqual([73, 5]);
  });

  it('UPDATEs: one per attribute set, ORIGIN incomplete, an IPv4-mapped next hop for IPv6 over an IPv4 session', () => {
    const updates = updatesOf(router);
    expect(updates.every((u) => u.problems.length === 0)).toBe(true);
    expect(routes(updates)).toEqual(['198.51.100.0/25 via 10.255.0.1', '2001:db8:ff::/48 via ::ffff:10.255.0.1', '203.0.113.0/24 via 10.255.0.1']);
    expect(updates.every((u) => u.attributes.origin === 2)).toBe(true);
    // What the speaker would send with these attributes reads the same routes back.
    for (const update of updates) {
      const again = decodeMessage(new Framer().push(encodeUpdate(update, FROM_ROUTER))[0]!, FROM_ROUTER) as ReceivedUpdate;
      expect(routesOf(again)).toEqual(routesOf(update));
      expect(again.attributes).toEqual(update.attributes);
    }
  });

  it('End-of-RIB and KEEPALIVE byte for byte', () => {
    expect(read(router, 'update-end-of-rib-ipv4.bin').wire).toEqual(encodeEndOfRib(Afi.IPV4, FROM_ROUTER));
    expect(read(router, 'update-end-of-rib-ipv6.bin').wire).toEqual(encodeEndOfRib(Afi.IPV6, FROM_ROUTER));
    expect(read(router, 'keepalive.bin').wire).toEqual(encodeKeepalive());
  });

  it('NOTIFICATION Cease / Administrative Shutdown with its RFC 9003 message', () => {
    const notification = read(router, 'notification-cease-administrative-shutdown.bin').message;
    expect(notification.type).toBe('notification');
    if (notification.type !== 'notification') return;
    expect(describeNotification(notification.code, notification.subcode, notification.data)).toBe('Cease / Administrative Shutdown: "maintenance window"');
  });
});
