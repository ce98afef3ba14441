// A recording DurableFs (common/durable-fs.ts) for power-loss tests. Every call is made on the real
// file system (so the code under test runs as usual) and applied to a model that keeps, for each
// file, its bytes and its bytes as of its last fsync, and for each directory, its entries and its
// entries as of its last fsync. After every call that changes something (a crash point) it can
// tell what a power cut at that moment could leave on disk:
//
// - synced-only: the pessimistic case. A file holds only what its last fsync/fdatasync covered;
//   a creation, rename or removal exists only if its directory was fsynced after it.
// - metadata-without-data: every directory change reached the disk but no unsynced data did (the
//   zero-length-file-after-rename crash of file systems that order metadata before data).
// - torn-append: as synced-only, but a file whose unsynced bytes extend its synced ones keeps half
//   of them: an append cut short.
//
// kill -9, which keeps the page cache, is the remaining case (everything written survives); the
// end-to-end crash tests cover it. A `skipSync` hook makes chosen fsyncs count for nothing, as if
// they were removed from the source, so a test can show that its checker notices.
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { nodeFs, type DurableFile, type DurableFs, type OpenMode } from '../durable-fs.js';

interface FileNode {
  kind: 'file';
  data: Buffer;
  synced: Buffer;
}
interface DirNode {
  kind: 'dir';
  entries: Map<string, Node>;
  synced: Map<string, Node>;
}
type Node = FileNode | DirNode;

export type SyncKind = 'sync' | 'datasync' | 'syncDir';
export type CrashVariant = 'synced-only' | 'metadata-without-data' | 'torn-append';

/** What a power cut could leave: files (paths relative to the root, '/'-separated) and directories. */
export interface DiskImage {
  variant: CrashVariant;
  files: Map<string, Buffer>;
  dirs: string[];
}

export interface CrashPoint<Tag> {
  /** 0: before the first call; n: right after the n-th. */
  index: number;
  /** The call just made, e.g. `rename codebases/x.tmp -> codebases/x`. */
  operation: string;
  /** What the test said it was doing at the time (`recorder.tag`). */
  tag: Tag;
  images: DiskImage[];
}

export interface RecorderOptions {
  /** An fsync for which this returns true changes nothing durable: as if removed from the source. */
  skipSync?: (kind: SyncKind, path: string) => boolean;
}

const newDir = (): DirNode => ({ kind: 'dir', entries: new Map(), synced: new Map() });

export class PowerLossRecorder<Tag = undefined> implements DurableFs {
  private readonly model: DirNode;
  readonly crashPoints: CrashPoint<Tag>[] = [];
  /** Every sync call made, as `<kind> <relative path>`, for tests that remove them one at a time. */
  readonly syncs: { kind: SyncKind; path: string }[] = [];
  /** Set by the test: what it is doing now, stored with each crash point. */
  tag: Tag;

  /** The files already under `root` count as durable: the test starts from a synced state. */
  constructor(
    readonly root: string,
    tag: Tag,
    private readonly options: RecorderOptions = {},
  ) {
    this.tag = tag;
    this.model = scan(root);
    this.record('start');
  }

  private rel(path: string): string {
    const r = relative(this.root, path);
    if (r.startsWith('..')) throw new Error(`${path} is outside the recorded root ${this.root}`);
    return r.split(sep).join('/');
  }

  private lookup(path: string): Node | undefined {
    let node: Node = this.model;
    for (const part of this.rel(path).split('/').filter(Boolean)) {
      if (node.kind !== 'dir') return undefined;
      const next: Node | undefined = node.entries.get(part);
      if (!next) return undefined;
      node = next;
    }
    return node;
  }

  private dir(path: string): DirNode {
    const node = this.lookup(path);
    if (node?.kind !== 'dir') throw new Error(`power-loss model: ${path} is not a directory it knows`);
    return node;
  }

  private file(path: string): FileNode {
    const node = this.lookup(path);
    if (node?.kind !== 'file') throw new Error(`power-loss model: ${path} is not a file it knows`);
    return node;
  }

  private name(path: string): string {
    return this.rel(path).split('/').pop()!;
  }

  private record(operation: string): void {
    const images = [image(this.model, 'synced-only')!, image(this.model, 'metadata-without-data')!];
    const torn = image(this.model, 'torn-append');
    if (torn) images.push(torn);
    this.crashPoints.push({ index: this.crashPoints.length, operation, tag: this.tag, images });
  }

  private syncing(kind: SyncKind, path: string): boolean {
    this.syncs.push({ kind, path: this.rel(path) });
    return !this.options.skipSync?.(kind, this.rel(path));
  }

  async open(path: string, mode: OpenMode): Promise<DurableFile> {
    const real = await nodeFs.open(path, mode);
    let node: FileNode;
    if (mode === 'create') {
      node = { kind: 'file', data: Buffer.alloc(0), synced: Buffer.alloc(0) };
      this.dir(dirname(path)).entries.set(this.name(path), node);
      this.record(`create ${this.rel(path)}`);
    } else node = this.file(path);
    return {
      write: async (data) => {
        await real.write(data);
        node.data = Buffer.concat([node.data, data]);
        this.record(`write ${data.length} bytes to ${this.rel(path)}`);
      },
      sync: async () => {
        await real.sync();
        if (this.syncing('sync', path)) node.synced = node.data;
        this.record(`fsync ${this.rel(path)}`);
      },
      datasync: async () => {
        await real.datasync();
        if (this.syncing('datasync', path)) node.synced = node.data;
        this.record(`fdatasync ${this.rel(path)}`);
      },
      truncate: async (length) => {
        await real.truncate(length);
        node.data = node.data.subarray(0, length);
        this.record(`truncate ${this.rel(path)} to ${length}`);
      },
      close: () => real.close(),
    };
  }

  readFile(path: string): Promise<Buffer> {
    return nodeFs.readFile(path);
  }

  readdir(path: string): Promise<string[]> {
    return nodeFs.readdir(path);
  }

  exists(path: string): Promise<boolean> {
    return nodeFs.exists(path);
  }

  async mkdir(path: string): Promise<string | undefined> {
    const first = await nodeFs.mkdir(path);
    if (first !== undefined) {
      let dir = this.model;
      for (const part of this.rel(path).split('/').filter(Boolean)) {
        let next = dir.entries.get(part);
        if (!next) dir.entries.set(part, (next = newDir()));
        if (next.kind !== 'dir') throw new Error(`power-loss model: ${part} of ${path} is a file`);
        dir = next;
      }
      this.record(`mkdir ${this.rel(path)}`);
    }
    return first;
  }

  async rename(from: string, to: string): Promise<void> {
    await nodeFs.rename(from, to);
    const source = this.dir(dirname(from));
    const node = source.entries.get(this.name(from))!;
    source.entries.delete(this.name(from));
    this.dir(dirname(to)).entries.set(this.name(to), node);
    this.record(`rename ${this.rel(from)} -> ${this.rel(to)}`);
  }

  async unlink(path: string): Promise<void> {
    await nodeFs.unlink(path);
    const parent = this.lookup(dirname(path));
    if (parent?.kind === 'dir' && parent.entries.delete(this.name(path))) this.record(`unlink ${this.rel(path)}`);
  }

  async removeTree(path: string): Promise<void> {
    await nodeFs.removeTree(path);
    const parent = this.lookup(dirname(path));
    if (parent?.kind === 'dir' && parent.entries.delete(this.name(path))) this.record(`rm -r ${this.rel(path)}`);
  }

  async syncDir(path: string): Promise<void> {
    await nodeFs.syncDir(path);
    const dir = this.dir(path);
    if (this.syncing('syncDir', path)) dir.synced = new Map(dir.entries);
    this.record(`fsync dir ${this.rel(path) || '.'}`);
  }
}

/** The model of what is under `root` now, all of it durable. */
function scan(root: string): DirNode {
  const dir = newDir();
  for (const name of readdirSync(root)) {
    const path = join(root, name);
    const node: Node = statSync(path).isDirectory() ? scan(path) : { kind: 'file', data: readFileSync(path), synced: readFileSync(path) };
    dir.entries.set(name, node);
  }
  dir.synced = new Map(dir.entries);
  return dir;
}

/** The disk after a power cut, as `variant` has it; undefined for torn-append when nothing is half-written. */
function image(root: DirNode, variant: CrashVariant): DiskImage | undefined {
  const files = new Map<string, Buffer>();
  const dirs: string[] = [];
  let torn = false;
  const walk = (dir: DirNode, prefix: string) => {
    for (const [name, node] of variant === 'metadata-without-data' ? dir.entries : dir.synced) {
      const path = prefix ? `${prefix}/${name}` : name;
      if (node.kind === 'dir') {
        dirs.push(path);
        walk(node, path);
        continue;
      }
      let content = node.synced;
      if (variant === 'torn-append' && node.data.length > node.synced.length && node.data.subarray(0, node.synced.length).equals(node.synced)) {
        content = node.data.subarray(0, node.synced.length + Math.ceil((node.data.length - node.synced.length) / 2));
        torn = true;
      }
      files.set(path, content);
    }
  };
  walk(root, '');
  if (variant === 'torn-append' && !torn) return undefined;
  return { variant, files, dirs };
}

/** Writes the image into `dir` (empty or missing). */
export function materialise(disk: DiskImage, dir: string): void {
  mkdirSync(dir, { recursive: true });
  for (const d of disk.dirs) mkdirSync(join(dir, d), { recursive: true });
  for (const [path, content] of disk.files) writeFileSync(join(dir, path), content);
}
