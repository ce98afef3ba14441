import { isIP, SocketAddress } from 'node:net';
import ipaddr from 'ipaddr.js';
import { z } from 'zod';

export const API_VERSION = 'flb.flomesh.io/v1alpha1';

export const port = z.number().int().min(1, 'must be a port number, 1-65535').max(65535, 'must be a port number, 1-65535');

/**
 * The one text form of an IP address, so that two spellings of an address compare equal as
 * strings: IPv4 as given (Node accepts only dotted decimal without leading zeros); IPv6 as
 * inet_ntop prints it, which is RFC 5952's form (lowercase, no leading zeros, the longest run of
 * two or more zero fields as `::`, the first of equal runs), with IPv4-mapped (`::ffff:a.b.c.d`)
 * and IPv4-compatible addresses in mixed notation. That is the form the kernel-facing code
 * reports (the native forwarder prints original destinations with inet_ntop), and Node's
 * SocketAddress formats with libuv's copy of the same algorithm. A zone (`%eth0`) is kept as
 * written. Undefined when `address` is not an IP address.
 */
export function canonicalIp(address: string): string | undefined {
  const family = isIP(address);
  if (family === 4) return address;
  if (family !== 6) return undefined;
  const zone = address.indexOf('%');
  const bare = zone < 0 ? address : address.slice(0, zone);
  return new SocketAddress({ address: bare, family: 'ipv6' }).address + (zone < 0 ? '' : address.slice(zone));
}

/**
 * The address traffic to `address` is seen at: an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`,
 * what a dual-stack socket shows for an IPv4 peer, and what an app connecting to such a VIP
 * sends as IPv4) is the IPv4 address; anything else is itself. Takes canonical addresses (what
 * `ipAddress` gives, or inet_ntop's output). Routes and VIP conflicts compare addresses in this form.
 */
export function routingAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/**
 * An IP address, read in its canonical form (canonicalIp): every consumer of the contract sees one
 * spelling of an address, so an IPv6 VIP written uncompressed is routed like its compressed form.
 * IPv4-mapped addresses stay IPv6 (an AAAA record may hold one); routingAddress folds them onto
 * IPv4 where traffic is compared.
 */
export const ipAddress = z
  .string()
  .refine((value) => isIP(value) !== 0, { message: 'must be an IPv4 or IPv6 address' })
  // overwrite(), not transform(): the type stays a string, so JSON Schema keeps its defaults.
  .overwrite((value) => canonicalIp(value) ?? value)
  .meta({ description: 'An IPv4 or IPv6 address (read in canonical form: IPv6 as RFC 5952 / inet_ntop writes it)' });

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
