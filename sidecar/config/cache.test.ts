import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigCache, type CacheWriteStep } from './cache.js';

const files = (entries: Record<string, string>) => new Map(Object.entries(entries).map(([k, v]) => [k, Buffer.from(v)]));
const text = (m: Map<string, Buffer>) => Object.fromEntries([...m].map(([k, v]) => [k, v.toString()]));

describe('the configuration cache', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'flb-config-cache-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('has nothing at first, then the last version saved; unchanged files are not written again', async () => {
    const cache = new ConfigCache(dir);
    expect(await cache.load()).toBeUndefined();
    await cache.save('1', files({ 'mesh.json': 'm1', 'services/a.json': 'a1', 'services/b.json': 'b1' }));
    expect(readdirSync(join(dir, 'blobs'))).toHaveLength(3);
    await cache.save('2', files({ 'mesh.json': 'm1', 'services/a.json': 'a2', 'services/c.json': 'c1' }));
    // a1 and b1 are no longer referenced and go; m1 stays as it was.
    expect(readdirSync(join(dir, 'blobs'))).toHaveLength(3);
    const loaded = await new ConfigCache(dir).load();
    expect(loaded!.version).toBe('2');
    expect(text(loaded!.files)).toEqual({ 'mesh.json': 'm1', 'services/a.json': 'a2', 'services/c.json': 'c1' });
  });

  it.each<CacheWriteStep>(['blobs-written', 'manifest-temp-written'])('a save that dies after %s leaves the previous version whole', async (step) => {
    await new ConfigCache(dir).save('1', files({ 'mesh.json': 'm1', 'services/a.json': 'a1' }));
    await expect(new ConfigCache(dir, { crashAfter: step }).save('2', files({ 'mesh.json': 'm2', 'services/a.json': 'a2' }))).rejects.toThrow(
      'simulated crash',
    );
    const restarted = new ConfigCache(dir);
    const loaded = await restarted.load();
    expect(loaded!.version).toBe('1');
    expect(text(loaded!.files)).toEqual({ 'mesh.json': 'm1', 'services/a.json': 'a1' });
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    await restarted.save('3', files({ 'mesh.json': 'm3' }));
    expect(text((await new ConfigCache(dir).load())!.files)).toEqual({ 'mesh.json': 'm3' });
    expect(readdirSync(join(dir, 'blobs'))).toHaveLength(1);
  });

  it('refuses a damaged cache instead of running part of it', async () => {
    await new ConfigCache(dir).save('1', files({ 'mesh.json': 'm1' }));
    const [blob] = readdirSync(join(dir, 'blobs'));
    writeFileSync(join(dir, 'blobs', blob!), 'torn');
    await expect(new ConfigCache(dir).load()).rejects.toThrow(/is damaged: mesh.json/);
  });
});
