// What the Kubernetes sink writes for a registry service: a headless Service (no ClusterIP, so it
// never competes with the mesh VIP the sidecars answer for the same service; no selector, so
// Kubernetes' EndpointSlice controller leaves it to the bridge) and EndpointSlices with the
// instances, both labelled as the bridge's. Pure, so the rules are tested without a cluster.
import { createHash } from 'node:crypto';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { isIP } from 'node:net';
import type { Service } from '../../../common/contract/index.js';
import { dnsLabelOf } from '../../core/names.js';
import { ORIGIN_LABEL } from '../../sources/kubernetes/translate.js';

/** Kubernetes' own label naming the controller of an EndpointSlice; the bridge's value. */
export const MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
export const MANAGED_BY = 'flb-bridge.flomesh.io';
/** Which sink of the bridge wrote an object: only objects with this sink's value are ever changed or removed. */
export const SINK_LABEL = 'flomesh.io/bridge-sink';
export const CATALOG_ID_ANNOTATION = 'flomesh.io/catalog-id';
/** A hash of what the sink wrote: equal means nothing to write, whatever defaults the apiserver filled in. */
export const HASH_ANNOTATION = 'flomesh.io/bridge-hash';
const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
/** Endpoints per slice: Kubernetes' own controller's default (--max-endpoints-per-slice). */
const MAX_PER_SLICE = 100;

export interface Desired {
  name: string;
  catalogId: string;
  service: V1Service;
  /** By slice name. */
  slices: Map<string, V1EndpointSlice>;
}

/** The Service name for a catalog service: the registry's own name (`web` for web.dc1.consul) as a DNS label, after the prefix. */
export function serviceNameOf(service: Service, prefix: string): string | undefined {
  return dnsLabelOf(`${prefix}${service.id.split('.')[0]}`);
}

const hashOf = (value: unknown) => createHash('sha256').update(JSON.stringify(value)).digest('hex').slice(0, 16);

const appProtocol = (protocol: string) =>
  protocol === 'http' ? 'http' : protocol === 'http2' ? 'kubernetes.io/h2c' : protocol === 'grpc' ? 'grpc' : undefined;

export function desiredObjects(service: Service, name: string, namespace: string, sinkName: string): Desired {
  const labels = { [ORIGIN_LABEL]: service.source, [SINK_LABEL]: sinkName, 'app.kubernetes.io/managed-by': 'flb-bridge' };
  const ports = service.ports.map((p, i) => ({
    ...(p.name ? { name: p.name } : service.ports.length > 1 ? { name: `port-${i}` } : {}),
    port: p.port,
    targetPort: p.targetPort ?? p.port,
    protocol: 'TCP',
    ...(appProtocol(p.protocol) ? { appProtocol: appProtocol(p.protocol) } : {}),
  }));
  const spec = { clusterIP: 'None', ports };
  const serviceHash = hashOf({ labels, spec, id: service.id });
  const v1Service: V1Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace, labels, annotations: { [CATALOG_ID_ANNOTATION]: service.id, [HASH_ANNOTATION]: serviceHash } },
    spec,
  };
  // A slice holds one address family and one set of ports: endpoints are grouped by both.
  const groups = new Map<
    string,
    { addressType: 'IPv4' | 'IPv6'; ports: { name: string; port: number; protocol: string }[]; endpoints: Service['endpoints'] }
  >();
  for (const endpoint of service.endpoints) {
    const addressType = isIP(endpoint.address) === 6 ? 'IPv6' : 'IPv4';
    const endpointPorts = ports.map((p, i) => ({
      name: p.name ?? '',
      port: i === 0 ? endpoint.port : (endpoint.ports?.[p.name ?? ''] ?? p.targetPort),
      protocol: 'TCP',
    }));
    const key = `${addressType}|${endpointPorts.map((p) => p.port).join(',')}`;
    let group = groups.get(key);
    if (!group) groups.set(key, (group = { addressType, ports: endpointPorts, endpoints: [] }));
    group.endpoints.push(endpoint);
  }
  const slices = new Map<string, V1EndpointSlice>();
  for (const key of [...groups.keys()].sort()) {
    const group = groups.get(key)!;
    const endpoints = [...group.endpoints].sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
    for (let start = 0; start < endpoints.length; start += MAX_PER_SLICE) {
      const sliceName = `${name}-flb-${slices.size}`;
      const body = {
        addressType: group.addressType,
        ports: group.ports,
        endpoints: endpoints.slice(start, start + MAX_PER_SLICE).map((e) => ({
          addresses: [e.address],
          conditions: { ready: e.healthy, serving: e.healthy, terminating: false },
          ...(e.zone ? { zone: e.zone } : {}),
        })),
      };
      const sliceLabels = { ...labels, [MANAGED_BY_LABEL]: MANAGED_BY, [SERVICE_NAME_LABEL]: name };
      slices.set(sliceName, {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: sliceName, namespace, labels: sliceLabels, annotations: { [HASH_ANNOTATION]: hashOf({ sliceLabels, body }) } },
        ...body,
      });
    }
  }
  return { name, catalogId: service.id, service: v1Service, slices };
}

/** Whether an object found in the cluster is this sink's (its labels say so). */
export const isOurs = (labels: Record<string, string> | undefined, sinkName: string) =>
  labels?.[SINK_LABEL] === sinkName && labels['app.kubernetes.io/managed-by'] === 'flb-bridge';
