import { z } from 'zod';
import { DEFAULT_PORTS, DEFAULT_PROXY_UID, InterceptionModeSchema } from './mesh.js';
import { cidr, interfaceName, port } from './primitives.js';

/**
 * The pod annotation the injector writes and that whichever part steers the pod's traffic reads:
 * the init container (`flb iptables apply`), the CNI plugin through the node agent, or the eBPF
 * loader. It is complete on its own (mesh defaults already merged with the pod's exclusion
 * annotations), so readers never need the mesh config.
 */
export const INTERCEPTION_ANNOTATION = 'flomesh.io/interception';

export const InterceptionSchema = z
  .object({
    version: z.literal(1),
    mode: InterceptionModeSchema,
    proxyUid: z.number().int().min(1).max(2147483647).default(DEFAULT_PROXY_UID),
    /** Group too, for hosts (VMs) where the proxy runs under a shared UID. */
    proxyGid: z.number().int().min(1).max(2147483647).optional(),
    outboundPort: port.default(DEFAULT_PORTS.outbound),
    inboundPort: port.default(DEFAULT_PORTS.inbound),
    dnsPort: port.default(DEFAULT_PORTS.dns),
    /** The sidecar's own listeners: inbound traffic to them is never redirected (probes, admin, metrics). */
    sidecarPorts: z.array(port).default(Object.values(DEFAULT_PORTS)),
    captureDns: z.boolean().default(true),
    /** 'auto': the init container or agent adds IPv6 rules when the pod has an IPv6 address. */
    ipv6: z.enum(['auto', 'enabled', 'disabled']).default('auto'),
    excludeInboundPorts: z.array(port).default([]),
    /** Empty means every inbound port is redirected except the excluded ones. */
    includeInboundPorts: z.array(port).default([]),
    excludeOutboundPorts: z.array(port).default([]),
    excludeOutboundIpRanges: z.array(cidr).default([]),
    /** Empty means every destination is redirected except the excluded ranges. */
    includeOutboundIpRanges: z.array(cidr).default([]),
    excludeInterfaces: z.array(interfaceName).default([]),
  })
  .superRefine((settings, ctx) => {
    for (const key of ['outboundPort', 'inboundPort', 'dnsPort'] as const) {
      if (!settings.sidecarPorts.includes(settings[key])) {
        ctx.addIssue({ code: 'custom', path: ['sidecarPorts'], message: `must include ${key} ${settings[key]}` });
      }
    }
    settings.excludeInboundPorts.forEach((p, i) => {
      if (settings.includeInboundPorts.includes(p)) {
        ctx.addIssue({ code: 'custom', path: ['excludeInboundPorts', i], message: `port ${p} is both included and excluded` });
      }
    });
  })
  .meta({
    title: 'flb-mesh interception settings',
    description: `The ${INTERCEPTION_ANNOTATION} pod annotation (JSON): how the pod's traffic is steered to its sidecar`,
  });

export type Interception = z.output<typeof InterceptionSchema>;
export type InterceptionInput = z.input<typeof InterceptionSchema>;

/**
 * The source address the sidecar uses when it hands an inbound connection (or runs an app probe)
 * to its own app. The interception rules let connections from it through untouched; any other
 * connection from the proxy's UID to the pod's own IP is an app calling itself through the mesh
 * and goes to the inbound side.
 */
export const INBOUND_FORWARD_SOURCE = { 4: '127.0.0.6', 6: '::6' } as const;
