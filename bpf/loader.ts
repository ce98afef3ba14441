/*
 * Loads the programs of bpf/src into the kernel, attaches them to a cgroup v2 through bpf_links,
 * registers network namespaces, and removes all of it. Everything of one mesh is pinned under
 * <bpffs>/flb-mesh/<mesh>/ (progs/, maps/, links/), so it outlives the command that made it and
 * `unload` finds it again. Loading (ELF, relocations, the verifier) goes through bpftool; the
 * links, map entries and the namespace cookie through the addon (bpf/native), since bpftool
 * attaches cgroup programs without bpf_link and costs a process per call.
 */
import { execa } from 'execa';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, rmdirSync, statSync } from 'node:fs';
import { endianness, release } from 'node:os';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Interception } from '../common/contract/index.js';
import { ActionableError } from '../common/errors.js';
import { KEY_SIZE, MAP, cookieKey, keyCookie, namespaceEntries } from './maps.js';
import { addonPath, loadAddon, type AttachType } from './native/index.js';

export const PROGRAMS: readonly { name: string; attach: AttachType }[] = [
  { name: 'flb_connect4', attach: 'connect4' },
  { name: 'flb_connect6', attach: 'connect6' },
  { name: 'flb_sockops', attach: 'sockops' },
  { name: 'flb_getsockopt', attach: 'getsockopt' },
  { name: 'flb_peername4', attach: 'getpeername4' },
  { name: 'flb_peername6', attach: 'getpeername6' },
  { name: 'flb_sendmsg4', attach: 'sendmsg4' },
  { name: 'flb_sendmsg6', attach: 'sendmsg6' },
  { name: 'flb_recvmsg4', attach: 'recvmsg4' },
  { name: 'flb_recvmsg6', attach: 'recvmsg6' },
];

export const DEFAULT_BPFFS = '/sys/fs/bpf';
const FALLBACK = 'iptables interception (mode "iptables" or "cni") is the fallback and needs none of this';
/** bpf_get_netns_cookie in sockops and SO_NETNS_COOKIE came with 5.15 and 5.14. */
const MINIMUM_KERNEL: [number, number] = [5, 15];

export interface Paths {
  mesh: string;
  bpffs: string;
}

export function meshDir({ mesh, bpffs }: Paths): string {
  return join(bpffs, 'flb-mesh', mesh);
}
const progPin = (p: Paths, name: string) => join(meshDir(p), 'progs', name);
const mapPin = (p: Paths, name: string) => join(meshDir(p), 'maps', name);
const linkPin = (p: Paths, name: string) => join(meshDir(p), 'links', name);

export function validateMeshName(mesh: string): string {
  if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(mesh)) {
    throw new ActionableError(`mesh name '${mesh}' is not a DNS label`, 'use lowercase letters, digits and dashes, 63 at most (the mesh.json name)');
  }
  return mesh;
}

/** The compiled programs, seen from the sources (bpf/) and the build (dist/bpf/). */
export function objectPath(name = 'redirect.bpf.o'): string | undefined {
  for (const candidate of [`./build/${name}`, `../../bpf/build/${name}`]) {
    const path = fileURLToPath(new URL(candidate, import.meta.url));
    if (existsSync(path)) return path;
  }
  return undefined;
}

// ---- /proc/self/mountinfo ----

export interface Mount {
  mountPoint: string;
  fsType: string;
}

/** Mount points as the kernel escapes them (\040 for a space, ...), decoded. */
export function parseMountinfo(text: string): Mount[] {
  const mounts: Mount[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const separator = fields.indexOf('-');
    if (fields.length < 10 || separator < 6) continue;
    const mountPoint = fields[4]!.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
    mounts.push({ mountPoint, fsType: fields[separator + 1]! });
  }
  return mounts;
}

/** The mount a path lives on: the longest mount point that is a prefix of it (the last one mounted wins). */
export function mountOf(mounts: readonly Mount[], path: string): Mount | undefined {
  let best: Mount | undefined;
  for (const mount of mounts) {
    const prefix = mount.mountPoint === '/' ? '/' : `${mount.mountPoint}/`;
    if (path !== mount.mountPoint && !path.startsWith(prefix)) continue;
    if (!best || mount.mountPoint.length >= best.mountPoint.length) best = mount;
  }
  return best;
}

const readMounts = () => parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'));

/** The root of the cgroup v2 hierarchy: /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one. */
export function defaultCgroup(mounts: readonly Mount[] = readMounts()): string | undefined {
  return mounts.find((m) => m.fsType === 'cgroup2')?.mountPoint;
}

/** The cgroup option that finds the host's cgroup v2 hierarchy (hostCgroup) instead of naming a path. */
export const AUTO_CGROUP = 'auto';
/** The host's mount table as a process in the host's PID namespace reads it (pid 1 is the host's init). */
export const HOST_MOUNTINFO = '/proc/1/mountinfo';

export type HostCgroup = { path: string; hostPath: string } | { missing: string };

/**
 * Where this process reaches the host's cgroup v2 hierarchy, from the host's mount table: the
 * cgroup2 mount at the host's path P, seen here at <hostRoot>/P (the chart mounts the host's
 * /sys/fs/cgroup at /host/sys/fs/cgroup, submounts included). A container's own mount table would
 * not do: its first cgroup2 is its own cgroup's subtree. The usual places come first; every
 * cgroup2 mount shows the one hierarchy, so any other is as good.
 */
export function hostCgroup(hostMounts: readonly Mount[], hostRoot = '/'): HostCgroup {
  // A kernel writes mount points as plain absolute paths; one that is not (a '..' would leave the
  // host root) is not taken.
  const cgroup2 = hostMounts.filter((m) => m.fsType === 'cgroup2' && m.mountPoint.startsWith('/') && posix.normalize(m.mountPoint) === m.mountPoint);
  const chosen = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'].map((at) => cgroup2.find((m) => m.mountPoint === at)).find(Boolean) ?? cgroup2[0];
  if (chosen) return { path: join(hostRoot, chosen.mountPoint), hostPath: chosen.mountPoint };
  // Short: the reason reaches an eBPF pod's validation through a 255-byte interface alias.
  const v1 = hostMounts.filter((m) => m.fsType === 'cgroup').map((m) => m.mountPoint);
  const found = v1.length ? `only cgroup v1 (${[...v1.slice(0, 2), ...(v1.length > 2 ? [`${v1.length - 2} more`] : [])].join(', ')})` : 'no cgroup filesystem';
  return {
    missing: `a cgroup v2 hierarchy: the host mounts ${found}; mount -t cgroup2 none /sys/fs/cgroup/unified, or boot with systemd.unified_cgroup_hierarchy=1`,
  };
}

function readHostMounts(): Mount[] | string {
  try {
    return parseMountinfo(readFileSync(HOST_MOUNTINFO, 'utf8'));
  } catch (error) {
    return `the host's mount table ${HOST_MOUNTINFO} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}), which finds its cgroup v2 hierarchy: run in the host's PID namespace (hostPID), or name the cgroup`;
  }
}

// ---- the feature check ----

export interface FeatureReport {
  ok: boolean;
  /** What is missing, each a sentence that says how to get it. */
  missing: string[];
  cgroup?: string;
  bpffs: string;
  kernel: string;
}

/**
 * Whether this host can run eBPF interception here, and if not exactly what is missing. Mounts
 * bpffs when it is not (the only change it makes). The verifier's verdict comes at load.
 */
export interface FeatureCheckOptions {
  /** A cgroup v2 folder, or 'auto' for the host's hierarchy (hostCgroup); default the first cgroup2 mount here. */
  cgroup?: string;
  /** Where this process sees the host's paths, for 'auto'. Default /. */
  hostRoot?: string;
  /** The host's mount table, for 'auto'; default read from /proc/1/mountinfo (tests give a host of their own). */
  hostMounts?: readonly Mount[];
  bpffs?: string;
}

export async function checkFeatures(options: FeatureCheckOptions = {}): Promise<FeatureReport> {
  const bpffs = options.bpffs ?? DEFAULT_BPFFS;
  const missing: string[] = [];
  const kernel = release();
  const [major = 0, minor = 0] = kernel.split(/[.-]/).map(Number);
  if (major < MINIMUM_KERNEL[0] || (major === MINIMUM_KERNEL[0] && minor < MINIMUM_KERNEL[1])) {
    missing.push(`Linux ${MINIMUM_KERNEL.join('.')} or later (this is ${kernel}): the network namespace cookie in sockops and SO_NETNS_COOKIE`);
  }
  if (endianness() !== 'LE') missing.push('a little-endian host (the map layouts are written little-endian)');
  if (process.getuid?.() !== 0) missing.push('root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN to load programs and attach them to cgroups)');

  let mounts = readMounts();
  let cgroup: string | undefined;
  /** For 'auto': where the host has the hierarchy, which a wrong path here is named by. */
  let hostPath: string | undefined;
  if (options.cgroup === AUTO_CGROUP) {
    const hostMounts = options.hostMounts ?? readHostMounts();
    const found = typeof hostMounts === 'string' ? { missing: hostMounts } : hostCgroup(hostMounts, options.hostRoot);
    if ('missing' in found) missing.push(found.missing);
    else ({ path: cgroup, hostPath } = found);
  } else {
    cgroup = options.cgroup ?? defaultCgroup(mounts);
    if (!cgroup)
      missing.push('a cgroup v2 hierarchy: none is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified, or boot with systemd.unified_cgroup_hierarchy=1)');
  }
  const notHere = cgroup && (!existsSync(cgroup) || !statSync(cgroup).isDirectory()) ? 'no such directory' : undefined;
  const fsType = cgroup && !notHere ? (mountOf(mounts, cgroup)?.fsType ?? 'no') : undefined;
  if (cgroup && hostPath && (notHere || fsType !== 'cgroup2')) {
    missing.push(
      `the host's cgroup v2 hierarchy (${hostPath} on the host) at ${cgroup}: ${notHere ?? `${fsType} filesystem, not cgroup2`}; mount the host's ${hostPath} there, or name the cgroup`,
    );
  } else if (cgroup && notHere) {
    missing.push(`the cgroup ${cgroup}: no such directory`);
  } else if (cgroup && fsType !== 'cgroup2') {
    missing.push(`a cgroup v2 path: ${cgroup} is on ${fsType} filesystem, not cgroup2 (v1 cgroups cannot hold socket programs)`);
  }

  if (mountOf(mounts, bpffs)?.fsType !== 'bpf' && process.getuid?.() === 0) {
    mkdirSync(bpffs, { recursive: true });
    const mounted = await execa('mount', ['-t', 'bpf', 'bpf', bpffs], { reject: false });
    if (mounted.exitCode !== 0) missing.push(`bpffs at ${bpffs}: mounting it failed (${mounted.stderr.trim() || `exit ${mounted.exitCode}`})`);
    mounts = readMounts();
  }
  if (mountOf(mounts, bpffs)?.fsType !== 'bpf' && !missing.some((m) => m.startsWith('bpffs')))
    missing.push(`bpffs mounted at ${bpffs} (mount -t bpf bpf ${bpffs})`);

  if ((await execa('bpftool', ['version'], { reject: false })).exitCode !== 0) missing.push('bpftool, which loads the programs (apt-get install bpftool)');
  if (!objectPath()) missing.push('the compiled programs bpf/build/redirect.bpf.o (apt-get install clang libbpf-dev, then bash scripts/build-native.sh)');
  if (!addonPath()) missing.push("the loader's addon bpf/native/build/flb-bpf.node (bash scripts/build-native.sh)");
  return { ok: missing.length === 0, missing, ...(cgroup ? { cgroup } : {}), bpffs, kernel };
}

function refuse(report: FeatureReport): never {
  throw new ActionableError(`eBPF interception cannot run here; missing: ${report.missing.join('; ')}`, FALLBACK);
}

// ---- load / unload ----

/**
 * What bpftool's output says was refused: the verifier's last word before its statistics line, and
 * which program; else the last lines as they are.
 */
export function describeLoadFailure(output: string): string {
  const lines = output
    .split('\n')
    .filter((l) => l.trim() && !l.startsWith('Warning: bpftool is now running in libbpf strict mode') && !l.startsWith('If it used to work'));
  const statistics = lines.findIndex((l) => /^processed \d+ insns/.test(l));
  const program = lines.map((l) => /prog '([^']+)': failed to load/.exec(l)?.[1]).find(Boolean);
  if (statistics > 0 && program) return `the verifier refused ${program}: ${lines[statistics - 1]!.trim()}`;
  return `bpftool prog loadall failed: ${lines.slice(-6).join(' | ')}`;
}

export interface LoadResult {
  mesh: string;
  cgroup: string;
  pins: string;
  alreadyLoaded: boolean;
}

function isComplete(paths: Paths): boolean {
  return PROGRAMS.every((p) => existsSync(linkPin(paths, p.name))) && Object.values(MAP).every((m) => existsSync(mapPin(paths, m)));
}

/**
 * Loads and attaches, or says it already is. Two loaders racing: the mesh's folder is made with
 * one mkdir, which only one of them can win; the other finds it and reports it loaded (or
 * half-loaded, with what to do).
 */
export async function load(options: {
  mesh: string;
  cgroup?: string;
  bpffs?: string;
  /** Another compiled object: for tests. */ object?: string;
}): Promise<LoadResult> {
  const report = await checkFeatures(options);
  if (!report.ok) refuse(report);
  const paths: Paths = { mesh: validateMeshName(options.mesh), bpffs: report.bpffs };
  const cgroup = report.cgroup!;
  const dir = meshDir(paths);
  mkdirSync(join(paths.bpffs, 'flb-mesh'), { recursive: true });
  try {
    mkdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    if (isComplete(paths)) {
      // A cgroup v2's id is its folder's inode number.
      const link = (await bpftoolJson(['link', 'show', 'pinned', linkPin(paths, PROGRAMS[0]!.name)])) as { cgroup_id?: number } | undefined;
      if (link?.cgroup_id !== undefined && link.cgroup_id !== statSync(cgroup).ino) {
        throw new ActionableError(
          `mesh ${paths.mesh} is already attached to another cgroup (id ${link.cgroup_id}), not ${cgroup} (id ${statSync(cgroup).ino})`,
          `unload it first (flb bpf unload --mesh ${paths.mesh}), or load another mesh name here`,
        );
      }
      return { mesh: paths.mesh, cgroup, pins: dir, alreadyLoaded: true };
    }
    throw new ActionableError(
      `mesh ${paths.mesh} is partly loaded at ${dir} (another loader is at work, or one was killed)`,
      `run 'flb bpf unload --mesh ${paths.mesh}' if no other loader is running, then load again`,
    );
  }
  try {
    const loaded = await execa('bpftool', ['prog', 'loadall', options.object ?? objectPath()!, join(dir, 'progs'), 'pinmaps', join(dir, 'maps')], {
      reject: false,
      all: true,
    });
    if (loaded.exitCode !== 0) {
      throw new ActionableError(`the kernel refused the eBPF programs: ${describeLoadFailure(loaded.all ?? '')}`, FALLBACK);
    }
    mkdirSync(join(dir, 'links'));
    const addon = loadAddon();
    for (const program of PROGRAMS) {
      try {
        addon.attachCgroup(progPin(paths, program.name), cgroup, program.attach, linkPin(paths, program.name));
      } catch (error) {
        throw new ActionableError(`attaching ${program.name} (${program.attach}) failed: ${(error as Error).message}`, FALLBACK);
      }
    }
  } catch (error) {
    await removeAll(paths);
    throw error;
  }
  return { mesh: paths.mesh, cgroup, pins: dir, alreadyLoaded: false };
}

interface Ids {
  programs: number[];
  maps: number[];
  links: number[];
}

async function bpftoolJson(args: string[]): Promise<unknown> {
  const result = await execa('bpftool', ['-j', ...args], { reject: false });
  if (result.exitCode !== 0) return undefined;
  return JSON.parse(result.stdout || 'null') as unknown;
}

const idOf = (value: unknown): number[] => (value && typeof value === 'object' && 'id' in value && typeof value.id === 'number' ? [value.id] : []);

async function pinnedIds(paths: Paths): Promise<Ids> {
  const ids: Ids = { programs: [], maps: [], links: [] };
  for (const [kind, folder, list] of [
    ['prog', 'progs', ids.programs],
    ['map', 'maps', ids.maps],
    ['link', 'links', ids.links],
  ] as const) {
    const dir = join(meshDir(paths), folder);
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) list.push(...idOf(await bpftoolJson([kind, 'show', 'pinned', join(dir, name)])));
  }
  return ids;
}

/** The ids of ours that the kernel still holds. */
async function stillThere(ids: Ids): Promise<string[]> {
  const left: string[] = [];
  for (const [kind, wanted] of [
    ['prog', ids.programs],
    ['map', ids.maps],
    ['link', ids.links],
  ] as const) {
    if (wanted.length === 0) continue;
    const live = await bpftoolJson([kind, 'show']);
    const liveIds = new Set(Array.isArray(live) ? live.flatMap(idOf) : []);
    for (const id of wanted) if (liveIds.has(id)) left.push(`${kind} ${id}`);
  }
  return left;
}

async function removeAll(paths: Paths): Promise<void> {
  const dir = meshDir(paths);
  if (!existsSync(dir)) return;
  if (existsSync(join(dir, 'links'))) {
    for (const name of readdirSync(join(dir, 'links'))) {
      try {
        loadAddon().detachLink(join(dir, 'links', name));
      } catch {
        // Removing the pin below detaches it as well once nobody holds it.
      }
    }
  }
  rmSync(dir, { recursive: true, force: true });
  try {
    rmdirSync(join(paths.bpffs, 'flb-mesh'));
  } catch {
    // Another mesh is still loaded, or it was never there.
  }
}

export interface UnloadResult {
  mesh: string;
  wasLoaded: boolean;
  removed: Ids;
}

/** Detaches and removes everything of the mesh, then waits until the kernel has freed it (a few ms). */
export async function unload(options: { mesh: string; bpffs?: string }): Promise<UnloadResult> {
  const paths: Paths = { mesh: validateMeshName(options.mesh), bpffs: options.bpffs ?? DEFAULT_BPFFS };
  if (!existsSync(meshDir(paths))) return { mesh: paths.mesh, wasLoaded: false, removed: { programs: [], maps: [], links: [] } };
  const ids = await pinnedIds(paths);
  await removeAll(paths);
  // Programs and maps are freed after an RCU grace period, not when the last pin goes.
  const deadline = Date.now() + 3000;
  let left = await stillThere(ids);
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    left = await stillThere(ids);
  }
  if (left.length > 0) {
    throw new ActionableError(
      `unloaded mesh ${paths.mesh}, but the kernel still holds ${left.join(', ')}`,
      'a process keeps a file descriptor of them open (bpftool prog show / map show names it); it goes when that process ends',
    );
  }
  return { mesh: paths.mesh, wasLoaded: true, removed: ids };
}

// ---- status ----

export interface ProgramStatus {
  name: string;
  attach: AttachType;
  programId?: number;
  linkId?: number;
  cgroupId?: number;
}

export interface Status {
  mesh: string;
  loaded: boolean;
  complete: boolean;
  pins: string;
  programs: ProgramStatus[];
  /** Network namespaces registered (entries of the settings map). */
  namespaces: number;
  /** Where the programs are attached, when that cgroup is found under the cgroup2 mount. */
  cgroup?: string;
}

/** The folder of the cgroup v2 with this id (its inode number), searched breadth first under the mount. */
export function cgroupPathOf(id: number, root = defaultCgroup()): string | undefined {
  if (!root) return undefined;
  const queue = [root];
  for (let visited = 0; queue.length > 0 && visited < 100_000; visited++) {
    const dir = queue.shift()!;
    try {
      if (statSync(dir).ino === id) return dir;
      for (const entry of readdirSync(dir, { withFileTypes: true })) if (entry.isDirectory()) queue.push(join(dir, entry.name));
    } catch {
      // Removed while we looked.
    }
  }
  return undefined;
}

export async function status(options: { mesh: string; bpffs?: string }): Promise<Status> {
  const paths: Paths = { mesh: validateMeshName(options.mesh), bpffs: options.bpffs ?? DEFAULT_BPFFS };
  const dir = meshDir(paths);
  const loaded = existsSync(dir);
  const programs: ProgramStatus[] = [];
  for (const program of PROGRAMS) {
    const entry: ProgramStatus = { name: program.name, attach: program.attach };
    if (loaded) {
      const prog = await bpftoolJson(['prog', 'show', 'pinned', progPin(paths, program.name)]);
      const link = (await bpftoolJson(['link', 'show', 'pinned', linkPin(paths, program.name)])) as { id?: number; cgroup_id?: number } | undefined;
      const [programId] = idOf(prog);
      if (programId !== undefined) entry.programId = programId;
      if (link?.id !== undefined) entry.linkId = link.id;
      if (link?.cgroup_id !== undefined) entry.cgroupId = link.cgroup_id;
    }
    programs.push(entry);
  }
  const namespaces = loaded && existsSync(mapPin(paths, MAP.settings)) ? loadAddon().mapKeys(mapPin(paths, MAP.settings), KEY_SIZE[MAP.settings]).length : 0;
  const cgroupId = programs.find((p) => p.cgroupId !== undefined)?.cgroupId;
  const cgroup = cgroupId !== undefined ? cgroupPathOf(cgroupId) : undefined;
  return { mesh: paths.mesh, loaded, complete: loaded && isComplete(paths), pins: dir, programs, namespaces, ...(cgroup ? { cgroup } : {}) };
}

// ---- per-namespace registration ----

function requireLoaded(paths: Paths): void {
  if (!isComplete(paths)) {
    throw new ActionableError(`mesh ${paths.mesh} is not loaded (nothing complete at ${meshDir(paths)})`, `run 'flb bpf load --mesh ${paths.mesh}' first`);
  }
}

function mapWriteError(map: string, error: unknown): ActionableError {
  const errno = (error as { errno?: number }).errno;
  // E2BIG (hash maps) and ENOSPC (LPM tries) both mean the map is full.
  if (errno === 7 || errno === 28) return new ActionableError(`the eBPF map ${map} is full`, 'unregister namespaces that are gone, or reload with bigger maps');
  return new ActionableError(`writing ${map} failed: ${(error as Error).message}`);
}

/** Its cookie, and its addresses other than loopback (which the programs leave alone by themselves). */
function namespaceInfo(netns: string): { cookie: bigint; ownAddresses: string[] } {
  let info: { cookie: bigint; addresses: string[] };
  try {
    info = loadAddon().netnsInfo(netns);
  } catch (error) {
    throw new ActionableError(
      `cannot read the network namespace ${netns}: ${(error as Error).message}`,
      'give the path of a live namespace, e.g. /var/run/netns/NAME or /proc/PID/ns/net',
    );
  }
  return { cookie: info.cookie, ownAddresses: info.addresses.filter((a) => !/^127\./.test(a) && a !== '::1') };
}

export interface Registration {
  mesh: string;
  netns: string;
  cookie: string;
}

/**
 * Makes the namespace meshed with these settings, or replaces its settings: the exclusions and
 * inclusions are written before the settings entry the programs look up first, and the ones no
 * longer wanted are removed after, so a connection never sees a namespace with half its rules. The
 * namespace's own addresses are read now and excluded (an app reaching itself is not a mesh
 * call): register after the namespace has its addresses, and again when they change.
 */
export async function register(options: { mesh: string; netns: string; settings: Interception; bpffs?: string }): Promise<Registration> {
  const paths: Paths = { mesh: validateMeshName(options.mesh), bpffs: options.bpffs ?? DEFAULT_BPFFS };
  requireLoaded(paths);
  if (options.settings.excludeInterfaces.length > 0) {
    throw new ActionableError(
      `excludeInterfaces (${options.settings.excludeInterfaces.join(', ')}) cannot be honoured in eBPF mode: connect() happens before a route, and so an interface, is chosen`,
      'use iptables interception for this pod, or exclude the destinations by range (excludeOutboundIpRanges)',
    );
  }
  const { cookie, ownAddresses } = namespaceInfo(options.netns);
  const addon = loadAddon();
  const entries = namespaceEntries(cookie, options.settings, ownAddresses);
  const lists = [
    [MAP.excludedPorts, entries.excludedPorts],
    [MAP.excludedCidrs, entries.excludedCidrs],
    [MAP.includedCidrs, entries.includedCidrs],
  ] as const;
  const one = Buffer.from([1]);
  // This namespace's entries from an earlier registration: kept if still wanted, removed after.
  const earlier = new Map(lists.map(([map]) => [map, addon.mapKeys(mapPin(paths, map), KEY_SIZE[map]).filter((key) => keyCookie(map, key) === cookie)]));
  const written: [string, Buffer][] = [];
  const write = (map: string, key: Buffer, value: Buffer) => {
    try {
      addon.mapUpdate(mapPin(paths, map), key, value);
    } catch (error) {
      // Undo this call's new entries, so the namespace keeps exactly its earlier settings.
      for (const [writtenMap, writtenKey] of written) addon.mapDelete(mapPin(paths, writtenMap), writtenKey);
      throw mapWriteError(map, error);
    }
  };
  for (const [map, keys] of lists) {
    const before = new Set(earlier.get(map)!.map((k) => k.toString('hex')));
    for (const key of keys) {
      write(map, key, one);
      if (!before.has(key.toString('hex'))) written.push([map, key]);
    }
  }
  write(MAP.settings, entries.settings.key, entries.settings.value);
  for (const [map, keys] of lists) {
    const wanted = new Set(keys.map((k) => k.toString('hex')));
    for (const key of earlier.get(map)!) if (!wanted.has(key.toString('hex'))) addon.mapDelete(mapPin(paths, map), key);
  }
  return { mesh: paths.mesh, netns: options.netns, cookie: cookie.toString() };
}

/** Whether the mesh's programs are loaded and attached here (everything pinned). */
export function isLoaded(options: { mesh: string; bpffs?: string }): boolean {
  return isComplete({ mesh: validateMeshName(options.mesh), bpffs: options.bpffs ?? DEFAULT_BPFFS });
}

/** Whether the namespace has settings in the mesh's maps (what `register` wrote and `unregister` removes). */
export function isRegistered(options: { mesh: string; netns: string; bpffs?: string }): boolean {
  const paths: Paths = { mesh: validateMeshName(options.mesh), bpffs: options.bpffs ?? DEFAULT_BPFFS };
  requireLoaded(paths);
  const { cookie } = namespaceInfo(options.netns);
  return loadAddon()
    .mapKeys(mapPin(paths, MAP.settings), KEY_SIZE[MAP.settings])
    .some((key) => keyCookie(MAP.settings, key) === cookie);
}

function removeNamespaceEntries(paths: Paths, cookies: ReadonlySet<bigint>): bigint[] {
  const addon = loadAddon();
  const removed = [...cookies].filter((cookie) => addon.mapDelete(mapPin(paths, MAP.settings), cookieKey(cookie)));
  for (const map of [MAP.excludedPorts, MAP.excludedCidrs, MAP.includedCidrs] as const) {
    for (const key of addon.mapKeys(mapPin(paths, map), KEY_SIZE[map])) if (cookies.has(keyCookie(map, key))) addon.mapDelete(mapPin(paths, map), key);
  }
  return removed;
}

/**
 * Leaves the namespace alone again: its settings go first, so the programs stop at once. By path
 * while it exists, or by the cookie `register` printed once it is gone.
 */
export function unregister(options: { mesh: string; netns?: string; cookie?: string; bpffs?: string }): {
  mesh: string;
  netns?: string;
  cookie: string;
  wasRegistered: boolean;
} {
  const paths: Paths = { mesh: validateMeshName(options.mesh), bpffs: options.bpffs ?? DEFAULT_BPFFS };
  requireLoaded(paths);
  let cookie: bigint;
  if (options.cookie !== undefined) {
    if (!/^\d{1,20}$/.test(options.cookie) || BigInt(options.cookie) >= 1n << 64n)
      throw new ActionableError(`cookie '${options.cookie}' is not a namespace cookie (a decimal 64-bit number, as register printed it)`);
    cookie = BigInt(options.cookie);
  } else if (options.netns !== undefined) {
    try {
      cookie = namespaceInfo(options.netns).cookie;
    } catch (error) {
      throw new ActionableError(
        (error as Error).message,
        `if the namespace is gone, give the cookie 'flb bpf register' printed (--cookie), or run 'flb bpf gc --mesh ${paths.mesh}' to remove every namespace that is gone`,
      );
    }
  } else {
    throw new ActionableError('unregister needs a namespace: --netns PATH, or --cookie N once it is gone');
  }
  const wasRegistered = removeNamespaceEntries(paths, new Set([cookie])).length > 0;
  return { mesh: paths.mesh, ...(options.netns !== undefined ? { netns: options.netns } : {}), cookie: cookie.toString(), wasRegistered };
}

/** Every network namespace alive on this host: bind-mounted ones and those of running processes. */
function liveNamespaceCookies(): Set<bigint> {
  const seen = new Set<string>();
  const cookies = new Set<bigint>();
  const candidates = [
    ...(existsSync('/var/run/netns') ? readdirSync('/var/run/netns').map((name) => join('/var/run/netns', name)) : []),
    ...readdirSync('/proc')
      .filter((entry) => /^\d+$/.test(entry))
      .map((pid) => `/proc/${pid}/ns/net`),
  ];
  for (const path of candidates) {
    try {
      // One setns per namespace, not per process: the inode names the namespace.
      const { dev, ino } = statSync(path);
      if (seen.has(`${dev}:${ino}`)) continue;
      seen.add(`${dev}:${ino}`);
      cookies.add(loadAddon().netnsInfo(path).cookie);
    } catch {
      // The process ended, or the file is not a namespace: nothing to keep for it.
    }
  }
  return cookies;
}

/** Removes the settings of every registered namespace that no longer exists (a pod deleted without its unregister). */
export function collectGarbage(options: { mesh: string; bpffs?: string }): { mesh: string; removed: string[]; kept: number } {
  const paths: Paths = { mesh: validateMeshName(options.mesh), bpffs: options.bpffs ?? DEFAULT_BPFFS };
  requireLoaded(paths);
  const registered = loadAddon()
    .mapKeys(mapPin(paths, MAP.settings), KEY_SIZE[MAP.settings])
    .map((key) => keyCookie(MAP.settings, key));
  if (registered.length === 0) return { mesh: paths.mesh, removed: [], kept: 0 };
  const live = liveNamespaceCookies();
  const gone = new Set(registered.filter((cookie) => !live.has(cookie)));
  const removed = removeNamespaceEntries(paths, gone);
  return { mesh: paths.mesh, removed: removed.map(String), kept: registered.length - gone.size };
}
