import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createServer, type Server } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { createCertificateAuthority, issueCertificate } from '../common/pki.js';
import { RepoClient, RepoUnreachable } from './repo-client.js';

// A stand-in for the repo's wire (repo/README.md): the listing, a codebase's info with its
// instances, the served tree with its etag; writes and reads only for a client certificate with CN
// flb-control-plane, as the repo requires.
describe('the repo client', () => {
  const ca = createCertificateAuthority('test repo CA', 30);
  const serving = issueCertificate(ca, { commonName: 'flb-repo', usage: 'server', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], validDays: 30 });
  const controlPlane = issueCertificate(ca, { commonName: 'flb-control-plane', usage: 'client', validDays: 30 });
  const stranger = issueCertificate(ca, { commonName: 'vm.somebody', usage: 'client', validDays: 30 });
  let server: Server;
  let url: string;
  const seen: string[] = [];

  beforeAll(async () => {
    server = createServer({ cert: serving.certPem, key: serving.keyPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: false }, (req, res) => {
      const cn = (req.socket as TLSSocket).getPeerCertificate()?.subject?.CN;
      seen.push(`${req.method} ${req.url} ${cn ?? '-'}`);
      if (cn !== 'flb-control-plane') return void res.writeHead(403).end('sidecars read only the mesh codebase and their own');
      if (req.url === '/api/v1/repo') return void res.writeHead(200, { server: 'flb-repo' }).end('/flb/mesh\n/flb/sidecars/pod.shop.a\n/flb/sidecars/vm.b');
      if (req.url === '/api/v1/repo/flb/sidecars/pod.shop.a')
        return void res.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({
            version: '3',
            instances: { '4': { ip: '10.244.1.5', timestamp: 1000, status: { ready: true, appliedVersion: '3+7' } }, '5': { ip: 'x', timestamp: 'garbage' } },
          }),
        );
      if (req.url === '/repo/flb/sidecars/pod.shop.a/')
        return void res
          .writeHead(200, { etag: '"3+7"' })
          .end(req.method === 'HEAD' ? undefined : '/mesh.json\n/services/a.shop.json\n/services/b.shop.json\n/sidecar.json');
      if (req.url === '/repo/flb/sidecars/pod.shop.a/sidecar.json') return void res.writeHead(200).end('{"kind":"Sidecar"}');
      if (req.url === '/repo/flb/sidecars/pod.shop.a/services/a.shop.json') return void res.writeHead(200).end('{"id":"a.shop"}');
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const client = (more: Partial<{ ca: string; cert: string; key: string }> = {}) =>
    new RepoClient({ url, ca: ca.certPem, cert: controlPlane.certPem, key: controlPlane.keyPem, credentials: 'test', ...more });

  it("lists codebases and reads a sidecar's etag, instances and served files as the control plane (flb's repo lists paths with a leading /)", async () => {
    const repo = client();
    try {
      expect(await repo.codebases()).toEqual({ status: 200, codebases: ['/flb/mesh', '/flb/sidecars/pod.shop.a', '/flb/sidecars/vm.b'], server: 'flb-repo' });
      expect(RepoClient.sidecarIds(['/flb/mesh', '/flb/sidecars/pod.shop.a', '/flb/sidecars/vm.b'])).toEqual(['pod.shop.a', 'vm.b']);
      // An instance the repo would never keep (a timestamp that is no number) is left out.
      expect(await repo.sidecar('pod.shop.a')).toEqual({
        id: 'pod.shop.a',
        latest: '3+7',
        instances: [{ ip: '10.244.1.5', timestamp: 1000, status: { ready: true, appliedVersion: '3+7' } }],
      });
      expect(await repo.sidecar('vm.b')).toBeUndefined();
      const served = await repo.servedFiles('pod.shop.a', (path) => path !== 'mesh.json');
      expect(served).toEqual({
        listed: ['mesh.json', 'services/a.shop.json', 'services/b.shop.json', 'sidecar.json'],
        files: { 'sidecar.json': '{"kind":"Sidecar"}', 'services/a.shop.json': '{"id":"a.shop"}' },
        unreadable: ['services/b.shop.json'],
      });
    } finally {
      repo.close();
    }
  });

  it("reports the repo's refusal of another certificate as its status, for the check to explain", async () => {
    const repo = client({ cert: stranger.certPem, key: stranger.keyPem });
    try {
      expect((await repo.codebases()).status).toBe(403);
    } finally {
      repo.close();
    }
  });

  it("checks the certificate against --repo-tls-server-name when the URL's address is not one it names", async () => {
    // The serving certificate names localhost and 127.0.0.1, not 127.0.0.2 (an address a port-forward or a pod IP would be).
    const byAddress = new URL(url);
    byAddress.hostname = '127.0.0.2';
    const server2 = `https://127.0.0.2:${byAddress.port}`;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await new Promise<void>((resolve) => server.listen(Number(byAddress.port), '0.0.0.0', resolve));
    const unnamed = new RepoClient({ url: server2, ca: ca.certPem, cert: controlPlane.certPem, key: controlPlane.keyPem, credentials: 'test' });
    await expect(unnamed.codebases()).rejects.toMatchObject({ name: 'RepoUnreachable', code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    unnamed.close();
    const named = new RepoClient({
      url: server2,
      ca: ca.certPem,
      cert: controlPlane.certPem,
      key: controlPlane.keyPem,
      serverName: 'localhost',
      credentials: 'test',
    });
    try {
      expect((await named.codebases()).status).toBe(200);
    } finally {
      named.close();
    }
  });

  it("names Node's code for a certificate the CA given did not sign, and for a port nobody listens on", async () => {
    const other = createCertificateAuthority('another CA', 30);
    const untrusting = client({ ca: other.certPem });
    await expect(untrusting.codebases()).rejects.toMatchObject({
      name: 'RepoUnreachable',
      code: expect.stringMatching(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED/),
    });
    untrusting.close();
    const closed = new RepoClient({ url: 'https://127.0.0.1:1', credentials: 'none' });
    const error = await closed.codebases().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RepoUnreachable);
    expect(error).toMatchObject({ code: 'ECONNREFUSED' });
    closed.close();
  });
});
