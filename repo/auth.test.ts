/*
 * Bearer tokens cost the apiserver as little as possible: what cannot be a ServiceAccount token
 * for the repo (not a JWT, another audience, expired) is refused without a TokenReview; results
 * are cached (LRU, so tokens in use stay); concurrent requests share a review; and reviews are
 * rate-limited per client and overall. TokenReviews go to a fake apiserver that counts them; the
 * end-to-end test (test-e2e/repo-auth.test.ts) does the same against a real one.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { Authenticator, type AuthOptions } from './auth.js';

const AUDIENCE = 'flb-repo';
const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
const jwt = (payload: Record<string, unknown>, header: Record<string, unknown> = { alg: 'RS256', kid: 'k1' }) =>
  `${b64(header)}.${b64(payload)}.${randomBytes(32).toString('base64url')}`;
const seconds = () => Math.floor(Date.now() / 1000);
/** A projected ServiceAccount token's claims, for pod `pod` in namespace shop. */
const claims = (pod: string, extra: Record<string, unknown> = {}) => ({
  aud: [AUDIENCE],
  exp: seconds() + 600,
  iat: seconds(),
  nbf: seconds(),
  iss: 'https://kubernetes.default.svc',
  sub: 'system:serviceaccount:shop:default',
  'kubernetes.io': { namespace: 'shop', pod: { name: pod, uid: 'u' }, serviceaccount: { name: 'default', uid: 's' } },
  ...extra,
});

describe('bearer tokens', () => {
  let apiserver: Server;
  let kubeConfig: KubeConfig;
  /** Tokens the fake apiserver was asked about, in order. */
  const reviewed: string[] = [];

  beforeAll(async () => {
    apiserver = createServer((req: IncomingMessage, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        const review = JSON.parse(body) as { spec: { token: string; audiences: string[] } };
        const token = review.spec.token;
        reviewed.push(token);
        const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString() || '{}') as ReturnType<typeof claims>;
        // Signed by "the cluster": these tests mark forged ones by a claim.
        const authentic = !('forged' in payload);
        res.writeHead(201, { 'content-type': 'application/json' }).end(
          JSON.stringify({
            apiVersion: 'authentication.k8s.io/v1',
            kind: 'TokenReview',
            status: authentic
              ? {
                  authenticated: true,
                  audiences: review.spec.audiences,
                  user: { username: payload.sub, extra: { 'authentication.kubernetes.io/pod-name': [payload['kubernetes.io']?.pod?.name] } },
                }
              : { authenticated: false, error: 'invalid bearer token' },
          }),
        );
      });
    });
    await new Promise<void>((resolve) => apiserver.listen(0, '127.0.0.1', resolve));
    kubeConfig = new KubeConfig();
    kubeConfig.loadFromOptions({
      clusters: [{ name: 'fake', server: `http://127.0.0.1:${(apiserver.address() as AddressInfo).port}`, skipTLSVerify: true }],
      users: [{ name: 'repo', token: 'repo-token' }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'repo' }],
      currentContext: 'fake',
    });
  });
  afterAll(() => new Promise<void>((resolve) => apiserver.close(() => resolve())));

  const authenticator = (extra: Partial<AuthOptions> = {}) =>
    new Authenticator({ trustAnonymous: false, tokenReview: { kubeConfig, audience: AUDIENCE }, ...extra });
  const request = (token: string, address = '10.0.0.1') =>
    ({ headers: { authorization: `Bearer ${token}` }, socket: { remoteAddress: address } }) as unknown as IncomingMessage;

  it('refuses what cannot be a ServiceAccount token for the repo without asking the apiserver', async () => {
    const auth = authenticator();
    const before = reviewed.length;
    const garbage = [
      'not-a-token',
      'a.b.c',
      '',
      `${'x'.repeat(20_000)}.y.z`,
      `${b64('not json')}.${b64(claims('web'))}.sig`,
      `${b64({ alg: 'RS256' })}.${b64('[1,2]')}.sig`,
      jwt(claims('web'), { alg: 'none' }),
      jwt(claims('web', { aud: ['someone-else'] })),
      jwt(claims('web', { aud: 'someone-else' })),
      jwt(claims('web', { exp: seconds() - 120 })),
      jwt(claims('web', { exp: undefined })),
      jwt(claims('web', { exp: 'tomorrow' })),
      jwt(claims('web', { nbf: seconds() + 3600 })),
      `${jwt(claims('web'))}.extra`,
    ];
    for (const token of garbage) expect(await auth.authenticate(request(token))).toBeUndefined();
    expect(reviewed.length - before).toBe(0);
    // A token that looks right is reviewed: forged ones are the apiserver's to refuse.
    expect(await auth.authenticate(request(jwt(claims('web', { forged: true }))))).toBeUndefined();
    expect(reviewed.length - before).toBe(1);
  });

  it('reviews a token once while it is cached, and again once its cache time or the token has expired', async () => {
    let now = Date.now();
    const auth = authenticator({ now: () => now });
    const token = jwt(claims('web'));
    const count = () => reviewed.filter((t) => t === token).length;
    const results = await Promise.all(Array.from({ length: 20 }, () => auth.authenticate(request(token))));
    expect(results).toEqual(Array(20).fill({ kind: 'sidecar', id: 'pod.shop.web' }));
    // Concurrent requests with one token shared one review.
    expect(count()).toBe(1);
    now += 29_000;
    await auth.authenticate(request(token));
    expect(count()).toBe(1);
    now += 2_000;
    await auth.authenticate(request(token));
    expect(count()).toBe(2);

    // A token that expires in 5 s is not trusted from the cache after that.
    const short = jwt(claims('short', { exp: Math.floor(now / 1000) + 5 }));
    expect(await auth.authenticate(request(short))).toEqual({ kind: 'sidecar', id: 'pod.shop.short' });
    now += 6_000;
    const again = reviewed.length;
    await auth.authenticate(request(short));
    expect(reviewed.length).toBe(again + 1);
  });

  it('keeps tokens in use cached while many others come and go (least recently used go first)', async () => {
    let now = Date.now();
    // Reviews in-process here (ten thousand through the apiserver client take seconds), and the
    // overall rate limit raised: neither is what this test is about.
    const reviews: string[] = [];
    const auth = new Authenticator({
      trustAnonymous: false,
      tokenReview: {
        audience: AUDIENCE,
        review: async (token) => {
          reviews.push(token);
          const pod = (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as ReturnType<typeof claims>)['kubernetes.io'].pod.name;
          return {
            authenticated: true,
            audiences: [AUDIENCE],
            user: { username: 'system:serviceaccount:shop:default', extra: { 'authentication.kubernetes.io/pod-name': [pod] } },
          };
        },
      },
      limits: { reviewsPerSecond: 1e6, burst: 1e6 },
      now: () => now,
    });
    const hot = jwt(claims('hot'));
    const hotReviews = () => reviews.filter((t) => t === hot).length;
    await auth.authenticate(request(hot));
    // More distinct tokens than the cache holds (10,000), from many pods; the hot one keeps being used.
    for (let i = 0; i < 10_050; i++) {
      await auth.authenticate(request(jwt(claims(`p${i}`)), `10.1.${i >> 8}.${i & 255}`));
      if (i % 100 === 0) {
        now += 200;
        expect(await auth.authenticate(request(hot))).toEqual({ kind: 'sidecar', id: 'pod.shop.hot' });
      }
    }
    expect(hotReviews()).toBe(1);
    expect(reviews).toHaveLength(10_051);
    expect(auth.cachedTokens).toBe(10_000);
  });

  it('rate-limits reviews per client and overall, answering when to come back instead of queueing', async () => {
    let now = Date.now();
    const auth = authenticator({ now: () => now });
    const before = reviewed.length;
    const attempt = (address: string) =>
      auth.authenticate(request(jwt(claims('many')), address)).then(
        () => 'ok',
        (error: { retryAfterSeconds?: number }) => `retry after ${error.retryAfterSeconds}`,
      );
    // One client: a burst of 10, then 5 a second.
    const burst = [];
    for (let i = 0; i < 30; i++) burst.push(await attempt('10.2.0.1'));
    expect(burst.filter((r) => r === 'ok')).toHaveLength(10);
    expect(burst.slice(10)).toEqual(Array(20).fill('retry after 1'));
    expect(reviewed.length - before).toBe(10);
    now += 1000;
    const next = [];
    for (let i = 0; i < 10; i++) next.push(await attempt('10.2.0.1'));
    expect(next.filter((r) => r === 'ok')).toHaveLength(5);

    // Many clients: a burst of 200 overall (of which 5 were just used; the second refilled the rest), then 100 a second.
    const spread = [];
    for (let i = 0; i < 400; i++) spread.push(await attempt(`10.3.${i >> 8}.${i & 255}`));
    expect(spread.filter((r) => r === 'ok').length).toBe(195);
    expect(reviewed.length - before).toBe(210);
    now += 1000;
    const later = [];
    for (let i = 0; i < 200; i++) later.push(await attempt(`10.4.${i >> 8}.${i & 255}`));
    expect(later.filter((r) => r === 'ok').length).toBe(100);
    // Cached tokens cost no review, so they pass whatever the rate.
    expect(auth.counts['rate-limited']).toBe(20 + 5 + 205 + 100);
  });
});
