import { describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { ContractError, InterceptionSchema, MeshSchema, defaultMesh, parseDocument, serviceSchemaFor } from './index.js';
import { generateJsonSchemas } from './json-schema.js';
import { FLB_MESH_VERSION, MESH_IMAGE } from './version.js';

const here = new URL('.', import.meta.url);
const example = (name: string) => JSON.parse(readFileSync(new URL(`examples/${name}`, here), 'utf8')) as Record<string, unknown>;

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

const EBPF_INTERFACES =
  'cannot be honoured in eBPF mode (connect() is intercepted before a route, and so an interface, is chosen): exclude the destinations by range (excludeOutboundIpRanges) instead, or use mode "iptables" or "cni"';
const MTLS = (mode: string) => `"${mode}" is not available yet: sidecar-to-sidecar mTLS is not built; "disabled" is the only mode for now`;

describe('settings that are not built yet are refused, saying so', () => {
  it('interception.mode ebpf with excludeInterfaces, in mesh.json and in the pod annotation (what eBPF mode cannot honour)', () => {
    const mesh = { ...example('mesh.json'), interception: { mode: 'ebpf', excludeInterfaces: ['eth1'] } };
    expect(issues(() => parseDocument(MeshSchema, mesh, 'mesh.json'))).toEqual([`interception.excludeInterfaces: ${EBPF_INTERFACES}`]);
    const annotation = { ...example('interception.json'), mode: 'ebpf', excludeInterfaces: ['eth1'] };
    expect(issues(() => parseDocument(InterceptionSchema, annotation, 'annotation'))).toEqual([`excludeInterfaces: ${EBPF_INTERFACES}`]);
  });

  it('tls.mode permissive and strict, mesh-wide and per service', () => {
    for (const mode of ['permissive', 'strict']) {
      expect(issues(() => parseDocument(MeshSchema, { ...example('mesh.json'), tls: { mode } }, 'mesh.json'))).toEqual([`tls.mode: ${MTLS(mode)}`]);
      const service = { ...example('service-kubernetes.json'), policy: { tls: { mode } } };
      expect(issues(() => parseDocument(serviceSchemaFor(defaultMesh()), service, 'svc'))).toEqual([`policy.tls.mode: ${MTLS(mode)}`]);
    }
  });

  it('still accepts what is built, and still names an unknown value as unknown', () => {
    for (const mode of ['iptables', 'cni', 'ebpf']) {
      expect(parseDocument(MeshSchema, { ...example('mesh.json'), interception: { mode } }, 'mesh.json').interception.mode).toBe(mode);
      expect(parseDocument(InterceptionSchema, { ...example('interception.json'), mode }, 'annotation').mode).toBe(mode);
    }
    // Interface exclusions stay honoured where rules are per interface.
    const cni = { ...example('mesh.json'), interception: { mode: 'cni', excludeInterfaces: ['eth1'] } };
    expect(parseDocument(MeshSchema, cni, 'mesh.json').interception.excludeInterfaces).toEqual(['eth1']);
    expect(parseDocument(MeshSchema, { ...example('mesh.json'), tls: { mode: 'disabled' } }, 'mesh.json').tls.mode).toBe('disabled');
    expect(issues(() => parseDocument(MeshSchema, { ...example('mesh.json'), interception: { mode: 'nftables' } }, 'mesh.json'))).toEqual([
      'interception.mode: Invalid option: expected one of "iptables"|"cni"|"ebpf"',
    ]);
  });

  it('keep the reserved values in the JSON Schemas, described as refused (and ebpf as built)', () => {
    const mesh = JSON.parse(generateJsonSchemas()['mesh.schema.json']!) as {
      properties: { interception: { properties: { mode: { enum: string[]; description: string } } }; tls: { properties: { mode: { description: string } } } };
    };
    expect(mesh.properties.interception.properties.mode.enum).toEqual(['iptables', 'cni', 'ebpf']);
    expect(mesh.properties.interception.properties.mode.description).toContain('ebpf (the node agent registers the pod');
    expect(mesh.properties.tls.properties.mode.description).toContain('refused until mTLS is built');
  });
});

describe('default images', () => {
  it("are this release's, never latest", () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', here), 'utf8')) as { version: string };
    expect(FLB_MESH_VERSION).toBe(pkg.version);
    expect(MESH_IMAGE).toBe(`flomesh/flb-mesh:${pkg.version}`);
    const mesh = defaultMesh();
    expect([mesh.sidecar.image, mesh.init.image]).toEqual([MESH_IMAGE, MESH_IMAGE]);
  });
});
