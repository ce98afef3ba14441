import { routingAddress, type Service } from '../../common/contract/index.js';

/** What a redirected connection's original destination means: a service and the port dialled. */
export interface Route {
  readonly service: Service;
  readonly port: Service['ports'][number];
}

/**
 * Destination VIP:port -> service. Every VIP (a ClusterIP, or a mesh VIP the DNS hands out for a
 * registry service) with every port of its service; built once per configuration change, so the
 * per-connection lookup is one map access. The contract gives VIPs in inet_ntop's form, the form
 * the forwarder reports destinations in, so the two compare as strings. A VIP:port claimed by two services keeps the first in
 * catalog order (the config source already refuses the second and reports it).
 */
export class RouteTable {
  private constructor(private readonly routes: ReadonlyMap<string, Route>) {}

  static build(services: Iterable<Service>): RouteTable {
    const routes = new Map<string, Route>();
    for (const service of services) {
      for (const vip of service.vips) {
        for (const port of service.ports) {
          const key = `${routingAddress(vip.address)}|${port.port}`;
          if (!routes.has(key)) routes.set(key, { service, port });
        }
      }
    }
    return new RouteTable(routes);
  }

  get size(): number {
    return this.routes.size;
  }

  lookup(address: string, port: number): Route | undefined {
    return this.routes.get(`${routingAddress(address)}|${port}`);
  }
}
