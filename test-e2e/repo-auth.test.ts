import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { request, type RequestOptions } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { createLogger } from '../common/log.js';
import { createCertificateAuthority, issueCertificate, type KeyPair } from '../common/pki.js';
import { Authenticator, CONTROL_PLANE_CN } from '../repo/auth.js';
import { Repo } from '../repo/repo.js';
import { startRepoServer, type RepoServer } from '../repo/server.js';
import { DiskStore } from '../repo/store/disk.js';
import { startControlPlane, type ControlPlane } from '../devenv/controlplane.js';
import { eventually } from './harness/eventually.js';

/**
 * The repo over TLS: the control plane writes with its client certificate; a pod's sidecar reads
 * with a projected ServiceAccount token for the repo audience (checked by a TokenReview against
 * the real apiserver), a VM's with a client certificate; each only the mesh codebase and its own.
 */
describe('repo authentication and authorization', () => {
  let plane: ControlPlane;
  let server: RepoServer;
  let dir: string;
  const ca = createCertificateAuthority('flb-repo-test-ca');
  const serving = issueCertificate(ca, { commonName: 'flb-repo', usage: 'server', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  const controlPlane = issueCertificate(ca, { commonName: CONTROL_PLANE_CN, usage: 'client' });
  const vm = issueCertificate(ca, { commonName: 'vm.billing-1', usage: 'client' });
  const stranger = issueCertificate(createCertificateAuthority('someone-else'), { commonName: CONTROL_PLANE_CN, usage: 'client' });
  let webToken: string;
  let wrongAudienceToken: string;
  let tokenFor: (audience: string) => Promise<string>;

  const call = (method: string, path: string, credentials: { cert?: KeyPair; token?: string } = {}, body?: string) =>
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      const options: RequestOptions = {
        host: '127.0.0.1',
        port: server.port,
        method,
        path,
        ca: ca.certPem,
        agent: false,
        ...(credentials.cert ? { cert: credentials.cert.certPem, key: credentials.cert.keyPem } : {}),
        headers: credentials.token ? { authorization: `Bearer ${credentials.token}` } : {},
      };
      const req = request(options, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('error', reject);
      req.end(body);
    });

  beforeAll(async () => {
    plane = await startControlPlane();
    const core = plane.kubeConfig.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: 'shop' } } });
    await eventually('ServiceAccount default', () => core.readNamespacedServiceAccount({ name: 'default', namespace: 'shop' }));
    const pod = await core.createNamespacedPod({
      namespace: 'shop',
      body: { metadata: { name: 'web' }, spec: { containers: [{ name: 'app', image: 'example/app' }] } },
    });
    const token = (tokenFor = async (audience: string) =>
      (
        await core.createNamespacedServiceAccountToken({
          name: 'default',
          namespace: 'shop',
          body: {
            spec: { audiences: [audience], expirationSeconds: 600, boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: 'web', uid: pod.metadata!.uid! } },
          },
        })
      ).status!.token);
    webToken = await token('flb-repo');
    wrongAudienceToken = await token('someone-else');

    dir = mkdtempSync(join(tmpdir(), 'flb-repo-auth-'));
    const repo = await new Repo(await new DiskStore(dir).init()).load();
    server = await startRepoServer({
      repo,
      host: '127.0.0.1',
      port: 0,
      log: createLogger('repo-auth-test', 'silent'),
      tls: { cert: serving.certPem, key: serving.keyPem, ca: ca.certPem },
      auth: new Authenticator({ trustAnonymous: false, tokenReview: { kubeConfig: plane.kubeConfig, audience: 'flb-repo' } }),
    });
    for (const cb of ['/flb/mesh', '/flb/sidecars/pod.shop.web', '/flb/sidecars/pod.shop.other', '/flb/sidecars/vm.billing-1']) {
      const body = cb === '/flb/mesh' ? '{"main":"/mesh.json"}' : '{"base":"/flb/mesh"}';
      expect((await call('POST', `/api/v1/repo${cb}`, { cert: controlPlane }, body)).status).toBe(201);
    }
    await call('POST', '/api/v1/repo-files/flb/mesh/mesh.json', { cert: controlPlane }, '{"mesh":"flb"}');
    for (const cb of ['/flb/mesh', '/flb/sidecars/pod.shop.web', '/flb/sidecars/pod.shop.other', '/flb/sidecars/vm.billing-1']) {
      expect((await call('PATCH', `/api/v1/repo${cb}`, { cert: controlPlane }, '{"version":"1"}')).status).toBe(201);
    }
  });
  afterAll(async () => {
    await server?.close();
    await plane?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('lets a pod read the mesh and its own codebase with its ServiceAccount token, and nothing else', async () => {
    expect((await call('GET', '/repo/flb/sidecars/pod.shop.web/', { token: webToken })).status).toBe(200);
    expect((await call('GET', '/repo/flb/mesh/mesh.json', { token: webToken })).text).toBe('{"mesh":"flb"}');
    expect((await call('POST', '/repo/flb/sidecars/pod.shop.web/', { token: webToken }, '{"uuid":"u1"}')).status).toBe(201);
    const other = await call('GET', '/repo/flb/sidecars/pod.shop.other/', { token: webToken });
    expect(other).toEqual({
      status: 403,
      text: 'sidecar pod.shop.web may not GET /repo/flb/sidecars/pod.shop.other/; sidecars read only the mesh codebase and their own',
    });
    expect((await call('POST', '/api/v1/repo-files/flb/mesh/evil.json', { token: webToken }, '{}')).status).toBe(403);
    expect((await call('GET', '/api/v1/repo', { token: webToken })).status).toBe(403);
    // No way out of its own codebase by path tricks.
    expect((await call('GET', '/repo/flb/sidecars/pod.shop.web/../pod.shop.other/', { token: webToken })).status).toBe(400);
    expect((await call('GET', '/repo/flb/mesh/%2E%2E/sidecars/pod.shop.other/', { token: webToken })).status).toBe(400);
  });

  it('refuses a token for another audience, no credentials, and a certificate from another CA', async () => {
    expect((await call('GET', '/repo/flb/mesh/', { token: wrongAudienceToken })).status).toBe(401);
    expect((await call('GET', '/repo/flb/mesh/', { token: 'not-a-token' })).status).toBe(401);
    const none = await call('GET', '/repo/flb/mesh/');
    expect(none).toEqual({ status: 401, text: 'authentication required: a client certificate, or a ServiceAccount token for the repo audience' });
    expect((await call('POST', '/api/v1/repo/flb/evil', { cert: stranger }, '{}')).status).toBe(401);
  });

  it('asks the apiserver only about tokens that can be for the repo, and about each once while it is cached', async () => {
    // The repo counts its TokenReviews (flb_repo_bearer_tokens_total{outcome="reviewed"}).
    const reviews = async () =>
      Number(/flb_repo_bearer_tokens_total\{outcome="reviewed"\} (\d+)/.exec((await call('GET', '/metrics', { cert: controlPlane })).text)?.[1]);
    const before = await reviews();
    expect(before).toBeGreaterThanOrEqual(0);
    // A real token of the pod with its expiry moved an hour back: the signature no longer matches,
    // but it is refused before that could matter.
    const [header, payload, signature] = webToken.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as { exp: number; nbf?: number };
    const expired = [
      header,
      Buffer.from(JSON.stringify({ ...claims, exp: Math.floor(Date.now() / 1000) - 3600, nbf: claims.nbf ?? 0 })).toString('base64url'),
      signature,
    ].join('.');
    for (const token of ['not-a-token', 'a.b.c', `${header}.${payload}`, wrongAudienceToken, expired]) {
      expect((await call('GET', '/repo/flb/mesh/', { token })).status).toBe(401);
    }
    expect(await reviews()).toBe(before);
    // A new token for the repo is reviewed once; the same token again is answered from the cache.
    const fresh = await tokenFor('flb-repo');
    expect((await call('GET', '/repo/flb/sidecars/pod.shop.web/', { token: fresh })).status).toBe(200);
    expect((await call('GET', '/repo/flb/mesh/mesh.json', { token: fresh })).status).toBe(200);
    expect(await reviews()).toBe(before + 1);
  });

  it('lets a VM read its own codebase with a client certificate named by its sidecar id', async () => {
    expect((await call('GET', '/repo/flb/sidecars/vm.billing-1/', { cert: vm })).status).toBe(200);
    expect((await call('GET', '/repo/flb/sidecars/pod.shop.web/', { cert: vm })).status).toBe(403);
  });
});
