// The speaker and its sessions against fake peers on loopback (testing/fake-peer.ts): what a router
// at the other end would see, message by message.
import { afterEach, describe, expect, it } from '@jest/globals';
import { once } from 'node:events';
import { pino } from 'pino';
import { BgpSpeaker, type PeerOptions } from './speaker.js';
import { FakePeer, ribOf } from './testing/fake-peer.js';
import {
  Afi,
  encodeKeepalive,
  encodeNotification,
  encodeRouteRefresh,
  endOfRib,
  type OpenMessage,
  type ReceivedMessage,
  type ReceivedUpdate,
} from './wire/index.js';

const log = pino({ level: 'silent' });
const LOCAL_AS = 65001;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function setUp(peerOptions: { as?: number; holdTimeSeconds?: number } = {}, speakerPeer: Partial<PeerOptions> = {}) {
  const peer = await FakePeer.start({ as: peerOptions.as ?? 65000, holdTimeSeconds: peerOptions.holdTimeSeconds ?? 90 });
  cleanups.push(() => peer.close());
  const speaker = new BgpSpeaker({
    localAs: LOCAL_AS,
    routerId: '192.0.2.1',
    holdTimeSeconds: 90,
    connectRetryMs: 100,
    peers: [{ address: '127.0.0.1', port: peer.port, remoteAs: 65000, nextHop: { ipv6: '2001:db8::1' }, ...speakerPeer }],
    log,
  });
  cleanups.push(() => speaker.stop());
  return { peer, speaker };
}

const updates = (received: ReceivedMessage[]) => received.filter((m): m is ReceivedUpdate => m.type === 'update');
const established = (speaker: BgpSpeaker) => () => (speaker.peers[0]!.state === 'Established' ? true : undefined);

describe('a BGP session', () => {
  it('opens with the capabilities issue 19 asks for, then announces its routes and End-of-RIB for each family', async () => {
    const { peer, speaker } = await setUp();
    speaker.announce('198.51.100.10', { communities: ['65001:100'], med: 5 });
    speaker.announce('2001:db8:100::10');
    speaker.start();
    const open = await peer.until('OPEN', (r) => r.find((m): m is OpenMessage => m.type === 'open'));
    expect(open).toMatchObject({ myAs: 65001, holdTimeSeconds: 90, bgpId: '192.0.2.1' });
    expect(open.capabilities).toEqual([
      { kind: 'multiprotocol', afi: 1, safi: 1 },
      { kind: 'multiprotocol', afi: 2, safi: 1 },
      { kind: 'route-refresh' },
      { kind: 'four-octet-as', as: 65001 },
      { kind: 'graceful-restart', restarted: false, notification: false, restartTimeSeconds: 0, families: [] },
    ]);
    await peer.until('both End-of-RIBs', (r) => updates(r).filter((u) => endOfRib(u) !== undefined).length === 2 || undefined);
    expect(speaker.peers[0]!.state).toBe('Established');
    expect(ribOf(peer.received)).toEqual(['198.51.100.10/32', '2001:db8:100::10/128']);
    const ipv4 = updates(peer.received).find((u) => u.nlri.length)!;
    // eBGP: our AS in the path, the connection's address as next hop, no LOCAL_PREF
    expect(ipv4.attributes).toEqual({
      origin: 0,
      asPath: [{ type: 2, asns: [65001] }],
      nextHop: '127.0.0.1',
      med: 5,
      communities: [((65001 << 16) | 100) >>> 0],
    });
    const ipv6 = updates(peer.received).find((u) => u.attributes.mpReach)!;
    expect(ipv6.attributes.mpReach!.nextHops).toEqual(['2001:db8::1']);
    // The routes come before End-of-RIB.
    const kinds = updates(peer.received).map((u) => (endOfRib(u) !== undefined ? 'eor' : 'route'));
    expect(kinds).toEqual(['route', 'route', 'eor', 'eor']);
    expect(speaker.status().peers[0]).toMatchObject({ state: 'Established', prefixesSent: 2, holdTimeSeconds: 90, families: ['ipv4-unicast', 'ipv6-unicast'] });
  });

  it('withdraws and announces again with an UPDATE each, on the same connection', async () => {
    const { peer, speaker } = await setUp();
    speaker.announce('198.51.100.10');
    speaker.start();
    await peer.until('the route', (r) => ribOf(r).includes('198.51.100.10/32') || undefined);
    speaker.withdraw('198.51.100.10/32');
    await peer.until('the withdrawal', (r) => (ribOf(r).length === 0 ? true : undefined));
    speaker.announce('198.51.100.10', { communities: ['65001:7'] });
    await peer.until('the route again', (r) => ribOf(r).includes('198.51.100.10/32') || undefined);
    // a changed attribute is an UPDATE too
    speaker.announce('198.51.100.10', { communities: ['65001:8'] });
    await peer.until('the new community', (r) => updates(r).at(-1)?.attributes.communities?.[0] === ((65001 << 16) | 8) >>> 0 || undefined);
    expect(peer.connections).toBe(1);
    expect(peer.received.some((m) => m.type === 'notification')).toBe(false);
  });

  it('sends LOCAL_PREF and an empty AS_PATH to an internal peer', async () => {
    const { peer, speaker } = await setUp({ as: LOCAL_AS }, { remoteAs: LOCAL_AS });
    speaker.announce('198.51.100.10', { localPreference: 200 });
    speaker.announce('198.51.100.11');
    speaker.start();
    await peer.until('the routes', (r) => ribOf(r).length === 2 || undefined);
    const attributes = updates(peer.received)
      .filter((u) => u.nlri.length)
      .map((u) => [u.attributes.asPath, u.attributes.localPref]);
    expect(attributes).toEqual(
      expect.arrayContaining([
        [[], 200],
        [[], 100],
      ]),
    );
  });

  it('sends keepalives at a third of the negotiated hold time, and ends a silent peer with Hold Timer Expired', async () => {
    const { peer, speaker } = await setUp({ holdTimeSeconds: 3 });
    speaker.start();
    await peer.until('established', established(speaker));
    peer.silence();
    const start = Date.now();
    const keepalivesAfter = peer.received.length;
    await peer.until('a keepalive', (r) => r.slice(keepalivesAfter).some((m) => m.type === 'keepalive') || undefined, 2000);
    expect(Date.now() - start).toBeLessThan(1500);
    const notification = await peer.until('NOTIFICATION', (r) => r.find((m) => m.type === 'notification'), 5000);
    expect(notification).toMatchObject({ code: 4, subcode: 0 });
    expect(Date.now() - start).toBeGreaterThanOrEqual(2500);
    // and it comes back
    await peer.until('a new connection', () => (peer.connections === 2 ? true : undefined));
  }, 15_000);

  it('refuses a peer with another AS with OPEN Message Error / Bad Peer AS, and tries again later', async () => {
    const { peer, speaker } = await setUp({ as: 65099 });
    speaker.start();
    expect(await peer.until('NOTIFICATION', (r) => r.find((m) => m.type === 'notification'))).toMatchObject({ code: 2, subcode: 2 });
    expect(speaker.peers[0]!.status().lastError).toMatch(/Bad Peer AS.*AS 65099, configured as AS 65000/);
    await peer.until('a second attempt', () => (peer.connections >= 2 ? true : undefined));
  });

  it('answers a bad header, an unknown well-known attribute and a message out of turn with their NOTIFICATIONs', async () => {
    const { peer, speaker } = await setUp();
    speaker.start();
    await peer.until('established', established(speaker));
    const badMarker = encodeKeepalive().slice();
    badMarker[3] = 0;
    peer.send(badMarker);
    expect(await peer.until('NOTIFICATION', (r) => r.find((m) => m.type === 'notification'))).toMatchObject({ code: 1, subcode: 1 });

    await peer.until('established again', () => (peer.connections === 2 && speaker.peers[0]!.state === 'Established' ? true : undefined));
    const count = peer.received.length;
    const unknownWellKnown = Uint8Array.from([...Array(16).fill(0xff), 0, 28, 2, 0, 0, 0, 5, 0x40, 0x63, 2, 0xab, 0xcd]);
    peer.send(unknownWellKnown);
    expect(await peer.until('NOTIFICATION', (r) => r.slice(count).find((m) => m.type === 'notification'))).toMatchObject({
      code: 3,
      subcode: 2,
      data: Uint8Array.of(0x40, 0x63, 2, 0xab, 0xcd),
    });

    await peer.until('established a third time', () => (peer.connections === 3 && speaker.peers[0]!.state === 'Established' ? true : undefined));
    const count2 = peer.received.length;
    peer.send(peer.open());
    expect(await peer.until('NOTIFICATION', (r) => r.slice(count2).find((m) => m.type === 'notification'))).toMatchObject({ code: 5, subcode: 3 });
  });

  it('keeps the session through a malformed attribute RFC 7606 answers with treat-as-withdraw', async () => {
    const { peer, speaker } = await setUp();
    speaker.start();
    await peer.until('established', established(speaker));
    // ORIGIN 3 (undefined) on a route the peer announces
    const body = [0, 0, 0, 20, 0x40, 1, 1, 3, 0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe8, 0x40, 3, 4, 10, 0, 0, 1, 24, 203, 0, 113];
    peer.send(Uint8Array.from([...Array(16).fill(0xff), 0, 19 + body.length, 2, ...body]));
    peer.send(encodeKeepalive());
    await new Promise((r) => setTimeout(r, 200));
    expect(speaker.peers[0]!.state).toBe('Established');
    expect(peer.received.some((m) => m.type === 'notification')).toBe(false);
    expect(speaker.status().peers[0]!.prefixesReceived).toBe(0);
    // the same route with ORIGIN 0 counts
    body[7] = 0;
    peer.send(Uint8Array.from([...Array(16).fill(0xff), 0, 19 + body.length, 2, ...body]));
    await peer.until('the count', () => (speaker.status().peers[0]!.prefixesReceived === 1 ? true : undefined));
  });

  it('resends its routes on ROUTE-REFRESH', async () => {
    const { peer, speaker } = await setUp();
    speaker.announce('198.51.100.10');
    speaker.start();
    await peer.until('the route', (r) => ribOf(r).length === 1 || undefined);
    const before = updates(peer.received).length;
    peer.send(encodeRouteRefresh(Afi.IPV4, 1));
    await peer.until(
      'the route again',
      (r) =>
        updates(r)
          .slice(before)
          .some((u) => u.nlri.length > 0) || undefined,
    );
  });

  it('goes down on the peer NOTIFICATION, reconnects after the connect-retry time and sends its routes again', async () => {
    const { peer, speaker } = await setUp();
    speaker.announce('198.51.100.10');
    speaker.start();
    await peer.until('the route', (r) => ribOf(r).length === 1 || undefined);
    peer.send(encodeNotification(6, 4));
    await peer.until('the second session', () => (peer.connections === 2 && speaker.peers[0]!.state === 'Established' ? true : undefined));
    expect(speaker.peers[0]!.status().lastError).toBe('the peer sent NOTIFICATION Cease / Administrative Reset');
    await peer.until('the route on the new session', (r) => updates(r).filter((u) => u.nlri.length).length === 2 || undefined);
  });

  it('keeps trying a peer that is not there yet, and comes up when it listens', async () => {
    const placeholder = await FakePeer.start({ as: 65000 });
    const port = placeholder.port;
    await placeholder.close();
    const speaker = new BgpSpeaker({
      localAs: LOCAL_AS,
      routerId: '192.0.2.1',
      holdTimeSeconds: 90,
      connectRetryMs: 100,
      peers: [{ address: '127.0.0.1', port, remoteAs: 65000 }],
      log,
    });
    cleanups.push(() => speaker.stop());
    speaker.announce('198.51.100.10');
    speaker.start();
    await new Promise((r) => setTimeout(r, 300));
    expect(speaker.peers[0]!.status()).toMatchObject({ state: expect.stringMatching(/Active|Connect/), lastError: expect.stringMatching(/ECONNREFUSED/) });
    const peer = await FakePeer.start({ as: 65000 }, port);
    cleanups.push(() => peer.close());
    await peer.until('the route', (r) => ribOf(r).length === 1 || undefined);
  });

  it('on stop, says Cease / Administrative Shutdown with its reason and does not come back', async () => {
    const { peer, speaker } = await setUp();
    speaker.start();
    await peer.until('established', established(speaker));
    speaker.stop('draining for maintenance');
    const notification = await peer.until('NOTIFICATION', (r) => r.find((m) => m.type === 'notification'));
    expect(notification).toMatchObject({ code: 6, subcode: 2 });
    await new Promise((r) => setTimeout(r, 300));
    expect(peer.connections).toBe(1);
    expect(speaker.peers[0]!.state).toBe('Idle');
  });
});

describe('many routes', () => {
  it('go in as few UPDATEs as fit 4096 bytes, and all arrive', async () => {
    const { peer, speaker } = await setUp();
    for (let i = 0; i < 1500; i++) speaker.announce(`10.${i >> 8}.${i & 255}.1`);
    for (let i = 0; i < 600; i++) speaker.announce(`2001:db8:${i.toString(16)}::1`);
    speaker.start();
    await peer.until('every route', (r) => ribOf(r).length === 2100 || undefined);
    // 1500 × 5 bytes of IPv4 NLRI in 2 UPDATEs, 600 × 17 bytes of IPv6 in 3
    expect(updates(peer.received).filter((u) => endOfRib(u) === undefined)).toHaveLength(5);
    for (let i = 0; i < 1500; i++) speaker.withdraw(`10.${i >> 8}.${i & 255}.1`);
    await peer.until('the withdrawals', (r) => ribOf(r).length === 600 || undefined);
  });
});

describe('passive peering', () => {
  async function passiveSpeaker() {
    const speaker = new BgpSpeaker({
      localAs: LOCAL_AS,
      routerId: '192.0.2.1',
      holdTimeSeconds: 90,
      connectRetryMs: 100,
      listen: { address: '127.0.0.1', port: 0 },
      peers: [{ address: '127.0.0.1', remoteAs: 65000, passive: true }],
      log,
    });
    cleanups.push(() => speaker.stop());
    speaker.announce('198.51.100.10');
    await speaker.start();
    return speaker;
  }

  it('waits for the peer to connect, then sends its routes; a second connection is refused and the first kept', async () => {
    const speaker = await passiveSpeaker();
    expect(speaker.peers[0]!.state).toBe('Active');
    const router = await FakePeer.start({ as: 65000 });
    cleanups.push(() => router.close());
    await router.dial(speaker.listenPort!);
    await router.until('the route', (r) => (ribOf(r).join() === '198.51.100.10/32' ? true : undefined));
    const second = await FakePeer.start({ as: 65000 });
    cleanups.push(() => second.close());
    await second.dial(speaker.listenPort!);
    expect(await second.until('NOTIFICATION', (r) => r.find((m) => m.type === 'notification'))).toMatchObject({ code: 6, subcode: 7 });
    expect(speaker.peers[0]!.state).toBe('Established');
    // the peer goes away: the session waits for it again, and takes its next connection
    router.socket!.destroy();
    await router.until('Active', () => (speaker.peers[0]!.state === 'Active' ? true : undefined));
    const again = await FakePeer.start({ as: 65000 });
    cleanups.push(() => again.close());
    await again.dial(speaker.listenPort!);
    await again.until('the route again', (r) => (ribOf(r).length === 1 ? true : undefined));
  });

  it('reconfigured onto every address on the same port: the listener moves, the passive session stays up', async () => {
    const speaker = await passiveSpeaker();
    const router = await FakePeer.start({ as: 65000 });
    cleanups.push(() => router.close());
    await router.dial(speaker.listenPort!);
    await router.until('the route', (r) => (ribOf(r).length === 1 ? true : undefined));
    const port = speaker.listenPort!;
    // 127.0.0.1:port is held by the running listener: '::' on the same port has to take its place.
    await speaker.reconfigure({
      localAs: LOCAL_AS,
      routerId: '192.0.2.1',
      holdTimeSeconds: 90,
      connectRetryMs: 100,
      listen: { address: '::', port },
      peers: [{ address: '127.0.0.1', remoteAs: 65000, passive: true }],
      log,
    });
    expect(speaker.listenPort).toBe(port);
    expect(speaker.peers[0]!.state).toBe('Established');
    const second = await FakePeer.start({ as: 65000 });
    cleanups.push(() => second.close());
    await second.dial(port);
    // the new listener answers, and hands the connection to the session that is up: refused
    expect(await second.until('NOTIFICATION', (r) => r.find((m) => m.type === 'notification'))).toMatchObject({ code: 6, subcode: 7 });
    expect(router.received.filter((m) => m.type === 'notification')).toEqual([]);
    expect(router.connections).toBe(1);
  });

  it('closes a connection from an address that is no passive peer', async () => {
    const speaker = await passiveSpeaker();
    const stranger = await FakePeer.start({ as: 65000 });
    cleanups.push(() => stranger.close());
    const socket = await stranger.dial(speaker.listenPort!, '127.0.0.2');
    await once(socket, 'close');
    expect(stranger.received).toEqual([]);
    expect(speaker.peers[0]!.state).toBe('Active');
  });

  it('names the listener and what moves it when its port is taken', async () => {
    const taken = await FakePeer.start({ as: 65000 });
    cleanups.push(() => taken.close());
    const speaker = new BgpSpeaker({
      localAs: LOCAL_AS,
      routerId: '192.0.2.1',
      holdTimeSeconds: 90,
      listen: { address: '127.0.0.1', port: taken.port },
      peers: [{ address: '127.0.0.1', remoteAs: 65000, passive: true }],
      log,
    });
    cleanups.push(() => speaker.stop());
    await expect(speaker.start()).rejects.toThrow(
      `the BGP listener for passive peers cannot listen on 127.0.0.1:${taken.port}: another process is listening there`,
    );
  });
});

describe('several peers', () => {
  it('each gets every route, and a withdrawal reaches all of them', async () => {
    const a = await FakePeer.start({ as: 65000 });
    const b = await FakePeer.start({ as: 65002, routerId: '192.0.2.253' });
    cleanups.push(
      () => a.close(),
      () => b.close(),
    );
    const speaker = new BgpSpeaker({
      localAs: LOCAL_AS,
      routerId: '192.0.2.1',
      holdTimeSeconds: 90,
      connectRetryMs: 100,
      peers: [
        { address: '127.0.0.1', port: a.port, remoteAs: 65000 },
        { address: '127.0.0.1', port: b.port, remoteAs: 65002 },
      ],
      log,
    });
    cleanups.push(() => speaker.stop());
    speaker.start();
    speaker.announce('198.51.100.10');
    speaker.announce('198.51.100.11');
    for (const peer of [a, b]) await peer.until('both routes', (r) => ribOf(r).length === 2 || undefined);
    speaker.withdraw('198.51.100.10');
    for (const peer of [a, b]) await peer.until('the withdrawal', (r) => (ribOf(r).join() === '198.51.100.11/32' ? true : undefined));
    // an IPv6 route with no IPv6 next hop for these peers (IPv4 sessions) is not sent, and said so in the status
    speaker.announce('2001:db8::10');
    await new Promise((r) => setTimeout(r, 100));
    expect(ribOf(a.received)).toEqual(['198.51.100.11/32']);
    expect(speaker.status().peers.map((p) => p.prefixesSent)).toEqual([1, 1]);
  });

  it('reconfigured with another router id (in every OPEN): every session restarts with it and gets the routes again', async () => {
    const a = await FakePeer.start({ as: 65000 });
    const b = await FakePeer.start({ as: 65002, routerId: '192.0.2.253' });
    cleanups.push(
      () => a.close(),
      () => b.close(),
    );
    const options = (routerId: string) => ({
      localAs: LOCAL_AS,
      routerId,
      holdTimeSeconds: 90,
      connectRetryMs: 100,
      peers: [
        { address: '127.0.0.1', port: a.port, remoteAs: 65000 },
        { address: '127.0.0.1', port: b.port, remoteAs: 65002 },
      ],
      log,
    });
    const speaker = new BgpSpeaker(options('192.0.2.1'));
    cleanups.push(() => speaker.stop());
    speaker.announce('198.51.100.10');
    await speaker.start();
    for (const peer of [a, b]) await peer.until('the route', (r) => ribOf(r).length === 1 || undefined);
    const changes = await speaker.reconfigure(options('192.0.2.2'));
    expect(changes).toEqual({ kept: [], started: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`], stopped: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`] });
    for (const peer of [a, b]) {
      const open = await peer.until('an OPEN with the new id', (r) => r.filter((m): m is OpenMessage => m.type === 'open')[1]);
      expect(open.bgpId).toBe('192.0.2.2');
      await peer.until('the route on the new session', (r) => (ribOf(r.slice(r.indexOf(open))).length === 1 ? true : undefined));
      expect(peer.received.find((m) => m.type === 'notification')).toMatchObject({ code: 6, subcode: 2 });
    }
  });
});
