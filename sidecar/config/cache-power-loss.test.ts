/*
 * The configuration cache under power loss: saves run on a recording file system, and at every
 * crash point each disk a power cut could leave (common/testing/power-loss.ts) is loaded. The last
 * configuration saved must load whole (or the one being saved, whole); never an error, a mix or
 * nothing, and the cache must take the next save.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { materialise, PowerLossRecorder, type CrashPoint, type RecorderOptions, type SyncKind } from '../../common/testing/power-loss.js';
import { ConfigCache } from './cache.js';

type Files = Record<string, string>;
interface Tag {
  step: string;
  before: { version: string; files: Files } | undefined;
  after: { version: string; files: Files } | undefined;
}

const SCRATCH = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
const service = (id: string, v: number) => JSON.stringify({ id, v });
const SAVES: { version: string; files: Files }[] = [
  { version: '1', files: { 'mesh.json': 'm1', 'sidecar.json': 's1', 'services/a.json': service('a', 1), 'services/b.json': service('b', 1) } },
  // One service changes: one blob and the manifest.
  { version: '2', files: { 'mesh.json': 'm1', 'sidecar.json': 's1', 'services/a.json': service('a', 2), 'services/b.json': service('b', 1) } },
  // One goes, one comes: an orphan blob is removed after the switch.
  { version: '3', files: { 'mesh.json': 'm1', 'sidecar.json': 's1', 'services/a.json': service('a', 2), 'services/c.json': service('c', 1) } },
  // Back to content saved before (its blob was removed, so it is written again).
  { version: '4', files: { 'mesh.json': 'm2', 'sidecar.json': 's1', 'services/a.json': service('a', 1) } },
];

const toMap = (files: Files) => new Map(Object.entries(files).map(([k, v]) => [k, Buffer.from(v)]));
const fromMap = (files: Map<string, Buffer>) => Object.fromEntries([...files].map(([k, v]) => [k, v.toString('utf8')]).sort(([a], [b]) => (a! < b! ? -1 : 1)));
const same = (a: Tag['before'], b: Tag['before']) =>
  JSON.stringify(a && { v: a.version, f: fromMap(toMap(a.files)) }) === JSON.stringify(b && { v: b.version, f: fromMap(toMap(b.files)) });

async function record(skipSync?: RecorderOptions['skipSync']): Promise<{ points: CrashPoint<Tag>[]; syncs: { kind: SyncKind; path: string }[] }> {
  const root = mkdtempSync(join(SCRATCH, 'flb-cache-power-loss-'));
  try {
    const fs = new PowerLossRecorder<Tag>(root, { step: 'start', before: undefined, after: undefined }, skipSync ? { skipSync } : {});
    const cache = new ConfigCache(root, {}, fs);
    let acknowledged: Tag['before'];
    for (const save of SAVES) {
      fs.tag = { step: `save ${save.version}`, before: acknowledged, after: save };
      await cache.save(save.version, toMap(save.files));
      acknowledged = save;
    }
    return { points: fs.crashPoints, syncs: fs.syncs };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

async function check(points: CrashPoint<Tag>[], scratch: string, firstOnly = false): Promise<string[]> {
  const problems: string[] = [];
  for (const point of points) {
    if (firstOnly && problems.length > 0) break;
    for (const disk of point.images) {
      const where = `crash after #${point.index} (${point.operation}) during "${point.tag.step}", ${disk.variant}`;
      const dir = join(scratch, `${point.index}-${disk.variant}`);
      materialise(disk, dir);
      try {
        const loaded = await new ConfigCache(dir).load();
        const got = loaded && { version: loaded.version, files: fromMap(loaded.files) };
        if (!same(got, point.tag.before) && !same(got, point.tag.after)) {
          problems.push(`${where}: loads ${JSON.stringify(got)}, but the last save acknowledged was ${JSON.stringify(point.tag.before)}`);
          continue;
        }
        const cache = new ConfigCache(dir);
        await cache.save('next', toMap({ 'mesh.json': 'after recovery' }));
        const next = await new ConfigCache(dir).load();
        if (next?.version !== 'next' || next.files.get('mesh.json')?.toString() !== 'after recovery')
          problems.push(`${where}: a save after recovery loads as ${JSON.stringify(next && fromMap(next.files))}`);
      } catch (error) {
        problems.push(`${where}: ${(error as Error).message}`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
  return problems;
}

const siteOf = (kind: SyncKind, path: string) => `${kind} ${kind === 'syncDir' ? path || '.' : path.replace(/[^/]*\.tmp$/, '*.tmp')}`;

describe('the configuration cache under power loss', () => {
  let scratch: string;
  let clean: Awaited<ReturnType<typeof record>>;
  beforeAll(() => {
    scratch = mkdtempSync(join(SCRATCH, 'flb-cache-power-loss-check-'));
  });
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  it('loads the last configuration saved, whole, at every crash point of a series of saves', async () => {
    const started = performance.now();
    clean = await record();
    const problems = await check(clean.points, scratch);
    const images = clean.points.reduce((n, p) => n + p.images.length, 0);
    console.info(
      `config cache power loss: ${clean.points.length} crash points, ${images} disk images checked in ${Math.round(performance.now() - started)} ms`,
    );
    expect(problems).toEqual([]);
    expect(clean.points.filter((p) => p.operation.startsWith('unlink blobs/')).length).toBeGreaterThanOrEqual(2);
    expect(clean.points.length).toBeGreaterThan(60);
  });

  it('notices when a blob is renamed into place unsynced: the manifest names a blob that is empty', async () => {
    const problems = await check((await record((kind, path) => kind === 'sync' && path.startsWith('blobs/'))).points, scratch);
    expect(problems.join('\n')).toMatch(/is damaged: .* is missing or corrupt/);
  });

  it('notices any one fsync taken out, whichever it is', async () => {
    const sites = [...new Set(clean.syncs.map((s) => siteOf(s.kind, s.path)))].sort();
    expect(sites).toEqual(['sync *.tmp', 'sync blobs/*.tmp', 'syncDir .', 'syncDir blobs']);
    const missed: string[] = [];
    for (const site of sites) {
      const { points } = await record((kind, path) => siteOf(kind, path) === site);
      if ((await check(points, scratch, true)).length === 0) missed.push(site);
    }
    console.info(`config cache: ${sites.length} fsync sites, each taken out in turn: ${sites.length - missed.length} caught (${sites.join('; ')})`);
    expect(missed).toEqual([]);
  });
});
