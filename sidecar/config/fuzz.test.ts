import { describe, expect, it } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { fuzz } from '../../common/testing/fuzz.js';
import { buildState, sourceFiles } from './state.js';
import { codebase, meshDoc, serviceDoc, sidecarDoc } from './testing/fixtures.js';
import { fuzzTargets, outcomeOf } from './testing/fuzz-targets.js';

describe('fuzzing the sidecar configuration files', () => {
  it('accepts any bytes as mesh.json, sidecar.json or a service file, or refuses them naming the file; never throws or hangs; a refusal keeps the previous state', async () => {
    // 100,000 generated files (mostly JSON documents with mutated values, some byte mutations and
    // noise) after the seed corpus. Each is built into a state over a realistic one and checked
    // (some 200 µs: validation alone is over 100), so 22-27 s on this 2-core machine when it is
    // quiet, and up to 80 s measured while a benchmark held both cores: hence the budget.
    const report = await fuzz({ module: 'sidecar/config/testing/fuzz-targets.ts', target: 'config-file', runs: 100_000, budgetMs: 120_000 });
    console.log(`fuzz config-file: ${report.runs} generated + ${report.replayed} corpus inputs in ${report.ms} ms (seed ${report.seed})`);
    expect(report.runs).toBe(100_000);
    expect(report.replayed).toBeGreaterThanOrEqual(9);
  }, 150_000);

  it('generates inputs that each file accepts and refuses', () => {
    const corpus = join(dirname(fileURLToPath(import.meta.url)), 'testing/fuzz/corpus/config-file');
    const seeds = readdirSync(corpus).map((name) => new Uint8Array(readFileSync(join(corpus, name))));
    const seen: Record<string, number> = {};
    for (const input of fc.sample(fuzzTargets['config-file']!.inputs(fc, seeds), { numRuns: 3000, seed: 1 })) {
      const { file, accepted } = outcomeOf(input);
      const key = `${file} ${accepted ? 'accepted' : 'refused'}`;
      seen[key] = (seen[key] ?? 0) + 1;
    }
    console.log('3,000 generated config-file inputs:', seen);
    // Each file accepted and refused, each in at least 3 % of the inputs.
    const rare = ['mesh.json', 'sidecar.json', 'service']
      .flatMap((file) => ['accepted', 'refused'].map((outcome) => `${file} ${outcome}`))
      .filter((key) => (seen[key] ?? 0) < 90);
    expect(rare).toEqual([]);
  });
});

describe('what fuzzing the configuration files found', () => {
  it('refuses a mesh.json that renames the mesh without a sidecar.json that follows, so the state in force is one a restart rebuilds', () => {
    const before = buildState(codebase([serviceDoc('a')]), undefined, '1', { sidecarId: 'pod.shop.w' }).state!;
    const renamed = codebase([serviceDoc('a')], meshDoc({ name: 'grpc' }));
    const { state, rejected } = buildState(renamed, before, '2', { sidecarId: 'pod.shop.w' });
    // The sidecar.json in force names mesh "flb": so must the mesh.json in force.
    expect(state!.mesh.name).toBe(state!.sidecar.mesh);
    expect(state!.mesh).toBe(before.mesh);
    expect(rejected).toEqual([
      { path: 'mesh.json', error: 'invalid mesh.json: name: is "grpc", but sidecar.json names "flb" (a sidecar belongs to one mesh)' },
    ]);
    // What the cache would keep builds a state after a restart (before: none, the sidecar was not ready).
    const restarted = buildState(sourceFiles(state!)!, undefined, 'restart', { sidecarId: 'pod.shop.w' });
    expect(restarted.rejected).toEqual([]);
    expect(restarted.state?.mesh.name).toBe('flb');

    // Renamed together: both go in.
    const both = buildState(codebase([serviceDoc('a')], meshDoc({ name: 'grpc' }), sidecarDoc('pod.shop.w', { mesh: 'grpc' })), before, '3', {
      sidecarId: 'pod.shop.w',
    });
    expect(both.rejected).toEqual([]);
    expect([both.state!.mesh.name, both.state!.sidecar.mesh]).toEqual(['grpc', 'grpc']);
  });

  it('refuses a file with thousands of problems in an error of a few lines, not one line per problem', () => {
    const before = buildState(codebase([serviceDoc('a')]), undefined, '1').state!;
    // 25 KB of mesh.json made a 237 KB error, logged and sent to the repo in every status report.
    const files = codebase([serviceDoc('a')], meshDoc({ vipRanges: Array.from({ length: 3000 }, (_, i) => `not-a-cidr-${i}`) }));
    const { state, rejected } = buildState(files, before, '2');
    expect(state!.mesh).toBe(before.mesh);
    expect(rejected).toHaveLength(1);
    expect(rejected[0]!.error).toBe(
      'invalid mesh.json: ' +
        Array.from({ length: 10 }, (_, i) => `vipRanges[${i}]: must be a CIDR such as 10.0.0.0/8 or fd00::/8`).join('; ') +
        '; and 2990 more problems',
    );
    const huge = codebase([serviceDoc('a', { extra: { labels: { ['k'.repeat(100_000)]: 7 } } })]);
    const labelled = buildState(huge, before, '3').rejected;
    expect(labelled[0]!.error.length).toBeLessThan(1000);
  });
});
