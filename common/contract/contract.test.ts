import { describe, expect, it } from '@jest/globals';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ContractError,
  InterceptionSchema,
  MeshSchema,
  ServiceSchema,
  SidecarConfigSchema,
  defaultMesh,
  parseDocument,
  parseSidecarId,
  serviceId,
  serviceSchemaFor,
  sidecarId,
  sidecarIdFromEnv,
} from './index.js';
import { generateJsonSchemas } from './json-schema.js';

const here = new URL('.', import.meta.url).pathname;
const example = (name: string) => JSON.parse(readFileSync(join(here, 'examples', name), 'utf8')) as Record<string, unknown>;
const schemaFor = (file: string) =>
  file.startsWith('mesh')
    ? MeshSchema
    : file.startsWith('service')
      ? serviceSchemaFor(defaultMesh())
      : file.startsWith('sidecar')
        ? SidecarConfigSchema
        : InterceptionSchema;

/** The ContractError's issues as `field: message` lines. */
function issues(fn: () => unknown): string[] {
  try {
    fn();
  } catch (error) {
    if (error instanceof ContractError) return error.issues.map((i) => `${i.field}: ${i.message}`);
    throw error;
  }
  throw new Error('expected a ContractError, but the document was accepted');
}

describe('contract examples', () => {
  const files = readdirSync(join(here, 'examples')).filter((f) => f.endsWith('.json'));
  it('has an example of every document', () => {
    expect(files).toEqual(expect.arrayContaining(['mesh.json', 'service-kubernetes.json', 'service-eureka.json', 'sidecar.json', 'interception.json']));
  });
  it.each(files)('%s is valid', (file) => {
    expect(() => parseDocument(schemaFor(file), example(file), file)).not.toThrow();
  });
});

describe('mesh.json', () => {
  it('fills the defaults users see', () => {
    const mesh = defaultMesh();
    expect(mesh.ports).toEqual({
      admin: 15000,
      outbound: 15001,
      inbound: 15003,
      metrics: 15010,
      dns: 15053,
      livenessProbe: 15901,
      readinessProbe: 15902,
      startupProbe: 15903,
    });
    expect(mesh.proxyUid).toBe(1500);
    expect(mesh.vipRanges).toEqual(['240.240.0.0/16']);
    expect(mesh.interception.mode).toBe('iptables');
  });
  it('rejects a wrong type, naming the field', () => {
    expect(issues(() => parseDocument(MeshSchema, { ...example('mesh.json'), proxyUid: '1500' }, 'mesh.json'))).toEqual([
      'proxyUid: Invalid input: expected number, received string',
    ]);
  });
  it('rejects a missing field', () => {
    const { name: _name, ...rest } = example('mesh.json');
    expect(issues(() => parseDocument(MeshSchema, rest, 'mesh.json'))).toEqual(['name: required, expected string']);
  });
  it('rejects two listeners on one port', () => {
    expect(issues(() => parseDocument(MeshSchema, { ...example('mesh.json'), ports: { admin: 15001 } }, 'mesh.json'))).toEqual([
      'ports.outbound: port 15001 is also used for admin',
    ]);
  });
  it('rejects a bad CIDR and a root proxy UID', () => {
    const bad = { ...example('mesh.json'), vipRanges: ['240.240.0.0/33'], proxyUid: 0 };
    expect(issues(() => parseDocument(MeshSchema, bad, 'mesh.json')).sort()).toEqual([
      'proxyUid: must not be root (0)',
      'vipRanges[0]: must be a CIDR such as 10.0.0.0/8 or fd00::/8',
    ]);
  });
  it('names the document in the error message', () => {
    expect(() => parseDocument(MeshSchema, {}, '/flb/mesh/mesh.json')).toThrow(/^invalid \/flb\/mesh\/mesh.json: apiVersion: /);
  });
});

describe('catalog service', () => {
  const schema = serviceSchemaFor(defaultMesh());
  const kube = example('service-kubernetes.json');
  const eureka = example('service-eureka.json');
  const withEndpoints = (svc: Record<string, unknown>, endpoints: unknown[]) => ({ ...svc, endpoints });

  it('rejects a bad IP address on an endpoint', () => {
    expect(issues(() => parseDocument(schema, withEndpoints(kube, [{ address: '10.244.1.300', port: 8080 }]), 'svc'))).toEqual([
      'endpoints[0].address: must be an IPv4 or IPv6 address',
    ]);
  });
  it('rejects a duplicate endpoint', () => {
    const ep = { address: '10.244.1.5', port: 8080 };
    expect(issues(() => parseDocument(schema, withEndpoints(kube, [ep, { address: '10.244.1.6', port: 8080 }, ep]), 'svc'))).toEqual([
      'endpoints[2]: duplicate endpoint 10.244.1.5:8080 (same as endpoints[0])',
    ]);
  });
  it('accepts the same address on two ports (two endpoints)', () => {
    expect(() =>
      parseDocument(
        schema,
        withEndpoints(kube, [
          { address: '10.244.1.5', port: 8080 },
          { address: '10.244.1.5', port: 8081 },
        ]),
        'svc',
      ),
    ).not.toThrow();
  });
  it('rejects a mesh-allocated VIP outside the mesh range', () => {
    expect(issues(() => parseDocument(schema, { ...eureka, vips: [{ address: '10.1.0.17', allocation: 'mesh' }] }, 'svc'))).toEqual([
      'vips[0].address: mesh-allocated VIP 10.1.0.17 is outside the mesh VIP ranges (240.240.0.0/16)',
    ]);
  });
  it('keeps a Kubernetes service on its ClusterIP, outside the mesh range', () => {
    const parsed = parseDocument(schema, kube, 'svc');
    expect(parsed.vips).toEqual([{ address: '10.96.14.20', allocation: 'cluster-ip' }]);
  });
  it('honours a mesh with its own VIP range', () => {
    const custom = serviceSchemaFor({ vipRanges: ['10.1.0.0/16'] });
    expect(() => parseDocument(custom, { ...eureka, vips: [{ address: '10.1.0.17', allocation: 'mesh' }] }, 'svc')).not.toThrow();
  });
  it('does not give a registry service a ClusterIP', () => {
    expect(issues(() => parseDocument(schema, { ...eureka, vips: [{ address: '10.96.0.9', allocation: 'cluster-ip' }] }, 'svc'))).toEqual([
      'vips[0].allocation: only Kubernetes services have a ClusterIP; a eureka service gets a mesh VIP',
    ]);
  });
  it('takes directDial on a registry service and refuses it on a Kubernetes one, naming why', () => {
    expect(parseDocument(schema, eureka, 'svc').directDial).toBe('keep');
    expect(parseDocument(schema, { ...eureka, directDial: 'rebalance' }, 'svc').directDial).toBe('rebalance');
    expect(parseDocument(schema, { ...eureka, directDial: undefined }, 'svc').directDial).toBeUndefined();
    expect(issues(() => parseDocument(schema, { ...eureka, directDial: 'sometimes' }, 'svc'))).toEqual([expect.stringMatching(/^directDial: /)]);
    expect(issues(() => parseDocument(schema, { ...kube, directDial: 'keep' }, 'svc'))).toEqual([
      "directDial: only registry and static services take direct dials; a kubernetes service's pod addresses are not routed as the service",
    ]);
  });
  it('rejects a missing field and an unknown source', () => {
    const { ports: _ports, ...noPorts } = kube;
    expect(issues(() => parseDocument(schema, { ...noPorts, source: 'zookeeper' }, 'svc')).sort()).toEqual([
      'ports: required, expected array',
      'source: must be kubernetes, consul, eureka, static or cluster:NAME',
    ]);
  });
  it('requires what to hash on for ring-hash', () => {
    expect(issues(() => parseDocument(schema, { ...kube, policy: { loadBalancer: { algorithm: 'ring-hash' } } }, 'svc'))).toEqual([
      'policy.loadBalancer.hash: required for ring-hash: say what to hash on',
    ]);
  });
  it('requires a namespace for a Kubernetes service and names for multi-port services', () => {
    const { namespace: _ns, ...noNamespace } = kube;
    expect(issues(() => parseDocument(schema, { ...noNamespace, ports: [{ port: 80 }, { port: 81 }] }, 'svc')).sort()).toEqual([
      'namespace: required for a kubernetes service',
      'ports: every port of a multi-port service needs a name',
    ]);
  });
  it('rejects an out-of-range port and a bad hostname', () => {
    expect(issues(() => parseDocument(schema, { ...kube, hostnames: ['Orders_Svc'], ports: [{ port: 70000 }] }, 'svc')).sort()).toEqual([
      'hostnames[0]: must be a lowercase DNS name such as orders.shop.svc.cluster.local',
      'ports[0].port: must be a port number, 1-65535',
    ]);
  });
  it('makes ids that cannot collide across sources', () => {
    expect(serviceId({ source: 'kubernetes', name: 'orders', namespace: 'shop' })).toBe('orders.shop');
    expect(serviceId({ source: 'cluster:west', name: 'orders', namespace: 'shop' })).toBe('orders.shop.west');
    expect(serviceId({ source: 'eureka', name: 'ORDER_SERVICE', registry: 'prod' })).toBe('order-service.prod.eureka');
    expect(serviceId({ source: 'consul', name: 'orders', registry: 'dc1' })).toBe('orders.dc1.consul');
    expect(() =>
      parseDocument(ServiceSchema, { ...eureka, id: serviceId({ source: 'eureka', name: 'ORDER_SERVICE', registry: 'prod' }) }, 'svc'),
    ).not.toThrow();
  });
});

describe('sidecar.json', () => {
  it('rejects an id that is neither a pod nor a VM', () => {
    expect(issues(() => parseDocument(SidecarConfigSchema, { ...example('sidecar.json'), id: 'orders' }, 'sidecar.json'))).toEqual([
      'id: must be a sidecar id such as pod.shop.orders-7d9f-x2x4 or vm.billing-1',
    ]);
  });
  it('checks the BGP section', () => {
    const vm = example('sidecar-vm-bgp.json');
    const bgp = { ...(vm.bgp as object), routerId: '::1', holdTimeSeconds: 2 };
    expect(issues(() => parseDocument(SidecarConfigSchema, { ...vm, bgp }, 'sidecar.json')).sort()).toEqual([
      'bgp.holdTimeSeconds: must be 0 or at least 3 (RFC 4271)',
      'bgp.routerId: must be an IPv4 address (BGP router ids are 32-bit)',
    ]);
  });
  it('refuses a bad AS, community, next hop or peer address in the BGP section, naming the field', () => {
    const vm = example('sidecar-vm-bgp.json');
    const good = vm.bgp as { peers: object[]; vips: object[] };
    const bgp = {
      ...good,
      localAs: 0,
      peers: [{ ...good.peers[0], address: '192.168.10.300', nextHop: { ipv4: '2001:db8::1' } }],
      vips: [{ ...good.vips[0], prefix: '198.51.100.10/33', communities: ['65536:1'] }],
    };
    expect(issues(() => parseDocument(SidecarConfigSchema, { ...vm, bgp }, 'sidecar.json')).sort()).toEqual([
      'bgp.localAs: must be an AS number, 1-4294967295',
      'bgp.peers[0].address: must be an IPv4 or IPv6 address',
      'bgp.peers[0].nextHop.ipv4: must be an IPv4 address',
      'bgp.vips[0].communities[0]: must be ASN:VALUE, each 0-65535 (RFC 1997)',
      'bgp.vips[0].prefix: must be a CIDR such as 10.0.0.0/8 or fd00::/8',
    ]);
    const parsed = parseDocument(SidecarConfigSchema, vm, 'sidecar.json').bgp!;
    expect(parsed).toMatchObject({ connectRetrySeconds: 5, drainSeconds: 5, peers: [{ port: 179, addressFamilies: ['ipv4-unicast', 'ipv6-unicast'] }] });
  });
});

describe('interception annotation', () => {
  it('fills ports and the sidecar ports that are never captured', () => {
    const parsed = parseDocument(InterceptionSchema, example('interception.json'), 'annotation');
    expect(parsed.outboundPort).toBe(15001);
    expect(parsed.sidecarPorts).toEqual(expect.arrayContaining([15000, 15001, 15003, 15010, 15053, 15901, 15902, 15903]));
  });
  it('rejects an interface name that could smuggle text into iptables rules', () => {
    expect(issues(() => parseDocument(InterceptionSchema, { ...example('interception.json'), excludeInterfaces: ['eth0 -j ACCEPT'] }, 'annotation'))).toEqual([
      'excludeInterfaces[0]: must be a network interface name (1-15 letters, digits or _.@:+-)',
    ]);
  });

  it('rejects invalid exclusion lists', () => {
    const bad = { ...example('interception.json'), excludeOutboundPorts: [0], excludeOutboundIpRanges: ['10.0.0.0/8', 'nope'] };
    expect(issues(() => parseDocument(InterceptionSchema, bad, 'annotation')).sort()).toEqual([
      'excludeOutboundIpRanges[1]: must be a CIDR such as 10.0.0.0/8 or fd00::/8',
      'excludeOutboundPorts[0]: must be a port number, 1-65535',
    ]);
  });
});

describe('sidecar ids', () => {
  it('derives a pod id at run time from the downward API', () => {
    expect(sidecarIdFromEnv({ POD_NAMESPACE: 'shop', POD_NAME: 'orders-7d9f8c6b5-x2x4q' })).toBe('pod.shop.orders-7d9f8c6b5-x2x4q');
    expect(sidecarIdFromEnv({ FLB_SIDECAR_ID: 'vm.billing-1', POD_NAME: 'x' })).toBe('vm.billing-1');
    expect(() => sidecarIdFromEnv({})).toThrow(/POD_NAMESPACE and POD_NAME/);
  });
  it('round-trips pod names with dots', () => {
    const id = sidecarId({ kind: 'pod', namespace: 'shop', name: 'web.v2-0' });
    expect(parseSidecarId(id)).toEqual({ kind: 'pod', namespace: 'shop', name: 'web.v2-0' });
  });
});

describe('generated JSON Schemas', () => {
  const dir = join(here, 'schema');
  const generated = generateJsonSchemas();
  if (process.env.UPDATE_GOLDEN === '1') {
    for (const [file, text] of Object.entries(generated)) writeFileSync(join(dir, file), text);
  }
  it('are up to date (UPDATE_GOLDEN=1 npm run test:unit regenerates them)', () => {
    const onDisk = Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
    expect(onDisk).toEqual(generated);
  });
  it('describe the defaults a non-TypeScript sidecar needs', () => {
    const mesh = JSON.parse(generated['mesh.schema.json']!) as { required: string[]; properties: Record<string, unknown> };
    expect(mesh.required).toEqual(['apiVersion', 'kind', 'name']);
    expect(JSON.stringify(mesh.properties.ports)).toContain('15001');
  });
});
