import { describe, expect, it } from '@jest/globals';
import YAML from 'yaml';
import { defaultMesh, SidecarConfigSchema } from '../../../common/contract/index.js';
import { DEFAULT_POLICY } from './policy.js';
import { bgpConfigMapRecord, podRecord, serviceRecord, sliceRecord, type PodRecord, type ServiceRecord, type SliceRecord } from './records.js';
import { bgpSectionFor, portProtocol, translatePod, translateService } from './translate.js';

const mesh = defaultMesh();

const service = (spec: Record<string, unknown>, metadata: Record<string, unknown> = {}): ServiceRecord =>
  serviceRecord({
    metadata: { name: 'orders', namespace: 'shop', uid: 'u-svc', ...metadata },
    spec: { clusterIP: '10.96.0.10', clusterIPs: ['10.96.0.10'], ...spec },
  })!;

const slice = (name: string, ports: unknown[], endpoints: unknown[], addressType = 'IPv4'): SliceRecord =>
  sliceRecord({ metadata: { name, namespace: 'shop', labels: { 'kubernetes.io/service-name': 'orders' } }, addressType, ports, endpoints })!;

const endpoint = (address: string, conditions: Record<string, boolean> = { ready: true }, extra: Record<string, unknown> = {}) => ({
  addresses: [address],
  conditions,
  zone: 'zone-a',
  nodeName: 'node-a',
  targetRef: { kind: 'Pod', name: `orders-${address.split('.').at(-1)}` },
  ...extra,
});

describe('a Kubernetes Service in the catalog', () => {
  it('keeps its ClusterIP as the VIP, lists ready endpoints with their zone and pod, and protocols from appProtocol', () => {
    const svc = service({ ports: [{ name: 'http', port: 80, targetPort: 'web', appProtocol: 'http' }] });
    const { service: out, problems } = translateService(
      svc,
      [slice('orders-a', [{ name: 'http', port: 8080 }], [endpoint('10.244.1.5'), endpoint('10.244.1.6', { ready: false, serving: false })])],
      DEFAULT_POLICY,
      mesh,
    );
    expect(problems).toEqual([]);
    expect(out).toMatchObject({
      id: 'orders.shop',
      name: 'orders',
      namespace: 'shop',
      source: 'kubernetes',
      vips: [{ address: '10.96.0.10', allocation: 'cluster-ip' }],
      ports: [{ name: 'http', port: 80, protocol: 'http' }],
    });
    expect(out!.endpoints).toEqual([
      expect.objectContaining({
        address: '10.244.1.5',
        port: 8080,
        healthy: true,
        zone: 'zone-a',
        cluster: 'local',
        metadata: { pod: 'orders-5', node: 'node-a' },
      }),
      expect.objectContaining({ address: '10.244.1.6', port: 8080, healthy: false }),
    ]);
  });

  it('resolves each port per endpoint for a multi-port Service (named target ports differ per pod)', () => {
    const svc = service({
      ports: [
        { name: 'http', port: 80, targetPort: 'web' },
        { name: 'grpc', port: 9090, targetPort: 9090, appProtocol: 'grpc' },
      ],
    });
    const { service: out } = translateService(
      svc,
      [
        slice(
          'a',
          [
            { name: 'http', port: 8080 },
            { name: 'grpc', port: 9090 },
          ],
          [endpoint('10.244.1.5')],
        ),
        slice(
          'b',
          [
            { name: 'http', port: 8081 },
            { name: 'grpc', port: 9090 },
          ],
          [endpoint('10.244.2.7')],
        ),
      ],
      DEFAULT_POLICY,
      mesh,
    );
    expect(out!.endpoints.map((e) => [e.address, e.port, e.ports])).toEqual([
      ['10.244.1.5', 8080, { http: 8080, grpc: 9090 }],
      ['10.244.2.7', 8081, { http: 8081, grpc: 9090 }],
    ]);
    expect(out!.ports.map((p) => p.protocol)).toEqual(['http', 'grpc']);
  });

  it('reports a slice port no Service port has, and a slice without addresses adds nothing', () => {
    const svc = service({ ports: [{ port: 80, targetPort: 8080 }] });
    const { service: out, problems } = translateService(
      svc,
      [
        slice(
          'a',
          [
            { name: '', port: 8080 },
            { name: 'metrics', port: 9102 },
          ],
          [endpoint('10.244.1.5')],
        ),
        slice('b', [{ name: '', port: 8080 }], []),
      ],
      DEFAULT_POLICY,
      mesh,
    );
    expect(problems).toEqual([expect.stringMatching(/EndpointSlice a has a port named "metrics" that Service orders does not have/)]);
    expect(out!.endpoints.map((e) => e.address)).toEqual(['10.244.1.5']);
  });

  it('is headless without a VIP, and drains to terminating endpoints that still serve when none is ready', () => {
    const svc = service({ clusterIP: 'None', clusterIPs: ['None'], ports: [{ port: 80, targetPort: 8080 }] });
    const { service: out } = translateService(
      svc,
      [
        slice(
          'a',
          [{ name: '', port: 8080 }],
          [
            endpoint('10.244.1.5', { ready: false, serving: true, terminating: true }),
            endpoint('10.244.1.6', { ready: false, serving: false, terminating: true }),
          ],
        ),
      ],
      DEFAULT_POLICY,
      mesh,
    );
    expect(out!.vips).toEqual([]);
    expect(out!.endpoints.map((e) => [e.address, e.healthy])).toEqual([
      ['10.244.1.5', true],
      ['10.244.1.6', false],
    ]);
  });

  it('leaves out ExternalName Services, UDP-only ones and those the bridge wrote from a registry', () => {
    expect(translateService(service({ type: 'ExternalName', ports: [{ port: 80 }] }), [], DEFAULT_POLICY, mesh).skipped).toMatch(/ExternalName/);
    expect(translateService(service({ ports: [{ port: 53, protocol: 'UDP' }] }), [], DEFAULT_POLICY, mesh).skipped).toMatch(/no TCP port/);
    expect(translateService(service({ ports: [{ port: 80 }] }, { labels: { 'flomesh.io/origin': 'consul' } }), [], DEFAULT_POLICY, mesh).skipped).toMatch(
      /consul/,
    );
  });

  it('reads a port protocol from appProtocol first, then the name as Istio does, else TCP', () => {
    expect(portProtocol({ appProtocol: 'kubernetes.io/h2c' })).toBe('http2');
    expect(portProtocol({ appProtocol: 'https', name: 'http-web' })).toBe('tcp');
    expect(portProtocol({ name: 'http-web' })).toBe('http');
    expect(portProtocol({ name: 'grpc' })).toBe('grpc');
    expect(portProtocol({ name: 'http2-api' })).toBe('http2');
    expect(portProtocol({ name: 'httpbin' })).toBe('tcp');
  });

  it('never throws on objects of the wrong shape', () => {
    expect(serviceRecord({ metadata: { name: 'x', namespace: 'y' }, spec: { ports: 'nope', clusterIPs: 7 } })).toMatchObject({ ports: [], clusterIPs: [] });
    expect(
      sliceRecord({ metadata: { name: 'x', namespace: 'y', labels: { 'kubernetes.io/service-name': 's' } }, endpoints: [{ addresses: 'no' }, null] })!
        .endpoints,
    ).toEqual([]);
    expect(podRecord({ metadata: { name: 'p' } })).toBeUndefined();
  });
});

describe("an injected pod's sidecar.json", () => {
  const pod: PodRecord = podRecord({
    metadata: { name: 'orders-7d9f-x2x4', namespace: 'shop', uid: 'u-pod', labels: { app: 'orders' } },
    spec: {
      nodeName: 'node-a',
      serviceAccountName: 'orders',
      containers: [
        {
          name: 'app',
          ports: [
            { name: 'web', containerPort: 8080 },
            { name: 'admin', containerPort: 9000 },
            { containerPort: 5353, protocol: 'UDP' },
          ],
        },
      ],
    },
  })!;

  it('names the pod, its zone and search list, and inbound ports from the Services that select it', () => {
    const selecting = [service({ selector: { app: 'orders' }, ports: [{ name: 'http', port: 80, targetPort: 'web' }] })];
    const { config, problems } = translatePod(pod, selecting, 'zone-a', mesh);
    expect(problems).toEqual([]);
    expect(config).toMatchObject({
      id: 'pod.shop.orders-7d9f-x2x4',
      mesh: 'flb',
      identity: { kind: 'pod', namespace: 'shop', name: 'orders-7d9f-x2x4', serviceAccount: 'orders', node: 'node-a' },
      services: ['*'],
      locality: { zone: 'zone-a', cluster: 'local' },
      dns: { searchDomains: ['shop.svc.cluster.local', 'svc.cluster.local', 'cluster.local'] },
      inbound: {
        ports: [
          { port: 8080, protocol: 'http', name: 'http' },
          { port: 9000, protocol: 'tcp', name: 'admin' },
        ],
      },
    });
  });

  it('reports a Service that targets a port name the pod does not have', () => {
    const { problems } = translatePod(pod, [service({ selector: { app: 'orders' }, ports: [{ port: 80, targetPort: 'nope' }] })], undefined, mesh);
    expect(problems).toEqual([expect.stringMatching(/targets "nope", which pod orders-7d9f-x2x4 has no container port named/)]);
  });
});

describe("a pod's BGP section from the ConfigMap it names", () => {
  const bgpPod = (annotations: Record<string, string>): PodRecord =>
    podRecord({ metadata: { name: 'vip-0', namespace: 'shop', uid: 'u-pod', annotations }, spec: { containers: [{ name: 'web' }] } })!;
  const configMap = (data: Record<string, string>, name = 'edge-bgp') => bgpConfigMapRecord({ metadata: { name, namespace: 'shop' }, data });
  const yaml = [
    'localAs: 65001',
    'routerId: 192.0.2.10',
    'peers: [{ address: 192.0.2.1, remoteAs: 65000 }]',
    'vips:',
    '  - prefix: 10.0.0.100/32',
    '    healthCheck: { protocol: readiness }',
    '  - prefix: 2001:db8::100/128',
    '    healthCheck: { protocol: readiness }',
  ].join('\n');
  const named = { 'flomesh.io/bgp-config': 'edge-bgp', 'flomesh.io/bgp-vips': '10.0.0.100, 2001:DB8:0::100/128' };

  it('puts the bgp.yaml or bgp.json section in sidecar.json, as the contract reads it', () => {
    for (const cm of [configMap({ 'bgp.yaml': yaml }), configMap({ 'bgp.json': JSON.stringify(YAML.parse(yaml)) })]) {
      const { bgp, problems } = bgpSectionFor(bgpPod(named), cm);
      expect(problems).toEqual([]);
      expect(bgp).toMatchObject({ localAs: 65001, peers: [{ address: '192.0.2.1', remoteAs: 65000, port: 179 }], vips: [{ prefix: '10.0.0.100/32' }, {}] });
      const { config } = translatePod(bgpPod(named), [], undefined, mesh, bgp);
      expect(SidecarConfigSchema.parse(config).bgp).toEqual(bgp);
    }
    expect(translatePod(bgpPod({}), [], undefined, mesh).config).not.toHaveProperty('bgp');
  });

  it('refuses a bad section naming the ConfigMap, its key and every bad field', () => {
    const bad = yaml.replace('localAs: 65001', 'localAs: 0').replace('address: 192.0.2.1', 'address: router-1');
    expect(bgpSectionFor(bgpPod(named), configMap({ 'bgp.yaml': bad }))).toEqual({
      problems: [
        'ConfigMap shop/edge-bgp (annotation flomesh.io/bgp-config) key bgp.yaml: localAs: must be an AS number, 1-4294967295',
        'ConfigMap shop/edge-bgp (annotation flomesh.io/bgp-config) key bgp.yaml: peers[0].address: must be an IPv4 or IPv6 address',
      ],
    });
    // Valid for the schema, refused by the sidecar: refused here too.
    expect(bgpSectionFor(bgpPod(named), configMap({ 'bgp.yaml': yaml.replace('remoteAs: 65000 }', 'remoteAs: 65000, passwordRef: bgp-md5 }') }))).toEqual({
      problems: ['ConfigMap shop/edge-bgp (annotation flomesh.io/bgp-config) key bgp.yaml: peers[0].passwordRef: TCP MD5 (RFC 2385) is not built yet'],
    });
    expect(bgpSectionFor(bgpPod(named), configMap({ 'bgp.yaml': 'peers: [' })).problems[0]).toMatch(
      /^ConfigMap shop\/edge-bgp \(annotation flomesh.io\/bgp-config\) key bgp.yaml is neither YAML nor JSON: /,
    );
  });

  it('says when the ConfigMap is missing, holds both keys, or the annotation names none', () => {
    expect(bgpSectionFor(bgpPod(named), undefined).problems).toEqual([
      'ConfigMap shop/edge-bgp (annotation flomesh.io/bgp-config) does not exist or has neither a bgp.yaml nor a bgp.json key',
    ]);
    expect(configMap({ 'other.yaml': 'x: 1' })).toBeUndefined();
    expect(bgpSectionFor(bgpPod(named), configMap({ 'bgp.yaml': yaml, 'bgp.json': '{}' })).problems).toEqual([
      'ConfigMap shop/edge-bgp (annotation flomesh.io/bgp-config) has both bgp.yaml and bgp.json: keep one',
    ]);
    expect(bgpSectionFor(bgpPod({ 'flomesh.io/bgp-config': 'Edge_BGP' }), undefined).problems).toEqual([
      'annotation flomesh.io/bgp-config: "Edge_BGP" is not a ConfigMap name',
    ]);
  });

  it("names the VIPs it announces that flomesh.io/bgp-vips leaves off the pod's lo, and still publishes the section", () => {
    const { bgp, problems } = bgpSectionFor(
      bgpPod({ 'flomesh.io/bgp-config': 'edge-bgp', 'flomesh.io/bgp-vips': '10.0.0.100/32' }),
      configMap({ 'bgp.yaml': yaml }),
    );
    expect(bgp).toBeDefined();
    expect(problems).toEqual([
      "ConfigMap shop/edge-bgp (annotation flomesh.io/bgp-config) key bgp.yaml announces 2001:db8::100/128, which annotation flomesh.io/bgp-vips does not list: not on the pod's lo, so traffic to it will not reach the app (add it to the annotation and recreate the pod)",
    ]);
  });
});
