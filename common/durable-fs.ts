import { constants } from 'node:fs';
import { access, mkdir, open, readFile, readdir, rename, rm, type FileHandle } from 'node:fs/promises';

/**
 * The file-system calls every crash-safe writer here makes (the repo's disk store, the sidecar's
 * configuration cache), behind one small interface. `nodeFs` is node:fs and nothing more: the same
 * system calls the writers made before. The interface exists so that a test can put a recording
 * implementation underneath (common/testing/power-loss.ts) that knows, after every call, what a
 * power cut would leave (only what was fsynced), which kill -9 can never show: it keeps the page
 * cache.
 */
export interface DurableFile {
  /** Writes all of `data` at the end of what this handle wrote so far (a new file, or an append-mode one). */
  write(data: Buffer): Promise<void>;
  sync(): Promise<void>;
  datasync(): Promise<void>;
  truncate(length: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * `create`: a new file, failing if it exists (O_CREAT|O_EXCL); `append`: an existing file, every
 * write at its end (O_APPEND, never created); `update`: an existing file, for truncate.
 */
export type OpenMode = 'create' | 'append' | 'update';

export interface DurableFs {
  open(path: string, mode: OpenMode): Promise<DurableFile>;
  readFile(path: string): Promise<Buffer>;
  readdir(path: string): Promise<string[]>;
  exists(path: string): Promise<boolean>;
  /** Creates the directory and any missing parents; returns the first one created (undefined: it existed). */
  mkdir(path: string): Promise<string | undefined>;
  rename(from: string, to: string): Promise<void>;
  /** Removes a file; one that is not there is fine. */
  unlink(path: string): Promise<void>;
  /** Removes a directory and everything in it; one that is not there is fine. */
  removeTree(path: string): Promise<void>;
  /** fsync of the directory: makes the creations, renames and removals in it durable. */
  syncDir(path: string): Promise<void>;
}

const OPEN_FLAGS: Record<OpenMode, string | number> = {
  create: 'wx',
  append: constants.O_WRONLY | constants.O_APPEND,
  update: 'r+',
};

class NodeFile implements DurableFile {
  constructor(private readonly handle: FileHandle) {}
  write(data: Buffer): Promise<void> {
    return this.handle.writeFile(data);
  }
  sync(): Promise<void> {
    return this.handle.sync();
  }
  datasync(): Promise<void> {
    return this.handle.datasync();
  }
  truncate(length: number): Promise<void> {
    return this.handle.truncate(length);
  }
  close(): Promise<void> {
    return this.handle.close();
  }
}

export const nodeFs: DurableFs = {
  open: async (path, mode) => new NodeFile(await open(path, OPEN_FLAGS[mode])),
  readFile: (path) => readFile(path),
  readdir: (path) => readdir(path),
  exists: (path) =>
    access(path).then(
      () => true,
      () => false,
    ),
  mkdir: (path) => mkdir(path, { recursive: true }),
  rename: (from, to) => rename(from, to),
  unlink: (path) => rm(path, { force: true }),
  removeTree: (path) => rm(path, { recursive: true, force: true }),
  syncDir,
};

export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** A bounded parallel loop: ten thousand files opened at once would run out of descriptors. */
export async function inParallel<T>(items: readonly T[], work: (item: T) => Promise<unknown>, limit = 32): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}
