import { describe, expect, it } from '@jest/globals';
import { defaultCgroup, describeLoadFailure, mountOf, parseMountinfo, validateMeshName } from './loader.js';

// A hybrid host like the test machines: cgroup v1 controllers, the v2 hierarchy at /sys/fs/cgroup/unified.
const HYBRID = `22 1 0:21 / / rw,relatime - overlay overlay rw
25 22 0:23 / /sys rw,nosuid - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu
40 25 0:35 / /sys/fs/bpf rw,relatime shared:9 - bpf bpf rw
41 22 0:36 / /mnt/with\\040space rw - tmpfs tmpfs rw`;

describe('mountinfo', () => {
  const mounts = parseMountinfo(HYBRID);

  it('finds the cgroup v2 hierarchy of a hybrid host, and none when only v1 is mounted', () => {
    expect(defaultCgroup(mounts)).toBe('/sys/fs/cgroup/unified');
    expect(defaultCgroup(mounts.filter((m) => m.fsType !== 'cgroup2'))).toBeUndefined();
  });

  it('says which filesystem a path lives on, by its longest mount point', () => {
    expect(mountOf(mounts, '/sys/fs/cgroup/unified/flbt-1-bpf')?.fsType).toBe('cgroup2');
    expect(mountOf(mounts, '/sys/fs/cgroup/cpu/x')?.fsType).toBe('cgroup');
    expect(mountOf(mounts, '/sys/fs/cgroup/unifiedx')?.fsType).toBe('tmpfs');
    expect(mountOf(mounts, '/sys/fs/bpf')?.fsType).toBe('bpf');
    expect(mountOf(mounts, '/home')?.fsType).toBe('overlay');
  });

  it("decodes the kernel's escapes in mount points and skips lines it cannot read", () => {
    expect(parseMountinfo(`${HYBRID}\ngarbage\n\n1 2 3`).map((m) => m.mountPoint)).toContain('/mnt/with space');
    expect(parseMountinfo('garbage\n\n1 2 3')).toEqual([]);
  });
});

describe('mesh names', () => {
  it('takes a DNS label, the pins folder name, and refuses anything that could leave it', () => {
    expect(validateMeshName('flb')).toBe('flb');
    for (const bad of ['', '../x', 'a/b', 'UPPER', '-x', 'x'.repeat(64)]) expect(() => validateMeshName(bad)).toThrow(/is not a DNS label/);
  });
});

describe("bpftool's refusal", () => {
  it("names the program and the verifier's reason, not the whole log", () => {
    const output = [
      "libbpf: prog 'flb_recvmsg4': BPF program load failed: Permission denied",
      "libbpf: prog 'flb_recvmsg4': -- BEGIN PROG LOAD LOG --",
      '0: (b7) r0 = 1',
      'R1 type=scalar expected=ctx',
      'processed 3 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0',
      '-- END PROG LOAD LOG --',
      "libbpf: prog 'flb_recvmsg4': failed to load: -13",
      'Error: failed to load object file',
      'Warning: bpftool is now running in libbpf strict mode and has more stringent requirements about BPF programs.',
    ].join('\n');
    expect(describeLoadFailure(output)).toBe('the verifier refused flb_recvmsg4: R1 type=scalar expected=ctx');
    expect(describeLoadFailure('libbpf: elf: failed to open x.o: No such file or directory\nError: failed to open object file')).toBe(
      'bpftool prog loadall failed: libbpf: elf: failed to open x.o: No such file or directory | Error: failed to open object file',
    );
  });
});
