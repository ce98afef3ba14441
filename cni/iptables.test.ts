import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { chmodSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InterceptionSchema } from '../common/contract/index.js';
import { applyRules, cleanRules, hasGlobalIpv6, verifyRules } from './iptables.js';
import { applyDocument, buildRules, printDocument } from './rules.js';

/**
 * What `flb iptables apply` runs to decide and write, against stand-in iptables tools on PATH
 * that log each run: the init container of every injected pod runs it on the pod's start path,
 * where each tool run costs Node 15-30 ms of CPU.
 */
let dir: string;
let savedPath: string | undefined;

const settings = (ipv6: 'enabled' | 'disabled') => InterceptionSchema.parse({ version: 1, mode: 'iptables', ipv6 });
const SOME_FILTER_RULES = ['*filter', ':INPUT ACCEPT [0:0]', '-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT', '-A INPUT -p icmp -j ACCEPT', 'COMMIT'];
const EMPTY_NAT = ['*nat', ':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]', 'COMMIT'];
/** The nat table with the mesh's rules in place, as iptables-save prints it. */
const natWithRules = () => {
  const plan = printDocument(buildRules(settings('disabled'), 4)).split('\n');
  const declared = plan.filter((l) => l.startsWith(':'));
  const rest = plan.filter((l) => l.startsWith('-A'));
  return ['*nat', ':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]', ...declared, ...rest, 'COMMIT'];
};

/** A stand-in tool: logs its name and arguments (a restore, its input too), prints `output`; no output given: fails. */
function tool(name: string, output: string[] | undefined) {
  const input = name.endsWith('-restore') ? `/bin/cat >> "${dir}/input"\n` : '';
  const body = output === undefined ? 'exit 1' : `/bin/cat <<'EOF'\n${output.join('\n')}\nEOF`;
  writeFileSync(join(dir, name), `#!/bin/sh\necho "${name} $*" >> "${dir}/runs"\n${input}${body}\n`);
  chmodSync(join(dir, name), 0o755);
}
/** `iptables` as a symlink to a program of this name, answering -V as `version` says. */
function systemIptables(program: string, version = 'iptables v1.8.9 (nf_tables)') {
  tool(program, [version]);
  symlinkSync(join(dir, program), join(dir, 'iptables'));
}
/** The tools that ran, in order, the saves of the two backends (run at once) sorted. */
const runs = () => {
  const lines = readFileSync(join(dir, 'runs'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.trimEnd());
  const saves = lines.filter((l) => /^iptables-(legacy|nft)-save$/.test(l)).sort();
  return [...saves, ...lines.filter((l) => !saves.includes(l))];
};
const restored = () => readFileSync(join(dir, 'input'), 'utf8');

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'flb-iptables-test-'));
  writeFileSync(join(dir, 'runs'), '');
  writeFileSync(join(dir, 'input'), '');
  savedPath = process.env.PATH;
  // The stand-ins only: the host's own iptables (in /usr/sbin) are not found.
  process.env.PATH = `${dir}:/usr/bin:/bin`;
  for (const backend of ['legacy', 'nft']) for (const family of ['', '6']) tool(`ip${family}tables-${backend}-restore`, []);
});
afterEach(() => {
  process.env.PATH = savedPath;
  rmSync(dir, { recursive: true, force: true });
});

describe('flb iptables apply in a fresh pod namespace (no rule in either backend)', () => {
  it.each([
    ['xtables-nft-multi', 'nft'],
    ['xtables-legacy-multi', 'legacy'],
    ['iptables-nft', 'nft'],
    ['iptables-legacy', 'legacy'],
  ] as const)('takes the backend `iptables` is (%s: %s) from its name, and writes from the save detection read', async (program, backend) => {
    tool('iptables-legacy-save', []);
    tool('iptables-nft-save', []);
    systemIptables(program, 'iptables v1.8.9 (this answer is not asked for)');
    expect(await applyRules(settings('disabled'))).toEqual({ backend, families: [4], unchanged: [] });
    expect(runs()).toEqual(['iptables-legacy-save', 'iptables-nft-save', `iptables-${backend}-restore --noflush`]);
    expect(restored()).toBe(applyDocument(buildRules(settings('disabled'), 4), { chains: [], rules: [], jumps: [] }));
  });

  it('asks `iptables -V` when its name does not say (a wrapper script)', async () => {
    tool('iptables-legacy-save', []);
    tool('iptables-nft-save', []);
    systemIptables('iptables-wrapper', 'iptables v1.8.9 (legacy)');
    expect((await applyRules(settings('disabled'))).backend).toBe('legacy');
    expect(runs()).toEqual(['iptables-legacy-save', 'iptables-nft-save', 'iptables-wrapper -V', 'iptables-legacy-restore --noflush']);
  });

  it('takes the only backend that runs when `iptables` cannot be asked', async () => {
    tool('iptables-legacy-save', undefined);
    tool('iptables-nft-save', []);
    expect((await applyRules(settings('disabled'))).backend).toBe('nft');
  });

  it('says what to install when neither backend runs', async () => {
    await expect(applyRules(settings('disabled'))).rejects.toThrow('neither iptables-legacy nor iptables-nft can be run');
  });

  it('reads the IPv6 nat table while IPv4 is written, then writes IPv6', async () => {
    tool('iptables-legacy-save', []);
    tool('iptables-nft-save', []);
    tool('ip6tables-nft-save', EMPTY_NAT);
    systemIptables('xtables-nft-multi');
    expect(await applyRules(settings('enabled'))).toEqual({ backend: 'nft', families: [4, 6], unchanged: [] });
    expect(runs().slice(2).sort()).toEqual(['ip6tables-nft-restore --noflush', 'ip6tables-nft-save -t nat', 'iptables-nft-restore --noflush']);
    expect(runs().at(-1)).toBe('ip6tables-nft-restore --noflush');
  });
});

describe('flb iptables apply where the rules are', () => {
  it('takes the backend holding more rules and, the rules in its save already, writes nothing (a restarted init container)', async () => {
    tool('iptables-legacy-save', [...SOME_FILTER_RULES, ...EMPTY_NAT]);
    tool('iptables-nft-save', [...SOME_FILTER_RULES, ...natWithRules()]);
    systemIptables('xtables-legacy-multi');
    expect(await applyRules(settings('disabled'))).toEqual({ backend: 'nft', families: [4], unchanged: [4] });
    expect(runs()).toEqual(['iptables-legacy-save', 'iptables-nft-save']);
    expect(await verifyRules(settings('disabled'))).toEqual({ backend: 'nft', problems: [] });
  });

  it('clean reads IPv4 from the same save and removes every chain of ours', async () => {
    tool('iptables-legacy-save', []);
    tool('iptables-nft-save', natWithRules());
    tool('ip6tables-nft-save', EMPTY_NAT);
    systemIptables('xtables-nft-multi');
    expect(await cleanRules()).toEqual({ backend: 'nft', cleaned: [4] });
    expect(runs()).toEqual(['iptables-legacy-save', 'iptables-nft-save', 'iptables-nft-restore --noflush', 'ip6tables-nft-save -t nat']);
    expect(restored()).toContain('-X FLB_OUTPUT');
  });

  it('with --backend, reads only that backend, its nat table', async () => {
    tool('iptables-legacy-save', EMPTY_NAT);
    expect(await applyRules(settings('disabled'), { backend: 'legacy' })).toEqual({ backend: 'legacy', families: [4], unchanged: [] });
    expect(runs()).toEqual(['iptables-legacy-save -t nat', 'iptables-legacy-restore --noflush']);
  });
});

describe('IPv6 in the pod namespace, from /proc/net/if_inet6', () => {
  const LOOPBACK = '00000000000000000000000000000001 01 80 10 80       lo';
  const LINK_LOCAL = 'fe8000000000000000fc00fffe000001 04 40 20 80     eth0';
  it('is there with a global or unique-local address, as `ip -6 addr show scope global` lists them', () => {
    expect(hasGlobalIpv6([LOOPBACK, 'fd000000000000000000000000000002 04 40 00 82     eth0', LINK_LOCAL, ''].join('\n'))).toBe(true);
    expect(hasGlobalIpv6([LOOPBACK, '20010db8000000000000000000000001 02 40 00 80     eth0', ''].join('\n'))).toBe(true);
  });
  it('is not with loopback and link-local addresses only, or none (no IPv6 in the kernel)', () => {
    expect(hasGlobalIpv6([LOOPBACK, LINK_LOCAL, ''].join('\n'))).toBe(false);
    expect(hasGlobalIpv6('')).toBe(false);
  });
});
