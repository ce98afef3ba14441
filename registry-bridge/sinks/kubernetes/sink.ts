// The Kubernetes sink: registry services (Consul and Eureka sources by default) as headless
// Services with EndpointSlices in one namespace (objects.ts). Like the Consul sink it reads what it
// holds first (a restart or a new leader rewrites nothing: each object carries a hash of what was
// written) and every `resyncSeconds`, deletes nothing before every source's first full list
// (`complete()`), and changes or deletes only objects labelled as its own. A Service of the same
// name that is not the bridge's is left alone, reported with a Warning Event on it, and tried
// again with backoff (its owner may delete it).
import { CoreV1Api, DiscoveryV1Api, type KubeConfig, type V1EndpointSlice, type V1Service } from '@kubernetes/client-node';
import type { KubernetesSinkConfig, Mesh, Service, SourceConfig } from '../../../common/contract/index.js';
import type { Logger } from '../../../common/log.js';
import type { Sink, SinkStatus } from '../../core/types.js';
import { WriteQueue } from '../../core/write-queue.js';
import { inScope, sourcesOf } from '../scope.js';
import { desiredObjects, HASH_ANNOTATION, isOurs, serviceNameOf, SINK_LABEL, type Desired } from './objects.js';

const RESYNC_MS = 60_000;

const statusOf = (error: unknown) => (error as { code?: number }).code;
const messageOf = (error: unknown) => {
  const body = (error as { body?: unknown }).body;
  const text = typeof body === 'string' ? body : body ? JSON.stringify(body) : '';
  const parsed = (() => {
    try {
      return (JSON.parse(text) as { message?: string }).message;
    } catch {
      return undefined;
    }
  })();
  return parsed ?? (error as Error).message;
};

/** A Service of the name that is not the sink's: reported and retried, while what the sink holds stays known. */
class ClashError extends Error {}

interface Held {
  service?: V1Service;
  slices: Map<string, V1EndpointSlice>;
}

/** A user's Service in the way: the subject of the Warning Event. */
export interface Clash {
  namespace: string;
  name: string;
  uid: string;
  message: string;
}

export interface KubernetesSinkOptions {
  config: KubernetesSinkConfig;
  sources: readonly Pick<SourceConfig, 'name' | 'kind'>[];
  kubeConfig: KubeConfig;
  log: Logger;
  onClash?: (clash: Clash) => void;
}

export class KubernetesSink implements Sink {
  readonly kind = 'kubernetes';
  readonly name: string;
  private readonly config: KubernetesSinkConfig;
  private readonly from: Set<string>;
  private readonly core: CoreV1Api;
  private readonly discovery: DiscoveryV1Api;
  private readonly log: Logger;
  private readonly onClash: (clash: Clash) => void;
  /** Desired objects by Service name, and the name of each catalog service. */
  private readonly wanted = new Map<string, Desired>();
  private readonly nameOf = new Map<string, string>();
  private held?: Map<string, Held>;
  /** Service names to compare with what the namespace holds, their backoff, and the first-sync gate. */
  private readonly queue: WriteQueue;
  private readonly reported = new Map<string, string>();
  private readonly resync: NodeJS.Timeout;
  private readonly stats = { writes: 0, failures: 0, lastWriteAt: 0, lastError: undefined as string | undefined };

  constructor(options: KubernetesSinkOptions) {
    this.config = options.config;
    this.name = options.config.name;
    this.from = sourcesOf(options.config, options.sources);
    this.core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.discovery = options.kubeConfig.makeApiClient(DiscoveryV1Api);
    this.log = options.log.child({ sink: this.name });
    this.onClash = options.onClash ?? (() => {});
    this.queue = new WriteQueue(
      {
        canWrite: () => true,
        hasRead: () => this.held !== undefined,
        read: () => this.readHeld(),
        wanted: (name) => this.wanted.has(name),
        wantedKeys: () => this.wanted.keys(),
        // Every marked name is reconciled: reconcile() compares the objects' hashes and writes only what differs.
        needs: () => 'write',
        write: (name, removalsAllowed) => this.reconcile(name, removalsAllowed),
        failed: (name, error) => this.fail(name, error),
        foreign: () => {},
      },
      // One name at a time: a conflict drops what was read, and the names after it wait for the read.
      { concurrency: 1 },
    );
    this.resync = setInterval(() => {
      this.held = undefined;
      this.queue.kick();
    }, RESYNC_MS);
    this.resync.unref();
  }

  setMesh(_mesh: Mesh): void {}
  setSidecar(): void {}

  setService(id: string, service: Service | undefined, _json: string | undefined, source?: string): void {
    const previous = this.nameOf.get(id);
    if (previous !== undefined) {
      this.nameOf.delete(id);
      if (this.wanted.get(previous)?.catalogId === id) this.wanted.delete(previous);
      this.queue.mark(previous);
    }
    if (service && inScope(this.config, this.from, source, service)) {
      const name = serviceNameOf(service, this.config.servicePrefix);
      if (name === undefined) this.problem(id, `${id} makes no Service name (a DNS label)`);
      else {
        const holder = this.wanted.get(name);
        // Two registry services with one name: the smaller catalog id has it, whichever came first.
        if (holder && holder.catalogId !== id && holder.catalogId < id)
          this.problem(id, `Service ${this.config.namespace}/${name} is ${holder.catalogId}'s; ${id} is not written`);
        else {
          if (holder && holder.catalogId !== id) this.nameOf.delete(holder.catalogId);
          this.wanted.set(name, desiredObjects(service, name, this.config.namespace, this.name));
          this.nameOf.set(id, name);
          this.queue.mark(name);
        }
      }
    }
    this.queue.kick();
  }

  complete(): void {
    this.queue.allowRemovals(this.held?.keys() ?? []);
  }

  private problem(key: string, why: string): void {
    if (this.reported.get(key) === why) return;
    this.reported.set(key, why);
    this.stats.lastError = why;
    this.log.warn({ service: key, why }, 'a registry service is not written to Kubernetes');
  }

  private async readHeld(): Promise<Iterable<string>> {
    const namespace = this.config.namespace;
    const labelSelector = `${SINK_LABEL}=${this.name},app.kubernetes.io/managed-by=flb-bridge`;
    const [services, slices] = await Promise.all([
      this.core.listNamespacedService({ namespace, labelSelector }),
      this.discovery.listNamespacedEndpointSlice({ namespace, labelSelector }),
    ]);
    const held = new Map<string, Held>();
    const entry = (name: string) => {
      let h = held.get(name);
      if (!h) held.set(name, (h = { slices: new Map() }));
      return h;
    };
    for (const s of services.items) if (isOurs(s.metadata?.labels, this.name)) entry(s.metadata!.name!).service = s;
    for (const s of slices.items) {
      const owner = s.metadata?.labels?.['kubernetes.io/service-name'];
      if (owner && isOurs(s.metadata?.labels, this.name)) entry(owner).slices.set(s.metadata!.name!, s);
    }
    this.held = held;
    return held.keys();
  }

  private async reconcile(name: string, mayRemove: boolean): Promise<void> {
    const namespace = this.config.namespace;
    const wanted = this.wanted.get(name);
    const held = this.held!.get(name) ?? { slices: new Map<string, V1EndpointSlice>() };
    const wrote = () => {
      this.stats.writes++;
      this.stats.lastWriteAt = Date.now();
    };
    if (!wanted) {
      if (!mayRemove || (!held.service && held.slices.size === 0)) return;
      for (const sliceName of [...held.slices.keys()]) {
        await this.ignoreMissing(this.discovery.deleteNamespacedEndpointSlice({ name: sliceName, namespace }));
        held.slices.delete(sliceName);
        wrote();
      }
      if (held.service) {
        await this.ignoreMissing(this.core.deleteNamespacedService({ name, namespace }));
        wrote();
      }
      this.held!.delete(name);
      return;
    }
    this.held!.set(name, held);
    const hash = (o: { metadata?: { annotations?: Record<string, string> } } | undefined) => o?.metadata?.annotations?.[HASH_ANNOTATION];
    if (!held.service) {
      try {
        held.service = await this.core.createNamespacedService({ namespace, body: wanted.service });
        wrote();
      } catch (error) {
        if (statusOf(error) !== 409) throw error;
        const existing = await this.core.readNamespacedService({ name, namespace });
        if (!isOurs(existing.metadata?.labels, this.name)) {
          const message = `Service ${namespace}/${name} exists and is not the bridge's (no ${SINK_LABEL}=${this.name} label); ${wanted.catalogId} is not shown as a Service until it is gone`;
          if (this.reported.get(name) !== message) {
            this.reported.set(name, message);
            this.onClash({ namespace, name, uid: existing.metadata?.uid ?? '', message });
          }
          throw new ClashError(message, { cause: error });
        }
        held.service = existing;
      }
    }
    if (hash(held.service) !== hash(wanted.service)) {
      const body = { ...wanted.service, metadata: { ...wanted.service.metadata, resourceVersion: held.service.metadata?.resourceVersion } };
      held.service = await this.core.replaceNamespacedService({ name, namespace, body });
      wrote();
    }
    this.reported.delete(name);
    for (const [sliceName, slice] of wanted.slices) {
      const current = held.slices.get(sliceName);
      if (!current) {
        try {
          held.slices.set(sliceName, await this.discovery.createNamespacedEndpointSlice({ namespace, body: slice }));
        } catch (error) {
          if (statusOf(error) !== 409) throw error;
          // Someone's slice of that name: read, and replace only when it is ours.
          const existing = await this.discovery.readNamespacedEndpointSlice({ name: sliceName, namespace });
          if (!isOurs(existing.metadata?.labels, this.name))
            throw new Error(`EndpointSlice ${namespace}/${sliceName} exists and is not the bridge's; left alone`, { cause: error });
          held.slices.set(sliceName, existing);
          this.queue.mark(name);
          continue;
        }
        wrote();
      } else if (hash(current) !== hash(slice)) {
        const body = { ...slice, metadata: { ...slice.metadata, resourceVersion: current.metadata?.resourceVersion } };
        held.slices.set(sliceName, await this.discovery.replaceNamespacedEndpointSlice({ name: sliceName, namespace, body }));
        wrote();
      }
    }
    for (const sliceName of [...held.slices.keys()]) {
      if (wanted.slices.has(sliceName)) continue;
      if (!mayRemove) {
        // Emptied, not deleted, before every source listed: the instances are gone, the object stays.
        continue;
      }
      await this.ignoreMissing(this.discovery.deleteNamespacedEndpointSlice({ name: sliceName, namespace }));
      held.slices.delete(sliceName);
      wrote();
    }
  }

  private async ignoreMissing(request: Promise<unknown>): Promise<void> {
    try {
      await request;
    } catch (error) {
      if (statusOf(error) !== 404) throw error;
    }
  }

  /** The queue retries the name with backoff; this counts, reports and logs. */
  private fail(name: string | undefined, error: unknown): void {
    this.stats.failures++;
    const status = statusOf(error);
    const what = `${name ? `Service ${this.config.namespace}/${name}: ` : ''}${status ? `${status} ` : ''}${messageOf(error)}`;
    this.stats.lastError = what;
    // Conflicts (someone changed it meanwhile) and unreachable apiservers: read again before writing.
    if (!(error instanceof ClashError) && (status === 409 || status === undefined)) this.held = undefined;
    this.log.warn({ service: name, namespace: this.config.namespace, err: what }, 'a Kubernetes write failed; retried with backoff');
  }

  settled(): Promise<void> {
    return this.queue.settled();
  }

  async stop(): Promise<void> {
    this.queue.stop();
    clearInterval(this.resync);
  }

  status(): SinkStatus {
    return {
      name: this.name,
      kind: this.kind,
      address: `namespace ${this.config.namespace}`,
      pending: this.queue.pending(),
      writes: this.stats.writes,
      failures: this.stats.failures,
      lastWriteAt: this.stats.lastWriteAt,
      ...(this.stats.lastError ? { lastError: this.stats.lastError } : {}),
    };
  }
}
