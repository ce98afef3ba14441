// Kubernetes objects into the contract: a Service and its EndpointSlices into one catalog service,
// an injected pod (and the Services that select it) into its sidecar.json. Pure functions of the
// records the source keeps, so every rule here is tested without a cluster.
import { isIP } from 'node:net';
import YAML from 'yaml';
import {
  API_VERSION,
  BGP_CONFIG_ANNOTATION,
  BGP_VIPS_ANNOTATION,
  BgpSchema,
  canonicalIp,
  checkDocument,
  parseCidr,
  serviceId,
  type Endpoint,
  type Mesh,
  type Service,
  type ServicePolicy,
  type SidecarConfig,
  SIDECAR_ID_PATTERN,
  sidecarId,
} from '../../../common/contract/index.js';
import type { BgpConfigMapRecord, PodRecord, ServicePortRecord, ServiceRecord, SliceRecord } from './records.js';

export type PortProtocol = 'tcp' | 'http' | 'http2' | 'grpc';

/** Marks objects a sink of the bridge wrote (a registry service shown as a Kubernetes Service): never read back as a source. */
export const ORIGIN_LABEL = 'flomesh.io/origin';
/** Opts a Service in (`"true"`) or out (`"false"`) of the registry sinks (Consul, Eureka), as consul-k8s's `consul.hashicorp.com/service-sync`. */
export const REGISTRY_SYNC_ANNOTATION = 'flomesh.io/registry-sync';

/**
 * What a port speaks: its `appProtocol` first (`http`, `kubernetes.io/h2c`, `grpc`; anything else,
 * `https` included, is opaque TCP), else the port name's prefix as Istio reads it (`http-web`,
 * `grpc`, `http2-api`, `h2c`), else TCP.
 */
export function portProtocol(port: Pick<ServicePortRecord, 'name' | 'appProtocol'>): PortProtocol {
  const app = port.appProtocol?.toLowerCase();
  if (app) {
    if (app === 'http' || app === 'http/1.1') return 'http';
    if (app === 'kubernetes.io/h2c' || app === 'h2c' || app === 'http2') return 'http2';
    if (app === 'grpc') return 'grpc';
    return 'tcp';
  }
  const name = port.name?.toLowerCase() ?? '';
  if (/^(http2|h2c)(-|$)/.test(name)) return 'http2';
  if (/^grpc(-|$)/.test(name)) return 'grpc';
  if (/^http(-|$)/.test(name)) return 'http';
  return 'tcp';
}

export interface ServiceTranslation {
  /** Undefined when the Service is not for the mesh; `skipped` says why. */
  service?: Service;
  skipped?: string;
  /** Things a user should know (slice ports no Service port has, ...), for logs and Events. */
  problems: string[];
}

const tcpPorts = (svc: ServiceRecord) => svc.ports.filter((p) => p.protocol === 'TCP');

/** The catalog service for a Kubernetes Service; `slices` are the EndpointSlices labelled with its name. */
export function translateService(
  svc: ServiceRecord,
  slices: Iterable<SliceRecord>,
  policy: ServicePolicy,
  mesh: Pick<Mesh, 'clusterName'>,
): ServiceTranslation {
  const problems: string[] = [];
  if (svc.type === 'ExternalName') return { skipped: 'an ExternalName Service has no endpoints to balance', problems };
  if (svc.labels[ORIGIN_LABEL] && svc.labels[ORIGIN_LABEL] !== 'kubernetes')
    return { skipped: `written by the bridge from ${svc.labels[ORIGIN_LABEL]}`, problems };
  const ports = tcpPorts(svc);
  if (ports.length === 0) return { skipped: 'no TCP port (the mesh carries TCP)', problems };
  const multi = ports.length > 1;
  const byAddress = new Map<string, Endpoint>();
  for (const slice of slices) {
    if (slice.addressType !== 'IPv4' && slice.addressType !== 'IPv6') continue;
    const slicePort = new Map(slice.ports.filter((p) => p.protocol === 'TCP').map((p) => [p.name, p.port]));
    for (const name of slicePort.keys()) {
      if (!ports.some((p) => (p.name ?? '') === name))
        problems.push(`EndpointSlice ${slice.name} has a port named ${JSON.stringify(name)} that Service ${svc.name} does not have; ignored`);
    }
    if (slice.endpoints.length === 0) continue;
    const first = ports[0]!;
    const firstPort = slicePort.get(first.name ?? '') ?? (typeof first.targetPort === 'number' ? first.targetPort : undefined);
    if (firstPort === undefined) {
      problems.push(`EndpointSlice ${slice.name} gives no port for ${first.name ? `port ${first.name}` : `port ${first.port}`}; its endpoints are left out`);
      continue;
    }
    const named: Record<string, number> = {};
    if (multi) for (const p of ports) if (p.name && slicePort.has(p.name)) named[p.name] = slicePort.get(p.name)!;
    for (const e of slice.endpoints) {
      const endpoint: Endpoint = {
        address: e.address,
        port: firstPort,
        ...(multi ? { ports: named } : {}),
        weight: 1,
        priority: 0,
        healthy: e.ready,
        ...(e.zone ? { zone: e.zone } : {}),
        cluster: mesh.clusterName,
        metadata: { ...(e.pod ? { pod: e.pod } : {}), ...(e.node ? { node: e.node } : {}), ...(e.terminating ? { terminating: 'true' } : {}) },
      };
      const key = `${e.address}|${firstPort}`;
      const seen = byAddress.get(key);
      // An endpoint moving between slices shows in both for a moment: the ready sighting wins.
      if (!seen || (!seen.healthy && endpoint.healthy)) byAddress.set(key, endpoint);
    }
  }
  const endpoints = [...byAddress.values()];
  // With no ready endpoint, those still serving while they terminate take the traffic (as kube-proxy does), rather than none.
  if (!endpoints.some((e) => e.healthy)) {
    for (const e of endpoints) if (e.metadata.terminating === 'true' && isServing(slices, e)) e.healthy = true;
  }
  endpoints.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : a.port - b.port));
  const service: Service = {
    apiVersion: API_VERSION,
    kind: 'Service',
    id: serviceId({ source: 'kubernetes', name: svc.name, namespace: svc.namespace }),
    name: svc.name,
    namespace: svc.namespace,
    source: 'kubernetes',
    hostnames: [],
    vips: svc.clusterIPs.map((address) => ({ address, allocation: 'cluster-ip' as const })),
    ports: ports.map((p) => ({
      ...(multi || p.name ? { name: p.name } : {}),
      port: p.port,
      protocol: portProtocol(p),
      ...(typeof p.targetPort === 'number' ? { targetPort: p.targetPort } : {}),
    })),
    endpoints,
    policy,
    labels: {
      [ORIGIN_LABEL]: 'kubernetes',
      // Registry sinks read it from the catalog (registry-bridge/sinks/scope.ts).
      ...(svc.annotations[REGISTRY_SYNC_ANNOTATION] !== undefined ? { [REGISTRY_SYNC_ANNOTATION]: svc.annotations[REGISTRY_SYNC_ANNOTATION] } : {}),
    },
  };
  return { service, problems };
}

const isSearchDomain = (name: string) => name.length <= 253 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(name);

function isServing(slices: Iterable<SliceRecord>, endpoint: Endpoint): boolean {
  for (const slice of slices) for (const e of slice.endpoints) if (e.address === endpoint.address) return e.serving;
  return false;
}

/** Whether a Service's selector picks the pod (a Service without a selector picks none). */
export function selects(svc: ServiceRecord, pod: PodRecord): boolean {
  if (!svc.selector || svc.namespace !== pod.namespace) return false;
  for (const [key, value] of Object.entries(svc.selector)) if (pod.labels[key] !== value) return false;
  return true;
}

export interface SidecarTranslation {
  id: string;
  config?: SidecarConfig;
  /** Why no sidecar.json could be made (an id that is not one). */
  refused?: string;
  problems: string[];
}

/** sidecar.json's bgp section. */
export type BgpConfig = NonNullable<SidecarConfig['bgp']>;

/** A ConfigMap name as Kubernetes allows it (RFC 1123 subdomain). */
const CONFIGMAP_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export interface BgpSection {
  /** The section to publish; undefined when the pod names no ConfigMap or its ConfigMap is refused. */
  bgp?: BgpConfig;
  /** What is wrong, each naming the ConfigMap, its key and the field. */
  problems: string[];
}

/**
 * The pod's BGP section from the ConfigMap its flomesh.io/bgp-config annotation names (key bgp.yaml
 * or bgp.json, YAML or JSON either way), checked with the contract's BgpSchema. Also says which
 * host-route VIPs of the section are missing from the pod's flomesh.io/bgp-vips annotation: those
 * are announced but not on the pod's lo (the injector put them there at admission), so their
 * traffic would not reach the app.
 */
export function bgpSectionFor(pod: PodRecord, configMap: BgpConfigMapRecord | undefined): BgpSection {
  const name = pod.bgpConfig?.trim();
  if (name === undefined) return { problems: [] };
  const named = `ConfigMap ${pod.namespace}/${name} (annotation ${BGP_CONFIG_ANNOTATION})`;
  if (!CONFIGMAP_NAME.test(name) || name.length > 253)
    return { problems: [`annotation ${BGP_CONFIG_ANNOTATION}: ${JSON.stringify(pod.bgpConfig)} is not a ConfigMap name`] };
  if (!configMap) return { problems: [`${named} does not exist or has neither a bgp.yaml nor a bgp.json key`] };
  if (configMap.keys.length > 1) return { problems: [`${named} has both bgp.yaml and bgp.json: keep one`] };
  const { key, text } = configMap.keys[0]!;
  const where = `${named} key ${key}`;
  let data: unknown;
  try {
    data = YAML.parse(text);
  } catch (error) {
    return { problems: [`${where} is neither YAML nor JSON: ${(error as Error).message.split('\n')[0]}`] };
  }
  const checked = checkDocument(BgpSchema, data);
  if (!checked.ok) return { problems: checked.issues.map((issue) => `${where}: ${issue.field}: ${issue.message}`) };
  const bgp = checked.value;
  // The sidecar refuses a section it cannot honour (sidecar/bgp/announcer.ts, unbuiltFields): say so here, on the pod, instead of in its log.
  const unbuilt = bgp.peers.flatMap((peer, i) =>
    peer.passwordRef !== undefined ? [`${where}: peers[${i}].passwordRef: TCP MD5 (RFC 2385) is not built yet`] : [],
  );
  if (unbuilt.length) return { problems: unbuilt };
  const onLo = new Set(
    (pod.bgpVips ?? '')
      .split(',')
      .map(hostRouteText)
      .filter((v): v is string => v !== undefined),
  );
  const missing = bgp.vips.map((vip) => hostRouteText(vip.prefix)).filter((vip): vip is string => vip !== undefined && !onLo.has(vip));
  const problems = missing.length
    ? [
        `${where} announces ${missing.join(', ')}, which annotation ${BGP_VIPS_ANNOTATION} does not list: not on the pod's lo, so traffic to ${missing.length === 1 ? 'it' : 'them'} will not reach the app (add ${missing.length === 1 ? 'it' : 'them'} to the annotation and recreate the pod)`,
      ]
    : [];
  return { bgp, problems };
}

/** `10.0.0.100` or `10.0.0.100/32` as `10.0.0.100/32` (IPv6 canonical, /128); undefined for anything wider or not an address. */
function hostRouteText(value: string): string | undefined {
  const text = value.trim();
  if (isIP(text) !== 0) return `${canonicalIp(text)}/${isIP(text) === 4 ? 32 : 128}`;
  const parsed = parseCidr(text);
  if (!parsed || parsed[1] !== (parsed[0].kind() === 'ipv4' ? 32 : 128)) return undefined;
  return `${canonicalIp(text.slice(0, text.lastIndexOf('/')))}/${parsed[1]}`;
}

/**
 * A pod's sidecar.json: who it is, the whole catalog (`*`), its zone, the resolver's search list,
 * and its inbound ports: every port a Service selecting it targets, with that Service port's
 * protocol, then its own container ports as plain TCP.
 */
export function translatePod(
  pod: PodRecord,
  selecting: readonly ServiceRecord[],
  zone: string | undefined,
  mesh: Pick<Mesh, 'name' | 'clusterName' | 'clusterDomain'>,
  /** Its BGP section (bgpSectionFor, or the last good one), published as it is. */
  bgp?: BgpConfig,
): SidecarTranslation {
  const id = sidecarId({ kind: 'pod', namespace: pod.namespace, name: pod.name });
  const problems: string[] = [];
  if (!SIDECAR_ID_PATTERN.test(id) || id.length > 253)
    return { id, refused: `pod name ${JSON.stringify(pod.name)} makes no valid sidecar id (${id})`, problems };
  const inbound = new Map<number, { port: number; protocol: PortProtocol; name?: string }>();
  for (const svc of [...selecting].sort((a, b) => a.name.localeCompare(b.name))) {
    for (const p of tcpPorts(svc)) {
      const target =
        typeof p.targetPort === 'number'
          ? p.targetPort
          : typeof p.targetPort === 'string'
            ? pod.containerPorts.find((c) => c.name === p.targetPort && c.protocol === 'TCP')?.port
            : p.port;
      if (target === undefined) {
        problems.push(
          `Service ${svc.name} port ${p.name ?? p.port} targets ${JSON.stringify(p.targetPort)}, which pod ${pod.name} has no container port named`,
        );
        continue;
      }
      const protocol = portProtocol(p);
      const existing = inbound.get(target);
      if (existing && existing.protocol !== protocol)
        problems.push(`port ${target} is ${existing.protocol} for one Service and ${protocol} for ${svc.name}; ${existing.protocol} is used`);
      if (!existing) inbound.set(target, { port: target, protocol, ...(p.name ? { name: p.name } : {}) });
    }
  }
  for (const c of pod.containerPorts) {
    if (c.protocol === 'TCP' && !inbound.has(c.port)) inbound.set(c.port, { port: c.port, protocol: 'tcp', ...(c.name ? { name: c.name } : {}) });
  }
  const domain = mesh.clusterDomain;
  const config: SidecarConfig = {
    apiVersion: API_VERSION,
    kind: 'Sidecar',
    id,
    mesh: mesh.name,
    identity: { kind: 'pod', namespace: pod.namespace, name: pod.name, serviceAccount: pod.serviceAccount, ...(pod.nodeName ? { node: pod.nodeName } : {}) },
    services: ['*'],
    locality: { ...(zone ? { zone } : {}), cluster: mesh.clusterName },
    dns: { records: [], searchDomains: [...new Set([`${pod.namespace}.svc.${domain}`, `svc.${domain}`, domain, ...pod.dnsSearches.filter(isSearchDomain)])] },
    inbound: { ports: [...inbound.values()].sort((a, b) => a.port - b.port), probes: [] },
    ...(bgp ? { bgp } : {}),
  };
  return { id, config, problems };
}
