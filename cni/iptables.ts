import { constants } from 'node:fs';
import { access, readFile, realpath } from 'node:fs/promises';
import { basename, join } from 'node:path';
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
  return (await detectWithSave(options)).backend;
}

/**
 * The backend, and the IPv4 save (every table) detection read from it: its nat table is the live
 * state, so the caller need not run iptables-save again (each run costs this process 15-30 ms of
 * CPU on every injected pod's start path). No save when the caller chose the backend.
 */
async function backendWithIpv4Save(options: IptablesOptions): Promise<{ backend: Backend; ipv4Save?: string }> {
  return options.backend ? { backend: options.backend } : detectWithSave(options);
}

async function detectWithSave(options: IptablesOptions): Promise<{ backend: Backend; ipv4Save?: string }> {
  const save = (backend: Backend) => run(`iptables-${backend}-save`, [], options).catch(() => undefined);
  const [legacySave, nftSave] = await Promise.all([save('legacy'), save('nft')]);
  const count = (text: string | undefined) => (text === undefined ? -1 : text.split('\n').filter((l) => l.startsWith('-A ')).length);
  const [legacy, nft] = [count(legacySave), count(nftSave)];
  if (legacy < 0 && nft < 0) throw new ActionableError('neither iptables-legacy nor iptables-nft can be run', 'install iptables (apt-get install iptables)');
  const backend = legacy !== nft ? (legacy > nft ? 'legacy' : 'nft') : await systemIptables(nft >= 0 ? 'nft' : 'legacy', options);
  const ipv4Save = backend === 'legacy' ? legacySave : nftSave;
  return { backend, ...(ipv4Save !== undefined ? { ipv4Save } : {}) };
}

/**
 * What `iptables` is here, for a tie (a fresh pod namespace holds no rule in either backend):
 * the name of the program it resolves to (xtables-nft-multi, iptables-legacy...) when that says,
 * without running anything; else `iptables -V`, whose version line ends "(legacy)" or
 * "(nf_tables)" (a wrapper script, an old iptables).
 */
async function systemIptables(fallback: Backend, options: IptablesOptions): Promise<Backend> {
  const program = await resolvedProgram('iptables');
  const name = program ? basename(program) : '';
  if (/^(xtables|iptables)-legacy(-multi)?$/.test(name)) return 'legacy';
  if (/^(xtables|iptables)-nft(-multi)?$/.test(name)) return 'nft';
  try {
    return (await run('iptables', ['-V'], options)).includes('legacy') ? 'legacy' : 'nft';
  } catch {
    return fallback;
  }
}

/** The file a command name runs, symlinks followed, as the PATH lookup of a spawn finds it. */
async function resolvedProgram(command: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (!dir) continue;
    try {
      const file = join(dir, command);
      await access(file, constants.X_OK);
      return await realpath(file);
    } catch {
      // Not in this directory.
    }
  }
  return undefined;
}

/**
 * Whether /proc/net/if_inet6 lists an address of global scope (unique-local ones included), as
 * `ip -6 addr show scope global` would: a line per address, its fourth field the scope, 00 global.
 */
export function hasGlobalIpv6(ifInet6: string): boolean {
  return ifInet6.split('\n').some((line) => line.trim().split(/\s+/)[3] === '00');
}

/**
 * IPv6 rules are needed when the namespace has a global or unique-local IPv6 address. In our own
 * namespace (the init container) /proc says so without running `ip`; no file there: no IPv6 in
 * the kernel.
 */
export async function hasIpv6(options: IptablesOptions = {}): Promise<boolean> {
  if (!options.netns) return hasGlobalIpv6(await readFile('/proc/self/net/if_inet6', 'utf8').catch(() => ''));
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

/**
 * The live nat state of each family, every read started at once (each family's rules are
 * written one after the other, and reading the next needs nothing from writing the previous);
 * IPv4's from detection's save when there is one. Reads nobody awaits (a family before failed)
 * do not reject unhandled.
 */
function liveStates(backend: Backend, families: readonly Family[], ipv4Save: string | undefined, options: IptablesOptions): Map<Family, Promise<LiveState>> {
  const states = new Map<Family, Promise<LiveState>>();
  for (const family of families) {
    const state = family === 4 && ipv4Save !== undefined ? Promise.resolve(parseSave(ipv4Save)) : readLive(backend, family, options);
    state.catch(() => {});
    states.set(family, state);
  }
  return states;
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
  const [{ backend, ipv4Save }, families] = await Promise.all([backendWithIpv4Save(options), familiesFor(settings, options)]);
  const states = liveStates(backend, families, ipv4Save, options);
  const done: Family[] = [];
  const unchanged: Family[] = [];
  try {
    for (const family of families) {
      const plan = buildRules(settings, family);
      const live = await states.get(family)!;
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

async function cleanRulesFor(backend: Backend, family: Family, options: IptablesOptions, live?: LiveState): Promise<boolean> {
  const doc = cleanDocument(live ?? (await readLive(backend, family, options)));
  if (!doc) return false;
  await run(tool(backend, family, 'restore'), ['--noflush'], options, doc);
  return true;
}

/** Removes every chain and jump of ours, in both families where ip6tables exists. */
export async function cleanRules(options: IptablesOptions = {}): Promise<{ backend: Backend; cleaned: Family[] }> {
  const { backend, ipv4Save } = await backendWithIpv4Save(options);
  const cleaned: Family[] = [];
  for (const family of [4, 6] as const) {
    try {
      if (await cleanRulesFor(backend, family, options, family === 4 && ipv4Save !== undefined ? parseSave(ipv4Save) : undefined)) cleaned.push(family);
    } catch (error) {
      if (family === 4) throw error;
      // No ip6tables (or no IPv6 in the kernel): nothing of ours can be there.
    }
  }
  return { backend, cleaned };
}

export async function verifyRules(settings: Interception, options: IptablesOptions = {}): Promise<{ backend: Backend; problems: string[] }> {
  const [{ backend, ipv4Save }, families] = await Promise.all([backendWithIpv4Save(options), familiesFor(settings, options)]);
  const states = liveStates(backend, families, ipv4Save, options);
  const problems: string[] = [];
  for (const family of families) {
    for (const p of verifyAgainst(buildRules(settings, family), await states.get(family)!)) problems.push(`IPv${family}: ${p}`);
  }
  if (settings.bgpVips?.length) problems.push(...loopbackProblems(settings.bgpVips, await readLoopback(options)));
  return { backend, problems };
}
