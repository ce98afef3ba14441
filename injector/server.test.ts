import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { request } from 'node:https';
import { createLogger } from '../common/log.js';
import { createCertificateAuthority, issueCertificate } from '../common/pki.js';
import type { InjectorSettings } from './inject.js';
import { InjectorMetrics } from './metrics.js';
import { startWebhookServer, type WebhookServer } from './server.js';
import { admissionReview, namespaces, realisticPod, settings } from './testdata/reviews.js';

describe('the webhook before it has mesh settings', () => {
  let server: WebhookServer;
  let ca: string;
  let current: InjectorSettings | undefined;
  const metrics = new InjectorMetrics(false);

  beforeAll(async () => {
    const authority = createCertificateAuthority('server-test-ca');
    const serving = issueCertificate(authority, { commonName: 'localhost', usage: 'server', ipAddresses: ['127.0.0.1'] });
    ca = authority.certPem;
    server = await startWebhookServer({
      host: '127.0.0.1',
      port: 0,
      settings: () => current ?? { notReady: 'no mesh settings yet: ConfigMap flomesh/flb-mesh does not exist' },
      namespaces,
      tls: { cert: serving.certPem, key: serving.keyPem },
      metrics,
      log: createLogger('server-test', 'silent'),
    });
  });
  afterAll(() => server.close());

  const call = (method: 'GET' | 'POST', path: string, body?: string) =>
    new Promise<{ status: number; text: string; headers: Record<string, unknown> }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: server.port, path, method, ca, headers: { 'content-type': 'application/json' } }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text, headers: res.headers }));
      });
      req.on('error', reject);
      req.end(body);
    });
  const review = JSON.stringify(admissionReview(realisticPod));

  it('answers reviews 503 with a Kubernetes Status naming why (the apiserver quotes it), with no Retry-After, and says not ready on /readyz', async () => {
    const answer = await call('POST', '/mutate', review);
    expect(answer.status).toBe(503);
    expect(answer.headers['retry-after']).toBeUndefined();
    expect(JSON.parse(answer.text)).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      reason: 'ServiceUnavailable',
      code: 503,
      message: 'flb-mesh injector is not ready: no mesh settings yet: ConfigMap flomesh/flb-mesh does not exist',
    });
    const readiness = await call('GET', '/readyz');
    expect(readiness).toMatchObject({ status: 503, text: 'not ready: no mesh settings yet: ConfigMap flomesh/flb-mesh does not exist\n' });
    expect((await call('GET', '/healthz')).status).toBe(200);
    expect((await metrics.reviews.get()).values.find((v) => v.labels.outcome === 'not-ready')?.value).toBe(1);
  });

  it('injects with the settings of the moment once there are some', async () => {
    current = settings;
    const answer = await call('POST', '/mutate', review);
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.text)).toMatchObject({ response: { allowed: true, patchType: 'JSONPatch' } });
    expect(await call('GET', '/readyz')).toMatchObject({ status: 200, text: 'ready\n' });
    current = { ...settings, mesh: { ...settings.mesh, sidecar: { ...settings.mesh.sidecar, logLevel: 'debug' } } };
    const patch = (JSON.parse((await call('POST', '/mutate', review)).text) as { response: { patch: string } }).response.patch;
    expect(Buffer.from(patch, 'base64').toString()).toContain('{"name":"FLB_LOG_LEVEL","value":"debug"}');
  });
});
