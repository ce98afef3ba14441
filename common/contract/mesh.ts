import { z } from 'zod';
import { API_VERSION, cidr, dnsLabel, dnsName, interfaceName, port } from './primitives.js';
import { MESH_IMAGE } from './version.js';

/** The ports users see (mesh.json's `ports`; injector/README.md says where the injector uses them). */
export const DEFAULT_PORTS = {
  admin: 15000,
  outbound: 15001,
  inbound: 15003,
  metrics: 15010,
  dns: 15053,
  livenessProbe: 15901,
  readinessProbe: 15902,
  startupProbe: 15903,
} as const;

export const DEFAULT_PROXY_UID = 1500;
export const DEFAULT_VIP_RANGE = '240.240.0.0/16';
export const DEFAULT_REPO_PORT = 6060;
/** Envoy's TCP proxy default idle_timeout. */
export const DEFAULT_TCP_IDLE_TIMEOUT_SECONDS = 3600;

export const SidecarPortsSchema = z
  .object({
    admin: port.default(DEFAULT_PORTS.admin),
    outbound: port.default(DEFAULT_PORTS.outbound),
    inbound: port.default(DEFAULT_PORTS.inbound),
    metrics: port.default(DEFAULT_PORTS.metrics),
    dns: port.default(DEFAULT_PORTS.dns),
    livenessProbe: port.default(DEFAULT_PORTS.livenessProbe),
    readinessProbe: port.default(DEFAULT_PORTS.readinessProbe),
    startupProbe: port.default(DEFAULT_PORTS.startupProbe),
  })
  .superRefine((ports, ctx) => {
    const seen = new Map<number, string>();
    for (const [name, value] of Object.entries(ports)) {
      const other = seen.get(value);
      if (other) ctx.addIssue({ code: 'custom', path: [name], message: `port ${value} is also used for ${other}` });
      seen.set(value, name);
    }
  });

/**
 * Values that name a feature not built yet stay in the enum, so that a user who writes one is told
 * exactly that (and the JSON Schema shows what is coming), but they are refused: accepted, they
 * would silently do nothing.
 */
function refuseUnbuilt<const T extends string>(values: readonly [T, ...T[]], unbuilt: Partial<Record<T, string>>, description: string) {
  return z
    .enum(values)
    .superRefine((value, ctx) => {
      const why = unbuilt[value];
      if (why) ctx.addIssue({ code: 'custom', message: why });
    })
    .meta({ description });
}

export const InterceptionModeSchema = z.enum(['iptables', 'cni', 'ebpf']).meta({
  description:
    'How pod traffic reaches the sidecar: iptables (an init container), cni (the CNI plugin and node agent write the rules), ebpf (the node agent registers the pod with the eBPF programs for outbound and DNS, and writes the inbound rule; excludeInterfaces is refused there)',
});

/**
 * What eBPF mode cannot honour, refused rather than ignored. connect() is intercepted before a
 * route, and so an interface, is chosen: an interface exclusion has nothing to match there.
 */
export const EBPF_EXCLUDE_INTERFACES_REFUSAL =
  'cannot be honoured in eBPF mode (connect() is intercepted before a route, and so an interface, is chosen): exclude the destinations by range (excludeOutboundIpRanges) instead, or use mode "iptables" or "cni"';

export function refuseWhatEbpfCannotHonour(settings: { mode: string; excludeInterfaces: readonly string[] }, ctx: z.RefinementCtx): void {
  if (settings.mode === 'ebpf' && settings.excludeInterfaces.length > 0) {
    ctx.addIssue({ code: 'custom', path: ['excludeInterfaces'], message: EBPF_EXCLUDE_INTERFACES_REFUSAL });
  }
}

/**
 * A connection whose original destination is no VIP but the pod address:port of a Kubernetes
 * service's endpoint: a socket load balancer (Cilium's or Calico's cgroup connect4 in the pod's
 * cgroup) may have rewritten the ClusterIP the app dialled before the mesh's redirect saw it.
 * `on`: such a connection is that service's (balanced, retried, failed over, counted under it) when
 * the address:port is an endpoint of exactly one service with a ClusterIP and of no other service;
 * `off`: it goes to that pod, as Istio does with a pod-IP destination; `auto` (default): `on` when
 * the mesh's `interception.mode` is `ebpf`, else `off`. See sidecar/proxy/routes.ts for why.
 */
export const EndpointFallbackSchema = z.enum(['auto', 'on', 'off']).meta({
  description:
    "A connection to a Kubernetes service's endpoint address:port (a socket load balancer may have rewritten the ClusterIP the app dialled) is treated as the service's when the address:port is an endpoint of exactly one service, which has a ClusterIP: on, off, or auto (on when interception.mode is ebpf)",
});

/** Mesh-wide interception defaults; a pod's annotations narrow them (see interception.ts). */
export const MeshInterceptionSchema = z
  .object({
    mode: InterceptionModeSchema.default('iptables'),
    captureDns: z.boolean().default(true),
    ipv6: z.enum(['auto', 'enabled', 'disabled']).default('auto'),
    excludeOutboundPorts: z.array(port).default([]),
    excludeInboundPorts: z.array(port).default([]),
    excludeOutboundIpRanges: z.array(cidr).default([]),
    /** Empty means every destination is intercepted. */
    includeOutboundIpRanges: z.array(cidr).default([]),
    excludeInterfaces: z.array(interfaceName).default([]),
  })
  .superRefine(refuseWhatEbpfCannotHonour);

const resourceQuantity = z.string().regex(/^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$/, 'must be a Kubernetes quantity such as 100m or 64Mi');
export const ResourcesSchema = z.object({
  requests: z.object({ cpu: resourceQuantity.optional(), memory: resourceQuantity.optional() }).default({}),
  limits: z.object({ cpu: resourceQuantity.optional(), memory: resourceQuantity.optional() }).default({}),
});

/** What the injector puts into pods; image and command are settings so a Pipy image can be injected instead. */
export const SidecarTemplateSchema = z.object({
  /** Defaults to this release's image (never `latest`); an image the user sets is kept. */
  image: z.string().min(1).default(MESH_IMAGE),
  imagePullPolicy: z.enum(['Always', 'IfNotPresent', 'Never']).default('IfNotPresent'),
  command: z.array(z.string()).default(['flb', 'sidecar']),
  args: z.array(z.string()).default([]),
  /** Without native sidecars: a postStart hook that returns once the proxy is ready, so apps start after it. */
  waitReadyCommand: z.array(z.string()).default(['flb', 'sidecar', 'wait-ready', '--timeout=120s']),
  resources: ResourcesSchema.default({ requests: { cpu: '100m', memory: '64Mi' }, limits: { memory: '256Mi' } }),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
  /**
   * NODE_OPTIONS of the sidecar container (empty: not set). The default caps V8's young
   * generation at 2 MiB per semi-space: under bursts of new connections it otherwise grows to
   * 16 MiB and the sidecar's RSS stays ~25 MiB higher afterwards, for no measurable CPU saving
   * (bench:sidecar, the sidecar's JavaScript runs once per connection, not per byte).
   */
  nodeOptions: z.string().default('--max-semi-space-size=2'),
});

export const InitTemplateSchema = z.object({
  image: z.string().min(1).default(MESH_IMAGE),
  command: z.array(z.string()).default(['flb', 'iptables', 'apply']),
});

const MTLS_NOT_BUILT = 'is not available yet: sidecar-to-sidecar mTLS is not built; "disabled" is the only mode for now';
export const TlsModeSchema = refuseUnbuilt(
  ['disabled', 'permissive', 'strict'],
  { permissive: `"permissive" ${MTLS_NOT_BUILT}`, strict: `"strict" ${MTLS_NOT_BUILT}` },
  'Sidecar-to-sidecar mTLS: disabled; permissive and strict are reserved and refused until mTLS is built',
);

export const MeshSchema = z
  .object({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal('Mesh'),
    name: dnsLabel,
    /** The control plane's namespace; its pods are never injected. */
    controlPlaneNamespace: dnsLabel.default('flomesh'),
    /** This cluster's name among several (multi-cluster); sources name remote services `cluster:NAME`. */
    clusterName: dnsLabel.default('local'),
    clusterDomain: dnsName.default('cluster.local'),
    ports: SidecarPortsSchema.default(SidecarPortsSchema.parse({})),
    proxyUid: z.number().int().min(1, 'must not be root (0)').max(2147483647).default(DEFAULT_PROXY_UID),
    interception: MeshInterceptionSchema.default(MeshInterceptionSchema.parse({})),
    /** Registry services without a ClusterIP get a stable VIP from these ranges. */
    vipRanges: z.array(cidr).min(1, 'at least one range is needed').default([DEFAULT_VIP_RANGE]),
    dns: z
      .object({
        /** Extra domains the sidecar answers for besides cluster names, e.g. `consul` or `eureka`. */
        domains: z.array(dnsName).default([]),
        ttlSeconds: z.number().int().min(0).max(86400).default(30),
      })
      .default({ domains: [], ttlSeconds: 30 }),
    outbound: z
      .object({
        unknownDestination: z.enum(['passthrough', 'deny']).default('passthrough'),
        endpointFallback: EndpointFallbackSchema.default('auto'),
      })
      .default({ unknownDestination: 'passthrough', endpointFallback: 'auto' }),
    /** Connections the sidecar forwards as plain TCP: outbound `tcp` ports, passthrough and inbound. */
    tcp: z
      .object({
        /**
         * A connection that moves no byte either way for this long is reset on both sides (a peer
         * that vanished holds two sockets and their buffers otherwise); 0: never. TCP keepalive
         * (5 min, then 4 probes 30 s apart) finds dead peers sooner on its own.
         */
        idleTimeoutSeconds: z.number().int().min(0).max(604800, 'at most 7 days (604800)').default(DEFAULT_TCP_IDLE_TIMEOUT_SECONDS),
      })
      .default({ idleTimeoutSeconds: DEFAULT_TCP_IDLE_TIMEOUT_SECONDS }),
    /** What sidecars report beyond their metrics; applied live, as every mesh.json change. */
    telemetry: z
      .object({
        /** One structured log line per HTTP request (HTTP/2 stream, gRPC call) and per `tcp` connection. */
        accessLog: z.boolean().default(false),
        /**
         * Inbound `http`, `http2` and `grpc` ports (sidecar.json's `inbound.ports`) go through the
         * sidecar's HTTP proxies, for server-side request metrics (response codes, gRPC status,
         * durations, as the app answered). Off by default: that costs the app's every request what
         * the outbound HTTP path costs (~80-150 us of sidecar CPU against ~9 us forwarded natively
         * as `tcp`, which gives connection and byte metrics only).
         */
        inboundRequestMetrics: z.boolean().default(false),
      })
      .default({ accessLog: false, inboundRequestMetrics: false }),
    /** Room for sidecar-to-sidecar mTLS: the default for services that do not set their own. */
    tls: z.object({ mode: TlsModeSchema.default('disabled') }).default({ mode: 'disabled' }),
    sidecar: SidecarTemplateSchema.default(SidecarTemplateSchema.parse({})),
    init: InitTemplateSchema.default(InitTemplateSchema.parse({})),
    repo: z
      .object({
        /** Where sidecars fetch their configuration. */
        url: z.url().default('https://flb-repo.flomesh.svc:6060'),
        /** Audience of the projected ServiceAccount token sidecars show the repo. */
        tokenAudience: z.string().min(1).default('flb-repo'),
      })
      .default({ url: 'https://flb-repo.flomesh.svc:6060', tokenAudience: 'flb-repo' }),
  })
  .meta({ title: 'flb-mesh mesh.json', description: 'Mesh-wide settings, published at /flb/mesh/mesh.json' });

export type Mesh = z.output<typeof MeshSchema>;
export type MeshInput = z.input<typeof MeshSchema>;
export type SidecarPorts = z.output<typeof SidecarPortsSchema>;
export type InterceptionMode = z.output<typeof InterceptionModeSchema>;

/** The mesh an install starts with when the user says nothing. */
export function defaultMesh(name = 'flb'): Mesh {
  return MeshSchema.parse({ apiVersion: API_VERSION, kind: 'Mesh', name });
}
