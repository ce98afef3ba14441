import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { request } from 'node:https';
import jsonpatch from 'fast-json-patch';
import { createCertificateAuthority, issueCertificate } from '../common/pki.js';
import { createLogger } from '../common/log.js';
import { review } from './admission.js';
import { InjectorMetrics } from './metrics.js';
import { startWebhookServer, type WebhookServer } from './server.js';
import { admissionReview, namespaces, realisticPod, settings } from './testdata/reviews.js';

/**
 * Fuzzing the admission handler: mutations of a realistic AdmissionReview (values replaced by
 * random ones of every JSON type, keys deleted, known annotations and labels given random
 * values, probes scrambled). Every input must get a well-formed answer: 400 with a JSON error,
 * or an AdmissionReview response for the same uid whose patch, if any, applies to the pod.
 */
function prng(seed: number): () => number {
  // mulberry32: small, fast and reproducible from the seed printed on failure.
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ANNOTATIONS = [
  'flomesh.io/inject',
  'flomesh.io/outbound-port-exclusion-list',
  'flomesh.io/inbound-port-exclusion-list',
  'flomesh.io/outbound-ip-range-exclusion-list',
  'flomesh.io/outbound-ip-range-inclusion-list',
  'flomesh.io/proxy-cpu-request',
  'flomesh.io/proxy-memory-limit',
  'flomesh.io/sidecar-status',
];
const TOKENS = ['', 'true', 'false', '8080', '0', '65536', '-1', '10.0.0.0/8', '10.0.0.0/33', '::1', 'fd00::/8', ',', ' , ', 'abc', '1e3', '100m', '64Mi', '{}', 'null', '\u0000', '🙂', 'x'.repeat(300)];

function mutate(random: () => number): unknown {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const randomValue = (depth = 0): unknown => {
    switch (Math.floor(random() * (depth > 2 ? 6 : 8))) {
      case 0: return null;
      case 1: return random() < 0.5;
      case 2: return pick([0, -1, 1.5, 65536, Number.MAX_SAFE_INTEGER, 8080]);
      case 3: return pick(TOKENS);
      case 4: return Array.from({ length: Math.floor(random() * 4) }, () => pick(TOKENS));
      case 5: return {};
      case 6: return Array.from({ length: Math.floor(random() * 3) }, () => randomValue(depth + 1));
      default: return Object.fromEntries(Array.from({ length: Math.floor(random() * 3) }, () => [pick(['name', 'port', 'path', 'httpGet', 'x']), randomValue(depth + 1)]));
    }
  };
  const pod = structuredClone(realisticPod) as unknown as { metadata: Record<string, Record<string, unknown>>; spec: { containers: Record<string, unknown>[] } };
  // Targeted mutations first, on a pod that is still whole; then maybe one anywhere.
  const targeted = Math.floor(random() * 4);
  for (let round = 0; round < targeted; round++) {
    if (random() < 0.6) {
      const where = random() < 0.5 ? 'annotations' : 'labels';
      const value = random() < 0.8 ? Array.from({ length: 1 + Math.floor(random() * 3) }, () => pick(TOKENS)).join(pick([',', ''])) : randomValue();
      pod.metadata[where] = { ...(pod.metadata[where] ?? {}), [pick(ANNOTATIONS)]: value };
    } else {
      pod.spec.containers[0]![pick(['readinessProbe', 'livenessProbe', 'startupProbe', 'ports', 'env', 'name'])] = randomValue();
    }
  }
  const doc = admissionReview(pod) as Record<string, unknown>;
  if (targeted === 0 || random() < 0.4) {
    // Replace or delete a random node anywhere in the document.
    let node: Record<string, unknown> = doc;
    for (let depth = 0; depth < 6; depth++) {
      const keys = Object.keys(node);
      if (keys.length === 0) break;
      const key = pick(keys);
      const child = node[key];
      if (child && typeof child === 'object' && random() < 0.7) {
        node = child as Record<string, unknown>;
        continue;
      }
      if (random() < 0.3) delete node[key];
      else node[key] = randomValue();
      break;
    }
  }
  return doc;
}

type Body = { response?: { uid: string; allowed: boolean; patch?: string; status?: { message?: string } }; error?: string };

function checkAnswer(input: unknown, status: number, body: Body): void {
  if (status === 400) {
    expect(typeof body.error).toBe('string');
    return;
  }
  expect(status).toBe(200);
  const request = (input as { request: { uid: string; object: unknown } }).request;
  expect(body.response?.uid).toBe(request.uid);
  expect(typeof body.response?.allowed).toBe('boolean');
  if (body.response?.allowed === false) expect(body.response.status?.message).toEqual(expect.any(String));
  if (body.response?.patch) {
    const patch = JSON.parse(Buffer.from(body.response.patch, 'base64').toString()) as jsonpatch.Operation[];
    expect(() => jsonpatch.applyPatch(structuredClone(request.object), patch, true, false)).not.toThrow();
  }
}

describe('fuzzing the admission handler', () => {
  it('answers 100,000 generated reviews well, in-process', async () => {
    const seed = Number(process.env.FUZZ_SEED ?? 20261124);
    const random = prng(seed);
    const started = Date.now();
    const outcomes = { 200: 0, 400: 0, patched: 0, denied: 0 };
    for (let i = 0; i < 100_000; i++) {
      const input = mutate(random);
      let outcome;
      try {
        outcome = await review(input, namespaces, settings);
        checkAnswer(input, outcome.status, outcome.body as Body);
      } catch (error) {
        throw new Error(`input ${i} (FUZZ_SEED=${seed}) failed: ${String(error)}\n${JSON.stringify(input).slice(0, 2000)}`, { cause: error });
      }
      outcomes[outcome.status as 200 | 400]++;
      const body = outcome.body as Body;
      if (body.response?.patch) outcomes.patched++;
      if (body.response?.allowed === false) outcomes.denied++;
    }
    console.log(`fuzz: 100000 reviews in ${Date.now() - started} ms`, outcomes);
    // The generator must reach every kind of answer, or it is not testing much.
    expect(outcomes[400]).toBeGreaterThan(1000);
    expect(outcomes.patched).toBeGreaterThan(1000);
    expect(outcomes.denied).toBeGreaterThan(1000);
  }, 120_000);
});

describe('fuzzing over HTTPS', () => {
  let server: WebhookServer;
  let ca: string;
  beforeAll(async () => {
    const authority = createCertificateAuthority('fuzz-ca');
    const serving = issueCertificate(authority, { commonName: 'localhost', usage: 'server', ipAddresses: ['127.0.0.1'] });
    ca = authority.certPem;
    server = await startWebhookServer({ host: '127.0.0.1', port: 0, settings, namespaces, tls: { cert: serving.certPem, key: serving.keyPem }, metrics: new InjectorMetrics(false), log: createLogger('fuzz', 'silent') });
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
  });

  it('refuses a body over the limit with 413, in JSON', async () => {
    const answer = await post(JSON.stringify({ padding: 'x'.repeat(9 * 1024 * 1024) }));
    expect(answer.status).toBe(413);
    expect(JSON.parse(answer.text)).toEqual({ error: 'request body is over the size limit' });
  });
});
