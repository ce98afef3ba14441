/*
 * The disk store's record journal: a reload sees exactly what was acknowledged, whatever mix of
 * appends and compactions wrote it, and a torn last line is ignored and cut off. Crashes inside
 * the write path (kill -9 after each step) are in test-e2e/repo-crash.test.ts.
 */
import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiskStore, type JournalLimits } from './disk.js';
import type { CodebaseRecord } from './store.js';

const NAME = '/flb/mesh';
const record = (files: Record<string, string>, version: string, main = '/main.json'): CodebaseRecord => ({ name: NAME, version, main, files, edits: {} });
const sha = (n: number) => n.toString(16).padStart(64, '0');

describe('the disk store journal', () => {
  let dir: string;
  const open = async (limits?: JournalLimits) => {
    const store = await new DiskStore(dir, undefined, limits).init();
    return { store, loaded: await store.loadAll() };
  };
  const recordsDir = () => join(dir, 'codebases');
  const journals = () => readdirSync(recordsDir()).filter((f) => f.endsWith('.journal'));
  const snapshot = () => JSON.parse(readFileSync(join(recordsDir(), `${encodeURIComponent(NAME)}.json`), 'utf8')) as { version: string; journal?: string };
  const published = (r: CodebaseRecord | undefined) => r && { version: r.version, main: r.main, files: r.files };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'flb-disk-test-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('loads what was written, through appends and compactions, with and without the changed paths', async () => {
    const { store } = await open({ minBytes: 600, maxEntries: 7 });
    let files: Record<string, string> = {};
    let main = '/main.json';
    let random = 42;
    const next = (n: number) => ((random = (random * 1103515245 + 12345) % 2 ** 31), random % n);
    await store.putRecord(record(files, '0'));
    const generations = new Set([snapshot().journal]);
    for (let v = 1; v <= 120; v++) {
      files = { ...files };
      const changed: string[] = [];
      for (let k = next(4); k >= 0; k--) {
        const path = `/f${next(12)}.json`;
        if (next(3) === 0) delete files[path];
        else files[path] = sha(next(1000));
        changed.push(path);
      }
      if (next(10) === 0) main = `/main${next(3)}.json`;
      // A publish in place keeps its version.
      const version = next(8) === 0 ? String(v - 1) : String(v);
      await store.putRecord(record(files, version, main), next(2) === 0 ? changed : undefined);
      generations.add(snapshot().journal);
      if (v % 10 === 0) {
        const reloaded = await open();
        expect(reloaded.loaded.map(published)).toEqual([{ version, main, files }]);
      }
    }
    // Both limits were reached along the way, and each compaction removed the journal it replaced.
    expect(generations.size).toBeGreaterThan(10);
    expect(journals()).toEqual([`${encodeURIComponent(NAME)}.${snapshot().journal}.journal`]);
  });

  it('appends one short line for one changed file in 10,000, and leaves the snapshot alone', async () => {
    const { store } = await open();
    const files = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`/services/svc-${i}.json`, sha(i)]));
    await store.putRecord(record(files, '1'));
    const snapshotBefore = readFileSync(join(recordsDir(), `${encodeURIComponent(NAME)}.json`));
    expect(snapshotBefore.length).toBeGreaterThan(900_000);
    const journal = join(recordsDir(), journals()[0]!);
    expect(statSync(journal).size).toBe(0);
    await store.putRecord(record({ ...files, '/services/svc-7.json': sha(1e6) }, '2'), ['/services/svc-7.json']);
    expect(statSync(journal).size).toBeLessThan(200);
    expect(readFileSync(join(recordsDir(), `${encodeURIComponent(NAME)}.json`))).toEqual(snapshotBefore);
    const { loaded } = await open();
    expect(loaded[0]!.version).toBe('2');
    expect(loaded[0]!.files['/services/svc-7.json']).toBe(sha(1e6));
    expect(Object.keys(loaded[0]!.files)).toHaveLength(10_000);
  });

  it('ignores a last line a crash cut short or garbled, cuts it off, and appends after the last whole line', async () => {
    const { store } = await open();
    await store.putRecord(record({ '/a.json': sha(1) }, '1'));
    await store.putRecord(record({ '/a.json': sha(2) }, '2'), ['/a.json']);
    const journal = join(recordsDir(), journals()[0]!);
    const whole = readFileSync(journal);
    await store.putRecord(record({ '/a.json': sha(3), '/b.json': sha(4) }, '3'), ['/a.json', '/b.json']);
    const withThird = readFileSync(journal);
    const third = withThird.subarray(whole.length);
    const damaged = [
      ...Array.from({ length: third.length - 1 }, (_, cut) => third.subarray(0, cut + 1)),
      Buffer.from(third.toString().replace(sha(4), sha(5))),
      Buffer.from(third.toString().replace(/^\d+/, (n) => String(Number(n) + 1))),
      Buffer.from('\0'.repeat(third.length)),
    ];
    for (const tail of damaged) {
      writeFileSync(journal, Buffer.concat([whole, tail]));
      const { store: reopened, loaded } = await open();
      expect(published(loaded[0])).toEqual({ version: '2', main: '/main.json', files: { '/a.json': sha(2) } });
      expect(readFileSync(journal)).toEqual(whole);
      // What is appended next is read back: no garbage hides it.
      await reopened.putRecord(record({ '/a.json': sha(6) }, '4'), ['/a.json']);
      expect(published((await open()).loaded[0])).toEqual({ version: '4', main: '/main.json', files: { '/a.json': sha(6) } });
    }
  });

  it('removes journals of other generations, and of codebases that are gone, at load', async () => {
    const { store } = await open();
    await store.putRecord(record({ '/a.json': sha(1) }, '1'));
    const current = journals()[0]!;
    writeFileSync(join(recordsDir(), `${encodeURIComponent(NAME)}.0123456789abcdef.journal`), 'stale');
    writeFileSync(join(recordsDir(), `${encodeURIComponent('/gone')}.0123456789abcdef.journal`), 'orphan');
    await open();
    expect(journals()).toEqual([current]);
  });

  it('deletes a codebase with its journal; one created again under the name starts clean', async () => {
    const { store } = await open();
    await store.putRecord(record({ '/a.json': sha(1) }, '1'));
    await store.putRecord(record({ '/a.json': sha(1), '/b.json': sha(2) }, '2'), ['/b.json']);
    await store.deleteRecord(NAME);
    expect(readdirSync(recordsDir())).toEqual([]);
    expect((await open()).loaded).toEqual([]);
    await store.putRecord(record({}, '0'));
    await store.putRecord(record({ '/c.json': sha(3) }, '1'), ['/c.json']);
    expect((await open()).loaded.map(published)).toEqual([{ version: '1', main: '/main.json', files: { '/c.json': sha(3) } }]);
  });

  it('takes a snapshot written before journals existed, and starts a journal with the next write', async () => {
    await open();
    writeFileSync(join(recordsDir(), `${encodeURIComponent(NAME)}.json`), JSON.stringify(record({ '/a.json': sha(1) }, '1')));
    const { store, loaded } = await open();
    expect(published(loaded[0])).toEqual({ version: '1', main: '/main.json', files: { '/a.json': sha(1) } });
    await store.putRecord(record({ '/a.json': sha(2) }, '2'), ['/a.json']);
    await store.putRecord(record({ '/a.json': sha(3) }, '3'), ['/a.json']);
    expect(journals()).toHaveLength(1);
    expect(published((await open()).loaded[0])).toEqual({ version: '3', main: '/main.json', files: { '/a.json': sha(3) } });
  });

  it('writes a snapshot after an append failed, so nothing later hides behind a partial line', async () => {
    const { store } = await open();
    await store.putRecord(record({ '/a.json': sha(1) }, '1'));
    const journal = join(recordsDir(), journals()[0]!);
    rmSync(journal);
    await expect(store.putRecord(record({ '/a.json': sha(2) }, '2'), ['/a.json'])).rejects.toThrow(/ENOENT/);
    // The caller still holds version 1, and publishes from it again.
    await store.putRecord(record({ '/a.json': sha(3) }, '3'), ['/a.json']);
    expect(published((await open()).loaded[0])).toEqual({ version: '3', main: '/main.json', files: { '/a.json': sha(3) } });
  });

  it('refuses a snapshot damaged in place or cut short, naming it, rather than serving part of a codebase', async () => {
    const { store } = await open();
    await store.putRecord(record({ '/a.json': sha(1), '/b.json': sha(2) }, '1'));
    const file = join(recordsDir(), `${encodeURIComponent(NAME)}.json`);
    const whole = readFileSync(file);
    expect(JSON.parse(whole.toString())).toMatchObject({ version: '1', crc32: expect.stringMatching(/^[0-9a-f]{8}$/) });
    // Still JSON, so a flipped digit in a sha would otherwise be served as another blob.
    const flipped = Buffer.from(whole.toString().replace(sha(2), sha(3)));
    for (const damaged of [flipped, whole.subarray(0, whole.length - 5), Buffer.alloc(whole.length)]) {
      writeFileSync(file, damaged);
      await expect(open()).rejects.toThrow(`the snapshot ${file} is damaged`);
    }
    writeFileSync(file, whole);
    expect((await open()).loaded.map(published)).toEqual([{ version: '1', main: '/main.json', files: { '/a.json': sha(1), '/b.json': sha(2) } }]);
  });

  it('removes at start drafts a crash left behind already published, so a later change of the path does not bring them back', async () => {
    const { store } = await open();
    await store.putRecord(record({}, '0'));
    // A publish of /a.json whose drafts a crash kept from being removed.
    await store.putDraft(NAME, '/a.json', sha(1));
    await store.putRecord(record({ '/a.json': sha(1) }, '1'), ['/a.json']);
    const restarted = await open();
    expect(restarted.loaded[0]!.edits).toEqual({});
    // A batch publish writes no draft files: nothing else would remove the old one.
    await restarted.store.putRecord(record({ '/a.json': sha(2) }, '2'), ['/a.json']);
    const again = await open();
    expect(again.loaded[0]!.edits).toEqual({});
    expect(again.loaded[0]!.files).toEqual({ '/a.json': sha(2) });
  });

  it('drops the drafts of a codebase whose delete a crash interrupted after its snapshot was gone', async () => {
    const { store } = await open();
    await store.putRecord(record({}, '0'));
    await store.putDraft(NAME, '/a.json', sha(1));
    rmSync(join(recordsDir(), `${encodeURIComponent(NAME)}.json`));
    await open();
    expect(readdirSync(join(dir, 'drafts'))).toEqual([]);
    // Created again under the name: no old drafts.
    const { store: fresh } = await open();
    await fresh.putRecord(record({}, '0'));
    expect((await open()).loaded[0]!.edits).toEqual({});
  });

  it('refuses a damaged draft record, naming it', async () => {
    const { store } = await open();
    await store.putRecord(record({}, '0'));
    await store.putDraft(NAME, '/a.json', sha(1));
    const file = join(dir, 'drafts', encodeURIComponent(NAME), `${encodeURIComponent('/a.json')}.json`);
    for (const damaged of ['', '{"path":"/a.json","sha":"12', '{"path":"/a.json","sha":7}']) {
      writeFileSync(file, damaged);
      await expect(open()).rejects.toThrow(`the draft record ${file} is damaged`);
    }
  });
});
