// Virtual IPs of registry services, from the mesh's VIP ranges. A service's VIP starts where a hash
// of its catalog id points and moves to the next free address when that one is taken, so a
// service deregistered and registered again, or seen by another replica, almost always gets the
// same address with nothing stored. What makes it certain is the published catalog: VIPs read
// back from it are preferred for their services and kept from others (see Catalog.adoptStoredVips).
import { createHash } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import { canonicalIp, parseCidr } from '../../common/contract/index.js';

interface Range {
  text: string;
  first: bigint;
  /** Usable addresses: IPv4 ranges of /30 and wider lose their network and broadcast addresses. */
  size: bigint;
  v6: boolean;
}

function toBigInt(address: ipaddr.IPv4 | ipaddr.IPv6): bigint {
  let value = 0n;
  for (const byte of address.toByteArray()) value = (value << 8n) | BigInt(byte);
  return value;
}

function fromBigInt(value: bigint, v6: boolean): string {
  const length = v6 ? 16 : 4;
  const bytes = Array.from({ length }, (_, i) => Number((value >> BigInt(8 * (length - 1 - i))) & 0xffn));
  return v6 ? canonicalIp(ipaddr.fromByteArray(bytes).toString())! : bytes.join('.');
}

function rangeOf(text: string): Range | undefined {
  const parsed = parseCidr(text);
  if (!parsed) return undefined;
  const [address, prefix] = parsed;
  const v6 = address.kind() === 'ipv6';
  const bits = v6 ? 128 : 32;
  const hostBits = BigInt(bits - prefix);
  const network = (toBigInt(address) >> hostBits) << hostBits;
  const total = 1n << hostBits;
  const trimEnds = !v6 && prefix <= 30;
  return { text, first: trimEnds ? network + 1n : network, size: trimEnds ? total - 2n : total, v6 };
}

export class VipAllocator {
  private ranges: Range[] = [];
  private total = 0n;
  private readonly byId = new Map<string, string>();
  private readonly byAddress = new Map<string, string>();
  /** Read back from the published catalog: the address each id had, kept for it while unclaimed. */
  private readonly stored = new Map<string, string>();
  private readonly storedOwner = new Map<string, string>();

  constructor(ranges: readonly string[]) {
    this.setRanges(ranges);
  }

  /** New ranges (mesh.json changed): returns the ids whose VIP is now outside them and was released. */
  setRanges(ranges: readonly string[]): string[] {
    this.ranges = ranges.map(rangeOf).filter((r): r is Range => r !== undefined);
    this.total = this.ranges.reduce((n, r) => n + r.size, 0n);
    const outside = [...this.byId].filter(([, address]) => !this.contains(address)).map(([id]) => id);
    for (const id of outside) this.release(id);
    return outside;
  }

  addressOf(id: string): string | undefined {
    return this.byId.get(id);
  }

  get allocated(): number {
    return this.byId.size;
  }

  /** The service's VIP: the one it holds, else its stored one when free, else by its hash; undefined when the ranges are full. */
  allocate(id: string): string | undefined {
    const held = this.byId.get(id);
    if (held !== undefined) return held;
    const stored = this.stored.get(id);
    if (stored !== undefined && !this.byAddress.has(stored) && this.contains(stored)) return this.take(id, stored);
    if (this.total === 0n) return undefined;
    const start = BigInt(`0x${createHash('sha256').update(id).digest('hex').slice(0, 32)}`) % this.total;
    // Linear probing: bounded by the live set (at most byId + stored tries before a free address).
    const limit = BigInt(this.byId.size + this.storedOwner.size + 1);
    for (let step = 0n; step < this.total && step <= limit; step++) {
      const address = this.addressAt((start + step) % this.total);
      if (this.byAddress.has(address)) continue;
      const owner = this.storedOwner.get(address);
      if (owner !== undefined && owner !== id) continue;
      return this.take(id, address);
    }
    return undefined;
  }

  release(id: string): void {
    const address = this.byId.get(id);
    if (address === undefined) return;
    this.byId.delete(id);
    this.byAddress.delete(address);
  }

  /**
   * VIPs read back from the published catalog: each is its id's from now on. A service holding
   * another address moves to its stored one; a service holding someone's stored address gives it
   * up. Returns the ids whose VIP changed (to publish again).
   */
  adoptStored(stored: ReadonlyMap<string, string>): Set<string> {
    const changed = new Set<string>();
    for (const [id, address] of stored) {
      if (!this.contains(address) || this.storedOwner.has(address)) continue;
      this.stored.set(id, address);
      this.storedOwner.set(address, id);
    }
    for (const [id, address] of stored) {
      if (this.stored.get(id) !== address) continue;
      const holder = this.byAddress.get(address);
      if (holder === id) continue;
      if (holder !== undefined) {
        this.release(holder);
        changed.add(holder);
      }
      if (this.byId.has(id)) {
        this.release(id);
        this.take(id, address);
        changed.add(id);
      }
    }
    // Displaced holders get their next address now, so the caller publishes them once.
    for (const id of changed) if (!this.byId.has(id)) this.allocate(id);
    return changed;
  }

  /** Stored VIPs of services that never came back (every source has listed): free for anyone. */
  forgetUnclaimedStored(): void {
    for (const [id, address] of this.stored) {
      if (this.byId.get(id) === address) continue;
      this.stored.delete(id);
      this.storedOwner.delete(address);
    }
  }

  private take(id: string, address: string): string {
    this.byId.set(id, address);
    this.byAddress.set(address, id);
    return address;
  }

  private contains(address: string): boolean {
    let parsed: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      parsed = ipaddr.parse(address);
    } catch {
      return false;
    }
    const v6 = parsed.kind() === 'ipv6';
    const value = toBigInt(parsed);
    return this.ranges.some((r) => r.v6 === v6 && value >= r.first && value < r.first + r.size);
  }

  private addressAt(offset: bigint): string {
    for (const range of this.ranges) {
      if (offset < range.size) return fromBigInt(range.first + offset, range.v6);
      offset -= range.size;
    }
    throw new Error(`VIP offset ${offset} past the ranges`);
  }
}
