// Targets for the harness's own test (fuzz.test.ts): one that is fine, one that throws on an input,
// one that never returns on one.
import { fuzzInputs } from './fuzz-inputs.js';
import type { FuzzTarget } from './fuzz-runner.js';

const hasMarker = (input: Uint8Array) => input.length >= 2 && input[0] === 0xde && input[1] === 0xad;

export const fuzzTargets: Record<string, FuzzTarget> = {
  sound: { run: () => undefined, inputs: (fc, seeds) => fuzzInputs(fc, seeds) },
  throws: {
    run: (input) => {
      if (hasMarker(input)) throw new Error('marker found');
    },
    inputs: (fc) => fc.constant(Uint8Array.of(0xde, 0xad, 0x01)),
  },
  hangs: {
    run: (input) => {
      // eslint-disable-next-line no-empty
      if (hasMarker(input)) for (;;) {}
    },
    inputs: (fc) => fc.uint8Array({ maxLength: 4 }).map((bytes) => (bytes.length === 3 ? Uint8Array.of(0xde, 0xad, 0x02) : bytes)),
  },
};
