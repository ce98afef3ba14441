import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execa, type ResultPromise } from 'execa';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmdirSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { V1Pod } from '@kubernetes/client-node';
import jsonpatch from 'fast-json-patch';
import { API_VERSION, INTERCEPTION_ANNOTATION, InterceptionSchema, MeshSchema, parseDocument, type Interception } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { checkFeatures, defaultCgroup, isRegistered, status, unload, unregister } from '../bpf/loader.js';
import { CniAgent } from '../cni/agent.js';
import { EbpfNode } from '../cni/ebpf.js';
import { verifyRules } from '../cni/iptables.js';
import { injectPod } from '../injector/inject.js';
import { CniRuntime, type Conflist, type Sandbox } from '../devenv/cni.js';
import { createNetns, deleteNetns, removeStaleNamespaces, requireRoot, requireTools, type Netns } from './harness/netns.js';
import { isAlive } from './harness/leftovers.js';

/**
 * eBPF mode through the CNI plugin, as a runtime drives it (chained after the Debian bridge and
 * host-local plugins): the node agent registers an injected eBPF pod with the programs in-process,
 * writes only its inbound rule, and takes both away on DEL; the pod's own validation passes; on a
 * node whose feature check failed, the pod's validation fails saying so. The programs attach to a
 * cgroup the test makes (never the machine's root); the pod's processes join it, then enter the
 * namespace. The pods are what the injector makes of them in eBPF mode, handed to the agent as the
 * API would (cni.test.ts covers reading them from a real apiserver).
 */
const pluginBuild = fileURLToPath(new URL(`../cni/plugin/build/${process.env.FLB_NATIVE_BUILD ? `${process.env.FLB_NATIVE_BUILD}/` : ''}`, import.meta.url));
const probe = fileURLToPath(new URL('../bpf/testing/probe.mjs', import.meta.url));
const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));
const APP = 1000;
const PROXY = 1500;
const MESH = `flbt-${process.pid}`;
const GATEWAY = '10.217.0.1';
const conflist = (dataDir: string): Conflist => ({
  cniVersion: '1.0.0',
  name: 'flb-ebpf-test-net',
  plugins: [
    { type: 'bridge', bridge: 'flbebr0', isGateway: true, ipMasq: false, ipam: { type: 'host-local', ranges: [[{ subnet: '10.217.0.0/24' }]], dataDir } },
    { type: 'flb-cni' },
  ],
});

interface Dialled {
  reply?: { via: string; original?: { address: string; port: number; family: number }; error?: string };
  error?: string;
}

/** The pod as the injector makes it in eBPF mode. */
function injectedPod(name: string, annotations?: Record<string, string>): V1Pod {
  const mesh = MeshSchema.parse({ apiVersion: API_VERSION, kind: 'Mesh', name: 'flb', interception: { mode: 'ebpf' } });
  const pod: V1Pod = {
    metadata: { name, namespace: 'shop', ...(annotations ? { annotations } : {}) },
    spec: { containers: [{ name: 'app', image: 'example/app' }] },
  };
  const result = injectPod(pod, { metadata: { name: 'shop', labels: { 'flomesh.io/inject': 'enabled' } } }, { mesh, nativeSidecars: true, version: 'test' });
  if (result.action !== 'inject') throw new Error(`the injector did not inject: ${JSON.stringify(result)}`);
  return jsonpatch.applyPatch(structuredClone(pod), result.patch, true, false).newDocument as V1Pod;
}

const settingsOf = (pod: V1Pod): Interception =>
  parseDocument(InterceptionSchema, JSON.parse(pod.metadata!.annotations![INTERCEPTION_ANNOTATION]!), 'annotation');

/** Removes what a killed run of this file left: its mesh's pins and links, its cgroup. */
async function removeStale(cgroupRoot: string): Promise<void> {
  const stale = (name: string) => {
    const pid = Number(/^flbt-(\d+)/.exec(name)?.[1]);
    return pid > 0 && pid !== process.pid && !isAlive(pid);
  };
  for (const mesh of existsSync('/sys/fs/bpf/flb-mesh') ? readdirSync('/sys/fs/bpf/flb-mesh') : []) if (stale(mesh)) await unload({ mesh });
  for (const name of readdirSync(cgroupRoot)) {
    if (!stale(name) || !name.endsWith('-cni-ebpf')) continue;
    try {
      rmdirSync(join(cgroupRoot, name));
    } catch {
      // a process of the killed run is still in it
    }
  }
}

describe('eBPF mode through the CNI plugin and node agent', () => {
  let cgroup: string;
  let work: string;
  let host: Netns;
  const sandboxes: Netns[] = [];
  const agents: CniAgent[] = [];
  let runtime: CniRuntime;
  let brokenRuntime: CniRuntime;
  let sidecar: ResultPromise | undefined;
  const pods = new Map<string, V1Pod>();
  const log = createLogger('cni-ebpf-test', 'error');

  const sandbox = async (pod: string, annotations?: Record<string, string>): Promise<{ sandbox: Sandbox; ns: Netns }> => {
    const ns = await createNetns(pod.slice(0, 8));
    sandboxes.push(ns);
    pods.set(pod, injectedPod(pod, annotations));
    return {
      ns,
      sandbox: { containerId: `c-${pod}`, netns: ns.path, ifName: 'eth0', args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=${pod}` },
    };
  };
  const startAgent = async (name: string, ebpf: EbpfNode) => {
    const agent = new CniAgent({
      socketPath: join(work, `${name}.sock`),
      stateDir: join(work, `${name}-state`),
      log,
      ebpf,
      getPod: async (_namespace, pod) => pods.get(pod),
    });
    await agent.start();
    agents.push(agent);
    return agent;
  };
  /** A command in the pod: into the test's cgroup first, then its namespace (`ip netns exec` remounts /sys). */
  const inPod = (ns: Netns, args: string[], uid?: number, env?: Record<string, string>): ResultPromise<{ reject: false }> => {
    const asUser = uid !== undefined ? ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--'] : [];
    return execa('sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, 'ip', 'netns', 'exec', ns.name, ...asUser, ...args], {
      reject: false,
      ...(env ? { env } : {}),
    });
  };
  /** Dials from the pod as the app (its cgroup, its namespace), or from the node's namespace. */
  const dial = async (from: Netns | 'node', address: string, port: number): Promise<Dialled> => {
    const args = ['setpriv', '--pdeathsig', 'KILL', '--', process.execPath, probe, 'dial', address, String(port)];
    const result = from === 'node' ? await execa('ip', ['netns', 'exec', host.name, ...args], { reject: false }) : await inPod(from, args, APP);
    if (result.exitCode !== 0) throw new Error(`the dialler failed: ${result.stderr}`);
    return JSON.parse(result.stdout) as Dialled;
  };
  /** `flb cni validate` as the injected flb-validation container runs it: its env, its UID. */
  const validate = (ns: Netns, pod: V1Pod) => {
    const validation = pod.spec!.initContainers!.find((c) => c.name === 'flb-validation')!;
    const env = Object.fromEntries(validation.env!.map((e) => [e.name, e.value!]));
    return inPod(ns, [process.execPath, flb, ...validation.command!.slice(1)], validation.securityContext!.runAsUser!, env);
  };
  const podAddress = async (ns: Netns) => /inet (\S+)\//.exec((await ns.exec('ip', ['-4', '-o', 'addr', 'show', 'dev', 'eth0'])).stdout)![1]!;
  const flbChains = async (ns: Netns) => (await ns.exec('iptables-save', ['-t', 'nat'])).stdout.split('\n').filter((l) => /^[:-]A? ?\S*FLB_/.test(l));

  beforeAll(async () => {
    requireRoot('the eBPF interception tests');
    await requireTools(['ip', 'nsenter', 'setpriv', 'bpftool', 'iptables-save', '/usr/lib/cni/bridge', '/usr/lib/cni/host-local', `${pluginBuild}flb-cni`]);
    const cgroupRoot = defaultCgroup();
    const report = await checkFeatures(cgroupRoot ? { cgroup: cgroupRoot } : {});
    if (!report.ok) {
      throw new Error(
        `the eBPF tests cannot run here: ${report.missing.join('; ')}. Install clang libbpf-dev bpftool (npm run setup) and run bash scripts/build-native.sh`,
      );
    }
    await removeStaleNamespaces();
    await removeStale(cgroupRoot!);
    cgroup = join(cgroupRoot!, `flbt-${process.pid}-cni-ebpf`);
    mkdirSync(cgroup, { recursive: true });
    work = mkdtempSync(join(tmpdir(), 'flb-cni-ebpf-test-'));
    host = await createNetns('node');
    const env = (name: string) => ({ FLB_CNI_AGENT_SOCKET: join(work, `${name}.sock`), FLB_CNI_LOG: join(work, 'cni.log') });
    runtime = new CniRuntime(['/usr/lib/cni', pluginBuild], host.name, env('agent'));
    brokenRuntime = new CniRuntime(['/usr/lib/cni', pluginBuild], host.name, env('broken'));
    await startAgent('agent', new EbpfNode({ mesh: MESH, cgroup, log }));
    // A node whose feature check fails: its "cgroup" is a plain folder, not cgroup v2.
    // Its error log, which names what is missing, is expected: not shown.
    await startAgent('broken', new EbpfNode({ mesh: `${MESH}-broken`, cgroup: work, log: createLogger('cni-ebpf-test', 'silent') }));
  });

  afterAll(async () => {
    sidecar?.kill('SIGKILL');
    await sidecar?.catch(() => undefined);
    for (const agent of agents) await agent.stop();
    await unload({ mesh: MESH }).catch(() => undefined);
    for (const ns of sandboxes) await deleteNetns(ns);
    await deleteNetns(host);
    for (let i = 0; cgroup && i < 50 && existsSync(cgroup); i++) {
      try {
        rmdirSync(cgroup);
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    if (work) rmSync(work, { recursive: true, force: true });
  });

  let pod: { sandbox: Sandbox; ns: Netns };
  it('ADD loads the programs at the first eBPF pod, registers the pod in-process and writes only the inbound rule; CHECK passes', async () => {
    pod = await sandbox('ebpf-app');
    const runs = await runtime.add(conflist(join(work, 'ipam')), pod.sandbox);
    expect(runs.map((r) => r.exitCode)).toEqual([0, 0]);
    expect(runs[1]!.result).toEqual(runs[0]!.result);
    expect(await status({ mesh: MESH })).toMatchObject({ loaded: true, complete: true, cgroup, namespaces: 1 });
    expect(isRegistered({ mesh: MESH, netns: pod.ns.path })).toBe(true);
    const settings = settingsOf(pods.get('ebpf-app')!);
    expect((await verifyRules(settings, { netns: pod.ns.path })).problems).toEqual([]);
    // The eBPF programs take outbound and DNS: no nat OUTPUT rule of ours at all.
    const chains = await flbChains(pod.ns);
    expect(chains.some((l) => l.includes('FLB_INBOUND'))).toBe(true);
    expect(chains.filter((l) => /FLB_(OUTPUT|OUT_REDIRECT|DNS)/.test(l))).toEqual([]);
    await runtime.check(conflist(join(work, 'ipam')), pod.sandbox);
  });

  it("the pod's validation passes, as the injected flb-validation container runs it", async () => {
    const validated = await validate(pod.ns, pods.get('ebpf-app')!);
    expect(validated).toMatchObject({ exitCode: 0, stdout: expect.stringContaining('traffic interception is in place') });
  });

  it("an outbound connection reaches the sidecar's outbound port with its original destination; inbound reaches the sidecar's inbound port 15003", async () => {
    // The stand-in sidecar (and the pod's app on 8080) as the proxy UID, after the validation as in a pod.
    sidecar = inPod(pod.ns, ['setpriv', '--pdeathsig', 'KILL', '--', process.execPath, probe, 'serve', 'sidecar'], PROXY);
    await new Promise<void>((resolve, reject) => {
      sidecar!.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      void sidecar!.then((r) => reject(new Error(`the stand-in sidecar exited: ${String(r.stderr)}`)));
    });
    const outbound = await dial(pod.ns, GATEWAY, 8080);
    expect(outbound.reply).toEqual({ via: 'sidecar', local: expect.any(String), original: { address: GATEWAY, port: 8080, family: 4 } });
    const address = await podAddress(pod.ns);
    const inbound = await dial('node', address, 8080);
    expect(inbound.reply).toEqual({ via: 'inbound', local: expect.stringContaining(':15003'), original: { address, port: 8080, family: 4 } });
    // The sidecar's own ports are never redirected inbound.
    const own = await dial('node', address, 15001);
    expect(own.reply).toMatchObject({ via: 'sidecar', local: `::ffff:${address}:15001` });
  });

  it('CHECK fails, naming it, when the pod is no longer registered', async () => {
    unregister({ mesh: MESH, netns: pod.ns.path });
    await expect(runtime.check(conflist(join(work, 'ipam')), pod.sandbox)).rejects.toThrow(
      "flb-cni: CNI error 100: the pod's interception rules are not in place: the namespace is not registered with the eBPF programs",
    );
  });

  it('DEL unregisters the pod and removes its inbound rule', async () => {
    await runtime.del(conflist(join(work, 'ipam')), pod.sandbox);
    expect(isRegistered({ mesh: MESH, netns: pod.ns.path })).toBe(false);
    expect(await flbChains(pod.ns)).toEqual([]);
    expect((await status({ mesh: MESH })).namespaces).toBe(0);
  });

  it("ADD puts an eBPF pod's BGP VIPs on its lo, and DEL takes them off", async () => {
    const vip = await sandbox('ebpf-vip', { 'flomesh.io/bgp-vips': '10.216.9.100' });
    const onLo = async () => (await vip.ns.exec('ip', ['-4', '-o', 'addr', 'show', 'dev', 'lo'])).stdout;
    await runtime.add(conflist(join(work, 'ipam')), vip.sandbox);
    expect(await onLo()).toContain('inet 10.216.9.100/32');
    await runtime.check(conflist(join(work, 'ipam')), vip.sandbox);
    // The VIP is one of the pod's own addresses: the app reaching it goes to its own port, not to the sidecar.
    const standIn = inPod(vip.ns, ['setpriv', '--pdeathsig', 'KILL', '--', process.execPath, probe, 'serve', 'sidecar'], PROXY);
    try {
      await new Promise<void>((resolve, reject) => {
        standIn.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
        void standIn.then((r) => reject(new Error(`the stand-in sidecar exited: ${r.stderr}`)));
      });
      expect((await dial(vip.ns, '10.216.9.100', 8080)).reply).toMatchObject({ via: 'pod-app' });
      expect((await dial(vip.ns, GATEWAY, 8080)).reply).toMatchObject({ via: 'sidecar' });
    } finally {
      standIn.kill('SIGKILL');
      await standIn.catch(() => undefined);
    }
    await runtime.del(conflist(join(work, 'ipam')), vip.sandbox);
    expect(await onLo()).not.toContain('10.216.9.100');
    expect((await status({ mesh: MESH })).namespaces).toBe(0);
  });

  it('a restarted agent removes the registration of a pod deleted while no agent ran', async () => {
    const gone = await sandbox('ebpf-gone');
    await runtime.add(conflist(join(work, 'ipam')), gone.sandbox);
    expect((await status({ mesh: MESH })).namespaces).toBe(1);
    await agents[0]!.stop();
    // No process is in that namespace: with its mount gone, it is gone.
    await deleteNetns(gone.ns);
    await startAgent('agent', new EbpfNode({ mesh: MESH, cgroup, log }));
    expect((await status({ mesh: MESH })).namespaces).toBe(0);
  });

  it("on a node whose feature check failed, ADD succeeds and the pod's validation fails saying why, instead of the pod running unmeshed", async () => {
    const broken = await sandbox('ebpf-broken');
    const runs = await brokenRuntime.add(conflist(join(work, 'ipam')), broken.sandbox);
    expect(runs.map((r) => r.exitCode)).toEqual([0, 0]);
    const validated = await validate(broken.ns, pods.get('ebpf-broken')!);
    expect(validated.exitCode).toBe(1);
    expect(validated.stderr).toContain('traffic interception is not in place in this pod');
    expect(validated.stderr).toContain(`eBPF interception is not available on node ${hostname()}: missing a cgroup v2 path: ${work} is on`);
    expect(validated.stderr).toContain('interception.mode to "cni"');
    expect(existsSync(join('/sys/fs/bpf/flb-mesh', `${MESH}-broken`))).toBe(false);
    await brokenRuntime.del(conflist(join(work, 'ipam')), broken.sandbox);
  });
});
