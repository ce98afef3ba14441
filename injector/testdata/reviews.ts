// AdmissionReviews and what reviewing them needs, shared by the admission tests, the fuzz test and
// the benchmark (bench/webhook.ts).
import type { V1Namespace } from '@kubernetes/client-node';
import { defaultMesh } from '../../common/contract/index.js';
import type { NamespaceLookup } from '../admission.js';
import type { InjectorSettings } from '../inject.js';

export const settings: InjectorSettings = { mesh: defaultMesh(), nativeSidecars: true, version: 'test' };
export const namespaces: NamespaceLookup = {
  get: (name: string): V1Namespace => ({ metadata: { name, labels: name === 'shop' ? { 'flomesh.io/inject': 'enabled' } : {} } }),
};

export function admissionReview(object: unknown, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: 'c0ffee-1',
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      operation: 'CREATE',
      namespace: 'shop',
      object,
      ...overrides,
    },
  };
}

export const realisticPod = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { generateName: 'orders-7d9f8c6b5-', namespace: 'shop', labels: { app: 'orders', 'pod-template-hash': '7d9f8c6b5' } },
  spec: {
    serviceAccountName: 'orders',
    containers: [
      {
        name: 'app',
        image: 'example/orders:1.0',
        ports: [{ name: 'http', containerPort: 8080 }],
        env: Array.from({ length: 20 }, (_, i) => ({ name: `SETTING_${i}`, value: `value-${i}-${'x'.repeat(40)}` })),
        readinessProbe: { httpGet: { path: '/ready', port: 'http' } },
        livenessProbe: { tcpSocket: { port: 8080 } },
        resources: { requests: { cpu: '100m', memory: '128Mi' } },
      },
    ],
  },
};

