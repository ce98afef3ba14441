/*
 * The local-disk store. Every write follows the same protocol, so that a crash at any point
 * leaves the last acknowledged state: write a temp file, fsync it, rename it over the target,
 * fsync the directory. Blobs are content-addressed and written before the record that refers
 * to them, so a record on disk never points at a missing blob.
 *
 * A codebase's record is a snapshot plus a journal of differences: rewriting a 10,000-file record
 * (about 1 MB) for every publish would make one changed file cost what the whole codebase costs.
 * A publish appends one line (version, main, paths set and removed) to the journal named by the
 * snapshot and fdatasyncs it. Each line carries its length and CRC-32, so a line a crash cut short
 * is recognised at load, ignored and cut off. When the journal outgrows the snapshot (or holds
 * many entries) the next write is a new snapshot, written with the usual protocol, that names a
 * new journal generation; journals of any other generation are stale and removed. A snapshot ends
 * with its own CRC-32, so one the disk damaged is refused at load with a message naming it rather
 * than served in part.
 *
 * Every file-system call goes through `fs` (common/durable-fs.ts): node:fs, or in a power-loss test
 * a recording layer that knows what a power cut after each call would leave. `faults` lets a test
 * crash the write path after a chosen step (kill -9) to prove each step matters.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { inParallel, nodeFs, type DurableFs } from '../../common/durable-fs.js';
import type { CodebaseRecord, RepoStore } from './store.js';

export type WriteStep = 'temp-written' | 'temp-synced' | 'renamed' | 'dir-synced' | 'journal-appended' | 'journal-synced' | 'journal-removed';

/** A record as published, without drafts (kept apart) or revision (etcd's). */
type Published = Omit<CodebaseRecord, 'edits' | 'revision'>;

interface JournalEntry {
  version: string;
  main: string;
  set: Record<string, string>;
  removed: string[];
}

interface Journal {
  /** The record as it is durable now (snapshot plus journal): the next entry is the difference from it. */
  record: Published;
  /** Named by the snapshot; undefined for a snapshot from before journals. */
  generation: string | undefined;
  snapshotBytes: number;
  bytes: number;
  entries: number;
  /**
   * The next write must be a snapshot: the journal is missing, or an append failed and may have
   * left part of a line that would hide every later entry, or it is unknown which snapshot a
   * failed snapshot write left.
   */
  needsSnapshot: boolean;
}

export interface JournalLimits {
  /** The journal may grow to its snapshot's size, but to at least this many bytes. */
  minBytes?: number;
  /** Entries replayed at load, at most. */
  maxEntries?: number;
}

export class DiskStore implements RepoStore {
  private readonly records: string;
  private readonly blobs: string;
  private readonly drafts: string;
  private readonly journals = new Map<string, Journal>();
  /** Record writes of one codebase, one at a time: each journal entry is a difference from the one before. */
  private readonly recordQueues = new Map<string, Promise<void>>();
  private readonly limits: Required<JournalLimits>;
  /** Draft directories whose entry in drafts/ is known to be durable. */
  private readonly durableDraftDirs = new Set<string>();

  constructor(
    readonly dataDir: string,
    private readonly faults?: { crashAfter?: WriteStep; occurrence?: number },
    limits: JournalLimits = {},
    private readonly fs: DurableFs = nodeFs,
  ) {
    this.records = join(dataDir, 'codebases');
    this.blobs = join(dataDir, 'blobs');
    this.drafts = join(dataDir, 'drafts');
    // A small codebase's snapshot costs no more to rewrite than a few appends: below 4 KiB rewrites
    // would come every other publish. 1,000 entries keep a load's replay short.
    this.limits = { minBytes: limits.minBytes ?? 4096, maxEntries: limits.maxEntries ?? 1000 };
  }

  async init(): Promise<this> {
    await this.fs.mkdir(this.records);
    await this.fs.mkdir(this.blobs);
    await this.fs.mkdir(this.drafts);
    await this.fs.syncDir(this.dataDir);
    // Temp files are what a crash mid-write leaves; they were never acknowledged.
    const draftDirs = (await this.fs.readdir(this.drafts)).map((d) => join(this.drafts, d));
    for (const dir of [this.records, this.blobs, ...draftDirs]) {
      for (const f of await this.fs.readdir(dir)) if (f.endsWith('.tmp')) await this.fs.unlink(join(dir, f));
    }
    // A draft directory created just before a crash may not have had its entry synced: sync them
    // all now, since a draft written into it later would otherwise be acknowledged and not durable.
    await this.fs.syncDir(this.drafts);
    for (const dir of draftDirs) this.durableDraftDirs.add(dir);
    return this;
  }

  async loadAll(): Promise<CodebaseRecord[]> {
    const names = await this.fs.readdir(this.records);
    const present = new Set(names);
    const current = new Set<string>();
    const out: CodebaseRecord[] = [];
    this.journals.clear();
    for (const f of names.filter((f) => f.endsWith('.json')).sort()) {
      const snapshot = await this.fs.readFile(join(this.records, f));
      const { journal: generation, ...record } = decodeSnapshot(snapshot, join(this.records, f));
      const journal: Journal = { record, generation, snapshotBytes: snapshot.length, bytes: 0, entries: 0, needsSnapshot: true };
      if (generation !== undefined && present.has(journalFile(record.name, generation))) {
        current.add(journalFile(record.name, generation));
        await this.replay(journal);
        journal.needsSnapshot = false;
      }
      const { edits: _edits, ...published } = record;
      journal.record = published;
      this.journals.set(record.name, journal);
      out.push(await this.withDrafts({ ...published, edits: {} }, true));
    }
    // Left by a crash between a snapshot and the removal of the journal it replaced, or in a delete.
    for (const f of names) if (f.endsWith('.journal') && !current.has(f)) await this.fs.unlink(join(this.records, f));
    // The drafts of a codebase whose delete a crash interrupted.
    const loaded = new Set(out.map((r) => r.name));
    const orphans = (await this.fs.readdir(this.drafts)).filter((d) => !loaded.has(decodeURIComponent(d)));
    for (const d of orphans) {
      this.durableDraftDirs.delete(join(this.drafts, d));
      await this.fs.removeTree(join(this.drafts, d));
    }
    if (orphans.length > 0) await this.fs.syncDir(this.drafts);
    return out;
  }

  async loadRecord(name: string): Promise<CodebaseRecord | undefined> {
    await this.recordQueues.get(name);
    const journal = this.journals.get(name);
    return journal ? this.withDrafts({ ...journal.record, edits: {} }) : undefined;
  }

  /** Applies the journal's valid entries to the snapshot's record; cuts off a line a crash left torn. */
  private async replay(journal: Journal): Promise<void> {
    const path = join(this.records, journalFile(journal.record.name, journal.generation!));
    const content = await this.fs.readFile(path);
    const { entries, valid } = decodeJournal(content);
    for (const entry of entries) {
      const files = journal.record.files;
      for (const [file, sha] of Object.entries(entry.set)) files[file] = sha;
      for (const file of entry.removed) delete files[file];
      journal.record.version = entry.version;
      journal.record.main = entry.main;
    }
    journal.bytes = valid;
    journal.entries = entries.length;
    if (valid < content.length) {
      // Never acknowledged (its sync had not returned); appends must follow the last whole line.
      const handle = await this.fs.open(path, 'update');
      try {
        await handle.truncate(valid);
        await handle.datasync();
      } finally {
        await handle.close();
      }
    }
  }

  /**
   * The record with its drafts. A crash between a publish and the removal of its drafts leaves
   * drafts that are published already: they are not drafts, and at start-up (`dropPublished`) their
   * files are removed too. Kept, such a file would come back as a draft once a later publish (of a
   * batch, which writes no draft files) changed the path, and the publish after that would revert it.
   */
  private async withDrafts(record: CodebaseRecord, dropPublished = false): Promise<CodebaseRecord> {
    const dir = this.draftDir(record.name);
    const published: string[] = [];
    for (const d of (await this.fs.readdir(dir).catch(() => [] as string[])).filter((d) => d.endsWith('.json'))) {
      const { path, sha } = decodeDraft(await this.fs.readFile(join(dir, d)), join(dir, d));
      if (sha === null ? !(path in record.files) : record.files[path] === sha) published.push(d);
      else record.edits[path] = sha;
    }
    if (dropPublished && published.length > 0) {
      for (const d of published) await this.fs.unlink(join(dir, d));
      await this.fs.syncDir(dir);
    }
    return record;
  }

  putRecord(record: CodebaseRecord, changed?: readonly string[]): Promise<undefined> {
    const { edits: _edits, revision: _revision, ...published } = record;
    return this.serially(record.name, async () => {
      const journal = this.journals.get(record.name);
      const entry = journal && !journal.needsSnapshot ? difference(journal.record, published, changed) : undefined;
      const line = entry && encodeLine(entry);
      if (
        !journal ||
        !line ||
        journal.entries >= this.limits.maxEntries ||
        journal.bytes + line.length > Math.max(journal.snapshotBytes, this.limits.minBytes)
      ) {
        await this.writeSnapshot(published, journal);
        return;
      }
      await this.append(journal, line);
      journal.record = published;
      journal.bytes += line.length;
      journal.entries++;
    }).then(() => undefined);
  }

  async deleteRecord(name: string): Promise<void> {
    await this.serially(name, async () => {
      // The snapshot first, the one point of switch: a crash before its removal is durable leaves the
      // codebase whole, drafts included; after it, the codebase is gone and what it left is removed
      // at load. (Drafts first would let a crash leave the codebase without its drafts.)
      await this.fs.unlink(join(this.records, snapshotFile(name)));
      await this.fs.syncDir(this.records);
      const journal = this.journals.get(name);
      const files = journal
        ? journal.generation === undefined
          ? []
          : [journalFile(name, journal.generation)]
        : (await this.fs.readdir(this.records)).filter((f) => journalOf(f) === name);
      // Unsynced: a journal without its snapshot is removed at load anyway, and generations are never reused.
      for (const f of files) await this.fs.unlink(join(this.records, f));
      this.journals.delete(name);
      // Synced before the delete is acknowledged: a codebase created again under the name must not find old drafts.
      this.durableDraftDirs.delete(this.draftDir(name));
      await this.fs.removeTree(this.draftDir(name));
      await this.fs.syncDir(this.drafts);
    });
  }

  private serially(name: string, work: () => Promise<void>): Promise<void> {
    const run = (this.recordQueues.get(name) ?? Promise.resolve()).then(work);
    const settled = run.catch(() => {});
    this.recordQueues.set(name, settled);
    void settled.then(() => {
      if (this.recordQueues.get(name) === settled) this.recordQueues.delete(name);
    });
    return run;
  }

  private async writeSnapshot(record: Published, previous: Journal | undefined): Promise<void> {
    const generation = randomBytes(8).toString('hex');
    // Created before the snapshot that names it, so that the snapshot's directory sync makes its
    // entry durable too and an append needs nothing but its own fdatasync.
    await (await this.fs.open(join(this.records, journalFile(record.name, generation)), 'create')).close();
    const content = encodeSnapshot({ ...record, edits: {}, journal: generation });
    try {
      await this.durableWrite(this.records, snapshotFile(record.name), content);
    } catch (error) {
      // The rename may have happened: appending to the old journal could then be appending to a stale one.
      if (previous) previous.needsSnapshot = true;
      throw error;
    }
    this.journals.set(record.name, { record, generation, snapshotBytes: content.length, bytes: 0, entries: 0, needsSnapshot: false });
    if (previous?.generation !== undefined) {
      // Unsynced: if a crash brings it back, its generation is not the snapshot's and it is removed at load.
      await this.fs.unlink(join(this.records, journalFile(record.name, previous.generation)));
      this.step('journal-removed');
    }
  }

  private async append(journal: Journal, line: Buffer): Promise<void> {
    try {
      // No O_CREAT: the file was created (and its directory entry synced) with the snapshot naming it.
      const handle = await this.fs.open(join(this.records, journalFile(journal.record.name, journal.generation!)), 'append');
      try {
        await handle.write(line);
        this.step('journal-appended');
        await handle.datasync();
        this.step('journal-synced');
      } finally {
        await handle.close();
      }
    } catch (error) {
      journal.needsSnapshot = true;
      throw error;
    }
  }

  private draftDir(codebase: string): string {
    return join(this.drafts, encodeURIComponent(codebase));
  }

  putDraft(codebase: string, path: string, sha: string | null): Promise<void> {
    return this.putDrafts(codebase, [[path, sha]]);
  }

  async putDrafts(codebase: string, drafts: [path: string, sha: string | null][]): Promise<void> {
    if (drafts.length === 0) return;
    const dir = this.draftDir(codebase);
    if (!this.durableDraftDirs.has(dir)) {
      await this.fs.mkdir(dir);
      await this.fs.syncDir(this.drafts);
      this.durableDraftDirs.add(dir);
    }
    await this.durableWriteMany(
      dir,
      drafts.map(([path, sha]) => [`${encodeURIComponent(path)}.json`, Buffer.from(JSON.stringify({ path, sha }))]),
    );
  }

  async clearDrafts(codebase: string, paths: string[]): Promise<void> {
    if (paths.length === 0) return;
    const dir = this.draftDir(codebase);
    await Promise.all(paths.map((p) => this.fs.unlink(join(dir, `${encodeURIComponent(p)}.json`))));
    // No draft was ever written for this codebase: nothing to make durable. Any other failure means
    // a discard that a restart could undo, so the caller must hear of it.
    await this.fs.syncDir(dir).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw error;
    });
  }

  async putBlob(content: Buffer): Promise<string> {
    return (await this.putBlobs([content]))[0]!;
  }

  async putBlobs(contents: Buffer[]): Promise<string[]> {
    const shas = contents.map((content) => createHash('sha256').update(content).digest('hex'));
    const missing = new Map<string, Buffer>();
    await inParallel(
      shas.map((sha, i) => [sha, contents[i]!] as const),
      async ([sha, content]) => {
        if (!missing.has(sha) && !(await this.fs.exists(join(this.blobs, sha)))) missing.set(sha, content);
      },
    );
    // Blobs that exist are the same bytes (content-addressed), but their directory entries may not
    // be synced yet (another writer between rename and fsync, or a crash right after rename): the
    // one directory sync below covers them.
    if (missing.size === 0) await this.fs.syncDir(this.blobs);
    else await this.durableWriteMany(this.blobs, [...missing]);
    return shas;
  }

  async getBlob(sha: string): Promise<Buffer | undefined> {
    if (!/^[0-9a-f]{64}$/.test(sha)) return undefined;
    try {
      return await this.fs.readFile(join(this.blobs, sha));
    } catch {
      return undefined;
    }
  }

  async close(): Promise<void> {}

  private seen = 0;

  private step(step: WriteStep): void {
    if (this.faults?.crashAfter !== step) return;
    if (++this.seen >= (this.faults.occurrence ?? 1)) process.kill(process.pid, 'SIGKILL');
  }

  /**
   * The same protocol for many files in one directory: every temp file written and synced (in
   * parallel: fsyncs of different files overlap), then renamed, then one directory sync, which
   * makes all the renames durable together.
   */
  private async durableWriteMany(dir: string, files: [name: string, content: Buffer][]): Promise<void> {
    const temps = new Map<string, string>();
    try {
      await inParallel(files, async ([name, content]) => {
        // Unique, and created exclusively: two writers of the same content must never share a temp file.
        const temp = join(dir, `${name}.${randomUUID()}.tmp`);
        temps.set(name, temp);
        const handle = await this.fs.open(temp, 'create');
        try {
          await handle.write(content);
          this.step('temp-written');
          await handle.sync();
          this.step('temp-synced');
        } finally {
          await handle.close();
        }
      });
    } catch (error) {
      await Promise.all([...temps.values()].map((temp) => this.fs.unlink(temp)));
      throw error;
    }
    await inParallel([...temps], async ([name, temp]) => {
      await this.fs.rename(temp, join(dir, name));
      this.step('renamed');
    });
    await this.fs.syncDir(dir);
    this.step('dir-synced');
  }

  private durableWrite(dir: string, name: string, content: Buffer): Promise<void> {
    return this.durableWriteMany(dir, [[name, content]]);
  }
}

const snapshotFile = (name: string) => `${encodeURIComponent(name)}.json`;
const journalFile = (name: string, generation: string) => `${encodeURIComponent(name)}.${generation}.journal`;
/** The codebase a journal file belongs to. */
const journalOf = (file: string) => {
  const match = /^(.+)\.[0-9a-f]{16}\.journal$/.exec(file);
  return match ? decodeURIComponent(match[1]!) : undefined;
};

type Snapshot = CodebaseRecord & { journal?: string };
const SNAPSHOT_CHECKSUM = /,"crc32":"([0-9a-f]{8})"\}$/;

/**
 * The record as JSON whose last member is the CRC-32 of every byte before it: still JSON to read,
 * and a snapshot cut short or damaged in place no longer matches.
 */
function encodeSnapshot(snapshot: Snapshot): Buffer {
  const head = Buffer.from(JSON.stringify(snapshot).slice(0, -1));
  return Buffer.concat([head, Buffer.from(`,"crc32":"${crc32(head).toString(16).padStart(8, '0')}"}`)]);
}

/** A draft record, `{path, sha}`; throws, naming the file, when it is damaged (written and synced before its rename, it cannot be torn). */
function decodeDraft(content: Buffer, file: string): { path: string; sha: string | null } {
  let value: { path?: unknown; sha?: unknown } | undefined;
  try {
    value = JSON.parse(content.toString('utf8')) as typeof value;
  } catch {
    // Not JSON: reported below.
  }
  if (typeof value?.path !== 'string' || (value.sha !== null && (typeof value.sha !== 'string' || !/^[0-9a-f]{64}$/.test(value.sha)))) {
    throw new Error(
      `the draft record ${file} is damaged (${content.length === 0 ? 'empty' : 'not a draft record'}): restore the data directory from a backup, or remove the file to drop that draft`,
    );
  }
  return { path: value.path, sha: value.sha };
}

/** Throws, naming the file, when the snapshot is damaged. One written before checksums has none and is taken as it parses. */
function decodeSnapshot(content: Buffer, file: string): Snapshot {
  const damaged = (why: string) =>
    new Error(
      `the snapshot ${file} is damaged (${why}): the repo will not start from part of a codebase; restore the data directory from a backup, or remove the codebase's files to start it empty`,
    );
  const trailer = SNAPSHOT_CHECKSUM.exec(content.toString('latin1', Math.max(0, content.length - 24)));
  if (trailer && crc32(content.subarray(0, content.length - trailer[0].length)) !== Number.parseInt(trailer[1]!, 16)) throw damaged('checksum mismatch');
  let value: unknown;
  try {
    value = JSON.parse(content.toString('utf8'));
  } catch {
    throw damaged(content.length === 0 ? 'empty' : 'not JSON: cut short?');
  }
  if (typeof value !== 'object' || value === null || typeof (value as Snapshot).name !== 'string' || typeof (value as Snapshot).files !== 'object')
    throw damaged('not a codebase record');
  const { crc32: _checksum, ...snapshot } = value as Snapshot & { crc32?: string };
  return snapshot;
}

/**
 * What a journal entry must say to turn `before` into `after`; undefined when they differ in more
 * than version, main and files (a snapshot says that).
 */
function difference(before: Published, after: Published, changed: readonly string[] | undefined): JournalEntry | undefined {
  if (before.name !== after.name || before.base !== after.base || before.draftMain !== after.draftMain) return undefined;
  const set: Record<string, string> = {};
  const removed: string[] = [];
  const compare = (path: string) => {
    const sha = after.files[path];
    if (sha === undefined) {
      if (before.files[path] !== undefined) removed.push(path);
    } else if (before.files[path] !== sha) set[path] = sha;
  };
  if (changed) {
    for (const path of new Set(changed)) compare(path);
  } else {
    for (const path of Object.keys(after.files)) compare(path);
    for (const path of Object.keys(before.files)) if (after.files[path] === undefined) removed.push(path);
  }
  return { version: after.version, main: after.main, set, removed };
}

/** `<length> <crc32 hex> <json>\n`: the length tells where a line must end, the checksum that all of it arrived. */
function encodeLine(entry: JournalEntry): Buffer {
  const body = Buffer.from(JSON.stringify(entry));
  return Buffer.concat([Buffer.from(`${body.length} ${crc32(body).toString(16).padStart(8, '0')} `), body, Buffer.from('\n')]);
}

/** The entries of the longest run of whole, intact lines from the start, and its length in bytes. */
function decodeJournal(content: Buffer): { entries: JournalEntry[]; valid: number } {
  const entries: JournalEntry[] = [];
  let at = 0;
  while (at < content.length) {
    const space = content.indexOf(0x20, at);
    if (space < 0 || space - at > 10) break;
    const length = content.toString('latin1', at, space);
    if (!/^(0|[1-9][0-9]*)$/.test(length)) break;
    const body = space + 10;
    const end = body + Number(length);
    if (end >= content.length || content[body - 1] !== 0x20 || content[end] !== 0x0a) break;
    const bytes = content.subarray(body, end);
    if (crc32(bytes).toString(16).padStart(8, '0') !== content.toString('latin1', space + 1, body - 1)) break;
    try {
      entries.push(JSON.parse(bytes.toString('utf8')) as JournalEntry);
    } catch {
      break;
    }
    at = end + 1;
  }
  return { entries, valid: at };
}
