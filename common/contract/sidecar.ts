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

export const HealthGateSchema = z.object({
  protocol: z.enum(['tcp', 'http']),
  address: ipAddress.default('127.0.0.1'),
  port,
  path: z.string().startsWith('/').optional(),
  intervalMs: durationMs.min(100).default(2000),
  timeoutMs: durationMs.min(10).default(1000),
  healthyThreshold: z.number().int().min(1).default(2),
  unhealthyThreshold: z.number().int().min(1).default(3),
});

export const BgpSchema = z.object({
  localAs: z.number().int().min(1).max(4294967295),
  routerId: z.ipv4({ message: 'must be an IPv4 address (BGP router ids are 32-bit)' }),
  holdTimeSeconds: z
    .number()
    .int()
    .refine((v) => v === 0 || v >= 3, 'must be 0 or at least 3 (RFC 4271)')
    .default(90),
  peers: z
    .array(
      z.object({
        address: ipAddress,
        remoteAs: z.number().int().min(1).max(4294967295),
        port: port.default(179),
        /** Name of a file or secret key holding the TCP MD5 password; never the password itself. */
        passwordRef: z.string().optional(),
      }),
    )
    .min(1, 'at least one peer is needed'),
  vips: z.array(
    z.object({
      prefix: cidr,
      communities: z.array(z.string().regex(/^\d+:\d+$/, 'must be ASN:VALUE')).default([]),
      localPreference: z.number().int().min(0).optional(),
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
