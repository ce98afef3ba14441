// Builds images/Dockerfile's images without a Docker engine: the Debian base images it names are
// made here with mmdebstrap and imported with buildah, then `buildah bud` (chroot isolation, never
// pulling) builds each target. Everything lives in a buildah store of its own under the cache
// folder. An image is rebuilt only when the hash of its inputs changes (the Dockerfile, its ignore
// file, every file it copies, the base images, buildah's version), and that hash is kept on the
// image as a label, so a warm run reads two labels and builds nothing.
import { execa } from 'execa';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FLB_MESH_VERSION, MESH_IMAGE } from '../../common/contract/version.js';
import { cacheDir } from '../cache.js';
import { CHECKOUT } from '../node-simulator/images.js';
import { changedFiles, hashInputs, MissingInputError, parseDockerfile, parseIgnoreFile } from './dockerfile.js';

/**
 * Kubernetes reads an image name without a registry as Docker Hub's: the tags say so, so that a
 * runtime given these images finds them under the names pods use.
 */
const fullyQualified = (reference: string) => `docker.io/${reference}`;

export const IMAGES = {
  sidecar: { target: 'sidecar', reference: fullyQualified(MESH_IMAGE) },
  'control-plane': { target: 'control-plane', reference: fullyQualified(`flomesh/flb-mesh-control-plane:${FLB_MESH_VERSION}`) },
} as const;
export type ImageName = keyof typeof IMAGES;

/**
 * The base images the Dockerfile may name, and how each is made: a Debian root filesystem with
 * only the essential packages and these (their documentation left out). The tag pins Node's
 * upstream version: when Debian moves it, the base fails to build and says so, rather than the
 * images changing Node under the same tag. Debian's own revisions (security fixes) go through.
 */
export const BASES: Record<string, BaseRecipe> = {
  // bpftool loads the eBPF programs and mount mounts bpffs when a node has none (the CNI agent in eBPF mode).
  'localhost/flb-mesh-base:trixie-nodejs20.19.2': { suite: 'trixie', nodejs: '20.19.2', packages: ['nodejs', 'iptables', 'bpftool', 'mount'] },
  'localhost/flb-mesh-build-base:trixie-nodejs20.19.2': {
    suite: 'trixie',
    nodejs: '20.19.2',
    // clang and libbpf's headers compile the eBPF programs (bpf/src); without them build-native.sh skips them.
    packages: ['nodejs', 'gcc', 'libc6-dev', 'libnode-dev', 'libuv1-dev', 'clang', 'libbpf-dev'],
  },
};

export interface BaseRecipe {
  suite: string;
  nodejs: string;
  packages: string[];
}

const LEFT_OUT = ['/usr/share/doc/*', '/usr/share/man/*', '/usr/share/info/*', '/usr/share/locale/*'];
const INPUTS_LABEL = 'io.flomesh.flb-mesh.inputs';
const STORE_BUDGET_BYTES = 4e9;
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** Where RUN steps find the host's CA bundle (hostCaBundle). */
const BUILD_CA_PATH = '/run/flb-build-extra-ca.pem';

export interface BuiltImage {
  name: ImageName;
  reference: string;
  id: string;
  /** The hash of its inputs (its label). */
  inputs: string;
  /** Uncompressed: the sum of its layers. */
  sizeBytes: number;
  /** False when the image in the store already had these inputs. */
  built: boolean;
  seconds: number;
}

export interface BuildOptions {
  /** The build context; default $FLB_IMAGES_CONTEXT, else this checkout. */
  context?: string;
  /** Default `<context>/images/Dockerfile`, with `<dockerfile>.dockerignore` beside it. */
  dockerfile?: string;
  images?: ImageName[];
  store?: ImageStore;
  onProgress?: (message: string) => void;
}

/** buildah on a store of our own (not the machine's /var/lib/containers). */
export class ImageStore {
  readonly root: string;
  readonly runRoot: string;
  readonly logDir: string;

  constructor(root = join(cacheDir(), 'containers')) {
    this.root = join(root, 'storage');
    this.logDir = join(root, 'logs');
    // Locks and mount state belong on a tmpfs; one per store, so two cache folders never share one.
    this.runRoot = `/run/flb-mesh-containers-${createHash('sha256').update(this.root).digest('hex').slice(0, 8)}`;
  }

  async buildah(args: string[], options: { log?: string } = {}): Promise<string> {
    await requireTool('buildah');
    const argv = ['--root', this.root, '--runroot', this.runRoot, ...args];
    if (!options.log) {
      const result = await execa('buildah', argv, { reject: false, all: true });
      if (result.exitCode !== 0) throw new Error(`buildah ${args[0]} failed (exit ${result.exitCode}): ${lastLines(result.all ?? '', 15)}`);
      return result.stdout;
    }
    const fd = openSync(options.log, 'w');
    try {
      const child = spawn('buildah', argv, { stdio: ['ignore', fd, fd] });
      const exitCode = await new Promise<number | string>((resolve, reject) => {
        child.once('error', reject);
        child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
      });
      if (exitCode !== 0) {
        throw new Error(`buildah ${args[0]} failed (exit ${exitCode}; log ${options.log}): ${lastLines(readFileSync(options.log, 'utf8'), 15)}`);
      }
      return '';
    } finally {
      closeSync(fd);
    }
  }

  /** The image's id, labels and uncompressed size, or undefined when the store has no such image. */
  async inspect(reference: string): Promise<{ id: string; labels: Record<string, string>; sizeBytes: number } | undefined> {
    await requireTool('buildah');
    const result = await execa('buildah', ['--root', this.root, '--runroot', this.runRoot, 'inspect', '--type', 'image', reference], { reject: false });
    if (result.exitCode !== 0) return undefined;
    const image = JSON.parse(result.stdout) as { FromImageID: string; Manifest: string; OCIv1: { config?: { Labels?: Record<string, string> } } };
    const layers = (JSON.parse(image.Manifest) as { layers: { size: number }[] }).layers;
    return { id: image.FromImageID, labels: image.OCIv1.config?.Labels ?? {}, sizeBytes: layers.reduce((sum, layer) => sum + layer.size, 0) };
  }

  logFile(name: string): string {
    mkdirSync(this.logDir, { recursive: true });
    return join(this.logDir, `${name.replace(/[^\w.-]+/g, '_')}.log`);
  }
}

const tools: Record<string, Promise<void>> = {};
function requireTool(tool: 'buildah' | 'mmdebstrap' | 'tar'): Promise<void> {
  return (tools[tool] ??= execa('sh', ['-c', `command -v ${tool}`]).then(
    () => undefined,
    () => {
      throw new Error(`${tool} is not installed: building the images needs it (apt-get install ${tool}; 'npm run setup' installs scripts/apt-packages.txt)`);
    },
  ));
}

const lastLines = (text: string, count: number) => text.trim().split('\n').slice(-count).join('\n');

const sha256 = (...parts: string[]) => parts.reduce((hash, part) => hash.update(part).update('\0'), createHash('sha256')).digest('hex');

/** Runs `work`, saying every 30 s that it still runs (a cold base or build takes minutes). */
async function withHeartbeat<T>(what: string, progress: (message: string) => void, work: () => Promise<T>): Promise<T> {
  const started = Date.now();
  const timer = setInterval(() => progress(`${what}: still running, ${Math.round((Date.now() - started) / 1000)} s`), 30_000);
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}

/** The base image under its reference, made from its recipe unless the store has it with the same recipe. */
async function ensureBase(store: ImageStore, reference: string, recipe: BaseRecipe, progress: (message: string) => void): Promise<string> {
  const inputs = sha256(JSON.stringify(recipe), JSON.stringify(LEFT_OUT), PATH, 'essential');
  const existing = await store.inspect(reference);
  if (existing?.labels[INPUTS_LABEL] === inputs) {
    progress(`${reference}: up to date`);
    return existing.id;
  }
  await requireTool('mmdebstrap');
  await requireTool('tar');
  const started = Date.now();
  const work = mkdtempSync(join(store.root, '..', 'base-'));
  const log = store.logFile(reference);
  try {
    progress(`${reference}: making a Debian ${recipe.suite} root filesystem with mmdebstrap (${recipe.packages.join(', ')}; 1-3 min cold; log ${log})`);
    const rootfs = join(work, 'rootfs.tar');
    const args = [
      '--variant=essential',
      `--include=${recipe.packages.join(',')}`,
      ...LEFT_OUT.map((path) => `--dpkgopt=path-exclude=${path}`),
      recipe.suite,
      rootfs,
    ];
    const made = await withHeartbeat(`${reference}: mmdebstrap`, progress, () => execa('mmdebstrap', args, { reject: false, all: true }));
    writeFileSync(log, made.all ?? '');
    if (made.exitCode !== 0) throw new Error(`mmdebstrap could not make ${reference} (log ${log}): ${lastLines(made.all ?? '', 10)}`);
    const nodejs = debianVersion((await execa('tar', ['-xOf', rootfs, './var/lib/dpkg/status'])).stdout, 'nodejs');
    if (!nodejs?.startsWith(`${recipe.nodejs}+`) && !nodejs?.startsWith(`${recipe.nodejs}-`)) {
      throw new Error(
        `${recipe.suite}'s nodejs is now ${nodejs ?? 'missing'}, and ${reference} pins Node ${recipe.nodejs}: check the new Node with the test suite, ` +
          `then move the pin in devenv/images/builder.ts (BASES) and images/Dockerfile (ARG RUNTIME_BASE, BUILD_BASE) together`,
      );
    }
    const container = (await store.buildah(['from', 'scratch'])).trim();
    try {
      await store.buildah(['add', '--quiet', container, rootfs, '/']);
      await store.buildah([
        'config',
        '--env',
        `PATH=${PATH}`,
        '--label',
        `${INPUTS_LABEL}=${inputs}`,
        '--label',
        `io.flomesh.flb-mesh.nodejs=${nodejs}`,
        container,
      ]);
      await store.buildah(['commit', '--quiet', '--rm', container, reference]);
    } catch (error) {
      await store.buildah(['rm', container]).catch(() => undefined);
      throw error;
    }
    const base = (await store.inspect(reference))!;
    progress(`${reference}: made in ${Math.round((Date.now() - started) / 1000)} s (nodejs ${nodejs}, ${megabytes(base.sizeBytes)})`);
    return base.id;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** A package's version in a dpkg status file. */
function debianVersion(status: string, name: string): string | undefined {
  for (const stanza of status.split('\n\n')) {
    if (new RegExp(`^Package: ${name}$`, 'm').test(stanza)) return /^Version: (.+)$/m.exec(stanza)?.[1];
  }
  return undefined;
}

export const megabytes = (bytes: number) => `${(bytes / 1_000_000).toFixed(0)} MB`;

/**
 * Builds the images (both unless told) from the Dockerfile, each only if its inputs changed.
 * Inputs are checked before anything is made: a missing one fails at once, naming every one.
 */
export async function buildImages(options: BuildOptions = {}): Promise<BuiltImage[]> {
  const progress = options.onProgress ?? (() => {});
  // Another tree than this checkout: a clean export of a commit while the checkout holds unfinished work.
  const context = options.context ?? process.env.FLB_IMAGES_CONTEXT ?? CHECKOUT;
  const dockerfile = options.dockerfile ?? join(context, 'images', 'Dockerfile');
  const ignoreFile = `${dockerfile}.dockerignore`;
  for (const file of [dockerfile, ignoreFile]) {
    if (!existsSync(file)) throw new MissingInputError(`the image build needs ${file}, which does not exist`);
  }
  const dockerfileText = readFileSync(dockerfile, 'utf8');
  const ignoreText = readFileSync(ignoreFile, 'utf8');
  const parsed = parseDockerfile(dockerfileText, dockerfile);
  const inputs = hashInputs(context, parsed, parseIgnoreFile(ignoreText, ignoreFile), dockerfile);
  const unknown = parsed.bases.filter(({ reference }) => !BASES[reference]);
  if (unknown.length) {
    throw new Error(
      `${dockerfile} builds FROM ${unknown.map(({ reference, line }) => `${reference} (line ${line})`).join(', ')}, which this builder cannot make ` +
        `(it makes ${Object.keys(BASES).join(', ')}; nothing is pulled)`,
    );
  }
  if (process.getuid?.() !== 0) throw new Error('building the images needs root (mmdebstrap and buildah with chroot isolation): run as root, e.g. with sudo');
  const store = options.store ?? new ImageStore();
  mkdirSync(store.root, { recursive: true });
  progress(`inputs: ${Object.keys(inputs.files).length} files, hash ${inputs.hash.slice(0, 12)}; store ${store.root}`);
  const references = [...new Set(parsed.bases.map(({ reference }) => reference))];
  const baseIds = await Promise.all(references.map((reference) => ensureBase(store, reference, BASES[reference]!, progress)));
  const buildahVersion = (await store.buildah(['--version'])).trim();
  const extraCa = hostCaBundle();

  const built: BuiltImage[] = [];
  for (const name of options.images ?? (Object.keys(IMAGES) as ImageName[])) {
    const { target, reference } = IMAGES[name];
    const started = Date.now();
    const key = sha256(dockerfileText, ignoreText, target, inputs.hash, ...references.map((r, i) => `${r}@${baseIds[i]}`), buildahVersion);
    const existing = await store.inspect(reference);
    if (existing?.labels[INPUTS_LABEL] === key) {
      progress(`${reference}: up to date (${megabytes(existing.sizeBytes)})`);
      built.push({ name, reference, id: existing.id, inputs: key, sizeBytes: existing.sizeBytes, built: false, seconds: (Date.now() - started) / 1000 });
      continue;
    }
    const log = store.logFile(reference);
    const record = join(store.logDir, `${name}.inputs.json`);
    const before = existsSync(record) ? (JSON.parse(readFileSync(record, 'utf8')) as Record<string, string>) : undefined;
    const changed = before ? changedFiles(before, inputs.files) : [];
    const why = !existing
      ? 'not in the store'
      : changed.length
        ? `${changed.length} ${changed.length === 1 ? 'file' : 'files'} changed: ${changed.slice(0, 5).join(', ')}${changed.length > 5 ? ', ...' : ''}`
        : 'the Dockerfile, its bases or buildah changed';
    progress(`${reference}: building target ${target} (${why}; buildah bud; log ${log})`);
    // --force-rm: a failed step leaves no working container behind in the store.
    const args = ['bud', '--isolation', 'chroot', '--pull=never', '--layers', '--force-rm', '-f', dockerfile, '--ignorefile', ignoreFile];
    args.push('--target', target, '--label', `${INPUTS_LABEL}=${key}`, '-t', reference);
    if (extraCa) args.push('--volume', `${extraCa}:${BUILD_CA_PATH}:ro`, '--build-arg', `NODE_EXTRA_CA_CERTS=${BUILD_CA_PATH}`);
    const steps = watchSteps(log, (step) => progress(`${reference}: ${step}`));
    try {
      await withHeartbeat(`${reference}: buildah bud`, progress, () => store.buildah([...args, context], { log }));
    } finally {
      steps.stop();
    }
    writeFileSync(record, JSON.stringify(inputs.files));
    const image = (await store.inspect(reference))!;
    const seconds = (Date.now() - started) / 1000;
    progress(`${reference}: built in ${Math.round(seconds)} s (${megabytes(image.sizeBytes)})`);
    built.push({ name, reference, id: image.id, inputs: key, sizeBytes: image.sizeBytes, built: true, seconds });
  }
  if (built.some((image) => image.built)) await pruneWhenLarge(store, progress);
  return built;
}

/**
 * Every rebuild leaves the layers it replaced, and a store that only grows fills a long-lived
 * machine's disk. Past a budget the unused ones go: the next rebuild then redoes its npm ci (about a
 * minute), so it is not done on every build.
 */
async function pruneWhenLarge(store: ImageStore, progress: (message: string) => void): Promise<void> {
  const bytes = Number((await execa('du', ['-sb', store.root], { reject: false })).stdout.split('\t')[0]);
  if (!(bytes > STORE_BUDGET_BYTES)) return;
  progress(`the image store holds ${megabytes(bytes)}, over ${megabytes(STORE_BUDGET_BYTES)}: removing layers no image uses`);
  await store.buildah(['rmi', '--prune']);
}

/**
 * What the build's RUN steps trust besides Node's own roots: what the host trusts. Behind a
 * TLS-intercepting proxy (these machines have one) that is where the proxy's CA is; elsewhere it
 * only repeats the public roots.
 */
function hostCaBundle(): string | undefined {
  return [process.env.NODE_EXTRA_CA_CERTS, '/etc/ssl/certs/ca-certificates.crt'].find((path): path is string => !!path && existsSync(path));
}

/** Reports each RUN step and commit as buildah writes it to its log (the slow parts of a build). */
function watchSteps(log: string, report: (step: string) => void): { stop(): void } {
  let offset = 0;
  const timer = setInterval(() => {
    if (!existsSync(log) || statSync(log).size <= offset) return;
    const fresh = readFileSync(log).subarray(offset);
    const complete = fresh.lastIndexOf('\n') + 1;
    offset += complete;
    for (const line of fresh.subarray(0, complete).toString('utf8').split('\n')) {
      if (/STEP \d+\/\d+: RUN |COMMIT /.test(line)) report(line.length > 140 ? `${line.slice(0, 140)}...` : line);
    }
  }, 1000);
  return { stop: () => clearInterval(timer) };
}
