// A stand-in for kube-proxy on the pod network: a connection from a pod to a Service's ClusterIP
// and port is translated on the host (DNAT) to one of the Service's ready endpoints, picked at
// random per connection as kube-proxy's iptables mode does, and masqueraded to the gateway, so the
// reply of a pod on the same bridge comes back through the host that translated it. Without it an
// unmeshed pod (the control plane the chart installs, a sidecar's own calls to the repo) cannot
// reach a ClusterIP at all.
//
// A ClusterIP:port with no ready endpoint refuses the connection at once, as kube-proxy's filter
// rules do (a TCP reset, an ICMP port-unreachable for UDP): without that, a pod that calls a
// Service before its first endpoint is ready waits for its own timeout (the bridge's first call to
// the repo waited about 60 s) instead of retrying.
//
// Only packets that arrive from this run's bridge are translated: runs side by side have their own
// bridges and apiservers, whose ClusterIPs overlap. The rules are two nat chains and a filter chain
// named with this process's pid (a killed run's are removed by the next one) and follow Services
// and EndpointSlices, listed every half second (a test's cluster has a few dozen of them).
import { execa } from 'execa';
import { CoreV1Api, DiscoveryV1Api, type KubeConfig, type V1EndpointSlice, type V1Service } from '@kubernetes/client-node';
import type { Logger } from '../../common/log.js';

const TRANSLATE_PREFIX = 'FLBSVC-';
const MASQUERADE_PREFIX = 'FLBSVCM-';
const REJECT_PREFIX = 'FLBSVCR-';
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

export interface ServiceRules {
  /** nat: ClusterIP:port to its backends, the last one taking what the others left. */
  translate: string[];
  /** filter: ClusterIP:port with no ready backend, refused. */
  reject: string[];
}

/** One `-A` line per rule, in the chains named. */
export function serviceRules(chains: { translate: string; reject: string }, services: V1Service[], slices: V1EndpointSlice[]): ServiceRules {
  const rules: ServiceRules = { translate: [], reject: [] };
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
        const match = `-d ${clusterIp}/32 -p ${protocol} -m ${protocol} --dport ${port.port}`;
        if (backends.length === 0) {
          const answer = protocol === 'tcp' ? 'tcp-reset' : 'icmp-port-unreachable';
          rules.reject.push(`-A ${chains.reject} ${match} -j REJECT --reject-with ${answer}`);
          continue;
        }
        backends.forEach((backend, index) => {
          const left = backends.length - index;
          const pick = left > 1 ? ` -m statistic --mode random --probability ${(1 / left).toFixed(5)}` : '';
          rules.translate.push(`-A ${chains.translate} ${match}${pick} -j DNAT --to-destination ${backend.ip}:${backend.port}`);
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
  private readonly reject = `${REJECT_PREFIX}${process.pid}`;
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
    await restore([`:${this.reject} - [0:0]`], 'filter');
    // First in FORWARD, as kube-proxy's jumps are: a rule of the host's that accepts the bridge's traffic would pass it by.
    await iptables(['-I', 'FORWARD', '-i', this.options.bridge, '-j', this.reject], 'filter');
    await this.sync();
    this.timer = setInterval(() => {
      this.syncing ??= this.sync().finally(() => (this.syncing = undefined));
    }, POLL_MS);
    this.timer.unref();
  }

  private async sync(): Promise<void> {
    try {
      const [services, slices] = await Promise.all([this.core.listServiceForAllNamespaces(), this.discovery.listEndpointSliceForAllNamespaces()]);
      const rules = serviceRules({ translate: this.translate, reject: this.reject }, services.items, slices.items);
      const text = [...rules.translate, ...rules.reject].join('\n');
      if (text === this.applied) return;
      // Declaring a chain empties it: each table's set is replaced in one atomic restore, the
      // refusals after the translations (a Service that gained its first endpoint is translated
      // before it stops being refused).
      await restore([`:${this.translate} - [0:0]`, ...rules.translate]);
      await restore([`:${this.reject} - [0:0]`, ...rules.reject], 'filter');
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

async function iptables(args: string[], table: 'nat' | 'filter' = 'nat'): Promise<void> {
  await execa('iptables', ['-w', '-t', table, ...args]);
}

async function restore(lines: string[], table: 'nat' | 'filter' = 'nat'): Promise<void> {
  await execa('iptables-restore', ['-w', '--noflush'], { input: `*${table}\n${lines.join('\n')}\nCOMMIT\n` });
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** The jumps to a run's chains, then the chains, in both tables. */
async function removeChains(pid: number): Promise<void> {
  const tables = { nat: [`${TRANSLATE_PREFIX}${pid}`, `${MASQUERADE_PREFIX}${pid}`], filter: [`${REJECT_PREFIX}${pid}`] } as const;
  for (const [table, chains] of Object.entries(tables) as ['nat' | 'filter', readonly string[]][]) {
    const saved = (await execa('iptables-save', ['-t', table])).stdout.split('\n');
    for (const line of saved) {
      const jump = /^-A (PREROUTING|POSTROUTING|FORWARD) (.*)-j (\S+)$/.exec(line);
      if (jump && chains.includes(jump[3]!)) await iptables(['-D', jump[1]!, ...jump[2]!.trim().split(/\s+/), '-j', jump[3]!], table);
    }
    for (const chain of chains) {
      if (!saved.some((l) => l.startsWith(`:${chain} `))) continue;
      await iptables(['-F', chain], table);
      await iptables(['-X', chain], table);
    }
  }
}

/** Chains of runs whose process is gone (killed before it could remove them). */
async function removeStaleChains(): Promise<void> {
  const saved = (await execa('iptables-save', ['-t', 'nat'])).stdout + (await execa('iptables-save', ['-t', 'filter'])).stdout;
  const pids = new Set([...saved.matchAll(/^:FLBSVC[MR]?-(\d+) /gm)].map((m) => Number(m[1])));
  for (const pid of pids) if (pid !== process.pid && !alive(pid)) await removeChains(pid);
}
