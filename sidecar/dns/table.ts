import { isIPv4, isIPv6 } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Service } from '../../common/contract/catalog.js';
import type { SidecarConfig } from '../../common/contract/sidecar.js';

/**
 * The names this sidecar answers itself: a pure value, built from the catalog and sidecar.json and
 * swapped whole into a running server (DnsServer.setTable) when either changes.
 */
export interface SrvTarget {
  port: number;
  /** The target host, fully qualified without the trailing dot; it is in the same table. */
  name: string;
}

export interface DnsAnswer {
  readonly a: readonly string[];
  readonly aaaa: readonly string[];
  readonly srv: readonly SrvTarget[];
  /** Reverse names (x.x.x.x.in-addr.arpa, ip6.arpa) of a VIP point at the service's first name. */
  readonly ptr: readonly string[];
}

export interface DnsTableOptions {
  /** The Kubernetes cluster domain; `<name>.<namespace>.svc.<clusterDomain>` names a Kubernetes service. */
  clusterDomain?: string;
}

export type DnsRecords = SidecarConfig['dns']['records'];

export class DnsTable {
  constructor(
    private readonly entries: ReadonlyMap<string, DnsAnswer>,
    /** Names two owners claimed, services without a VIP, bad records: for the caller to log. */
    readonly problems: readonly string[] = [],
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** Case-insensitive; a trailing dot is ignored. */
  lookup(name: string): DnsAnswer | undefined {
    return this.entries.get(normalizeName(name));
  }

  names(): IterableIterator<[string, DnsAnswer]> {
    return this.entries.entries();
  }
}

export const emptyDnsTable = (): DnsTable => new DnsTable(new Map());

export function normalizeName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

interface Owner {
  what: string;
  answer: DnsAnswer;
  ports: readonly { name?: string | undefined; port: number }[];
}

/**
 * Names come in two strengths. Exact names are a service's hostnames, a Kubernetes service's
 * `<name>.<namespace>.svc.<clusterDomain>` and sidecar.json's records. Searched names are an exact
 * name with a search domain appended, as the pod's resolver builds them: with ndots:5 a Consul
 * service's `payments.service.consul` is first asked as `payments.service.consul.cluster.local`
 * (after the svc domains); answering that at once saves a round trip to kube-dns. An exact name
 * always beats a searched one. No searched name is made under `svc.<clusterDomain>`: there a name
 * is a Kubernetes Service's (`payments.shop.svc.cluster.local`, what `payments` becomes in `shop`),
 * and a Service the catalog does not hold (its namespace not exported) must not be shadowed by a
 * registry's bare `payments`; kube-dns answers those, NXDOMAIN when there is no such Service, and
 * the resolver goes on down the search list to our answer. Names already under the cluster domain or
 * a search domain are not searched further (`orders.shop.svc.cluster.local.shop.svc.cluster.local`
 * is left to upstream, which says NXDOMAIN, and the resolver moves on), and any other name under the
 * cluster domain that is not ours is left to upstream too: kube-dns owns cluster.local, and a Service
 * outside the catalog (or one in another namespace) must still resolve.
 */
export function buildDnsTable(services: readonly Service[], records: DnsRecords, searchDomains: readonly string[], options: DnsTableOptions = {}): DnsTable {
  const clusterDomain = normalizeName(options.clusterDomain ?? 'cluster.local');
  const domains = [...new Set(searchDomains.map(normalizeName).filter((d) => d !== ''))];
  const problems: string[] = [];
  const exact = new Map<string, Owner>();
  const claim = (map: Map<string, Owner>, name: string, owner: Owner, quiet = false) => {
    const held = map.get(name);
    if (!held) map.set(name, owner);
    else if (held !== owner && !quiet) problems.push(`${name}: claimed by ${held.what} and ${owner.what}; ${held.what} answers`);
  };

  // Records first: sidecar.json's records are this sidecar's explicit word.
  const byName = new Map<string, { a: string[]; aaaa: string[] }>();
  for (const record of records) {
    const name = normalizeName(record.name);
    const family = record.type === 'A' ? isIPv4(record.address) : isIPv6(record.address);
    if (!family) {
      problems.push(`record ${name} ${record.type} ${record.address}: not an ${record.type === 'A' ? 'IPv4' : 'IPv6'} address`);
      continue;
    }
    const entry = byName.get(name) ?? { a: [], aaaa: [] };
    byName.set(name, entry);
    const list = record.type === 'A' ? entry.a : entry.aaaa;
    if (!list.includes(record.address)) list.push(record.address);
  }
  const ptrOwners: [string, string][] = [];
  for (const [name, { a, aaaa }] of byName) {
    claim(exact, name, { what: `record ${name}`, answer: { a, aaaa, srv: [], ptr: [] }, ports: [] });
    for (const address of [...a, ...aaaa]) ptrOwners.push([address, name]);
  }

  // Local Kubernetes services before imported ones, then the rest; by id within each, so the
  // winner of a clash is the same on every sidecar.
  const rank = (s: Service) => (s.source === 'kubernetes' ? 0 : s.source.startsWith('cluster:') ? 1 : 2);
  const ordered = [...services].sort((x, y) => rank(x) - rank(y) || (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
  for (const svc of ordered) {
    // Without a VIP the outbound proxy has nothing to catch; a headless Kubernetes service's pod
    // addresses are kube-dns's to give.
    if (svc.vips.length === 0) {
      problems.push(`service ${svc.id}: no virtual IP; its names are left to upstream DNS`);
      continue;
    }
    const answer: DnsAnswer = {
      a: svc.vips.filter((v) => isIPv4(v.address)).map((v) => v.address),
      aaaa: svc.vips.filter((v) => isIPv6(v.address)).map((v) => v.address),
      srv: [],
      ptr: [],
    };
    const owner: Owner = { what: `service ${svc.id}`, answer, ports: svc.ports };
    const names = svc.hostnames.map(normalizeName);
    if ((svc.source === 'kubernetes' || svc.source.startsWith('cluster:')) && svc.namespace) {
      const canonical = `${svc.name.toLowerCase()}.${svc.namespace}.svc.${clusterDomain}`;
      names.unshift(canonical);
    }
    const unique = [...new Set(names)];
    for (const name of unique) claim(exact, name, owner);
    const first = unique.find((n) => exact.get(n) === owner);
    if (first) for (const vip of svc.vips) ptrOwners.push([vip.address, first]);
  }

  const isUnder = (name: string, domain: string) => name === domain || name.endsWith(`.${domain}`);
  const kubernetesServices = `svc.${clusterDomain}`;
  const searched = new Map<string, Owner>();
  for (const [name, owner] of exact) {
    if (isUnder(name, clusterDomain) || domains.some((d) => isUnder(name, d))) continue;
    for (const domain of domains) {
      const full = `${name}.${domain}`;
      // Under svc.<cluster domain> a searched name is a Kubernetes Service's (`orders.shop.svc...`
      // is Service orders in shop, `payments.eureka.svc...` Service payments in eureka), and the
      // catalog does not know every Service (a namespace the bridge does not export): kube-dns
      // answers these, and the resolver moves on to the next search domain when it says NXDOMAIN.
      if (full.length > 253 || exact.has(full) || isUnder(full, kubernetesServices)) continue;
      claim(searched, full, owner);
    }
  }

  const entries = new Map<string, DnsAnswer>();
  const owners = new Map<string, Owner>([...exact, ...searched]);
  for (const [name, owner] of owners) entries.set(name, owner.answer);
  // SRV as Kubernetes publishes it: `_<port name>._<proto>.<name>` for named ports. Every port
  // protocol of the catalog (tcp, http, http2, grpc) runs over TCP.
  for (const [name, owner] of owners) {
    for (const p of owner.ports) {
      if (!p.name) continue;
      const srvName = `_${p.name}._tcp.${name}`;
      if (srvName.length > 253) continue;
      const held = entries.get(srvName);
      if (held) {
        if (held.srv.length === 0 || held.srv[0]!.name !== name) problems.push(`${srvName}: claimed twice; the first answers`);
        continue;
      }
      entries.set(srvName, { a: [], aaaa: [], srv: [{ port: p.port, name }], ptr: [] });
    }
  }
  for (const [address, name] of ptrOwners) {
    const reverse = reverseName(address);
    const held = entries.get(reverse);
    if (held) {
      if (held.ptr[0] !== name) problems.push(`${address}: reverse name claimed by ${held.ptr[0]} and ${name}; ${held.ptr[0]} answers`);
      continue;
    }
    entries.set(reverse, { a: [], aaaa: [], srv: [], ptr: [name] });
  }
  return new DnsTable(entries, problems);
}

/** 10.96.0.10 -> 10.0.96.10.in-addr.arpa; an IPv6 address's nibbles, reversed, under ip6.arpa. */
export function reverseName(address: string): string {
  if (isIPv4(address)) return `${address.split('.').reverse().join('.')}.in-addr.arpa`;
  const nibbles = ipaddr
    .parse(address)
    .toByteArray()
    .flatMap((b) => [(b >> 4).toString(16), (b & 15).toString(16)]);
  return `${nibbles.reverse().join('.')}.ip6.arpa`;
}
