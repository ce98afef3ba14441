// `flb bgp status`: the announcer's peers and VIPs as a table a person reads, or its JSON.
import { request } from 'node:http';
import { ActionableError } from '../../common/errors.js';
import type { AnnouncerStatus } from './announcer.js';

function age(at: number | undefined, now: number): string {
  if (!at) return 'never';
  const seconds = Math.max(0, Math.round((now - at) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${Math.round(seconds / 3600)}h`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((cell, i) => cell.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function renderBgpStatus(status: AnnouncerStatus, now = Date.now()): string {
  const lines = [
    `BGP announcer AS ${status.localAs}, router id ${status.routerId}${status.draining ? ', draining' : ''}`,
    '',
    table([
      ['PEER', 'AS', 'STATE', 'FOR', 'FAMILIES', 'SENT', 'RECEIVED', 'LAST ERROR'],
      ...status.peers.map((p) => [
        p.peer,
        String(p.remoteAs),
        p.state,
        age(p.since, now),
        p.families.join(',') || '-',
        String(p.prefixesSent),
        String(p.prefixesReceived),
        p.lastError ?? '',
      ]),
    ]),
    '',
    status.vips.length === 0
      ? 'no VIPs configured'
      : table([
          ['VIP', 'HEALTH', 'ANNOUNCED', 'LAST CHECK'],
          ...status.vips.map((v) => [
            v.prefix,
            `${v.healthy ? 'healthy' : 'unhealthy'} (${v.streak} in a row)`,
            v.announced ? 'yes' : 'no',
            v.lastResult ? `${v.lastResult.detail}, ${age(v.lastResult.at, now)} ago` : 'not yet',
          ]),
        ]),
  ];
  return `${lines.join('\n')}\n`;
}

/** Where an announcer's status is: a standalone's admin endpoint (/status) or a sidecar's admin port (/bgp). */
export interface StatusEndpoint {
  url: string;
  path: '/status' | '/bgp';
}

export async function fetchBgpStatus(endpoint: string | StatusEndpoint): Promise<AnnouncerStatus> {
  const { url, path } = typeof endpoint === 'string' ? { url: endpoint, path: '/status' } : endpoint;
  const target = new URL(path, url);
  const inSidecar = path === '/bgp';
  return new Promise((resolve, reject) => {
    const req = request(target, { timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        if (res.statusCode === 404 && inSidecar)
          reject(new ActionableError(`the sidecar at ${url} runs no BGP announcer`, 'add a bgp section to its sidecar.json (see sidecar/bgp/README.md)'));
        else if (res.statusCode !== 200)
          reject(
            new ActionableError(
              `the BGP announcer at ${url} answered ${res.statusCode}`,
              inSidecar ? "is --admin the sidecar's admin port (15000)?" : "is --url the announcer's --admin address?",
            ),
          );
        else resolve(JSON.parse(body) as AnnouncerStatus);
      });
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', (error) =>
      reject(
        new ActionableError(
          `cannot reach the BGP announcer at ${url}: ${error.message}`,
          inSidecar
            ? "is 'flb sidecar' running, and is --admin its admin port (http://127.0.0.1:15000)?"
            : "is 'flb bgp --config ...' running, and is --url its --admin address? (a sidecar's: flb bgp status --admin http://127.0.0.1:15000)",
        ),
      ),
    );
    req.end();
  });
}

export async function printBgpStatus(endpoint: string | StatusEndpoint, format: 'table' | 'json'): Promise<void> {
  const status = await fetchBgpStatus(endpoint);
  process.stdout.write(format === 'json' ? `${JSON.stringify(status, null, 2)}\n` : renderBgpStatus(status));
}
