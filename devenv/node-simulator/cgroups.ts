// A cgroup v2 folder per simulated node, and one per pod under it (kubepods/pod<uid>, as a kubelet
// lays them out): what eBPF interception attaches its programs to. Tests must never attach at the
// machine's root cgroup, so a node's folder is the node agent's `--bpf-cgroup`. The folders of a
// simulator are under <cgroup2 mount>/flb-devenv-<pid>-<n>/; a run killed before it removed them
// has them removed by the next (their processes died with it: pdeathsig).
import { existsSync, mkdirSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import type { Logger } from '../../common/log.js';

const PREFIX = 'flb-devenv-';
let simulatorsInThisProcess = 0;

/** Where filesystems of these types are mounted (findmnt reads this process's mountinfo and decodes its escapes). */
export async function mountPointsOf(...types: string[]): Promise<string[]> {
  const found = await execa('findmnt', ['--json', '--list', '--types', types.join(','), '--output', 'TARGET'], { reject: false });
  // findmnt exits 1 when nothing matches.
  if (found.exitCode !== 0 || !found.stdout) return [];
  return (JSON.parse(found.stdout) as { filesystems: { target: string }[] }).filesystems.map((f) => f.target);
}

/** Whether a process of that id exists (a run that left folders named after it). */
export const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/**
 * Removes a cgroup folder and every folder under it, deepest first. A cgroup is removable once its
 * last process has exited, which the kernel finishes a moment after the exit is reported: retried
 * for up to `waitMs`. Returns what could not be removed (processes still in it).
 */
export async function removeCgroupTree(dir: string, waitMs = 2_000): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const left: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) left.push(...(await removeCgroupTree(join(dir, entry.name), waitMs)));
  }
  for (const deadline = Date.now() + waitMs; ; await sleep(20)) {
    try {
      rmdirSync(dir);
      return left;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return left;
      if (code !== 'EBUSY' || Date.now() > deadline) return [...left, `${dir} (${code})`];
    }
  }
}

export class NodeCgroups {
  private constructor(
    /** This simulator's folder under the cgroup2 mount. */
    readonly root: string,
    private readonly log: Logger,
  ) {}

  /**
   * The simulator's cgroups, or undefined where the machine has no cgroup v2 hierarchy (logged:
   * containers then run in the simulator's own cgroup, and eBPF mode is unavailable).
   */
  static async create(
    nodes: readonly string[],
    log: Logger,
    findMount: () => Promise<string | undefined> = async () => (await mountPointsOf('cgroup2'))[0],
  ): Promise<NodeCgroups | undefined> {
    const mount = await findMount();
    if (!mount) {
      log.warn("no cgroup v2 hierarchy is mounted: containers run in the simulator's own cgroup, so eBPF interception cannot run on the simulated nodes");
      return undefined;
    }
    await removeStaleCgroups(mount, log);
    const root = join(mount, `${PREFIX}${process.pid}-${simulatorsInThisProcess++}`);
    try {
      for (const node of nodes) mkdirSync(join(root, node, 'kubepods'), { recursive: true });
    } catch (error) {
      log.warn(
        { err: error, cgroup: root },
        "could not make the simulated nodes' cgroups: containers run in the simulator's own cgroup, so eBPF interception cannot run on them",
      );
      await removeCgroupTree(root, 0);
      return undefined;
    }
    return new NodeCgroups(root, log);
  }

  /** The node's cgroup: what its eBPF programs attach to (covering every pod of the node). */
  nodeCgroup(node: string): string {
    return join(this.root, node);
  }

  /** Makes the pod's cgroup under its node's; its containers join it. */
  addPod(node: string, uid: string): string {
    const dir = join(this.root, node, 'kubepods', `pod${uid}`);
    mkdirSync(dir, { recursive: true });
    return dir;
  }

  /** Once every container of the pod has exited. */
  async removePod(dir: string): Promise<void> {
    const left = await removeCgroupTree(dir);
    if (left.length) this.log.warn({ left }, "could not remove the pod's cgroup");
  }

  /** At the simulator's stop, once every pod is gone. */
  async remove(): Promise<void> {
    const left = await removeCgroupTree(this.root);
    if (left.length) this.log.warn({ left }, "could not remove the simulated nodes' cgroups");
  }
}

async function removeStaleCgroups(mount: string, log: Logger): Promise<void> {
  for (const name of readdirSync(mount)) {
    const pid = Number(new RegExp(`^${PREFIX}(\\d+)-\\d+$`).exec(name)?.[1]);
    if (!(pid > 0) || pid === process.pid || isAlive(pid)) continue;
    const left = await removeCgroupTree(join(mount, name), 0);
    if (left.length) log.warn({ left }, 'a killed run left cgroups with processes in them');
  }
}
