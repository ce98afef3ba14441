/*
 * The repo's request handler under 100,000 generated inputs per target (repo/testing/fuzz-targets.ts):
 * request paths, the headers it reads, and request bodies. Each runs in a worker the harness stops
 * on a hang; a failing input is kept under repo/testing/fuzz/crashers/ and replayed every run.
 */
import { describe, expect, it } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { fuzz } from '../common/testing/fuzz.js';
import { answered, fuzzTargets } from './testing/fuzz-targets.js';

describe('fuzzing the repo', () => {
  it.each(['paths', 'headers', 'bodies'])(
    'answers 100,000 generated %s well',
    async (target) => {
      // A few seconds each on this 2-core machine (see the report the test prints); the budget leaves
      // room for a machine busy with other suites.
      const report = await fuzz({ module: 'repo/testing/fuzz-targets.ts', target, runs: 100_000, budgetMs: 60_000 });
      console.log(`fuzz repo ${target}: ${report.runs} generated + ${report.replayed} corpus inputs in ${report.ms} ms (seed ${report.seed})`);
      expect(report.runs).toBe(100_000);
      expect(report.replayed).toBeGreaterThanOrEqual(8);
    },
    90_000,
  );

  // Which answers each target's inputs reach: a fuzzer whose inputs were all refused at the door
  // would test nothing behind it.
  it.each([
    ['paths', [200, 201, 204, 400, 403, 404, 405]],
    ['headers', [200, 201, 304, 401, 403, 413]],
    ['bodies', [201, 204, 400, 404]],
  ])('generates %s that reach every kind of answer', async (target, statuses) => {
    const corpus = join(dirname(fileURLToPath(import.meta.url)), 'testing/fuzz/corpus', target as string);
    const seeds = readdirSync(corpus).map((name) => new Uint8Array(readFileSync(join(corpus, name))));
    const fuzzTarget = fuzzTargets[target as string]!;
    for (const input of fc.sample(fuzzTarget.inputs(fc, seeds), { numRuns: 4000, seed: 3 })) await fuzzTarget.run(input);
    const seen = answered[target as string]!;
    console.log(`4,000 generated ${target as string} inputs, answers by status:`, seen);
    // Each in at least 0.25 % of the inputs.
    expect((statuses as number[]).filter((status) => (seen[status] ?? 0) < 10)).toEqual([]);
  });
});
