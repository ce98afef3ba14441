import { describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { mountPointsOf, NodeCgroups } from './cgroups.js';

/** A logger whose lines the test reads. */
function capturingLog() {
  const lines: { level: number; msg: string }[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => lines.push(JSON.parse(line) as { level: number; msg: string }) });
  return { log, lines };
}

const cgroup2 = async () => {
  const [mount] = await mountPointsOf('cgroup2');
  if (!mount) throw new Error('this test needs a cgroup v2 hierarchy (mount -t cgroup2 none /sys/fs/cgroup/unified)');
  return mount;
};

describe("the simulated nodes' cgroups", () => {
  it('gives each node a folder and each pod one under kubepods, and removes them all at the end', async () => {
    const { log, lines } = capturingLog();
    const cgroups = (await NodeCgroups.create(['node-a', 'node-b'], log))!;
    expect(cgroups.root.startsWith(`${await cgroup2()}/flb-devenv-${process.pid}-`)).toBe(true);
    const pod = cgroups.addPod('node-b', 'uid-1');
    expect(pod).toBe(join(cgroups.nodeCgroup('node-b'), 'kubepods', 'poduid-1'));
    // A process in the pod's cgroup holds it until it exits.
    const sleeper = spawn('sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec sleep 30', pod], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 100));
    expect(readFileSync(join(pod, 'cgroup.procs'), 'utf8').trim()).toBe(String(sleeper.pid));
    const exited = new Promise((r) => sleeper.once('exit', r));
    sleeper.kill('SIGKILL');
    await exited;
    await cgroups.removePod(pod);
    expect(existsSync(pod)).toBe(false);
    expect(existsSync(cgroups.nodeCgroup('node-a'))).toBe(true);
    await cgroups.remove();
    expect(existsSync(cgroups.root)).toBe(false);
    expect(lines.filter((l) => l.level >= 40)).toEqual([]);
  });

  it('removes the folders a killed run left (a pid that no longer runs), and only those', async () => {
    const mount = await cgroup2();
    // A pid above the kernel's pid_max runs nowhere; this process's own folders stay.
    const stale = join(mount, `flb-devenv-${Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8')) + 1}-0`);
    mkdirSync(join(stale, 'node-a', 'kubepods', 'poduid-1'), { recursive: true });
    const cgroups = (await NodeCgroups.create(['node-a'], capturingLog().log))!;
    try {
      expect(existsSync(stale)).toBe(false);
      expect(existsSync(cgroups.nodeCgroup('node-a'))).toBe(true);
    } finally {
      await cgroups.remove();
    }
  });

  it('without cgroup v2 says so and gives none: containers then start where the simulator runs', async () => {
    const { log, lines } = capturingLog();
    expect(await NodeCgroups.create(['node-a'], log, async () => undefined)).toBeUndefined();
    expect(lines).toEqual([
      expect.objectContaining({ level: 40, msg: expect.stringMatching(/no cgroup v2 hierarchy.*eBPF interception cannot run/) as unknown }),
    ]);
  });
});
