import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execa } from 'execa';
import { existsSync, mkdirSync, mkdtempSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSettings } from '../bpf/cli.js';
import { checkFeatures, defaultCgroup, load, objectPath, register, status, unload, unregister } from '../bpf/loader.js';
import { loadAddon } from '../bpf/native/index.js';
import { createNetns, deleteNetns, removeStaleNamespaces, requireRoot, type Netns } from './harness/netns.js';

/**
 * What `flb bpf` does with what it cannot do: a host or cgroup that lacks what eBPF needs, two
 * loaders at once, a half-loaded mesh, settings it cannot honour, a namespace that is gone, a
 * full map. Each says why and what to do (and that iptables is the fallback) and leaves nothing
 * attached that it did not finish. Cgroups and meshes of its own, removed at the end.
 */
const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));
const MESH = `flbt-${process.pid}-e`;
const run = (...args: string[]) => execa(process.execPath, [flb, 'bpf', ...args], { reject: false, env: { ...process.env, FLB_LOG_FORMAT: 'json' } });
const attachedNames = async (cgroup: string) =>
  (JSON.parse((await execa('bpftool', ['-j', 'cgroup', 'show', cgroup])).stdout || '[]') as { name: string }[]).map((a) => a.name).sort();

describe('flb bpf when things go wrong', () => {
  let cgroup: string;
  let ns: Netns;

  beforeAll(async () => {
    requireRoot('the eBPF interception tests');
    const cgroupRoot = defaultCgroup();
    const report = await checkFeatures(cgroupRoot ? { cgroup: cgroupRoot } : {});
    if (!report.ok)
      throw new Error(
        `the eBPF tests cannot run here: ${report.missing.join('; ')}. Install clang libbpf-dev bpftool (npm run setup) and run bash scripts/build-native.sh`,
      );
    await removeStaleNamespaces();
    cgroup = join(cgroupRoot!, `flbt-${process.pid}-bpf-errors`);
    mkdirSync(cgroup, { recursive: true });
    ns = await createNetns('bpf-errors');
  });

  afterAll(async () => {
    await unload({ mesh: MESH }).catch(() => undefined);
    if (cgroup && existsSync(cgroup)) rmdirSync(cgroup);
    await deleteNetns(ns);
  });

  it('refuses a cgroup v1 path, naming it and the fallback, and leaves nothing', async () => {
    const v1 = '/sys/fs/cgroup/cpu';
    const checked = await run('check', '--cgroup', v1);
    expect(checked.exitCode).toBe(1);
    expect(checked.stdout).toBe(`missing: a cgroup v2 path: ${v1} is on cgroup filesystem, not cgroup2 (v1 cgroups cannot hold socket programs)`);
    expect(checked.stderr).toContain('iptables interception is the fallback');

    const loaded = await run('load', '--mesh', MESH, '--cgroup', v1);
    expect(loaded.exitCode).toBe(1);
    expect(loaded.stderr).toContain(`eBPF interception cannot run here; missing: a cgroup v2 path: ${v1}`);
    expect(loaded.stderr).toContain('iptables interception (mode "iptables" or "cni") is the fallback');
    expect(existsSync(`/sys/fs/bpf/flb-mesh/${MESH}`)).toBe(false);
  });

  it('mounts bpffs where it is asked to pin and none is mounted', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flbt-bpffs-'));
    try {
      const checked = await run('check', '--cgroup', cgroup, '--bpffs', dir, '--json');
      expect(JSON.parse(checked.stdout)).toMatchObject({ ok: true, bpffs: dir });
      expect((await execa('findmnt', ['-n', '-o', 'FSTYPE', dir])).stdout).toBe('bpf');
    } finally {
      await execa('umount', [dir], { reject: false });
      rmdirSync(dir);
    }
  });

  it('a program the verifier refuses, or one that cannot be attached, leaves nothing behind', async () => {
    const other = `${MESH}v`;
    await expect(load({ mesh: other, cgroup, object: objectPath('testing/rejected.bpf.o')! })).rejects.toThrow(
      'the kernel refused the eBPF programs: the verifier refused flb_connect4: invalid bpf_context access off=4096 size=4',
    );
    expect(existsSync(`/sys/fs/bpf/flb-mesh/${other}`)).toBe(false);
    // Loads (a connect4 program of another name), then finds no flb_connect4 to attach.
    await expect(load({ mesh: other, cgroup, object: objectPath('testing/socket-lb.bpf.o')! })).rejects.toThrow(
      `attaching flb_connect4 (connect4) failed: opening the pinned program /sys/fs/bpf/flb-mesh/${other}/progs/flb_connect4: No such file or directory`,
    );
    expect(existsSync(`/sys/fs/bpf/flb-mesh/${other}`)).toBe(false);
    expect(await attachedNames(cgroup)).toEqual([]);
  });

  it('says what is wrong with settings, a namespace or a mesh it cannot register', async () => {
    const notLoaded = await run('register', '--mesh', MESH, '--netns', ns.path, '--settings', '{"version":1}');
    expect(notLoaded).toMatchObject({ exitCode: 1, stderr: expect.stringContaining(`mesh ${MESH} is not loaded`) });
    expect(notLoaded.stderr).toContain(`hint: run 'flb bpf load --mesh ${MESH}' first`);

    await load({ mesh: MESH, cgroup });
    const badJson = await run('register', '--mesh', MESH, '--netns', ns.path, '--settings', '{"version":1,');
    expect(badJson).toMatchObject({ exitCode: 1, stderr: expect.stringContaining('--settings is not JSON') });
    await expect(readSettings('{"version":1,"excludeOutboundPorts":[70000]}')).rejects.toThrow('excludeOutboundPorts[0]: must be a port number');
    const register_ = async (netns: string, settings: string) => register({ mesh: MESH, netns, settings: await readSettings(settings) });
    await expect(register_(ns.path, '{"version":1,"excludeInterfaces":["eth1"]}')).rejects.toThrow('excludeInterfaces (eth1) cannot be honoured in eBPF mode');
    await expect(register_('/var/run/netns/flbt-no-such-namespace', '{"version":1}')).rejects.toThrow(
      'cannot read the network namespace /var/run/netns/flbt-no-such-namespace',
    );
    // Nothing was registered by any of them.
    expect(await status({ mesh: MESH })).toMatchObject({ complete: true, namespaces: 0 });
    // The mode field is not read: registering is the choice of eBPF, whatever it says.
    expect(await register_(ns.path, '{"version":1,"mode":"ebpf"}')).toMatchObject({ mesh: MESH, netns: ns.path, cookie: expect.stringMatching(/^\d+$/) });
  });

  it("the pod's in-pod validation (flb cni validate) passes in a registered namespace and fails in one that is not", async () => {
    const validate = (netns: Netns) =>
      execa(
        'sh',
        [
          '-c',
          'echo $$ > "$0/cgroup.procs" && exec "$@"',
          cgroup,
          'ip',
          'netns',
          'exec',
          netns.name,
          'setpriv',
          '--reuid=1501',
          '--regid=1501',
          '--clear-groups',
          '--',
          process.execPath,
          flb,
          'cni',
          'validate',
          '--settings',
          '{"version":1,"mode":"cni"}',
          '--timeout',
          '1000',
        ],
        { reject: false },
      );
    const passed = await validate(ns);
    expect({ exitCode: passed.exitCode, stderr: passed.stderr }).toEqual({ exitCode: 0, stderr: '' });
    const unmeshed = await createNetns('bpf-unmeshed');
    try {
      await unmeshed.exec('ip', ['route', 'add', 'default', 'dev', 'lo']);
      const refused = await validate(unmeshed);
      expect(refused.exitCode).toBe(1);
      expect(refused.stderr).toMatch(/not redirected/);
    } finally {
      await deleteNetns(unmeshed);
    }
  });

  it('a namespace that vanished: unregister by path says what to do, gc and unregister --cookie remove it', async () => {
    const gone = await createNetns('bpf-gone');
    const { cookie } = await register({ mesh: MESH, netns: gone.path, settings: await readSettings('{"version":1,"excludeOutboundPorts":[9999]}') });
    await deleteNetns(gone);
    const byPath = await run('unregister', '--mesh', MESH, '--netns', gone.path);
    expect(byPath).toMatchObject({ exitCode: 1, stderr: expect.stringContaining(`cannot read the network namespace ${gone.path}`) });
    expect(byPath.stderr).toContain("hint: if the namespace is gone, give the cookie 'flb bpf register' printed (--cookie)");
    const collected = await run('gc', '--mesh', MESH, '--json');
    expect(collected.exitCode).toBe(0);
    // The test's other namespace is alive and stays.
    expect(JSON.parse(collected.stdout)).toEqual({ mesh: MESH, removed: [cookie], kept: 1 });
    const ports = loadAddon().mapKeys(`/sys/fs/bpf/flb-mesh/${MESH}/maps/flb_excl_ports`, 16);
    expect(ports.filter((k) => k.readBigUInt64LE(0) === BigInt(cookie))).toEqual([]);
    expect(unregister({ mesh: MESH, cookie })).toMatchObject({ cookie, wasRegistered: false });
    expect(() => unregister({ mesh: MESH, cookie: 'x1' })).toThrow("cookie 'x1' is not a namespace cookie");
    expect(await status({ mesh: MESH })).toMatchObject({ namespaces: 1 });
  });

  it('says a map is full, naming it, and the namespace keeps its earlier settings', async () => {
    const ports = `/sys/fs/bpf/flb-mesh/${MESH}/maps/flb_excl_ports`;
    const addon = loadAddon();
    // Other (made-up) namespaces' entries fill the map but for one place: the first of two new ports fits.
    const key = Buffer.alloc(16);
    for (let i = 0; i < 65535; i++) {
      key.writeBigUInt64LE(BigInt(1 << 30) + BigInt(i >> 15), 0);
      key.writeUInt16LE(i & 0x7fff, 8);
      addon.mapUpdate(ports, key, Buffer.from([1]));
    }
    const full = await run('register', '--mesh', MESH, '--netns', ns.path, '--settings', '{"version":1,"excludeOutboundPorts":[9090,9091]}');
    expect(full).toMatchObject({ exitCode: 1, stderr: expect.stringContaining('the eBPF map flb_excl_ports is full') });
    expect(await status({ mesh: MESH })).toMatchObject({ namespaces: 1 });
    // The one that fitted was taken out again.
    const { cookie } = addon.netnsInfo(ns.path);
    expect(addon.mapKeys(ports, 16).filter((k) => k.readBigUInt64LE(0) === cookie)).toEqual([]);
  });

  it('two loaders at once: one loads, the other reports it, and the cgroup holds one set of programs', async () => {
    await unload({ mesh: MESH });
    const [a, b] = await Promise.all([run('load', '--mesh', MESH, '--cgroup', cgroup, '--json'), run('load', '--mesh', MESH, '--cgroup', cgroup, '--json')]);
    const outcomes = [a, b].map((r) => (r.exitCode === 0 ? (JSON.parse(r.stdout) as { alreadyLoaded: boolean }).alreadyLoaded : r.stderr)).sort();
    // The loser either finds it loaded or sees the winner at work.
    expect(outcomes[0]).toBe(false);
    expect([true, expect.stringContaining(`mesh ${MESH} is partly loaded`)]).toContainEqual(outcomes[1]);
    expect(await attachedNames(cgroup)).toEqual([
      'flb_connect4',
      'flb_connect6',
      'flb_getsockopt',
      'flb_peername4',
      'flb_peername6',
      'flb_recvmsg4',
      'flb_recvmsg6',
      'flb_sendmsg4',
      'flb_sendmsg6',
      'flb_sockops',
    ]);
  });

  it('refuses to call a mesh attached elsewhere loaded: another cgroup is named as such', async () => {
    const child = join(cgroup, 'other');
    mkdirSync(child);
    try {
      const elsewhere = await run('load', '--mesh', MESH, '--cgroup', child);
      expect(elsewhere.exitCode).toBe(1);
      expect(elsewhere.stderr).toContain(`mesh ${MESH} is already attached to another cgroup`);
      expect(elsewhere.stderr).toContain(`not ${child}`);
      expect(await attachedNames(child)).toEqual([]);
    } finally {
      rmdirSync(child);
    }
  });

  it('a half-loaded mesh is reported as such, and unload removes what there is', async () => {
    // As a loader killed half-way leaves it: one link's pin gone.
    const addon = loadAddon();
    addon.detachLink(`/sys/fs/bpf/flb-mesh/${MESH}/links/flb_sockops`);
    rmSync(`/sys/fs/bpf/flb-mesh/${MESH}/links/flb_sockops`);
    const shown = await run('status', '--mesh', MESH);
    expect(shown.exitCode).toBe(1);
    expect(shown.stdout).toContain(`mesh ${MESH}: partly loaded`);
    expect(shown.stdout).toMatch(/flb_sockops\s+sockops\s+prog \d+\s+not attached/);
    const again = await run('load', '--mesh', MESH, '--cgroup', cgroup);
    expect(again).toMatchObject({ exitCode: 1, stderr: expect.stringContaining(`hint: run 'flb bpf unload --mesh ${MESH}' if no other loader is running`) });
    expect((await run('unload', '--mesh', MESH)).exitCode).toBe(0);
    expect(await attachedNames(cgroup)).toEqual([]);
    expect(existsSync(`/sys/fs/bpf/flb-mesh/${MESH}`)).toBe(false);
  });
});
