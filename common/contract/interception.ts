import { z } from 'zod';
import { DEFAULT_PORTS, DEFAULT_PROXY_UID, InterceptionModeSchema, refuseWhatEbpfCannotHonour } from './mesh.js';
import { canonicalIp, cidr, interfaceName, parseCidr, port } from './primitives.js';

/**
 * One address as a host route, `10.0.0.100/32` or `2001:db8::100/128`, in the canonical form `ip
 * addr` prints (so what is live on lo compares as text). A wider prefix is refused: on lo it would
 * make every address of the range local to the pod.
 */
export const hostRoute = z
  .string()
  .refine(
    (value) => {
      const parsed = parseCidr(value);
      return parsed !== undefined && parsed[1] === (parsed[0].kind() === 'ipv4' ? 32 : 128);
    },
    { message: 'must be one address as a host route, such as 10.0.0.100/32 or 2001:db8::100/128' },
  )
  .overwrite((value) => {
    const slash = value.lastIndexOf('/');
    return `${canonicalIp(value.slice(0, slash)) ?? value.slice(0, slash)}${value.slice(slash)}`;
  })
  .meta({ description: 'An IPv4 /32 or IPv6 /128 host route' });

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
    /**
     * The VIPs the pod's sidecar announces over BGP (the flomesh.io/bgp-vips pod annotation): put on
     * the pod's lo by whoever applies these settings, so the app receives traffic for them. Absent
     * when there are none, so pods without BGP carry the same annotation as before.
     */
    bgpVips: z.array(hostRoute).optional(),
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
    refuseWhatEbpfCannotHonour(settings, ctx);
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
