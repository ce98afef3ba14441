import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { ActionableError } from '../common/errors.js';
import { createLogger } from '../common/log.js';
import { createCertificateAuthority, issueCertificate, type KeyPair } from '../common/pki.js';
import { InjectorMetrics } from './metrics.js';
import { CertificateFileError, MountedCertificate, readCertificateFiles, type ServedCertificate } from './mounted-certs.js';
import { startWebhookServer, type WebhookServer } from './server.js';
import { namespaces, settings } from './testdata/reviews.js';

const authority = createCertificateAuthority('mounted-certs-test');
const issue = (options: { validDays?: number; notBefore?: Date } = {}): KeyPair =>
  issueCertificate(authority, { commonName: 'flb-injector.flomesh.svc', usage: 'server', ipAddresses: ['127.0.0.1'], ...options });
const fingerprint = (certPem: string) => new X509Certificate(certPem).fingerprint256;

/**
 * Writes tls.crt and tls.key as the kubelet updates a mounted Secret: the files in a new
 * timestamped folder, a `..data` symlink to it swapped in by one rename, and the names the pod
 * sees (tls.crt, tls.key) symlinks through `..data` that never change.
 */
let generation = 0;
function writeLikeTheKubelet(dir: string, files: { 'tls.crt': string; 'tls.key': string }): void {
  const folder = `..2026_12_06_${++generation}`;
  mkdirSync(join(dir, folder));
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, folder, name), content, { mode: 0o600 });
  symlinkSync(folder, join(dir, '..data_tmp'));
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  for (const name of Object.keys(files)) {
    try {
      symlinkSync(join('..data', name), join(dir, name));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
  if (generation > 1) rmSync(join(dir, `..2026_12_06_${generation - 1}`), { recursive: true, force: true });
}
const pemFiles = (pair: KeyPair) => ({ 'tls.crt': pair.certPem, 'tls.key': pair.keyPem });

/** The fingerprint of the certificate a new TLS connection to the server is shown. */
function servedFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca: authority.certPem }, () => {
      const shown = socket.getPeerX509Certificate();
      socket.end();
      if (shown) resolve(shown.fingerprint256);
      else reject(new Error('no certificate shown'));
    });
    socket.on('error', reject);
  });
}

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const folders: string[] = [];
const folder = () => {
  const dir = mkdtempSync(join(tmpdir(), 'flb-mounted-certs-'));
  folders.push(dir);
  return dir;
};
afterAll(() => {
  for (const dir of folders) rmSync(dir, { recursive: true, force: true });
});

describe('reading the certificate files of --tls-dir', () => {
  const expectRefused = (dir: string, message: string | RegExp) => {
    let error: unknown;
    try {
      readCertificateFiles(dir);
    } catch (thrown) {
      error = thrown;
    }
    expect(error).toBeInstanceOf(CertificateFileError);
    expect(error).toBeInstanceOf(ActionableError);
    expect((error as Error).message).toMatch(message);
    expect((error as ActionableError).hint).toContain('kubectl describe certificate');
  };

  it('reads a good pair, as the kubelet mounts it', () => {
    const dir = folder();
    const pair = issue();
    writeLikeTheKubelet(dir, pemFiles(pair));
    expect(readCertificateFiles(dir)).toEqual({ certPem: pair.certPem, keyPem: pair.keyPem });
  });

  it('names the missing folder or file', () => {
    expectRefused('/nonexistent/flb-tls', 'the webhook certificate file /nonexistent/flb-tls/tls.crt does not exist');
    const dir = folder();
    writeFileSync(join(dir, 'tls.crt'), issue().certPem);
    expectRefused(dir, `the webhook certificate file ${join(dir, 'tls.key')} does not exist`);
  });

  it("names a file that is not PEM, and a key that is not the certificate's", () => {
    const dir = folder();
    writeFileSync(join(dir, 'tls.crt'), 'not a certificate\n');
    writeFileSync(join(dir, 'tls.key'), issue().keyPem);
    expectRefused(dir, new RegExp(`^${join(dir, 'tls.crt')} is not a PEM certificate`));
    writeFileSync(join(dir, 'tls.crt'), issue().certPem);
    writeFileSync(join(dir, 'tls.key'), 'garbage');
    expectRefused(dir, new RegExp(`^${join(dir, 'tls.key')} is not a PEM private key`));
    writeFileSync(join(dir, 'tls.key'), issue().keyPem);
    expectRefused(dir, `${join(dir, 'tls.key')} is not the key of the certificate in ${join(dir, 'tls.crt')} (CN=flb-injector.flomesh.svc)`);
  });

  it('refuses a certificate that has expired or is not valid yet, saying when', () => {
    const dir = folder();
    writeLikeTheKubelet(dir, pemFiles(issue({ notBefore: new Date('2020-01-01T00:00:00Z'), validDays: 30 })));
    expectRefused(dir, `the certificate in ${join(dir, 'tls.crt')} expired at 2020-01-31T00:00:00.000Z`);
    writeLikeTheKubelet(dir, pemFiles(issue({ notBefore: new Date('2099-01-01T00:00:00Z'), validDays: 30 })));
    expectRefused(dir, `the certificate in ${join(dir, 'tls.crt')} is not valid before 2099-01-01T00:00:00.000Z`);
  });
});

describe("a change the folder's watch does not see", () => {
  it('is found by the periodic re-read', async () => {
    // The files the injector reads are links to a folder it does not watch: writing there is a
    // change no event reports, as on file systems whose changes inotify does not see.
    const dir = folder();
    const elsewhere = folder();
    const first = issue();
    writeFileSync(join(elsewhere, 'tls.crt'), first.certPem);
    writeFileSync(join(elsewhere, 'tls.key'), first.keyPem);
    for (const name of ['tls.crt', 'tls.key']) symlinkSync(join(elsewhere, name), join(dir, name));
    const renewed: ServedCertificate[] = [];
    const mounted = new MountedCertificate({ dir, log: createLogger('mounted-certs-test', 'silent'), onRenewed: (c) => renewed.push(c), pollIntervalMs: 300 });
    try {
      const next = issue();
      writeFileSync(join(elsewhere, 'tls.key'), next.keyPem);
      writeFileSync(join(elsewhere, 'tls.crt'), next.certPem);
      await until('the renewal found', () => (renewed.length > 0 ? true : undefined));
      expect(renewed).toEqual([{ certPem: next.certPem, keyPem: next.keyPem }]);
      expect(mounted.current().certPem).toBe(next.certPem);
    } finally {
      mounted.stop();
    }
  });
});

describe('the webhook serving the certificate of a mounted Secret', () => {
  let dir: string;
  let server: WebhookServer;
  let mounted: MountedCertificate;
  const metrics = new InjectorMetrics(false);
  let renewals = 0;

  beforeAll(async () => {
    dir = folder();
    writeLikeTheKubelet(dir, pemFiles(issue()));
    // As runner.ts wires it: a renewal goes to the running server, a refusal to the metric.
    mounted = new MountedCertificate({
      dir,
      log: createLogger('mounted-certs-test', 'silent'),
      onRenewed: (c: ServedCertificate) => {
        renewals++;
        server.setCertificate({ cert: c.certPem, key: c.keyPem });
      },
      onRefused: () => metrics.certificateReloadsRefused.inc(),
      // Far longer than the test: what a renewal is seen by is the folder's watch.
      pollIntervalMs: 600_000,
    });
    server = await startWebhookServer({
      host: '127.0.0.1',
      port: 0,
      settings,
      namespaces,
      tls: { cert: mounted.current().certPem, key: mounted.current().keyPem },
      metrics,
      log: createLogger('mounted-certs-test', 'silent'),
    });
  });
  afterAll(async () => {
    mounted?.stop();
    await server?.close();
  });
  afterEach(() => expect(mounted.current().certPem).toBeDefined());

  it('serves a renewed certificate from the next connection on, without a restart', async () => {
    const first = mounted.current();
    expect(await servedFingerprint(server.port)).toBe(fingerprint(first.certPem));
    const renewed = issue();
    writeLikeTheKubelet(dir, pemFiles(renewed));
    await until('the renewed certificate served', async () => ((await servedFingerprint(server.port)) === fingerprint(renewed.certPem) ? true : undefined));
    expect(mounted.current()).toEqual({ certPem: renewed.certPem, keyPem: renewed.keyPem });
    expect(renewals).toBe(1);
  });

  it('keeps serving the certificate it has when a renewal is bad, and takes the next good one', async () => {
    const serving = mounted.current();
    const refusedBefore = (await metrics.certificateReloadsRefused.get()).values[0]?.value ?? 0;
    // A key that is not the certificate's (a half-written renewal, a wrong Secret).
    writeLikeTheKubelet(dir, { 'tls.crt': issue().certPem, 'tls.key': issue().keyPem });
    await until('the bad renewal refused', async () =>
      ((await metrics.certificateReloadsRefused.get()).values[0]?.value ?? 0) > refusedBefore ? true : undefined,
    );
    expect(await servedFingerprint(server.port)).toBe(fingerprint(serving.certPem));
    expect(mounted.current()).toBe(serving);

    // Files gone from the Secret: still the same certificate.
    writeLikeTheKubelet(dir, { 'tls.crt': 'not PEM', 'tls.key': '' });
    await until('the second bad renewal refused', async () =>
      ((await metrics.certificateReloadsRefused.get()).values[0]?.value ?? 0) > refusedBefore + 1 ? true : undefined,
    );
    expect(await servedFingerprint(server.port)).toBe(fingerprint(serving.certPem));

    const good = issue();
    writeLikeTheKubelet(dir, pemFiles(good));
    await until('the good renewal served', async () => ((await servedFingerprint(server.port)) === fingerprint(good.certPem) ? true : undefined));
    expect(renewals).toBe(2);
  });
});
