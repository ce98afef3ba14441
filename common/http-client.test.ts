/*
 * The repo client's trust in a CA file, against a real HTTPS server whose CA is rotated the way a
 * cluster does it: the server gets a certificate from a new CA, and the kubelet updates the
 * mounted ConfigMap by swapping its `..data` symlink. No restart of the client in between.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { mkdirSync, mkdtempSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KeepAliveClient } from './http-client.js';
import { createCertificateAuthority, issueCertificate, type KeyPair } from './pki.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function serving(ca: KeyPair): KeyPair {
  return issueCertificate(ca, { commonName: 'flb-repo', usage: 'server', ipAddresses: ['127.0.0.1'] });
}

async function httpsServer(cert: KeyPair): Promise<{ server: Server; url: URL }> {
  const server = createServer({ cert: cert.certPem, key: cert.keyPem }, (_req, res) => res.end('repo\n'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  return { server, url: new URL(`https://127.0.0.1:${(server.address() as { port: number }).port}/repo/`) };
}

/** A ConfigMap volume as the kubelet lays it out: `ca.crt -> ..data/ca.crt`, `..data -> ..<timestamp>`. */
function configMapVolume(pem: string): { dir: string; file: string; update(pem: string): void } {
  const dir = mkdtempSync(join(tmpdir(), 'flb-repo-ca-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  let generation = 0;
  const update = (content: string) => {
    const data = `..2025_01_01_00_00_0${generation++}`;
    mkdirSync(join(dir, data));
    writeFileSync(join(dir, data, 'ca.crt'), content);
    symlinkSync(data, join(dir, '..data_tmp'));
    const previous = generation > 1 ? readlinkSync(join(dir, '..data')) : undefined;
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    if (previous) rmSync(join(dir, previous), { recursive: true });
  };
  update(pem);
  symlinkSync('..data/ca.crt', join(dir, 'ca.crt'));
  return { dir, file: join(dir, 'ca.crt'), update };
}

const request = (client: KeepAliveClient, url: URL) => client.request(url, { timeoutMs: 5000 }).then((answer) => answer.text());

describe('the repo client trusts its CA file', () => {
  it('verifies the repo against the CA file, and follows a rotation of the CA without a restart', async () => {
    const oldCa = createCertificateAuthority('flb-repo-ca-1');
    const newCa = createCertificateAuthority('flb-repo-ca-2');
    const { server, url } = await httpsServer(serving(oldCa));
    const volume = configMapVolume(oldCa.certPem);
    const problems: string[] = [];
    const client = new KeepAliveClient({ caFile: volume.file, onCaProblem: (message) => problems.push(message) });
    cleanups.push(() => client.close());
    expect(await request(client, url)).toBe('repo\n');

    // The repo moves to a certificate of the new CA; the client does not trust it yet.
    const next = serving(newCa);
    server.setSecureContext({ cert: next.certPem, key: next.keyPem });
    server.closeAllConnections();
    await expect(request(client, url)).rejects.toThrow(/self[- ]signed|unable to verify|unable to get local issuer/);

    // The kubelet publishes the new bundle: the next connection verifies against it.
    volume.update(newCa.certPem);
    expect(await request(client, url)).toBe('repo\n');
    expect(problems).toEqual([]);
  });

  it('keeps the last good CA when the file goes bad, says so once, and refuses to connect unverified without one', async () => {
    const ca = createCertificateAuthority('flb-repo-ca');
    const { url } = await httpsServer(serving(ca));
    const volume = configMapVolume(ca.certPem);
    const problems: string[] = [];
    const client = new KeepAliveClient({ caFile: volume.file, onCaProblem: (message) => problems.push(message) });
    cleanups.push(() => client.close());
    expect(await request(client, url)).toBe('repo\n');
    volume.update('not a certificate\n');
    expect(await request(client, url)).toBe('repo\n');
    expect(await request(client, url)).toBe('repo\n');
    expect(problems).toEqual([`the CA file ${volume.file} holds no PEM certificate; still trusting the CA read before`]);

    const missing = join(volume.dir, 'nowhere.crt');
    const fresh = new KeepAliveClient({ caFile: missing });
    cleanups.push(() => fresh.close());
    await expect(request(fresh, url)).rejects.toThrow(`cannot read the CA file ${missing}: ENOENT`);
  });

  it("uses Node's trust without a CA file, so a private CA is refused", async () => {
    const { url } = await httpsServer(serving(createCertificateAuthority('private')));
    const client = new KeepAliveClient();
    cleanups.push(() => client.close());
    await expect(request(client, url)).rejects.toThrow(/self[- ]signed|unable to verify|unable to get local issuer/);
  });
});
