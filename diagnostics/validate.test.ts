import { describe, expect, it } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { renderValidation, validateSources } from './validate.js';

const examples = new URL('../common/contract/examples/', import.meta.url);

describe('flb validate', () => {
  it('finds every example of the contract valid, each read as its kind', () => {
    const sources = readdirSync(examples).map((name) => ({ name, text: readFileSync(new URL(name, examples), 'utf8') }));
    const results = validateSources(sources);
    expect(results.map((r) => [r.source, r.kind, r.problems])).toEqual([
      ['interception.json', 'interception', []],
      ['mesh.json', 'Mesh', []],
      ['service-eureka.json', 'Service', []],
      ['service-kubernetes.json', 'Service', []],
      ['sidecar-vm-bgp.json', 'Sidecar', []],
      ['sidecar.json', 'Sidecar', []],
    ]);
    expect(renderValidation(results).split('\n').at(-2)).toBe('6 documents, all valid');
  });

  it('names every problem of a document with its field and the line the text has it on', () => {
    const text = [
      'apiVersion: flb.flomesh.io/v1alpha1',
      'kind: Mesh',
      'name: flb',
      'proxyUid: 0',
      'ports:',
      '  admin: 15001',
      'vipRanges: [240.240.0.0/33]',
      '',
    ].join('\n');
    const [result] = validateSources([{ name: 'mesh.yaml', text }]);
    expect(result!.problems).toEqual([
      { field: 'ports.outbound', message: 'port 15001 is also used for admin', line: 5 },
      { field: 'proxyUid', message: 'must not be root (0)', line: 4 },
      { field: 'vipRanges[0]', message: 'must be a CIDR such as 10.0.0.0/8 or fd00::/8', line: 7 },
    ]);
    expect(renderValidation([result!])).toBe(
      [
        'mesh.yaml:5: Mesh flb: ports.outbound: port 15001 is also used for admin',
        'mesh.yaml:4: Mesh flb: proxyUid: must not be root (0)',
        'mesh.yaml:7: Mesh flb: vipRanges[0]: must be a CIDR such as 10.0.0.0/8 or fd00::/8',
        '1 document: 0 valid, 1 with 3 problems',
        '',
      ].join('\n'),
    );
  });

  it('reads every document of a multi-document file, and a missing field is named as required', () => {
    const text = [
      'apiVersion: flb.flomesh.io/v1alpha1',
      'kind: Service',
      'id: orders.shop',
      'name: orders',
      'source: kubernetes',
      'ports: [{port: 80}]',
      '---',
      'apiVersion: flb.flomesh.io/v1alpha1',
      'kind: BridgeConfig',
      'mesh: {file: /etc/flb/mesh.yaml}',
      'sinks: [{kind: repo, url: "https://repo:6060"}]',
      '---',
    ].join('\n');
    const results = validateSources([{ name: 'two.yaml', text }]);
    expect(results.map((r) => [r.document, r.line, r.kind, r.name, r.problems])).toEqual([
      [1, 1, 'Service', 'orders.shop', [{ field: 'namespace', message: 'required for a kubernetes service', line: 1 }]],
      [2, 8, 'BridgeConfig', undefined, [{ field: 'sources', message: 'required, expected array', line: 8 }]],
    ]);
  });

  it('checks services against the VIP ranges of a mesh given alongside, as sidecars would', () => {
    const service = JSON.parse(readFileSync(new URL('service-eureka.json', examples), 'utf8')) as { vips: { address: string }[] };
    const mesh = { apiVersion: 'flb.flomesh.io/v1alpha1', kind: 'Mesh', name: 'flb', vipRanges: ['10.99.0.0/16'] };
    const alone = validateSources([{ name: 'svc.json', text: JSON.stringify(service) }]);
    expect(alone[0]!.problems).toEqual([]);
    const withMesh = validateSources([
      { name: 'mesh.json', text: JSON.stringify(mesh) },
      { name: 'svc.json', text: JSON.stringify(service, null, 2) },
    ]);
    expect(withMesh[1]!.problems).toEqual([
      {
        field: 'vips[0].address',
        message: `mesh-allocated VIP ${service.vips[0]!.address} is outside the mesh VIP ranges (10.99.0.0/16)`,
        line: expect.any(Number),
      },
    ]);
  });

  it("checks the documents a ConfigMap holds (the chart's flb-mesh), naming the key and the line in the file", () => {
    const text = [
      'apiVersion: v1',
      'kind: ConfigMap',
      'metadata: {name: flb-mesh, namespace: flomesh}',
      'data:',
      '  mesh.yaml: |',
      '    apiVersion: flb.flomesh.io/v1alpha1',
      '    kind: Mesh',
      '    name: flb',
      '    interception: {mode: ebpf, excludeInterfaces: [eth1]}',
      '  notes: just text',
      '',
    ].join('\n');
    const [result] = validateSources([{ name: 'cm.yaml', text }]);
    expect(result!.kind).toBe('ConfigMap (Mesh)');
    expect(result!.name).toBe('flomesh/flb-mesh');
    expect(result!.problems).toEqual([
      {
        field: 'data["mesh.yaml"].interception.excludeInterfaces',
        message: expect.stringContaining('cannot be honoured in eBPF mode'),
        line: 9,
      },
    ]);
  });

  it('says which kinds it understands when a document is none of them, and refuses what is not YAML', () => {
    const [deployment, notYaml, empty] = validateSources([
      { name: 'deploy.yaml', text: 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n' },
      { name: 'broken.yaml', text: 'kind: Mesh\nports: [1\n' },
      { name: 'empty.yaml', text: '\n' },
    ]);
    expect(deployment!.problems).toHaveLength(1);
    expect(deployment!.problems[0]!.message).toMatch(
      /^not a contract document \(kind: Deployment, apiVersion apps\/v1\); flb validate understands: Mesh .*BridgeConfig/,
    );
    expect(deployment!.problems[0]!.message).toContain('interception settings');
    expect(notYaml!.problems[0]).toMatchObject({ field: '(document)', message: expect.stringMatching(/^not YAML or JSON: /), line: expect.any(Number) });
    expect(empty!.problems).toEqual([{ field: '(document)', message: 'empty: no document' }]);
  });

  it('refuses a document of ours with the wrong apiVersion, naming the field', () => {
    const [result] = validateSources([{ name: 'm.yaml', text: 'apiVersion: flb.flomesh.io/v1\nkind: Mesh\nname: flb\n' }]);
    expect(result!.problems).toEqual([{ field: 'apiVersion', message: 'Invalid input: expected "flb.flomesh.io/v1alpha1"', line: 1 }]);
  });
});
