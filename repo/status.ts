/*
 * What the repo keeps of a worker's status report. A report may be megabytes (a Pipy worker's
 * metrics, module graphs, or anything a caller sends), and the repo keeps it for a minute per
 * instance: it keeps only the fields it shows, each cut to a sane size, within a budget per
 * instance. Any JSON object is accepted, so no worker (Pipy's, which posts its own shape, or flb's
 * sidecar) ever gets an error for what it reports.
 *
 * Fields kept: Pipy's (repo/PIPY-API.md §1.9: timestamp, since, uuid, name, ip, version, modules,
 * logs; never metrics) and the flb sidecar's (sidecar/config/source.ts status(): sidecarId,
 * source, ready, appliedVersion, receivedVersion, rejected, applyError, cache, unhealthyEndpoints:
 * the endpoints its active checks or outlier detection took out), which
 * `GET /api/v1/repo/<codebase>` shows under `instances`.
 */

/** JSON bytes of one instance's kept status, at most. */
export const MAX_STATUS_BYTES = 8 * 1024;

const FIELD_ORDER = [
  'timestamp',
  'since',
  'uuid',
  'name',
  'ip',
  'version',
  'modules',
  'logs',
  'sidecarId',
  'source',
  'ready',
  'appliedVersion',
  'receivedVersion',
  'rejected',
  'rejectedOmitted',
  'applyError',
  'cache',
  'unhealthyEndpoints',
  'unhealthyEndpointsOmitted',
] as const;

/** Cut to `max` characters, marked with an ellipsis; undefined when not a string. */
export function truncated(value: unknown, max: number): string | undefined {
  if (typeof value !== 'string') return undefined;
  return value.length > max ? `${value.slice(0, max - 1)}…` : value;
}

const finite = (value: unknown) => (typeof value === 'number' && Number.isFinite(value) ? value : undefined);
const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
const size = (value: unknown) => JSON.stringify(value).length;

export interface KeptStatus {
  status: Record<string, unknown>;
  /** Its size as JSON: what it costs to keep, roughly. */
  bytes: number;
}

export function keptStatus(report: Record<string, unknown>): KeptStatus {
  const kept = new Map<string, unknown>();
  let bytes = 2;
  /** Adds the field if it fits the budget; fields are offered most useful first. */
  const offer = (key: string, value: unknown): boolean => {
    if (value === undefined) return false;
    const cost = key.length + 4 + size(value);
    if (bytes + cost > MAX_STATUS_BYTES) return false;
    kept.set(key, value);
    bytes += cost;
    return true;
  };
  /** As many items as fit, in order; the rest are counted in `omittedKey` when given. */
  const offerList = <T>(key: string, items: T[], omittedKey?: string) => {
    if (!offer(key, [])) return;
    const list: T[] = [];
    for (const item of items) {
      const cost = size(item) + 1;
      if (bytes + cost > MAX_STATUS_BYTES - 32) break;
      list.push(item);
      bytes += cost;
    }
    kept.set(key, list);
    if (omittedKey && list.length < items.length) offer(omittedKey, items.length - list.length);
  };

  offer('uuid', truncated(report.uuid, 128));
  offer('name', truncated(report.name, 256));
  offer('timestamp', finite(report.timestamp));
  offer('since', finite(report.since));
  offer('ip', truncated(report.ip, 64));
  offer('version', typeof report.version === 'number' ? String(report.version) : truncated(report.version, 512));
  offer('sidecarId', truncated(report.sidecarId, 256));
  offer('source', truncated(report.source, 32));
  if (typeof report.ready === 'boolean') offer('ready', report.ready);
  offer('appliedVersion', truncated(report.appliedVersion, 512));
  offer('receivedVersion', truncated(report.receivedVersion, 512));
  if (isObject(report.cache)) {
    const cache = Object.fromEntries(
      Object.entries({
        dir: truncated(report.cache.dir, 256),
        version: truncated(report.cache.version, 512),
        error: truncated(report.cache.error, 1024),
      }).filter(([, v]) => v !== undefined),
    );
    offer('cache', cache);
  }
  offer('applyError', truncated(report.applyError, 1024));
  if (Array.isArray(report.rejected)) {
    const rejected = report.rejected.filter(isObject).map((r) => ({ path: truncated(r.path, 512) ?? '', error: truncated(r.error, 1024) ?? '' }));
    offerList('rejected', rejected, 'rejectedOmitted');
  }
  if (Array.isArray(report.unhealthyEndpoints)) {
    const unhealthy = report.unhealthyEndpoints.filter(isObject).map((e) => ({
      service: truncated(e.service, 256) ?? '',
      endpoint: truncated(e.endpoint, 64) ?? '',
      activeHealth: truncated(e.activeHealth, 16) ?? 'unknown',
      ejected: e.ejected === true,
      ...(typeof e.ejectedUntil === 'string' ? { ejectedUntil: truncated(e.ejectedUntil, 32) } : {}),
    }));
    offerList('unhealthyEndpoints', unhealthy, 'unhealthyEndpointsOmitted');
    // What the sidecar itself left out of its report (it sends a bounded list).
    const omittedBySidecar = finite(report.unhealthyEndpointsOmitted);
    if (omittedBySidecar && omittedBySidecar > 0) {
      const omittedHere = (kept.get('unhealthyEndpointsOmitted') as number | undefined) ?? 0;
      kept.delete('unhealthyEndpointsOmitted');
      offer('unhealthyEndpointsOmitted', omittedHere + Math.floor(omittedBySidecar));
    }
  }
  if (Array.isArray(report.logs))
    offerList(
      'logs',
      report.logs
        .filter((l): l is string => typeof l === 'string')
        .slice(0, 64)
        .map((l) => truncated(l, 128)!),
    );
  if (isObject(report.modules)) {
    // Pipy's GUI draws a module's pipeline graph; a graph is kept whole or not at all.
    const modules: Record<string, unknown> = {};
    if (offer('modules', modules)) {
      for (const [path, module] of Object.entries(report.modules).slice(0, 64)) {
        const graph = isObject(module) && isObject(module.graph) ? module.graph : undefined;
        const entry = graph && size(graph) <= 2048 ? { graph } : {};
        const cost = size(path.slice(0, 512)) + size(entry) + 2;
        if (bytes + cost > MAX_STATUS_BYTES) break;
        modules[path.slice(0, 512)] = entry;
        bytes += cost;
      }
    }
  }

  const ordered: Record<string, unknown> = {};
  for (const key of FIELD_ORDER) if (kept.has(key)) ordered[key] = kept.get(key);
  // A copy: a string cut from a longer one is a slice that keeps the whole original alive.
  const json = JSON.stringify(ordered);
  return { status: JSON.parse(json) as Record<string, unknown>, bytes: json.length };
}
