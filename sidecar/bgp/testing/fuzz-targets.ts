// Fuzz target of the BGP codec (run by sidecar/bgp/wire/fuzz.test.ts through common/testing/fuzz.ts):
//  - peer-bytes: whatever a peer sends, as one TCP byte stream, through the Framer and
//    decodeMessage, read as from an external 4-octet peer and from an internal 2-octet one. The
//    decoder may only return a message or throw BgpNotificationError with a code RFC 4271 defines;
//    an UPDATE or OPEN it accepts without complaint must survive being encoded again and decoded
//    to the same thing (what the speaker passes on is what it read).
// Seeds (fuzz/corpus/peer-bytes/) are the messages captured from BIRD and GoBGP
// (capture-routers.ts), with a pool of one to three messages of every type our encoders write.
import type fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import { fuzzInputs } from '../../../common/testing/fuzz-inputs.js';
import type { FuzzCheck, FuzzTarget } from '../../../common/testing/fuzz-runner.js';
import {
  Afi,
  AsPathSegmentType,
  BgpNotificationError,
  decodeMessage,
  encodeKeepalive,
  encodeNotification,
  encodeOpen,
  encodeRouteRefresh,
  encodeUpdate,
  Framer,
  maxLength,
  routesOf,
  type AttributeContext,
  type Capability,
  type PathAttributes,
  type Prefix,
} from '../wire/index.js';

const CONTEXTS: AttributeContext[] = [
  { fourOctetAs: true, ibgp: false, peerAs: 65000 },
  { fourOctetAs: false, ibgp: true },
];

const json = (value: unknown) => JSON.stringify(value, (_key, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v));

function checkPrefix(prefix: Prefix): void {
  if (prefix.length > maxLength(prefix.afi)) throw new Error(`decoded a prefix longer than its family allows: ${json(prefix)}`);
}

function decodeStream(input: Uint8Array, context: AttributeContext): void {
  let frames;
  try {
    frames = new Framer().push(input);
  } catch (error) {
    if (error instanceof BgpNotificationError && error.code === 1) return;
    throw error;
  }
  for (const frame of frames) {
    let message;
    try {
      message = decodeMessage(frame, context);
    } catch (error) {
      if (error instanceof BgpNotificationError && error.code >= 1 && error.code <= 7 && error.subcode >= 0 && error.subcode <= 255) return;
      throw error;
    }
    if (message.type === 'update') {
      const { announced, withdrawn } = routesOf(message);
      announced.forEach(checkPrefix);
      withdrawn.forEach(checkPrefix);
      if (message.problems.length > 0) continue;
      const again = decodeMessage(new Framer().push(encodeUpdate(message, context))[0]!, context);
      if (!isDeepStrictEqual(again, message)) throw new Error(`an UPDATE read differently once encoded again:\n${json(message)}\n${json(again)}`);
    } else if (message.type === 'open') {
      let wire;
      try {
        wire = encodeOpen(message);
      } catch (error) {
        // RFC 9072's long parameters are read but not written: we never send so many capabilities.
        if (error instanceof RangeError) continue;
        throw error;
      }
      const again = decodeMessage(new Framer().push(wire)[0]!, context);
      if (!isDeepStrictEqual(again, message)) throw new Error(`an OPEN read differently once encoded again:\n${json(message)}\n${json(again)}`);
    }
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function prefixes(check: FuzzCheck, afi: 1 | 2): fc.Arbitrary<Prefix[]> {
  const size = afi === Afi.IPV4 ? 4 : 16;
  return check.array(
    check.tuple(check.uint8Array({ minLength: size, maxLength: size }), check.integer({ min: 0, max: maxLength(afi) })).map(([bytes, length]) => {
      const address =
        afi === Afi.IPV4 ? [...bytes].join('.') : Array.from({ length: 8 }, (_, i) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16)).join(':');
      return { afi, address, length };
    }),
    { maxLength: 6 },
  );
}

/** Valid messages of every type, as the speaker's encoders write them (one to three per input). */
function messages(check: FuzzCheck): fc.Arbitrary<Uint8Array> {
  const as = check.oneof(check.integer({ min: 1, max: 65535 }), check.integer({ min: 1, max: 0xffffffff }));
  const attributes: fc.Arbitrary<PathAttributes> = check.record(
    {
      origin: check.constantFrom(0 as const, 1 as const, 2 as const),
      asPath: check.array(
        check.record({
          type: check.constantFrom(AsPathSegmentType.AS_SEQUENCE, AsPathSegmentType.AS_SET),
          asns: check.array(as, { minLength: 1, maxLength: 4 }),
        }),
        { maxLength: 2 },
      ),
      nextHop: check.ipV4(),
      med: check.nat(),
      localPref: check.nat(),
      communities: check.array(check.integer({ min: 0, max: 0xffffffff }), { minLength: 1, maxLength: 8 }),
    },
    { requiredKeys: [] },
  );
  // Canonical text for the prefixes: encode, then let the decoder name them.
  const update = check
    .tuple(prefixes(check, 1), attributes, prefixes(check, 1), prefixes(check, 2), prefixes(check, 2), check.boolean())
    .map(([withdrawn, attrs, nlri, reach, unreach, four]) =>
      encodeUpdate(
        {
          withdrawn: withdrawn.map(canonical),
          attributes: {
            ...attrs,
            ...(reach.length ? { mpReach: { afi: Afi.IPV6, safi: 1, nextHops: ['2001:db8::1'], nlri: reach.map(canonical) } } : {}),
            ...(unreach.length ? { mpUnreach: { afi: Afi.IPV6, safi: 1, withdrawn: unreach.map(canonical) } } : {}),
          },
          nlri: nlri.map(canonical),
        },
        { fourOctetAs: four },
      ),
    );
  const capability: fc.Arbitrary<Capability> = check.oneof(
    check.record({ kind: check.constant('multiprotocol' as const), afi: check.constantFrom(1, 2), safi: check.constantFrom(1, 128) }),
    check.constant({ kind: 'route-refresh' as const }),
    check.record({ kind: check.constant('four-octet-as' as const), as }),
    check.record({ kind: check.constant('unknown' as const), code: check.integer({ min: 66, max: 255 }), value: check.uint8Array({ maxLength: 8 }) }),
  );
  const open = check
    .tuple(as, check.constantFrom(0, 3, 90, 65535), check.ipV4(), check.array(capability, { maxLength: 6 }))
    .map(([myAs, holdTimeSeconds, bgpId, capabilities]) => encodeOpen({ myAs, holdTimeSeconds, bgpId: bgpId === '0.0.0.0' ? '0.0.0.1' : bgpId, capabilities }));
  const other = check.oneof(
    check.constant(encodeKeepalive()),
    check
      .tuple(check.integer({ min: 1, max: 7 }), check.integer({ min: 0, max: 11 }), check.uint8Array({ maxLength: 16 }))
      .map(([code, subcode, data]) => encodeNotification(code, subcode, data)),
    check.tuple(check.constantFrom(1, 2), check.constantFrom(1, 128)).map(([afi, safi]) => encodeRouteRefresh(afi, safi)),
  );
  return check.array(check.oneof(update, update, open, other), { minLength: 1, maxLength: 3 }).map(concat);
}

/** A generated prefix with its host bits cleared, as the encoder expects. */
function canonical(prefix: Prefix): Prefix {
  const bytes =
    prefix.afi === Afi.IPV4 ? prefix.address.split('.').map(Number) : prefix.address.split(':').flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff]);
  for (let bit = prefix.length; bit < bytes.length * 8; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  const address =
    prefix.afi === Afi.IPV4 ? bytes.join('.') : Array.from({ length: 8 }, (_, i) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16)).join(':');
  return { ...prefix, address };
}

export const fuzzTargets: Record<string, FuzzTarget> = {
  'peer-bytes': {
    run(input) {
      for (const context of CONTEXTS) decodeStream(input, context);
    },
    // Generating messages through fast-check costs more than decoding them: a pool made once
    // (the same every run) is mutated along with the captured seeds.
    inputs: (check, seeds) => fuzzInputs(check, [...seeds, ...check.sample(messages(check), { numRuns: 400, seed: 19 })], undefined, 256),
  },
};
