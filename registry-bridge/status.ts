// `flb bridge status`: the bridge's sources and sinks as a table a person reads, or its JSON.
import { request } from 'node:http';
import { ActionableError } from '../common/errors.js';
import type { BridgeStatus } from './bridge.js';

function age(at: number, now: number): string {
  if (!at) return 'never';
  const seconds = Math.max(0, Math.round((now - at) / 1000));
  return seconds < 120 ? `${seconds}s ago` : `${Math.round(seconds / 60)}m ago`;
}

/** How far the sinks are behind a source: '-' on a standby (it writes nothing). */
function lag(ms: number | undefined): string {
  if (ms === undefined) return '-';
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s`;
  return ms < 120_000 ? `${Math.round(ms / 1000)}s` : `${Math.round(ms / 60_000)}m`;
}

export function formatTable(rows: string[][]): string {
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

export function renderBridgeStatus(status: BridgeStatus, now = Date.now()): string {
  const lines = [
    `bridge ${status.identity}: ${status.leader ? 'leader' : `standby (leader: ${status.leaseHolder || 'none'})`}`,
    `mesh ${status.mesh.name} from ${status.mesh.where}${status.mesh.problem ? ` (refused edit: ${status.mesh.problem})` : ''}`,
    `catalog: ${status.catalog.services} services, ${status.catalog.sidecars} sidecars, ${status.catalog.rejected} refused, ${status.catalog.conflicts} conflicts`,
    '',
    formatTable([
      ['SOURCE', 'KIND', 'ADDRESS', 'STATE', 'SERVICES', 'ENDPOINTS', 'SIDECARS', 'LAST SYNC', 'LAG', 'LAST CONTACT', 'ERRORS'],
      ...status.sources.map((s) => [
        s.name,
        s.kind,
        s.address,
        s.state,
        String(s.services),
        String(s.endpoints),
        String(s.sidecars),
        age(s.lastSyncAt, now),
        lag(s.syncLagMs),
        age(s.lastContactAt, now),
        String(s.errors),
      ]),
    ]),
    '',
    status.sinks.length === 0
      ? 'no sinks: this replica is a standby'
      : formatTable([
          ['SINK', 'KIND', 'ADDRESS', 'PENDING', 'WRITES', 'FAILURES', 'LAST WRITE', 'LAST ERROR'],
          ...status.sinks.map((s) => [
            s.name,
            s.kind,
            s.address,
            String(s.pending),
            String(s.writes),
            String(s.failures),
            age(s.lastWriteAt, now),
            s.lastError ?? '',
          ]),
        ]),
    ...status.sinks.flatMap((s) => {
      const renewals = s.renewals;
      return renewals
        ? [`${s.name} renewals: ${renewals.sent} sent, ${renewals.failed} failed, ${renewals.reregistered} registered again after a 404, ${renewals.late} late`]
        : [];
    }),
  ];
  return `${lines.join('\n')}\n`;
}

export async function fetchBridgeStatus(url: string): Promise<BridgeStatus> {
  const target = new URL('/status', url);
  return new Promise((resolve, reject) => {
    const req = request(target, { timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new ActionableError(`the bridge at ${url} answered ${res.statusCode}`, "is --url the bridge's --admin address?"));
        else resolve(JSON.parse(body) as BridgeStatus);
      });
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', (error) =>
      reject(
        new ActionableError(
          `cannot reach the bridge at ${url}: ${error.message}`,
          "pass its --admin address with --url (in a cluster: kubectl port-forward the bridge's pod to 15020)",
        ),
      ),
    );
    req.end();
  });
}

export async function printBridgeStatus(url: string, format: 'table' | 'json'): Promise<void> {
  const status = await fetchBridgeStatus(url);
  process.stdout.write(format === 'json' ? `${JSON.stringify(status, null, 2)}\n` : renderBridgeStatus(status));
}
