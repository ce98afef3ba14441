import type { Interception } from '../common/contract/index.js';
import { ActionableError } from '../common/errors.js';
import { run } from './netns-run.js';
import { addLoopbackVips, loopbackProblems, readLoopback, removeLoopbackVips } from './loopback.js';
import { applyDocument, buildRules, cleanDocument, parseSave, verifyAgainst, type Family, type LiveState } from './rules.js';

export type Backend = 'legacy' | 'nft';

export interface IptablesOptions {
  /** Which iptables the host uses; detected when omitted. */
  backend?: Backend;
  /** Run inside this network namespace (a path such as /var/run/netns/x or /proc/PID/ns/net). */
  netns?: string;
}

const tool = (backend: Backend, family: Family, what: 'save' | 'restore') => `${family === 6 ? 'ip6tables' : 'iptables'}-${backend}-${what}`;

/**
 * Which iptables the host (or the pod's namespace) uses, as the best meshes decide it: the
 * backend that already holds more rules wins (kube-proxy and the CNI wrote them), otherwise what
 * `iptables` itself is on this system.
 */
export async function detectBackend(options: IptablesOptions = {}): Promise<Backend> {
  const count = async (backend: Backend) => {
    try {
      return (await run(`iptables-${backend}-save`, [], options)).split('\n').filter((l) => l.startsWith('-A ')).length;
    } catch {
      return -1;
    }
  };
  const [legacy, nft] = await Promise.all([count('legacy'), count('nft')]);
  if (legacy < 0 && nft < 0) throw new ActionableError('neither iptables-legacy nor iptables-nft can be run', 'install iptables (apt-get install iptables)');
  if (legacy !== nft) return legacy > nft ? 'legacy' : 'nft';
  try {
    return (await run('iptables', ['-V'], options)).includes('legacy') ? 'legacy' : 'nft';
  } catch {
    return nft >= 0 ? 'nft' : 'legacy';
  }
}

/** IPv6 rules are needed when the namespace has a global or unique-local IPv6 address. */
export async function hasIpv6(options: IptablesOptions = {}): Promise<boolean> {
  try {
    return (await run('ip', ['-6', '-o', 'addr', 'show', 'scope', 'global'], options)).trim().length > 0;
  } catch {
    return false;
  }
}

export async function familiesFor(settings: Interception, options: IptablesOptions = {}): Promise<Family[]> {
  if (settings.ipv6 === 'enabled') return [4, 6];
  if (settings.ipv6 === 'disabled') return [4];
  return (await hasIpv6(options)) ? [4, 6] : [4];
}

export async function readLive(backend: Backend, family: Family, options: IptablesOptions): Promise<LiveState> {
  return parseSave(await run(tool(backend, family, 'save'), ['-t', 'nat'], options));
}

export interface ApplyResult {
  backend: Backend;
  families: Family[];
  /** Families whose rules were already in place (nothing written). */
  unchanged: Family[];
}

/**
 * Applies the rules, atomically per family (one iptables-restore each). A second apply with the
 * same settings writes nothing. If IPv6 fails after IPv4 was written, IPv4 is cleaned again, so
 * no half-applied state is left.
 */
export async function applyRules(settings: Interception, options: IptablesOptions = {}): Promise<ApplyResult> {
  const backend = options.backend ?? (await detectBackend(options));
  const families = await familiesFor(settings, options);
  const done: Family[] = [];
  const unchanged: Family[] = [];
  try {
    for (const family of families) {
      const plan = buildRules(settings, family);
      const live = await readLive(backend, family, options);
      if (verifyAgainst(plan, live).length === 0) {
        unchanged.push(family);
        continue;
      }
      await run(tool(backend, family, 'restore'), ['--noflush'], options, applyDocument(plan, live));
      done.push(family);
    }
  } catch (error) {
    for (const family of done) await cleanRulesFor(backend, family, options).catch(() => {});
    throw error;
  }
  return { backend, families, unchanged };
}

/**
 * Everything the settings ask of the pod's namespace: its BGP VIPs on lo, then the rules. If the
 * rules fail, the VIPs this call added are taken off again (applyRules cleans its own half).
 */
export async function applyInterception(settings: Interception, options: IptablesOptions = {}): Promise<ApplyResult & { vipsAdded: string[] }> {
  const { added } = await addLoopbackVips(settings.bgpVips ?? [], options);
  try {
    return { ...(await applyRules(settings, options)), vipsAdded: added };
  } catch (error) {
    await removeLoopbackVips(added, options).catch(() => {});
    throw error;
  }
}

/** What applyInterception made: the rules, and the settings' VIPs on lo. */
export async function cleanInterception(
  vips: readonly string[],
  options: IptablesOptions = {},
): Promise<{ backend: Backend; cleaned: Family[]; vipsRemoved: string[] }> {
  // The rules go even when the VIPs cannot, and the other way round.
  const [vipsResult, rulesResult] = await Promise.allSettled([removeLoopbackVips(vips, options), cleanRules(options)]);
  if (vipsResult.status === 'rejected') throw vipsResult.reason;
  if (rulesResult.status === 'rejected') throw rulesResult.reason;
  return { ...rulesResult.value, vipsRemoved: vipsResult.value.removed };
}

async function cleanRulesFor(backend: Backend, family: Family, options: IptablesOptions): Promise<boolean> {
  const doc = cleanDocument(await readLive(backend, family, options));
  if (!doc) return false;
  await run(tool(backend, family, 'restore'), ['--noflush'], options, doc);
  return true;
}

/** Removes every chain and jump of ours, in both families where ip6tables exists. */
export async function cleanRules(options: IptablesOptions = {}): Promise<{ backend: Backend; cleaned: Family[] }> {
  const backend = options.backend ?? (await detectBackend(options));
  const cleaned: Family[] = [];
  for (const family of [4, 6] as const) {
    try {
      if (await cleanRulesFor(backend, family, options)) cleaned.push(family);
    } catch (error) {
      if (family === 4) throw error;
      // No ip6tables (or no IPv6 in the kernel): nothing of ours can be there.
    }
  }
  return { backend, cleaned };
}

export async function verifyRules(settings: Interception, options: IptablesOptions = {}): Promise<{ backend: Backend; problems: string[] }> {
  const backend = options.backend ?? (await detectBackend(options));
  const problems: string[] = [];
  for (const family of await familiesFor(settings, options)) {
    for (const p of verifyAgainst(buildRules(settings, family), await readLive(backend, family, options))) problems.push(`IPv${family}: ${p}`);
  }
  if (settings.bgpVips?.length) problems.push(...loopbackProblems(settings.bgpVips, await readLoopback(options)));
  return { backend, problems };
}
