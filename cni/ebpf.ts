/*
 * eBPF mode on the node agent's side: the programs loaded once for the node (at the first eBPF
 * pod), each eBPF pod registered in-process through bpf/'s addon (map writes, no process per
 * pod), and, on a node where eBPF cannot run, a mark in the pod's namespace that its in-pod
 * validation reads, so the pod fails saying why instead of running unmeshed.
 */
import { hostname } from 'node:os';
import { checkFeatures, collectGarbage, isLoaded, isRegistered, load, register, unregister } from '../bpf/loader.js';
import type { Interception } from '../common/contract/index.js';
import type { Logger } from '../common/log.js';
import { cleanRules, detectBackend, familiesFor, type ApplyResult, type Backend } from './iptables.js';
import { addLoopbackVips, removeLoopbackVips } from './loopback.js';
import { run } from './netns-run.js';
import { buildRules, printDocument } from './rules.js';
import { EBPF_UNAVAILABLE_MARK } from './validate.js';

export interface EbpfNodeOptions {
  /** The mesh whose programs these are: pins under <bpffs>/flb-mesh/<mesh>. */
  mesh: string;
  /**
   * Where the programs attach: a cgroup v2 folder, or 'auto' for the root of the host's hierarchy
   * (every pod of the node) found from the host's mount table under hostRoot; default the first
   * cgroup2 mount this process sees.
   */
  cgroup?: string;
  /** Where this process sees the host's paths, for 'auto' (the chart: /host). Default /. */
  hostRoot?: string;
  bpffs?: string;
  /** The Kubernetes node's name, which the pod's validation message names; default this host's name. */
  nodeName?: string;
  log: Logger;
}

/** The kernel keeps at most 255 bytes of an interface alias (IFALIASZ - 1). */
const ALIAS_BYTES = 255;

export type EbpfVerdict = { ok: true } | { ok: false; reason: string };

export class EbpfNode {
  private verdict?: Promise<EbpfVerdict>;

  constructor(private readonly options: EbpfNodeOptions) {}

  private get where() {
    return { mesh: this.options.mesh, ...(this.options.bpffs ? { bpffs: this.options.bpffs } : {}) };
  }

  /**
   * Whether eBPF interception runs on this node: the feature check, then the programs loaded and
   * attached (idempotent: a restarted agent finds them loaded). Decided at the first eBPF pod, so a
   * node with none never attaches anything, and kept until the agent restarts: fixing the node
   * (a kernel, bpftool, a cgroup v2 mount) means restarting its agent anyway.
   */
  available(): Promise<EbpfVerdict> {
    this.verdict ??= this.decide();
    return this.verdict;
  }

  /** Why eBPF cannot run here, once an eBPF pod made the agent find out; undefined otherwise. */
  knownUnavailable(): string | undefined {
    return this.settled && !this.settled.ok ? this.settled.reason : undefined;
  }

  private settled?: EbpfVerdict;

  private async decide(): Promise<EbpfVerdict> {
    this.settled = await this.check();
    return this.settled;
  }

  private async check(): Promise<EbpfVerdict> {
    const { log } = this.options;
    const { cgroup, hostRoot, bpffs } = this.options;
    const report = await checkFeatures({ ...(cgroup ? { cgroup } : {}), ...(hostRoot ? { hostRoot } : {}), ...(bpffs ? { bpffs } : {}) });
    if (!report.ok) {
      const reason = `missing ${report.missing.join('; ')}`;
      log.error(
        { missing: report.missing },
        'eBPF interception cannot run on this node: eBPF pods here fail their validation; iptables or cni mode is the fallback',
      );
      return { ok: false, reason };
    }
    try {
      const loaded = await load({ ...this.where, ...(report.cgroup ? { cgroup: report.cgroup } : {}) });
      log.info(loaded, loaded.alreadyLoaded ? 'eBPF programs already loaded' : 'eBPF programs loaded and attached');
      return { ok: true };
    } catch (error) {
      log.error({ err: error }, 'loading the eBPF programs failed: eBPF pods here fail their validation; iptables or cni mode is the fallback');
      return { ok: false, reason: (error as Error).message };
    }
  }

  /** At agent start: the registrations of pods deleted while no agent ran (their DEL never came). */
  collectGarbage(): void {
    if (!isLoaded(this.where)) return;
    const { removed, kept } = collectGarbage(this.where);
    if (removed.length) this.options.log.info({ removed, kept }, 'removed the eBPF settings of network namespaces that are gone');
  }

  /** The namespace's cookie, for unregistering once the namespace is gone. */
  async register(netns: string, settings: Interception): Promise<string> {
    return (await register({ ...this.where, netns, settings })).cookie;
  }

  unregister(cookie: string): boolean {
    if (!isLoaded(this.where)) return false;
    return unregister({ ...this.where, cookie }).wasRegistered;
  }

  isRegistered(netns: string): boolean {
    return isLoaded(this.where) && isRegistered({ ...this.where, netns });
  }

  private freshBackend?: Promise<Backend>;

  /**
   * The inbound rule (and BGP VIPs) of an eBPF pod, as applyInterception writes them, into a
   * namespace this agent has never programmed: an eBPF pod has no init container, so nothing else
   * writes our chains there, and there is nothing to read back and reconcile. The live read
   * (iptables-save in both backends, every ADD) cost more than the restore itself. The backend is
   * what a namespace with no rules resolves to, the same for every pod of the node: detected at the
   * first such pod and kept. Anything else goes through applyInterception.
   */
  async applyInboundToFresh(settings: Interception, netns: string): Promise<ApplyResult & { vipsAdded: string[] }> {
    const freshBackend = (this.freshBackend ??= detectBackend({ netns }));
    freshBackend.catch(() => (this.freshBackend = undefined));
    const [backend, families] = await Promise.all([freshBackend, familiesFor(settings, { netns })]);
    const { added } = await addLoopbackVips(settings.bgpVips ?? [], { netns });
    try {
      for (const family of families)
        await run(`${family === 6 ? 'ip6tables' : 'iptables'}-${backend}-restore`, ['--noflush'], { netns }, printDocument(buildRules(settings, family)));
    } catch (error) {
      // Nothing half-applied is left, as applyInterception promises.
      await cleanRules({ netns, backend }).catch(() => {});
      await removeLoopbackVips(added, { netns }).catch(() => {});
      throw error;
    }
    return { backend, families, unchanged: [], vipsAdded: added };
  }

  /** Leaves the reason on the pod's lo for `flb cni validate` (see EBPF_UNAVAILABLE_MARK). */
  async markUnavailable(netns: string, reason: string): Promise<void> {
    await run('ip', ['link', 'set', 'dev', 'lo', 'alias', unavailableAlias(this.options.nodeName ?? hostname(), reason)], { netns });
  }
}

/** The alias that marks a pod on a node that cannot run eBPF: the mark, the node and why, cut to what the kernel keeps. */
export function unavailableAlias(node: string, reason: string): string {
  const text = `${EBPF_UNAVAILABLE_MARK}${node}: ${reason}`;
  const buffer = Buffer.from(text);
  if (buffer.length <= ALIAS_BYTES) return text;
  // Cut at a character boundary: drop continuation bytes (10xxxxxx) at the cut.
  let end = ALIAS_BYTES - 3;
  while (end > 0 && (buffer[end]! & 0xc0) === 0x80) end--;
  return `${buffer.subarray(0, end).toString()}...`;
}
