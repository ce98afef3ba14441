import { describe, expect, it } from '@jest/globals';
import { API_VERSION, ServiceSchema, ServicePolicySchema, type Service } from '../../../common/contract/index.js';
import type { ServiceRecord } from '../../sources/kubernetes/records.js';
import { translateService } from '../../sources/kubernetes/translate.js';
import { desiredObjects, HASH_ANNOTATION, isOurs, serviceNameOf } from './objects.js';

const consulService = (endpoints: { address: string; port: number; healthy: boolean }[], over: Partial<Service> = {}): Service =>
  ServiceSchema.parse({
    apiVersion: API_VERSION,
    kind: 'Service',
    id: 'web.dc1.consul',
    name: 'web',
    registry: 'dc1',
    source: 'consul',
    hostnames: ['web.service.consul'],
    vips: [{ address: '240.240.0.1', allocation: 'mesh' }],
    ports: [{ port: 8080, protocol: 'http' }],
    endpoints,
    labels: { 'flomesh.io/origin': 'consul' },
    ...over,
  });

describe('the Kubernetes sink objects', () => {
  it("a headless Service without a selector, and slices by address family and port, labelled as the bridge's", () => {
    const desired = desiredObjects(
      consulService([
        { address: '10.1.0.2', port: 8080, healthy: true },
        { address: '10.1.0.1', port: 8080, healthy: false },
        { address: '10.1.0.3', port: 9090, healthy: true },
        { address: 'fd00::1', port: 8080, healthy: true },
      ]),
      'web',
      'registry',
      'kubernetes',
    );
    expect(desired.service.spec).toEqual({ clusterIP: 'None', ports: [{ port: 8080, targetPort: 8080, protocol: 'TCP', appProtocol: 'http' }] });
    expect(desired.service.metadata?.labels).toEqual({
      'flomesh.io/origin': 'consul',
      'flomesh.io/bridge-sink': 'kubernetes',
      'app.kubernetes.io/managed-by': 'flb-bridge',
    });
    const slices = [...desired.slices.values()].map((s) => ({
      name: s.metadata?.name,
      type: s.addressType,
      port: s.ports?.[0]?.port,
      endpoints: s.endpoints.map((e) => `${e.addresses[0]} ${e.conditions?.ready ? 'ready' : 'not ready'}`),
      managedBy: s.metadata?.labels?.['endpointslice.kubernetes.io/managed-by'],
      service: s.metadata?.labels?.['kubernetes.io/service-name'],
    }));
    expect(slices).toEqual([
      { name: 'web-flb-0', type: 'IPv4', port: 8080, endpoints: ['10.1.0.1 not ready', '10.1.0.2 ready'], managedBy: 'flb-bridge.flomesh.io', service: 'web' },
      { name: 'web-flb-1', type: 'IPv4', port: 9090, endpoints: ['10.1.0.3 ready'], managedBy: 'flb-bridge.flomesh.io', service: 'web' },
      { name: 'web-flb-2', type: 'IPv6', port: 8080, endpoints: ['fd00::1 ready'], managedBy: 'flb-bridge.flomesh.io', service: 'web' },
    ]);
  });

  it('splits more than 100 endpoints into slices, and hashes what it writes so the same input writes nothing', () => {
    const many = Array.from({ length: 250 }, (_, i) => ({ address: `10.2.${Math.floor(i / 256)}.${i % 256}`, port: 8080, healthy: true }));
    const a = desiredObjects(consulService(many), 'web', 'registry', 'kubernetes');
    expect([...a.slices.values()].map((s) => s.endpoints.length)).toEqual([100, 100, 50]);
    const b = desiredObjects(consulService([...many].reverse()), 'web', 'registry', 'kubernetes');
    expect([...b.slices.values()].map((s) => s.metadata?.annotations?.[HASH_ANNOTATION])).toEqual(
      [...a.slices.values()].map((s) => s.metadata?.annotations?.[HASH_ANNOTATION]),
    );
    const changed = desiredObjects(consulService(many.map((e, i) => (i === 0 ? { ...e, healthy: false } : e))), 'web', 'registry', 'kubernetes');
    expect(changed.slices.get('web-flb-0')!.metadata?.annotations?.[HASH_ANNOTATION]).not.toBe(
      a.slices.get('web-flb-0')!.metadata?.annotations?.[HASH_ANNOTATION],
    );
    expect(changed.service.metadata?.annotations?.[HASH_ANNOTATION]).toBe(a.service.metadata?.annotations?.[HASH_ANNOTATION]);
  });

  it('names the Service by the registry name as a DNS label, after the prefix', () => {
    expect(serviceNameOf(consulService([]), '')).toBe('web');
    expect(serviceNameOf(consulService([], { id: 'orders.eureka.eureka', name: 'ORDERS' }), 'reg-')).toBe('reg-orders');
    expect(serviceNameOf(consulService([], { id: `${'a'.repeat(60)}.dc1.consul` }), 'reg-')).toMatch(/^reg-a{52}-[0-9a-f]{6}$/);
  });

  it('what it writes is never read back by the Kubernetes source, and only its own objects are its', () => {
    const desired = desiredObjects(consulService([{ address: '10.1.0.1', port: 8080, healthy: true }]), 'web', 'registry', 'kubernetes');
    const record: ServiceRecord = {
      namespace: 'registry',
      name: 'web',
      uid: 'u',
      type: 'ClusterIP',
      clusterIPs: [],
      ports: [{ name: undefined, port: 8080, targetPort: 8080, protocol: 'TCP', appProtocol: 'http' }],
      annotations: {},
      labels: desired.service.metadata!.labels!,
    } as unknown as ServiceRecord;
    expect(translateService(record, [], ServicePolicySchema.parse({}), { clusterName: 'local' })).toMatchObject({
      skipped: 'written by the bridge from consul',
    });
    expect(isOurs(desired.service.metadata?.labels, 'kubernetes')).toBe(true);
    expect(isOurs(desired.service.metadata?.labels, 'other-sink')).toBe(false);
    expect(isOurs({ 'app.kubernetes.io/managed-by': 'flb-bridge' }, 'kubernetes')).toBe(false);
    expect(isOurs(undefined, 'kubernetes')).toBe(false);
  });
});
