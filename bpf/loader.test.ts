import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execa } from 'execa';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkFeatures, defaultCgroup, describeLoadFailure, hostCgroup, mountOf, parseMountinfo, validateMeshName } from './loader.js';

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

// A unified host (most current distributions): the v2 hierarchy is /sys/fs/cgroup itself.
const UNIFIED = `22 1 0:21 / / rw,relatime - ext4 /dev/sda1 rw
25 22 0:23 / /sys rw,nosuid - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate
40 25 0:35 / /sys/fs/bpf rw,relatime shared:9 - bpf bpf rw`;

// The node agent's own mount table on a unified host, as the chart runs it: its private cgroup
// namespace's /sys/fs/cgroup (its own cgroup only) comes first; the host's /sys/fs/cgroup, mounted
// at /host/sys/fs/cgroup, shows the hierarchy's root as a path above that namespace.
const AGENT_CONTAINER = `1500 1400 0:300 / / ro,relatime - overlay overlay rw
1510 1500 0:23 / /sys rw,nosuid - sysfs sysfs rw
1520 1510 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
1530 1500 0:26 /../../.. /host/sys/fs/cgroup ro,nosuid master:4 - cgroup2 cgroup2 rw,nsdelegate`;

const V1_ONLY = `22 1 0:21 / / rw,relatime - ext4 /dev/sda1 rw
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
32 30 0:28 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu
33 30 0:29 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory`;

describe("the host's cgroup v2 hierarchy, from the host's mount table", () => {
  it('is /sys/fs/cgroup on a unified host and /sys/fs/cgroup/unified on a hybrid one, seen under where the host is mounted', () => {
    expect(hostCgroup(parseMountinfo(UNIFIED), '/host')).toEqual({ path: '/host/sys/fs/cgroup', hostPath: '/sys/fs/cgroup' });
    expect(hostCgroup(parseMountinfo(HYBRID), '/host')).toEqual({ path: '/host/sys/fs/cgroup/unified', hostPath: '/sys/fs/cgroup/unified' });
    expect(hostCgroup(parseMountinfo(HYBRID))).toEqual({ path: '/sys/fs/cgroup/unified', hostPath: '/sys/fs/cgroup/unified' });
  });

  it("is not what the agent's own mount table puts first (its own cgroup), and comes from the host's", () => {
    expect(defaultCgroup(parseMountinfo(AGENT_CONTAINER))).toBe('/sys/fs/cgroup');
    expect(hostCgroup(parseMountinfo(UNIFIED), '/host')).toMatchObject({ path: '/host/sys/fs/cgroup' });
    // The mount the chart makes is cgroup2 in the agent's own table, which the feature check reads.
    expect(mountOf(parseMountinfo(AGENT_CONTAINER), '/host/sys/fs/cgroup')?.fsType).toBe('cgroup2');
  });

  it('prefers the usual places when the host mounts the hierarchy more than once (Cilium adds /run/cilium/cgroupv2)', () => {
    const twice = `${HYBRID.replace('/sys/fs/cgroup/unified', '/run/cilium/cgroupv2')}\n31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw`;
    expect(hostCgroup(parseMountinfo(twice), '/host')).toMatchObject({ hostPath: '/sys/fs/cgroup/unified' });
    expect(hostCgroup(parseMountinfo(`42 22 0:27 / /run/cilium/cgroupv2 rw - cgroup2 none rw`))).toMatchObject({ path: '/run/cilium/cgroupv2' });
  });

  it('never leaves the host root for a mount point a kernel would not write (found by bpf/fuzz.test)', () => {
    expect(hostCgroup(parseMountinfo('0 0 0:0 / /.. rw - cgroup2 cgroup2 rw'), '/host')).toEqual({ missing: expect.stringContaining('no cgroup filesystem') });
    expect(hostCgroup(parseMountinfo('0 0 0:0 / /sys/../.. rw - cgroup2 cgroup2 rw\n1 0 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw'), '/host')).toMatchObject(
      {
        path: '/host/sys/fs/cgroup',
      },
    );
  });

  it('says what the host mounts when it has no cgroup v2 at all', () => {
    expect(hostCgroup(parseMountinfo(V1_ONLY))).toEqual({
      missing:
        'a cgroup v2 hierarchy: the host mounts only cgroup v1 (/sys/fs/cgroup/cpu, /sys/fs/cgroup/memory); mount -t cgroup2 none /sys/fs/cgroup/unified, or boot with systemd.unified_cgroup_hierarchy=1',
    });
    const manyControllers = `${V1_ONLY}\n34 30 0:30 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n35 30 0:31 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio`;
    expect(hostCgroup(parseMountinfo(manyControllers))).toEqual({
      missing: expect.stringContaining('only cgroup v1 (/sys/fs/cgroup/cpu, /sys/fs/cgroup/memory, 2 more);'),
    });
    expect(hostCgroup(parseMountinfo(V1_ONLY.split('\n')[0]!))).toEqual({ missing: expect.stringContaining('the host mounts no cgroup filesystem;') });
  });
});

describe("the feature check with cgroup 'auto', on this machine (root: it bind-mounts the host's /sys/fs/cgroup as the chart does)", () => {
  const cgroupMissing = (missing: string[]) => missing.filter((m) => /cgroup/.test(m));
  let hostRoot: string;
  beforeAll(async () => {
    // The chart's volume: hostPath /sys/fs/cgroup, which the runtime bind-mounts recursively (runc's
    // rbind) and read-only; a hybrid host's /sys/fs/cgroup/unified comes with it.
    hostRoot = mkdtempSync(join(tmpdir(), 'flb-host-'));
    mkdirSync(join(hostRoot, 'sys/fs/cgroup'), { recursive: true });
    await execa('mount', ['--rbind', '-o', 'ro', '/sys/fs/cgroup', join(hostRoot, 'sys/fs/cgroup')]);
    await execa('mount', ['--make-rslave', join(hostRoot, 'sys/fs/cgroup')]);
  });
  afterAll(async () => {
    await execa('umount', ['-R', join(hostRoot, 'sys/fs/cgroup')], { reject: false });
    rmSync(hostRoot, { recursive: true });
  });

  it("finds the machine's cgroup v2 hierarchy through the host's mount table, under the host's mounted /sys/fs/cgroup", async () => {
    const real = defaultCgroup()!;
    const report = await checkFeatures({ cgroup: 'auto', hostRoot, bpffs: '/sys/fs/bpf' });
    expect(cgroupMissing(report.missing)).toEqual([]);
    expect(report.cgroup).toBe(join(hostRoot, real));
    // The same cgroup (a cgroup v2's id is its folder's inode), and a child made in it shows under it.
    expect(statSync(report.cgroup!).ino).toBe(statSync(real).ino);
    const child = join(real, `flbt-${process.pid}-auto`);
    mkdirSync(child);
    try {
      expect(statSync(join(report.cgroup!, `flbt-${process.pid}-auto`)).ino).toBe(statSync(child).ino);
      expect(readFileSync(join(child, 'cgroup.procs'), 'utf8')).toBe('');
    } finally {
      rmdirSync(child);
    }
  });

  it("names the host's mount and where it looked when the hierarchy is not visible there, and what the host has when it has none", async () => {
    const elsewhere = await checkFeatures({ cgroup: 'auto', hostRoot: join(hostRoot, 'nothing'), bpffs: '/sys/fs/bpf' });
    const real = defaultCgroup()!;
    expect(cgroupMissing(elsewhere.missing)).toEqual([
      `the host's cgroup v2 hierarchy (${real} on the host) at ${join(hostRoot, 'nothing', real)}: no such directory; mount the host's ${real} there, or name the cgroup`,
    ]);
    // A folder there that is not the hierarchy (a bind without its submounts would show one).
    const emptyFolder = join(hostRoot, 'empty');
    mkdirSync(join(emptyFolder, real), { recursive: true });
    const hidden = await checkFeatures({ cgroup: 'auto', hostRoot: emptyFolder, bpffs: '/sys/fs/bpf' });
    expect(cgroupMissing(hidden.missing)).toEqual([
      expect.stringMatching(/^the host's cgroup v2 hierarchy \(.* on the host\) at .*: \w+ filesystem, not cgroup2; mount the host's /),
    ]);
    const none = await checkFeatures({ cgroup: 'auto', hostRoot, hostMounts: parseMountinfo(V1_ONLY), bpffs: '/sys/fs/bpf' });
    expect(none.ok).toBe(false);
    expect(cgroupMissing(none.missing)).toEqual([expect.stringMatching(/^a cgroup v2 hierarchy: the host mounts only cgroup v1 \(\/sys\/fs\/cgroup\/cpu/)]);
    expect(none.cgroup).toBeUndefined();
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
