import type { OutgoingHttpHeaders } from 'node:http';
import { routingAddress } from '../../common/contract/primitives.js';
import type { Route } from './routes.js';

/**
 * X-Forwarded-For / X-Forwarded-Proto as the service's policy says (`policy.http.xForwardedFor`):
 * untouched by default; with `append`, the app's address is appended to X-Forwarded-For.
 */
export function forwardedHeaders(headers: OutgoingHttpHeaders, route: Route, client: string | undefined): OutgoingHttpHeaders {
  if (route.service.policy.http?.xForwardedFor !== 'append' || client === undefined) return headers;
  const previous = headers['x-forwarded-for'];
  const chain = Array.isArray(previous) ? previous.join(', ') : previous === undefined ? '' : String(previous);
  headers['x-forwarded-for'] = chain ? `${chain}, ${routingAddress(client)}` : routingAddress(client);
  headers['x-forwarded-proto'] ??= 'http';
  return headers;
}
