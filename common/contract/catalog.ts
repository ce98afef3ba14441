import { z } from 'zod';
import { TlsModeSchema, type Mesh } from './mesh.js';
import { API_VERSION, cidrContains, dnsLabel, dnsName, durationMs, ipAddress, port, stringMap } from './primitives.js';

/** Where a service came from. `cluster:NAME` is a service imported from another cluster of the mesh. */
export const ServiceSourceSchema = z
  .string()
  .regex(/^(kubernetes|consul|eureka|static|cluster:[a-z0-9]([-a-z0-9]*[a-z0-9])?)$/, 'must be kubernetes, consul, eureka, static or cluster:NAME');

export const PortProtocolSchema = z.enum(['tcp', 'http', 'http2', 'grpc']);

export const ServicePortSchema = z.object({
  name: dnsLabel.optional(),
  /** The port clients dial on the service's virtual IP. */
  port,
  protocol: PortProtocolSchema.default('tcp'),
  /** The endpoints' port when it differs from `port` and the endpoint does not say. */
  targetPort: port.optional(),
});

/**
 * How a virtual IP was chosen. `cluster-ip` is a Kubernetes Service's own ClusterIP, kept as
 * Kubernetes allocated it; `mesh` is allocated from the mesh's VIP ranges and stored with the catalog
 * so it is the same on every sidecar, across restarts and control-plane failovers.
 */
export const VirtualIPSchema = z.object({
  address: ipAddress,
  allocation: z.enum(['mesh', 'cluster-ip']),
});

export const EndpointSchema = z.object({
  address: ipAddress,
  /** The endpoint's port for the service's (first) port. */
  port,
  /** Per service-port-name overrides for multi-port services. */
  ports: z.record(z.string(), port).optional(),
  /** Relative share of new connections/requests; 0 drains the endpoint. */
  weight: z.number().int().min(0).max(1_000_000).default(1),
  zone: z.string().min(1).optional(),
  cluster: z.string().min(1).optional(),
  /** Failover order: lower numbers are used first; higher groups only when lower ones cannot serve. */
  priority: z.number().int().min(0).max(1000).default(0),
  /** What the registry says; an endpoint marked unhealthy is never chosen. */
  healthy: z.boolean().default(true),
  metadata: stringMap.default({}),
});

const HashKeySchema = z
  .object({
    on: z.enum(['source-ip', 'header', 'cookie']),
    name: z.string().min(1).optional(),
  })
  .superRefine((key, ctx) => {
    if (key.on !== 'source-ip' && !key.name) {
      ctx.addIssue({ code: 'custom', path: ['name'], message: `required when hashing on a ${key.on}` });
    }
  });

export const LoadBalancerSchema = z
  .object({
    algorithm: z.enum(['round-robin', 'weighted', 'least-request', 'ring-hash', 'random']).default('round-robin'),
    hash: HashKeySchema.optional(),
    ringSize: z
      .number()
      .int()
      .min(16)
      .max(1 << 20)
      .default(1024),
  })
  .superRefine((lb, ctx) => {
    if (lb.algorithm === 'ring-hash' && !lb.hash) {
      ctx.addIssue({ code: 'custom', path: ['hash'], message: 'required for ring-hash: say what to hash on' });
    }
  });

export const HealthCheckSchema = z.object({
  protocol: z.enum(['tcp', 'http']),
  path: z.string().startsWith('/', 'must start with /').optional(),
  /** Checked port when it differs from the endpoint's. */
  port: port.optional(),
  expectedStatuses: z.array(z.tuple([z.number().int().min(100).max(599), z.number().int().min(100).max(599)])).default([[200, 399]]),
  intervalMs: durationMs.min(100, 'must be at least 100 ms').default(5000),
  timeoutMs: durationMs.min(10, 'must be at least 10 ms').default(1000),
  healthyThreshold: z.number().int().min(1).default(1),
  unhealthyThreshold: z.number().int().min(1).default(3),
});

export const OutlierDetectionSchema = z.object({
  consecutiveConnectFailures: z.number().int().min(1).default(5),
  consecutive5xx: z.number().int().min(1).default(5),
  baseEjectionTimeMs: durationMs.default(30_000),
  maxEjectionTimeMs: durationMs.default(300_000),
  maxEjectionPercent: z.number().int().min(0).max(100).default(50),
});

export const RetrySchema = z.object({
  attempts: z.number().int().min(0).max(10).default(2),
  perTryTimeoutMs: durationMs.optional(),
  /**
   * When to retry: `5xx`, `gateway-error` (502/503/504, and a per-try timeout), `reset` (the
   * endpoint reset before answering), `unavailable` (a gRPC call answered Trailers-Only with
   * UNAVAILABLE, retried whatever the method: list it only for calls safe to repeat).
   * Connect failures are always retried (`connect.retries`).
   */
  on: z.array(z.enum(['connect-failure', 'reset', '5xx', 'gateway-error', 'unavailable'])).default(['connect-failure', 'gateway-error']),
  backoffBaseMs: durationMs.default(25),
  backoffMaxMs: durationMs.default(250),
});

export const ServicePolicySchema = z.object({
  loadBalancer: LoadBalancerSchema.default(LoadBalancerSchema.parse({})),
  healthCheck: HealthCheckSchema.optional(),
  outlierDetection: OutlierDetectionSchema.optional(),
  connect: z
    .object({
      timeoutMs: durationMs.min(1).default(1000),
      /** Connection attempts on other endpoints after the first fails. */
      retries: z.number().int().min(0).max(10).default(2),
    })
    .default({ timeoutMs: 1000, retries: 2 }),
  /** Request retries for idempotent HTTP requests on http/http2/grpc ports. */
  retries: RetrySchema.optional(),
  http: z
    .object({
      /**
       * `append`: the calling sidecar adds the app's address to X-Forwarded-For (and
       * X-Forwarded-Proto: http when absent), so that the endpoint, which sees connections from
       * its own sidecar (127.0.0.6), learns who called. `untouched` (default): headers pass as the
       * app sent them.
       */
      xForwardedFor: z.enum(['untouched', 'append']).default('untouched'),
    })
    .optional(),
  locality: z
    .object({
      /** Prefer endpoints in the sidecar's own zone, then cluster, spilling over when too few are healthy. */
      prefer: z.enum(['zone', 'cluster', 'none']).default('zone'),
      minHealthyPercent: z.number().int().min(0).max(100).default(70),
    })
    .default({ prefer: 'zone', minHealthyPercent: 70 }),
  tls: z.object({ mode: TlsModeSchema }).optional(),
});

export const DirectDialSchema = z.enum(['keep', 'rebalance']);

const serviceIdPattern = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export const ServiceSchema = z
  .object({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal('Service'),
    /** Unique in the mesh; the file is `services/<id>.json`. See serviceId(). */
    id: z.string().max(253).regex(serviceIdPattern, 'must be a lowercase DNS-style name, e.g. orders.shop'),
    name: z.string().min(1).max(253),
    /** Kubernetes namespace of a kubernetes or cluster:NAME service. */
    namespace: dnsLabel.optional(),
    /** The registry scope of a registry service: a Consul datacenter, a Eureka server's name. */
    registry: z.string().min(1).max(253).optional(),
    source: ServiceSourceSchema,
    hostnames: z.array(dnsName).default([]),
    vips: z.array(VirtualIPSchema).default([]),
    ports: z.array(ServicePortSchema).min(1, 'a service needs at least one port'),
    endpoints: z.array(EndpointSchema).default([]),
    policy: ServicePolicySchema.default(ServicePolicySchema.parse({})),
    /**
     * Registry and static services: a connection an app makes to one of the endpoints' address:port
     * itself (Ribbon and Spring Cloud LoadBalancer pick an instance and dial it) is this service's,
     * counted under it and failed over like one to its VIP. `keep`: the app's endpoint while it may
     * be chosen (registry-healthy, weight above 0, active check not failed, not ejected), else the
     * service's balancing; `rebalance`: always the balancing. Unset: such a connection goes where the
     * app sent it, as to any address outside the mesh. Set from the bridge source's `directDial`.
     */
    directDial: DirectDialSchema.optional(),
    /** Free-form labels; the bridge keeps origin tags here for loop prevention. */
    labels: stringMap.default({}),
  })
  .superRefine((svc, ctx) => {
    const isKubernetesService = svc.source === 'kubernetes' || svc.source.startsWith('cluster:');
    if (isKubernetesService && !svc.namespace) {
      ctx.addIssue({ code: 'custom', path: ['namespace'], message: `required for a ${svc.source} service` });
    }
    if (!isKubernetesService && !svc.registry && svc.source !== 'static') {
      ctx.addIssue({ code: 'custom', path: ['registry'], message: `required for a ${svc.source} service` });
    }
    if (isKubernetesService && svc.directDial !== undefined) {
      // A pod IP:port is often behind several Services, is handed to another pod soon after its pod
      // goes, and is dialled on purpose (a StatefulSet peer found by its headless Service): it does
      // not name one service, and moving such a connection to another replica breaks its protocol.
      ctx.addIssue({
        code: 'custom',
        path: ['directDial'],
        message: `only registry and static services take direct dials; a ${svc.source} service's pod addresses are not routed as the service`,
      });
    }
    svc.vips.forEach((vip, i) => {
      if (vip.allocation === 'cluster-ip' && !isKubernetesService) {
        ctx.addIssue({
          code: 'custom',
          path: ['vips', i, 'allocation'],
          message: `only Kubernetes services have a ClusterIP; a ${svc.source} service gets a mesh VIP`,
        });
      }
    });
    reportDuplicates(
      ctx,
      svc.hostnames,
      (h) => h,
      ['hostnames'],
      (h) => `duplicate hostname ${h}`,
    );
    reportDuplicates(
      ctx,
      svc.vips,
      (v) => v.address,
      ['vips'],
      (v) => `duplicate virtual IP ${v.address}`,
    );
    reportDuplicates(
      ctx,
      svc.ports,
      (p) => String(p.port),
      ['ports'],
      (p) => `duplicate port ${p.port}`,
    );
    reportDuplicates(
      ctx,
      svc.ports.filter((p) => p.name !== undefined),
      (p) => p.name ?? '',
      ['ports'],
      (p) => `duplicate port name ${p.name}`,
    );
    reportDuplicates(
      ctx,
      svc.endpoints,
      (e) => `${e.address}|${e.port}`,
      ['endpoints'],
      (e) => `duplicate endpoint ${formatHostPort(e.address, e.port)}`,
    );
    if (svc.ports.length > 1 && svc.ports.some((p) => !p.name)) {
      ctx.addIssue({ code: 'custom', path: ['ports'], message: 'every port of a multi-port service needs a name' });
    }
  })
  .meta({ title: 'flb-mesh catalog service', description: 'One service of the catalog, published at /flb/mesh/services/<id>.json' });

function reportDuplicates<T>(
  ctx: z.RefinementCtx,
  items: readonly T[],
  key: (item: T) => string,
  path: (string | number)[],
  message: (item: T) => string,
): void {
  const firstIndex = new Map<string, number>();
  items.forEach((item, i) => {
    const k = key(item);
    const first = firstIndex.get(k);
    if (first === undefined) firstIndex.set(k, i);
    else ctx.addIssue({ code: 'custom', path: [...path, i], message: `${message(item)} (same as ${path.join('.')}[${first}])` });
  });
}

function formatHostPort(address: string, p: number): string {
  return address.includes(':') ? `[${address}]:${p}` : `${address}:${p}`;
}

export type Service = z.output<typeof ServiceSchema>;
export type ServiceInput = z.input<typeof ServiceSchema>;
export type Endpoint = z.output<typeof EndpointSchema>;
export type ServicePolicy = z.output<typeof ServicePolicySchema>;
export type ServiceSource = z.output<typeof ServiceSourceSchema>;

/**
 * The service schema with the checks that need the mesh: a mesh-allocated VIP must come from the
 * mesh's VIP ranges (a ClusterIP keeps whatever Kubernetes gave it).
 */
export function serviceSchemaFor(mesh: Pick<Mesh, 'vipRanges'>) {
  return ServiceSchema.superRefine((svc, ctx) => {
    svc.vips.forEach((vip, i) => {
      if (vip.allocation === 'mesh' && !mesh.vipRanges.some((range) => cidrContains(range, vip.address))) {
        ctx.addIssue({
          code: 'custom',
          path: ['vips', i, 'address'],
          message: `mesh-allocated VIP ${vip.address} is outside the mesh VIP ranges (${mesh.vipRanges.join(', ')})`,
        });
      }
    });
  });
}

/**
 * The catalog id of a service: `<name>.<namespace>` for Kubernetes, `<name>.<namespace>.<cluster>` for
 * another cluster's, `<name>.<registry>.<source>` for registries (lowercased, characters a DNS name
 * cannot hold become `-`), so ids from different sources never collide.
 */
export function serviceId(svc: { source: string; name: string; namespace?: string; registry?: string }): string {
  const clean = (s: string) =>
    s
      .toLowerCase()
      .replace(/[^a-z0-9.-]+/g, '-')
      .replace(/^[-.]+|[-.]+$/g, '')
      .replace(/\.{2,}/g, '.');
  if (svc.source === 'kubernetes') return `${clean(svc.name)}.${clean(svc.namespace ?? '')}`;
  if (svc.source.startsWith('cluster:')) return `${clean(svc.name)}.${clean(svc.namespace ?? '')}.${svc.source.slice(8)}`;
  if (svc.source === 'static') return `${clean(svc.name)}.static`;
  return `${clean(svc.name)}.${clean(svc.registry ?? 'default')}.${svc.source}`;
}

/** Path of a service's file inside the mesh codebase. */
export function serviceFilePath(id: string): string {
  return `services/${id}.json`;
}
