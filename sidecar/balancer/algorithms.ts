/*
 * The load-balancing algorithms, each over a fixed candidate list. The pool builds a new instance
 * whenever the candidate set changes (an update, a health change, an ejection), so every pick
 * works on precomputed arrays and allocates nothing.
 */
// Bound once: a global lookup per call is free in plain Node but costly inside a vm context
// (jest's test environment, a sandboxed script), and these run on every pick.
const { floor, imul, min } = Math;

export interface Candidate {
  readonly key: string;
  /** A positive integer: the pool never hands weight-0 (draining) endpoints to an algorithm. */
  readonly weight: number;
  /** Requests or connections under way, kept by the pool's begin()/end(); read live by least-request. */
  readonly inFlight: number;
}

export interface Balancer {
  /** An index into the candidate list, which is never empty. `hash` matters to ring-hash only. */
  pick(hash: number): number;
  /** The same choice skipping keys already tried (a retry on another endpoint); -1 when all are. */
  pickExcluding(hash: number, exclude: ReadonlySet<string>): number;
}

export type Algorithm = 'round-robin' | 'weighted' | 'least-request' | 'ring-hash' | 'random';

/** Uniform in [0, 1), like Math.random; injected so that tests are exact and cannot flake. */
export type Random = () => number;

export interface BalancerOptions {
  random: Random;
  /** Points on the ring (ring-hash). */
  ringSize: number;
  /** The weight the ring's points per unit of weight derive from; see RingHash. */
  ringWeightBasis?: number;
}

export function createBalancer(algorithm: Algorithm, candidates: readonly Candidate[], options: BalancerOptions): Balancer {
  switch (algorithm) {
    case 'round-robin':
      // A random start, so that sidecars that got the same update do not all begin on the first endpoint.
      return new RoundRobin(candidates, floor(options.random() * candidates.length));
    case 'weighted':
      return new SmoothWeightedRoundRobin(candidates);
    case 'least-request':
      return new LeastRequest(candidates, options.random);
    case 'ring-hash':
      return new RingHash(candidates, options.ringSize, options.ringWeightBasis);
    case 'random':
      return new WeightedRandom(candidates, options.random);
  }
}

/** Every candidate in turn, weights ignored (that is what `weighted` is for). */
export class RoundRobin implements Balancer {
  private next: number;

  constructor(
    private readonly candidates: readonly Candidate[],
    start = 0,
  ) {
    this.next = candidates.length > 0 ? start % candidates.length : 0;
  }

  pick(): number {
    const i = this.next;
    this.next = i + 1 === this.candidates.length ? 0 : i + 1;
    return i;
  }

  pickExcluding(_hash: number, exclude: ReadonlySet<string>): number {
    for (let tries = 0; tries < this.candidates.length; tries++) {
      const i = this.pick();
      if (!exclude.has(this.candidates[i]!.key)) return i;
    }
    return -1;
  }
}

/**
 * nginx's smooth weighted round-robin: weights 5:1:1 give a a b a c a a rather than a a a a a b c,
 * so a heavy endpoint never gets a burst. O(n) per pick, which for the tens of endpoints a service
 * has is cheaper than any scheduler structure.
 */
export class SmoothWeightedRoundRobin implements Balancer {
  private readonly current: Float64Array;
  private readonly weights: Float64Array;

  constructor(private readonly candidates: readonly Candidate[]) {
    this.current = new Float64Array(candidates.length);
    this.weights = Float64Array.from(candidates, (c) => c.weight);
  }

  pick(): number {
    return this.choose(undefined);
  }

  pickExcluding(_hash: number, exclude: ReadonlySet<string>): number {
    return this.choose(exclude);
  }

  private choose(exclude: ReadonlySet<string> | undefined): number {
    const { current, weights } = this;
    let best = -1;
    let total = 0;
    for (let i = 0; i < current.length; i++) {
      // As nginx skips peers it already tried for this request.
      if (exclude !== undefined && exclude.has(this.candidates[i]!.key)) continue;
      current[i]! += weights[i]!;
      total += weights[i]!;
      if (best < 0 || current[i]! > current[best]!) best = i;
    }
    if (best >= 0) current[best]! -= total;
    return best;
  }
}

/**
 * Least request by the power of two choices: two distinct random candidates, the one with fewer
 * requests in flight per unit of weight wins. Cheaper than a full scan and, unlike "always the
 * least loaded", it does not send a whole burst to the one endpoint that just went idle.
 */
export class LeastRequest implements Balancer {
  constructor(
    private readonly candidates: readonly Candidate[],
    private readonly random: Random,
  ) {}

  pick(): number {
    const n = this.candidates.length;
    if (n === 1) return 0;
    const a = floor(this.random() * n);
    let b = floor(this.random() * (n - 1));
    if (b >= a) b++;
    return this.better(a, b);
  }

  pickExcluding(_hash: number, exclude: ReadonlySet<string>): number {
    const open: number[] = [];
    for (let i = 0; i < this.candidates.length; i++) if (!exclude.has(this.candidates[i]!.key)) open.push(i);
    if (open.length <= 1) return open[0] ?? -1;
    const a = floor(this.random() * open.length);
    let b = floor(this.random() * (open.length - 1));
    if (b >= a) b++;
    return this.better(open[a]!, open[b]!);
  }

  private better(a: number, b: number): number {
    const ca = this.candidates[a]!;
    const cb = this.candidates[b]!;
    // (inFlight + 1) / weight compared without dividing; the +1 lets weight count among idle ones.
    return (cb.inFlight + 1) * ca.weight < (ca.inFlight + 1) * cb.weight ? b : a;
  }
}

/** Random, in proportion to weight (uniform when all weights are equal). */
export class WeightedRandom implements Balancer {
  private readonly cumulative: Float64Array | undefined;
  private readonly total: number;

  constructor(
    private readonly candidates: readonly Candidate[],
    private readonly random: Random,
  ) {
    let total = 0;
    const cumulative = new Float64Array(candidates.length);
    candidates.forEach((c, i) => (cumulative[i] = total += c.weight));
    this.total = total;
    this.cumulative = candidates.every((c) => c.weight === candidates[0]!.weight) ? undefined : cumulative;
  }

  pick(): number {
    const n = this.candidates.length;
    if (this.cumulative === undefined) return min(n - 1, floor(this.random() * n));
    return min(n - 1, upperBound(this.cumulative, this.random() * this.total));
  }

  pickExcluding(_hash: number, exclude: ReadonlySet<string>): number {
    let total = 0;
    for (const c of this.candidates) if (!exclude.has(c.key)) total += c.weight;
    if (total === 0) return -1;
    let draw = this.random() * total;
    let last = -1;
    for (let i = 0; i < this.candidates.length; i++) {
      const c = this.candidates[i]!;
      if (exclude.has(c.key)) continue;
      last = i;
      draw -= c.weight;
      if (draw < 0) return i;
    }
    return last;
  }
}

/**
 * Consistent hashing on a ring (Karger et al., as Envoy's ring_hash): each candidate owns points
 * `hashString(key + '#' + i)`, a request goes to the owner of the first point at or after its
 * hash. The points depend only on the endpoint's key, so a candidate leaving or joining moves only
 * the keys on the arcs it owned, and every sidecar with the same endpoint set maps a key the same
 * way (what makes hashing on a cookie or header useful for caches and sessions across pods).
 *
 * Points per candidate = weight * ringSize / 2^floor(log2(basis)), where the basis is the total
 * weight of the service's endpoints (the pool passes all registry endpoints, healthy or not). Had
 * the count been ringSize * weight / current total, as in Envoy, removing one endpoint of ten would
 * also give each survivor ~11% more points, and those new points steal keys among survivors: about
 * double the disruption. Quantising the basis to a power of two keeps the per-endpoint count
 * fixed until the set doubles or halves, and health changes never move it at all; the ring then
 * holds between ringSize and 2 * ringSize points.
 */
export class RingHash implements Balancer {
  private readonly hashes: Uint32Array;
  private readonly owners: Uint32Array;

  constructor(
    private readonly candidates: readonly Candidate[],
    ringSize: number,
    weightBasis?: number,
  ) {
    const total = candidates.reduce((sum, c) => sum + c.weight, 0);
    const basis = Math.max(total, weightBasis ?? 0, 1);
    const perWeight = ringSize / 2 ** Math.floor(Math.log2(basis));
    const counts = candidates.map((c) => Math.max(1, Math.round(c.weight * perWeight)));
    const size = counts.reduce((a, b) => a + b, 0);
    const pointHashes = new Uint32Array(size);
    const pointOwners = new Uint32Array(size);
    let p = 0;
    counts.forEach((count, owner) => {
      const key = candidates[owner]!.key;
      for (let i = 0; i < count; i++, p++) {
        pointHashes[p] = hashString(`${key}#${i}`);
        pointOwners[p] = owner;
      }
    });
    // Ties (rare with 32-bit hashes) are broken by key, not by list order, so all sidecars agree.
    const order = Array.from({ length: size }, (_, i) => i).sort(
      (a, b) => pointHashes[a]! - pointHashes[b]! || compareStrings(candidates[pointOwners[a]!]!.key, candidates[pointOwners[b]!]!.key),
    );
    this.hashes = Uint32Array.from(order, (i) => pointHashes[i]!);
    this.owners = Uint32Array.from(order, (i) => pointOwners[i]!);
  }

  /** Points on the ring, for the admin snapshot and tests. */
  get size(): number {
    return this.hashes.length;
  }

  pick(hash: number): number {
    const i = lowerBound(this.hashes, hash >>> 0);
    return this.owners[i === this.hashes.length ? 0 : i]!;
  }

  pickExcluding(hash: number, exclude: ReadonlySet<string>): number {
    // Walk on along the ring: the retry lands where the key would go if the tried endpoint left.
    const n = this.hashes.length;
    const start = lowerBound(this.hashes, hash >>> 0);
    for (let step = 0; step < n; step++) {
      const owner = this.owners[(start + step) % n]!;
      if (!exclude.has(this.candidates[owner]!.key)) return owner;
    }
    return -1;
  }
}

/**
 * A fast, well-mixed 32-bit hash: FNV-1a over the UTF-16 code units, then murmur3's fmix32
 * finaliser (FNV alone mixes its last characters poorly, and ring points `key#0`, `key#1`, ...
 * differ only there). Not cryptographic on purpose: a pick hashes a header or an IP on every
 * request, and node:crypto costs an object and a microsecond or so per digest; there is nothing
 * to protect, since anyone who can choose the key can already choose where it lands. Any other
 * sidecar implementation (PipyJS) must use exactly this function to agree on the ring.
 */
export function hashString(value: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < value.length; i++) {
    h ^= value.charCodeAt(i);
    h = imul(h, 0x01000193);
  }
  return mix32(h);
}

/** murmur3 fmix32: every input bit affects every output bit. */
export function mix32(value: number): number {
  let h = value | 0;
  h ^= h >>> 16;
  h = imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** mulberry32: a tiny seeded generator for tests and reproducible benchmarks. */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = imul(state ^ (state >>> 15), 1 | state);
    t = (t + imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** First index whose value is >= target (length when none). */
function lowerBound(sorted: Uint32Array, target: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < target) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index whose value is > target. */
function upperBound(sorted: Float64Array, target: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! <= target) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
