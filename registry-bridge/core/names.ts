// The names users dial, for every registry alike: a registry's service name made a DNS label by
// fixed rules, labels that two names of one registry would share given out by a rule that does not
// depend on which arrived first, and hostnames that services of several sources claim given to one
// of them by a documented order (registry-bridge/README.md, "Names").
import { createHash } from 'node:crypto';

const MAX_LABEL = 63;
const HASH_CHARS = 6;

const shortHash = (raw: string) => createHash('sha256').update(raw).digest('hex').slice(0, HASH_CHARS);

/**
 * A registry's service name as a DNS label, or undefined when nothing of it can be one: lowercased
 * (DNS ignores case, and so do Consul's DNS and Spring's load balancer); every run of other
 * characters than a-z, 0-9 and `-` becomes one `-` (`web_api`, `Web.API`, `web api`: `web-api`);
 * `-` trimmed at both ends; a label longer than 63 characters keeps its first 56 and ends in `-`
 * and 6 hex digits of the SHA-256 of the whole name, so two long names stay apart.
 */
export function dnsLabelOf(raw: string): string | undefined {
  const label = raw
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/-{2,}/g, '-')
    .replace(/^-+|-+$/g, '');
  if (label === '') return undefined;
  if (label.length <= MAX_LABEL) return label;
  return `${label.slice(0, MAX_LABEL - HASH_CHARS - 1).replace(/-+$/, '')}-${shortHash(raw)}`;
}

/** A name that normalises to a label another name of the same registry has. */
export function disambiguatedLabel(label: string, raw: string): string {
  return `${label.slice(0, MAX_LABEL - HASH_CHARS - 1).replace(/-+$/, '')}-${shortHash(raw)}`;
}

/** Which of two names that want the same label gets it: one already equal to it, else the smaller (by UTF-16 code units). */
function prefer(label: string, a: string, b: string): string {
  if ((a === label) !== (b === label)) return a === label ? a : b;
  return a < b ? a : b;
}

/**
 * The labels of one registry's service names. Names that normalise to the same label (`Web_API` and
 * `web-api`) share it by rule: the name already equal to the label keeps it, else the smallest name;
 * every other gets the label with a hash of its own name appended (`web-api-3f2a1c`). The outcome
 * depends only on the set of names, never on their order of arrival, so every replica and every
 * restart gives the same labels.
 */
export class LabelBook {
  /** The plain label each name normalises to, and the names that want each plain label. */
  private readonly wanted = new Map<string, string>();
  private readonly byLabel = new Map<string, Set<string>>();

  /** The name's label now; undefined when it cannot be one (dnsLabelOf) or it is not in the book. */
  labelOf(raw: string): string | undefined {
    const label = this.wanted.get(raw);
    if (label === undefined) return undefined;
    return this.holder(label) === raw ? label : disambiguatedLabel(label, raw);
  }

  /** Names that share the name's label and were given another (for logs: the collision). */
  rivalsOf(raw: string): string[] {
    const label = this.wanted.get(raw);
    return label === undefined ? [] : [...this.byLabel.get(label)!].filter((r) => r !== raw);
  }

  /**
   * Adds a name. Returns the names whose label changed (the new one among them, and a holder it
   * displaced), or undefined when the name cannot be a DNS label.
   */
  add(raw: string): string[] | undefined {
    if (this.wanted.has(raw)) return [];
    const label = dnsLabelOf(raw);
    if (label === undefined) return undefined;
    const before = this.holder(label);
    this.wanted.set(raw, label);
    let names = this.byLabel.get(label);
    if (!names) this.byLabel.set(label, (names = new Set()));
    names.add(raw);
    const after = this.holder(label);
    return before !== undefined && before !== after ? [raw, before] : [raw];
  }

  /** Removes a name; returns the names whose label changed (one that now holds the plain label). */
  remove(raw: string): string[] {
    const label = this.wanted.get(raw);
    if (label === undefined) return [];
    const before = this.holder(label);
    this.wanted.delete(raw);
    const names = this.byLabel.get(label)!;
    names.delete(raw);
    if (names.size === 0) this.byLabel.delete(label);
    const after = this.holder(label);
    return before === raw && after !== undefined ? [after] : [];
  }

  private holder(label: string): string | undefined {
    let best: string | undefined;
    for (const raw of this.byLabel.get(label) ?? []) best = best === undefined ? raw : prefer(label, best, raw);
    return best;
  }
}

export interface HostnameClaim {
  /** The catalog id of the service that claims. */
  id: string;
  /** Its source's place in the BridgeConfig's sources (0 first). */
  rank: number;
  /** A Kubernetes Service (here or imported from another cluster): it wins its bare name over every registry. */
  kubernetes: boolean;
}

export interface HostnameConflict {
  hostname: string;
  holder: string;
  losers: string[];
}

/**
 * Hostnames several services claim, and who holds each. The holder is, in this order: a
 * Kubernetes service (a Service `orders` is what `orders` means to a pod whose search list
 * resolves it, so a registry's bare `orders` never shadows it), then the service of the source
 * listed first in the BridgeConfig, then the smaller catalog id. Never the one that came last.
 * A Kubernetes service claims its bare name (`<name>`) besides the hostnames it publishes.
 */
export class HostnameBook {
  private readonly claimants = new Map<string, Map<string, HostnameClaim>>();
  private readonly claimsOf = new Map<string, { claim: HostnameClaim; hostnames: string[] }>();

  /**
   * Sets what a service claims (replacing what it claimed before). Returns the ids, other than
   * this one, whose held hostnames changed.
   */
  claim(claim: HostnameClaim, hostnames: readonly string[]): Set<string> {
    const affected = new Set<string>();
    const previous = this.claimsOf.get(claim.id);
    const next = [...new Set(hostnames)];
    const touched = new Set([...(previous?.hostnames ?? []), ...next]);
    const holdersBefore = new Map([...touched].map((h) => [h, this.holder(h)]));
    for (const hostname of previous?.hostnames ?? []) this.claimants.get(hostname)?.delete(claim.id);
    for (const hostname of next) {
      let map = this.claimants.get(hostname);
      if (!map) this.claimants.set(hostname, (map = new Map()));
      map.set(claim.id, claim);
    }
    for (const hostname of touched) if (this.claimants.get(hostname)?.size === 0) this.claimants.delete(hostname);
    this.claimsOf.set(claim.id, { claim, hostnames: next });
    for (const hostname of touched) {
      const before = holdersBefore.get(hostname);
      const after = this.holder(hostname);
      if (before !== after) {
        if (before !== undefined && before !== claim.id) affected.add(before);
        if (after !== undefined && after !== claim.id) affected.add(after);
      }
    }
    return affected;
  }

  /** Drops a service's claims; returns the ids that now hold one of its hostnames. */
  release(id: string): Set<string> {
    const previous = this.claimsOf.get(id);
    const affected = new Set<string>();
    if (!previous) return affected;
    this.claimsOf.delete(id);
    for (const hostname of previous.hostnames) {
      const map = this.claimants.get(hostname);
      if (!map) continue;
      const wasHolder = this.holder(hostname) === id;
      map.delete(id);
      if (map.size === 0) this.claimants.delete(hostname);
      const after = this.holder(hostname);
      if (wasHolder && after !== undefined) affected.add(after);
    }
    return affected;
  }

  /** Which of these hostnames the service holds, in the order given. */
  held(id: string, hostnames: readonly string[]): string[] {
    return hostnames.filter((h) => this.holder(h) === id);
  }

  holder(hostname: string): string | undefined {
    let best: HostnameClaim | undefined;
    for (const claim of this.claimants.get(hostname)?.values() ?? []) if (!best || before(claim, best)) best = claim;
    return best?.id;
  }

  /** Every hostname claimed by more than one service, for status. */
  conflicts(): HostnameConflict[] {
    const out: HostnameConflict[] = [];
    for (const [hostname, map] of this.claimants) {
      if (map.size < 2) continue;
      const holder = this.holder(hostname)!;
      out.push({ hostname, holder, losers: [...map.keys()].filter((id) => id !== holder).sort() });
    }
    return out.sort((a, b) => (a.hostname < b.hostname ? -1 : 1));
  }
}

function before(a: HostnameClaim, b: HostnameClaim): boolean {
  if (a.kubernetes !== b.kubernetes) return a.kubernetes;
  if (a.rank !== b.rank) return a.rank < b.rank;
  return a.id < b.id;
}
