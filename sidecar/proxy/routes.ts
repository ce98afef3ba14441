import type { Service } from '../../common/contract/index.js';

/** What a redirected connection's original destination means: a service and the port dialled. */
export interface Route {
  readonly service: Service;
  readonly port: Service['ports'][number];
}

/** `::ffff:10.0.0.1` (a v4 client on a dual-stack socket) is 10.0.0.1. */
export function plainAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address.toLowerCase();
}

/**
 * Destination VIP:port -> service. Every VIP (a ClusterIP, or a mesh VIP the DNS hands out for a
 * registry service) with every port of its service; built once per configuration change, so the
 * per-connection lookup is one map access. A VIP:port claimed by two services keeps the first in
 * catalog order (the config source already refuses the second and reports it).
 */
export class RouteTable {
  private constructor(private readonly routes: ReadonlyMap<string, Route>) {}

  static build(services: Iterable<Service>): RouteTable {
    const routes = new Map<string, Route>();
    for (const service of services) {
      for (const vip of service.vips) {
        for (const port of service.ports) {
          const key = `${plainAddress(vip.address)}|${port.port}`;
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
    return this.routes.get(`${plainAddress(address)}|${port}`);
  }
}
