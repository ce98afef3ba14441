import { describe, expect, it } from '@jest/globals';
import jsonpatch from 'fast-json-patch';
import { review } from './admission.js';
import { jsonText } from './json-text.js';
import { admissionReview, namespaces, realisticPod, settings } from './testdata/reviews.js';

type Body = {
  response?: { uid: string; allowed: boolean; patch?: string; patchType?: string; warnings?: string[]; status?: { message: string } };
  error?: string;
};

describe('AdmissionReview handling', () => {
  it('answers an injectable pod with a JSON patch that applies', async () => {
    const outcome = await review(admissionReview(realisticPod), namespaces, settings);
    expect(outcome.status).toBe(200);
    const body = outcome.body as Body;
    expect(body.response).toMatchObject({ uid: 'c0ffee-1', allowed: true, patchType: 'JSONPatch' });
    const patch = JSON.parse(Buffer.from(body.response!.patch!, 'base64').toString()) as jsonpatch.Operation[];
    const injected = jsonpatch.applyPatch(structuredClone(realisticPod), patch, true, false).newDocument as typeof realisticPod & {
      spec: { initContainers: { name: string }[] };
    };
    expect(injected.spec.initContainers.map((c) => c.name)).toEqual(['flb-sidecar', 'flb-init']);
  });

  it('answers with the text JSON.stringify would write, built around the base64 patch, warnings included', async () => {
    const secure = {
      get: () => ({ metadata: { name: 'secure', labels: { 'flomesh.io/inject': 'enabled', 'pod-security.kubernetes.io/enforce': 'restricted' } } }),
    };
    for (const [lookup, uid] of [
      [namespaces, 'c0ffee-1'],
      [secure, 'a "quoted" \\ uid, "patch":"" inside'],
    ] as const) {
      const outcome = await review(admissionReview(realisticPod, { uid }), lookup, settings);
      expect(jsonText(outcome.body)).toBe(JSON.stringify(outcome.body));
      expect((outcome.body as Body).response).toMatchObject({ uid, patchType: 'JSONPatch' });
    }
  });

  it('takes the namespace from the request when the object has none', async () => {
    const { namespace: _ns, ...metadata } = realisticPod.metadata;
    const outcome = await review(admissionReview({ ...realisticPod, metadata }), namespaces, settings);
    expect((outcome.body as Body).response?.patch).toBeDefined();
  });

  it.each([
    ['a string', 'hello', /not an admission.k8s.io\/v1 AdmissionReview: \(document\): Invalid input/],
    ['null', null, /not an admission.k8s.io\/v1 AdmissionReview/],
    ['an array', [1, 2], /not an admission.k8s.io\/v1 AdmissionReview/],
    [
      'a v1beta1 review',
      { ...admissionReview(realisticPod), apiVersion: 'admission.k8s.io/v1beta1' },
      /apiVersion: only admission.k8s.io\/v1 AdmissionReviews are supported/,
    ],
    ['a review without a request', { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }, /request: required/],
    ['a request without uid', admissionReview(realisticPod, { uid: undefined }), /request.uid: required/],
  ])('answers %s with 400 and a JSON error', async (_what, body, message) => {
    const outcome = await review(body, namespaces, settings);
    expect(outcome.status).toBe(400);
    expect((outcome.body as Body).error).toMatch(message);
  });

  it('allows kinds it does not handle, with a warning, changing nothing', async () => {
    const outcome = await review(admissionReview({}, { kind: { group: 'apps', version: 'v1', kind: 'Deployment' } }), namespaces, settings);
    expect((outcome.body as Body).response).toEqual({
      uid: 'c0ffee-1',
      allowed: true,
      warnings: ['flb-mesh injector handles core/v1 Pods only, not apps/v1 Deployment; nothing was changed'],
    });
  });

  it('denies a pod that is malformed, naming the field', async () => {
    const outcome = await review(admissionReview({ metadata: { name: 'x' }, spec: { containers: [{ name: 'a', ports: 'eighty' }] } }), namespaces, settings);
    expect((outcome.body as Body).response).toMatchObject({
      allowed: false,
      status: { message: expect.stringContaining('spec.containers[0].ports: Invalid input: expected array, received string') },
    });
  });

  it('handles a 1 MB pod spec', async () => {
    const big = structuredClone(realisticPod);
    big.spec.containers[0]!.env = Array.from({ length: 10_000 }, (_, i) => ({ name: `V${i}`, value: 'v'.repeat(90) }));
    expect(JSON.stringify(big).length).toBeGreaterThan(1_000_000);
    const outcome = await review(admissionReview(big), namespaces, settings);
    expect((outcome.body as Body).response?.allowed).toBe(true);
  });
});
