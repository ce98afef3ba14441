import { describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mountPointsOf, removeCgroupTree } from './cgroups.js';
import { effectiveCapabilities, execInContainer, setprivArgs, startContainerProcess, type ContainerProcessSpec } from './containers.js';
import { containerArgv, DEMO_IMAGE, ImagePullError, MESH_IMAGE } from './images.js';

describe('container security', () => {
  it('drops everything the spec drops and adds what it adds, as containerd does', () => {
    expect(effectiveCapabilities({ capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] } })).toEqual(['net_admin', 'net_raw']);
    expect(effectiveCapabilities({ capabilities: { drop: ['NET_RAW'] } })).not.toContain('net_raw');
    expect(effectiveCapabilities(undefined)).toContain('chown');
    expect(effectiveCapabilities({ privileged: true })).toBe('all');
  });

  it('limits root by the bounding set and gives another user its capabilities as ambient ones', () => {
    const root = setprivArgs({ uid: 0, gid: 0, supplementaryGroups: [], capabilities: ['net_admin'], noNewPrivileges: true });
    expect(root).toEqual(['--reuid=0', '--regid=0', '--clear-groups', '--inh-caps', '-all', '--bounding-set', '-all,+net_admin', '--no-new-privs']);
    const proxy = setprivArgs({ uid: 1500, gid: 1500, supplementaryGroups: [7], capabilities: [], noNewPrivileges: false });
    expect(proxy).toEqual(['--reuid=1500', '--regid=1500', '--groups=7', '--inh-caps', '-all', '--bounding-set', '-all', '--ambient-caps', '-all']);
  });
});

describe('images', () => {
  it("runs this checkout's flb for the mesh image and the demo program for the demo image", () => {
    expect(containerArgv(MESH_IMAGE, ['flb', 'sidecar'], undefined).slice(1)).toEqual([expect.stringMatching(/bin\/flb\.js$/), 'sidecar']);
    expect(containerArgv(DEMO_IMAGE, undefined, ['client', '--url', 'http://echo/']).slice(1)).toEqual([
      expect.stringMatching(/demo\.js$/),
      'client',
      '--url',
      'http://echo/',
    ]);
    expect(containerArgv(DEMO_IMAGE, undefined, undefined).at(-1)).toBe('echo');
    expect(containerArgv(MESH_IMAGE, ['sh', '-c', 'true'], undefined)).toEqual(['sh', '-c', 'true']);
  });

  it('fails an image it does not have the way a pull fails, naming the ones it has', () => {
    expect(() => containerArgv('nginx:latest', undefined, undefined)).toThrow(ImagePullError);
    expect(() => containerArgv('flomesh/flb-mesh:latest', undefined, undefined)).toThrow(/Failed to pull image "flomesh\/flb-mesh:latest".*flomesh\/flb-mesh:/);
  });
});

describe('a container process', () => {
  // A postStart hook or exec probe enters the container's namespaces by its pid. Right after the
  // spawn that pid is still nsenter (the node's network namespace): a hook run then asked the node's
  // 127.0.0.1 for the sidecar's /ready, and under load a native sidecar's hook waited its 120 s out.
  it("is in its pod's network namespace, with its hostname and mounts, once `entered` resolves", async () => {
    const netns = `flb-containers-test-${process.pid}`;
    const dir = mkdtempSync(join(tmpdir(), 'flb-containers-test-'));
    // Read-write, and named with what an fstab line would split or cut at.
    const writable = { source: join(dir, 'a volume #1'), target: join(dir, 'its mount point') };
    mkdirSync(writable.source);
    mkdirSync(writable.target);
    writeFileSync(join(writable.source, 'data'), 'from the volume');
    execFileSync('ip', ['netns', 'add', netns]);
    try {
      const spec: ContainerProcessSpec = {
        argv: ['sleep', '30'],
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
        uid: 0,
        gid: 0,
        supplementaryGroups: [],
        capabilities: [],
        noNewPrivileges: true,
        netnsPath: `/var/run/netns/${netns}`,
        hostname: 'pod-under-test',
        mounts: [
          { source: dir, target: '/mnt', readOnly: true },
          { ...writable, readOnly: false },
        ],
        mountTableFile: join(dir, 'container.fstab'),
        logFile: join(dir, 'container.log'),
      };
      const container = startContainerProcess(spec);
      try {
        await container.entered;
        const pid = container.process.pid!;
        // What a command entering it by its pid would join, the moment `entered` resolves.
        expect(readlinkSync(`/proc/${pid}/ns/net`)).toBe(`net:[${statSync(spec.netnsPath).ino}]`);
        expect(readlinkSync(`/proc/${pid}/ns/mnt`)).not.toBe(readlinkSync('/proc/self/ns/mnt'));
        expect(readFileSync(`/proc/${pid}/mountinfo`, 'utf8')).toContain(' /mnt ');
        const inside = (command: string[]) =>
          new Promise<string>((resolve) => {
            const child = execInContainer(container.process.pid!, spec, command, undefined);
            let out = '';
            child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
            child.once('close', () => resolve(out.trim()));
          });
        expect(await inside(['readlink', '/proc/self/ns/net'])).toBe(`net:[${statSync(spec.netnsPath).ino}]`);
        expect(await inside(['hostname'])).toBe('pod-under-test');
        expect(await inside(['sh', '-c', 'grep -c " /mnt " /proc/self/mountinfo'])).toBe('1');
        expect(await inside(['sh', '-c', 'touch /mnt/written 2>/dev/null && echo written || echo refused'])).toBe('refused');
        expect(await inside(['cat', join(writable.target, 'data')])).toBe('from the volume');
        expect(await inside(['sh', '-c', `echo from the container > "${writable.target}/back"`])).toBe('');
        expect(readFileSync(join(writable.source, 'back'), 'utf8')).toBe('from the container\n');
        // Its own UTS namespace took the name, not the node.
        expect(execFileSync('hostname', { encoding: 'utf8' }).trim()).not.toBe('pod-under-test');
      } finally {
        process.kill(-container.process.pid!, 'SIGKILL');
      }
    } finally {
      execFileSync('ip', ['netns', 'del', netns]);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // eBPF interception's programs sit on the node's cgroup: a process outside it is not intercepted.
  it('is in its cgroup, and so is a command run in it', async () => {
    const [mount] = await mountPointsOf('cgroup2');
    if (!mount) throw new Error('this test needs a cgroup v2 hierarchy (mount -t cgroup2 none /sys/fs/cgroup/unified)');
    const name = `flb-containers-test-${process.pid}`;
    const cgroup = join(mount, name);
    const dir = mkdtempSync(join(tmpdir(), 'flb-containers-test-'));
    mkdirSync(cgroup);
    execFileSync('ip', ['netns', 'add', name]);
    try {
      const spec: ContainerProcessSpec = {
        argv: ['sleep', '30'],
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
        uid: 1000,
        gid: 1000,
        supplementaryGroups: [],
        capabilities: [],
        noNewPrivileges: true,
        netnsPath: `/var/run/netns/${name}`,
        cgroup,
        hostname: 'pod-under-test',
        mounts: [],
        mountTableFile: join(dir, 'container.fstab'),
        logFile: join(dir, 'container.log'),
      };
      const container = startContainerProcess(spec);
      try {
        await container.entered;
        expect(readFileSync(`/proc/${container.process.pid!}/cgroup`, 'utf8')).toContain(`0::/${name}\n`);
        const inside = await new Promise<string>((resolve) => {
          const child = execInContainer(container.process.pid!, spec, ['cat', '/proc/self/cgroup'], undefined);
          let out = '';
          child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
          child.once('close', () => resolve(out));
        });
        expect(inside).toContain(`0::/${name}\n`);
      } finally {
        process.kill(-container.process.pid!, 'SIGKILL');
      }
    } finally {
      execFileSync('ip', ['netns', 'del', name]);
      expect(await removeCgroupTree(cgroup)).toEqual([]);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
