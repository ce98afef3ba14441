import { API_VERSION } from '../../../common/contract/primitives.js';

/** Documents as the control plane publishes them, for config tests (and any sidecar test that wants a state). */
export function meshDoc(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { apiVersion: API_VERSION, kind: 'Mesh', name: 'flb', vipRanges: ['240.240.0.0/16'], ...extra };
}

export function sidecarDoc(id = 'pod.shop.w', extra: Record<string, unknown> = {}): Record<string, unknown> {
  const [, namespace, name] = /^pod\.([^.]+)\.(.+)$/.exec(id) ?? [];
  return {
    apiVersion: API_VERSION,
    kind: 'Sidecar',
    id,
    mesh: 'flb',
    identity: namespace && name ? { kind: 'pod', namespace, name, serviceAccount: 'default' } : { kind: 'vm', name: id.slice(3) },
    services: ['*'],
    ...extra,
  };
}

/** A static service `<name>.static` on a mesh VIP, port 80, with endpoints 10.0.0.1.. on 8080. */
export function serviceDoc(
  name: string,
  options: { vip?: string; port?: number; endpoints?: number; extra?: Record<string, unknown> } = {},
): Record<string, unknown> {
  return {
    apiVersion: API_VERSION,
    kind: 'Service',
    id: `${name}.static`,
    name,
    source: 'static',
    vips: [{ address: options.vip ?? '240.240.0.1', allocation: 'mesh' }],
    ports: [{ port: options.port ?? 80, protocol: 'http' }],
    endpoints: Array.from({ length: options.endpoints ?? 1 }, (_, i) => ({ address: `10.0.0.${i + 1}`, port: 8080 })),
    ...options.extra,
  };
}

export const json = (doc: unknown): Buffer => Buffer.from(JSON.stringify(doc));

/** A codebase's files as the repo worker hands them over (paths with a leading `/`). */
export function codebase(services: Record<string, unknown>[], mesh = meshDoc(), sidecar = sidecarDoc()): Map<string, Buffer> {
  const files = new Map<string, Buffer>([
    ['/mesh.json', json(mesh)],
    ['/sidecar.json', json(sidecar)],
  ]);
  for (const svc of services) files.set(`/services/${String(svc.id)}.json`, json(svc));
  return files;
}
