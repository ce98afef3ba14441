// Test vectors written by hand from the RFCs (the byte layouts of RFC 4271 §4, RFC 4760 §3-4,
// RFC 5492, RFC 6793, RFC 4724, RFC 1997, RFC 2918), and RFC 7606's answer to each kind of
// malformed UPDATE. Bytes captured from BIRD and GoBGP are in captured.test.ts.
import { describe, expect, it } from '@jest/globals';
import {
  Afi,
  AttributeType,
  BgpNotificationError,
  CeaseSubcode,
  decodeMessage,
  describeNotification,
  encodeEndOfRib,
  encodeKeepalive,
  encodeNotification,
  encodeOpen,
  encodeRouteRefresh,
  encodeUpdate,
  endOfRib,
  ErrorCode,
  Framer,
  parseCommunity,
  parsePrefix,
  peerAs,
  routesOf,
  shutdownData,
  type AttributeContext,
  type OpenMessage,
  type ReceivedMessage,
  type ReceivedUpdate,
} from './index.js';

const bytes = (text: string) => Uint8Array.from(Buffer.from(text.replace(/\s+|#[^\n]*/g, ''), 'hex'));
const hexOf = (b: Uint8Array) => Buffer.from(b).toString('hex');
const MARKER = 'ff'.repeat(16);
const FOUR: AttributeContext = { fourOctetAs: true };
const EBGP_FROM_65002: AttributeContext = { fourOctetAs: true, ibgp: false, peerAs: 65002 };

/** A whole message from its type and body. */
function message(type: number, body: string): Uint8Array {
  const b = bytes(body);
  return Uint8Array.from([...bytes(MARKER), (19 + b.length) >> 8, (19 + b.length) & 0xff, type, ...b]);
}

function decodeOne(wire: Uint8Array, context: AttributeContext = FOUR): ReceivedMessage {
  const frames = new Framer().push(wire);
  expect(frames).toHaveLength(1);
  return decodeMessage(frames[0]!, context);
}

/** The NOTIFICATION a decoder error asks for, as [code, subcode, data hex]. */
function notificationFor(wire: Uint8Array, context: AttributeContext = FOUR): [number, number, string] {
  try {
    decodeOne(wire, context);
  } catch (error) {
    expect(error).toBeInstanceOf(BgpNotificationError);
    const e = error as BgpNotificationError;
    return [e.code, e.subcode, hexOf(e.data)];
  }
  throw new Error('decoded without an error');
}

const update = (wire: Uint8Array, context: AttributeContext = FOUR) => decodeOne(wire, context) as ReceivedUpdate;

// ORIGIN IGP, AS_PATH [65002] (4-octet), NEXT_HOP 192.0.2.2
const ORIGIN_IGP = '40 01 01 00';
const AS_PATH_65002 = '40 02 06 02 01 0000fde9';
const NEXT_HOP = '40 03 04 c0000202';
/** An UPDATE announcing 198.51.100.10/32 with the attributes given (hex), from peer AS 65001. */
const announce = (attributes: string, nlri = '20 c633640a') => {
  const attrs = bytes(attributes);
  return message(2, `0000 ${attrs.length.toString(16).padStart(4, '0')} ${attributes} ${nlri}`);
};
const EBGP_PATH = '40 02 06 02 01 0000fdea'; // AS_SEQUENCE [65002]

describe('BGP messages, hand-written from the RFCs', () => {
  it('KEEPALIVE is the 19-byte header alone (RFC 4271 §4.4)', () => {
    expect(hexOf(encodeKeepalive())).toBe(`${MARKER}001304`);
    expect(decodeOne(encodeKeepalive())).toEqual({ type: 'keepalive' });
  });

  // RFC 4271 §4.2 + RFC 5492 §4: one Capabilities parameter holding MP IPv4 and IPv6 unicast
  // (RFC 4760 §8), route refresh (RFC 2918 §2), 4-octet AS 4200000001 (RFC 6793 §3) and graceful
  // restart with no address family (RFC 4724 §3: End-of-RIB only, nothing kept over a restart).
  const openWire = bytes(`
    ${MARKER} 0037 01
    04        # version
    5ba0      # my AS: AS_TRANS (23456), the real AS needs 4 octets
    005a      # hold time 90
    c0000201  # BGP identifier 192.0.2.1
    1a        # optional parameters length 26
    02 18     # Capabilities, 24 bytes: 6 + 6 + 2 + 6 + 4
      01 04 0001 00 01    # multiprotocol IPv4 unicast
      01 04 0002 00 01    # multiprotocol IPv6 unicast
      02 00               # route refresh
      41 04 fa56ea01      # 4-octet AS 4200000001
      40 02 0000          # graceful restart: no flags, restart time 0, no families
  `);
  const open: Omit<OpenMessage, 'type'> = {
    version: 4,
    myAs: 4200000001,
    holdTimeSeconds: 90,
    bgpId: '192.0.2.1',
    capabilities: [
      { kind: 'multiprotocol', afi: 1, safi: 1 },
      { kind: 'multiprotocol', afi: 2, safi: 1 },
      { kind: 'route-refresh' },
      { kind: 'four-octet-as', as: 4200000001 },
      { kind: 'graceful-restart', restarted: false, notification: false, restartTimeSeconds: 0, families: [] },
    ],
  };

  it('OPEN with every capability the speaker sends, both ways', () => {
    expect(hexOf(encodeOpen(open))).toBe(hexOf(openWire));
    const decoded = decodeOne(openWire) as OpenMessage;
    expect(decoded).toEqual({ type: 'open', ...open, myAs: 23456 });
    expect(peerAs(decoded)).toBe(4200000001);
  });

  it('OPEN: capabilities in several parameters, unknown ones kept, graceful restart families read', () => {
    const wire = message(
      1,
      `04 fde9 00b4 c0000202 14
       02 06 01 04 0001 0001
       02 0a 40 06 8078 0001 0180 49 00`,
    );
    const decoded = decodeOne(wire) as OpenMessage;
    expect(decoded.holdTimeSeconds).toBe(180);
    expect(decoded.capabilities).toEqual([
      { kind: 'multiprotocol', afi: 1, safi: 1 },
      { kind: 'graceful-restart', restarted: true, notification: false, restartTimeSeconds: 120, families: [{ afi: 1, safi: 1, forwardingPreserved: true }] },
      { kind: 'unknown', code: 0x49, value: new Uint8Array(0) },
    ]);
    expect(peerAs(decoded)).toBe(65001);
  });

  it('OPEN errors carry RFC 4271 §6.2 codes', () => {
    const withBody = (body: string) => notificationFor(message(1, body));
    expect(withBody('03 fde9 005a c0000201 00')).toEqual([2, 1, '0004']); // version 3: we support 4
    expect(withBody('04 fde9 0002 c0000201 00')).toEqual([2, 6, '']); // hold time 2
    expect(withBody('04 fde9 0001 c0000201 00')).toEqual([2, 6, '']);
    expect(withBody('04 fde9 005a 00000000 00')).toEqual([2, 3, '']); // identifier 0
    expect(withBody('04 fde9 005a c0000201 02 01 00')).toEqual([2, 4, '']); // parameter type 1 (authentication, deprecated)
    expect(withBody('04 fde9 005a c0000201 05 02 00')).toEqual([2, 0, '']); // parameters length past the message
    expect(withBody('04 fde9 005a c0000201 05 02 03 01 01 00')).toEqual([2, 0, '']); // a 1-byte multiprotocol capability
    expect(withBody('04 fde9 005a c0000201 04 02 04 41 03')).toEqual([2, 0, '']); // capability length past its parameter
    // hold time 0 (no keepalives) is allowed
    expect((decodeOne(message(1, '04 fde9 0000 c0000201 00')) as OpenMessage).holdTimeSeconds).toBe(0);
  });

  // RFC 4271 §4.3: withdrawn length 0, attributes, NLRI 198.51.100.10/32.
  const ipv4Announce = bytes(`
    ${MARKER} 0049 02
    0000                      # withdrawn routes length
    002d                      # path attribute length 45: 4 + 9 + 7 + 7 + 7 + 11
      40 01 01 00             # ORIGIN IGP
      40 02 06 02 01 0000fde9 # AS_PATH: AS_SEQUENCE [65001], 4-octet
      40 03 04 c0000201       # NEXT_HOP 192.0.2.1
      80 04 04 0000000a       # MULTI_EXIT_DISC 10
      40 05 04 00000064       # LOCAL_PREF 100
      c0 08 08 fde90064 ffff0000  # COMMUNITIES 65001:100, GRACEFUL_SHUTDOWN (RFC 8326)
    20 c633640a               # 198.51.100.10/32
  `);
  const ipv4Attributes = {
    origin: 0 as const,
    asPath: [{ type: 2, asns: [65001] }],
    nextHop: '192.0.2.1',
    med: 10,
    localPref: 100,
    communities: [parseCommunity('65001:100'), parseCommunity('65535:0')],
  };

  it('UPDATE announcing an IPv4 VIP with every attribute the speaker sends', () => {
    const vip = parsePrefix('198.51.100.10/32');
    expect(hexOf(encodeUpdate({ withdrawn: [], attributes: ipv4Attributes, nlri: [vip] }, FOUR))).toBe(hexOf(ipv4Announce));
    const decoded = update(ipv4Announce, { fourOctetAs: true, ibgp: true });
    expect(decoded).toEqual({ type: 'update', withdrawn: [], attributes: ipv4Attributes, nlri: [vip], treatAsWithdraw: false, problems: [] });
    expect(routesOf(decoded)).toEqual({ announced: [vip], withdrawn: [] });
  });

  it('UPDATE with 2-octet AS numbers, and AS4_PATH toward a speaker without 4-octet support (RFC 6793 §4.2.2)', () => {
    const wire = encodeUpdate(
      {
        withdrawn: [],
        attributes: { origin: 0, asPath: [{ type: 2, asns: [4200000001, 65001] }], nextHop: '192.0.2.1' },
        nlri: [parsePrefix('198.51.100.10')],
      },
      { fourOctetAs: false },
    );
    expect(hexOf(wire)).toBe(
      hexOf(bytes(`${MARKER} 003d 02 0000 0021 40 01 01 00 40 02 06 02 02 5ba0 fde9 40 03 04 c0000201 c0 11 0a 02 02 fa56ea01 0000fde9 20 c633640a`)),
    );
    const decoded = update(wire, { fourOctetAs: false });
    expect(decoded.attributes.asPath).toEqual([{ type: 2, asns: [23456, 65001] }]);
    expect(decoded.attributes.other).toEqual([{ flags: 0xc0, type: AttributeType.AS4_PATH, value: bytes('02 02 fa56ea01 0000fde9') }]);
  });

  // RFC 4760 §3: MP_REACH_NLRI for IPv6 unicast, next hop 2001:db8::1, NLRI 2001:db8:100::10/128.
  const ipv6Announce = bytes(`
    ${MARKER} 0054 02
    0000 003d  # 41 + 4 + 9 + 7
      80 0e 26 0002 01 10 20010db8000000000000000000000001 00 80 20010db8010000000000000000000010
      40 01 01 00
      40 02 06 02 01 0000fde9
      c0 08 04 fde90064
  `);

  it('UPDATE announcing an IPv6 VIP in MP_REACH_NLRI, MP attribute first (RFC 7606 §5.1)', () => {
    const vip = parsePrefix('2001:db8:100::10/128');
    const attributes = {
      mpReach: { afi: Afi.IPV6, safi: 1, nextHops: ['2001:db8::1'], nlri: [vip] },
      origin: 0 as const,
      asPath: [{ type: 2, asns: [65001] }],
      communities: [parseCommunity('65001:100')],
    };
    expect(hexOf(encodeUpdate({ withdrawn: [], attributes, nlri: [] }, FOUR))).toBe(hexOf(ipv6Announce));
    const decoded = update(ipv6Announce);
    expect(decoded.attributes).toEqual(attributes);
    expect(routesOf(decoded).announced).toEqual([vip]);
  });

  it('withdrawals: IPv4 in the withdrawn routes field, IPv6 in MP_UNREACH_NLRI', () => {
    const v4 = encodeUpdate({ withdrawn: [parsePrefix('198.51.100.10/32')], attributes: {}, nlri: [] }, FOUR);
    expect(hexOf(v4)).toBe(hexOf(bytes(`${MARKER} 001c 02 0005 20c633640a 0000`)));
    const v6 = encodeUpdate(
      { withdrawn: [], attributes: { mpUnreach: { afi: Afi.IPV6, safi: 1, withdrawn: [parsePrefix('2001:db8:100::10/128')] } }, nlri: [] },
      FOUR,
    );
    expect(hexOf(v6)).toBe(hexOf(bytes(`${MARKER} 002e 02 0000 0017 80 0f 14 0002 01 80 20010db8010000000000000000000010`)));
    expect(routesOf(update(v4)).withdrawn.map((p) => `${p.address}/${p.length}`)).toEqual(['198.51.100.10/32']);
    expect(routesOf(update(v6)).withdrawn.map((p) => `${p.address}/${p.length}`)).toEqual(['2001:db8:100::10/128']);
  });

  it('End-of-RIB (RFC 4724 §2): an empty UPDATE for IPv4, an empty MP_UNREACH for IPv6', () => {
    expect(hexOf(encodeEndOfRib(Afi.IPV4, FOUR))).toBe(`${MARKER}0017020000` + '0000');
    expect(hexOf(encodeEndOfRib(Afi.IPV6, FOUR))).toBe(hexOf(bytes(`${MARKER} 001d 02 0000 0006 80 0f 03 0002 01`)));
    expect(endOfRib(update(encodeEndOfRib(Afi.IPV4, FOUR)))).toBe(Afi.IPV4);
    expect(endOfRib(update(encodeEndOfRib(Afi.IPV6, FOUR)))).toBe(Afi.IPV6);
    expect(endOfRib(update(ipv4Announce))).toBeUndefined();
  });

  it('a long attribute uses the Extended Length bit (RFC 4271 §4.3), and a message over 4096 bytes is refused', () => {
    const communities = Array.from({ length: 70 }, (_, i) => ((65001 << 16) | i) >>> 0);
    const wire = encodeUpdate(
      { withdrawn: [], attributes: { origin: 0, asPath: [], nextHop: '192.0.2.1', communities }, nlri: [parsePrefix('198.51.100.10')] },
      FOUR,
    );
    const attributesStart = 19 + 4;
    expect(hexOf(wire.subarray(attributesStart + 4 + 3 + 7, attributesStart + 4 + 3 + 7 + 4))).toBe('d0080118'); // flags 0xd0, type 8, 280 bytes
    expect(update(wire).attributes.communities).toEqual(communities);
    const tooMany = Array.from({ length: 1100 }, (_, i) => i);
    expect(() => encodeUpdate({ withdrawn: [], attributes: { communities: tooMany }, nlri: [] }, FOUR)).toThrow(RangeError);
  });

  it('NOTIFICATION with a shutdown message (RFC 9003), and every name for logs', () => {
    const wire = encodeNotification(ErrorCode.CEASE, CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, shutdownData('draining'));
    expect(hexOf(wire)).toBe(hexOf(bytes(`${MARKER} 001e 03 06 02 08 ${Buffer.from('draining').toString('hex')}`)));
    const decoded = decodeOne(wire);
    expect(decoded).toEqual({ type: 'notification', code: 6, subcode: 2, data: shutdownData('draining') });
    expect(describeNotification(6, 2, shutdownData('draining'))).toBe('Cease / Administrative Shutdown: "draining"');
    expect(describeNotification(3, 11)).toBe('UPDATE Message Error / Malformed AS_PATH');
    expect(describeNotification(4, 0)).toBe('Hold Timer Expired');
    expect(describeNotification(42, 7)).toBe('error code 42 / subcode 7');
  });

  it('ROUTE-REFRESH (RFC 2918 §3)', () => {
    expect(hexOf(encodeRouteRefresh(2, 1))).toBe(`${MARKER}0017050002` + '0001');
    expect(decodeOne(encodeRouteRefresh(2, 1))).toEqual({ type: 'route-refresh', afi: 2, safi: 1, subtype: 0 });
  });
});

describe('the header (RFC 4271 §6.1)', () => {
  const header = (length: number, type: number, marker = MARKER) =>
    bytes(`${marker} ${length.toString(16).padStart(4, '0')} ${type.toString(16).padStart(2, '0')}`);
  const headerError = (wire: Uint8Array) => {
    try {
      new Framer().push(wire);
    } catch (error) {
      const e = error as BgpNotificationError;
      return [e.code, e.subcode, hexOf(e.data)];
    }
    return 'no error';
  };

  it('answers a bad marker, length or type with Message Header Error and the offending field', () => {
    expect(headerError(header(19, 4, 'ff'.repeat(15) + 'fe'))).toEqual([1, 1, '']);
    expect(headerError(header(18, 4))).toEqual([1, 2, '0012']);
    expect(headerError(header(4097, 2))).toEqual([1, 2, '1001']);
    expect(headerError(header(20, 4))).toEqual([1, 2, '0014']); // a KEEPALIVE with a body
    expect(headerError(header(24, 5))).toEqual([1, 2, '0018']);
    expect(headerError(header(28, 1))).toEqual([1, 2, '001c']); // an OPEN shorter than 29
    expect(headerError(header(20, 3))).toEqual([1, 2, '0014']); // a NOTIFICATION without its code
    expect(headerError(header(19, 6))).toEqual([1, 3, '06']);
    expect(headerError(header(19, 0))).toEqual([1, 3, '00']);
  });

  it('finds an error in a header at once, without waiting for the body its length promises', () => {
    expect(headerError(header(4000, 9))).toEqual([1, 3, '09']);
  });

  it('cuts a stream into the same messages however it is split', () => {
    const stream = Uint8Array.from([...encodeKeepalive(), ...ipv4(), ...encodeRouteRefresh(1, 1), ...encodeKeepalive()]);
    const whole = new Framer().push(stream).map((f) => [f.type, hexOf(f.body)]);
    expect(whole.map(([type]) => type)).toEqual([4, 2, 5, 4]);
    for (let size = 1; size <= 23; size++) {
      const framer = new Framer();
      const got: (string | number)[][] = [];
      for (let i = 0; i < stream.length; i += size) got.push(...framer.push(stream.slice(i, i + size)).map((f) => [f.type, hexOf(f.body)]));
      expect(got).toEqual(whole);
      expect(framer.buffered).toBe(0);
    }
  });
});

function ipv4(): Uint8Array {
  return encodeUpdate({ withdrawn: [], attributes: { origin: 0, asPath: [], nextHop: '192.0.2.1' }, nlri: [parsePrefix('198.51.100.10')] }, FOUR);
}

describe('malformed UPDATEs get RFC 7606 answers', () => {
  const problemsOf = (u: ReceivedUpdate) => u.problems.map((p) => [p.action, p.attributeType ?? null, p.subcode]);

  it('an undefined ORIGIN withdraws the routes it carries and keeps the session (§7.1)', () => {
    const u = update(announce(`40 01 01 03 ${AS_PATH_65002} ${NEXT_HOP}`));
    expect(u.treatAsWithdraw).toBe(true);
    expect(problemsOf(u)).toEqual([['treat-as-withdraw', 1, 6]]);
    expect(routesOf(u)).toEqual({ announced: [], withdrawn: [parsePrefix('198.51.100.10')] });
  });

  it('Optional/Transitive bits that contradict the attribute make it malformed (§3c)', () => {
    const u = update(announce(`c0 01 01 00 ${AS_PATH_65002} ${NEXT_HOP}`));
    expect(problemsOf(u)).toEqual([['treat-as-withdraw', 1, 4]]);
    // the Partial bit on a well-known attribute too
    expect(problemsOf(update(announce(`60 01 01 00 ${AS_PATH_65002} ${NEXT_HOP}`)))).toEqual([['treat-as-withdraw', 1, 4]]);
  });

  it('a bad ATOMIC_AGGREGATE or AGGREGATOR is discarded and the route stands (§7.6, §7.7)', () => {
    const u = update(announce(`${ORIGIN_IGP} ${AS_PATH_65002} ${NEXT_HOP} 40 06 01 00 c0 07 05 0000fde9 01`));
    expect(u.treatAsWithdraw).toBe(false);
    expect(problemsOf(u)).toEqual([
      ['attribute-discard', 6, 5],
      ['attribute-discard', 7, 5],
    ]);
    expect(u.attributes.atomicAggregate).toBeUndefined();
    expect(routesOf(u).announced).toHaveLength(1);
  });

  it('wrong lengths of NEXT_HOP, MED, LOCAL_PREF and COMMUNITIES withdraw (§7.3-7.5, §7.8)', () => {
    const cases: [string, string][] = [
      [`40 03 03 c00002`, ''],
      [NEXT_HOP, '80 04 02 0000'],
      [NEXT_HOP, '40 05 05 0000000000'],
      [NEXT_HOP, 'c0 08 03 fde900'],
      [NEXT_HOP, 'c0 08 00'],
    ];
    for (const [nextHop, bad] of cases) {
      const u = update(announce(`${ORIGIN_IGP} ${AS_PATH_65002} ${nextHop} ${bad}`), { fourOctetAs: true, ibgp: true });
      expect(problemsOf(u)).toEqual([['treat-as-withdraw', bad ? bytes(bad)[1]! : 3, 5]]);
    }
  });

  it('an unrecognized well-known attribute resets the session with the attribute as data (RFC 4271 §6.3)', () => {
    expect(notificationFor(announce(`${ORIGIN_IGP} ${AS_PATH_65002} ${NEXT_HOP} 40 63 02 abcd`))).toEqual([3, 2, '406302abcd']);
  });

  it('an unknown optional transitive attribute is kept with its Partial bit set, to be passed on; a non-transitive one is dropped', () => {
    const u = update(announce(`${ORIGIN_IGP} ${AS_PATH_65002} ${NEXT_HOP} c0 63 02 abcd 80 64 01 ef`));
    expect(u.problems).toEqual([]);
    expect(u.attributes.other).toEqual([{ flags: 0xe0, type: 0x63, value: bytes('abcd') }]);
    const passedOn = encodeUpdate({ withdrawn: [], attributes: u.attributes, nlri: u.nlri }, FOUR);
    expect(hexOf(passedOn)).toContain('e06302abcd');
    expect(hexOf(passedOn)).not.toContain('806401ef');
  });

  it('an attribute running past the attribute field withdraws, and the NLRI is still found by the field length (§4)', () => {
    const u = update(announce(`${ORIGIN_IGP} ${AS_PATH_65002} ${NEXT_HOP} c0 08 08 fde90064`));
    expect(problemsOf(u)).toEqual([['treat-as-withdraw', 8, 5]]);
    expect(routesOf(u).withdrawn).toEqual([parsePrefix('198.51.100.10')]);
    expect(problemsOf(update(announce(`${ORIGIN_IGP} ${AS_PATH_65002} ${NEXT_HOP} c0`)))).toEqual([['treat-as-withdraw', null, 1]]);
  });

  it('lengths that do not fit the message reset the session with Malformed Attribute List (RFC 4271 §6.3)', () => {
    expect(notificationFor(message(2, '0009 0000 20c633640a'))).toEqual([3, 1, '']);
    expect(notificationFor(message(2, '0000 0010 400101 00'))).toEqual([3, 1, '']);
  });

  it('NLRI or withdrawn routes that cannot be read reset the session with Invalid Network Field (§5.3)', () => {
    expect(notificationFor(announce(`${ORIGIN_IGP} ${AS_PATH_65002} ${NEXT_HOP}`, '21 c633640a00'))).toEqual([3, 10, '']);
    expect(notificationFor(announce(`${ORIGIN_IGP} ${AS_PATH_65002} ${NEXT_HOP}`, '20 c63364'))).toEqual([3, 10, '']);
    expect(notificationFor(message(2, '0002 2001 0000'))).toEqual([3, 10, '']);
  });

  it('a malformed MP_REACH_NLRI resets the session: its NLRI cannot be found (§7.11); twice is a Malformed Attribute List (§3g)', () => {
    const nh5 = '80 0e 0b 0002 01 05 2001 0db8 00 00 20 20010db8';
    expect(notificationFor(announce(`${nh5} ${ORIGIN_IGP} ${AS_PATH_65002}`, ''))[0]).toBe(3);
    expect(notificationFor(announce(`${nh5} ${ORIGIN_IGP} ${AS_PATH_65002}`, '')).slice(0, 2)).toEqual([3, 9]);
    const prefix129 = '80 0e 16 0002 01 10 20010db8000000000000000000000001 00 81 20';
    expect(notificationFor(announce(`${prefix129} ${ORIGIN_IGP} ${AS_PATH_65002}`, '')).slice(0, 2)).toEqual([3, 9]);
    const unreach = '80 0f 03 0002 01';
    expect(notificationFor(announce(`${unreach} ${unreach}`, ''))).toEqual([3, 1, '']);
    // a family we do not read is kept as bytes, not an error
    const vpn = update(announce(`80 0e 05 0001 80 00 00 ${ORIGIN_IGP} ${AS_PATH_65002}`, ''));
    expect(vpn.attributes.other?.[0]?.type).toBe(AttributeType.MP_REACH_NLRI);
  });

  it('a missing well-known attribute withdraws what the UPDATE announces (§3d); NEXT_HOP is needed only with IPv4 NLRI', () => {
    expect(problemsOf(update(announce(`${ORIGIN_IGP} ${AS_PATH_65002}`)))).toEqual([['treat-as-withdraw', null, 3]]);
    expect(update(ipv6AnnounceWithout(NEXT_HOP)).problems).toEqual([]);
    // an UPDATE that only withdraws needs no attributes
    expect(update(message(2, '0005 20c633640a 0000')).problems).toEqual([]);
  });

  it('a repeated attribute: the first is kept, the others discarded (§3g)', () => {
    const u = update(announce(`${ORIGIN_IGP} 40 01 01 02 ${AS_PATH_65002} ${NEXT_HOP}`));
    expect(u.attributes.origin).toBe(0);
    expect(problemsOf(u)).toEqual([['attribute-discard', 1, 1]]);
  });

  it('AS_PATH: a zero-length or unknown segment, or an external peer whose AS is not first, withdraws (§7.2)', () => {
    expect(problemsOf(update(announce(`${ORIGIN_IGP} 40 02 02 02 00 ${NEXT_HOP}`)))).toEqual([['treat-as-withdraw', 2, 11]]);
    expect(problemsOf(update(announce(`${ORIGIN_IGP} 40 02 06 07 01 0000fde9 ${NEXT_HOP}`)))).toEqual([['treat-as-withdraw', 2, 11]]);
    expect(problemsOf(update(announce(`${ORIGIN_IGP} 40 02 05 02 01 0000fd ${NEXT_HOP}`)))).toEqual([['treat-as-withdraw', 2, 11]]);
    expect(problemsOf(update(announce(`${ORIGIN_IGP} ${AS_PATH_65002} ${NEXT_HOP}`), EBGP_FROM_65002))).toEqual([['treat-as-withdraw', 2, 11]]);
    expect(update(announce(`${ORIGIN_IGP} ${EBGP_PATH} ${NEXT_HOP}`), EBGP_FROM_65002).problems).toEqual([]);
  });

  it('LOCAL_PREF from an external peer is discarded (§7.5)', () => {
    const u = update(announce(`${ORIGIN_IGP} ${EBGP_PATH} ${NEXT_HOP} 40 05 04 00000064`), EBGP_FROM_65002);
    expect(u.attributes.localPref).toBeUndefined();
    expect(problemsOf(u)).toEqual([['attribute-discard', 5, 4]]);
    expect(u.treatAsWithdraw).toBe(false);
  });
});

function ipv6AnnounceWithout(_nextHop: string): Uint8Array {
  return encodeUpdate(
    {
      withdrawn: [],
      attributes: { mpReach: { afi: Afi.IPV6, safi: 1, nextHops: ['2001:db8::1'], nlri: [parsePrefix('2001:db8:100::10')] }, origin: 0, asPath: [] },
      nlri: [],
    },
    FOUR,
  );
}

describe('prefixes and communities as configured', () => {
  it('reads prefixes in canonical form, host bits cleared, and refuses what is none', () => {
    expect(parsePrefix('2001:DB8:0:0::1/64')).toEqual({ afi: 2, address: '2001:db8::', length: 64 });
    expect(parsePrefix('198.51.100.10')).toEqual({ afi: 1, address: '198.51.100.10', length: 32 });
    expect(parsePrefix('10.1.2.3/8').address).toBe('10.0.0.0');
    for (const bad of ['10.0.0.1/33', '10.0.0.1/', '2001:db8::/129', 'orders', '10.0.0.1/-1', '10.0.0.1/1e1'])
      expect(() => parsePrefix(bad)).toThrow(/not a prefix/);
  });

  it('reads ASN:VALUE communities and refuses values past 16 bits', () => {
    expect(parseCommunity('65535:0')).toBe(0xffff0000);
    expect(() => parseCommunity('65536:1')).toThrow(/not a community/);
    expect(() => parseCommunity('1:2:3')).toThrow(/not a community/);
  });
});
