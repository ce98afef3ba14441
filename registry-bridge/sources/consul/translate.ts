// A Consul service (what /v1/health/service/<name> answers) into one catalog service. Pure, so
// every rule is tested without a Consul: which instances are published, their address and port
// by Consul's own rule, their health and weight, the port and protocol clients dial, the names.
import { API_VERSION, canonicalIp, serviceId, ServicePolicySchema, type Endpoint, type Service } from '../../../common/contract/index.js';
import type { ConsulSourceConfig } from '../../../common/contract/index.js';
import { dnsLabelOf } from '../../core/names.js';

/** Service metadata the bridge's Consul sink (issue 18) writes on what it registers: never read back. */
export const ORIGIN_META = 'flomesh-origin';
/** Marks catalog services by where they came from (as the Kubernetes source's ORIGIN_LABEL). */
export const ORIGIN_LABEL = 'flomesh.io/origin';

export type CheckStatus = 'passing' | 'warning' | 'critical';

export type ConsulFilters = Pick<ConsulSourceConfig, 'healthy' | 'tags' | 'meta' | 'addressTag' | 'protocol' | 'domain'> &
  Partial<Pick<ConsulSourceConfig, 'directDial'>>;

export interface ConsulServiceInput {
  /** The name as Consul has it. */
  name: string;
  /** Its DNS label (LabelBook: unique among this datacenter's services). */
  label: string;
  datacenter: string;
  /** The body of /v1/health/service/<name>, unchecked. */
  entries: unknown;
  filters: ConsulFilters;
  /** The port published last time, for a service that has no instance now (it keeps its port). */
  previousPort?: number;
}

export interface ConsulServiceTranslation {
  service?: Service;
  skipped?: string;
  /** Instances left out and why, for the log (by node and service ID). */
  problems: string[];
  /** Nodes its instances run on: a node check's change concerns their services. */
  nodes: string[];
  port?: number;
}

const PROTOCOLS = new Set(['tcp', 'http', 'http2', 'grpc']);
/** Consul has no per-service balancing policy the mesh could read: the contract's default. */
const DEFAULT_POLICY = ServicePolicySchema.parse({});
const MAINTENANCE = /^_(node|service)_maintenance/;

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const stringRecord = (v: unknown): Record<string, string> => {
  if (!isRecord(v)) return {};
  const out: Record<string, string> = {};
  for (const [k, value] of Object.entries(v)) if (typeof value === 'string') out[k] = value;
  return out;
};

/** The worst status of an instance's checks, node checks included, as Consul's `?passing` reads them; maintenance is critical. */
export function instanceStatus(checks: unknown): CheckStatus {
  if (!Array.isArray(checks)) return 'passing';
  let status: CheckStatus = 'passing';
  for (const check of checks) {
    if (!isRecord(check)) continue;
    if (typeof check.CheckID === 'string' && MAINTENANCE.test(check.CheckID)) return 'critical';
    if (check.Status === 'passing') continue;
    if (check.Status === 'warning') status = 'warning';
    else return 'critical';
  }
  return status;
}

/**
 * An instance's address: the tagged address named by `addressTag` (the service's, else the
 * node's) when set and present; else Consul's own rule, the service's address, or its node's
 * when that is empty. Undefined when there is none.
 */
export function instanceAddress(node: Record<string, unknown>, service: Record<string, unknown>, addressTag?: string): { address?: string; port?: unknown } {
  if (addressTag) {
    const tagged = isRecord(service.TaggedAddresses) ? service.TaggedAddresses[addressTag] : undefined;
    if (isRecord(tagged) && typeof tagged.Address === 'string' && tagged.Address !== '') {
      return { address: tagged.Address, port: typeof tagged.Port === 'number' && tagged.Port !== 0 ? tagged.Port : service.Port };
    }
    const nodeTagged = stringRecord(node.TaggedAddresses)[addressTag];
    if (nodeTagged) return { address: nodeTagged, port: service.Port };
  }
  if (typeof service.Address === 'string' && service.Address !== '') return { address: service.Address, port: service.Port };
  if (typeof node.Address === 'string' && node.Address !== '') return { address: node.Address, port: service.Port };
  return { port: service.Port };
}

const weightOf = (weights: unknown, key: 'Passing' | 'Warning'): number => {
  const value = isRecord(weights) ? weights[key] : undefined;
  return typeof value === 'number' && Number.isInteger(value) ? Math.min(1_000_000, Math.max(0, value)) : 1;
};

const twinKey = (e: Endpoint) => `${e.metadata.instance}\u0000${e.metadata.node}\u0000${JSON.stringify(e)}`;

/** The names a Consul service answers to: Consul's own DNS names, then the catalog id. */
export function consulHostnames(label: string, datacenterLabel: string, domain: string, id: string): string[] {
  return [`${label}.service.${domain}`, `${label}.service.${datacenterLabel}.${domain}`, id];
}

export function translateConsulService(input: ConsulServiceInput): ConsulServiceTranslation {
  const { name, label, datacenter, filters } = input;
  const problems: string[] = [];
  const nodes = new Set<string>();
  const dcLabel = dnsLabelOf(datacenter);
  if (!dcLabel) return { skipped: `datacenter ${JSON.stringify(datacenter)} cannot be a DNS label`, problems, nodes: [] };
  if (!Array.isArray(input.entries)) return { skipped: 'the answer is not a list of instances', problems, nodes: [] };

  const byAddress = new Map<string, Endpoint>();
  /** What each kept endpoint's instance says it speaks (Service.Meta.protocol). */
  const statedProtocol = new Map<Endpoint, string | undefined>();
  let proxies = 0;
  let written = 0;
  for (const entry of input.entries) {
    if (!isRecord(entry) || !isRecord(entry.Service) || !isRecord(entry.Node)) {
      problems.push('an instance without Node or Service; skipped');
      continue;
    }
    const node = entry.Node;
    const svc = entry.Service;
    const nodeName = typeof node.Node === 'string' ? node.Node : '?';
    const instance = `${typeof svc.ID === 'string' ? svc.ID : '?'} on node ${nodeName}`;
    if (typeof node.Node === 'string') nodes.add(node.Node);
    // Connect sidecar proxies and gateways carry their own Kind; the mesh balances to the app itself.
    if (typeof svc.Kind === 'string' && svc.Kind !== '') {
      proxies++;
      continue;
    }
    const meta = stringRecord(svc.Meta);
    if (meta[ORIGIN_META] !== undefined) {
      written++;
      continue;
    }
    const tags = Array.isArray(svc.Tags) ? svc.Tags.filter((t): t is string => typeof t === 'string') : [];
    if (!filters.tags.include.every((t) => tags.includes(t)) || filters.tags.exclude.some((t) => tags.includes(t))) continue;
    if (!Object.entries(filters.meta).every(([k, v]) => meta[k] === v)) continue;

    const { address: rawAddress, port } = instanceAddress(node, svc, filters.addressTag);
    if (rawAddress === undefined) {
      problems.push(`instance ${instance} has no address; skipped`);
      continue;
    }
    const address = canonicalIp(rawAddress);
    if (address === undefined) {
      problems.push(`instance ${instance} has address ${JSON.stringify(rawAddress.slice(0, 100))}, not an IP address; skipped`);
      continue;
    }
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      problems.push(`instance ${instance} has port ${JSON.stringify(port)}, not 1-65535; skipped`);
      continue;
    }
    const status = instanceStatus(entry.Checks);
    const healthy = status === 'passing' || (status === 'warning' && filters.healthy === 'passing-or-warning');
    const endpoint: Endpoint = {
      address,
      port,
      weight: weightOf(svc.Weights, status === 'warning' ? 'Warning' : 'Passing'),
      priority: 0,
      healthy,
      metadata: { node: nodeName, instance: typeof svc.ID === 'string' ? svc.ID : '', status },
      ...(meta.zone ? { zone: meta.zone } : stringRecord(node.Meta).zone ? { zone: stringRecord(node.Meta).zone! } : {}),
    };
    const key = `${address}|${port}`;
    const seen = byAddress.get(key);
    if (seen) {
      // The healthier, then the smaller instance ID, node and the rest: the same whatever order Consul lists them in.
      const replaces = healthy !== seen.healthy ? healthy : twinKey(endpoint) < twinKey(seen);
      const [kept, dropped] = replaces ? [endpoint, seen] : [seen, endpoint];
      problems.push(`instances ${kept.metadata.instance} and ${dropped.metadata.instance} on ${address} port ${port}: ${kept.metadata.instance} is kept`);
      if (replaces) {
        byAddress.set(key, endpoint);
        statedProtocol.set(endpoint, meta.protocol);
      }
      continue;
    }
    byAddress.set(key, endpoint);
    statedProtocol.set(endpoint, meta.protocol);
  }
  const ports = new Map<number, number>();
  const protocols = new Set<string>();
  for (const endpoint of byAddress.values()) {
    ports.set(endpoint.port, (ports.get(endpoint.port) ?? 0) + 1);
    const stated = statedProtocol.get(endpoint);
    if (stated !== undefined) protocols.add(stated.toLowerCase());
  }

  const endpoints = [...byAddress.values()].sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : a.port - b.port));
  // The port clients dial on the VIP: the one most instances listen on (the lowest of equals), as
  // an app that used Consul's DNS A records dials; every endpoint is reached on its own port.
  let port = input.previousPort;
  let best = 0;
  for (const [p, count] of ports) if (count > best || (count === best && p < (port ?? Infinity))) [port, best] = [p, count];
  if (port === undefined) {
    const why = proxies > 0 ? 'only Connect proxies or gateways' : written > 0 ? 'written by the bridge itself' : 'no instance to publish';
    return { skipped: why, problems, nodes: [...nodes] };
  }
  let protocol = filters.protocol;
  if (protocols.size === 1) {
    const stated = [...protocols][0]!;
    if (PROTOCOLS.has(stated)) protocol = stated as typeof protocol;
    else problems.push(`Service.Meta.protocol ${JSON.stringify(stated)} is none of tcp, http, http2, grpc; ${protocol} is used`);
  } else if (protocols.size > 1) problems.push(`instances disagree on Service.Meta.protocol (${[...protocols].join(', ')}); ${protocol} is used`);

  const id = serviceId({ source: 'consul', name: label, registry: dcLabel });
  const service: Service = {
    apiVersion: API_VERSION,
    kind: 'Service',
    id,
    name,
    registry: datacenter,
    source: 'consul',
    hostnames: consulHostnames(label, dcLabel, filters.domain, id),
    vips: [],
    ports: [{ port, protocol }],
    endpoints,
    policy: DEFAULT_POLICY,
    ...(filters.directDial !== undefined && filters.directDial !== 'off' ? { directDial: filters.directDial } : {}),
    labels: { [ORIGIN_LABEL]: 'consul' },
  };
  return { service, problems, nodes: [...nodes], port };
}
