import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createServer, type Server } from 'node:net';
import { ActionableError } from '../common/errors.js';
import { createLogger } from '../common/log.js';
import { createCertificateAuthority, issueCertificate } from '../common/pki.js';
import { InjectorMetrics } from './metrics.js';
import { startServers } from './runner.js';
import { namespaces, settings } from './testdata/reviews.js';

describe("the injector's listeners", () => {
  let busy: Server;
  let busyPort: number;
  const authority = createCertificateAuthority('runner-test');
  const serving = issueCertificate(authority, { commonName: 'localhost', usage: 'server', ipAddresses: ['127.0.0.1'] });
  const webhook = (port: number) => ({
    host: '127.0.0.1',
    port,
    settings,
    namespaces,
    tls: { cert: serving.certPem, key: serving.keyPem },
    metrics: new InjectorMetrics(false),
    log: createLogger('runner-test', 'silent'),
  });
  const failure = (promise: Promise<unknown>) =>
    promise.then(
      () => {
        throw new Error('expected the start to fail');
      },
      (error: unknown) => error,
    );

  beforeAll(async () => {
    busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    busyPort = (busy.address() as { port: number }).port;
  });
  afterAll(() => new Promise<void>((resolve) => busy.close(() => resolve())));

  it('name the webhook listener and --listen when its port is taken', async () => {
    const error = await failure(startServers(webhook(busyPort), undefined));
    expect(error).toBeInstanceOf(ActionableError);
    expect((error as ActionableError).message).toBe(`the injector's webhook cannot listen on 127.0.0.1:${busyPort}: another process is listening there`);
    expect((error as ActionableError).hint).toContain('--listen HOST:PORT');
  });

  it('name the metrics listener and --metrics-listen, and let go of the webhook port', async () => {
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const webhookPort = (probe.address() as { port: number }).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const error = await failure(startServers(webhook(webhookPort), { host: '127.0.0.1', port: busyPort }));
    expect((error as ActionableError).message).toBe(
      `the injector's metrics endpoint cannot listen on 127.0.0.1:${busyPort}: another process is listening there`,
    );
    expect((error as ActionableError).hint).toContain('--metrics-listen HOST:PORT');
    // The webhook listener that did start was closed: its port is free again.
    const again = await startServers(webhook(webhookPort), undefined);
    expect(again.server.port).toBe(webhookPort);
    await again.server.close();
  });
});
