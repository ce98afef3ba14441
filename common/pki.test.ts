import { describe, expect, it } from '@jest/globals';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { createServer, connect } from 'node:tls';
import { createCertificateAuthority, issueCertificate } from './pki.js';

describe('pki', () => {
  const ca = createCertificateAuthority('flb-test-ca');

  it('makes a CA that signs server certificates with the names asked for', () => {
    const caCert = new X509Certificate(ca.certPem);
    expect(caCert.ca).toBe(true);
    const server = issueCertificate(ca, { commonName: 'flb-injector', usage: 'server', dnsNames: ['flb-injector.flomesh.svc'], ipAddresses: ['127.0.0.1'] });
    const cert = new X509Certificate(server.certPem);
    expect(cert.ca).toBe(false);
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.subjectAltName).toBe('DNS:flb-injector.flomesh.svc, IP Address:127.0.0.1');
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    expect(cert.checkPrivateKey(createPrivateKey(server.keyPem))).toBe(true);
    expect(new Date(cert.validTo).getTime()).toBeGreaterThan(Date.now() + 364 * 86_400_000);
  });

  it('puts organizations in the subject of client certificates (Kubernetes groups)', () => {
    const client = new X509Certificate(issueCertificate(ca, { commonName: 'admin', organizations: ['system:masters'], usage: 'client' }).certPem);
    expect(client.subject).toBe('CN=admin\nO=system:masters');
    expect(client.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
  });

  it('gives certificates that a TLS client verifies against the CA', async () => {
    const serving = issueCertificate(ca, { commonName: 'localhost', usage: 'server', dnsNames: ['localhost'] });
    const server = createServer({ cert: serving.certPem, key: serving.keyPem }, (socket) => socket.end('hello'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    try {
      const reply = await new Promise<string>((resolve, reject) => {
        const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: ca.certPem }, () => {
          socket.setEncoding('utf8');
          let data = '';
          socket.on('data', (d: string) => (data += d));
          socket.on('end', () => resolve(data));
        });
        socket.on('error', reject);
      });
      expect(reply).toBe('hello');
    } finally {
      server.close();
    }
  });
});
