/*
 * `flb proxy-status` and `flb proxy-config`: pure views of what the repo knows about sidecars. A
 * sidecar's admin port binds 127.0.0.1 and a cluster without a kubelet has no port-forward, so
 * both read only the repo: each sidecar's codebase (what it is told) and the status reports it
 * posts there every 5 s (what it applied), which the repo keeps for a minute.
 */
import {
  DEFAULT_PORTS,
  MeshSchema,
  ServiceSchema,
  SidecarConfigSchema,
  checkDocument,
  parseSidecarId,
  type Mesh,
  type Service,
  type SidecarConfig,
} from '../common/contract/index.js';
import { formatAge } from './checks.js';

/** One instance of a codebase as GET /api/v1/repo/<codebase> shows it (repo/status.ts keeps the status fields). */
export interface RepoInstance {
  ip?: string;
  /** When the repo received its last report (ms). */
  timestamp: number;
  status: Record<string, unknown>;
}

export interface SidecarCodebaseFacts {
  id: string;
  /** The version a worker of the codebase is served now (its etag); undefined when not served. */
  latest?: string;
  instances: RepoInstance[];
}

export type SidecarState = 'SYNCED' | 'BEHIND' | 'NOT READY' | 'NOT REPORTING' | 'SILENT' | 'NOT PUBLISHED' | 'NO CODEBASE';

export interface RejectedFile {
  path: string;
  error: string;
}

export interface ProxyStatusRow {
  id: string;
  state: SidecarState;
  ready?: boolean;
  applied?: string;
  latest?: string;
  /** Where its configuration came from: repo, cache (the repo never answered since it started), none. */
  source?: string;
  rejected: RejectedFile[];
  /** More refused files than its report could hold. */
  rejectedOmitted?: number;
  applyError?: string;
  /** ms since its last report; undefined: none kept. */
  lastReportAgoMs?: number;
  /** Instances reporting for this codebase (a restarted sidecar's old one stays for a minute). */
  instances: number;
}

const text = (value: unknown) => (typeof value === 'string' && value ? value : undefined);

/** The instance that reported last: after a restart, the new process. */
export function latestInstance(instances: readonly RepoInstance[]): RepoInstance | undefined {
  return instances.reduce<RepoInstance | undefined>((best, i) => (!best || i.timestamp > best.timestamp ? i : best), undefined);
}

export function rejectedOf(status: Record<string, unknown>): RejectedFile[] {
  return Array.isArray(status.rejected)
    ? status.rejected.flatMap((r: unknown) =>
        typeof r === 'object' && r !== null ? [{ path: String((r as RejectedFile).path ?? ''), error: String((r as RejectedFile).error ?? '') }] : [],
      )
    : [];
}

/**
 * One row per sidecar: every codebase the repo has, and every injected pod (when the apiserver was
 * asked) that has none. A sidecar silent for longer than `staleAfterMs` is SILENT, whatever it said last.
 */
export function proxyStatusRows(
  codebases: readonly SidecarCodebaseFacts[],
  pods: readonly string[] | undefined,
  now: number,
  staleAfterMs: number,
): ProxyStatusRow[] {
  const rows: ProxyStatusRow[] = codebases.map((codebase) => {
    const instance = latestInstance(codebase.instances);
    const status = instance?.status ?? {};
    const applied = text(status.appliedVersion);
    const ready = typeof status.ready === 'boolean' ? status.ready : undefined;
    const ago = instance ? now - instance.timestamp : undefined;
    let state: SidecarState;
    if (codebase.latest === undefined) state = 'NOT PUBLISHED';
    else if (!instance) state = 'NOT REPORTING';
    else if (ago! > staleAfterMs) state = 'SILENT';
    else if (ready === false || !applied) state = 'NOT READY';
    else state = applied === codebase.latest ? 'SYNCED' : 'BEHIND';
    const omitted = typeof status.rejectedOmitted === 'number' ? status.rejectedOmitted : undefined;
    return {
      id: codebase.id,
      state,
      ...(ready !== undefined ? { ready } : {}),
      ...(applied ? { applied } : {}),
      ...(codebase.latest !== undefined ? { latest: codebase.latest } : {}),
      ...(text(status.source) ? { source: text(status.source) } : {}),
      rejected: rejectedOf(status),
      ...(omitted ? { rejectedOmitted: omitted } : {}),
      ...(text(status.applyError) ? { applyError: text(status.applyError) } : {}),
      ...(ago !== undefined ? { lastReportAgoMs: ago } : {}),
      instances: codebase.instances.length,
    };
  });
  const known = new Set(codebases.map((c) => c.id));
  for (const pod of pods ?? []) if (!known.has(pod)) rows.push({ id: pod, state: 'NO CODEBASE', rejected: [], instances: 0 });
  return rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
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

const STATE_MEANING: Record<SidecarState, string> = {
  SYNCED: 'applied the latest version',
  BEHIND: 'runs an older version than the latest (a newer one is on its way, or was refused: see below)',
  'NOT READY': 'reports, but has no configuration in force',
  'NOT REPORTING': 'no report in the last minute (the repo keeps one for 60 s)',
  SILENT: 'its last report is older than --stale-after',
  'NOT PUBLISHED': 'the codebase exists but has no version yet',
  'NO CODEBASE': 'an injected pod the bridge has made no codebase for yet',
};

export function renderProxyStatus(rows: readonly ProxyStatusRow[]): string {
  if (rows.length === 0) return 'no sidecars: no codebase under /flb/sidecars in the repo and no injected pod\n';
  const table = formatTable([
    ['SIDECAR', 'STATE', 'APPLIED', 'LATEST', 'REJECTED', 'SOURCE', 'LAST REPORT'],
    ...rows.map((r) => [
      r.id,
      r.state,
      r.applied ?? '-',
      r.latest ?? '-',
      String(r.rejected.length + (r.rejectedOmitted ?? 0)),
      r.source ?? '-',
      r.lastReportAgoMs === undefined ? '-' : `${formatAge(r.lastReportAgoMs)} ago`,
    ]),
  ]);
  const lines = [table];
  const problems = rows.flatMap((r) => [
    ...r.rejected.map((f) => `${r.id}: refused ${f.path}: ${f.error}`),
    ...(r.rejectedOmitted ? [`${r.id}: and ${r.rejectedOmitted} more refused files (its report had no room for them)`] : []),
    ...(r.applyError ? [`${r.id}: applying failed: ${r.applyError}`] : []),
  ]);
  if (problems.length) lines.push('', ...problems);
  const seen = [...new Set(rows.map((r) => r.state))].filter((s) => s !== 'SYNCED');
  if (seen.length) lines.push('', ...seen.map((s) => `${s}: ${STATE_MEANING[s]}`));
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------
// proxy-config

/** A pod or VM as the user names it: a sidecar id (pod.NS.NAME, vm.NAME), NS/NAME, pod/NAME, vm/NAME, or NAME (in --namespace). */
export function sidecarTarget(target: string, namespace: string): { id: string; pod?: { namespace: string; name: string } } {
  if (/^(pod|vm)\./.test(target)) {
    try {
      const identity = parseSidecarId(target);
      return { id: target, ...(identity.kind === 'pod' ? { pod: { namespace: identity.namespace, name: identity.name } } : {}) };
    } catch {
      // not an id after all: a pod named so
    }
  }
  const slash = target.indexOf('/');
  if (slash > 0) {
    const [kind, name] = [target.slice(0, slash), target.slice(slash + 1)];
    if (kind === 'vm' || kind === 'vms') return { id: `vm.${name}` };
    if (kind === 'pod' || kind === 'pods') return { id: `pod.${namespace}.${name}`, pod: { namespace, name } };
    return { id: `pod.${kind}.${name}`, pod: { namespace: kind, name } };
  }
  return { id: `pod.${namespace}.${target}`, pod: { namespace, name: target } };
}

export interface ProxyConfigFacts {
  id: string;
  latest?: string;
  instances: RepoInstance[];
  /** Files of the codebase as served now (path -> text); services only those the sidecar may reach. */
  files: Record<string, string>;
  /** Catalog files in the codebase, all of them. */
  catalogSize: number;
  /** Files listed in the codebase that could not be fetched. */
  unreadable: string[];
  now: number;
}

export interface ListenerView {
  port: number;
  what: string;
  bind: string;
}

export interface EndpointView {
  address: string;
  port: number;
  zone?: string;
  cluster?: string;
  weight: number;
  priority: number;
  /** What the registry says: unhealthy endpoints are never chosen. */
  healthy: boolean;
  /** What the sidecar's own checks say, when they took it out (from its last report). */
  takenOut?: { activeHealth: string; ejected: boolean; ejectedUntil?: string };
}

export interface ServiceView {
  id: string;
  source: string;
  hostnames: string[];
  vips: string[];
  ports: { port: number; protocol: string; name?: string; targetPort?: number }[];
  loadBalancer: string;
  healthCheck?: string;
  outlierDetection?: string;
  endpoints: EndpointView[];
}

export interface ProxyConfigView {
  id: string;
  identity?: SidecarConfig['identity'];
  locality?: SidecarConfig['locality'];
  applied?: string;
  latest?: string;
  ready?: boolean;
  lastReportAgoMs?: number;
  rejected: RejectedFile[];
  listeners: ListenerView[];
  inbound: { port: number; protocol: string; name?: string }[];
  probes: { kind: string; sidecarPort: number; original: string }[];
  services: ServiceView[];
  /** Services sidecar.json names that the catalog does not have. */
  missingServices: string[];
  catalogSize: number;
  dns: { name: string; type: string; address: string; service?: string }[];
  /** Files that fail the contract as served now, with why (the sidecar refuses them too). */
  invalid: RejectedFile[];
  /** Whether the last report carried the sidecar's checks' results (an older sidecar's or Pipy's does not). */
  checksReported: boolean;
  /** Endpoints taken out that the report had no room for. */
  takenOutOmitted: number;
  /** What the sidecar keeps to itself: not in its reports to the repo. */
  notReported: string[];
}

/** What proxy-config cannot show, because the sidecar does not report it to the repo. */
export const NOT_REPORTED = [
  'requests in flight per endpoint and which locality level is in use',
  'which ports its listeners really bound (only that they match mesh.json, or it is not ready)',
];

function parsed<T>(schema: { safeParse(data: unknown): unknown }, path: string, files: Record<string, string>, invalid: RejectedFile[]): T | undefined {
  const raw = files[path];
  if (raw === undefined) return undefined;
  let data: unknown;
  try {
    data = JSON.parse(raw);
  } catch (error) {
    invalid.push({ path, error: `not JSON: ${(error as Error).message}` });
    return undefined;
  }
  const result = checkDocument(schema as never, data);
  if (!result.ok) {
    invalid.push({ path, error: result.issues.map((i) => `${i.field}: ${i.message}`).join('; ') });
    return undefined;
  }
  return result.value as T;
}

function listeners(mesh: Mesh | undefined): ListenerView[] {
  const ports = mesh?.ports ?? DEFAULT_PORTS;
  return [
    { port: ports.outbound, what: 'outbound: connections from the app, balanced over services', bind: 'all addresses (captured)' },
    { port: ports.inbound, what: 'inbound: connections to the pod, handed to the app from 127.0.0.6', bind: 'all addresses (captured)' },
    { port: ports.dns, what: 'DNS: catalog names, the rest forwarded', bind: '127.0.0.1, ::1' },
    { port: ports.admin, what: 'admin: /ready, /config_dump, /endpoints', bind: '127.0.0.1' },
    { port: ports.metrics, what: 'Prometheus metrics', bind: 'all addresses' },
    { port: ports.livenessProbe, what: "the app's liveness probe", bind: 'all addresses' },
    { port: ports.readinessProbe, what: "the app's readiness probe, and the sidecar's /ready", bind: 'all addresses' },
    { port: ports.startupProbe, what: "the app's startup probe", bind: 'all addresses' },
  ];
}

function serviceView(service: Service): ServiceView {
  const policy = service.policy;
  const lb = policy.loadBalancer;
  const hash = lb.hash ? ` on ${lb.hash.on}${lb.hash.name ? ` ${lb.hash.name}` : ''}` : '';
  const check = policy.healthCheck;
  const outlier = policy.outlierDetection;
  return {
    id: service.id,
    source: service.source,
    hostnames: service.hostnames,
    vips: service.vips.map((v) => v.address),
    ports: service.ports.map((p) => ({
      port: p.port,
      protocol: p.protocol,
      ...(p.name ? { name: p.name } : {}),
      ...(p.targetPort ? { targetPort: p.targetPort } : {}),
    })),
    loadBalancer: `${lb.algorithm}${hash}`,
    ...(check
      ? { healthCheck: `${check.protocol}${check.path ? ` ${check.path}` : ''} every ${check.intervalMs} ms, down after ${check.unhealthyThreshold}` }
      : {}),
    ...(outlier
      ? {
          outlierDetection: `eject after ${outlier.consecutiveConnectFailures} connect failures or ${outlier.consecutive5xx} 5xx, ${outlier.baseEjectionTimeMs} ms`,
        }
      : {}),
    endpoints: service.endpoints.map((e) => ({
      address: e.address,
      port: e.port,
      ...(e.zone ? { zone: e.zone } : {}),
      ...(e.cluster ? { cluster: e.cluster } : {}),
      weight: e.weight,
      priority: e.priority,
      healthy: e.healthy,
    })),
  };
}

/** The endpoints the sidecar's report says its active checks or outlier detection took out, by service and address:port. */
function takenOutOf(status: Record<string, unknown>): Map<string, NonNullable<EndpointView['takenOut']>> {
  const out = new Map<string, NonNullable<EndpointView['takenOut']>>();
  if (!Array.isArray(status.unhealthyEndpoints)) return out;
  for (const entry of status.unhealthyEndpoints as unknown[]) {
    if (typeof entry !== 'object' || entry === null) continue;
    const e = entry as Record<string, unknown>;
    if (typeof e.service !== 'string' || typeof e.endpoint !== 'string') continue;
    out.set(`${e.service} ${e.endpoint}`, {
      activeHealth: typeof e.activeHealth === 'string' ? e.activeHealth : 'unknown',
      ejected: e.ejected === true,
      ...(typeof e.ejectedUntil === 'string' ? { ejectedUntil: e.ejectedUntil } : {}),
    });
  }
  return out;
}

export function proxyConfigView(facts: ProxyConfigFacts): ProxyConfigView {
  const invalid: RejectedFile[] = facts.unreadable.map((path) => ({ path, error: 'listed in the codebase but could not be fetched' }));
  const mesh = parsed<Mesh>(MeshSchema, 'mesh.json', facts.files, invalid);
  const sidecar = parsed<SidecarConfig>(SidecarConfigSchema, 'sidecar.json', facts.files, invalid);
  const services: ServiceView[] = [];
  for (const path of Object.keys(facts.files)
    .filter((p) => p.startsWith('services/'))
    .sort()) {
    const service = parsed<Service>(ServiceSchema, path, facts.files, invalid);
    if (service) services.push(serviceView(service));
  }
  const wanted = sidecar?.services ?? [];
  const present = new Set(services.map((s) => s.id));
  const instance = latestInstance(facts.instances);
  const status = instance?.status ?? {};
  const takenOut = takenOutOf(status);
  for (const service of services)
    for (const endpoint of service.endpoints) {
      const verdict = takenOut.get(`${service.id} ${hostPort(endpoint.address, endpoint.port)}`);
      if (verdict) endpoint.takenOut = verdict;
    }
  return {
    id: facts.id,
    ...(sidecar ? { identity: sidecar.identity, locality: sidecar.locality } : {}),
    ...(text(status.appliedVersion) ? { applied: text(status.appliedVersion) } : {}),
    ...(facts.latest !== undefined ? { latest: facts.latest } : {}),
    ...(typeof status.ready === 'boolean' ? { ready: status.ready } : {}),
    ...(instance ? { lastReportAgoMs: facts.now - instance.timestamp } : {}),
    rejected: rejectedOf(status),
    listeners: listeners(mesh),
    inbound: (sidecar?.inbound.ports ?? []).map((p) => ({ port: p.port, protocol: p.protocol, ...(p.name ? { name: p.name } : {}) })),
    probes: (sidecar?.inbound.probes ?? []).map((p) => ({
      kind: p.kind,
      sidecarPort: p.sidecarPort,
      original: p.original.type === 'http' ? `http ${p.original.scheme} :${p.original.port}${p.original.path}` : `${p.original.type} :${p.original.port}`,
    })),
    services,
    missingServices: wanted.includes('*') ? [] : wanted.filter((id) => !present.has(id)),
    catalogSize: facts.catalogSize,
    dns: (sidecar?.dns.records ?? []).map((r) => ({ name: r.name, type: r.type, address: r.address, ...(r.service ? { service: r.service } : {}) })),
    invalid,
    checksReported: Array.isArray(status.unhealthyEndpoints),
    takenOutOmitted: typeof status.unhealthyEndpointsOmitted === 'number' ? status.unhealthyEndpointsOmitted : 0,
    notReported: NOT_REPORTED,
  };
}

function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** The registry's verdict first (such an endpoint is never chosen), then the sidecar's own. */
export function endpointHealth(e: EndpointView): string {
  if (!e.healthy) return 'UNHEALTHY (registry)';
  if (e.takenOut?.ejected) return `EJECTED${e.takenOut.ejectedUntil ? ` until ${e.takenOut.ejectedUntil}` : ''}`;
  if (e.takenOut?.activeHealth === 'unhealthy') return 'UNHEALTHY (active check)';
  return 'healthy';
}

export function renderProxyConfig(view: ProxyConfigView): string {
  const out: string[] = [];
  const identity = view.identity;
  const who =
    identity?.kind === 'pod'
      ? `pod ${identity.namespace}/${identity.name}${identity.node ? ` on ${identity.node}` : ''}`
      : identity?.kind === 'vm'
        ? `VM ${identity.name}${identity.addresses.length ? ` (${identity.addresses.join(', ')})` : ''}`
        : parseSidecarId(view.id).kind;
  const zone = view.locality?.zone ? `, zone ${view.locality.zone}` : '';
  out.push(`sidecar ${view.id}: ${who}${zone}`);
  const version =
    view.applied === undefined
      ? `latest ${view.latest ?? 'none'}, no version reported applied`
      : view.applied === view.latest
        ? `applied ${view.applied} (the latest)`
        : `applied ${view.applied}; the latest is ${view.latest ?? 'none'}, shown below`;
  const report =
    view.lastReportAgoMs === undefined
      ? 'no report in the last minute'
      : `reported ${formatAge(view.lastReportAgoMs)} ago, ${view.ready ? 'ready' : 'not ready'}`;
  out.push(`configuration: ${version}; ${report}`);
  for (const f of view.rejected) out.push(`  refused by the sidecar: ${f.path}: ${f.error}`);
  for (const f of view.invalid) out.push(`  fails the contract as served now: ${f.path}: ${f.error}`);

  out.push('', 'LISTENERS', formatTable([['PORT', 'BINDS', 'WHAT'], ...view.listeners.map((l) => [String(l.port), l.bind, l.what])]));
  out.push('', 'INBOUND (app ports)');
  out.push(
    view.inbound.length
      ? formatTable([['PORT', 'PROTOCOL', 'NAME'], ...view.inbound.map((p) => [String(p.port), p.protocol, p.name ?? ''])])
      : 'none declared: every inbound port is forwarded as TCP',
  );
  if (view.probes.length) out.push(...view.probes.map((p) => `probe ${p.kind}: sidecar port ${p.sidecarPort} runs the app's ${p.original}`));

  out.push('', `SERVICES (${view.services.length} this sidecar may reach, of ${view.catalogSize} in the catalog)`);
  out.push(
    view.services.length
      ? formatTable([
          ['SERVICE', 'SOURCE', 'HOSTNAMES', 'VIPS', 'PORTS', 'BALANCING'],
          ...view.services.map((s) => [
            s.id,
            s.source,
            s.hostnames.join(',') || '-',
            s.vips.join(',') || '-',
            s.ports.map((p) => `${p.port}/${p.protocol}${p.targetPort ? `->${p.targetPort}` : ''}`).join(','),
            s.loadBalancer,
          ]),
        ])
      : 'none',
  );
  if (view.missingServices.length) out.push(`named in sidecar.json but not in the catalog: ${view.missingServices.join(', ')}`);

  out.push(
    '',
    view.checksReported
      ? "ENDPOINTS (health: the registry's, then the sidecar's active checks and outlier ejections, as of its last report)"
      : "ENDPOINTS (health as the registry says: the sidecar's last report carries no results of its own checks)",
  );
  const endpointRows = view.services.flatMap((s) =>
    s.endpoints.map((e) => [s.id, hostPort(e.address, e.port), e.zone ?? '-', String(e.weight), String(e.priority), endpointHealth(e)]),
  );
  out.push(endpointRows.length ? formatTable([['SERVICE', 'ENDPOINT', 'ZONE', 'WEIGHT', 'PRIORITY', 'HEALTH'], ...endpointRows]) : 'none');
  if (view.takenOutOmitted > 0) out.push(`and ${view.takenOutOmitted} more endpoints taken out by the sidecar that its report had no room for`);
  const policies = view.services.filter((s) => s.healthCheck || s.outlierDetection);
  for (const s of policies)
    out.push(
      `${s.id}: ${[s.healthCheck && `active check ${s.healthCheck}`, s.outlierDetection && `outlier detection: ${s.outlierDetection}`].filter(Boolean).join('; ')}`,
    );

  if (view.dns.length) {
    out.push('', 'DNS RECORDS');
    out.push(formatTable([['NAME', 'TYPE', 'ADDRESS', 'SERVICE'], ...view.dns.map((r) => [r.name, r.type, r.address, r.service ?? ''])]));
  }
  out.push('', `not reported by the sidecar, so not shown: ${view.notReported.join('; ')} (its admin endpoint /endpoints has them, on 127.0.0.1 only)`);
  return `${out.join('\n')}\n`;
}
