// Fuzz targets of the injector (run by common/testing/fuzz.ts; see injector/fuzz.test.ts).
//
// admission-review: the bytes of a request body, through the server's own path (reviewBody: JSON,
// AdmissionReview shape, pod shape, injection), then the Events the outcome would raise. Every input
// must get a well-formed answer: 400 with a JSON error, or an AdmissionReview response for the same
// uid whose patch, if any, applies to the pod and is the JSON of the injection's patch, the answer
// written exactly as JSON.stringify would write it (json-text.ts builds both from parts serialised
// and encoded once); and any Event it raises is about the request's
// namespace, one visible line of at most 1 KiB. Inputs: mutations of a realistic review (values
// replaced by random ones of every JSON type, keys deleted, known annotations and labels given
// random values, probes and owners scrambled), the seed reviews in fuzz/corpus/admission-review/
// (one per injection fixture) with nodes replaced or deleted, raw byte mutations of both, and noise.
import assert from 'node:assert/strict';
import type { V1Namespace } from '@kubernetes/client-node';
import jsonpatch from 'fast-json-patch';
import { OWNER_KINDS, checkEvent, MAX_EVENT_MESSAGE_BYTES } from '../../common/kube-events.js';
import { fuzzInputs, utf8 } from '../../common/testing/fuzz-inputs.js';
import type { FuzzTarget } from '../../common/testing/fuzz-runner.js';
import { reviewBody, type AdmissionOutcome, type NamespaceLookup } from '../admission.js';
import { admissionEvents } from '../events.js';
import type { InjectorSettings } from '../inject.js';
import { jsonText } from '../json-text.js';
import { admissionReview, realisticPod, settings } from '../testdata/reviews.js';

/** mulberry32: small, fast and reproducible from a seed. */
export function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The namespaces of the injection fixtures (and so of the seed reviews). */
const NAMESPACES: Record<string, V1Namespace> = {
  shop: { metadata: { name: 'shop', labels: { 'flomesh.io/inject': 'enabled' } } },
  secure: { metadata: { name: 'secure', labels: { 'flomesh.io/inject': 'enabled', 'pod-security.kubernetes.io/enforce': 'restricted' } } },
  legacy: { metadata: { name: 'legacy' } },
  paused: { metadata: { name: 'paused', labels: { 'flomesh.io/inject': 'disabled' } } },
  odd: { metadata: { name: 'odd', labels: { 'flomesh.io/inject': 'on' } } },
  flomesh: { metadata: { name: 'flomesh', labels: { 'flomesh.io/inject': 'enabled' } } },
  'kube-system': { metadata: { name: 'kube-system', labels: { 'flomesh.io/inject': 'enabled' } } },
};
const ebpfSettings: InjectorSettings = { ...settings, mesh: { ...settings.mesh, interception: { ...settings.mesh.interception, mode: 'ebpf' } } };
export const fuzzNamespaces: NamespaceLookup = { get: (name) => NAMESPACES[name] };

const ANNOTATIONS = [
  'flomesh.io/inject',
  'flomesh.io/outbound-port-exclusion-list',
  'flomesh.io/inbound-port-exclusion-list',
  'flomesh.io/outbound-ip-range-exclusion-list',
  'flomesh.io/outbound-ip-range-inclusion-list',
  'flomesh.io/proxy-cpu-request',
  'flomesh.io/proxy-memory-limit',
  'flomesh.io/sidecar-status',
  'flomesh.io/interception-mode',
];
const TOKENS = [
  '',
  'iptables',
  'cni',
  'ebpf',
  'true',
  'false',
  '8080',
  '0',
  '65536',
  '-1',
  '10.0.0.0/8',
  '10.0.0.0/33',
  '::1',
  'fd00::/8',
  ',',
  ' , ',
  'abc',
  '1e3',
  '100m',
  '64Mi',
  '{}',
  'null',
  '\u0000',
  '\u202e',
  '🙂',
  'x'.repeat(300),
];
const OWNER = {
  apiVersion: 'apps/v1',
  kind: 'ReplicaSet',
  name: 'orders-7d9f8c6b5',
  uid: '3f1c2a9e-8b7d-4c6e-9f00-1a2b3c4d5e6f',
  controller: true,
  blockOwnerDeletion: true,
};

/** One mutation of the realistic review, a Deployment's pod half of the time. */
export function mutatedReview(random: () => number): Record<string, unknown> {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const randomValue = (depth = 0): unknown => {
    switch (Math.floor(random() * (depth > 2 ? 6 : 8))) {
      case 0:
        return null;
      case 1:
        return random() < 0.5;
      case 2:
        return pick([0, -1, 1.5, 65536, Number.MAX_SAFE_INTEGER, 8080]);
      case 3:
        return pick(TOKENS);
      case 4:
        return Array.from({ length: Math.floor(random() * 4) }, () => pick(TOKENS));
      case 5:
        return {};
      case 6:
        return Array.from({ length: Math.floor(random() * 3) }, () => randomValue(depth + 1));
      default:
        return Object.fromEntries(
          Array.from({ length: Math.floor(random() * 3) }, () => [pick(['name', 'port', 'path', 'httpGet', 'uid', 'controller', 'x']), randomValue(depth + 1)]),
        );
    }
  };
  const pod = structuredClone(realisticPod) as unknown as { metadata: Record<string, unknown>; spec: { containers: Record<string, unknown>[] } };
  if (random() < 0.5) pod.metadata.ownerReferences = [{ ...OWNER }];
  // Targeted mutations first, on a pod that is still whole; then maybe one anywhere.
  const targeted = Math.floor(random() * 4);
  for (let round = 0; round < targeted; round++) {
    const where = random();
    if (where < 0.5) {
      const map = random() < 0.5 ? 'annotations' : 'labels';
      const value = random() < 0.8 ? Array.from({ length: 1 + Math.floor(random() * 3) }, () => pick(TOKENS)).join(pick([',', ''])) : randomValue();
      pod.metadata[map] = { ...((pod.metadata[map] as object | undefined) ?? {}), [pick(ANNOTATIONS)]: value };
    } else if (where < 0.65) {
      const owner = { ...OWNER } as Record<string, unknown>;
      owner[pick(['apiVersion', 'kind', 'name', 'uid', 'controller'])] = randomValue();
      pod.metadata[pick(['ownerReferences', 'ownerReferences', 'name', 'generateName', 'namespace'])] = random() < 0.5 ? [owner] : randomValue();
    } else {
      pod.spec.containers[0]![pick(['readinessProbe', 'livenessProbe', 'startupProbe', 'ports', 'env', 'name'])] = randomValue();
    }
  }
  const doc = admissionReview(pod, random() < 0.8 ? {} : { namespace: pick(Object.keys(NAMESPACES)), dryRun: random() < 0.5 });
  if (targeted === 0 || random() < 0.4) replaceAnyNode(doc, random, randomValue);
  return doc;
}

/** Replaces or deletes one node anywhere in the review, in place; mostly in the pod, where there is most to find. */
function replaceAnyNode(doc: Record<string, unknown>, random: () => number, randomValue: () => unknown): void {
  const pod = (doc.request as { object?: unknown } | undefined)?.object;
  let node: Record<string, unknown> = pod && typeof pod === 'object' && random() < 0.8 ? (pod as Record<string, unknown>) : doc;
  for (let depth = 0; depth < 8; depth++) {
    const keys = Object.keys(node);
    if (keys.length === 0) break;
    const key = keys[Math.floor(random() * keys.length)]!;
    const child = node[key];
    if (child && typeof child === 'object' && random() < 0.75) {
      node = child as Record<string, unknown>;
      continue;
    }
    if (random() < 0.3) delete node[key];
    else node[key] = randomValue();
    break;
  }
}

/** A seed review (one per injection fixture) with one to three nodes replaced or deleted. */
function mutatedSeed(seed: Uint8Array, random: () => number): Record<string, unknown> | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(seed).toString('utf8'));
  } catch {
    return undefined;
  }
  if (!doc || typeof doc !== 'object') return undefined;
  const value = () => (random() < 0.5 ? TOKENS[Math.floor(random() * TOKENS.length)] : [null, true, 0, -1, 65536, {}, [], [{}]][Math.floor(random() * 8)]);
  for (let i = 1 + Math.floor(random() * 3); i > 0; i--) replaceAnyNode(doc as Record<string, unknown>, random, value);
  return doc as Record<string, unknown>;
}

type Body = { response?: { uid?: unknown; allowed?: unknown; patch?: unknown; status?: { message?: unknown } }; error?: unknown };

/** Throws unless the answer is well formed for `input` (the request body as sent). */
export function checkAnswer(input: unknown, status: number, body: unknown): void {
  const answer = body as Body;
  if (status === 400) {
    assert.equal(typeof answer.error, 'string', 'a 400 carries a JSON error');
    return;
  }
  assert.equal(status, 200, `status ${status}`);
  const request = (input as { request: { uid: string; object: unknown } }).request;
  assert.equal(answer.response?.uid, request.uid, 'the response is for the request uid');
  assert.equal(typeof answer.response?.allowed, 'boolean', 'allowed is a boolean');
  if (answer.response?.allowed === false) assert.equal(typeof answer.response.status?.message, 'string', 'a refusal says why');
  if (answer.response?.patch !== undefined) {
    assert.equal(typeof answer.response.patch, 'string', 'the patch is base64 text');
    const patch = JSON.parse(Buffer.from(answer.response.patch as string, 'base64').toString()) as jsonpatch.Operation[];
    // validate: every operation must apply to the pod exactly as sent (paths exist, indexes in range).
    jsonpatch.applyPatch(structuredClone(request.object), patch, true, false);
  }
}

const UNSEEN = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;

/** Throws unless every Event the outcome raises is about the request's namespace and its text is bounded. */
export function checkEvents(outcome: AdmissionOutcome): void {
  const r = outcome.review;
  if (!r?.result || !r.pod) return;
  for (const event of admissionEvents({ namespace: r.namespace, pod: r.pod, result: r.result })) {
    const checked = checkEvent(event, OWNER_KINDS);
    if (!checked.ok) continue;
    assert.equal(checked.event.subject.namespace, r.namespace, 'an Event goes in the namespace of the request');
    assert.ok(Buffer.byteLength(checked.event.message) <= MAX_EVENT_MESSAGE_BYTES, 'an Event message is at most 1 KiB');
    assert.ok(!UNSEEN.test(checked.event.message), 'an Event message has no control or invisible characters');
  }
}

async function reviewBytes(input: Uint8Array): Promise<void> {
  const bytes = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  // Half the inputs (by length) meet an eBPF mesh, whose pods may choose any interception mode.
  const outcome = await reviewBody(bytes, fuzzNamespaces, bytes.length % 2 ? settings : ebpfSettings);
  // As the server sends it: text built from parts serialised once must be what JSON.stringify writes.
  const text = jsonText(outcome.body);
  assert.equal(text, JSON.stringify(outcome.body), 'the answer text is the JSON of the answer');
  const body = JSON.parse(text) as unknown;
  const result = outcome.review?.result;
  if (result?.action === 'inject') {
    // The base64 patch, built from parts encoded once, is the patch's JSON but for spaces between tokens.
    const patch = Buffer.from((body as { response: { patch: string } }).response.patch, 'base64').toString();
    assert.equal(JSON.stringify(JSON.parse(patch)), JSON.stringify(result.patch), 'the base64 patch is the JSON of the patch');
  }
  checkAnswer(outcome.status === 200 ? JSON.parse(bytes.toString('utf8')) : undefined, outcome.status, body);
  checkEvents(outcome);
}

export const fuzzTargets: Record<string, FuzzTarget> = {
  'admission-review': {
    run: reviewBytes,
    inputs: (fc, seeds) => {
      const reviews = fc.integer().map((seed) => utf8(JSON.stringify(mutatedReview(prng(seed)))));
      const seedReviews = fc.tuple(fc.constantFrom(...seeds), fc.integer()).map(([seed, n]) => utf8(JSON.stringify(mutatedSeed(seed, prng(n)) ?? null)));
      // Most inputs stay JSON reviews, so that the pod's path is explored as deeply as its parsing;
      // the rest are the harness's byte mutations (which mostly break the JSON) and noise.
      return fc.oneof({ arbitrary: reviews, weight: 2 }, { arbitrary: seedReviews, weight: 2 }, { arbitrary: fuzzInputs(fc, seeds, reviews), weight: 1 });
    },
  },
};
