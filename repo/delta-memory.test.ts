import { describe, expect, it } from '@jest/globals';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Repo } from './repo.js';
import { MemoryStore } from './testing/memory-store.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const retainedHeap = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};
const MiB = 1024 * 1024;

/**
 * What the repo keeps to compute pushed deltas stays bounded when a big publish of the base meets
 * many derived codebases: a catalog rebuild changing 5,000 services, 800 sidecars asking.
 */
describe('the memory deltas cost', () => {
  it('does not keep a copy of every changed path per derived codebase', async () => {
    const repo = await new Repo(new MemoryStore()).load();
    const publish = (codebase: string, files: Record<string, string>, version: string) =>
      repo.writeFiles(codebase, new Map(Object.entries(files).map(([p, c]) => [p, Buffer.from(c)])), { version });
    const services = (v: number) => Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`/services/svc-${i}.json`, `{"i":${i},"v":${v}}`]));
    await repo.create('/flb/mesh', { main: '/mesh.json' });
    await publish('/flb/mesh', services(1), '1');
    const sidecars = Array.from({ length: 800 }, (_, i) => `/flb/sidecars/pod.shop.s${i}`);
    for (const name of sidecars) {
      await repo.create(name, { base: '/flb/mesh' });
      await publish(name, { '/sidecar.json': '{"v":1}' }, '1');
    }
    await publish('/flb/mesh', services(2), '2');
    // Half the sidecars changed too: their delta is their own change and the base's.
    for (const name of sidecars.slice(0, 400)) await publish(name, { '/sidecar.json': '{"v":2}' }, '2');

    const before = retainedHeap();
    for (const name of sidecars) expect(repo.delta(repo.get(name)!, '1+1')!.size).toBe(sidecars.indexOf(name) < 400 ? 5001 : 5000);
    const grown = retainedHeap() - before;
    console.info(`deltas of a 5,000-file base publish for 800 derived codebases: ${(grown / MiB).toFixed(1)} MiB retained`);
    // Before: 800 arrays of 5,000 paths, over 32 MiB.
    expect(grown).toBeLessThan(12 * MiB);
  }, 60_000);
});
