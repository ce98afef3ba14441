// What the Consul sink registers for a catalog service, and how it compares with what Consul holds.
// Pure, so every rule is tested without a Consul. One Consul service instance per endpoint, on the
// sink's synthetic node (consul-k8s's k8s-sync node), at the endpoint's own address (a pod IP: see
// registry-bridge/README.md, Sinks, on flat networks), with a readiness check whose status is the
// endpoint's health. Everything written carries its origin in Service.Meta, which the Consul source
// never reads back (sources/consul/translate.ts, ORIGIN_META).
import { createHash } from 'node:crypto';
import type { ConsulSinkConfig, Service } from '../../../common/contract/index.js';

/** Service.Meta keys the sink writes. `flomesh-origin` is what the Consul source skips. */
export const META = {
  origin: 'flomesh-origin',
  /** Which bridge sink wrote it: only instances with this sink's value are ever changed or removed. */
  writer: 'flomesh-writer',
  catalogId: 'flomesh-service',
  externalSource: 'external-source',
  namespace: 'external-k8s-ns',
} as const;

export type CheckStatus = 'passing' | 'critical';

export interface Registration {
  /** The Consul service ID, unique on the node. */
  id: string;
  catalogId: string;
  name: string;
  address: string;
  port: number;
  tags: string[];
  meta: Record<string, string>;
  status: CheckStatus;
}

/** What Consul holds of one instance, read back from the node. */
export interface Held {
  id: string;
  name: string;
  address: string;
  port: number;
  tags: string[];
  meta: Record<string, string>;
  /** Undefined: no readiness check of ours on it. */
  status?: string;
}

export type SinkNaming = Pick<ConsulSinkConfig, 'servicePrefix' | 'namespaceSuffix' | 'tags'>;

/** Consul's limits on Service.Meta (agent/structs: 64 pairs, keys of 128, values of 512, no `consul-` prefix on keys). */
const META_VALUE_MAX = 512;

export function consulName(service: Service, naming: SinkNaming): string {
  const suffix = naming.namespaceSuffix && service.source === 'kubernetes' && service.namespace ? `-${service.namespace}` : '';
  return `${naming.servicePrefix}${service.name}${suffix}`;
}

/**
 * A service ID for one endpoint: the catalog id, the address and port. Over Consul's practical
 * length (IDs go into URLs and check IDs) it is shortened with a hash of the whole, as names are.
 */
export function instanceId(catalogId: string, address: string, port: number): string {
  const id = `${catalogId}-${address.replace(/[.:]/g, '-')}-${port}`;
  if (id.length <= 200) return id;
  return `${id.slice(0, 186)}-${createHash('sha256').update(id).digest('hex').slice(0, 12)}`;
}

/**
 * The node of `count` (0 to count - 1) a catalog service's instances go to: a hash of its catalog
 * id, so a restart, a new leader or another replica picks the same one, and a Service's instances
 * stay together.
 */
export function nodeIndexOf(catalogId: string, count: number): number {
  return createHash('sha256').update(catalogId).digest().readUInt32BE(0) % count;
}

/** The name of node `index`: the first keeps the configured name (one node is the layout before `nodes`). */
export const nodeNameOf = (prefix: string, index: number) => (index === 0 ? prefix : `${prefix}-${index}`);

export const checkIdOf = (serviceId: string) => `${serviceId}:readiness`;

/** The instances to register for a service, or why none can be (a name Consul would refuse). */
export function registrationsOf(service: Service, naming: SinkNaming, writer: string): { registrations: Registration[]; refused?: string } {
  const name = consulName(service, naming);
  if (name.length > 253 || /[/\\?#\s]/.test(name))
    return {
      registrations: [],
      refused: `the Consul name ${JSON.stringify(name)} is not one Consul can serve (a /, \\, ?, # or space, or over 253 characters)`,
    };
  const meta: Record<string, string> = {
    [META.origin]: service.source,
    [META.writer]: writer,
    [META.catalogId]: service.id.slice(0, META_VALUE_MAX),
    [META.externalSource]: service.source === 'kubernetes' ? 'kubernetes' : 'flomesh',
    ...(service.source === 'kubernetes' && service.namespace ? { [META.namespace]: service.namespace } : {}),
  };
  const tags = [...new Set(naming.tags)].sort();
  const registrations = service.endpoints.map((endpoint): Registration => {
    const named: Record<string, string> = {};
    // A multi-port Service's other ports, where Spring's and Consul clients' metadata readers find them.
    for (const [portName, port] of Object.entries(endpoint.ports ?? {})) if (Object.keys(named).length < 48) named[`port-${portName}`] = String(port);
    return {
      id: instanceId(service.id, endpoint.address, endpoint.port),
      catalogId: service.id,
      name,
      address: endpoint.address,
      port: endpoint.port,
      tags,
      meta: { ...meta, ...named },
      status: endpoint.healthy ? 'passing' : 'critical',
    };
  });
  return { registrations };
}

const sortedEntries = (meta: Record<string, string>) => JSON.stringify(Object.entries(meta).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

/** Whether the service part Consul holds is what the sink would write (the check aside). */
export function sameService(wanted: Registration, held: Held): boolean {
  return (
    wanted.name === held.name &&
    wanted.address === held.address &&
    wanted.port === held.port &&
    JSON.stringify(wanted.tags) === JSON.stringify([...held.tags].sort()) &&
    sortedEntries(wanted.meta) === sortedEntries(held.meta)
  );
}

export type Action = { kind: 'register' } | { kind: 'check' } | { kind: 'deregister' } | { kind: 'none' } | { kind: 'foreign' };

/**
 * What to do about one instance ID: `held` is what Consul has under it on the node (undefined:
 * nothing), `ours` whether that carries this sink's writer mark. A deregistration is only ever of
 * an instance of ours, and only once `mayRemove` (every source listed once).
 */
export function actionFor(wanted: Registration | undefined, held: Held | undefined, ours: boolean, mayRemove: boolean): Action {
  if (held && !ours) return { kind: wanted ? 'foreign' : 'none' };
  if (wanted && !held) return { kind: 'register' };
  if (wanted && held) {
    if (!sameService(wanted, held)) return { kind: 'register' };
    return held.status === wanted.status ? { kind: 'none' } : { kind: 'check' };
  }
  if (!wanted && held && mayRemove) return { kind: 'deregister' };
  return { kind: 'none' };
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
const stringRecord = (v: unknown): Record<string, string> => {
  const out: Record<string, string> = {};
  if (isRecord(v)) for (const [k, value] of Object.entries(v)) if (typeof value === 'string') out[k] = value;
  return out;
};

/**
 * What the node holds, from /v1/catalog/node-services/<node> and /v1/health/node/<node> (either may
 * be null: no such node). Malformed entries are skipped: they cannot be ours.
 */
export function heldOnNode(nodeServices: unknown, nodeChecks: unknown): Map<string, Held> {
  const held = new Map<string, Held>();
  const services = isRecord(nodeServices) && Array.isArray(nodeServices.Services) ? nodeServices.Services : [];
  for (const s of services) {
    if (!isRecord(s) || typeof s.ID !== 'string' || typeof s.Service !== 'string') continue;
    held.set(s.ID, {
      id: s.ID,
      name: s.Service,
      address: typeof s.Address === 'string' ? s.Address : '',
      port: typeof s.Port === 'number' ? s.Port : 0,
      tags: strings(s.Tags),
      meta: stringRecord(s.Meta),
    });
  }
  if (Array.isArray(nodeChecks)) {
    for (const c of nodeChecks) {
      if (!isRecord(c) || typeof c.ServiceID !== 'string' || typeof c.CheckID !== 'string') continue;
      const instance = held.get(c.ServiceID);
      if (instance && c.CheckID === checkIdOf(c.ServiceID) && typeof c.Status === 'string') instance.status = c.Status;
    }
  }
  return held;
}

/** Whether /v1/catalog/node-services/<node> answered the node with this address and node meta (null: no such node). */
export function sameNode(nodeServices: unknown, address: string, meta: Record<string, string>): boolean {
  const node = isRecord(nodeServices) && isRecord(nodeServices.Node) ? nodeServices.Node : undefined;
  if (!node || node.Address !== address) return false;
  const held = stringRecord(node.Meta);
  return Object.keys(held).length === Object.keys(meta).length && Object.entries(meta).every(([key, value]) => held[key] === value);
}

/** The names in /v1/catalog/nodes?node-meta=… (the nodes a sink's writer mark is on); malformed entries skipped. */
export function nodeNames(nodes: unknown): string[] {
  return Array.isArray(nodes) ? nodes.flatMap((node) => (isRecord(node) && typeof node.Node === 'string' ? [node.Node] : [])) : [];
}
