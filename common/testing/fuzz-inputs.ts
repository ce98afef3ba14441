// Input generators for fuzz targets (fuzz-runner.ts): a seed corpus mutated the way coverage-guided
// fuzzers mutate (bit flips, interesting bytes, inserted, deleted, repeated and spliced ranges,
// truncation), so structured formats are explored near valid messages rather than only as noise.
import type fc from 'fast-check';
import type { FuzzCheck } from './fuzz-runner.js';

const INTERESTING = [0x00, 0x01, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xfe, 0xff];

type Mutation = (input: Uint8Array, random: () => number, donor: Uint8Array) => Uint8Array;

const at = (length: number, random: () => number) => Math.floor(random() * length);

const MUTATIONS: Mutation[] = [
  // flip a bit
  (input, random) => {
    if (input.length === 0) return input;
    const out = input.slice();
    out[at(out.length, random)]! ^= 1 << at(8, random);
    return out;
  },
  // an interesting byte
  (input, random) => {
    if (input.length === 0) return Uint8Array.of(INTERESTING[at(INTERESTING.length, random)]!);
    const out = input.slice();
    out[at(out.length, random)] = INTERESTING[at(INTERESTING.length, random)]!;
    return out;
  },
  // an interesting 16-bit value (lengths, counts, pointers)
  (input, random) => {
    if (input.length < 2) return input;
    const out = input.slice();
    const i = at(out.length - 1, random);
    const value = [0, 1, 0x7fff, 0x8000, 0xffff, 0xc00c, 0xc000 | i, out.length, out.length + 1][at(9, random)]!;
    out[i] = (value >> 8) & 0xff;
    out[i + 1] = value & 0xff;
    return out;
  },
  // insert random bytes
  (input, random) => {
    const i = at(input.length + 1, random);
    const extra = Uint8Array.from({ length: 1 + at(16, random) }, () => at(256, random));
    return concat(input.subarray(0, i), extra, input.subarray(i));
  },
  // delete a range
  (input, random) => {
    if (input.length === 0) return input;
    const i = at(input.length, random);
    return concat(input.subarray(0, i), input.subarray(i + 1 + at(Math.min(32, input.length - i), random)));
  },
  // repeat a range
  (input, random) => {
    if (input.length === 0) return input;
    const i = at(input.length, random);
    const piece = input.subarray(i, i + 1 + at(32, random));
    return concat(input.subarray(0, i), piece, piece, input.subarray(i + piece.length));
  },
  // truncate
  (input, random) => input.subarray(0, at(input.length + 1, random)),
  // splice the tail of another input
  (input, random, donor) => concat(input.subarray(0, at(input.length + 1, random)), donor.subarray(at(donor.length + 1, random))),
];

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Inputs of `base` with one to eight mutations each (the donor of a splice comes from `base` too). */
export function mutated(check: FuzzCheck, base: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return check.tuple(base, base, check.integer({ min: 1, max: 8 }), check.integer()).map(([input, donor, count, seed]) => {
    let state = seed | 0;
    const random = () => {
      // mulberry32 from the generated seed: the same tuple always gives the same mutations.
      state = (state + 0x6d2b79f5) | 0;
      let t = Math.imul(state ^ (state >>> 15), 1 | state);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    let out = input;
    for (let i = 0; i < count; i++) out = MUTATIONS[at(MUTATIONS.length, random)]!(out, random, donor);
    return out;
  });
}

/**
 * The usual mix: mutated seeds (the corpus and crashers), structured inputs as generated and
 * mutated, and plain noise.
 */
export function fuzzInputs(check: FuzzCheck, seeds: readonly Uint8Array[], structured?: fc.Arbitrary<Uint8Array>, maxNoise = 512): fc.Arbitrary<Uint8Array> {
  const noise = check.uint8Array({ maxLength: maxNoise });
  const choices: fc.Arbitrary<Uint8Array>[] = [noise];
  if (seeds.length > 0) choices.push(mutated(check, check.constantFrom(...seeds)), mutated(check, check.constantFrom(...seeds)));
  if (structured) choices.push(structured, mutated(check, structured));
  return check.oneof(...choices);
}

/** Text as bytes (UTF-8), for targets whose input is text: JSON bodies, paths, headers. */
export const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);
