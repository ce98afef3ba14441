import { isIP } from 'node:net';
import { z } from 'zod';
import { API_VERSION, cidr, dnsLabel, dnsName, durationMs, ipAddress, port } from './primitives.js';
import { PortProtocolSchema } from './catalog.js';
import { SIDECAR_ID_PATTERN } from './identity.js';

export const PodIdentitySchema = z.object({
  kind: z.literal('pod'),
  namespace: dnsLabel,
  name: z.string().min(1).max(253),
  serviceAccount: z.string().min(1).max(253),
  node: z.string().optional(),
  /** Room for mTLS: the workload identity certificates will carry. */
  spiffeId: z.string().startsWith('spiffe://').optional(),
});

export const VmIdentitySchema = z.object({
  kind: z.literal('vm'),
  name: z.string().min(1).max(253),
  hostname: z.string().optional(),
  addresses: z.array(ipAddress).default([]),
  spiffeId: z.string().startsWith('spiffe://').optional(),
});

export const ProbeSchema = z.object({
  kind: z.enum(['liveness', 'readiness', 'startup']),
  /** The sidecar port the kubelet now probes (15901-15903 by default). */
  sidecarPort: port,
  /** The app's original probe, resolved to a port number. */
  original: z.discriminatedUnion('type', [
    z.object({
      type: z.literal('http'),
      port,
      path: z.string().default('/'),
      scheme: z.enum(['HTTP', 'HTTPS']).default('HTTP'),
      host: z.string().optional(),
      headers: z.array(z.object({ name: z.string().min(1), value: z.string() })).default([]),
    }),
    z.object({ type: z.literal('tcp'), port, host: z.string().optional() }),
    z.object({ type: z.literal('grpc'), port, service: z.string().optional() }),
  ]),
  timeoutSeconds: z.number().int().min(1).default(1),
});

export const DnsRecordSchema = z.object({
  name: dnsName,
  type: z.enum(['A', 'AAAA']),
  address: ipAddress,
  /** The service the name belongs to, so the proxy can map VIP:port back to it. */
  service: z.string().optional(),
});

export const HealthGateSchema = z
  .object({
    /**
     * tcp: a connect; http: a GET; readiness (in `flb sidecar` only): the app's own readiness probes,
     * as the sidecar runs them for the kubelet (FLB_APP_PROBES), so the VIP follows what Kubernetes
     * sees; address, port and path are then not used.
     */
    protocol: z.enum(['tcp', 'http', 'readiness']),
    address: ipAddress.default('127.0.0.1'),
    /** Needed for tcp and http. */
    port: port.optional(),
    path: z.string().startsWith('/').optional(),
    /** http: the one status that means healthy; unset, any 2xx or 3xx (as a Kubernetes httpGet probe). */
    expectedStatus: z.number().int().min(100).max(599).optional(),
    intervalMs: durationMs.min(100).default(2000),
    timeoutMs: durationMs.min(10).default(1000),
    healthyThreshold: z.number().int().min(1).default(2),
    unhealthyThreshold: z.number().int().min(1).default(3),
  })
  .refine((check) => check.protocol === 'readiness' || check.port !== undefined, { message: 'tcp and http checks need a port', path: ['port'] });

const asNumber = z.number().int().min(1, 'must be an AS number, 1-4294967295').max(4294967295, 'must be an AS number, 1-4294967295');
const uint32 = z.number().int().min(0).max(4294967295);
const ofFamily = (family: 4 | 6) => ipAddress.refine((v) => isIP(v) === family, { message: `must be an IPv${family} address` });

export const BgpSchema = z.object({
  localAs: asNumber,
  routerId: z.ipv4({ message: 'must be an IPv4 address (BGP router ids are 32-bit)' }),
  holdTimeSeconds: z
    .number()
    .int()
    .max(65535)
    .refine((v) => v === 0 || v >= 3, 'must be 0 or at least 3 (RFC 4271)')
    .default(90),
  /** Wait between a failed or lost connection to a peer and the next attempt (jittered 75-100 %). */
  connectRetrySeconds: z.number().int().min(1).max(3600).default(5),
  /** On SIGTERM: VIPs are announced with GRACEFUL_SHUTDOWN (65535:0, RFC 8326) this long, then withdrawn. */
  drainSeconds: z.number().int().min(0).max(3600).default(5),
  /** Where passive peers connect to (all addresses when unset); used only when a peer is passive. */
  listenAddress: ipAddress.optional(),
  listenPort: port.default(179),
  peers: z
    .array(
      z.object({
        address: ipAddress,
        remoteAs: asNumber,
        port: port.default(179),
        /** Source address of the connection (the kernel chooses when unset). */
        localAddress: ipAddress.optional(),
        /** Next hop per family; unset, the connection's own address for its family (a family without one is not announced to this peer). */
        nextHop: z.object({ ipv4: ofFamily(4).optional(), ipv6: ofFamily(6).optional() }).optional(),
        addressFamilies: z
          .array(z.enum(['ipv4-unicast', 'ipv6-unicast']))
          .min(1)
          .default(['ipv4-unicast', 'ipv6-unicast']),
        /** Wait for the peer to connect (to listenAddress:listenPort) instead of connecting to it. */
        passive: z.boolean().default(false),
        /** Name of a file or secret key holding the TCP MD5 password; never the password itself. */
        passwordRef: z.string().optional(),
      }),
    )
    .min(1, 'at least one peer is needed'),
  vips: z.array(
    z.object({
      prefix: cidr,
      communities: z
        .array(
          z
            .string()
            .regex(/^\d+:\d+$/, 'must be ASN:VALUE')
            .refine((v) => v.split(':').every((part) => Number(part) <= 65535), 'must be ASN:VALUE, each 0-65535 (RFC 1997)'),
        )
        .default([]),
      /** Sent to internal peers only; 100 when unset. */
      localPreference: uint32.optional(),
      /** MULTI_EXIT_DISC. */
      med: uint32.optional(),
      /** The VIP is announced only while this local check passes. */
      healthCheck: HealthGateSchema,
    }),
  ),
});

export const SidecarConfigSchema = z
  .object({
    apiVersion: z.literal(API_VERSION),
    kind: z.literal('Sidecar'),
    id: z.string().regex(SIDECAR_ID_PATTERN, 'must be a sidecar id such as pod.shop.orders-7d9f-x2x4 or vm.billing-1'),
    mesh: dnsLabel,
    identity: z.discriminatedUnion('kind', [PodIdentitySchema, VmIdentitySchema]),
    /** Catalog ids of the services this sidecar may reach; `*` alone means all of them. */
    services: z.array(z.string().min(1)).default(['*']),
    /** Zone and cluster of the sidecar, for locality-aware balancing. */
    locality: z.object({ zone: z.string().optional(), cluster: z.string().optional() }).default({}),
    dns: z
      .object({
        records: z.array(DnsRecordSchema).default([]),
        /** The pod's resolver search list, so `orders` and `orders.shop` resolve as Kubernetes would. */
        searchDomains: z.array(dnsName).default([]),
      })
      .default({ records: [], searchDomains: [] }),
    inbound: z
      .object({
        ports: z.array(z.object({ port, protocol: PortProtocolSchema.default('tcp'), name: z.string().optional() })).default([]),
        probes: z.array(ProbeSchema).default([]),
      })
      .default({ ports: [], probes: [] }),
    bgp: BgpSchema.optional(),
  })
  .meta({ title: 'flb-mesh sidecar.json', description: "One sidecar's view, published at /flb/sidecars/<id>/sidecar.json" });

export type SidecarConfig = z.output<typeof SidecarConfigSchema>;
export type SidecarConfigInput = z.input<typeof SidecarConfigSchema>;

/** An app container's own preStop hook the injector replaced with the BGP drain: run by the sidecar once the drain is done. */
export const AppPreStopSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('http'),
    port: z.number().int().min(1).max(65535),
    path: z.string().default('/'),
    scheme: z.enum(['HTTP', 'HTTPS']).default('HTTP'),
    host: z.string().optional(),
    headers: z.array(z.object({ name: z.string(), value: z.string() })).default([]),
  }),
  z.object({ type: z.literal('sleep'), seconds: z.number().int().min(0) }),
]);
export type AppPreStop = z.output<typeof AppPreStopSchema>;
