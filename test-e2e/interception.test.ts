import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { ResultPromise } from 'execa';
import { fileURLToPath } from 'node:url';
import { InterceptionSchema, type Interception } from '../common/contract/index.js';
import { applyRules, cleanRules, verifyRules, type Backend } from '../cni/iptables.js';
import { createNetns, deleteNetns, link, printed, removeStaleNamespaces, requireRoot, requireTools, spawnIn, type Netns } from './harness/netns.js';

/**
 * The interception rules in real network namespaces, with both iptables backends: a "pod"
 * namespace with the rules and stand-in sidecar listeners, and a "peer" host on a veth pair.
 * Apps run as UID 1000, the sidecar as 1500.
 */
const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));
const APP = 1000;
const PROXY = 1500;
const POD = { v4: '10.213.0.1', v6: 'fd0f::1' };
const PEER = { v4: '10.213.0.2', v6: 'fd0f::2', other: '10.213.0.3' };
/** BGP VIPs the pod's sidecar would announce; the peer routes them to the pod's address, as a router that learnt them would. */
const VIP = { v4: '10.213.9.100', v6: 'fd0f:9::100' };

const settings = (overrides: Partial<Interception> = {}): Interception =>
  InterceptionSchema.parse({
    version: 1,
    mode: 'iptables',
    ipv6: 'auto',
    excludeOutboundPorts: [5432],
    excludeOutboundIpRanges: [`${PEER.other}/32`],
    ...overrides,
  });

const normalisedSave = async (ns: Netns, backend: Backend, family: 4 | 6) =>
  (await ns.exec(`${family === 4 ? 'iptables' : 'ip6tables'}-${backend}-save`, [])).stdout
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/, '[0:0]'))
    .join('\n');

/** Resolves once the helper says it is ready; wrapped, because an execa process is a thenable that would be awaited to its exit. */
async function startHelper(ns: Netns, script: string): Promise<{ process: ResultPromise }> {
  const child = nodeIn(ns, [`${fixtures}${script}`]);
  await printed(child, 'ready');
  return { process: child };
}

/** `node ARGS` in a namespace (as `uid` when given), killed with the test. */
const nodeIn = (ns: Netns, args: string[], uid?: number): ResultPromise => spawnIn(ns, [process.execPath, ...args], uid !== undefined ? { uid } : {});

describe.each(['legacy', 'nft'] as const)('interception with iptables-%s', (backend) => {
  let pod: Netns;
  let peer: Netns;
  const helpers: { process: ResultPromise }[] = [];
  const before: Record<4 | 6, string> = { 4: '', 6: '' };
  const client = async (ns: Netns, uid: number, ...args: string[]) =>
    (await ns.exec(process.execPath, [`${fixtures}intercept-client.mjs`, ...args], { uid })).stdout.trim();

  beforeAll(async () => {
    requireRoot('the interception tests');
    await requireTools(['ip', 'nsenter', 'setpriv', `iptables-${backend}-save`, `ip6tables-${backend}-restore`]);
    await removeStaleNamespaces();
    pod = await createNetns('pod');
    peer = await createNetns('peer');
    await link(pod, [`${POD.v4}/24`, `${POD.v6}/64`], peer, [`${PEER.v4}/24`, `${PEER.other}/24`, `${PEER.v6}/64`]);
    // A default route covers the mesh VIP range, or connect() fails before any nat rule sees it.
    await pod.exec('ip', ['route', 'add', 'default', 'via', PEER.v4]);
    await peer.exec('ip', ['route', 'add', 'default', 'via', POD.v4]);
    // A pod's nat table exists before we come (kube, the CNI): make it exist here too, so the
    // comparison is of what we add and remove, not of the table's own creation.
    for (const cmd of [`iptables-${backend}`, `ip6tables-${backend}`]) {
      await pod.exec(cmd, ['-t', 'nat', '-N', 'FLBT_PROBE']);
      await pod.exec(cmd, ['-t', 'nat', '-X', 'FLBT_PROBE']);
    }
    before[4] = await normalisedSave(pod, backend, 4);
    before[6] = await normalisedSave(pod, backend, 6);
    helpers.push(await startHelper(pod, 'intercept-helper.mjs'), await startHelper(peer, 'intercept-peer.mjs'));
  });
  afterAll(async () => {
    for (const h of helpers) h.process.kill('SIGKILL');
    await deleteNetns(pod);
    await deleteNetns(peer);
  });

  it('applies atomically and idempotently, for IPv4 and IPv6', async () => {
    expect(await applyRules(settings(), { backend, netns: pod.path })).toEqual({ backend, families: [4, 6], unchanged: [] });
    expect(await applyRules(settings(), { backend, netns: pod.path })).toEqual({ backend, families: [4, 6], unchanged: [4, 6] });
    expect(await verifyRules(settings(), { backend, netns: pod.path })).toEqual({ backend, problems: [] });
    const save = await normalisedSave(pod, backend, 4);
    expect(save.split('\n').filter((l) => l.startsWith('-A OUTPUT') || l.startsWith('-A PREROUTING'))).toEqual([
      '-A PREROUTING -p tcp -j FLB_INBOUND',
      '-A OUTPUT -p tcp -j FLB_OUTPUT',
      '-A OUTPUT -p udp -m udp --dport 53 -j FLB_DNS',
    ]);
  });

  it("sends the app's outbound connections to 15001, where the original destination is read back", async () => {
    expect(await client(pod, APP, 'tcp', PEER.v4, '8080')).toBe(`outbound ${PEER.v4}:8080`);
    expect(await client(pod, APP, 'tcp', '240.240.0.10', '80')).toBe('outbound 240.240.0.10:80');
    expect(await client(pod, APP, 'tcp', PEER.v6, '8080')).toBe(`outbound [${PEER.v6}]:8080`);
  });

  it("never redirects the sidecar's own connections (no loop)", async () => {
    expect(await client(pod, PROXY, 'tcp', PEER.v4, '8080')).toBe(`peer ${PEER.v4}:8080`);
    expect(await client(pod, PROXY, 'tcp', PEER.v6, '8080')).toBe(`peer ${PEER.v6}:8080`);
  });

  it('lets excluded ports and CIDRs bypass the sidecar', async () => {
    expect(await client(pod, APP, 'tcp', PEER.v4, '5432')).toBe(`peer ${PEER.v4}:5432`);
    expect(await client(pod, APP, 'tcp', PEER.other, '8080')).toBe(`peer ${PEER.other}:8080`);
  });

  it('sends inbound connections to 15003, but not those to the sidecar ports', async () => {
    expect(await client(peer, APP, 'tcp', POD.v4, '8080')).toBe(`inbound ${POD.v4}:8080 from ${PEER.v4}`);
    expect(await client(peer, APP, 'tcp', POD.v6, '8080')).toBe(`inbound [${POD.v6}]:8080 from ${PEER.v6}`);
    expect(await client(peer, APP, 'tcp', POD.v4, '15010')).toBe('sidecar-metrics');
  });

  it("answers the app's DNS queries from 127.0.0.1:15053 and [::1]:15053, not the sidecar's", async () => {
    expect(await client(pod, APP, 'udp', PEER.v4, '53')).toBe('sidecar-dns query');
    expect(await client(pod, APP, 'udp', PEER.v6, '53')).toBe('sidecar-dns query');
    expect(await client(pod, PROXY, 'udp', PEER.v4, '53')).toBe('peer-dns query');
  });

  it('handles an app calling itself: through a service via the inbound side, directly as is', async () => {
    // The sidecar, having mapped a service VIP to its own pod, connects to the pod IP.
    expect(await client(pod, PROXY, 'tcp', POD.v4, '8080')).toBe(`inbound ${POD.v4}:8080 from ${POD.v4}`);
    // The sidecar's inbound side forwards to the app from 127.0.0.6: not captured again.
    expect(await client(pod, PROXY, 'tcp', POD.v4, '8080', '127.0.0.6')).toBe('app from 127.0.0.6');
    expect(await client(pod, APP, 'tcp', POD.v4, '8080')).toBe(`app from ${POD.v4}`);
  });

  it('replaces the rules when the settings change', async () => {
    const changed = settings({ excludeInboundPorts: [8080] });
    expect((await applyRules(changed, { backend, netns: pod.path })).unchanged).toEqual([]);
    expect(await client(peer, APP, 'tcp', POD.v4, '8080')).toBe(`app from ${PEER.v4}`);
    expect((await verifyRules(settings(), { backend, netns: pod.path })).problems).toEqual([
      'IPv4: unexpected rule: -A FLB_INBOUND -p tcp -m tcp --dport 8080 -j RETURN',
      'IPv6: unexpected rule: -A FLB_INBOUND -p tcp -m tcp --dport 8080 -j RETURN',
    ]);
  });

  it('the in-pod validation passes with the rules in place (CNI mode, no privilege)', async () => {
    const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));
    // The stand-in sidecar holds 15001 in this namespace; validation runs before the sidecar, so stop it briefly.
    helpers[0]!.process.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    try {
      const ok = await pod.exec(process.execPath, [flb, 'cni', 'validate', '--settings', JSON.stringify(settings())], { uid: 1501, reject: false });
      expect(ok.stderr).toBe('');
      expect(ok.stdout).toMatch(/^traffic interception is in place \(240.240.255.254:15999 reached port 15001/);
    } finally {
      helpers[0] = await startHelper(pod, 'intercept-helper.mjs');
    }
  });

  it("the init container puts the pod's BGP VIPs on lo once, traffic to them reaches the app serving them, clean takes them off", async () => {
    const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));
    const withVips = JSON.stringify({ ...settings(), bgpVips: [`${VIP.v4}/32`, `${VIP.v6}/128`] });
    // As the init container runs it: `flb iptables apply`, the settings in FLB_INTERCEPTION.
    const init = () =>
      pod.exec('env', [`FLB_INTERCEPTION=${withVips}`, 'FLB_LOG_FORMAT=json', process.execPath, flb, 'iptables', 'apply', '--backend', backend]);
    const vipsOnLo = async () =>
      (await pod.exec('ip', ['-o', 'address', 'show', 'dev', 'lo'])).stdout
        .split('\n')
        .map((line) => /inet6? (\S+)/.exec(line)?.[1])
        .filter((a) => a?.startsWith('10.213.9.') || a?.startsWith('fd0f:9:'));
    expect(await vipsOnLo()).toEqual([]);
    expect((await init()).stderr).toContain('"added":["10.213.9.100/32","fd0f:9::100/128"],"msg":"BGP VIPs put on lo"');
    // A restarted init container: nothing added twice, no error.
    expect((await init()).stderr).toContain('"added":[],"msg":"BGP VIPs already on lo"');
    expect(await vipsOnLo()).toEqual([`${VIP.v4}/32`, `${VIP.v6}/128`]);
    expect((await verifyRules(InterceptionSchema.parse(JSON.parse(withVips)), { backend, netns: pod.path })).problems).toEqual([]);

    await peer.exec('ip', ['-6', 'route', 'add', `${VIP.v6}/128`, 'via', POD.v6]);
    const app = nodeIn(pod, [`${fixtures}intercept-vip-app.mjs`, '9300', VIP.v4, VIP.v6]);
    try {
      await printed(app, 'ready');
      // From outside, a connection to the VIP is the pod's inbound traffic: the sidecar gets it with the VIP as the original destination...
      expect(await client(peer, APP, 'tcp', VIP.v4, '9300')).toBe(`inbound ${VIP.v4}:9300 from ${PEER.v4}`);
      expect(await client(peer, APP, 'tcp', VIP.v6, '9300')).toBe(`inbound [${VIP.v6}]:9300 from ${PEER.v6}`);
      // ...and forwards it there from 127.0.0.6, which is not captured again: the app bound to the VIP alone answers.
      expect(await client(pod, PROXY, 'tcp', VIP.v4, '9300', '127.0.0.6')).toBe(`vip-app ${VIP.v4} from 127.0.0.6`);
      // With the port left out of interception, the peer reaches the app on the VIP directly.
      await applyRules(settings({ excludeInboundPorts: [9300] }), { backend, netns: pod.path });
      expect(await client(peer, APP, 'tcp', VIP.v4, '9300')).toBe(`vip-app ${VIP.v4} from ${PEER.v4}`);
      expect(await client(peer, APP, 'tcp', VIP.v6, '9300')).toBe(`vip-app ${VIP.v6} from ${PEER.v6}`);
    } finally {
      app.kill('SIGKILL');
      await app.catch(() => undefined);
    }
    const clean = await pod.exec('env', [
      `FLB_INTERCEPTION=${withVips}`,
      'FLB_LOG_FORMAT=json',
      process.execPath,
      flb,
      'iptables',
      'clean',
      '--backend',
      backend,
    ]);
    expect(clean.stderr).toContain('"vipsRemoved":["10.213.9.100/32","fd0f:9::100/128"]');
    expect(await vipsOnLo()).toEqual([]);
    // The next test cleans the rules itself.
    await applyRules(settings(), { backend, netns: pod.path });
  });

  it('the init container after a native sidecar applies the rules, then holds the app until the sidecar is ready, or fails saying why', async () => {
    const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));
    const init = (...flags: string[]) =>
      pod.exec(
        'env',
        [
          `FLB_INTERCEPTION=${JSON.stringify(settings())}`,
          'FLB_LOG_FORMAT=json',
          process.execPath,
          flb,
          'iptables',
          'apply',
          '--backend',
          backend,
          '--wait-for-sidecar',
          ...flags,
        ],
        {
          reject: false,
        },
      );
    // A sidecar's admin port in the pod: /ready answers 503 for its first 600 ms, then 200.
    const admin = nodeIn(pod, [
      '-e',
      "const t=Date.now();require('http').createServer((q,r)=>{r.statusCode=Date.now()-t<600?503:200;r.end(r.statusCode===200?'ready':'no catalog yet')}).listen(15990,'127.0.0.1',()=>console.log('listening'))",
    ]);
    try {
      await printed(admin, 'listening');
      const started = Date.now();
      const held = await init('--sidecar-admin-port=15990');
      expect(held.exitCode).toBe(0);
      expect(Date.now() - started).toBeGreaterThanOrEqual(500);
      expect(held.stderr).toContain('"msg":"rules already in place"');
      expect(held.stderr).toMatch(/"waitedMs":\d+,"msg":"sidecar ready"/);
    } finally {
      admin.kill('SIGKILL');
    }
    // No sidecar answers: the init container fails (the kubelet restarts it) with what it last heard.
    const failed = await init('--sidecar-admin-port=15990', '--sidecar-timeout=300ms');
    expect(failed.exitCode).toBe(1);
    expect(failed.stderr).toContain('the sidecar was not ready within 0.3 s (http://127.0.0.1:15990/ready: no answer');
  });

  it('leaves alone a connection the sidecar opened before the rules (a native sidecar starts before flb-init): it still gets its replies', async () => {
    // Fresh namespaces: no nat table, so no conntrack yet when the connection is made, as in a new pod.
    const early = await createNetns('early-pod');
    const far = await createNetns('early-peer');
    const children: ResultPromise[] = [];
    try {
      await link(early, ['10.214.0.1/24'], far, ['10.214.0.2/24']);
      const inNs = (ns: Netns, uid: number, script: string) => nodeIn(ns, ['-e', script], uid);
      // The repo's side: answers at once, and once more when told (a long-poll's answer, held until a publish).
      const server = inNs(
        far,
        0,
        "const s=new Set();require('net').createServer((c)=>{s.add(c);c.on('data',(d)=>c.write('echo '+d))}).listen(7000,'10.214.0.2',()=>console.log('listening'));process.stdin.on('data',()=>{for(const c of s)c.write('published')})",
      );
      children.push(server);
      await printed(server, 'listening');
      // The sidecar's side (the proxy UID): asks, gets its answer, then only waits.
      const sidecar = inNs(
        early,
        PROXY,
        "const c=require('net').connect(7000,'10.214.0.2');c.setEncoding('utf8');c.on('data',(d)=>console.log(d.trim()));c.on('connect',()=>c.write('ask'))",
      );
      children.push(sidecar);
      const lines: string[] = [];
      sidecar.stdout!.on('data', (d: Buffer) => lines.push(...d.toString().trim().split('\n')));
      const until = async (line: string) => {
        for (let i = 0; i < 60 && !lines.includes(line); i++) await new Promise((r) => setTimeout(r, 50));
        return lines.includes(line);
      };
      expect(await until('echo ask')).toBe(true);
      await applyRules(settings({ ipv6: 'disabled' }), { backend, netns: early.path });
      // The first packet the pod's new conntrack sees of this connection comes from outside: taken for
      // a NEW inbound connection and redirected, it would go to 15003 (nothing there) and never arrive.
      server.stdin!.write('go\n');
      expect(await until('published')).toBe(true);
    } finally {
      for (const child of children) child.kill('SIGKILL');
      await deleteNetns(early);
      await deleteNetns(far);
    }
  });

  it('cleans without residue: iptables-save is as before', async () => {
    expect(await cleanRules({ backend, netns: pod.path })).toEqual({ backend, cleaned: [4, 6] });
    expect(await normalisedSave(pod, backend, 4)).toBe(before[4]);
    expect(await normalisedSave(pod, backend, 6)).toBe(before[6]);
    expect(await cleanRules({ backend, netns: pod.path })).toEqual({ backend, cleaned: [] });
    expect(await client(pod, APP, 'tcp', PEER.v4, '8080')).toBe(`peer ${PEER.v4}:8080`);
    // Without the rules the in-pod validation fails and says what to do.
    helpers[0]!.process.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));
    const failed = await pod.exec(process.execPath, [flb, 'cni', 'validate', '--timeout', '500'], { uid: 1501, reject: false });
    expect(failed.exitCode).toBe(1);
    expect(failed.stderr).toContain('traffic interception is not in place in this pod');
    expect(failed.stderr).toContain('hint: the pod probably started before the flb-mesh CNI plugin was installed on its node');
  });
});
