// The pod network of the development environment, made the way a container runtime makes one:
// each pod sandbox is a network namespace wired up by a CNI plugin chain read from a CNI config
// directory (the reference `bridge` and `host-local` plugins from Debian's
// containernetworking-plugins), so `flb cni install` can chain the mesh's plugin into it exactly as
// on a real node. The bridge carries the gateway address the host side listens on (the repo, the
// apiserver relay), and every pod gets a default route through it, which covers the ClusterIP and
// mesh VIP ranges (connect() fails before any nat rule without a route).
import { execa } from 'execa';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CniRuntime, type Conflist } from './cni.js';

export const CNI_PLUGIN_DIRS = ['/usr/lib/cni', '/opt/cni/bin'];
const NETNS_DIR = '/var/run/netns';
const STATE_DIR = '/run/flb-devenv';
/** Names carry the pid of the process that made them, so the next run can remove a killed run's. */
const NETNS_PREFIX = 'flbp-';
const BRIDGE_PREFIX = 'flbsim';

export interface PodSandbox {
  readonly id: string;
  readonly netns: string;
  readonly netnsPath: string;
  readonly ip: string;
}

export interface PodNetworkOptions {
  /** The run's folder (IPAM state, CNI config). */
  dir: string;
  /** Where the CNI config list lives; default `<dir>/cni/net.d`. */
  cniConfDir?: string;
  /** Extra folders searched for CNI plugins (e.g. where `flb cni install` put the mesh's). */
  cniBinDirs?: string[];
  /** Extra environment for the plugins (e.g. FLB_CNI_AGENT_SOCKET for the mesh's plugin). */
  cniEnv?: Record<string, string>;
}

export class PodNetwork {
  private counter = 0;
  private readonly runtime: CniRuntime;

  private constructor(
    readonly bridge: string,
    /** 10.N.0.0/16 */
    readonly subnet: string,
    /** The bridge's address: the host as pods see it. */
    readonly gateway: string,
    readonly cniConfDir: string,
    private readonly dir: string,
    private readonly statePath: string,
    private readonly forwardingWas: string,
    options: PodNetworkOptions,
  ) {
    this.runtime = new CniRuntime([...(options.cniBinDirs ?? []), ...CNI_PLUGIN_DIRS], undefined, options.cniEnv ?? {});
  }

  static async create(options: PodNetworkOptions): Promise<PodNetwork> {
    if (process.getuid?.() !== 0) throw new Error('the pod network needs root (network namespaces, a bridge): run as root, e.g. sudo npm start');
    for (const tool of ['bridge', 'host-local']) {
      if (!CNI_PLUGIN_DIRS.some((d) => existsSync(join(d, tool)))) {
        throw new Error(
          `the CNI plugin '${tool}' is missing from ${CNI_PLUGIN_DIRS.join(' and ')}: apt-get install containernetworking-plugins (or run 'npm run setup')`,
        );
      }
    }
    await removeStaleNetworks();
    const octet = await freeSecondOctet();
    const subnet = `10.${octet}.0.0/16`;
    const gateway = `10.${octet}.0.1`;
    const bridge = `${BRIDGE_PREFIX}${process.pid}`;
    // Made here rather than by the plugin on the first ADD: the host listens on the gateway before any pod exists.
    await execa('ip', ['link', 'add', bridge, 'type', 'bridge']);
    await pinBridgeMac(bridge);
    await execa('ip', ['addr', 'add', `${gateway}/16`, 'dev', bridge]);
    await execa('ip', ['link', 'set', bridge, 'up']);
    mkdirSync(STATE_DIR, { recursive: true });
    const statePath = join(STATE_DIR, `${process.pid}.json`);
    const forwardingWas = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
    writeFileSync(statePath, JSON.stringify({ bridge, forwardingWas }));
    const cniConfDir = options.cniConfDir ?? join(options.dir, 'cni', 'net.d');
    mkdirSync(cniConfDir, { recursive: true });
    const conflist: Conflist = {
      cniVersion: '1.0.0',
      name: 'flb-devenv',
      plugins: [
        {
          type: 'bridge',
          bridge,
          // The default route: ClusterIPs and mesh VIPs must be routable for the sidecar to see them.
          isDefaultGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet, rangeStart: `10.${octet}.1.1`, gateway }]],
            dataDir: join(options.dir, 'ipam'),
          },
        },
      ],
    };
    writeFileSync(join(cniConfDir, '10-flb-devenv.conflist'), `${JSON.stringify(conflist, null, 2)}\n`);
    return new PodNetwork(bridge, subnet, gateway, cniConfDir, options.dir, statePath, forwardingWas, options);
  }

  /**
   * The config list a runtime would use: the first file of the config directory by name, as
   * containerd and CRI-O choose (a lone .conf becomes a list of one).
   */
  conflist(): Conflist {
    const files = readdirSync(this.cniConfDir)
      .filter((f) => /\.(conflist|conf|json)$/.test(f))
      .sort();
    if (files.length === 0) throw new Error(`no CNI configuration in ${this.cniConfDir}`);
    const parsed = JSON.parse(readFileSync(join(this.cniConfDir, files[0]!), 'utf8')) as Conflist & { type?: string };
    if (parsed.plugins) return parsed;
    const { cniVersion, name, ...plugin } = parsed;
    return { cniVersion, name, plugins: [plugin as Conflist['plugins'][number]] };
  }

  /** A network namespace with the pod's address, through the CNI chain (ADD). */
  async addPod(pod: { uid: string; namespace: string; name: string }): Promise<PodSandbox> {
    const netns = `${NETNS_PREFIX}${process.pid}-${this.counter++}`;
    const netnsPath = join(NETNS_DIR, netns);
    const sandbox = { containerId: pod.uid, netns: netnsPath, ifName: 'eth0', args: cniArgs(pod) };
    try {
      // One program started from here instead of two: each start forks this whole process (the
      // simulator, ~160 MB), which holds its event loop ~7 ms; the shell's own forks are cheap.
      await execa('sh', ['-c', 'ip netns add "$1" && exec ip -n "$1" link set lo up', 'flb-pod-netns', netns]);
      const runs = await this.runtime.add(this.conflist(), sandbox);
      const result = runs.at(-1)?.result as { ips?: { address: string }[] } | undefined;
      const ip = result?.ips?.[0]?.address.split('/')[0];
      if (!ip) throw new Error(`the CNI chain gave pod ${pod.namespace}/${pod.name} no address (result: ${JSON.stringify(result)})`);
      return { id: pod.uid, netns, netnsPath, ip };
    } catch (error) {
      await execa('ip', ['netns', 'del', netns], { reject: false });
      throw error;
    }
  }

  /** DEL through the chain, then the namespace goes (taking the pod's end of its veth with it). */
  async removePod(sandbox: PodSandbox, pod: { uid: string; namespace: string; name: string }): Promise<void> {
    try {
      await this.runtime.del(this.conflist(), { containerId: sandbox.id, netns: sandbox.netnsPath, ifName: 'eth0', args: cniArgs(pod) });
    } finally {
      await execa('ip', ['netns', 'del', sandbox.netns], { reject: false });
    }
  }

  async close(): Promise<void> {
    for (const name of listNetns()) if (name.startsWith(`${NETNS_PREFIX}${process.pid}-`)) await execa('ip', ['netns', 'del', name], { reject: false });
    await execa('ip', ['link', 'del', this.bridge], { reject: false });
    restoreForwarding(this.forwardingWas);
    rmSync(this.statePath, { force: true });
    rmSync(join(this.dir, 'ipam'), { recursive: true, force: true });
  }
}

function cniArgs(pod: { uid: string; namespace: string; name: string }): string {
  return `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name};K8S_POD_INFRA_CONTAINER_ID=${pod.uid};K8S_POD_UID=${pod.uid}`;
}

function listNetns(): string[] {
  try {
    return readdirSync(NETNS_DIR);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z';
  } catch {
    return false;
  }
}

/** The bridge plugin turns IPv4 forwarding on; it goes back to what it was once no run needs it. */
function restoreForwarding(was: string): void {
  const others = existsSync(STATE_DIR) ? readdirSync(STATE_DIR).filter((f) => f !== `${process.pid}.json` && alive(Number(f.split('.')[0]))) : [];
  if (others.length === 0 && (was === '0' || was === '1')) writeFileSync('/proc/sys/net/ipv4/ip_forward', was);
}

/** Namespaces and bridges of runs whose process is gone (killed before it could clean up). */
export async function removeStaleNetworks(): Promise<void> {
  for (const name of listNetns()) {
    const pid = Number(new RegExp(`^${NETNS_PREFIX}(\\d+)-`).exec(name)?.[1]);
    if (pid && !alive(pid)) await execa('ip', ['netns', 'del', name], { reject: false });
  }
  const links = JSON.parse((await execa('ip', ['-j', 'link', 'show', 'type', 'bridge'])).stdout || '[]') as { ifname: string }[];
  for (const { ifname } of links) {
    const pid = Number(new RegExp(`^${BRIDGE_PREFIX}(\\d+)$`).exec(ifname)?.[1]);
    if (pid && !alive(pid)) await execa('ip', ['link', 'del', ifname], { reject: false });
  }
  if (!existsSync(STATE_DIR)) return;
  for (const file of readdirSync(STATE_DIR)) {
    const pid = Number(file.split('.')[0]);
    if (!pid || alive(pid)) continue;
    try {
      const { forwardingWas } = JSON.parse(readFileSync(join(STATE_DIR, file), 'utf8')) as { forwardingWas?: string };
      rmSync(join(STATE_DIR, file), { force: true });
      if (forwardingWas) restoreForwarding(forwardingWas);
    } catch {
      rmSync(join(STATE_DIR, file), { force: true });
    }
  }
}

/**
 * Sets a bridge's MAC to the one it has, so that it keeps it. A bridge whose address was never set
 * takes the lowest MAC of its ports, and so changes as pods come and go: a pod that had resolved
 * the gateway sends to the old MAC, the bridge takes those frames for another host's, and the pod's
 * connections to the host (its sidecar's to the repo, its replies to probes) wait a second or two for
 * TCP to retransmit: 7 of 100 sidecars at 5 pods/s. The CNI bridge plugin does the same on a real
 * node when it makes the bridge; here the bridge is made before the first pod.
 */
export async function pinBridgeMac(bridge: string): Promise<void> {
  const [link] = JSON.parse((await execa('ip', ['-j', 'link', 'show', 'dev', bridge])).stdout) as { address: string }[];
  await execa('ip', ['link', 'set', 'dev', bridge, 'address', link!.address]);
}

/** A 10.N.0.0/16 that no address or route of this host overlaps (N from 200 up). */
async function freeSecondOctet(): Promise<number> {
  const used = new Set<number>();
  const text = (await execa('ip', ['-4', 'route', 'show', 'table', 'all'])).stdout + (await execa('ip', ['-4', 'addr'])).stdout;
  for (const match of text.matchAll(/\b10\.(\d+)\.\d+\.\d+/g)) used.add(Number(match[1]));
  // A route to 10.0.0.0/8 or wider would overlap every candidate: then nothing here is safe.
  if (/\b10\.0\.0\.0\/[0-8]\b/.test(text)) throw new Error('a route covers all of 10.0.0.0/8 here: the pod network has no free range');
  for (let n = 200; n < 255; n++) if (!used.has(n)) return n;
  throw new Error('no free 10.N.0.0/16 for the pod network (200-254 are all in use)');
}
