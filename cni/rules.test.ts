import { describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InterceptionSchema, type InterceptionInput } from '../common/contract/index.js';
import { applyDocument, buildRules, cleanDocument, parseSave, printDocument, verifyAgainst } from './rules.js';

/** Golden rule documents for a table of settings; UPDATE_GOLDEN=1 regenerates, stale goldens fail. */
const dir = fileURLToPath(new URL('./testdata/rules/', import.meta.url));
const update = process.env.UPDATE_GOLDEN === '1';
const cases: Record<string, Partial<InterceptionInput>> = {
  defaults: {},
  'no-dns-capture': { captureDns: false },
  exclusions: {
    excludeOutboundPorts: [5432, 6379],
    excludeInboundPorts: [9100],
    excludeOutboundIpRanges: ['169.254.169.254/32', '10.1.2.3/16', 'fd00::/8'],
    excludeInterfaces: ['eth1'],
  },
  inclusions: { includeInboundPorts: [8080, 8443], includeOutboundIpRanges: ['10.96.0.0/12', '240.240.0.0/16'] },
  // Inbound only: the eBPF programs take outbound and DNS.
  'ebpf-inbound-only': { mode: 'ebpf', excludeInboundPorts: [9100], excludeOutboundPorts: [5432], bgpVips: ['10.0.0.100/32'] },
  'vm-with-gid': { proxyUid: 995, proxyGid: 995, outboundPort: 16001, inboundPort: 16003, dnsPort: 16053, sidecarPorts: [16000, 16001, 16003, 16053] },
};
const settings = (input: Partial<InterceptionInput>) => InterceptionSchema.parse({ version: 1, mode: 'iptables', ...input });

describe('rule documents', () => {
  it('has no stale goldens', () => {
    const stale = readdirSync(dir).filter((f) => !Object.keys(cases).some((c) => f.startsWith(`${c}.v`)));
    if (update) for (const f of stale) unlinkSync(join(dir, f));
    else expect(stale).toEqual([]);
  });

  describe.each(Object.entries(cases))('%s', (name, input) => {
    it.each([4, 6] as const)('matches its IPv%s golden (UPDATE_GOLDEN=1 regenerates)', (family) => {
      const doc = printDocument(buildRules(settings(input), family));
      const file = join(dir, `${name}.v${family}.golden`);
      if (update) writeFileSync(file, doc);
      expect(existsSync(file)).toBe(true);
      expect(doc).toBe(readFileSync(file, 'utf8'));
    });
  });

  it('puts each address family only in its own document', () => {
    const plan6 = buildRules(settings(cases.exclusions!), 6);
    expect(plan6.rules.filter((r) => / -d \S+ -j RETURN$/.test(r))).toEqual(['-A FLB_OUTPUT -d ::1/128 -j RETURN', '-A FLB_OUTPUT -d fd00::/8 -j RETURN']);
    expect(plan6.rules.join('\n')).not.toContain('169.254');
    expect(buildRules(settings(cases.exclusions!), 4).rules.join('\n')).toContain('-A FLB_OUTPUT -d 10.1.0.0/16 -j RETURN');
  });

  it('with inclusions for one family only, captures nothing of the other', () => {
    const plan6 = buildRules(settings(cases.inclusions!), 6);
    expect(plan6.rules.filter((r) => r.includes(`-j FLB_OUT_REDIRECT`))).toEqual([]);
  });
});

describe('applying over what is live', () => {
  const plan = buildRules(settings({}), 4);
  const saved = (doc: string) => doc.replace(/^:(FLB_\S+) - \[0:0\]$/gm, ':$1 - [0:0]');

  it('writes the jumps only when they are missing, so a second apply adds none', () => {
    const first = applyDocument(plan, parseSave(''));
    expect(first.match(/^-A (PREROUTING|OUTPUT) /gm)).toHaveLength(3);
    const live = parseSave(saved(first));
    expect(verifyAgainst(plan, live)).toEqual([]);
    expect(applyDocument(plan, live).match(/^-A (PREROUTING|OUTPUT) /gm)).toBeNull();
  });

  it('removes jumps and chains that the new settings no longer have', () => {
    const live = parseSave(printDocument(plan));
    const withoutDns = buildRules(settings({ captureDns: false }), 4);
    const doc = applyDocument(withoutDns, live);
    expect(doc).toContain('-D OUTPUT -p udp -m udp --dport 53 -j FLB_DNS');
    expect(doc).toContain('-X FLB_DNS');
  });

  it('cleans every chain and jump of ours, and nothing when there is nothing', () => {
    const doc = cleanDocument(parseSave(`*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n${printDocument(plan).split('\n').slice(1).join('\n')}`))!;
    expect(doc).toContain('-D PREROUTING -p tcp -j FLB_INBOUND');
    expect(doc).toContain('-X FLB_OUTPUT');
    expect(doc).not.toContain('KUBE');
    expect(cleanDocument(parseSave('*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n'))).toBeUndefined();
  });

  it('removes extra copies of a jump, keeping one', () => {
    const live = parseSave(printDocument(plan).replace('COMMIT', '-A OUTPUT -p tcp -j FLB_OUTPUT\n-A OUTPUT -p tcp -j FLB_OUTPUT\nCOMMIT'));
    const doc = applyDocument(plan, live);
    expect(doc.match(/^-D OUTPUT -p tcp -j FLB_OUTPUT$/gm)).toHaveLength(2);
    expect(doc).not.toMatch(/^-A OUTPUT -p tcp -j FLB_OUTPUT$/m);
  });

  it('reports duplicated jumps and foreign rules in our chains', () => {
    const live = parseSave(`${printDocument(plan).replace('COMMIT', '-A OUTPUT -p tcp -j FLB_OUTPUT\n-A FLB_OUTPUT -j ACCEPT\nCOMMIT')}`);
    expect(verifyAgainst(plan, live)).toEqual(['jump appears 2 times: -A OUTPUT -p tcp -j FLB_OUTPUT', 'unexpected rule: -A FLB_OUTPUT -j ACCEPT']);
  });
});

describe('flb iptables', () => {
  const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));
  const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    spawnSync(process.execPath, [flb, 'iptables', ...args], { encoding: 'utf8', env: { ...process.env, FLB_LOG_LEVEL: 'silent', ...env } });

  it('prints the documents for both families without touching anything', () => {
    const r = run(['print']);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(
      `# IPv4: iptables-restore --noflush\n${readFileSync(join(dir, 'defaults.v4.golden'), 'utf8')}# IPv6: ip6tables-restore --noflush\n${readFileSync(join(dir, 'defaults.v6.golden'), 'utf8')}`,
    );
  });

  it('takes its settings from FLB_INTERCEPTION, as the init container does', () => {
    const r = run(['print', '--ipv6', 'disabled'], { FLB_INTERCEPTION: JSON.stringify({ version: 1, mode: 'iptables', excludeOutboundPorts: [5432] }) });
    expect(r.stdout).toContain('-A FLB_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN');
    expect(r.stdout).not.toContain('IPv6');
  });

  it('refuses invalid settings naming the field, and touches nothing', () => {
    const r = run(['apply', '--settings', '{"version":1,"mode":"iptables","excludeOutboundPorts":[70000]}']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('invalid --settings: excludeOutboundPorts[0]: must be a port number, 1-65535');
    const notJson = run(['apply'], { FLB_INTERCEPTION: '{oops' });
    expect(notJson.status).toBe(1);
    expect(notJson.stderr).toMatch(/^flb: FLB_INTERCEPTION is not JSON: /);
  });

  it('says what to install on a host without iptables', () => {
    const r = run(['apply', '--ipv6', 'disabled'], { PATH: '/nonexistent' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('flb: neither iptables-legacy nor iptables-nft can be run\nhint: install iptables (apt-get install iptables)');
  });
});
