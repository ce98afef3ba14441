// `flb bridge run`: the control plane. Sources (Kubernetes now) feed one catalog; while this replica
// leads (a Lease), the catalog feeds the sinks (the repo now) and the repo's CA is kept in every
// namespace with injected pods. A standby keeps its sources running, so taking over costs a
// replay of what it already holds, not a new list; the publisher reads what the repo has, so it
// republishes nothing unchanged, and it deletes nothing before the sources' first full list.
import { createServer, type Server } from 'node:http';
import { hostname } from 'node:os';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Registry } from 'prom-client';
import { SIDECAR_INJECTED_LABEL, SIDECAR_INJECTED_VALUE, type BridgeConfig, type Mesh, type Service, type SinkConfig } from '../common/contract/index.js';
import { KubeEventRecorder, kubeEventsApi, type EventsApi, type KubeEvent } from '../common/kube-events.js';
import { formatAddress, listenError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { Catalog } from './core/catalog.js';
import { SyncLag } from './core/sync-lag.js';
import type { Sink, SinkStatus, Source, SourceStatus } from './core/types.js';
import { LeaderElector } from './kube/leader.js';
import { MeshSettings } from './kube/mesh-settings.js';
import { createBridgeMetrics } from './metrics.js';
import { RepoCaConfigMaps } from './kube/repo-ca.js';
import { ConsulSink } from './sinks/consul/sink.js';
import { EurekaSink } from './sinks/eureka/sink.js';
import { KubernetesSink } from './sinks/kubernetes/sink.js';
import { RepoSink } from './sinks/repo.js';
import { ConsulSource } from './sources/consul/source.js';
import { EurekaSource } from './sources/eureka/source.js';
import { KubernetesSource } from './sources/kubernetes/source.js';

export interface BridgeOptions {
  config: BridgeConfig;
  kubeConfig: KubeConfig;
  log: Logger;
  /** This replica's name in the Lease; the pod name in a cluster. */
  identity?: string;
  /** host:port of the status, health and metrics endpoint; undefined: none. */
  admin?: { host: string; port: number };
}

export interface BridgeStatus {
  identity: string;
  leader: boolean;
  leaseHolder: string;
  mesh: { name: string; where: string; problem?: string };
  catalog: { services: number; sidecars: number; rejected: number; conflicts: number };
  sources: SourceReport[];
  sinks: SinkStatus[];
}

export interface SourceReport extends SourceStatus {
  /**
   * Age in ms of the oldest change the source reported that the sinks have not written yet (0: all
   * written). Absent on a standby: it writes nothing.
   */
  syncLagMs?: number;
}

export interface Bridge {
  readonly catalog: Catalog;
  readonly registry: Registry;
  readonly adminPort: number | undefined;
  status(): BridgeStatus;
  /** Resolves once the sinks have written everything told so far (when leading). */
  settled(): Promise<void>;
  stop(): Promise<void>;
}

interface SinkContext {
  sources: BridgeConfig['sources'];
  kubeConfig: KubeConfig;
  log: Logger;
  raiseEvent: (event: KubeEvent) => void;
  /** A Warning Event on the Kubernetes Service a sink could not write (registry services have no object to carry one). */
  problemOn: (service: Pick<Service, 'name' | 'source' | 'namespace'>, reason: string, why: string) => void;
}

function makeSink(config: SinkConfig, context: SinkContext): Sink {
  const { log, sources } = context;
  switch (config.kind) {
    case 'repo':
      return new RepoSink(config, log);
    case 'consul':
      return new ConsulSink({ config, sources, log, onProblem: (service, why) => context.problemOn(service, 'ConsulSyncFailed', why) });
    case 'eureka':
      return new EurekaSink({ config, sources, log, onProblem: (service, why) => context.problemOn(service, 'EurekaSyncFailed', why) });
    case 'kubernetes':
      return new KubernetesSink({
        config,
        sources,
        kubeConfig: context.kubeConfig,
        log,
        onClash: (clash) =>
          context.raiseEvent({
            subject: { apiVersion: 'v1', kind: 'Service', namespace: clash.namespace, name: clash.name, uid: clash.uid },
            type: 'Warning',
            reason: 'ServiceNameTaken',
            message: clash.message,
          }),
      });
  }
}

export async function startBridge(options: BridgeOptions): Promise<Bridge> {
  const { config, kubeConfig, log } = options;
  const identity = options.identity ?? process.env.POD_NAME ?? hostname();
  const controlPlaneNamespace = config.leaderElection.namespace;

  const sources: Source[] = [];
  const kubernetesSources: KubernetesSource[] = [];
  // Events only on objects the sources hold with that uid (the mesh settings raise their own, on their ConfigMap).
  const cluster = kubeEventsApi(kubeConfig);
  const eventsApi: EventsApi = {
    verifiableKinds: new Set(['v1 Service', 'v1 Pod']),
    async uidOf(subject) {
      for (const source of kubernetesSources) {
        const uid = source.uidOf(subject.kind as 'Service' | 'Pod', subject.namespace, subject.name);
        if (uid) return uid;
      }
      return undefined;
    },
    createEvent: (namespace, body) => cluster.createEvent(namespace, body),
  };
  // Read at each scrape, which comes after `status` below is made.
  const { registry, eventsDropped } = createBridgeMetrics(() => status());
  const recorder = new KubeEventRecorder({ api: eventsApi, log, component: 'flb-bridge', onDropped: (reason) => eventsDropped.inc({ reason }) });
  const raiseEvent = (event: KubeEvent) => void recorder.record(event);

  // Set once the mesh settings are in: their first reading comes before the catalog exists.
  const built: { catalog?: Catalog } = {};
  const meshSettings = new MeshSettings({
    ...(config.mesh.configMap ? { configMap: config.mesh.configMap, kubeConfig } : {}),
    ...(config.mesh.file ? { file: config.mesh.file } : {}),
    log,
    onEventDropped: (reason) => eventsDropped.inc({ reason }),
    onChange: (mesh: Mesh) => {
      built.catalog?.setMesh(mesh);
      for (const source of sources) source.setMesh(mesh);
    },
  });
  const mesh = await meshSettings.start();
  const catalog = (built.catalog = new Catalog(
    config.sources.map((s) => s.name),
    mesh,
    log,
  ));
  for (const sourceConfig of config.sources) {
    if (sourceConfig.kind === 'eureka') {
      sources.push(new EurekaSource({ config: sourceConfig, log }));
      continue;
    }
    if (sourceConfig.kind === 'consul') {
      sources.push(new ConsulSource({ config: sourceConfig, log }));
      continue;
    }
    const source = new KubernetesSource({
      config: sourceConfig,
      kubeConfig,
      mesh,
      injectedPodSelector: `${SIDECAR_INJECTED_LABEL}=${SIDECAR_INJECTED_VALUE}`,
      log,
      raiseEvent,
    });
    kubernetesSources.push(source);
    sources.push(source);
  }
  const repoCa = config.repoCaFile
    ? new RepoCaConfigMaps({
        kubeConfig,
        caFile: config.repoCaFile,
        log,
        podNamespaces: function* () {
          for (const source of kubernetesSources) yield* source.podNamespaces();
        },
      })
    : undefined;

  const sinkContext: SinkContext = {
    sources: config.sources,
    kubeConfig,
    log,
    raiseEvent,
    problemOn: (service, reason, why) => {
      if (service.source !== 'kubernetes' || !service.namespace) return;
      const uid = kubernetesSources.map((k) => k.uidOf('Service', service.namespace!, service.name)).find((u) => u !== undefined);
      if (uid)
        raiseEvent({
          subject: { apiVersion: 'v1', kind: 'Service', namespace: service.namespace, name: service.name, uid },
          type: 'Warning',
          reason,
          message: why,
        });
    },
  };
  let sinks: Sink[] = [];
  const syncLag = new SyncLag(
    catalog,
    config.sources.map((s) => s.name),
    () => sinks,
  );
  // Each term of leadership; a term that ended while it read the stored VIPs attaches nothing.
  let term = 0;
  const leading = () => {
    const mine = ++term;
    const next = config.sinks.map((s) => makeSink(s, sinkContext));
    void readStoredVips(next, log, () => mine !== term).then(async (stored) => {
      const publishedMesh = meshSettings.loaded ? undefined : await readStoredMesh(next, log);
      if (mine !== term) {
        void Promise.all(next.map((s) => s.stop()));
        return;
      }
      const adopted = publishedMesh === undefined || meshSettings.loaded ? undefined : meshSettings.adoptPublished(publishedMesh);
      if (adopted) {
        catalog.setMesh(adopted);
        for (const source of sources) source.setMesh(adopted);
      }
      // Before the sinks hear anything: what sidecars hold is what gets published.
      catalog.adoptStoredVips(stored);
      sinks = next;
      catalog.attach(sinks);
      syncLag.sinksChanged();
      repoCa?.setActive(true);
    });
  };
  const following = () => {
    term++;
    repoCa?.setActive(false);
    const stopped = catalog.detach();
    sinks = [];
    syncLag.sinksChanged();
    void Promise.all(stopped.map((s) => s.stop()));
  };
  const elector = config.leaderElection.enabled
    ? new LeaderElector({
        kubeConfig,
        namespace: controlPlaneNamespace,
        name: config.leaderElection.name,
        identity,
        leaseDurationSeconds: config.leaderElection.leaseDurationSeconds,
        renewDeadlineSeconds: config.leaderElection.renewDeadlineSeconds,
        retryPeriodSeconds: config.leaderElection.retryPeriodSeconds,
        log,
        onStartedLeading: leading,
        onStoppedLeading: following,
      })
    : undefined;

  for (const source of sources) source.start(syncLag);
  repoCa?.start();
  if (elector) elector.start();
  else leading();
  // Sidecar codebases of pods that went away unseen (a missed delete) are collected now and then.
  const resync = setInterval(() => {
    if (catalog.allSynced) for (const sink of sinks) sink.complete();
  }, config.sidecars.resyncSeconds * 1000);

  const status = (): BridgeStatus => ({
    identity,
    leader: elector ? elector.isLeader : true,
    leaseHolder: elector ? elector.holder : identity,
    mesh: { name: meshSettings.current().name, where: meshSettings.where, ...(meshSettings.problem ? { problem: meshSettings.problem } : {}) },
    catalog: { ...catalog.stats },
    sources: sources.map((s) => {
      const lag = syncLag.lagMs(s.name);
      return { ...s.status(), ...(lag === undefined ? {} : { syncLagMs: lag }) };
    }),
    sinks: sinks.map((s) => s.status()),
  });

  let server: Server | undefined;
  let adminPort: number | undefined;
  if (options.admin) {
    server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else if (path === '/readyz') {
        const s = status();
        const notSynced = s.sources.filter((x) => x.state === 'starting').map((x) => x.name);
        const ready = notSynced.length === 0;
        res
          .writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' })
          .end(ready ? 'ready\n' : `not ready: waiting for the first full list of ${notSynced.join(', ')}\n`);
      } else if (path === '/status') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(status(), null, 2)}\n`);
      } else if (path === '/metrics') {
        registry.metrics().then(
          (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
          (error: unknown) => res.writeHead(500).end(String(error)),
        );
      } else res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /status, /healthz, /readyz or /metrics\n');
    });
    const { host, port } = options.admin;
    await new Promise<void>((resolve, reject) => {
      server!.once('error', (error) =>
        reject(listenError(error, { what: "the bridge's admin endpoint", address: formatAddress(host, port), flag: '--admin HOST:PORT' })),
      );
      server!.listen(port, host, () => resolve());
    });
    adminPort = (server.address() as { port: number }).port;
  }

  return {
    catalog,
    registry,
    adminPort,
    status,
    async settled() {
      await Promise.all(sinks.map((s) => s.settled()));
    },
    async stop() {
      clearInterval(resync);
      await elector?.stop();
      if (!elector) following();
      await repoCa?.stop();
      await Promise.all(sources.map((s) => s.stop()));
      await meshSettings.stop();
      await recorder.flush();
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    },
  };
}

/**
 * Mesh VIPs the sinks stored with the catalog, retried with backoff until read (or `cancelled`):
 * publishing before would give registry services new VIPs while sidecars hold the old ones.
 */
async function readStoredVips(sinks: readonly Sink[], log: Logger, cancelled: () => boolean): Promise<Map<string, string>> {
  const stored = new Map<string, string>();
  for (const sink of sinks) {
    if (!sink.storedVips) continue;
    for (let delay = 200; !cancelled(); delay = Math.min(delay * 2, 10_000)) {
      try {
        const started = Date.now();
        for (const [id, address] of await sink.storedVips()) if (!stored.has(id)) stored.set(id, address);
        log.info({ sink: sink.name, vips: stored.size, ms: Date.now() - started }, 'read the VIPs the published catalog holds');
        break;
      } catch (error) {
        log.warn(
          { sink: sink.name, err: (error as Error).message, retryInMs: delay },
          'cannot read the VIPs the published catalog holds; publishing waits for them',
        );
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }
  return stored;
}

/** The mesh.json the first sink that stores one holds; undefined if none does or it cannot be read (the defaults then). */
async function readStoredMesh(sinks: readonly Sink[], log: Logger): Promise<string | undefined> {
  for (const sink of sinks) {
    if (!sink.storedMesh) continue;
    try {
      return await sink.storedMesh();
    } catch (error) {
      log.warn({ sink: sink.name, err: (error as Error).message }, 'cannot read the published mesh.json back');
    }
  }
  return undefined;
}
