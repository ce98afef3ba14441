/*
 * The one rule builder for the init container, the CNI node agent and the VM installer: from the
 * interception settings to the nat-table rules, in the exact form `iptables-save` prints them,
 * so that `verify` is a textual comparison and goldens read like what users see.
 */
import ipaddr from 'ipaddr.js';
import { INBOUND_FORWARD_SOURCE, type Interception } from '../common/contract/interception.js';

export type Family = 4 | 6;

export /** `-p tcp --syn` as iptables-save prints it (the live rules are compared with these texts). */
const SYN_ONLY = '-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN';

const CHAIN = {
  inbound: 'FLB_INBOUND',
  inboundRedirect: 'FLB_IN_REDIRECT',
  output: 'FLB_OUTPUT',
  outboundRedirect: 'FLB_OUT_REDIRECT',
  dns: 'FLB_DNS',
} as const;
export const CHAIN_PREFIX = 'FLB_';

const LOOPBACK: Record<Family, string> = { 4: '127.0.0.0/8', 6: '::1/128' };

export interface Jump {
  /** A built-in chain of the nat table. */
  from: 'PREROUTING' | 'OUTPUT';
  /** The rule, without `-A CHAIN`, as iptables-save prints it. */
  rule: string;
}

export interface RulePlan {
  family: Family;
  chains: string[];
  /** `-A CHAIN ...` lines for our own chains, in order. */
  rules: string[];
  jumps: Jump[];
}

/** CIDRs of one family, normalised to the network address as iptables-save prints them. */
export function cidrsOf(family: Family, cidrs: readonly string[]): string[] {
  const out: string[] = [];
  for (const cidr of cidrs) {
    const [address, bits] = ipaddr.parseCIDR(cidr);
    if ((address.kind() === 'ipv4') !== (family === 4)) continue;
    const network = address.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(cidr) : ipaddr.IPv6.networkAddressFromCIDR(cidr);
    out.push(`${network.toString()}/${bits}`);
  }
  return [...new Set(out)];
}

export function buildRules(s: Interception, family: Family): RulePlan {
  const uid = `-m owner --uid-owner ${s.proxyUid}`;
  const notUid = `-m owner ! --uid-owner ${s.proxyUid}`;
  const rules: string[] = [];
  const add = (chain: string, rule: string) => rules.push(`-A ${chain} ${rule}`);
  const ports = (list: readonly number[]) => [...new Set(list)].sort((a, b) => a - b);

  // Inbound: everything to the pod except the sidecar's own ports and excluded ports.
  for (const port of ports([...s.sidecarPorts, ...s.excludeInboundPorts])) add(CHAIN.inbound, `-p tcp -m tcp --dport ${port} -j RETURN`);
  if (s.includeInboundPorts.length > 0) {
    for (const port of ports(s.includeInboundPorts)) add(CHAIN.inbound, `-p tcp -m tcp --dport ${port} -j ${CHAIN.inboundRedirect}`);
  } else {
    add(CHAIN.inbound, `-p tcp -j ${CHAIN.inboundRedirect}`);
  }
  // Only a connection's SYN is redirected. A connection made before these rules, when the pod's
  // namespace had no conntrack yet (the native sidecar's to the repo, started before flb-init; a
  // VM's running services), is picked up mid-stream by conntrack once the rules load it, and its
  // first packet seen then counts as NEW: redirected, a reply meant for the sidecar's socket would
  // land on 15003 and the request stall until its timeout (bench:pod-start saw 15 s for 5 of 50
  // pods). Left alone, it keeps going to the socket it belongs to.
  add(CHAIN.inboundRedirect, `${SYN_ONLY} -j REDIRECT --to-ports ${s.inboundPort}`);
  // eBPF mode is a hybrid: outbound and DNS are the eBPF programs' (bpf/), inbound stays this rule.
  // Inbound by eBPF needs sk_lookup with the sidecar's listening socket in a SOCKMAP, which only a
  // privileged process can put there, and the sidecar runs unprivileged.
  if (s.mode === 'ebpf') {
    return { family, chains: [CHAIN.inbound, CHAIN.inboundRedirect], rules, jumps: [{ from: 'PREROUTING', rule: `-p tcp -j ${CHAIN.inbound}` }] };
  }

  // Outbound TCP.
  if (s.captureDns) add(CHAIN.output, `-p tcp -m tcp --dport 53 -j ${CHAIN.dns}`);
  for (const iface of s.excludeInterfaces) add(CHAIN.output, `-o ${iface} -j RETURN`);
  add(CHAIN.output, `-s ${INBOUND_FORWARD_SOURCE[family]}/${family === 4 ? 32 : 128} -o lo -j RETURN`);
  // The sidecar reaching its own pod (the app called itself through a service): via the inbound side.
  add(CHAIN.output, `! -d ${LOOPBACK[family]} -o lo ${uid} -j ${CHAIN.inboundRedirect}`);
  // The app reaching its own addresses directly is not a mesh call.
  add(CHAIN.output, `-o lo ${notUid} -j RETURN`);
  add(CHAIN.output, `${uid} -j RETURN`);
  if (s.proxyGid !== undefined) add(CHAIN.output, `-m owner --gid-owner ${s.proxyGid} -j RETURN`);
  add(CHAIN.output, `-d ${LOOPBACK[family]} -j RETURN`);
  for (const port of ports(s.excludeOutboundPorts)) add(CHAIN.output, `-p tcp -m tcp --dport ${port} -j RETURN`);
  for (const cidr of cidrsOf(family, s.excludeOutboundIpRanges)) add(CHAIN.output, `-d ${cidr} -j RETURN`);
  const included = cidrsOf(family, s.includeOutboundIpRanges);
  if (s.includeOutboundIpRanges.length > 0) {
    // Only the listed ranges are captured; a family with none listed captures nothing.
    for (const cidr of included) add(CHAIN.output, `-d ${cidr} -j ${CHAIN.outboundRedirect}`);
  } else {
    add(CHAIN.output, `-j ${CHAIN.outboundRedirect}`);
  }
  add(CHAIN.outboundRedirect, `${SYN_ONLY} -j REDIRECT --to-ports ${s.outboundPort}`);

  const chains: string[] = [CHAIN.inbound, CHAIN.inboundRedirect, CHAIN.output, CHAIN.outboundRedirect];
  const jumps: Jump[] = [
    { from: 'PREROUTING', rule: `-p tcp -j ${CHAIN.inbound}` },
    { from: 'OUTPUT', rule: `-p tcp -j ${CHAIN.output}` },
  ];
  if (s.captureDns) {
    // DNS (UDP and TCP 53) goes to the sidecar's resolver, except the sidecar's own queries upstream.
    chains.push(CHAIN.dns);
    add(CHAIN.dns, `${uid} -j RETURN`);
    if (s.proxyGid !== undefined) add(CHAIN.dns, `-m owner --gid-owner ${s.proxyGid} -j RETURN`);
    for (const iface of s.excludeInterfaces) add(CHAIN.dns, `-o ${iface} -j RETURN`);
    add(CHAIN.dns, `-p udp -m udp --dport 53 -j REDIRECT --to-ports ${s.dnsPort}`);
    add(CHAIN.dns, `-p tcp -m tcp --dport 53 -j REDIRECT --to-ports ${s.dnsPort}`);
    jumps.push({ from: 'OUTPUT', rule: `-p udp -m udp --dport 53 -j ${CHAIN.dns}` });
  }
  // Jump chains first, so their rules' targets exist.
  return { family, chains, rules, jumps };
}

/** What `iptables-save -t nat` shows of ours. */
export interface LiveState {
  chains: string[];
  rules: string[];
  jumps: Jump[];
}

export function parseSave(save: string): LiveState {
  const chains: string[] = [];
  const rules: string[] = [];
  const jumps: Jump[] = [];
  let inNat = false;
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) inNat = line === '*nat';
    if (!inNat) continue;
    const chain = /^:(\S+) /.exec(line)?.[1];
    if (chain?.startsWith(CHAIN_PREFIX)) chains.push(chain);
    const rule = /^-A (\S+) (.*)$/.exec(line);
    if (!rule) continue;
    if (rule[1]!.startsWith(CHAIN_PREFIX)) rules.push(line);
    else if ((rule[1] === 'PREROUTING' || rule[1] === 'OUTPUT') && new RegExp(`-j ${CHAIN_PREFIX}`).test(rule[2]!))
      jumps.push({ from: rule[1], rule: rule[2]! });
  }
  return { chains, rules, jumps };
}

const hasJump = (list: readonly Jump[], jump: Jump) => list.some((j) => j.from === jump.from && j.rule === jump.rule);

/**
 * The iptables-restore --noflush document that makes the live state match the plan: declaring a
 * chain creates it or empties it, so its rules are written afresh; jumps from built-in chains are
 * added only when missing (never twice), and stale jumps of ours are removed. One document, so
 * the kernel takes it whole or not at all.
 */
export function applyDocument(plan: RulePlan, live: LiveState): string {
  // Jumps of ours that should not be there, and extra copies of those that should (one stays).
  const stale = live.jumps.filter((j, i) => !hasJump(plan.jumps, j) || live.jumps.findIndex((k) => k.from === j.from && k.rule === j.rule) !== i);
  const staleChains = live.chains.filter((c) => !plan.chains.includes(c));
  return [
    '*nat',
    ...[...plan.chains, ...staleChains].map((c) => `:${c} - [0:0]`),
    ...stale.map((j) => `-D ${j.from} ${j.rule}`),
    ...staleChains.map((c) => `-X ${c}`),
    ...plan.rules,
    ...plan.jumps.filter((j) => !hasJump(live.jumps, j)).map((j) => `-A ${j.from} ${j.rule}`),
    'COMMIT',
    '',
  ].join('\n');
}

/** Removes every jump and chain of ours, leaving nothing behind; undefined when there is nothing. */
export function cleanDocument(live: LiveState): string | undefined {
  if (live.chains.length === 0 && live.jumps.length === 0) return undefined;
  return [
    '*nat',
    ...live.chains.map((c) => `:${c} - [0:0]`),
    ...live.jumps.map((j) => `-D ${j.from} ${j.rule}`),
    ...live.chains.map((c) => `-X ${c}`),
    'COMMIT',
    '',
  ].join('\n');
}

/** The full document as `flb iptables print` shows it (what apply writes on a clean table). */
export function printDocument(plan: RulePlan): string {
  return applyDocument(plan, { chains: [], rules: [], jumps: [] });
}

/** Differences between the live state and the plan, as lines a user can read; empty when they match. */
export function verifyAgainst(plan: RulePlan, live: LiveState): string[] {
  const problems: string[] = [];
  for (const chain of plan.chains) if (!live.chains.includes(chain)) problems.push(`missing chain ${chain}`);
  for (const jump of plan.jumps) if (!hasJump(live.jumps, jump)) problems.push(`missing jump: -A ${jump.from} ${jump.rule}`);
  for (const jump of live.jumps) if (!hasJump(plan.jumps, jump)) problems.push(`unexpected jump: -A ${jump.from} ${jump.rule}`);
  const counts = new Map<string, number>();
  for (const j of live.jumps) counts.set(`${j.from} ${j.rule}`, (counts.get(`${j.from} ${j.rule}`) ?? 0) + 1);
  for (const [jump, n] of counts) if (n > 1) problems.push(`jump appears ${n} times: -A ${jump}`);
  // iptables-save lists chains in its own order; within a chain the order is what matters.
  const ofChain = (rules: readonly string[], chain: string) => rules.filter((r) => r.startsWith(`-A ${chain} `));
  for (const chain of plan.chains) {
    const expected = ofChain(plan.rules, chain);
    const actual = ofChain(live.rules, chain);
    if (expected.join('\n') === actual.join('\n')) continue;
    const missing = expected.filter((r) => !actual.includes(r));
    const extra = actual.filter((r) => !expected.includes(r));
    for (const r of missing) problems.push(`missing rule: ${r}`);
    for (const r of extra) problems.push(`unexpected rule: ${r}`);
    if (missing.length === 0 && extra.length === 0) problems.push(`rules of ${chain} are in a different order`);
  }
  for (const chain of live.chains) if (!plan.chains.includes(chain)) problems.push(`unexpected chain ${chain}`);
  return problems;
}
