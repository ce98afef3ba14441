import { ServiceSchema, type Service } from '../../../common/contract/catalog.js';
import { API_VERSION } from '../../../common/contract/primitives.js';
import type { Candidate } from '../algorithms.js';

export type EndpointInput = Partial<Service['endpoints'][number]> & { address: string; port?: number };

/** A parsed service (defaults filled in as the sidecar gets them from the catalog). */
export function makeService(endpoints: EndpointInput[], policy: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Service {
  return ServiceSchema.parse({
    apiVersion: API_VERSION,
    kind: 'Service',
    id: 'orders.shop',
    name: 'orders',
    namespace: 'shop',
    source: 'kubernetes',
    ports: [{ port: 80 }],
    endpoints: endpoints.map((e) => ({ port: 8080, ...e })),
    policy,
    ...extra,
  });
}

/** `count` endpoints 10.0.<subnet>.1..count on port 8080, each with `fields`. */
export function endpoints(count: number, fields: Partial<EndpointInput> = {}, subnet = 0): EndpointInput[] {
  return Array.from({ length: count }, (_, i) => ({ address: `10.0.${subnet}.${i + 1}`, ...fields }));
}

export function candidates(spec: Record<string, number>, inFlight: Record<string, number> = {}): Candidate[] {
  return Object.entries(spec).map(([key, weight]) => ({
    key,
    weight,
    get inFlight() {
      return inFlight[key] ?? 0;
    },
  }));
}

/** How often each key came out of `n` picks. */
export function tally(n: number, pick: () => string | undefined): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const key = pick() ?? 'none';
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}
