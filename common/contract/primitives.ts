import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import { z } from 'zod';

export const API_VERSION = 'flb.flomesh.io/v1alpha1';

export const port = z.number().int().min(1, 'must be a port number, 1-65535').max(65535, 'must be a port number, 1-65535');

export const ipAddress = z
  .string()
  .refine((v) => isIP(v) !== 0, { message: 'must be an IPv4 or IPv6 address' })
  .meta({ description: 'An IPv4 or IPv6 address' });

/** A CIDR in canonical form is not required (10.0.0.1/8 is accepted as 10.0.0.0/8 would be). */
export const cidr = z
  .string()
  .refine((v) => parseCidr(v) !== undefined, { message: 'must be a CIDR such as 10.0.0.0/8 or fd00::/8' })
  .meta({ description: 'An IPv4 or IPv6 CIDR' });

const dnsLabelPattern = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** A Kubernetes namespace or mesh name: an RFC 1123 label. */
export const dnsLabel = z
  .string()
  .max(63, 'must be at most 63 characters')
  .regex(dnsLabelPattern, 'must be lowercase letters, digits and "-", starting and ending with a letter or digit');

/** A DNS name without the trailing dot, lowercase (RFC 1123 subdomain). */
export const dnsName = z
  .string()
  .max(253, 'must be at most 253 characters')
  .refine((v) => v.split('.').every((label) => label.length <= 63 && dnsLabelPattern.test(label)), {
    message: 'must be a lowercase DNS name such as orders.shop.svc.cluster.local',
  });

export const stringMap = z.record(z.string(), z.string());

export const durationMs = z.number().int().min(0, 'must be a duration in milliseconds, 0 or more');

export function parseCidr(value: string): [ipaddr.IPv4 | ipaddr.IPv6, number] | undefined {
  try {
    return ipaddr.parseCIDR(value);
  } catch {
    return undefined;
  }
}

/** True when `address` lies inside `range` (both of the same IP family). */
export function cidrContains(range: string, address: string): boolean {
  const parsed = parseCidr(range);
  if (!parsed || isIP(address) === 0) return false;
  const ip = ipaddr.parse(address);
  if (ip.kind() !== parsed[0].kind()) return false;
  return ip.match(parsed);
}

/** A Linux interface name; it goes into iptables rules, so nothing but the characters names use. */
export const interfaceName = z.string().regex(/^[A-Za-z0-9_.@:+-]{1,15}$/, 'must be a network interface name (1-15 letters, digits or _.@:+-)');
