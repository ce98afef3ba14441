import type { Service } from '../../common/contract/catalog.js';
import type { InterceptionMode, Mesh } from '../../common/contract/mesh.js';
import { routingAddress } from '../../common/contract/primitives.js';
import { endpointKey, resolvePort } from '../balancer/pool.js';

/** What a redirected connection's original destination means: a service and the port dialled. */
export interface Route {
  readonly service: Service;
  readonly port: Service['ports'][number];
  /**
   * The app dialled this endpoint itself (`directDial: keep`): its key in the service's pool, to be
   * kept while it may be chosen. Unset for a VIP, and for `directDial: rebalance`.
   */
  readonly kept?: string;
}

/**
 * A service's endpoint routes, made once per parsed service: the config source keeps the object of
 * a service whose file did not change, so a catalog change makes only the changed services' again.
 * 10,000 opted-in services of 10 endpoints each, on 2 busy cores: 140-230 ms to make them all,
 * 50-60 ms to build the table again from this cache (VIPs alone: 4-8 ms); 28 MiB of heap more than
 * the VIPs alone (of which the cache is 8).
 */
const endpointRoutesCache = new WeakMap<Service, readonly (readonly [string, Route])[]>();

function endpointRoutes(service: Service): readonly (readonly [string, Route])[] {
  let routes = endpointRoutesCache.get(service);
  if (routes !== undefined) return routes;
  // One route per service port when the service rebalances: they differ only in the endpoint they keep.
  const shared = service.directDial === 'rebalance' ? service.ports.map((port) => ({ service, port })) : undefined;
  const made: (readonly [string, Route])[] = [];
  for (const endpoint of service.endpoints) {
    const kept = shared ? undefined : endpointKey(endpoint.address, endpoint.port);
    service.ports.forEach((port, i) => {
      made.push([`${routingAddress(endpoint.address)}|${resolvePort(endpoint, port, i)}`, shared ? shared[i]! : { service, port, kept }]);
    });
  }
  endpointRoutesCache.set(service, (routes = made));
  return routes;
}

/**
 * Whether a connection to a Kubernetes service's pod address:port is the service's
 * (mesh.json `outbound.endpointFallback`). Cilium's and Calico's socket load balancers rewrite a
 * ClusterIP to a pod address in connect(), before the mesh's redirect reads the destination, so
 * the sidecar sees the endpoint the balancer chose; Istio treats such a pod-IP destination as
 * passthrough to that pod (istio/istio#27619: "we do not support routing direct to pod IP
 * traffic") and Cilium asks Istio users to keep its socket balancer out of pods
 * (`socketLB.hostNamespaceOnly`). We cannot count on that setting, so in eBPF mode, where our
 * connect4 runs alongside theirs, the fallback is on by default. In iptables and CNI modes it is
 * off by default: there an app that dials a pod address usually means that pod (a StatefulSet
 * peer, a client that balances by itself), and a cluster whose socket balancer runs in pods can
 * say `on`. `auto` follows the pod's own mode (its `flomesh.io/interception-mode`, which the injector
 * hands the sidecar in FLB_INTERCEPTION_MODE), and the mesh's when the pod has none: an iptables pod
 * of an eBPF mesh has no connect4 of ours beside a socket balancer, an eBPF pod of it has.
 */
export function endpointFallbackEnabled(mesh: Pick<Mesh, 'outbound' | 'interception'>, podMode: InterceptionMode = mesh.interception.mode): boolean {
  const setting = mesh.outbound.endpointFallback;
  return setting === 'on' || (setting === 'auto' && podMode === 'ebpf');
}

/** A pod address:port that is an endpoint of a service no fallback goes to (headless, a registry's). */
const NOT_ROUTED = 0;
/** A pod address:port that is an endpoint of several services: which one the app meant is unknown. */
const AMBIGUOUS = 1;
type FallbackOwner = Route | typeof NOT_ROUTED | typeof AMBIGUOUS;

/** A service's endpoint address:ports for the fallback, made once per parsed service (as endpointRoutes). */
const fallbackEntriesCache = new WeakMap<Service, ReadonlyMap<string, Route | typeof NOT_ROUTED>>();

function fallbackEntries(service: Service): ReadonlyMap<string, Route | typeof NOT_ROUTED> {
  let entries = fallbackEntriesCache.get(service);
  if (entries !== undefined) return entries;
  // Socket load balancers translate Kubernetes ClusterIPs only; a headless service's pod addresses
  // are dialled on purpose, and a registry service's take `directDial` instead.
  const isKubernetesService = service.source === 'kubernetes' || service.source.startsWith('cluster:');
  const routed = isKubernetesService && service.vips.some((vip) => vip.allocation === 'cluster-ip');
  const routes = routed ? service.ports.map((port) => ({ service, port })) : undefined;
  const made = new Map<string, Route | typeof NOT_ROUTED>();
  for (const endpoint of service.endpoints) {
    service.ports.forEach((port, i) => {
      const key = `${routingAddress(endpoint.address)}|${resolvePort(endpoint, port, i)}`;
      // Two service ports with one target port name the same endpoint: the first port's route is kept.
      if (!made.has(key)) made.set(key, routes ? routes[i]! : NOT_ROUTED);
    });
  }
  fallbackEntriesCache.set(service, (entries = made));
  return entries;
}

/**
 * Destination -> service, built once per configuration change so the per-connection lookup is one
 * or two map accesses. The contract gives addresses in inet_ntop's form, the form the forwarder
 * reports destinations in, so they compare as strings.
 *
 * First every VIP (a ClusterIP, or a mesh VIP the DNS hands out for a registry service) with every
 * port of its service; a VIP:port claimed by two services keeps the first in catalog order (the
 * config source already refuses the second and reports it).
 *
 * Then, only where no VIP matched, the endpoints of registry services that opted in with
 * `directDial`: clients such as Ribbon and Spring Cloud LoadBalancer pick an instance from the
 * registry and connect to its address:port, and that address:port names the service, so the call
 * is counted under it and can fail over. Each endpoint is reached at one port per service port (as
 * the pool resolves it). Kubernetes services never opt in (the contract refuses it): see
 * `directDial` in common/contract/catalog.ts. One address:port in two opted-in services (one app
 * registered in Consul and in Eureka) goes to the smaller service id, the same on every sidecar,
 * and is reported.
 */
export class RouteTable {
  private constructor(
    private readonly vips: ReadonlyMap<string, Route>,
    private readonly endpoints: ReadonlyMap<string, Route>,
    /** Ambiguous endpoint addresses, for the caller to log. */
    readonly problems: readonly string[],
    private readonly fallback: ReadonlyMap<string, FallbackOwner>,
  ) {}

  /**
   * `endpointFallback` (see endpointFallbackEnabled): last, where neither a VIP nor a direct dial
   * matched, the pod address:port of a Kubernetes service with a ClusterIP is that service's when
   * no other service in the catalog lists it on that port. The connection is balanced over the
   * service's endpoints like one to the ClusterIP (the socket balancer chose without the mesh's
   * health, ejection and locality, so its choice is not kept). An address:port listed by two
   * services is passed through as before, and `isAmbiguous` says so for the caller to count.
   */
  static build(input: Iterable<Service>, options: { endpointFallback?: boolean } = {}): RouteTable {
    const services = [...input];
    const vips = new Map<string, Route>();
    const dialable: Service[] = [];
    for (const service of services) {
      for (const vip of service.vips) {
        for (const port of service.ports) {
          const key = `${routingAddress(vip.address)}|${port.port}`;
          if (!vips.has(key)) vips.set(key, { service, port });
        }
      }
      if (service.directDial !== undefined) dialable.push(service);
    }
    dialable.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const endpoints = new Map<string, Route>();
    const problems: string[] = [];
    for (const service of dialable) {
      for (const [key, route] of endpointRoutes(service)) {
        if (vips.has(key)) continue;
        const held = endpoints.get(key);
        if (held === undefined) endpoints.set(key, route);
        else if (held.service !== service)
          problems.push(`${key.replace('|', ' port ')}: an endpoint of ${held.service.id} and ${service.id}; ${held.service.id} takes its calls`);
      }
    }
    const fallback = new Map<string, FallbackOwner>();
    if (options.endpointFallback) {
      for (const service of services) {
        if (service.directDial !== undefined) continue;
        for (const [key, owner] of fallbackEntries(service)) {
          if (vips.has(key) || endpoints.has(key)) continue;
          const held = fallback.get(key);
          if (held === undefined) fallback.set(key, owner);
          // Two services that no fallback goes to leave nothing to guess between.
          else if (held !== AMBIGUOUS && !(held === NOT_ROUTED && owner === NOT_ROUTED)) fallback.set(key, AMBIGUOUS);
        }
      }
    }
    return new RouteTable(vips, endpoints, problems, fallback);
  }

  /** VIP:port routes, then endpoint routes. */
  get size(): number {
    return this.vips.size + this.endpoints.size;
  }

  lookup(address: string, port: number): Route | undefined {
    const key = `${routingAddress(address)}|${port}`;
    const route = this.vips.get(key) ?? this.endpoints.get(key);
    if (route !== undefined || this.fallback.size === 0) return route;
    const owner = this.fallback.get(key);
    return typeof owner === 'object' ? owner : undefined;
  }

  /** With the endpoint fallback: this address:port is an endpoint of several services, so a connection to it passes through. */
  isAmbiguous(address: string, port: number): boolean {
    return this.fallback.size > 0 && this.fallback.get(`${routingAddress(address)}|${port}`) === AMBIGUOUS;
  }
}
