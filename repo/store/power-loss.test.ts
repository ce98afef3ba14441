/*
 * Power loss, not only kill -9: a sequence of writes (creates, drafts, publishes appended to the
 * journal, a batch big enough to compact it, erases, a discard, a delete) runs on a recording file
 * system, and at every crash point each disk a power cut could leave (common/testing/power-loss.ts)
 * is opened as a store. Every acknowledged write must be there, whole, or the write in flight
 * applied whole; the store must open; and it must take a publish afterwards and keep it.
 */
import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { materialise, PowerLossRecorder, type CrashPoint, type RecorderOptions, type SyncKind } from '../../common/testing/power-loss.js';
import { Repo } from '../repo.js';
import { DiskStore, type JournalLimits } from './disk.js';

// Every crash point is replayed from disk images: seconds of work, more on a loaded machine.
jest.setTimeout(60_000);

interface CodebaseState {
  version: string;
  main: string;
  files: Record<string, string>;
  drafts: Record<string, string | null>;
}
type RepoState = Record<string, CodebaseState>;
interface Tag {
  step: string;
  /** Everything acknowledged so far. */
  before: RepoState;
  /** The same with the step in flight applied. */
  after: RepoState;
}

// Durability comes from the recorder's model, not the disk: tmpfs keeps the thousands of real fsyncs cheap.
const SCRATCH = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
// Small limits: the sequence compacts the journal by size and by entry count several times.
const LIMITS: JournalLimits = { minBytes: 512, maxEntries: 3 };
const MESH = '/flb/mesh';
const OTHER = '/flb/other';

interface Step {
  name: string;
  run(repo: Repo): Promise<void>;
  apply(state: RepoState): void;
}

const publishModel = (c: CodebaseState, version: string) => {
  for (const [path, content] of Object.entries(c.drafts)) {
    if (content === null) delete c.files[path];
    else c.files[path] = content;
  }
  c.drafts = {};
  c.version = version;
};
const draftModel = (c: CodebaseState, path: string, content: string | null) => {
  if (content !== null) c.drafts[path] = content;
  else if (path in c.files) c.drafts[path] = null;
  else delete c.drafts[path];
};

const create = (name: string): Step => ({
  name: `create ${name}`,
  run: (repo) => repo.create(name, { main: '/v.json' }),
  apply: (s) => void (s[name] = { version: '0', main: '/v.json', files: {}, drafts: {} }),
});
const draft = (name: string, path: string, content: string): Step => ({
  name: `draft ${name}${path}`,
  run: (repo) => repo.writeDraft(name, path, Buffer.from(content)),
  apply: (s) => draftModel(s[name]!, path, content),
});
const erase = (name: string, path: string): Step => ({
  name: `erase ${name}${path}`,
  run: (repo) => repo.eraseFile(name, path),
  apply: (s) => draftModel(s[name]!, path, null),
});
const discard = (name: string, path: string): Step => ({
  name: `discard ${name}${path}`,
  run: (repo) => repo.discardDraft(name, path),
  apply: (s) => void delete s[name]!.drafts[path],
});
const publish = (name: string, version: string): Step => ({
  name: `publish ${name} ${version}`,
  run: (repo) => repo.patch(name, { version }),
  apply: (s) => publishModel(s[name]!, version),
});
const batch = (name: string, files: Record<string, string | null>, version?: string): Step => ({
  name: `batch of ${Object.keys(files).length} to ${name}${version ? ` publishing ${version}` : ''}`,
  run: (repo) => repo.writeFiles(name, new Map(Object.entries(files).map(([p, c]) => [p, c === null ? null : Buffer.from(c)])), version ? { version } : {}),
  apply: (s) => {
    for (const [path, content] of Object.entries(files)) draftModel(s[name]!, path, content);
    if (version) publishModel(s[name]!, version);
  },
});
const remove = (name: string): Step => ({ name: `delete ${name}`, run: (repo) => repo.delete(name), apply: (s) => void delete s[name] });

const bulk = (version: string) => Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`/bulk/f-${i}.json`, `{"f":${i},"v":${version}}`]));

const SEQUENCE: Step[] = [
  create(MESH),
  draft(MESH, '/v.json', 'v1'),
  publish(MESH, '1'),
  draft(MESH, '/v.json', 'v2'),
  draft(MESH, '/a.json', 'a2'),
  publish(MESH, '2'),
  // Outweighs the small snapshot: written as a new snapshot that starts a new journal.
  batch(MESH, { '/v.json': 'v3', ...bulk('3') }, '3'),
  erase(MESH, '/a.json'),
  publish(MESH, '4'),
  draft(MESH, '/c.json', 'c'),
  discard(MESH, '/c.json'),
  batch(MESH, { '/v.json': 'v5' }),
  publish(MESH, '5'),
  // Three more appends reach maxEntries: the next publish compacts by count.
  batch(MESH, { '/v.json': 'v6' }, '6'),
  batch(MESH, { '/v.json': 'v7', '/bulk/f-0.json': null }, '7'),
  create(OTHER),
  batch(OTHER, { '/v.json': 'o1' }, '1'),
  draft(OTHER, '/x.json', 'x'),
  remove(OTHER),
  batch(MESH, { '/v.json': 'v8' }, '8'),
];

/** What a repo holds: every codebase's version, main, published files and drafts, by content. */
async function stateOf(repo: Repo): Promise<RepoState> {
  const state: RepoState = {};
  const content = async (sha: string) => (await repo.blob(sha))?.toString('utf8') ?? `<missing blob ${sha.slice(0, 12)}>`;
  for (const name of repo.list()) {
    const record = repo.get(name)!;
    const files: Record<string, string> = {};
    for (const [path, sha] of Object.entries(record.files)) files[path] = await content(sha);
    const drafts: Record<string, string | null> = {};
    for (const [path, sha] of Object.entries(record.edits)) drafts[path] = sha === null ? null : await content(sha);
    state[name] = { version: record.version, main: record.main, files, drafts };
  }
  return state;
}

const canonical = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1))) : v,
  );
const clone = (state: RepoState): RepoState => JSON.parse(JSON.stringify(state)) as RepoState;

/** Runs the sequence on a recording file system and returns its crash points. */
async function record(skipSync?: RecorderOptions['skipSync']): Promise<{ points: CrashPoint<Tag>[]; syncs: { kind: SyncKind; path: string }[] }> {
  const root = mkdtempSync(join(SCRATCH, 'flb-power-loss-'));
  try {
    const fs = new PowerLossRecorder<Tag>(root, { step: 'init', before: {}, after: {} }, skipSync ? { skipSync } : {});
    const repo = await new Repo(await new DiskStore(root, undefined, LIMITS, fs).init()).load();
    let acknowledged: RepoState = {};
    for (const step of SEQUENCE) {
      const after = clone(acknowledged);
      step.apply(after);
      fs.tag = { step: step.name, before: acknowledged, after };
      await step.run(repo);
      acknowledged = after;
    }
    // The sequence itself must end where the model does.
    expect(canonical(await stateOf(repo))).toBe(canonical(acknowledged));
    return { points: fs.crashPoints, syncs: fs.syncs };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** Every way each crash point's disks break the rules, as readable lines (only the first with `firstOnly`). */
async function check(points: CrashPoint<Tag>[], scratch: string, firstOnly = false): Promise<string[]> {
  const problems: string[] = [];
  for (const point of points) {
    if (firstOnly && problems.length > 0) break;
    for (const disk of point.images) {
      const where = `crash after #${point.index} (${point.operation}) during "${point.tag.step}", ${disk.variant}`;
      const dir = join(scratch, `${point.index}-${disk.variant}`);
      materialise(disk, dir);
      try {
        const open = async () => new Repo(await new DiskStore(dir, undefined, LIMITS).init()).load();
        const repo = await open();
        const got = await stateOf(repo);
        const matches = [point.tag.before, point.tag.after].find((expected) => canonical(expected) === canonical(got));
        if (!matches) {
          problems.push(`${where}: holds ${canonical(got)}, but acknowledged was ${canonical(point.tag.before)} (in flight: ${canonical(point.tag.after)})`);
          continue;
        }
        // Recovery leaves a store that takes the next publish, keeps it, and brings back nothing that was not a draft.
        const next = clone(matches);
        for (const name of Object.keys(next)) {
          await repo.writeFiles(name, new Map([['/v.json', Buffer.from('recovered')]]), { version: 'r' });
          next[name]!.drafts['/v.json'] = 'recovered';
          publishModel(next[name]!, 'r');
        }
        const reopened = await stateOf(await open());
        if (canonical(reopened) !== canonical(next))
          problems.push(`${where}: a publish after recovery gives ${canonical(reopened)} instead of ${canonical(next)}`);
      } catch (error) {
        problems.push(`${where}: the store does not open or write: ${(error as Error).message}`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
  return problems;
}

/** A sync site: the kind of call and what it syncs, with file names reduced to their kind. */
const siteOf = (kind: SyncKind, path: string) =>
  `${kind} ${kind === 'syncDir' ? path || '.' : path.replace(/[^/]*(\.tmp|\.journal)$/, '*$1')}`.replace(/drafts\/[^/ ]+/, 'drafts/<codebase>');

describe('the disk store under power loss', () => {
  let scratch: string;
  beforeAll(() => {
    scratch = mkdtempSync(join(SCRATCH, 'flb-power-loss-check-'));
  });
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  let clean: Awaited<ReturnType<typeof record>>;

  it('keeps every acknowledged write whole at every crash point of publishes, compactions, drafts and a delete', async () => {
    const started = performance.now();
    clean = await record();
    const problems = await check(clean.points, scratch);
    const images = clean.points.reduce((n, p) => n + p.images.length, 0);
    console.info(`power loss: ${clean.points.length} crash points, ${images} disk images checked in ${Math.round(performance.now() - started)} ms`);
    expect(problems).toEqual([]);
    // The sequence reaches what it is meant to: appends, compactions (snapshots replacing journals), a delete.
    const operations = clean.points.map((p) => p.operation);
    expect(operations.filter((o) => /^fdatasync codebases\/.*\.journal$/.test(o)).length).toBeGreaterThanOrEqual(6);
    expect(operations.filter((o) => /^unlink codebases\/.*\.journal$/.test(o)).length).toBeGreaterThanOrEqual(3);
    expect(operations.some((o) => o.startsWith('rm -r drafts/'))).toBe(true);
    expect(clean.points.length).toBeGreaterThan(200);
  });

  it('notices when the journal fdatasync is taken out: an acknowledged publish is lost', async () => {
    const { points } = await record((kind, path) => kind === 'datasync' && path.endsWith('.journal'));
    const problems = await check(points, scratch);
    expect(problems.length).toBeGreaterThan(0);
    expect(problems.join('\n')).toMatch(/during "publish \/flb\/mesh 2", synced-only: holds .*"version":"1"/);
  });

  it('notices when the snapshot is renamed into place unsynced: the checksum refuses it, naming the file', async () => {
    const { points } = await record((kind, path) => kind === 'sync' && /^codebases\/.*\.json\..*\.tmp$/.test(path));
    const problems = await check(points, scratch);
    expect(problems.join('\n')).toMatch(/metadata-without-data: the store does not open or write: the snapshot .*%2Fflb%2Fmesh\.json is damaged/);
  });

  it('makes a draft directory a crash left unsynced durable before acknowledging a draft in it', async () => {
    const root = mkdtempSync(join(SCRATCH, 'flb-power-loss-'));
    try {
      const fs = new PowerLossRecorder<Tag>(root, { step: 'first run', before: {}, after: {} });
      const first = await new Repo(await new DiskStore(root, undefined, LIMITS, fs).init()).load();
      await first.create(MESH, { main: '/v.json' });
      // The first run died between creating the codebase's draft directory and syncing its parent.
      await fs.mkdir(join(root, 'drafts', encodeURIComponent(MESH)));
      const restarted = await new Repo(await new DiskStore(root, undefined, LIMITS, fs).init()).load();
      const before: RepoState = { [MESH]: { version: '0', main: '/v.json', files: {}, drafts: {} } };
      const after = clone(before);
      after[MESH]!.drafts['/v.json'] = 'v1';
      fs.tag = { step: 'draft after restart', before, after };
      await restarted.writeDraft(MESH, '/v.json', Buffer.from('v1'));
      fs.tag = { step: 'acknowledged', before: after, after };
      await fs.syncDir(root);
      expect(
        await check(
          fs.crashPoints.filter((p) => p.tag.step !== 'first run'),
          scratch,
        ),
      ).toEqual([]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('notices any one fsync taken out, whichever it is', async () => {
    const sites = [...new Set(clean.syncs.map((s) => siteOf(s.kind, s.path)))].sort();
    // Every kind of durable write has its syncs: the journal, snapshots, blobs, drafts and their directories.
    expect(sites).toEqual(
      expect.arrayContaining([
        'datasync codebases/*.journal',
        'sync codebases/*.tmp',
        'syncDir codebases',
        'sync blobs/*.tmp',
        'syncDir blobs',
        'sync drafts/<codebase>/*.tmp',
        'syncDir drafts/<codebase>',
        'syncDir drafts',
        'syncDir .',
      ]),
    );
    const missed: string[] = [];
    for (const site of sites) {
      const { points } = await record((kind, path) => siteOf(kind, path) === site);
      if ((await check(points, scratch, true)).length === 0) missed.push(site);
    }
    console.info(`disk store: ${sites.length} fsync sites, each taken out in turn: ${sites.length - missed.length} caught (${sites.join('; ')})`);
    expect(missed).toEqual([]);
  }, 60_000);
});
