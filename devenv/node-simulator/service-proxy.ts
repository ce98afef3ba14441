// A stand-in for kube-proxy on the pod network: a connection from a pod to a Service's ClusterIP
// and port is translated on the host (DNAT) to one of the Service's ready endpoints, picked at
// random per connection as kube-proxy's iptables mode does, and masqueraded to the gateway, so the
// reply of a pod on the same bridge comes back through the host that translated it. Without it an
// unmeshed pod (the control plane the chart installs, a sidecar's own calls to the repo) cannot
// reach a ClusterIP at all.
//
// Only packets that arrive from this run's bridge are translated: runs side by side have their own
// bridges and apiservers, whose ClusterIPs overlap. The rules are two nat chains named with this
// process's pid (a killed run's are removed by the next one) and follow Services and
// EndpointSlices, listed every half second (a test's cluster has a few dozen of them).
import { execa } from 'execa';
import { CoreV1Api, DiscoveryV1Api, type KubeConfig, type V1EndpointSlice, type V1Service } from '@kubernetes/client-node';
import type { Logger } from '../../common/log.js';

const TRANSLATE_PREFIX = 'FLBSVC-';
const MASQUERADE_PREFIX = 'FLBSVCM-';
const POLL_MS = 500;

export interface ServiceProxyOptions {
  kubeConfig: KubeConfig;
  /** The pod network's bridge: only what arrives from it is translated. */
  bridge: string;
  log: Logger;
}

interface Backend {
  ip: string;
  port: number;
}

/** One `-A` line per rule: ClusterIP:port to its backends, the last one taking what the others left. */
export function translationRules(chain: string, services: V1Service[], slices: V1EndpointSlice[]): string[] {
  const rules: string[] = [];
  for (const service of [...services].sort((a, b) => key(a).localeCompare(key(b)))) {
    const clusterIps = (service.spec?.clusterIPs ?? [service.spec?.clusterIP]).filter((ip): ip is string => Boolean(ip) && ip !== 'None' && !ip!.includes(':'));
    if (clusterIps.length === 0) continue;
    const own = slices.filter(
      (s) =>
        s.metadata?.namespace === service.metadata?.namespace &&
        s.metadata?.labels?.['kubernetes.io/service-name'] === service.metadata?.name &&
        s.addressType === 'IPv4',
    );
    for (const port of service.spec?.ports ?? []) {
      const protocol = (port.protocol ?? 'TCP').toLowerCase();
      const backends: Backend[] = [];
      for (const slice of own) {
        const target = slice.ports?.find((p) => (p.name ?? '') === (port.name ?? '') && (p.protocol ?? 'TCP') === (port.protocol ?? 'TCP'));
        if (target?.port === undefined) continue;
        for (const endpoint of slice.endpoints ?? []) {
          if (endpoint.conditions?.ready === false) continue;
          for (const ip of endpoint.addresses) backends.push({ ip, port: target.port });
        }
      }
      backends.sort((a, b) => `${a.ip}:${a.port}`.localeCompare(`${b.ip}:${b.port}`));
      for (const clusterIp of clusterIps) {
        const match = `-A ${chain} -d ${clusterIp}/32 -p ${protocol} -m ${protocol} --dport ${port.port}`;
        // Without a ready endpoint there is nothing to translate to: the connection times out
        // (kube-proxy refuses it at once, from the filter table).
        backends.forEach((backend, index) => {
          const left = backends.length - index;
          const pick = left > 1 ? ` -m statistic --mode random --probability ${(1 / left).toFixed(5)}` : '';
          rules.push(`${match}${pick} -j DNAT --to-destination ${backend.ip}:${backend.port}`);
        });
      }
    }
  }
  return rules;
}

const key = (o: { metadata?: { namespace?: string; name?: string } }) => `${o.metadata?.namespace}/${o.metadata?.name}`;

export class ServiceProxy {
  private readonly translate = `${TRANSLATE_PREFIX}${process.pid}`;
  private readonly masquerade = `${MASQUERADE_PREFIX}${process.pid}`;
  private readonly core: CoreV1Api;
  private readonly discovery: DiscoveryV1Api;
  private timer?: NodeJS.Timeout;
  private applied = '';
  private syncing?: Promise<void>;
  private failing = false;

  constructor(private readonly options: ServiceProxyOptions) {
    this.core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.discovery = options.kubeConfig.makeApiClient(DiscoveryV1Api);
  }

  async start(): Promise<void> {
    await removeStaleChains();
    await restore([`:${this.translate} - [0:0]`, `:${this.masquerade} - [0:0]`, `-A ${this.masquerade} -m conntrack --ctstate DNAT -j MASQUERADE`]);
    await iptables(['-A', 'PREROUTING', '-i', this.options.bridge, '-j', this.translate]);
    await iptables(['-A', 'POSTROUTING', '-o', this.options.bridge, '-j', this.masquerade]);
    await this.sync();
    this.timer = setInterval(() => {
      this.syncing ??= this.sync().finally(() => (this.syncing = undefined));
    }, POLL_MS);
    this.timer.unref();
  }

  private async sync(): Promise<void> {
    try {
      const [services, slices] = await Promise.all([this.core.listServiceForAllNamespaces(), this.discovery.listEndpointSliceForAllNamespaces()]);
      const rules = translationRules(this.translate, services.items, slices.items);
      const text = rules.join('\n');
      if (text === this.applied) return;
      // Declaring the chain empties it: the whole set is replaced in one atomic restore.
      await restore([`:${this.translate} - [0:0]`, ...rules]);
      this.applied = text;
      if (this.failing) this.options.log.info('the Service rules are applied again');
      this.failing = false;
    } catch (error) {
      if (!this.failing) this.options.log.warn({ err: error }, 'could not update the Service rules; keeping the last ones and retrying');
      this.failing = true;
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.syncing;
    await removeChains(process.pid).catch((error: unknown) => this.options.log.warn({ err: error }, 'could not remove the Service rules'));
  }
}

async function iptables(args: string[]): Promise<void> {
  await execa('iptables', ['-w', '-t', 'nat', ...args]);
}

async function restore(lines: string[]): Promise<void> {
  await execa('iptables-restore', ['-w', '--noflush'], { input: `*nat\n${lines.join('\n')}\nCOMMIT\n` });
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** The jumps to a run's chains, then the chains. */
async function removeChains(pid: number): Promise<void> {
  const saved = (await execa('iptables-save', ['-t', 'nat'])).stdout.split('\n');
  const chains = [`${TRANSLATE_PREFIX}${pid}`, `${MASQUERADE_PREFIX}${pid}`];
  for (const line of saved) {
    const jump = /^-A (PREROUTING|POSTROUTING) (.*)-j (\S+)$/.exec(line);
    if (jump && chains.includes(jump[3]!)) await iptables(['-D', jump[1]!, ...jump[2]!.trim().split(/\s+/), '-j', jump[3]!]);
  }
  for (const chain of chains) {
    if (!saved.includes(`:${chain} - [0:0]`) && !saved.some((l) => l.startsWith(`:${chain} `))) continue;
    await iptables(['-F', chain]);
    await iptables(['-X', chain]);
  }
}

/** Chains of runs whose process is gone (killed before it could remove them). */
async function removeStaleChains(): Promise<void> {
  const saved = (await execa('iptables-save', ['-t', 'nat'])).stdout;
  const pids = new Set([...saved.matchAll(/^:FLBSVCM?-(\d+) /gm)].map((m) => Number(m[1])));
  for (const pid of pids) if (pid !== process.pid && !alive(pid)) await removeChains(pid);
}
