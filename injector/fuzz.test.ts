import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { checkEvent, OWNER_KINDS } from '../common/kube-events.js';
import { createCertificateAuthority, issueCertificate } from '../common/pki.js';
import { createLogger } from '../common/log.js';
import { fuzz } from '../common/testing/fuzz.js';
import { reviewBody } from './admission.js';
import { admissionEvents } from './events.js';
import { InjectorMetrics } from './metrics.js';
import { startWebhookServer, type WebhookServer } from './server.js';
import { admissionReview, namespaces, realisticPod, settings } from './testdata/reviews.js';
import { checkAnswer, fuzzNamespaces, fuzzTargets, mutatedReview as mutate, prng } from './testing/fuzz-targets.js';

type Body = { response?: { uid: string; allowed: boolean; patch?: string; status?: { message?: string } }; error?: string };

describe('fuzzing the admission handler', () => {
  it('answers 100,000 generated reviews well: mutated reviews, mutated bytes of the seed reviews, noise', async () => {
    // The server's whole path from body bytes, in a worker the harness stops on a hang. Measured at
    // 5-9 s on this 2-core machine shared with other suites; the budget leaves room for a busy one.
    const report = await fuzz({ module: 'injector/testing/fuzz-targets.ts', target: 'admission-review', runs: 100_000, budgetMs: 60_000 });
    console.log(`fuzz admission-review: ${report.runs} generated + ${report.replayed} corpus inputs in ${report.ms} ms (seed ${report.seed})`);
    expect(report.runs).toBe(100_000);
    expect(report.replayed).toBeGreaterThanOrEqual(25);
  }, 90_000);

  it('generates inputs that reach every kind of answer and Events', async () => {
    const corpus = join(dirname(fileURLToPath(import.meta.url)), 'testing/fuzz/corpus/admission-review');
    const seeds = readdirSync(corpus).map((name) => new Uint8Array(readFileSync(join(corpus, name))));
    const seen = { 400: 0, patched: 0, skipped: 0, denied: 0, verifiableEvents: 0 };
    for (const input of fc.sample(fuzzTargets['admission-review']!.inputs(fc, seeds), { numRuns: 5000, seed: 1 })) {
      const outcome = await reviewBody(Buffer.from(input), fuzzNamespaces, settings);
      const body = outcome.body as Body;
      if (outcome.status === 400) seen[400]++;
      else if (body.response?.patch) seen.patched++;
      else if (body.response?.allowed === false) seen.denied++;
      else seen.skipped++;
      const r = outcome.review;
      if (r?.pod && r.result)
        seen.verifiableEvents += admissionEvents({ namespace: r.namespace, pod: r.pod, result: r.result }).filter((e) => checkEvent(e, OWNER_KINDS).ok).length;
    }
    console.log('5,000 generated admission-review inputs:', seen);
    // Each kind of answer, and Events that would be raised, in at least 2 % of the inputs.
    expect(Object.entries(seen).filter(([, count]) => count < 100)).toEqual([]);
  });
});

describe('fuzzing over HTTPS', () => {
  let server: WebhookServer;
  let ca: string;
  beforeAll(async () => {
    const authority = createCertificateAuthority('fuzz-ca');
    const serving = issueCertificate(authority, { commonName: 'localhost', usage: 'server', ipAddresses: ['127.0.0.1'] });
    ca = authority.certPem;
    server = await startWebhookServer({
      host: '127.0.0.1',
      port: 0,
      settings,
      namespaces,
      tls: { cert: serving.certPem, key: serving.keyPem },
      metrics: new InjectorMetrics(false),
      log: createLogger('fuzz', 'silent'),
    });
  });
  afterAll(() => server.close());

  const post = (body: string | Buffer, contentType = 'application/json') =>
    new Promise<{ status: number; text: string; type: string }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: server.port, path: '/mutate', method: 'POST', ca, headers: { 'content-type': contentType } }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text, type: String(res.headers['content-type']) }));
      });
      req.on('error', reject);
      req.end(body);
    });

  it('answers garbage bodies with 400 and a JSON error, and stays up', async () => {
    const random = prng(7);
    const garbage: (string | Buffer)[] = ['', '{', 'null', '[]', '{"apiVersion":', 'not json at all', '\u0000\u0001', Buffer.from([0xff, 0xfe, 0x00, 0x7b])];
    for (let i = 0; i < 200; i++) garbage.push(Buffer.from(Array.from({ length: Math.floor(random() * 200) }, () => Math.floor(random() * 256))));
    for (const body of garbage) {
      const answer = await post(body);
      expect(answer.status).toBe(400);
      expect(answer.type).toMatch(/application\/json/);
      expect(JSON.parse(answer.text)).toEqual({ error: expect.any(String) });
    }
  });

  it('answers 1,000 generated reviews well over HTTPS', async () => {
    const random = prng(11);
    for (let i = 0; i < 1000; i++) {
      const input = mutate(random);
      const answer = await post(JSON.stringify(input));
      checkAnswer(input, answer.status, JSON.parse(answer.text) as Body);
    }
    const healthy = await post(JSON.stringify(admissionReview(realisticPod)));
    expect((JSON.parse(healthy.text) as Body).response?.patch).toBeDefined();
    // About a second on an idle machine; jest's default 5 s was overrun with the other core busy.
  }, 60_000);

  it('refuses a body over the limit with 413, in JSON', async () => {
    const answer = await post(JSON.stringify({ padding: 'x'.repeat(9 * 1024 * 1024) }));
    expect(answer.status).toBe(413);
    expect(JSON.parse(answer.text)).toEqual({ error: 'request body is over the size limit' });
  });
});
