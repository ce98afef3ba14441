import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { AuthenticationV1Api, type KubeConfig } from '@kubernetes/client-node';
import { MESH_CODEBASE, SIDECARS_CODEBASE_PREFIX, SIDECAR_ID_PATTERN, sidecarId } from '../common/contract/identity.js';

/**
 * Who is calling the repo, and what they may do. The control plane (a client certificate with
 * CN flb-control-plane) may do everything. A sidecar proves who it is with a projected
 * ServiceAccount token whose audience is the repo (checked by a TokenReview against the
 * apiserver; its pod name claim gives the id), or with a client certificate whose CN is its
 * sidecar id (VMs, Pipy workers); it may only read the mesh codebase and its own, and report
 * status for its own. Anonymous callers get everything only when the repo listens on loopback.
 */
export type Principal = { kind: 'control-plane' } | { kind: 'sidecar'; id: string } | { kind: 'anonymous' };

export const CONTROL_PLANE_CN = 'flb-control-plane';

export interface AuthOptions {
  /** Anonymous callers are trusted (the repo is bound to loopback). */
  trustAnonymous: boolean;
  /** Checks ServiceAccount tokens; absent: bearer tokens are refused. */
  tokenReview?: { kubeConfig: KubeConfig; audience: string };
}

export class Authenticator {
  private readonly cache = new Map<string, { principal: Principal | undefined; until: number }>();
  private readonly api?: AuthenticationV1Api;

  constructor(private readonly options: AuthOptions) {
    if (options.tokenReview) this.api = options.tokenReview.kubeConfig.makeApiClient(AuthenticationV1Api);
  }

  async authenticate(req: IncomingMessage): Promise<Principal | undefined> {
    const socket = req.socket as TLSSocket;
    if (typeof socket.getPeerCertificate === 'function' && socket.authorized) {
      const cn = socket.getPeerCertificate()?.subject?.CN;
      const name = Array.isArray(cn) ? cn[0] : cn;
      if (name === CONTROL_PLANE_CN) return { kind: 'control-plane' };
      if (name && SIDECAR_ID_PATTERN.test(name)) return { kind: 'sidecar', id: name };
    }
    const authorization = req.headers.authorization;
    if (authorization?.startsWith('Bearer ')) return this.fromToken(authorization.slice(7).trim());
    return this.options.trustAnonymous ? { kind: 'anonymous' } : undefined;
  }

  private async fromToken(token: string): Promise<Principal | undefined> {
    if (!this.api || !this.options.tokenReview) return undefined;
    const key = createHash('sha256').update(token).digest('hex');
    const cached = this.cache.get(key);
    if (cached && cached.until > Date.now()) return cached.principal;
    const review = await this.api.createTokenReview({ body: { spec: { token, audiences: [this.options.tokenReview.audience] } } });
    let principal: Principal | undefined;
    const user = review.status?.user;
    const namespace = /^system:serviceaccount:([^:]+):[^:]+$/.exec(user?.username ?? '')?.[1];
    const podName = user?.extra?.['authentication.kubernetes.io/pod-name']?.[0];
    // An authenticator that ignores audiences would approve any token: the answer must name ours.
    const forUs = review.status?.audiences?.includes(this.options.tokenReview.audience) ?? false;
    if (review.status?.authenticated && forUs && namespace && podName) principal = { kind: 'sidecar', id: sidecarId({ kind: 'pod', namespace, name: podName }) };
    // Short-lived cache: a deleted pod's token stops working within this window.
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(key, { principal, until: Date.now() + 30_000 });
    return principal;
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
