/*
 * The last good configuration on disk, so a sidecar restarted while the repo is away still routes.
 *
 * Layout: `blobs/<sha256>` holds each file's bytes, `manifest.json` maps paths to blobs for one
 * version. A save writes the blobs it lacks (temp file, fsync, rename), fsyncs the blob directory,
 * then swaps the manifest the same way and fsyncs its directory; blobs no manifest names are
 * removed only after that. The manifest is the single point of switch, so a crash at any moment
 * leaves either the old version or the new one, never a mix. A save writes only files whose bytes
 * are new, so a change to one service of thousands costs one blob and the manifest.
 *
 * Every file-system call goes through `fs` (common/durable-fs.ts), so a power-loss test can replay
 * only what was fsynced at every point of a save.
 */
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { inParallel, nodeFs, type DurableFs } from '../../common/durable-fs.js';

export interface CachedConfig {
  version: string;
  /** Paths without a leading `/`: `mesh.json`, `services/<id>.json`, `sidecar.json`. */
  files: Map<string, Buffer>;
  savedAt: string;
}

/** Where a test may make a save die, to show the step after it is needed. */
export type CacheWriteStep = 'blobs-written' | 'manifest-temp-written';

interface Manifest {
  format: 1;
  version: string;
  savedAt: string;
  files: Record<string, string>;
}

const MANIFEST = 'manifest.json';
const TEMP_SUFFIX = '.tmp';

export class ConfigCache {
  private readonly blobs: string;
  private ready?: Promise<void>;

  constructor(
    readonly dir: string,
    private readonly faults: { crashAfter?: CacheWriteStep } = {},
    private readonly fs: DurableFs = nodeFs,
  ) {
    this.blobs = join(dir, 'blobs');
  }

  /** Creates the directories and removes what an interrupted save left; once per instance. */
  private init(): Promise<void> {
    this.ready ??= (async () => {
      await this.fs.mkdir(this.blobs);
      await this.fs.syncDir(this.dir);
      for (const dir of [this.dir, this.blobs]) {
        for (const name of await this.fs.readdir(dir)) if (name.endsWith(TEMP_SUFFIX)) await this.fs.unlink(join(dir, name));
      }
    })();
    return this.ready;
  }

  /** The cached configuration, or undefined when there is none. Throws when it is unreadable. */
  async load(): Promise<CachedConfig | undefined> {
    await this.init();
    let manifest: Manifest;
    try {
      manifest = JSON.parse((await this.fs.readFile(join(this.dir, MANIFEST))).toString('utf8')) as Manifest;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new Error(`the configuration cache ${this.dir} is unreadable: ${(error as Error).message}`, { cause: error });
    }
    if (manifest.format !== 1 || typeof manifest.version !== 'string' || typeof manifest.files !== 'object' || manifest.files === null) {
      throw new Error(`the configuration cache ${join(this.dir, MANIFEST)} is not a manifest this sidecar writes`);
    }
    const files = new Map<string, Buffer>();
    for (const [path, sha] of Object.entries(manifest.files)) {
      const content = /^[0-9a-f]{64}$/.test(sha) ? await this.fs.readFile(join(this.blobs, sha)).catch(() => undefined) : undefined;
      // fsync makes this impossible short of a failing disk; refuse rather than run a torn config.
      if (!content || sha256(content) !== sha) throw new Error(`the configuration cache ${this.dir} is damaged: ${path} (blob ${sha}) is missing or corrupt`);
      files.set(path, content);
    }
    return { version: manifest.version, files, savedAt: manifest.savedAt };
  }

  async save(version: string, files: ReadonlyMap<string, Buffer>): Promise<void> {
    await this.init();
    const manifest: Manifest = { format: 1, version, savedAt: new Date().toISOString(), files: {} };
    const existing = new Set(await this.fs.readdir(this.blobs));
    const missing = new Map<string, Buffer>();
    for (const [path, content] of files) {
      const sha = sha256(content);
      manifest.files[path.replace(/^\/+/, '')] = sha;
      if (!existing.has(sha)) missing.set(sha, content);
    }
    await inParallel([...missing], ([sha, content]) => this.writeSynced(this.blobs, sha, content), 16);
    // Also covers blobs an earlier save renamed into place but died before syncing.
    await this.fs.syncDir(this.blobs);
    this.crashPoint('blobs-written');

    const temp = await this.writeTemp(this.dir, MANIFEST, Buffer.from(JSON.stringify(manifest)));
    this.crashPoint('manifest-temp-written');
    await this.fs.rename(temp, join(this.dir, MANIFEST));
    await this.fs.syncDir(this.dir);

    const referenced = new Set(Object.values(manifest.files));
    const orphans = [...existing, ...missing.keys()].filter((name) => !referenced.has(name) && !name.endsWith(TEMP_SUFFIX));
    await inParallel(orphans, (name) => this.fs.unlink(join(this.blobs, name)), 16);
  }

  private async writeTemp(dir: string, name: string, content: Buffer): Promise<string> {
    const temp = join(dir, `${name}.${randomBytes(6).toString('hex')}${TEMP_SUFFIX}`);
    const handle = await this.fs.open(temp, 'create');
    try {
      await handle.write(content);
      await handle.sync();
    } finally {
      await handle.close();
    }
    return temp;
  }

  /** Written and synced under a temp name, then renamed; the caller syncs the directory. */
  private async writeSynced(dir: string, name: string, content: Buffer): Promise<void> {
    await this.fs.rename(await this.writeTemp(dir, name, content), join(dir, name));
  }

  private crashPoint(step: CacheWriteStep): void {
    if (this.faults.crashAfter === step) throw new Error(`simulated crash after ${step}`);
  }
}

function sha256(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}
