import { describe, expect, it } from '@jest/globals';
import { buildState, sourceFiles } from './state.js';
import { codebase, meshDoc, serviceDoc, sidecarDoc } from './testing/fixtures.js';

describe('what fuzzing the configuration files found', () => {
  it('refuses a mesh.json that renames the mesh without a sidecar.json that follows, so the state in force is one a restart rebuilds', () => {
    const before = buildState(codebase([serviceDoc('a')]), undefined, '1', { sidecarId: 'pod.shop.w' }).state!;
    const renamed = codebase([serviceDoc('a')], meshDoc({ name: 'grpc' }));
    const { state, rejected } = buildState(renamed, before, '2', { sidecarId: 'pod.shop.w' });
    // The sidecar.json in force names mesh "flb": so must the mesh.json in force.
    expect(state!.mesh.name).toBe(state!.sidecar.mesh);
    expect(state!.mesh).toBe(before.mesh);
    expect(rejected).toEqual([{ path: 'mesh.json', error: 'invalid mesh.json: name: is "grpc", but sidecar.json names "flb" (a sidecar belongs to one mesh)' }]);
    // What the cache would keep builds a state after a restart (before: none, the sidecar was not ready).
    const restarted = buildState(sourceFiles(state!)!, undefined, 'restart', { sidecarId: 'pod.shop.w' });
    expect(restarted.rejected).toEqual([]);
    expect(restarted.state?.mesh.name).toBe('flb');

    // Renamed together: both go in.
    const both = buildState(codebase([serviceDoc('a')], meshDoc({ name: 'grpc' }), sidecarDoc('pod.shop.w', { mesh: 'grpc' })), before, '3', { sidecarId: 'pod.shop.w' });
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
