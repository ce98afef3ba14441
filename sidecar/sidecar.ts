/*
 * The sidecar itself, given its options: wires the configuration (repo worker or local files) to
 * the data plane. Every configuration change builds new pools, routes and a DNS table and swaps them
 * in at once, so a connection sees one configuration, old or new; pools of services that stay keep
 * their endpoints' health and ejection state, and open connections are never touched. Readiness
 * says why when it is not: starting, draining, no configuration yet (and why: waiting for the
 * codebase, repo unreachable, a file refused), or ports that differ from the mesh's.
 */
import type { Server } from 'node:net';
import type { InterceptionMode, SidecarPorts } from '../common/contract/mesh.js';
import { ProbeSchema } from '../common/contract/sidecar.js';
import { formatAddress, listenError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { AccessLog } from './access-log.js';
import { startAdmin, startMetricsServer, type Readiness } from './admin.js';
import { EndpointPool, endpointKey, type PoolEvent } from './balancer/index.js';
import { endpointHealthReport } from './balancer/health-report.js';
import { localConfigSource, repoConfigSource, type ConfigSource } from './config/source.js';
import type { ConfigChange, SidecarState } from './config/state.js';
import { startDnsServer, type DnsServer } from './dns/server.js';
import { buildDnsTable, type DnsTable } from './dns/table.js';
import { SidecarMetrics, workloadFromEnvironment, type WorkloadIdentity } from './metrics.js';
import type { OriginalDestination } from './native/index.js';
import { PORT_FLAGS } from './port-flags.js';
import { parseAppPreStops, parseAppProbes, runProbe, startProbeServers } from './probes.js';
import { HttpProxy } from './proxy/http.js';
import { Http2Proxy } from './proxy/http2.js';
import { Lazy } from './lazy.js';
import { inboundHttpSource, startInbound, type InboundPort } from './proxy/inbound.js';
import { startOutbound, type OutboundView, type ProxyListener } from './proxy/outbound.js';
import { endpointFallbackEnabled, RouteTable } from './proxy/routes.js';
import type { SidecarBgp } from './bgp/in-sidecar.js';

export type { Readiness };

export type ConfigOrigin =
  { kind: 'repo'; url: string; cacheDir: string; headers?: () => Record<string, string>; caFile?: string } | { kind: 'local'; dir: string; watch: boolean };

export interface SidecarOptions {
  id: string;
  config: ConfigOrigin;
  ports: SidecarPorts;
  log: Logger;
  /** FLB_APP_PROBES, as the injector wrote it. */
  appProbes?: string;
  /** FLB_APP_PRESTOP: the app containers' own preStop hooks, run after the BGP drain of the probe ports' /drain/bgp. */
  appPreStops?: string;
  /** FLB_INTERCEPTION_MODE: the pod's interception mode, when the injector said (else mesh.json's decides). */
  interceptionMode?: InterceptionMode;
  /** Where the app listens: the pod's IP (POD_IP); loopback on a VM. */
  appHost: string;
  /** Upstream resolvers instead of /etc/resolv.conf's (tests). */
  dnsUpstreams?: string[];
  /** How long SIGTERM waits for open connections before closing them. */
  drainMs?: number;
  /**
   * Tests without interception: where an outbound connection was meant to go (SO_ORIGINAL_DST is
   * then not read). Ports given as 0 (any free port) are not compared with the mesh's.
   */
  outboundDestination?: (peer: { address: string; port: number }) => OriginalDestination;
  /** Tests without interception: where an inbound connection was meant to go. */
  inboundDestination?: (peer: { address: string; port: number }) => OriginalDestination;
  /** The workload and namespace in metrics; default: FLB_WORKLOAD_NAME and POD_NAMESPACE, as the injector sets them. */
  workload?: WorkloadIdentity;
}

export interface RunningSidecar {
  readonly metrics: SidecarMetrics;
  /** The ports listened on (those asked for, or the ones the kernel chose for 0). */
  readonly ports: SidecarPorts;
  ready(): boolean;
  /** Ready, or why not. */
  readiness(): Readiness;
  current(): SidecarState | undefined;
  /** Stops accepting, lets open connections finish for up to drainMs, then closes everything. */
  drain(): Promise<void>;
  close(): Promise<void>;
}

export async function runSidecar(options: SidecarOptions): Promise<RunningSidecar> {
  const { log, ports } = options;
  const metrics = new SidecarMetrics(options.workload ?? workloadFromEnvironment());
  const accessLog = new AccessLog(log);
  /** mesh.json's telemetry.accessLog last applied: the admin port's switch holds until it changes. */
  let meshAccessLog: boolean | undefined;
  /** sidecar.json's inbound ports, when mesh.json's telemetry.inboundRequestMetrics sends them through the HTTP proxies. */
  let inboundPorts: ReadonlyMap<number, InboundPort> = new Map();
  const pools = new Map<string, EndpointPool>();
  metrics.countUsableEndpoints(() => [...pools].map(([id, pool]) => [id, pool.counters().usable]));
  metrics.countRejectedFiles(() => source.rejected().length);
  let view: OutboundView = { routes: RouteTable.build([]), pools, unknownDestination: 'passthrough' };
  let listening = false;
  let draining = false;
  const http = new HttpProxy('outbound', metrics, log, accessLog);
  const http2 = new Lazy(() => Http2Proxy.load('outbound', metrics, log, accessLog));
  const inboundHttp = new HttpProxy('inbound', metrics, log, accessLog, inboundHttpSource);
  const inboundHttp2 = new Lazy(() => Http2Proxy.load('inbound', metrics, log, accessLog, inboundHttpSource));
  const appProbes = parseAppProbes(options.appProbes, ProbeSchema, log);

  const onPoolEvent = (event: PoolEvent) => {
    if (event.type === 'ejected') {
      metrics.ejections.labels({ service: event.service }).inc();
      log.info({ service: event.service, endpoint: event.key, ejections: event.ejections, untilMs: event.untilMs }, 'endpoint ejected (outlier detection)');
    } else if (event.type === 'health') log.info({ service: event.service, endpoint: event.key, state: event.state }, 'endpoint health changed (active check)');
    else if (event.type === 'panic')
      log.warn(
        { service: event.service, panic: event.panic },
        event.panic ? 'no usable endpoint: balancing over every registry-healthy one' : 'usable endpoints are back',
      );
  };

  /** A VIP's `readiness` check: every readiness probe of the app's containers passes, as the kubelet would see through the sidecar. */
  const appReadiness = async (): Promise<{ ok: boolean; detail: string }> => {
    const probes = [...appProbes.values()].filter((probe) => probe.kind === 'readiness');
    if (probes.length === 0) return { ok: false, detail: 'the app declares no readiness probe (FLB_APP_PROBES): give the VIP a tcp or http check' };
    const results = await Promise.all(probes.map((probe) => runProbe(probe, options.appHost)));
    const failed = results.find((result) => !result.ok);
    return failed ? { ok: false, detail: `readiness probe: ${failed.detail}` } : { ok: true, detail: `readiness probe: ${results[0]!.detail}` };
  };
  /** The BGP announcer, loaded with the first sidecar.json that has a bgp section (never otherwise). */
  let bgp: Lazy<SidecarBgp> | undefined;
  /** The app's preStop hook came with no announcer loaded: a bgp section arriving later must not start one for an app about to stop. */
  let bgpDrainedBeforeLoad = false;
  const applyBgp = (section: SidecarState['sidecar']['bgp']) => {
    if (!section && !bgp) return;
    if (bgpDrainedBeforeLoad) return;
    bgp ??= new Lazy(async () => new (await import('./bgp/in-sidecar.js')).SidecarBgp(log, metrics.registry, appReadiness));
    bgp.get().then(
      (announcer) => announcer.apply(section),
      (error: unknown) => log.error({ err: error }, 'the BGP announcer could not be loaded'),
    );
  };

  /**
   * The configuration source starts before the listeners (its first answer from the repo is the
   * longest wait of a sidecar's start), so a configuration may come before the DNS server or the
   * proxies are up: what they need of it is kept here and given to each as it starts.
   */
  let dns: DnsServer | undefined;
  let dnsTable: DnsTable | undefined;
  let idleTimeoutMs: number | undefined;
  const swapDnsTable = (server: DnsServer, table: DnsTable) =>
    server.setTable(table).catch((error: unknown) => log.error({ err: error }, 'the DNS table could not be swapped; the previous one stays'));
  const apply = (state: SidecarState, change: ConfigChange) => {
    for (const [id, service] of state.services) {
      let pool = pools.get(id);
      if (!pool) pools.set(id, (pool = new EndpointPool({ onEvent: onPoolEvent })));
      pool.update(service, state.sidecar.locality);
    }
    for (const [id, pool] of pools) {
      if (state.services.has(id)) continue;
      pool.close();
      pools.delete(id);
    }
    view = {
      routes: RouteTable.build(state.services.values(), { endpointFallback: endpointFallbackEnabled(state.mesh, options.interceptionMode) }),
      pools: new Map(pools),
      unknownDestination: state.mesh.outbound.unknownDestination,
    };
    for (const problem of view.routes.problems) log.warn({ problem }, 'endpoint address dialled directly goes to one of its services');
    idleTimeoutMs = state.mesh.tcp.idleTimeoutSeconds * 1000;
    for (const proxy of proxies) proxy.setIdleTimeout(idleTimeoutMs);
    const { telemetry } = state.mesh;
    if (telemetry.accessLog !== meshAccessLog) accessLog.setEnabled((meshAccessLog = telemetry.accessLog));
    const declared = telemetry.inboundRequestMetrics
      ? state.sidecar.inbound.ports
      : state.sidecar.inbound.ports.map((p) => ({ ...p, protocol: 'tcp' as const }));
    if (!samePorts(inboundPorts, declared)) inboundPorts = new Map(declared.map((p) => [p.port, p]));
    const endpointKeys = new Set([...state.services.values()].flatMap((s) => s.endpoints.map((e) => endpointKey(e.address, e.port))));
    http.retainAgents(endpointKeys);
    http2.current()?.retainSessions(endpointKeys);
    const table = buildDnsTable([...state.services.values()], state.sidecar.dns.records, state.sidecar.dns.searchDomains, {
      clusterDomain: state.mesh.clusterDomain,
    });
    for (const problem of table.problems) log.warn({ problem }, 'DNS name not served');
    dnsTable = table;
    if (dns) swapDnsTable(dns, table);
    applyBgp(state.sidecar.bgp);
    metrics.configApplied.inc();
    log.debug({ version: state.version, services: state.services.size, routes: view.routes.size, change: summarize(change) }, 'data plane updated');
  };

  /** Snapshots only of the pools that have one: a report every few seconds must not copy the whole catalog. */
  function* poolsWithUnhealthyEndpoints() {
    for (const pool of pools.values()) {
      const counters = pool.counters();
      if (counters.ejected > 0 || counters.activeUnhealthy > 0) yield pool.snapshot();
    }
  }

  // Not a closure over `source` before it exists: the sources report changes while they start.
  const statusChanged = () => void readiness();
  const source: ConfigSource =
    options.config.kind === 'repo'
      ? repoConfigSource({
          url: options.config.url,
          cacheDir: options.config.cacheDir,
          log,
          onUpdate: apply,
          onStatusChange: statusChanged,
          reportExtra: () => endpointHealthReport(poolsWithUnhealthyEndpoints()),
          ...(options.config.headers ? { headers: options.config.headers } : {}),
          ...(options.config.caFile !== undefined ? { caFile: options.config.caFile } : {}),
        })
      : localConfigSource({ dir: options.config.dir, log, onUpdate: apply, watch: options.config.watch, sidecarId: options.id, onStatusChange: statusChanged });

  const servers: Server[] = [];
  const proxies: ProxyListener[] = [];
  const bound: SidecarPorts = { ...ports };
  let lastReadiness: Readiness | undefined;
  /** Ready, or why not; logged when the answer changes. */
  function readiness(): Readiness {
    const now = currentReadiness();
    if (now.reason !== lastReadiness?.reason) {
      if (now.ready) log.info({ version: source.current()?.version }, 'ready');
      // Draining is the ordinary end of a sidecar, not a problem.
      else if (draining) log.info({ reason: now.reason }, 'not ready');
      else if (lastReadiness !== undefined || listening) log.warn({ reason: now.reason }, 'not ready');
      lastReadiness = now;
    }
    return now;
  }
  function currentReadiness(): Readiness {
    if (draining) return { ready: false, reason: 'draining: SIGTERM received, open connections are finishing' };
    if (!listening) return { ready: false, reason: 'starting: listeners not up yet' };
    const state = source.current();
    if (!state) return { ready: false, reason: source.waitingFor() };
    const mismatch = portMismatch(ports, state.mesh.ports);
    if (mismatch) return { ready: false, reason: mismatch };
    return { ready: true, reason: 'ready' };
  }
  const ready = () => readiness().ready;
  let closing: Promise<void> | undefined;
  /** A listener's start; a failure names the listener and the flag that moves it (a port taken, say). */
  async function asListener<T>(name: keyof SidecarPorts, host: string, start: () => T | Promise<T>): Promise<T> {
    try {
      return await start();
    } catch (error) {
      throw describeListenError(error, name, host);
    }
  }
  function describeListenError(error: unknown, name: keyof SidecarPorts, host: string): unknown {
    return listenError(error, { what: `the sidecar's ${LISTENERS[name]}`, address: formatAddress(host, ports[name]), flag: `${PORT_FLAGS[name]} PORT` });
  }
  // The cached configuration and the repo's first answer while the listeners start.
  const sourceStarted = source.start();
  // Awaited once the listeners are up; a failure meanwhile is not an unhandled rejection.
  sourceStarted.catch(() => {});
  try {
    dns = await asListener('dns', '127.0.0.1', () =>
      startDnsServer({
        listen: dnsListen(ports.dns),
        log,
        registry: metrics.registry,
        ...(options.dnsUpstreams ? { upstreams: options.dnsUpstreams } : {}),
      }),
    );
    bound.dns = dns.ports[0]?.port ?? ports.dns;
    if (dnsTable) swapDnsTable(dns, dnsTable);
    const outbound = await asListener('outbound', '::', () =>
      startOutbound({
        host: '::',
        port: ports.outbound,
        view: () => view,
        http,
        http2,
        metrics,
        log,
        accessLog,
        ...(options.outboundDestination ? { destination: options.outboundDestination } : {}),
      }),
    );
    proxies.push(outbound);
    if (idleTimeoutMs !== undefined) outbound.setIdleTimeout(idleTimeoutMs);
    bound.outbound = outbound.port;
    const inbound = await asListener('inbound', '::', () =>
      startInbound({
        host: '::',
        port: ports.inbound,
        metrics,
        log,
        accessLog,
        ports: () => inboundPorts,
        http: inboundHttp,
        http2: inboundHttp2,
        ...(options.inboundDestination ? { destination: options.inboundDestination } : {}),
      }),
    );
    proxies.push(inbound);
    if (idleTimeoutMs !== undefined) inbound.setIdleTimeout(idleTimeoutMs);
    bound.inbound = inbound.port;
    const admin = await asListener('admin', '127.0.0.1', () =>
      startAdmin({
        host: '127.0.0.1',
        port: ports.admin,
        readiness,
        registry: metrics.registry,
        log,
        accessLog,
        configDump: () => configDump(options.id, source),
        endpoints: () => [...pools.values()].map((p) => p.snapshot()),
        bgp: () => bgp?.current()?.status(),
      }),
    );
    servers.push(admin);
    bound.admin = portOf(admin);
    const metricsServer = await asListener('metrics', '::', () => startMetricsServer('::', ports.metrics, metrics.registry));
    servers.push(metricsServer);
    bound.metrics = portOf(metricsServer);
    const probePorts = [ports.livenessProbe, ports.readinessProbe, ports.startupProbe];
    const probeServers = await startProbeServers({
      ports: probePorts,
      host: '::',
      probes: () => appProbes,
      appHost: options.appHost,
      readiness,
      log,
      drainBgp: async () => {
        if (bgp) return (await bgp.get()).drainBeforeAppStops();
        bgpDrainedBeforeLoad = true;
        return 'no bgp section in sidecar.json: nothing to withdraw';
      },
      appPreStops: parseAppPreStops(options.appPreStops, log),
    }).catch((error: unknown) => {
      const failed = (error as { port?: unknown }).port;
      const name = (['livenessProbe', 'readinessProbe', 'startupProbe'] as const).find((probe) => ports[probe] === failed) ?? 'livenessProbe';
      throw describeListenError(error, name, '::');
    });
    servers.push(...probeServers);
    // One server per distinct port, in order.
    const distinct = [...new Set(probePorts)];
    const probeServerPort = (port: number) => portOf(probeServers[distinct.indexOf(port)]!);
    bound.livenessProbe = probeServerPort(ports.livenessProbe);
    bound.readinessProbe = probeServerPort(ports.readinessProbe);
    bound.startupProbe = probeServerPort(ports.startupProbe);
    await sourceStarted;
    listening = true;
  } catch (error) {
    // Not stopped half-started: a worker made after stop() would keep running.
    await sourceStarted.catch(() => {});
    await closeAll();
    throw error;
  }
  log.info({ id: options.id, ports: bound, config: options.config.kind }, 'sidecar started');
  readiness();

  /** Once: drain() ends with it, and close() after drain() finds it done. */
  function closeAll(): Promise<void> {
    return (closing ??= closeEverything());
  }

  async function closeEverything(): Promise<void> {
    await source.stop().catch(() => {});
    for (const proxy of proxies) proxy.close();
    for (const server of servers) server.close();
    for (const server of servers) (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
    http.close();
    http2.current()?.close();
    inboundHttp.close();
    inboundHttp2.current()?.close();
    await dns?.close();
    for (const pool of pools.values()) pool.close();
    await bgp?.current()?.close();
  }

  return {
    metrics,
    ports: bound,
    ready,
    readiness,
    current: () => source.current(),
    async drain() {
      draining = true;
      readiness();
      // BGP first: GRACEFUL_SHUTDOWN goes out at once, so the routers move new flows away while
      // the proxies let open connections finish; the VIPs are withdrawn after bgp.drainSeconds.
      // get(), not current(): an announcer still loading is drained once it is there.
      const bgpDrained = bgp?.get().then(
        (announcer) => announcer.drain(),
        () => undefined,
      );
      for (const proxy of proxies) proxy.stopAccepting();
      const deadline = Date.now() + (options.drainMs ?? 5000);
      while (Date.now() < deadline && proxies.some((proxy) => proxy.openConnections() > 0)) await new Promise((r) => setTimeout(r, 100));
      await bgpDrained;
      await closeAll();
    },
    close: closeAll,
  };
}

/** Each port's listener, as a user reads it in an error. */
const LISTENERS: Record<keyof SidecarPorts, string> = {
  admin: 'admin listener',
  outbound: 'outbound listener',
  inbound: 'inbound listener',
  metrics: 'metrics listener',
  dns: 'DNS server',
  livenessProbe: 'liveness probe listener',
  readinessProbe: 'readiness probe listener',
  startupProbe: 'startup probe listener',
};

function portOf(server: Server): number {
  const address = server.address();
  return typeof address === 'object' && address ? address.port : 0;
}

/**
 * The sidecar's ports against the mesh's: the injector rewrote probes and the interception rules
 * redirect to the mesh's ports, so a sidecar listening elsewhere would drop that traffic. A port
 * given as 0 (tests: any free one) is not compared.
 */
export function portMismatch(ours: SidecarPorts, mesh: SidecarPorts): string | undefined {
  const differences: string[] = [];
  for (const [name, flag] of Object.entries(PORT_FLAGS) as [keyof SidecarPorts, string][]) {
    if (ours[name] !== 0 && ours[name] !== mesh[name]) differences.push(`${name} ${ours[name]} (${flag}) where mesh.json says ${mesh[name]}`);
  }
  if (differences.length === 0) return undefined;
  return `ports differ from mesh.json's: ${differences.join(', ')}; the probes and interception rules follow mesh.json, so run the sidecar with its ports (re-inject the pod, or pass ${differences.length === 1 ? 'that flag' : 'those flags'})`;
}

/** DNS on 127.0.0.1 and ::1 (a REDIRECTed UDP query must reach a loopback-bound socket). */
function dnsListen(port: number) {
  return [
    { host: '127.0.0.1', port },
    { host: '::1', port },
  ];
}

/** The inbound ports as last applied, unchanged: the inbound listener keeps what it made of them. */
function samePorts(
  current: ReadonlyMap<number, InboundPort>,
  declared: readonly { port: number; name?: string | undefined; protocol: InboundPort['protocol'] }[],
): boolean {
  return current.size === declared.length && declared.every((p) => current.get(p.port)?.name === p.name && current.get(p.port)?.protocol === p.protocol);
}

function summarize(change: ConfigChange) {
  const { added, changed, removed } = change.services;
  return { mesh: change.mesh, sidecar: change.sidecar, added: added.length, changed: changed.length, removed: removed.length };
}

function configDump(id: string, source: ConfigSource) {
  const state = source.current();
  return {
    id,
    version: state?.version ?? null,
    mesh: state?.mesh ?? null,
    sidecar: state?.sidecar ?? null,
    services: state ? [...state.services.values()] : [],
    rejected: source.rejected(),
  };
}
