import { describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { serviceSchemaFor, MeshSchema } from '../../../common/contract/index.js';
import { LocalRegistry, parseApplications, type EurekaInstance } from './registry.js';
import { translateApp, type TranslateOptions } from './translate.js';

const options: TranslateOptions = { registry: 'eureka', statuses: ['UP'], servicePort: 80, protocol: 'http', preferSecurePort: false };
const schema = serviceSchemaFor(MeshSchema.parse({ apiVersion: 'flb.flomesh.io/v1alpha1', kind: 'Mesh', name: 'flb' }));

const registryOf = (file: string) => {
  const registry = new LocalRegistry();
  registry.replace(parseApplications(readFileSync(join(import.meta.dirname, 'testdata', file), 'utf8')));
  return registry;
};

const instance = (id: string, fields: Partial<EurekaInstance> = {}): EurekaInstance => ({
  id,
  app: 'ORDERS',
  status: 'UP',
  ipAddr: '10.1.0.1',
  port: { number: 8080, enabled: true },
  securePort: { number: 443, enabled: false },
  ...fields,
});

describe('a Eureka application as a catalog service', () => {
  it('publishes the UP instances at their IP and port, named by its lower-cased name and its id', () => {
    const { service, problems } = translateApp('ORDERS', 'orders', registryOf('apps-1.json').instancesOf('ORDERS'), options);
    expect(problems).toEqual([]);
    expect(service).toMatchObject({
      id: 'orders.eureka.eureka',
      name: 'ORDERS',
      registry: 'eureka',
      source: 'eureka',
      hostnames: ['orders', 'orders.eureka.eureka'],
      ports: [{ name: 'http', port: 80, protocol: 'http' }],
      labels: { 'flomesh.io/origin': 'eureka', 'flomesh.io/eureka-app': 'ORDERS' },
    });
    // orders-3 is DOWN: not published by default.
    expect(service!.endpoints.map((e) => `${e.address}:${e.port} ${e.zone} ${e.healthy}`)).toEqual(['10.1.0.1:8080 zone-a true', '10.1.0.2:8080 zone-a true']);
    expect(schema.safeParse(service).success).toBe(true);
  });

  it("carries the source's directDial to the service, and none with off", () => {
    const instances = () => registryOf('apps-1.json').instancesOf('ORDERS');
    const keep = translateApp('ORDERS', 'orders', instances(), { ...options, directDial: 'keep' }).service!;
    expect(keep.directDial).toBe('keep');
    expect(schema.safeParse(keep).success).toBe(true);
    expect(translateApp('ORDERS', 'orders', instances(), { ...options, directDial: 'rebalance' }).service!.directDial).toBe('rebalance');
    expect('directDial' in translateApp('ORDERS', 'orders', instances(), { ...options, directDial: 'off' }).service!).toBe(false);
  });

  it('publishes other statuses when asked, as endpoints never chosen', () => {
    const { service } = translateApp('ORDERS', 'orders', registryOf('apps-1.json').instancesOf('ORDERS'), { ...options, statuses: ['UP', 'DOWN'] });
    expect(service!.endpoints.map((e) => `${e.address} ${e.healthy} ${e.metadata.status}`)).toEqual([
      '10.1.0.1 true UP',
      '10.1.0.2 true UP',
      '10.1.0.3 false DOWN',
    ]);
  });

  it('reaches an app with only securePort enabled on 443 as tcp (the app speaks TLS), with the Amazon zone', () => {
    const { service } = translateApp('INVENTORY', 'inventory', registryOf('apps-1.json').instancesOf('INVENTORY'), options);
    expect(service!.ports).toEqual([{ name: 'https', port: 443, protocol: 'tcp' }]);
    expect(service!.endpoints).toEqual([
      { address: '10.3.0.1', port: 8443, weight: 1, priority: 0, healthy: true, zone: 'us-east-1a', metadata: { instanceId: 'i-0abc123', status: 'UP' } },
    ]);
  });

  it('keeps an app whose instances are all down, with no endpoint (it is still registered)', () => {
    const { service } = translateApp('INVENTORY', 'inventory', registryOf('apps-2.json').instancesOf('INVENTORY'), options);
    expect(service!.endpoints).toEqual([]);
    expect(schema.safeParse(service).success).toBe(true);
  });

  it('gives no service for an app with no instance', () => {
    expect(translateApp('GONE', 'gone', [], options)).toEqual({ skipped: 'no instance of GONE is registered', problems: [] });
  });

  it('leaves out instances with no address or a port out of range, naming each, and keeps the rest', () => {
    const { service, problems } = translateApp(
      'ORDERS',
      'orders',
      [
        instance('good'),
        instance('named-host', { ipAddr: undefined, hostName: 'orders-7.internal' }),
        instance('bad-ip', { ipAddr: '10.1.0.300', hostName: undefined }),
        instance('ip-as-host', { ipAddr: undefined, hostName: '10.1.0.9' }),
        instance('huge-port', { ipAddr: '10.1.0.5', port: { number: 70000, enabled: true } }),
        instance('no-port', { ipAddr: '10.1.0.6', port: undefined }),
      ],
      options,
    );
    expect(service!.endpoints.map((e) => `${e.metadata.instanceId} ${e.address}:${e.port}`)).toEqual(['good 10.1.0.1:8080', 'ip-as-host 10.1.0.9:8080']);
    expect(problems).toEqual([
      'instance named-host of ORDERS: no IP address (ipAddr null, hostName "orders-7.internal"); left out',
      'instance bad-ip of ORDERS: no IP address (ipAddr "10.1.0.300", hostName null); left out',
      'instance huge-port of ORDERS: port 70000 is no port number (1-65535)',
      'instance huge-port of ORDERS: no enabled port, and ORDERS is reached on its plain ports; left out',
      'instance no-port of ORDERS: no enabled port, and ORDERS is reached on its plain ports; left out',
    ]);
    expect(schema.safeParse(service).success).toBe(true);
  });

  it('reaches a mixed app on its plain ports, or on its secure ones when preferred, leaving out who cannot', () => {
    const mixed = [
      instance('plain'),
      instance('tls', { ipAddr: '10.1.0.2', port: { number: 8080, enabled: false }, securePort: { number: 8443, enabled: true } }),
    ];
    const plain = translateApp('ORDERS', 'orders', mixed, options);
    expect(plain.service!.endpoints.map((e) => e.metadata.instanceId)).toEqual(['plain']);
    expect(plain.problems).toEqual(['instance tls of ORDERS: no enabled port, and ORDERS is reached on its plain ports; left out']);
    const secure = translateApp('ORDERS', 'orders', mixed, { ...options, preferSecurePort: true });
    expect(secure.service!.ports).toEqual([{ name: 'https', port: 443, protocol: 'tcp' }]);
    expect(secure.service!.endpoints.map((e) => e.metadata.instanceId)).toEqual(['tls']);
  });

  it('makes one endpoint of one process registered twice, healthy if either registration is UP', () => {
    const { service } = translateApp('ORDERS', 'orders', [instance('old', { status: 'DOWN' }), instance('new')], { ...options, statuses: ['UP', 'DOWN'] });
    expect(service!.endpoints).toHaveLength(1);
    expect(service!.endpoints[0]!.healthy).toBe(true);
    expect(schema.safeParse(service).success).toBe(true);
  });

  it('gives the same document whatever order the instances come in', () => {
    const instances = [instance('a', { ipAddr: '10.1.0.3' }), instance('b', { ipAddr: '10.1.0.1' }), instance('c', { ipAddr: '10.1.0.2' })];
    const one = translateApp('ORDERS', 'orders', instances, options);
    const other = translateApp('ORDERS', 'orders', [...instances].reverse(), options);
    expect(JSON.stringify(one.service)).toBe(JSON.stringify(other.service));
  });

  it('uses the service port and protocol the source is given, and the registry name in the id', () => {
    const { service } = translateApp('ORDERS', 'orders', [instance('a')], { ...options, registry: 'prod', servicePort: 8080, protocol: 'tcp' });
    expect(service!.id).toBe('orders.prod.eureka');
    expect(service!.ports).toEqual([{ name: 'tcp', port: 8080, protocol: 'tcp' }]);
  });
});
