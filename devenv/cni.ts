import { execa } from 'execa';
import { existsSync, mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isAlive, mountPointsOf } from './node-simulator/cgroups.js';

/**
 * A container runtime's CNI side, as libcni does it: each plugin of a conflist is executed with
 * the CNI_* environment and its config on stdin (name and cniVersion from the list, prevResult
 * from the plugin before); ADD and CHECK in order, DEL in reverse with the cached ADD result.
 * Plugins run in the host's own network namespace, or inside `hostNetns` when a test stands a
 * namespace in for the node.
 */
export interface Conflist {
  cniVersion: string;
  name: string;
  plugins: ({ type: string } & Record<string, unknown>)[];
}

export interface Sandbox {
  containerId: string;
  netns: string;
  ifName: string;
  args: string;
}

export interface PluginRun {
  type: string;
  exitCode: number;
  stdout: string;
  result: unknown;
}

export class CniError extends Error {
  constructor(
    readonly plugin: string,
    readonly result: { code?: number; msg?: string },
  ) {
    super(`${plugin}: CNI error ${result.code}: ${result.msg}`);
  }
}

export class CniRuntime {
  private readonly cache = new Map<string, unknown>();
  constructor(
    readonly pluginDirs: string[],
    readonly hostNetns: string | undefined,
    readonly extraEnv: Record<string, string> = {},
  ) {}

  private find(type: string): string {
    for (const dir of this.pluginDirs) if (existsSync(join(dir, type))) return join(dir, type);
    throw new Error(`CNI plugin ${type} not found in ${this.pluginDirs.join(':')}`);
  }

  async exec(command: string, type: string, config: Record<string, unknown> | string, sandbox: Sandbox): Promise<PluginRun> {
    const [file, ...args] = this.hostNetns ? ['ip', 'netns', 'exec', this.hostNetns, this.find(type)] : [this.find(type)];
    const r = await execa(file!, args, {
      input: typeof config === 'string' ? config : JSON.stringify(config),
      reject: false,
      env: {
        CNI_COMMAND: command,
        CNI_CONTAINERID: sandbox.containerId,
        CNI_NETNS: sandbox.netns,
        CNI_IFNAME: sandbox.ifName,
        CNI_ARGS: sandbox.args,
        CNI_PATH: this.pluginDirs.join(':'),
        ...this.extraEnv,
      },
    });
    let result: unknown;
    try {
      result = r.stdout ? JSON.parse(r.stdout) : undefined;
    } catch {
      result = undefined;
    }
    return { type, exitCode: r.exitCode ?? -1, stdout: r.stdout, result };
  }

  private configFor(list: Conflist, index: number, prevResult: unknown): Record<string, unknown> {
    return { ...list.plugins[index], name: list.name, cniVersion: list.cniVersion, ...(prevResult !== undefined ? { prevResult } : {}) };
  }

  /** ADD through the whole list; returns every plugin's run (the last result is the sandbox's). */
  async add(list: Conflist, sandbox: Sandbox): Promise<PluginRun[]> {
    const runs: PluginRun[] = [];
    let prev: unknown;
    for (let i = 0; i < list.plugins.length; i++) {
      const run = await this.exec('ADD', list.plugins[i]!.type, this.configFor(list, i, prev), sandbox);
      runs.push(run);
      if (run.exitCode !== 0) throw new CniError(run.type, (run.result ?? { msg: run.stdout }) as { code?: number; msg?: string });
      prev = run.result;
    }
    this.cache.set(sandbox.containerId, prev);
    return runs;
  }

  async check(list: Conflist, sandbox: Sandbox): Promise<void> {
    for (let i = 0; i < list.plugins.length; i++) {
      const run = await this.exec('CHECK', list.plugins[i]!.type, this.configFor(list, i, this.cache.get(sandbox.containerId)), sandbox);
      if (run.exitCode !== 0) throw new CniError(run.type, (run.result ?? { msg: run.stdout }) as { code?: number; msg?: string });
    }
  }

  async del(list: Conflist, sandbox: Sandbox): Promise<void> {
    for (let i = list.plugins.length - 1; i >= 0; i--) {
      const run = await this.exec('DEL', list.plugins[i]!.type, this.configFor(list, i, this.cache.get(sandbox.containerId)), sandbox);
      if (run.exitCode !== 0) throw new CniError(run.type, (run.result ?? { msg: run.stdout }) as { code?: number; msg?: string });
    }
    this.cache.delete(sandbox.containerId);
  }
}

const BPFFS_PREFIX = 'flb-bpffs-';

/**
 * A bpffs of the run's own, for a node agent in eBPF mode (`flb cni agent --bpffs`): its pins are
 * nobody else's to see or remove, and unmounting it (once the agent has exited) takes every pin of
 * the run with it, so the kernel frees its programs, maps and links. A run killed before it
 * unmounted has its bpffs unmounted by the next.
 */
export class PrivateBpffs {
  private constructor(readonly path: string) {}

  static async mount(): Promise<PrivateBpffs> {
    await unmountStaleBpffs();
    const path = mkdtempSync(join(tmpdir(), `${BPFFS_PREFIX}${process.pid}-`));
    const mounted = await execa('mount', ['-t', 'bpf', 'bpf', path], { reject: false });
    if (mounted.exitCode !== 0) {
      rmdirSync(path);
      throw new Error(`could not mount a bpffs at ${path}: ${mounted.stderr.trim() || `exit ${mounted.exitCode}`}`);
    }
    return new PrivateBpffs(path);
  }

  /** After the agent stopped: an agent still running keeps its map file descriptors, and so the maps. */
  async unmount(): Promise<void> {
    await unmount(this.path);
  }
}

async function unmount(path: string): Promise<void> {
  if ((await mountPointsOf('bpf')).includes(path)) {
    const r = await execa('umount', [path], { reject: false });
    if (r.exitCode !== 0) throw new Error(`could not unmount the bpffs at ${path}: ${r.stderr.trim()}`);
  }
  if (existsSync(path)) rmdirSync(path);
}

async function unmountStaleBpffs(): Promise<void> {
  const prefix = join(tmpdir(), BPFFS_PREFIX);
  for (const mountPoint of await mountPointsOf('bpf')) {
    if (!mountPoint.startsWith(prefix)) continue;
    const pid = Number(/^(\d+)-/.exec(mountPoint.slice(prefix.length))?.[1]);
    if (pid > 0 && pid !== process.pid && !isAlive(pid)) await unmount(mountPoint);
  }
}
