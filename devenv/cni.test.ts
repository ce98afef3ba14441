import { describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PrivateBpffs } from './cni.js';
import { mountPointsOf } from './node-simulator/cgroups.js';

describe("a node agent's private bpffs", () => {
  it('is a bpffs of its own, unmounted and removed at the end; one a killed run left is unmounted by the next', async () => {
    // A pid above the kernel's pid_max runs nowhere: a run that was killed.
    const stale = join(tmpdir(), `flb-bpffs-${Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8')) + 1}-test`);
    mkdirSync(stale, { recursive: true });
    execFileSync('mount', ['-t', 'bpf', 'bpf', stale]);
    const bpffs = await PrivateBpffs.mount();
    try {
      expect(await mountPointsOf('bpf')).not.toContain(stale);
      expect(existsSync(stale)).toBe(false);
      expect(await mountPointsOf('bpf')).toContain(bpffs.path);
      // Plain files cannot be made in a bpffs: it is one, not the folder under it.
      expect(() => writeFileSync(join(bpffs.path, 'x'), '')).toThrow(/EPERM|EACCES|EINVAL/);
    } finally {
      await bpffs.unmount();
    }
    expect(await mountPointsOf('bpf')).not.toContain(bpffs.path);
    expect(existsSync(bpffs.path)).toBe(false);
  });
});
