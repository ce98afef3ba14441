import type { Service } from '../../common/contract/catalog.js';
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
  ) {}

  static build(services: Iterable<Service>): RouteTable {
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
    return new RouteTable(vips, endpoints, problems);
  }

  /** VIP:port routes, then endpoint routes. */
  get size(): number {
    return this.vips.size + this.endpoints.size;
  }

  lookup(address: string, port: number): Route | undefined {
    const key = `${routingAddress(address)}|${port}`;
    return this.vips.get(key) ?? this.endpoints.get(key);
  }
}
