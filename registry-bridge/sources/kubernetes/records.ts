// What the Kubernetes source keeps of each object: only the fields the catalog and sidecar.json are
// built from (10,000 Services with their EndpointSlices as whole objects, managedFields included,
// would take hundreds of MiB). Each transform takes the raw JSON of a watch or list and never
// throws: a field of the wrong shape is left out as if absent.
import { BGP_CONFIG_ANNOTATION, BGP_VIPS_ANNOTATION } from '../../../common/contract/index.js';
import type { RawObject } from '../../kube/informer.js';

export interface ServicePortRecord {
  name?: string;
  port: number;
  protocol: string;
  appProtocol?: string;
  /** A number, or the name of a container port. */
  targetPort?: number | string;
}

export interface ServiceRecord {
  namespace: string;
  name: string;
  uid: string;
  type: string;
  /** ClusterIPs, without 'None' (a headless Service has none). */
  clusterIPs: string[];
  headless: boolean;
  selector?: Record<string, string>;
  ports: ServicePortRecord[];
  /** `flomesh.io/` annotations only. */
  annotations: Record<string, string>;
  labels: Record<string, string>;
}

export interface EndpointRecord {
  address: string;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  zone?: string;
  node?: string;
  pod?: string;
}

export interface SliceRecord {
  namespace: string;
  name: string;
  /** The Service it belongs to (label kubernetes.io/service-name). */
  service: string;
  addressType: string;
  ports: { name: string; port: number; protocol: string }[];
  endpoints: EndpointRecord[];
}

export interface ContainerPortRecord {
  name?: string;
  port: number;
  protocol: string;
}

export interface PodRecord {
  namespace: string;
  name: string;
  uid: string;
  nodeName?: string;
  serviceAccount: string;
  labels: Record<string, string>;
  containerPorts: ContainerPortRecord[];
  dnsSearches: string[];
  deleting: boolean;
  finished: boolean;
  /** The ConfigMap of its namespace holding its BGP section (the flomesh.io/bgp-config annotation, as written). */
  bgpConfig?: string;
  /** The VIPs the injector put on its lo (the flomesh.io/bgp-vips annotation, as written). */
  bgpVips?: string;
}

/** The BGP keys of a ConfigMap (a ConfigMap without any is not kept). */
export const BGP_CONFIGMAP_KEYS = ['bgp.yaml', 'bgp.json'] as const;

export interface BgpConfigMapRecord {
  namespace: string;
  name: string;
  /** Each BGP key it has, with its text. */
  keys: { key: (typeof BGP_CONFIGMAP_KEYS)[number]; text: string }[];
}

export interface NodeRecord {
  name: string;
  zone?: string;
  region?: string;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const asString = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const asArray = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const asPort = (v: unknown): number | undefined => (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535 ? v : undefined);

function stringRecord(v: unknown, keep: (key: string) => boolean = () => true): Record<string, string> {
  const out: Record<string, string> = {};
  if (!isObject(v)) return out;
  for (const [key, value] of Object.entries(v)) if (typeof value === 'string' && keep(key)) out[key] = value;
  return out;
}

const meshKey = (key: string) => key.startsWith('flomesh.io/');

export function serviceRecord(raw: RawObject): ServiceRecord | undefined {
  const meta = raw.metadata;
  const spec = isObject(raw.spec) ? raw.spec : {};
  if (!meta?.name || !meta.namespace) return undefined;
  const clusterIPs = asArray(spec.clusterIPs)
    .map(asString)
    .filter((ip): ip is string => !!ip);
  if (clusterIPs.length === 0 && asString(spec.clusterIP)) clusterIPs.push(asString(spec.clusterIP)!);
  const headless = clusterIPs.includes('None');
  const ports: ServicePortRecord[] = [];
  for (const p of asArray(spec.ports)) {
    if (!isObject(p)) continue;
    const port = asPort(p.port);
    if (!port) continue;
    const target = typeof p.targetPort === 'number' ? asPort(p.targetPort) : asString(p.targetPort);
    ports.push({
      ...(asString(p.name) ? { name: asString(p.name)! } : {}),
      port,
      protocol: asString(p.protocol) ?? 'TCP',
      ...(asString(p.appProtocol) ? { appProtocol: asString(p.appProtocol)! } : {}),
      ...(target !== undefined ? { targetPort: target } : {}),
    });
  }
  const selector = isObject(spec.selector) ? stringRecord(spec.selector) : undefined;
  return {
    namespace: meta.namespace,
    name: meta.name,
    uid: meta.uid ?? '',
    type: asString(spec.type) ?? 'ClusterIP',
    clusterIPs: clusterIPs.filter((ip) => ip !== 'None'),
    headless,
    ...(selector && Object.keys(selector).length > 0 ? { selector } : {}),
    ports,
    annotations: stringRecord(meta.annotations, meshKey),
    labels: stringRecord(meta.labels, meshKey),
  };
}

export function sliceRecord(raw: RawObject): SliceRecord | undefined {
  const meta = raw.metadata;
  const service = meta?.labels?.['kubernetes.io/service-name'];
  if (!meta?.name || !meta.namespace || !service) return undefined;
  const ports: SliceRecord['ports'] = [];
  for (const p of asArray(raw.ports)) {
    if (!isObject(p)) continue;
    const port = asPort(p.port);
    if (port) ports.push({ name: asString(p.name) ?? '', port, protocol: asString(p.protocol) ?? 'TCP' });
  }
  const endpoints: EndpointRecord[] = [];
  for (const e of asArray(raw.endpoints)) {
    if (!isObject(e)) continue;
    const address = asString(asArray(e.addresses)[0]);
    if (!address) continue;
    const conditions = isObject(e.conditions) ? e.conditions : {};
    // The API's rule: an unset `ready` means ready, an unset `serving` means what `ready` says.
    const ready = conditions.ready !== false;
    const targetRef = isObject(e.targetRef) ? e.targetRef : {};
    endpoints.push({
      address,
      ready,
      serving: typeof conditions.serving === 'boolean' ? conditions.serving : ready,
      terminating: conditions.terminating === true,
      ...(asString(e.zone) ? { zone: asString(e.zone)! } : {}),
      ...(asString(e.nodeName) ? { node: asString(e.nodeName)! } : {}),
      ...(targetRef.kind === 'Pod' && asString(targetRef.name) ? { pod: asString(targetRef.name)! } : {}),
    });
  }
  return { namespace: meta.namespace, name: meta.name, service, addressType: asString(raw.addressType) ?? 'IPv4', ports, endpoints };
}

export function podRecord(raw: RawObject): PodRecord | undefined {
  const meta = raw.metadata;
  const spec = isObject(raw.spec) ? raw.spec : {};
  const status = isObject(raw.status) ? raw.status : {};
  if (!meta?.name || !meta.namespace || !meta.uid) return undefined;
  const containerPorts: ContainerPortRecord[] = [];
  for (const c of asArray(spec.containers)) {
    if (!isObject(c)) continue;
    for (const p of asArray(c.ports)) {
      if (!isObject(p)) continue;
      const port = asPort(p.containerPort);
      if (port) containerPorts.push({ ...(asString(p.name) ? { name: asString(p.name)! } : {}), port, protocol: asString(p.protocol) ?? 'TCP' });
    }
  }
  const dnsConfig = isObject(spec.dnsConfig) ? spec.dnsConfig : {};
  const phase = asString(status.phase);
  return {
    namespace: meta.namespace,
    name: meta.name,
    uid: meta.uid,
    ...(asString(spec.nodeName) ? { nodeName: asString(spec.nodeName)! } : {}),
    serviceAccount: asString(spec.serviceAccountName) ?? 'default',
    labels: stringRecord(meta.labels),
    containerPorts,
    dnsSearches: asArray(dnsConfig.searches)
      .map(asString)
      .filter((s): s is string => !!s),
    deleting: Boolean(meta.deletionTimestamp),
    finished: phase === 'Succeeded' || phase === 'Failed',
    ...(meta.annotations?.[BGP_CONFIG_ANNOTATION] !== undefined ? { bgpConfig: meta.annotations[BGP_CONFIG_ANNOTATION] } : {}),
    ...(meta.annotations?.[BGP_VIPS_ANNOTATION] !== undefined ? { bgpVips: meta.annotations[BGP_VIPS_ANNOTATION] } : {}),
  };
}

/**
 * A ConfigMap that may hold a pod's BGP section; undefined (not kept) for the many that hold no BGP
 * key, so watching every ConfigMap costs memory only for these.
 */
export function bgpConfigMapRecord(raw: RawObject): BgpConfigMapRecord | undefined {
  const meta = raw.metadata;
  if (!meta?.name || !meta.namespace || !isObject(raw.data)) return undefined;
  const data = raw.data;
  const keys = BGP_CONFIGMAP_KEYS.filter((key) => typeof data[key] === 'string').map((key) => ({ key, text: data[key] as string }));
  return keys.length ? { namespace: meta.namespace, name: meta.name, keys } : undefined;
}

export function nodeRecord(raw: RawObject): NodeRecord | undefined {
  const meta = raw.metadata;
  if (!meta?.name) return undefined;
  const zone = meta.labels?.['topology.kubernetes.io/zone'];
  const region = meta.labels?.['topology.kubernetes.io/region'];
  return { name: meta.name, ...(zone ? { zone } : {}), ...(region ? { region } : {}) };
}
