import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execa, type ResultPromise } from 'execa';
import { existsSync, mkdirSync, readdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InterceptionSchema, type InterceptionInput } from '../common/contract/index.js';
import { checkFeatures, defaultCgroup, objectPath, register, status, unload, unregister, type Status } from '../bpf/loader.js';
import { createNetns, deleteNetns, link, removeStaleNamespaces, requireRoot, requireTools, type Netns } from './harness/netns.js';
import { isAlive } from './harness/leftovers.js';

/**
 * eBPF interception on this kernel: the programs attached (through bpf_links) to a cgroup the test
 * makes, a network namespace registered with settings, and processes that join the cgroup first
 * and then enter the namespace (`ip netns exec` remounts /sys, after which the cgroup folder is
 * out of reach). A stand-in sidecar on 15001 reads each connection's original destination with
 * the sidecar's own addon (getsockopt SO_ORIGINAL_DST); apps dial as UID 1000, the proxy is 1500.
 * Destinations live on a peer namespace across a veth pair, with plain servers on 8080 and 9090,
 * so a connection that is not redirected reaches them and says {"via":"direct"}; the pod's own app
 * listens on 8080 in the pod.
 */
const probe = fileURLToPath(new URL('../bpf/testing/probe.mjs', import.meta.url));
const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));
const APP = 1000;
const PROXY = 1500;
const MESH = `flbt-${process.pid}`;
const SERVICE = { v4: '10.200.0.5', excluded: '10.201.0.5', other: '10.202.0.5', v6: 'fd00:200::5' };
/** The nameservers the pod asks (nothing answers DNS there: the peer refuses it). */
const NAMESERVER = { v4: '10.96.0.53', v6: 'fd00:96::53' };
const POD = { v4: '10.210.0.1', v6: 'fd00:210::1' };
const PEER = { v4: '10.210.0.2', v6: 'fd00:210::2' };

interface DnsQueried {
  from?: { address: string; port: number };
  answer?: string;
  peer?: { address: string; port: number; family: string };
  error?: string;
}

interface Dialled {
  peer?: { address: string; port: number };
  reply?: { via: string; original?: { address: string; port: number; family: number }; error?: string };
  error?: string;
}

const settings = (overrides: Partial<InterceptionInput> = {}) =>
  InterceptionSchema.parse({ version: 1, mode: 'cni', excludeOutboundPorts: [9090], excludeOutboundIpRanges: [`${SERVICE.excluded}/24`], ...overrides });

/** Resolves once the server says it is ready; wrapped, because an execa process is a thenable that would be awaited to its exit. */
async function ready(server: ResultPromise): Promise<{ server: ResultPromise }> {
  await new Promise<void>((resolve, reject) => {
    server.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
    void server.then((r) => reject(new Error(`a probe server exited: ${r.stderr}`)));
  });
  return { server };
}

/** Removes what a killed run of this file left: its meshes' pins and links, its resolv.conf, its cgroups. */
async function removeStale(cgroupRoot: string): Promise<void> {
  const stale = (name: string) => {
    const pid = Number(/^flbt-(\d+)/.exec(name)?.[1]);
    return pid > 0 && pid !== process.pid && !isAlive(pid);
  };
  for (const mesh of existsSync('/sys/fs/bpf/flb-mesh') ? readdirSync('/sys/fs/bpf/flb-mesh') : []) if (stale(mesh)) await unload({ mesh });
  for (const name of existsSync('/etc/netns') ? readdirSync('/etc/netns') : []) if (stale(name)) rmSync(`/etc/netns/${name}`, { recursive: true, force: true });
  for (const name of readdirSync(cgroupRoot)) {
    if (!stale(name)) continue;
    for (const pin of existsSync(`/sys/fs/bpf/${name}`) ? readdirSync(`/sys/fs/bpf/${name}`) : []) {
      await execa('bpftool', ['cgroup', 'detach', join(cgroupRoot, name), 'connect4', 'pinned', `/sys/fs/bpf/${name}/${pin}`], { reject: false });
    }
    await execa('rm', ['-rf', `/sys/fs/bpf/${name}`]);
    try {
      rmdirSync(join(cgroupRoot, name));
    } catch {
      // a process of the killed run is still in it
    }
  }
}

describe('eBPF interception (cgroup/connect4/6, sockops, getsockopt, getpeername, sendmsg/recvmsg)', () => {
  let cgroup: string;
  let ns: Netns;
  let peer: Netns;
  let sidecar: ResultPromise | undefined;
  let peerServer: ResultPromise | undefined;
  let otherPin: string;
  let loadedStatus: Status;

  /** Runs a command in the test's cgroup, then in its network namespace, optionally as a user. */
  const inPod = (args: string[], uid?: number) => {
    const asUser = uid !== undefined ? ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--'] : [];
    return execa('sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, 'ip', 'netns', 'exec', ns.name, ...asUser, ...args], { reject: false });
  };
  /** One DNS query over UDP: connected (as glibc sends it) or with sendto. */
  const query = async (how: 'udp-dial' | 'udp-send', host: string, uid = APP): Promise<DnsQueried> => {
    const result = await inPod(['setpriv', '--pdeathsig', 'KILL', '--', process.execPath, probe, how, host, '53'], uid);
    if (result.exitCode !== 0) throw new Error(`the DNS client failed: ${result.stderr}`);
    return JSON.parse(result.stdout) as DnsQueried;
  };
  const dial = async (host: string, port: number, uid = APP): Promise<Dialled> => {
    const result = await inPod(['setpriv', '--pdeathsig', 'KILL', '--', process.execPath, probe, 'dial', host, String(port)], uid);
    if (result.exitCode !== 0) throw new Error(`the dialler failed: ${result.stderr}`);
    return JSON.parse(result.stdout) as Dialled;
  };

  beforeAll(async () => {
    requireRoot('the eBPF interception tests');
    await requireTools(['ip', 'setpriv', 'bpftool']);
    const cgroupRoot = defaultCgroup();
    const report = await checkFeatures(cgroupRoot ? { cgroup: cgroupRoot } : {});
    if (!report.ok || !objectPath('testing/socket-lb.bpf.o')) {
      throw new Error(
        `the eBPF tests cannot run here: ${[...report.missing, ...(objectPath('testing/socket-lb.bpf.o') ? [] : ['bpf/build/testing/socket-lb.bpf.o'])].join('; ')}. Install clang libbpf-dev bpftool (apt-get install, or npm run setup) and run bash scripts/build-native.sh`,
      );
    }
    await removeStaleNamespaces();
    await removeStale(cgroupRoot!);
    // Never the root of the shared machine's hierarchy: a child cgroup of our own.
    cgroup = join(cgroupRoot!, `flbt-${process.pid}-bpf`);
    mkdirSync(cgroup, { recursive: true });

    // A CNI's socket load balancer attached first, the older way (BPF_PROG_ATTACH, multi).
    otherPin = `/sys/fs/bpf/flbt-${process.pid}-bpf/socket-lb`;
    // bpftool pins only into a folder that exists.
    mkdirSync(`/sys/fs/bpf/flbt-${process.pid}-bpf`, { recursive: true });
    await execa('bpftool', ['prog', 'load', objectPath('testing/socket-lb.bpf.o')!, otherPin, 'type', 'cgroup/connect4']);
    await execa('bpftool', ['cgroup', 'attach', cgroup, 'connect4', 'pinned', otherPin, 'multi']);

    ns = await createNetns('bpf');
    // `ip netns exec` mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf.
    mkdirSync(`/etc/netns/${ns.name}`, { recursive: true });
    writeFileSync(`/etc/netns/${ns.name}/resolv.conf`, `nameserver ${NAMESERVER.v4}\noptions timeout:2 attempts:1\n`);
    peer = await createNetns('bpf-peer');
    await link(ns, [`${POD.v4}/24`, `${POD.v6}/64`], peer, [`${PEER.v4}/24`, `${PEER.v6}/64`]);
    for (const address of [
      `${SERVICE.v4}/32`,
      `${SERVICE.excluded}/32`,
      `${SERVICE.other}/32`,
      `${SERVICE.v6}/128`,
      `${NAMESERVER.v4}/32`,
      `${NAMESERVER.v6}/128`,
    ]) {
      await execa('ip', ['-n', peer.name, 'addr', 'add', address, 'dev', 'lo']);
    }
    await execa('ip', ['-n', ns.name, 'route', 'add', 'default', 'via', PEER.v4]);
    await execa('ip', ['-n', ns.name, '-6', 'route', 'add', 'default', 'via', PEER.v6]);

    const loaded = await execa(process.execPath, [flb, 'bpf', 'load', '--mesh', MESH, '--cgroup', cgroup, '--json'], { reject: false });
    expect(loaded.stderr).not.toMatch(/"level":(40|50)/);
    expect(loaded.exitCode).toBe(0);
    expect(JSON.parse(loaded.stdout)).toMatchObject({ mesh: MESH, cgroup, alreadyLoaded: false });
    await register({ mesh: MESH, netns: ns.path, settings: settings() });
    loadedStatus = await status({ mesh: MESH });

    sidecar = (
      await ready(
        inPod(['setpriv', '--pdeathsig', 'KILL', `--reuid=${PROXY}`, `--regid=${PROXY}`, '--clear-groups', '--', process.execPath, probe, 'serve', 'sidecar']),
      )
    ).server;
    peerServer = (
      await ready(
        execa('ip', ['netns', 'exec', peer.name, 'setpriv', '--pdeathsig', 'KILL', '--', process.execPath, probe, 'serve', 'peer'], { reject: false }),
      )
    ).server;
  });

  afterAll(async () => {
    for (const server of [sidecar, peerServer]) {
      server?.kill('SIGKILL');
      await server?.catch(() => undefined);
    }
    await unload({ mesh: MESH }).catch(() => undefined);
    if (cgroup) {
      await execa('bpftool', ['cgroup', 'detach', cgroup, 'connect4', 'pinned', otherPin], { reject: false });
      await execa('rm', ['-rf', `/sys/fs/bpf/flbt-${process.pid}-bpf`]);
      for (let i = 0; i < 50 && existsSync(cgroup); i++) {
        try {
          rmdirSync(cgroup);
        } catch {
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    }
    await deleteNetns(ns);
    await deleteNetns(peer);
    if (ns) rmSync(`/etc/netns/${ns.name}`, { recursive: true, force: true });
  });

  it('loads all ten programs and attaches each through a bpf_link to the test cgroup only', async () => {
    expect(loadedStatus).toMatchObject({ loaded: true, complete: true, namespaces: 1, cgroup });
    for (const program of loadedStatus.programs) expect(program).toMatchObject({ programId: expect.any(Number), linkId: expect.any(Number) });
    const attached = JSON.parse((await execa('bpftool', ['-j', 'cgroup', 'show', cgroup])).stdout) as { id: number; name: string }[];
    expect(attached.map((a) => a.name).sort()).toEqual(
      [
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
        'test_socket_lb4',
      ].sort(),
    );
    // A second load of the same mesh changes nothing.
    const again = await execa(process.execPath, [flb, 'bpf', 'load', '--mesh', MESH, '--cgroup', cgroup, '--json']);
    expect(JSON.parse(again.stdout)).toMatchObject({ alreadyLoaded: true });
    const shown = await execa(process.execPath, [flb, 'bpf', 'status', '--mesh', MESH]);
    expect(shown.stdout).toContain(`mesh ${MESH}: loaded at ${cgroup}, 1 namespace(s) registered`);
  });

  it("sends an app's IPv4 connection to the sidecar, which reads the original destination; the app sees the address it dialled", async () => {
    const result = await dial(SERVICE.v4, 8080);
    expect(result.reply).toEqual({ via: 'sidecar', local: '::ffff:127.0.0.1:15001', original: { address: SERVICE.v4, port: 8080, family: 4 } });
    expect(result.peer).toEqual({ address: SERVICE.v4, port: 8080 });
  });

  it('sends IPv6 connections to [::1]:15001 with their IPv6 original destination', async () => {
    const result = await dial(SERVICE.v6, 8080);
    expect(result.reply).toEqual({ via: 'sidecar', local: '::1:15001', original: { address: SERVICE.v6, port: 8080, family: 6 } });
    expect(result.peer).toEqual({ address: SERVICE.v6, port: 8080 });
  });

  it('treats an IPv4-mapped destination from an IPv6 socket as IPv4 (excluded ranges too), and shows the app the mapped address', async () => {
    const result = await dial(`::ffff:${SERVICE.v4}`, 8080);
    expect(result.reply).toEqual({ via: 'sidecar', local: '::ffff:127.0.0.1:15001', original: { address: SERVICE.v4, port: 8080, family: 4 } });
    expect(result.peer).toEqual({ address: `::ffff:${SERVICE.v4}`, port: 8080 });
    expect((await dial(`::ffff:${SERVICE.excluded}`, 8080)).reply?.via).toBe('direct');
  });

  it("leaves the proxy UID's own connections, excluded ports and excluded ranges alone", async () => {
    const [proxy, port, range] = await Promise.all([dial(SERVICE.v4, 8080, PROXY), dial(SERVICE.v4, 9090), dial(SERVICE.excluded, 8080)]);
    expect(proxy.reply).toEqual({ via: 'direct', local: `::ffff:${SERVICE.v4}:8080` });
    expect(port.reply).toEqual({ via: 'direct', local: `::ffff:${SERVICE.v4}:9090` });
    expect(range.reply).toEqual({ via: 'direct', local: `::ffff:${SERVICE.excluded}:8080` });
    expect(proxy.peer).toEqual({ address: SERVICE.v4, port: 8080 });
  });

  it("leaves an app reaching its own pod's addresses alone, as the iptables rules do", async () => {
    const [v4, v6] = await Promise.all([dial(POD.v4, 8080), dial(POD.v6, 8080)]);
    expect(v4.reply).toEqual({ via: 'pod-app', local: `::ffff:${POD.v4}:8080` });
    expect(v6.reply).toEqual({ via: 'pod-app', local: `${POD.v6}:8080` });
  });

  it("sends DNS over UDP to the sidecar's resolver, connected (glibc's way) or not, and the answer comes from the server asked", async () => {
    const [connected, sent, v6, mapped] = await Promise.all([
      query('udp-dial', NAMESERVER.v4),
      query('udp-send', NAMESERVER.v4),
      query('udp-dial', NAMESERVER.v6),
      query('udp-send', `::ffff:${NAMESERVER.v4}`),
    ]);
    expect(connected).toEqual({
      from: { address: NAMESERVER.v4, port: 53 },
      answer: '10.200.0.77',
      peer: { address: NAMESERVER.v4, port: 53, family: 'IPv4' },
    });
    expect(sent).toEqual({ from: { address: NAMESERVER.v4, port: 53 }, answer: '10.200.0.77' });
    expect(v6).toEqual({ from: { address: NAMESERVER.v6, port: 53 }, answer: '10.200.0.77', peer: { address: NAMESERVER.v6, port: 53, family: 'IPv6' } });
    expect(mapped).toEqual({ from: { address: `::ffff:${NAMESERVER.v4}`, port: 53 }, answer: '10.200.0.77' });
  });

  it("answers glibc's resolver (getent) through the sidecar's resolver; the proxy's own queries go to the real server", async () => {
    const resolved = await inPod(['getent', 'ahostsv4', 'probe.test'], APP);
    expect(resolved.exitCode).toBe(0);
    expect(resolved.stdout.split('\n')[0]).toMatch(/^10\.200\.0\.77\s+STREAM probe\.test$/);
    // The peer has the nameserver's address but no DNS server: it refuses.
    expect(await query('udp-dial', NAMESERVER.v4, PROXY)).toEqual({ error: 'ECONNREFUSED' });
  });

  it('captures DNS to a stub resolver on loopback too, as FLB_DNS comes before every exception', async () => {
    expect(await query('udp-dial', '127.0.0.53')).toMatchObject({ from: { address: '127.0.0.53', port: 53 }, answer: '10.200.0.77' });
  });

  it('with IPv6 off leaves native IPv6 alone, DNS included, and still captures IPv4-mapped destinations', async () => {
    await register({ mesh: MESH, netns: ns.path, settings: settings({ ipv6: 'disabled' }) });
    try {
      const [tcp6, dns6, mapped] = await Promise.all([dial(SERVICE.v6, 8080), query('udp-dial', NAMESERVER.v6), dial(`::ffff:${SERVICE.v4}`, 8080)]);
      expect(tcp6.reply).toEqual({ via: 'direct', local: `${SERVICE.v6}:8080` });
      // The peer has the nameserver's address but no DNS server: it refuses.
      expect(dns6).toEqual({ error: 'ECONNREFUSED' });
      expect(mapped.reply?.via).toBe('sidecar');
    } finally {
      await register({ mesh: MESH, netns: ns.path, settings: settings() });
    }
  });

  it('sends TCP port 53 to the DNS port', async () => {
    const result = await dial(SERVICE.v4, 53);
    expect(result.reply).toMatchObject({ via: 'dns', original: { address: SERVICE.v4, port: 53, family: 4 } });
  });

  it("coexists with a socket load balancer's connect4 attached before it: the sidecar sees the endpoint it chose", async () => {
    const result = await dial('10.96.0.10', 80);
    expect(result.reply).toMatchObject({ via: 'sidecar', original: { address: SERVICE.v4, port: 8080, family: 4 } });
  });

  it('with an inclusion list, captures only those ranges; re-registering replaces the settings', async () => {
    await register({ mesh: MESH, netns: ns.path, settings: settings({ includeOutboundIpRanges: [`${SERVICE.v4}/32`], excludeOutboundPorts: [] }) });
    try {
      const [included, other, formerlyExcludedPort] = await Promise.all([dial(SERVICE.v4, 8080), dial(SERVICE.other, 8080), dial(SERVICE.v4, 9090)]);
      expect(included.reply?.via).toBe('sidecar');
      expect(other.reply?.via).toBe('direct');
      expect(formerlyExcludedPort.reply).toMatchObject({ via: 'sidecar', original: { port: 9090 } });
      // IPv6 has no included range, so none of it is captured.
      expect((await dial(SERVICE.v6, 8080)).reply?.via).toBe('direct');
    } finally {
      await register({ mesh: MESH, netns: ns.path, settings: settings() });
    }
  });

  it('leaves a namespace alone once it is unregistered', async () => {
    expect(unregister({ mesh: MESH, netns: ns.path })).toMatchObject({ wasRegistered: true });
    try {
      expect((await dial(SERVICE.v4, 8080)).reply?.via).toBe('direct');
    } finally {
      await register({ mesh: MESH, netns: ns.path, settings: settings() });
    }
  });

  it('unload leaves no program, map, link or pin of ours, and connections go direct again', async () => {
    const ids = (kind: string) => execa('bpftool', ['-j', kind, 'show']).then((r) => (JSON.parse(r.stdout) as { id: number }[]).map((e) => e.id));
    const unloaded = await execa(process.execPath, [flb, 'bpf', 'unload', '--mesh', MESH, '--json']);
    const result = JSON.parse(unloaded.stdout) as { wasLoaded: boolean; removed: { programs: number[]; maps: number[]; links: number[] } };
    expect(result.wasLoaded).toBe(true);
    expect(result.removed.programs.sort()).toEqual(loadedStatus.programs.map((p) => p.programId).sort());
    expect(result.removed.maps).toHaveLength(7);
    expect(result.removed.links.sort()).toEqual(loadedStatus.programs.map((p) => p.linkId).sort());
    const [programs, maps, links] = await Promise.all([ids('prog'), ids('map'), ids('link')]);
    expect(programs.filter((id) => result.removed.programs.includes(id))).toEqual([]);
    expect(maps.filter((id) => result.removed.maps.includes(id))).toEqual([]);
    expect(links.filter((id) => result.removed.links.includes(id))).toEqual([]);
    expect(existsSync(`/sys/fs/bpf/flb-mesh/${MESH}`)).toBe(false);
    const attached = JSON.parse((await execa('bpftool', ['-j', 'cgroup', 'show', cgroup])).stdout) as { name: string }[];
    expect(attached.map((a) => a.name)).toEqual(['test_socket_lb4']);
    expect((await dial(SERVICE.v4, 8080)).reply?.via).toBe('direct');
    const shown = await execa(process.execPath, [flb, 'bpf', 'status', '--mesh', MESH], { reject: false });
    expect(shown).toMatchObject({ exitCode: 1, stdout: `mesh ${MESH}: not loaded` });
  });
});
