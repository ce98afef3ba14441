import { UsageError } from './errors.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "500ms", "30s", "15m", "2160h", "90d" (or a sum such as "1h30m") to milliseconds. */
export function parseDuration(text: string): number {
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== text) {
    throw new UsageError(`"${text}" is not a duration; use forms like 500ms, 30s, 15m, 2160h or 90d`);
  }
  return parts.reduce((sum, p) => sum + Number(p[1]) * UNITS[p[2]!]!, 0);
}

/**
 * "HOST:PORT", "[IPv6]:PORT" or ":PORT" (every IPv4 address). `example` is a good value for this
 * flag (its default), shown when the text is not one; a neutral one otherwise.
 */
export function parseHostPort(text: string, what = 'address', example = '0.0.0.0:8080'): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text);
  const port = Number(match?.[3]);
  if (!match || port > 65535)
    throw new UsageError(`${what} "${text}" is not HOST:PORT (e.g. ${example}; IPv6 in brackets, e.g. [::1]:${example.replace(/^.*:/, '')})`);
  return { host: match[1] ?? (match[2] || '0.0.0.0'), port };
}
