// The Kubernetes source: Services and EndpointSlices into catalog services, injected pods into
// sidecar.json. Four lean informers (informer.ts) keep compact records; every event recomputes only
// what it touches (one service for a slice, one pod's sidecar for a pod, the pods of a namespace for
// a Service whose selector or ports moved), and the catalog passes on only documents that changed.
import type { KubeConfig } from '@kubernetes/client-node';
import type { KubernetesSourceConfig, Mesh } from '../../../common/contract/index.js';
import type { KubeEvent } from '../../../common/kube-events.js';
import type { Logger } from '../../../common/log.js';
import type { CatalogUpdates, Source, SourceStatus } from '../../core/types.js';
import { Informer, type InformerEvent } from '../../kube/informer.js';
import { policyFromAnnotations } from './policy.js';
import {
  bgpConfigMapRecord,
  nodeRecord,
  podRecord,
  serviceRecord,
  sliceRecord,
  type BgpConfigMapRecord,
  type NodeRecord,
  type PodRecord,
  type ServiceRecord,
  type SliceRecord,
} from './records.js';
import { bgpSectionFor, selects, translatePod, translateService, type BgpConfig } from './translate.js';

export const EXPORT_ANNOTATION = 'flomesh.io/export';
/** Objects of the first full list reported between two turns of the event loop (tens of milliseconds of work). */
const FIRST_LIST_SLICE = 200;

export interface KubernetesSourceOptions {
  config: KubernetesSourceConfig;
  kubeConfig: KubeConfig;
  mesh: Mesh;
  /** Selects the pods that carry a sidecar (the injector's label). */
  injectedPodSelector: string;
  log: Logger;
  /** Events a user should see on the Service or pod (a bad annotation). */
  raiseEvent?: (event: KubeEvent) => void;
}

export class KubernetesSource implements Source {
  readonly kind = 'kubernetes';
  readonly name: string;
  private mesh: Mesh;
  private updates?: CatalogUpdates;
  private readonly services: Informer<ServiceRecord>;
  private readonly slices: Informer<SliceRecord>;
  private readonly pods: Informer<PodRecord>;
  private readonly nodes: Informer<NodeRecord>;
  /** ConfigMaps with a bgp.yaml or bgp.json key (pods name theirs with flomesh.io/bgp-config). */
  private readonly bgpConfigMaps: Informer<BgpConfigMapRecord>;
  /** Pods by the ConfigMap (namespace/name) their flomesh.io/bgp-config names. */
  private readonly podsByBgpConfigMap = new Map<string, Set<string>>();
  /** Each pod's last good BGP section: a bad edit of its ConfigMap keeps it, rather than withdrawing the pod's VIPs. */
  private readonly lastGoodBgp = new Map<string, BgpConfig>();
  private readonly slicesByService = new Map<string, Set<string>>();
  private readonly podsByNamespace = new Map<string, Set<string>>();
  private readonly podsByNode = new Map<string, Set<string>>();
  /** Catalog ids this source reported, by Service key; sidecar ids by pod key. */
  private readonly reportedServices = new Map<string, string>();
  private readonly reportedSidecars = new Map<string, string>();
  /** The last problem text reported per object, so an Event is raised when it changes, not on every event. */
  private readonly reportedProblems = new Map<string, string>();
  private readonly servicesByNamespace = new Map<string, Set<string>>();
  /** Before the first full list, work is only noted: one pass at the end instead of one per slice and pod. */
  private readonly pendingServices = new Set<string>();
  private readonly pendingPods = new Set<string>();
  private endpointCount = 0;
  private lastSyncAt = 0;
  private syncedOnce = false;
  private firstListReported = false;
  private stopped = false;

  constructor(private readonly options: KubernetesSourceOptions) {
    this.name = options.config.name;
    this.mesh = options.mesh;
    const log = options.log.child({ source: this.name });
    const common = { kubeConfig: options.kubeConfig, log };
    this.services = new Informer({
      ...common,
      path: '/api/v1/services',
      transform: serviceRecord,
      onEvent: (e) => this.onService(e),
      onSynced: () => this.onSynced(),
    });
    this.slices = new Informer({
      ...common,
      path: '/apis/discovery.k8s.io/v1/endpointslices',
      labelSelector: 'kubernetes.io/service-name',
      transform: sliceRecord,
      onEvent: (e) => this.onSlice(e),
      onSynced: () => this.onSynced(),
    });
    this.pods = new Informer({
      ...common,
      path: '/api/v1/pods',
      labelSelector: options.injectedPodSelector,
      transform: podRecord,
      onEvent: (e) => this.onPod(e),
      onSynced: () => this.onSynced(),
    });
    this.nodes = new Informer({ ...common, path: '/api/v1/nodes', transform: nodeRecord, onEvent: (e) => this.onNode(e), onSynced: () => this.onSynced() });
    this.bgpConfigMaps = new Informer({
      ...common,
      path: '/api/v1/configmaps',
      transform: bgpConfigMapRecord,
      onEvent: (e) => this.onBgpConfigMap(e),
      onSynced: () => this.onSynced(),
    });
  }

  private get informers(): Informer<unknown>[] {
    return [this.services, this.slices, this.pods, this.nodes, this.bgpConfigMaps] as Informer<unknown>[];
  }

  start(updates: CatalogUpdates): void {
    this.updates = updates;
    // Nodes first: a pod's zone comes from its node.
    for (const informer of [this.nodes, this.bgpConfigMaps, this.services, this.slices, this.pods] as Informer<unknown>[]) informer.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.informers.map((i) => i.stop()));
  }

  setMesh(mesh: Mesh): void {
    const before = this.mesh;
    this.mesh = mesh;
    if (before.clusterName === mesh.clusterName && before.clusterDomain === mesh.clusterDomain && before.name === mesh.name) return;
    for (const [key] of this.services.entries()) this.refreshService(key);
    for (const [key] of this.pods.entries()) this.refreshPod(key);
  }

  status(): SourceStatus {
    const stats = this.informers.map((i) => i.stats);
    const lastContactAt = Math.min(...stats.map((s) => s.lastContactAt));
    const stale = this.syncedOnce && Date.now() - lastContactAt > this.options.config.staleAfterSeconds * 1000 && stats.some((s) => !s.connected);
    const lastError = stats.find((s) => s.lastError)?.lastError;
    return {
      name: this.name,
      kind: this.kind,
      address: this.options.kubeConfig.getCurrentCluster()?.server ?? '',
      state: !this.firstListReported ? 'starting' : stale ? 'stale' : 'synced',
      services: this.reportedServices.size,
      endpoints: this.endpointCount,
      sidecars: this.reportedSidecars.size,
      lastContactAt,
      lastSyncAt: this.lastSyncAt,
      errors: stats.reduce((n, s) => n + s.errors, 0),
      ...(lastError ? { lastError } : {}),
    };
  }

  private onSynced(): void {
    if (!this.informers.every((i) => i.synced)) return;
    this.lastSyncAt = Date.now();
    if (this.syncedOnce) return;
    this.syncedOnce = true;
    void this.reportFirstList();
  }

  /**
   * What the first full list held, FIRST_LIST_SLICE objects at a time with the event loop free in
   * between: the sinks start writing the first services while the rest are translated (10,000
   * Services are seconds of translation and seconds of repo writes, now overlapped), and watch
   * events are not held up behind the whole pass. Synced only once everything was reported.
   */
  private async reportFirstList(): Promise<void> {
    const services = [...this.pendingServices];
    const pods = [...this.pendingPods];
    this.pendingServices.clear();
    this.pendingPods.clear();
    for (const [keys, refresh] of [
      [services, (key: string) => this.refreshService(key)],
      [pods, (key: string) => this.refreshPod(key)],
    ] as const) {
      for (let i = 0; i < keys.length; i += FIRST_LIST_SLICE) {
        if (i > 0) await new Promise((resolve) => setImmediate(resolve));
        if (this.stopped) return;
        for (const key of keys.slice(i, i + FIRST_LIST_SLICE)) refresh(key);
      }
    }
    this.firstListReported = true;
    this.updates?.synced(this.name);
  }

  private exported(namespace: string): boolean {
    const { include, exclude } = this.options.config.namespaces;
    return !exclude.includes(namespace) && (include.includes('*') || include.includes(namespace));
  }

  // ---- services and slices

  private onService(event: InformerEvent<ServiceRecord>): void {
    const namespace = (event.type === 'upsert' ? event.object : event.previous).namespace;
    let inNamespace = this.servicesByNamespace.get(namespace);
    if (event.type === 'upsert') {
      if (!inNamespace) this.servicesByNamespace.set(namespace, (inNamespace = new Set()));
      inNamespace.add(event.key);
    } else {
      inNamespace?.delete(event.key);
      if (inNamespace?.size === 0) this.servicesByNamespace.delete(namespace);
    }
    this.refreshService(event.key);
    const before = event.previous;
    const after = event.type === 'upsert' ? event.object : undefined;
    // Inbound ports of the pods it selects follow its selector and ports.
    if (JSON.stringify([before?.selector, before?.ports]) !== JSON.stringify([after?.selector, after?.ports])) {
      for (const podKey of this.podsByNamespace.get(namespace) ?? []) this.refreshPod(podKey);
    }
  }

  private onSlice(event: InformerEvent<SliceRecord>): void {
    const slice = event.type === 'upsert' ? event.object : event.previous;
    const serviceKey = `${slice.namespace}/${slice.service}`;
    let keys = this.slicesByService.get(serviceKey);
    if (event.type === 'upsert') {
      if (!keys) this.slicesByService.set(serviceKey, (keys = new Set()));
      keys.add(event.key);
    } else {
      keys?.delete(event.key);
      if (keys?.size === 0) this.slicesByService.delete(serviceKey);
    }
    this.refreshService(serviceKey);
  }

  private slicesOf(serviceKey: string): SliceRecord[] {
    const out: SliceRecord[] = [];
    for (const key of this.slicesByService.get(serviceKey) ?? []) {
      const slice = this.slices.get(key);
      if (slice) out.push(slice);
    }
    return out;
  }

  private refreshService(key: string): void {
    if (!this.syncedOnce) {
      this.pendingServices.add(key);
      return;
    }
    const svc = this.services.get(key);
    const previousId = this.reportedServices.get(key);
    const previousEndpoints = previousId ? (this.endpointsOf.get(key) ?? 0) : 0;
    const withdraw = () => {
      if (previousId === undefined) return;
      this.reportedServices.delete(key);
      this.endpointCount -= previousEndpoints;
      this.endpointsOf.delete(key);
      this.updates?.removeService(this.name, previousId);
    };
    if (!svc || !this.exported(svc.namespace)) return withdraw();
    const exportAnnotation = svc.annotations[EXPORT_ANNOTATION];
    if (exportAnnotation === 'false' || (!this.options.config.exportByDefault && exportAnnotation !== 'true')) return withdraw();
    const { policy, problems: policyProblems } = policyFromAnnotations(svc.annotations);
    const translated = translateService(svc, this.slicesOf(key), policy, this.mesh);
    const problems = [...policyProblems.map((p) => `${p}; the default policy is used`), ...translated.problems];
    this.report(key, { apiVersion: 'v1', kind: 'Service', namespace: svc.namespace, name: svc.name, uid: svc.uid }, 'InvalidServiceForMesh', problems);
    if (!translated.service) {
      this.options.log.debug({ service: key, why: translated.skipped }, 'Service not in the catalog');
      return withdraw();
    }
    const service = translated.service;
    if (previousId !== undefined && previousId !== service.id) this.updates?.removeService(this.name, previousId);
    this.reportedServices.set(key, service.id);
    this.endpointCount += service.endpoints.length - previousEndpoints;
    this.endpointsOf.set(key, service.endpoints.length);
    this.updates?.upsertService(this.name, service);
  }

  private readonly endpointsOf = new Map<string, number>();

  /** Logs and raises an Event when an object's problems change (not on every event about it). */
  private report(key: string, subject: NonNullable<KubeEvent['subject']>, reason: string, problems: string[]): void {
    const text = problems.join('; ');
    const before = this.reportedProblems.get(key) ?? '';
    if (text === before) return;
    if (text) this.reportedProblems.set(key, text);
    else this.reportedProblems.delete(key);
    if (!text) return;
    this.options.log.warn({ object: `${subject.kind} ${key}`, problems }, 'a Kubernetes object has problems for the mesh');
    this.options.raiseEvent?.({ subject, type: 'Warning', reason, message: text });
  }

  // ---- pods and nodes

  private onPod(event: InformerEvent<PodRecord>): void {
    const pod = event.type === 'upsert' ? event.object : event.previous;
    const index = (map: Map<string, Set<string>>, group: string | undefined, add: boolean) => {
      if (!group) return;
      let set = map.get(group);
      if (add) {
        if (!set) map.set(group, (set = new Set()));
        set.add(event.key);
      } else {
        set?.delete(event.key);
        if (set?.size === 0) map.delete(group);
      }
    };
    const bgpConfigMap = (p: PodRecord) => (p.bgpConfig === undefined ? undefined : `${p.namespace}/${p.bgpConfig.trim()}`);
    if (event.previous) index(this.podsByNode, event.previous.nodeName, false);
    if (event.previous) index(this.podsByBgpConfigMap, bgpConfigMap(event.previous), false);
    index(this.podsByNamespace, pod.namespace, event.type === 'upsert');
    if (event.type === 'upsert') index(this.podsByNode, event.object.nodeName, true);
    if (event.type === 'upsert') index(this.podsByBgpConfigMap, bgpConfigMap(event.object), true);
    this.refreshPod(event.key);
  }

  /** A BGP ConfigMap appeared, changed or went: the pods naming it are published again. */
  private onBgpConfigMap(event: InformerEvent<BgpConfigMapRecord>): void {
    for (const podKey of this.podsByBgpConfigMap.get(event.key) ?? []) this.refreshPod(podKey);
  }

  private onNode(event: InformerEvent<NodeRecord>): void {
    if (event.type === 'upsert' && event.previous && event.previous.zone === event.object.zone) return;
    const name = (event.type === 'upsert' ? event.object : event.previous).name;
    for (const podKey of this.podsByNode.get(name) ?? []) this.refreshPod(podKey);
  }

  private refreshPod(key: string): void {
    if (!this.syncedOnce) {
      this.pendingPods.add(key);
      return;
    }
    const pod = this.pods.get(key);
    const previousId = this.reportedSidecars.get(key);
    // A finished pod (a Job's) no longer has a running sidecar; one being deleted keeps its
    // configuration until it is gone, since its sidecar drains with it.
    if (!pod || pod.finished) {
      this.lastGoodBgp.delete(key);
      if (previousId !== undefined) {
        this.reportedSidecars.delete(key);
        this.updates?.removeSidecar(this.name, previousId);
      }
      return;
    }
    const selecting: ServiceRecord[] = [];
    for (const serviceKey of this.servicesByNamespace.get(pod.namespace) ?? []) {
      const svc = this.services.get(serviceKey);
      if (svc && selects(svc, pod)) selecting.push(svc);
    }
    const zone = pod.nodeName ? this.nodes.get(pod.nodeName)?.zone : undefined;
    const bgp = this.bgpOf(key, pod);
    const translated = translatePod(pod, selecting, zone, this.mesh, bgp.section);
    const problems = [...(translated.refused ? [translated.refused, ...translated.problems] : translated.problems), ...bgp.problems];
    this.report(
      key,
      { apiVersion: 'v1', kind: 'Pod', namespace: pod.namespace, name: pod.name, uid: pod.uid },
      translated.refused ? 'NoSidecarConfig' : 'SidecarConfigProblem',
      problems,
    );
    if (!translated.config) return;
    this.reportedSidecars.set(key, translated.id);
    this.updates?.upsertSidecar(this.name, translated.id, translated.config);
  }

  /**
   * The pod's BGP section from its ConfigMap; when that is refused or gone, the last good one (said
   * in the problems), since publishing none would withdraw every VIP of the pod over a typo.
   */
  private bgpOf(key: string, pod: PodRecord): { section?: BgpConfig; problems: string[] } {
    if (pod.bgpConfig === undefined) {
      this.lastGoodBgp.delete(key);
      return { problems: [] };
    }
    const found = bgpSectionFor(pod, this.bgpConfigMaps.get(`${pod.namespace}/${pod.bgpConfig.trim()}`));
    if (found.bgp) {
      this.lastGoodBgp.set(key, found.bgp);
      return { section: found.bgp, problems: found.problems };
    }
    const kept = this.lastGoodBgp.get(key);
    return {
      ...(kept ? { section: kept } : {}),
      problems: [...found.problems, kept ? 'the last good bgp section stays in sidecar.json' : 'sidecar.json is published without a bgp section'],
    };
  }

  /** Namespaces with injected pods now. */
  podNamespaces(): IterableIterator<string> {
    return this.podsByNamespace.keys();
  }

  /** The informers' records, for the Events API's checks (an Event only on an object that exists with that uid). */
  uidOf(kind: 'Service' | 'Pod', namespace: string, name: string): string | undefined {
    const key = `${namespace}/${name}`;
    return kind === 'Service' ? this.services.get(key)?.uid : this.pods.get(key)?.uid;
  }
}
