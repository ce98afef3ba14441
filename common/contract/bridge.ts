import { z } from 'zod';
import { API_VERSION, dnsLabel, dnsName, port } from './primitives.js';

// The registry bridge's configuration (`flb bridge run --config`): where services come from
// (sources), where the catalog goes (sinks), and how the bridge runs. One document, so that each
// registry added later is one more source or sink kind here.

const namespacePattern = z.string().regex(/^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$/, 'must be a namespace name, or * for all');

export const NamespaceSelectionSchema = z.object({
  /** Namespaces whose Services join the catalog; `*` means every namespace. */
  include: z.array(namespacePattern).min(1, 'name at least one namespace, or *').default(['*']),
  /** Namespaces left out even when `include` names them (or has `*`). */
  exclude: z.array(dnsLabel).default([]),
});

/**
 * Registry sources: a connection an app makes to an instance's address:port itself (Ribbon, Spring
 * Cloud LoadBalancer) is routed as the instance's service: `keep` (default) sends it to that
 * instance while it is healthy and balances it over the service's healthy instances when not;
 * `rebalance` always balances; `off` leaves it where the app sent it. Set on each published service
 * as its `directDial`.
 */
const directDial = z.enum(['keep', 'rebalance', 'off']).default('keep');

const sourceCommon = {
  /** Unique among the sources; shown in status and metrics. */
  name: dnsLabel,
  /**
   * A source the bridge has not heard from for this long is reported stale (status, metrics). Its
   * services stay published: a registry being away never removes what it registered.
   */
  staleAfterSeconds: z.number().int().min(1).default(60),
};

export const KubernetesSourceSchema = z.object({
  kind: z.literal('kubernetes'),
  ...sourceCommon,
  name: dnsLabel.default('kubernetes'),
  namespaces: NamespaceSelectionSchema.default({ include: ['*'], exclude: [] }),
  /**
   * Services without the `flomesh.io/export` annotation: exported when true (the default), left out
   * when false (then only Services annotated `flomesh.io/export: "true"` join).
   */
  exportByDefault: z.boolean().default(true),
});

/** Statuses an Eureka instance can have (com.netflix.appinfo.InstanceInfo.InstanceStatus). */
export const EurekaStatusSchema = z.enum(['UP', 'DOWN', 'STARTING', 'OUT_OF_SERVICE', 'UNKNOWN']);

const eurekaServerUrl = z
  .url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' })
  .refine((u) => !new URL(u).username && !new URL(u).password, 'must not hold credentials (they would show in status and logs): use basicAuth')
  .meta({
    description:
      "An Eureka server's service URL, as its clients' defaultZone names it: http://eureka:8761/eureka/ (Spring Cloud) or http://eureka:8080/eureka/v2/ (Netflix); with no path, /eureka/ then /eureka/v2/ are tried",
  });

export const EurekaSourceSchema = z.object({
  kind: z.literal('eureka'),
  ...sourceCommon,
  name: dnsLabel.default('eureka'),
  /** Peers of one Eureka cluster: read from the first that answers, the next on failure. */
  servers: z.array(eurekaServerUrl).min(1, 'name at least one Eureka server'),
  /** The registry's name in catalog ids (`orders.<registry>.eureka`); the source's name when unset. */
  registry: dnsLabel.optional(),
  /** Sent on every request; the password is read from a file (a mounted Secret), again at each (re)connection. */
  basicAuth: z.object({ username: z.string().min(1), passwordFile: z.string().min(1) }).optional(),
  /** PEM files: the CA that signed the servers' certificates (else Node's), and a client certificate when they ask for one. */
  tls: z
    .object({ caFile: z.string().min(1).optional(), certFile: z.string().min(1).optional(), keyFile: z.string().min(1).optional() })
    .refine((t) => !t.certFile === !t.keyFile, 'certFile and keyFile go together')
    .optional(),
  /** How often /apps/delta is asked (Eureka clients ask every 30 s; a delta is small). */
  intervalSeconds: z.number().int().min(1).max(300).default(5),
  /** One request's limit, connection and whole answer. */
  timeoutSeconds: z.number().int().min(1).max(120).default(10),
  /** Instances with these statuses are published; UP ones healthy, others as endpoints never chosen. */
  statuses: z.array(EurekaStatusSchema).min(1).default(['UP']),
  /** The port clients dial on the service's VIP (`http://orders/` is port 80), and what it speaks. */
  servicePort: port.default(80),
  protocol: z.enum(['http', 'tcp']).default('http'),
  /**
   * An instance with both ports enabled is reached on its `port`, unless this is true. An app
   * reached on `securePort` is published on port 443 as `tcp`: the app speaks TLS itself.
   */
  preferSecurePort: z.boolean().default(false),
  directDial,
  /** A larger answer (a garbage or runaway server) is refused and the last good state kept. */
  maxResponseBytes: z
    .number()
    .int()
    .min(1024)
    .default(64 * 1024 * 1024),
});

const consulAddress = z
  .url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' })
  .refine((u) => !new URL(u).username && !new URL(u).password, 'must not hold credentials (they would show in status and logs): use tokenFile')
  .refine((u) => ['', '/'].includes(new URL(u).pathname), 'must be the agent or server address only (the API paths are added), e.g. http://consul:8500')
  .meta({ description: 'A Consul agent or server HTTP API address, e.g. http://127.0.0.1:8500 or https://consul.example:8501' });

export const ConsulSourceSchema = z
  .object({
    kind: z.literal('consul'),
    ...sourceCommon,
    name: dnsLabel.default('consul'),
    address: consulAddress.default('http://127.0.0.1:8500'),
    /** The datacenter read (`?dc=`); the agent's own when unset (read from /v1/agent/self). */
    datacenter: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be a Consul datacenter name (letters, digits, - and _)')
      .optional(),
    /** Consul's DNS domain: names are <service>.service.<domain> and <service>.service.<datacenter>.<domain>. */
    domain: dnsName.default('consul'),
    /** A file holding the ACL token (a mounted Secret); read at start and again after Consul refuses it. */
    tokenFile: z.string().min(1).optional(),
    /** PEM files: the CA of Consul's HTTPS certificate (else Node's), a client certificate when Consul verifies clients. */
    tls: z
      .object({
        caFile: z.string().min(1).optional(),
        certFile: z.string().min(1).optional(),
        keyFile: z.string().min(1).optional(),
        /** The name Consul's certificate is checked against, when the address is not it (e.g. server.dc1.consul). */
        serverName: dnsName.optional(),
      })
      .refine((t) => !t.certFile === !t.keyFile, 'certFile and keyFile go together')
      .optional(),
    /** Which instances take traffic: those whose checks all pass (Consul's `?passing`), or warning ones too. */
    healthy: z.enum(['passing', 'passing-or-warning']).default('passing'),
    /** Consul service names published (`*`: all) and left out; Consul's own `consul` service is left out by default. */
    services: z
      .object({
        include: z.array(z.string().min(1)).min(1, 'name at least one service, or *').default(['*']),
        exclude: z.array(z.string().min(1)).default(['consul']),
      })
      .default({ include: ['*'], exclude: ['consul'] }),
    /** Instances published: those with every tag in `include` and none in `exclude`. */
    tags: z.object({ include: z.array(z.string().min(1)).default([]), exclude: z.array(z.string().min(1)).default([]) }).default({ include: [], exclude: [] }),
    /** Instances published: those whose service metadata has each of these values. */
    meta: z.record(z.string().min(1), z.string()).default({}),
    /**
     * A tagged address preferred over Consul's own rule (the service's address, else its node's),
     * e.g. lan_ipv4 or wan: the service's tagged address of that name, else the node's, else the rule.
     */
    addressTag: z.string().min(1).optional(),
    /** What the service port speaks when the instances' metadata does not say (`protocol` in Service.Meta). */
    protocol: z.enum(['tcp', 'http', 'http2', 'grpc']).default('tcp'),
    directDial,
    /**
     * A service gone from Consul (deregistered) keeps its name and VIP this long, with no endpoints,
     * before it leaves the catalog: a service re-registered meanwhile (a restart) changes nothing else.
     */
    removeAfterSeconds: z.number().int().min(0).max(86400).default(30),
    /** How long one blocking query waits for a change; Consul adds up to 1/16 of it. */
    waitSeconds: z.number().int().min(1).max(600).default(30),
    /** Changed services fetched at once; the bridge holds at most this plus 4 connections to Consul (its default limit per client is 200). */
    fetchConcurrency: z.number().int().min(1).max(64).default(8),
    /** At least this long between two blocking queries of one watch (Consul asks clients to rate-limit). */
    minQueryIntervalMs: z.number().int().min(0).max(60_000).default(100),
    /**
     * A change Consul signals without saying which service (an instance with no check registered or
     * edited) is found by fetching every service, at most this often.
     */
    sweepIntervalSeconds: z.number().int().min(1).default(30),
    /** One request's limit, connecting and a non-blocking answer. */
    timeoutSeconds: z.number().int().min(1).max(120).default(10),
    /** A larger answer (garbage, or a runaway registry) is refused and the last good state kept. */
    maxResponseBytes: z
      .number()
      .int()
      .min(1024)
      .default(256 * 1024 * 1024),
  })
  .superRefine((c, ctx) => {
    if (c.waitSeconds * 1.1 >= c.staleAfterSeconds)
      ctx.addIssue({
        code: 'custom',
        path: ['waitSeconds'],
        message: `must be well under staleAfterSeconds (${c.staleAfterSeconds}): a quiet blocking query would read as a registry that went away`,
      });
  });

export const RepoSinkSchema = z.object({
  kind: z.literal('repo'),
  name: dnsLabel.default('repo'),
  /** The config center's base URL, e.g. https://flb-repo.flomesh.svc:6060 */
  url: z.url(),
  /** PEM files: the repo's CA, and the client certificate (CN flb-control-plane) and key it requires for writes. */
  tls: z
    .object({
      caFile: z.string().min(1).optional(),
      certFile: z.string().min(1),
      keyFile: z.string().min(1),
    })
    .optional(),
});

/**
 * Which catalog services a registry sink writes (registry-bridge/README.md, Sinks): those of the
 * sources named in `from`, Kubernetes ones only in `namespaces`, and, per Service, the
 * `flomesh.io/registry-sync` annotation (`"true"` or `"false"`) over `exportByDefault`.
 */
const sinkScope = {
  /** Source names whose services are written; unset: every kubernetes source. A sink never writes what came from its own registry. */
  from: z.array(dnsLabel).min(1).optional(),
  namespaces: NamespaceSelectionSchema.default({ include: ['*'], exclude: [] }),
  /** Kubernetes Services without the `flomesh.io/registry-sync` annotation: written when true (the default). */
  exportByDefault: z.boolean().default(true),
};

export const ConsulSinkSchema = z.object({
  kind: z.literal('consul'),
  name: dnsLabel.default('consul'),
  address: consulAddress.default('http://127.0.0.1:8500'),
  /** The datacenter written (`?dc=`); the agent's own when unset. */
  datacenter: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be a Consul datacenter name (letters, digits, - and _)')
    .optional(),
  /**
   * A file holding the ACL token (needs node:write on the nodes, a node_prefix rule on `node`, and
   * service:write on the names written); read again after Consul refuses it.
   */
  tokenFile: z.string().min(1).optional(),
  tls: z
    .object({
      caFile: z.string().min(1).optional(),
      certFile: z.string().min(1).optional(),
      keyFile: z.string().min(1).optional(),
      serverName: dnsName.optional(),
    })
    .refine((t) => !t.certFile === !t.keyFile, 'certFile and keyFile go together')
    .optional(),
  /**
   * The synthetic nodes' name (as consul-k8s's k8s-sync); unset: flb-<the mesh's clusterName>. One
   * per cluster. With `nodes` above 1 it is the first node's name and the others' prefix:
   * <node>, <node>-1, … <node>-<nodes - 1>.
   */
  node: z
    .string()
    .regex(/^[A-Za-z0-9][-A-Za-z0-9_.]{0,127}$/, 'must be a Consul node name')
    .optional(),
  /**
   * How many synthetic nodes the instances are spread over, each Service's on the node a hash of
   * its catalog id picks (a restart puts each where it was). Consul 1.16 does work proportional to
   * a node's size for every instance written to it and every resync reads whole nodes (64 MiB at
   * most each, about 70,000 instances), so one node carrying a large catalog syncs at ~30
   * instances/s at 30,000; 16 kept ~1,000/s (registry-bridge/README.md, One node's size). A fixed
   * default, not one chosen by the catalog's size: a count that changed with the size would move
   * instances at every restart. 16 costs a small catalog 32 small reads per resync; 1 is
   * consul-k8s's single node (and this sink's layout before `nodes`). Changed, the instances move:
   * each is written on its new node before it is removed from the old, and nodes left empty go.
   */
  nodes: z.number().int().min(1).max(128).default(16),
  /** The synthetic node's address (never dialled: instances carry their own). */
  nodeAddress: z.string().min(1).default('127.0.0.1'),
  ...sinkScope,
  /** Prepended to every name written (consul-k8s's -consul-service-prefix). */
  servicePrefix: z
    .string()
    .regex(/^[a-z0-9-]*$/, 'lowercase letters, digits and -')
    .default(''),
  /** Kubernetes services are written as <name>-<namespace> (else two namespaces' `web` are one Consul service, as in consul-k8s). */
  namespaceSuffix: z.boolean().default(false),
  /** Tags on every instance written (consul-k8s tags with k8s). */
  tags: z.array(z.string().min(1)).default(['k8s']),
  /** How often what the node holds is read back, to put back what someone removed (a read: no write unless something differs). */
  resyncSeconds: z.number().int().min(5).default(60),
  /** Requests in flight at once: transactions (/v1/txn, up to 32 instances each), lone registrations and deregistrations. */
  writeConcurrency: z.number().int().min(1).max(64).default(4),
  timeoutSeconds: z.number().int().min(1).max(120).default(10),
});

export const KubernetesSinkSchema = z.object({
  kind: z.literal('kubernetes'),
  name: dnsLabel.default('kubernetes'),
  /** Where registry services appear as headless Services with EndpointSlices. */
  namespace: dnsLabel,
  /** Source names whose services are written; unset: every consul and eureka source. */
  from: z.array(dnsLabel).min(1).optional(),
  /** Prepended to every Service name written. */
  servicePrefix: z
    .string()
    .regex(/^([a-z0-9]([-a-z0-9]*[a-z0-9])?-)?$/, 'empty, or a DNS label ending in -')
    .default(''),
});

/**
 * The Eureka sink: catalog services (Kubernetes ones by default) registered as Eureka instances and
 * kept alive by renewals (registry-bridge/README.md, Sinks into registries: Eureka).
 */
export const EurekaSinkSchema = z
  .object({
    kind: z.literal('eureka'),
    name: dnsLabel.default('eureka'),
    /** Peers of one Eureka cluster (they replicate what one is told): written to the first that answers, the next on failure. */
    servers: z.array(eurekaServerUrl).min(1, 'name at least one Eureka server'),
    basicAuth: z.object({ username: z.string().min(1), passwordFile: z.string().min(1) }).optional(),
    tls: z
      .object({ caFile: z.string().min(1).optional(), certFile: z.string().min(1).optional(), keyFile: z.string().min(1).optional() })
      .refine((t) => !t.certFile === !t.keyFile, 'certFile and keyFile go together')
      .optional(),
    ...sinkScope,
    /** Prepended to every application name written (upper-cased by Eureka, as every app name). */
    servicePrefix: z
      .string()
      .regex(/^[a-z0-9-]*$/, 'lowercase letters, digits and -')
      .default(''),
    /** Kubernetes services are written as <name>-<namespace> (else two namespaces' `web` are one Eureka application). */
    namespaceSuffix: z.boolean().default(false),
    /**
     * Each instance is renewed this often, its renewals spread evenly over the interval. Eureka
     * servers count on 60/30 renewals a minute per instance (expected-client-renewal-interval-seconds,
     * 30 by default) for their self-preservation threshold: never set this above the server's value.
     */
    renewalIntervalSeconds: z.number().int().min(1).max(30).default(30),
    /** The lease written into each instance: the server evicts an instance not renewed for this long. */
    leaseDurationSeconds: z.number().int().min(2).max(3600).default(90),
    /** Requests in flight at once (registrations, renewals, cancels): the connections held to the server. */
    writeConcurrency: z.number().int().min(1).max(256).default(16),
    timeoutSeconds: z.number().int().min(1).max(120).default(10),
  })
  .refine((c) => c.leaseDurationSeconds >= 2 * c.renewalIntervalSeconds, {
    path: ['leaseDurationSeconds'],
    message: 'must be at least twice renewalIntervalSeconds: one late renewal must not let the server evict an instance',
  });

export const SourceConfigSchema = z.discriminatedUnion('kind', [KubernetesSourceSchema, EurekaSourceSchema, ConsulSourceSchema]);
export const SinkConfigSchema = z.discriminatedUnion('kind', [RepoSinkSchema, ConsulSinkSchema, KubernetesSinkSchema, EurekaSinkSchema]);

export const LeaderElectionSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** Where the Lease lives: the control plane's namespace. */
    namespace: dnsLabel.default('flomesh'),
    name: dnsName.default('flb-bridge'),
    /** A standby takes over this long after the leader stops renewing. */
    leaseDurationSeconds: z.number().int().min(2).default(15),
    /** The leader gives up leading when it could not renew for this long (less than the lease). */
    renewDeadlineSeconds: z.number().int().min(1).default(10),
    retryPeriodSeconds: z.number().int().min(1).default(2),
  })
  .superRefine((l, ctx) => {
    if (l.renewDeadlineSeconds >= l.leaseDurationSeconds) {
      ctx.addIssue({ code: 'custom', path: ['renewDeadlineSeconds'], message: 'must be less than leaseDurationSeconds, or two replicas could lead at once' });
    }
    if (l.retryPeriodSeconds >= l.renewDeadlineSeconds) {
      ctx.addIssue({ code: 'custom', path: ['retryPeriodSeconds'], message: 'must be less than renewDeadlineSeconds' });
    }
  });

export const BridgeConfigSchema = z
  .object({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal('BridgeConfig'),
    /** Where the mesh settings (mesh.json) come from: a ConfigMap on Kubernetes, a file on VMs. */
    mesh: z
      .object({
        configMap: z.object({ namespace: dnsLabel, name: dnsName, key: z.string().min(1).default('mesh.yaml') }).optional(),
        file: z.string().min(1).optional(),
      })
      .refine((m) => (m.configMap ? 1 : 0) + (m.file ? 1 : 0) === 1, 'name exactly one of configMap or file'),
    sources: z.array(SourceConfigSchema).min(1, 'at least one source is needed'),
    sinks: z.array(SinkConfigSchema).min(1, 'at least one sink is needed'),
    /** The repo's CA (PEM file), kept as a ConfigMap in every namespace with injected pods, so sidecars can verify the repo. */
    repoCaFile: z.string().min(1).optional(),
    leaderElection: LeaderElectionSchema.default(LeaderElectionSchema.parse({})),
    sidecars: z
      .object({
        /** Sidecar codebases of pods that went away unseen are collected after the first full list, and this often after it. */
        resyncSeconds: z.number().int().min(10).default(300),
      })
      .default({ resyncSeconds: 300 }),
  })
  .superRefine((config, ctx) => {
    for (const [field, items] of [
      ['sources', config.sources],
      ['sinks', config.sinks],
    ] as const) {
      const seen = new Map<string, number>();
      items.forEach((item, i) => {
        const first = seen.get(item.name);
        if (first !== undefined)
          ctx.addIssue({ code: 'custom', path: [field, i, 'name'], message: `duplicate name ${item.name} (same as ${field}[${first}])` });
        else seen.set(item.name, i);
      });
    }
    config.sinks.forEach((sink, i) => {
      if (sink.kind === 'repo' || !sink.from) return;
      sink.from.forEach((name, j) => {
        const source = config.sources.find((s) => s.name === name);
        if (!source) ctx.addIssue({ code: 'custom', path: ['sinks', i, 'from', j], message: `no source is named ${name}` });
        // Its own registry's services written back into it would be there twice.
        else if (
          source.kind === sink.kind &&
          (sink.kind === 'kubernetes' ||
            (source.kind === 'consul' && sink.kind === 'consul' && source.address === sink.address) ||
            (source.kind === 'eureka' && sink.kind === 'eureka' && source.servers.some((server) => sink.servers.includes(server))))
        )
          ctx.addIssue({
            code: 'custom',
            path: ['sinks', i, 'from', j],
            message: `source ${name} reads the registry this sink writes; its services are there already`,
          });
      });
    });
  })
  .meta({ title: 'flb-mesh BridgeConfig', description: 'The registry bridge: sources, sinks, leader election (flb bridge run --config)' });

export type BridgeConfig = z.output<typeof BridgeConfigSchema>;
export type KubernetesSourceConfig = z.output<typeof KubernetesSourceSchema>;
export type EurekaSourceConfig = z.output<typeof EurekaSourceSchema>;
export type ConsulSourceConfig = z.output<typeof ConsulSourceSchema>;
export type RepoSinkConfig = z.output<typeof RepoSinkSchema>;
export type ConsulSinkConfig = z.output<typeof ConsulSinkSchema>;
export type KubernetesSinkConfig = z.output<typeof KubernetesSinkSchema>;
export type EurekaSinkConfig = z.output<typeof EurekaSinkSchema>;
export type SourceConfig = z.output<typeof SourceConfigSchema>;
export type SinkConfig = z.output<typeof SinkConfigSchema>;
