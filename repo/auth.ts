/*
 * Who is calling the repo, and what they may do. The control plane (a client certificate with
 * CN flb-control-plane) may do everything. A sidecar proves who it is with a projected
 * ServiceAccount token whose audience is the repo (checked by a TokenReview against the
 * apiserver; its pod name claim gives the id), or with a client certificate whose CN is its
 * sidecar id (VMs, Pipy workers); it may only read the mesh codebase and its own, and report
 * status for its own. Anonymous callers get everything only when the repo listens on loopback.
 *
 * A TokenReview is a call to the apiserver, so a bearer token must earn one: it must look like a
 * projected ServiceAccount token for the repo (a JWT whose `aud` names the repo's audience, within
 * its `nbf`/`exp`) before it is sent; results are kept in a bounded LRU cache until the token
 * expires or 30 s pass; concurrent requests with one token share one review; and reviews are
 * rate-limited per client address and overall, past which the caller is told to come back
 * (429 with Retry-After) instead of queueing.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { AuthenticationV1Api, type KubeConfig, type V1TokenReviewStatus } from '@kubernetes/client-node';
import { MESH_CODEBASE, SIDECARS_CODEBASE_PREFIX, SIDECAR_ID_PATTERN, sidecarId } from '../common/contract/identity.js';

export type Principal = { kind: 'control-plane' } | { kind: 'sidecar'; id: string } | { kind: 'anonymous' };

export const CONTROL_PLANE_CN = 'flb-control-plane';

/** Checks a token with the apiserver; resolves with the review's status. */
export type TokenReviewer = (token: string, audience: string) => Promise<V1TokenReviewStatus | undefined>;

export interface TokenLimits {
  /** Results kept, at most (least recently used go first). */
  cacheEntries: number;
  /** How long a result is kept, at most (a deleted pod's token stops working within it). */
  cacheSeconds: number;
  /** Tolerance for `exp` and `nbf` against this clock. */
  clockSkewSeconds: number;
  /** TokenReviews per second from one client address, and the burst it may take at once. */
  reviewsPerSecondPerClient: number;
  burstPerClient: number;
  /** TokenReviews per second overall, and the burst (a restarted repo meets every sidecar at once). */
  reviewsPerSecond: number;
  burst: number;
  /** Client addresses whose rate is tracked, at most (least recently seen go first). */
  clientsTracked: number;
}

export const DEFAULT_TOKEN_LIMITS: TokenLimits = {
  cacheEntries: 10_000,
  cacheSeconds: 30,
  clockSkewSeconds: 30,
  reviewsPerSecondPerClient: 5,
  burstPerClient: 10,
  reviewsPerSecond: 100,
  burst: 200,
  clientsTracked: 10_000,
};

/** What became of a bearer token: counted per outcome (`flb_repo_bearer_tokens_total`). */
export type TokenOutcome = 'cached' | 'refused-locally' | 'reviewed' | 'rate-limited' | 'review-failed';

export interface AuthOptions {
  /** Anonymous callers are trusted (the repo is bound to loopback). */
  trustAnonymous: boolean;
  /** Checks ServiceAccount tokens (with `kubeConfig`, or `review` in tests); absent: bearer tokens are refused. */
  tokenReview?: { audience: string; kubeConfig?: KubeConfig; review?: TokenReviewer };
  limits?: Partial<TokenLimits>;
  /** Milliseconds since the epoch; tests move it. */
  now?: () => number;
}

/** Too many TokenReviews right now: the caller should retry after `retryAfterSeconds`. */
export class TooManyTokenReviews extends Error {
  constructor(readonly retryAfterSeconds: number) {
    super(`too many new tokens to check right now; retry in ${retryAfterSeconds} s`);
  }
}

const MAX_TOKEN_LENGTH = 16 * 1024;
const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

function jsonPart(part: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether the token can be a ServiceAccount token for `audience` now: its expiry (ms) if so, else
 * why not. Signatures are the apiserver's business; this only spares it what cannot pass.
 */
export function checkTokenLocally(token: string, audience: string, nowMs: number, skewSeconds: number): { expiresAt: number } | { refused: string } {
  if (token.length > MAX_TOKEN_LENGTH || !JWT.test(token)) return { refused: 'not a JWT' };
  const [headerPart, payloadPart] = token.split('.') as [string, string, string];
  const header = jsonPart(headerPart);
  if (!header || typeof header.alg !== 'string' || header.alg === 'none') return { refused: 'not a signed JWT' };
  const payload = jsonPart(payloadPart);
  if (!payload) return { refused: 'not a JWT' };
  const audiences = typeof payload.aud === 'string' ? [payload.aud] : Array.isArray(payload.aud) ? payload.aud : [];
  if (!audiences.includes(audience)) return { refused: `not for the audience ${audience}` };
  const skew = skewSeconds * 1000;
  if (typeof payload.exp !== 'number' || !Number.isFinite(payload.exp)) return { refused: 'no expiry' };
  if (payload.exp * 1000 + skew <= nowMs) return { refused: 'expired' };
  if (payload.nbf !== undefined && (typeof payload.nbf !== 'number' || payload.nbf * 1000 - skew > nowMs)) return { refused: 'not valid yet' };
  return { expiresAt: payload.exp * 1000 };
}

/** A token bucket: `rate` tokens a second up to `burst`. */
class Bucket {
  private tokens: number;
  private updated: number;
  constructor(
    private readonly rate: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.updated = now;
  }
  /** Seconds until one token is there (0: now). */
  wait(now: number): number {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.updated) / 1000) * this.rate);
    this.updated = now;
    return this.tokens >= 1 ? 0 : (1 - this.tokens) / this.rate;
  }
  take(): void {
    this.tokens -= 1;
  }
}

/** A Map used as an LRU: reads move an entry to the back; past `max`, the front goes. */
class Lru<K, V> {
  private readonly map = new Map<K, V>();
  constructor(private readonly max: number) {}
  get(key: K): V | undefined {
    const value = this.map.get(key);
    if (value !== undefined) {
      this.map.delete(key);
      this.map.set(key, value);
    }
    return value;
  }
  set(key: K, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    while (this.map.size > this.max) this.map.delete(this.map.keys().next().value!);
  }
  delete(key: K): void {
    this.map.delete(key);
  }
  get size(): number {
    return this.map.size;
  }
}

export class Authenticator {
  private readonly limits: TokenLimits;
  private readonly now: () => number;
  private readonly review?: TokenReviewer;
  private readonly cache: Lru<string, { principal: Principal | undefined; until: number }>;
  private readonly inFlight = new Map<string, Promise<Principal | undefined>>();
  private readonly clients: Lru<string, Bucket>;
  private readonly overall: Bucket;
  readonly counts: Record<TokenOutcome, number> = { cached: 0, 'refused-locally': 0, reviewed: 0, 'rate-limited': 0, 'review-failed': 0 };

  constructor(private readonly options: AuthOptions) {
    this.limits = { ...DEFAULT_TOKEN_LIMITS, ...options.limits };
    this.now = options.now ?? Date.now;
    this.cache = new Lru(this.limits.cacheEntries);
    this.clients = new Lru(this.limits.clientsTracked);
    this.overall = new Bucket(this.limits.reviewsPerSecond, this.limits.burst, this.now());
    const tokenReview = options.tokenReview;
    if (tokenReview?.review) this.review = tokenReview.review;
    else if (tokenReview?.kubeConfig) {
      const api = tokenReview.kubeConfig.makeApiClient(AuthenticationV1Api);
      this.review = async (token, audience) => (await api.createTokenReview({ body: { spec: { token, audiences: [audience] } } })).status;
    }
  }

  /** Entries in the token cache now (bounded by `cacheEntries`). */
  get cachedTokens(): number {
    return this.cache.size;
  }

  /**
   * The caller, or undefined when it gave no usable credentials. Throws TooManyTokenReviews when a
   * token would need a review past the rate limits, and the reviewer's error when the apiserver
   * cannot be asked.
   */
  async authenticate(req: IncomingMessage): Promise<Principal | undefined> {
    const socket = req.socket as TLSSocket;
    if (typeof socket.getPeerCertificate === 'function' && socket.authorized) {
      const cn = socket.getPeerCertificate()?.subject?.CN;
      const name = Array.isArray(cn) ? cn[0] : cn;
      if (name === CONTROL_PLANE_CN) return { kind: 'control-plane' };
      if (name && SIDECAR_ID_PATTERN.test(name)) return { kind: 'sidecar', id: name };
    }
    const authorization = req.headers.authorization;
    if (authorization?.startsWith('Bearer ')) return this.fromToken(authorization.slice(7).trim(), req.socket.remoteAddress ?? '');
    return this.options.trustAnonymous ? { kind: 'anonymous' } : undefined;
  }

  private async fromToken(token: string, client: string): Promise<Principal | undefined> {
    const audience = this.options.tokenReview?.audience;
    if (!this.review || audience === undefined) return undefined;
    const now = this.now();
    const local = checkTokenLocally(token, audience, now, this.limits.clockSkewSeconds);
    if ('refused' in local) {
      this.counts['refused-locally']++;
      return undefined;
    }
    const key = createHash('sha256').update(token).digest('hex');
    const cached = this.cache.get(key);
    if (cached && cached.until > now) {
      this.counts.cached++;
      return cached.principal;
    }
    if (cached) this.cache.delete(key);
    const pending = this.inFlight.get(key);
    if (pending) {
      this.counts.cached++;
      return pending;
    }
    this.admitReview(client, now);
    const review = this.reviewed(token, audience);
    this.inFlight.set(key, review);
    try {
      const principal = await review;
      this.cache.set(key, { principal, until: Math.min(local.expiresAt, this.now() + this.limits.cacheSeconds * 1000) });
      return principal;
    } finally {
      this.inFlight.delete(key);
    }
  }

  /** Takes a review from the client's bucket and the overall one, or throws when either is empty. */
  private admitReview(client: string, now: number): void {
    let bucket = this.clients.get(client);
    if (!bucket) this.clients.set(client, (bucket = new Bucket(this.limits.reviewsPerSecondPerClient, this.limits.burstPerClient, now)));
    const wait = Math.max(bucket.wait(now), this.overall.wait(now));
    if (wait > 0) {
      this.counts['rate-limited']++;
      throw new TooManyTokenReviews(Math.max(1, Math.ceil(wait)));
    }
    bucket.take();
    this.overall.take();
  }

  private async reviewed(token: string, audience: string): Promise<Principal | undefined> {
    let status: V1TokenReviewStatus | undefined;
    try {
      status = await this.review!(token, audience);
    } catch (error) {
      this.counts['review-failed']++;
      throw error;
    }
    this.counts.reviewed++;
    const user = status?.user;
    const namespace = /^system:serviceaccount:([^:]+):[^:]+$/.exec(user?.username ?? '')?.[1];
    const podName = user?.extra?.['authentication.kubernetes.io/pod-name']?.[0];
    // An authenticator that ignores audiences would approve any token: the answer must name ours.
    const forUs = status?.audiences?.includes(audience) ?? false;
    if (status?.authenticated && forUs && namespace && podName) return { kind: 'sidecar', id: sidecarId({ kind: 'pod', namespace, name: podName }) };
    return undefined;
  }
}

/** Whether `principal` may do `method` on `path` (the decoded request path). */
export function authorize(principal: Principal, method: string, path: string): boolean {
  if (principal.kind !== 'sidecar') return true;
  const own = `/repo${SIDECARS_CODEBASE_PREFIX}${principal.id}/`;
  const mesh = `/repo${MESH_CODEBASE}/`;
  if (method === 'GET' || method === 'HEAD') return path.startsWith(own) || path.startsWith(mesh);
  if (method === 'POST') return path === own;
  return false;
}
