// The Consul sink: catalog services (Kubernetes ones by default) registered in Consul's catalog on
// one synthetic node per cluster, as consul-k8s's catalog sync does (registry-bridge/README.md,
// Sinks). It writes only differences: what the node holds is read back when the sink starts (a
// restart or a new leader writes nothing unchanged) and every `resyncSeconds` (what someone removed
// is put back; a read, no write when nothing differs). A check's status is written alone when only
// readiness changed. Nothing is deregistered before every source's first full list (`complete()`,
// the catalog's gate), and only instances carrying this sink's writer mark ever are.
import type { ConsulSinkConfig, Mesh, Service, SourceConfig } from '../../../common/contract/index.js';
import type { Logger } from '../../../common/log.js';
import type { Sink, SinkStatus } from '../../core/types.js';
import { inScope, sourcesOf } from '../scope.js';
import { ConsulApi, ConsulWriteError } from './api.js';
import { actionFor, checkIdOf, heldOnNode, META, registrationsOf, type Held, type Registration } from './registrations.js';

type ServiceSubject = Pick<Service, 'id' | 'name' | 'source' | 'namespace'>;

const BACKOFF_START_MS = 200;
const BACKOFF_MAX_MS = 30_000;
/** An instance not retried until the node is read again (someone else's holds its ID). */
const NEVER = Number.MAX_SAFE_INTEGER;

export interface ConsulSinkOptions {
  config: ConsulSinkConfig;
  sources: readonly Pick<SourceConfig, 'name' | 'kind'>[];
  log: Logger;
  /** A problem a user should see on the object (an Event on a Kubernetes Service), besides the log and status. */
  onProblem?: (service: ServiceSubject, why: string) => void;
  /** Test hook: the API (a fake Consul in unit tests). */
  api?: Pick<ConsulApi, 'call' | 'reloadToken' | 'close'>;
}

export class ConsulSink implements Sink {
  readonly kind = 'consul';
  readonly name: string;
  private readonly config: ConsulSinkConfig;
  private readonly from: Set<string>;
  private readonly api: Pick<ConsulApi, 'call' | 'reloadToken' | 'close'>;
  private readonly log: Logger;
  private node?: string;
  /** Desired instances by ID, and the IDs of each catalog service. */
  private readonly wanted = new Map<string, Registration>();
  private readonly byService = new Map<string, string[]>();
  /** Who each written service is, for the Event a problem raises on its Kubernetes Service. */
  private readonly subjects = new Map<string, ServiceSubject>();
  /** What the node holds (all of it, ours and others'); undefined until read, and after Consul was unreachable. */
  private held?: Map<string, Held>;
  /** Instance IDs to compare with Consul; all of them after a read-back. */
  private readonly dirty = new Set<string>();
  /** Per instance: failures in a row and when it may be tried again. */
  private readonly retryAt = new Map<string, { failures: number; at: number }>();
  private mayRemove = false;
  private running = false;
  private stopped = false;
  private readBackoffMs = BACKOFF_START_MS;
  private wake?: NodeJS.Timeout;
  private resync?: NodeJS.Timeout;
  private idleWaiters: (() => void)[] = [];
  private readonly reported = new Map<string, string>();
  private readonly stats = { writes: 0, failures: 0, lastWriteAt: 0, lastError: undefined as string | undefined };
  private readonly onProblem: (service: ServiceSubject, why: string) => void;

  constructor(options: ConsulSinkOptions) {
    this.config = options.config;
    this.name = options.config.name;
    this.from = sourcesOf(options.config, options.sources);
    this.log = options.log.child({ sink: this.name });
    this.api = options.api ?? new ConsulApi(options.config);
    this.onProblem = options.onProblem ?? (() => {});
    this.node = options.config.node;
    this.resync = setInterval(() => {
      this.held = undefined;
      this.kick();
    }, options.config.resyncSeconds * 1000);
    this.resync.unref();
  }

  private get writer(): string {
    return `${this.node ?? ''}/${this.name}`;
  }

  setMesh(mesh: Mesh): void {
    if (this.config.node || this.node) return;
    // The node is named once: a cluster renamed later keeps writing where it wrote.
    this.node = `flb-${mesh.clusterName}`;
  }

  setService(id: string, service: Service | undefined, _json: string | undefined, source?: string): void {
    const previous = this.byService.get(id) ?? [];
    for (const instance of previous) {
      this.wanted.delete(instance);
      this.dirty.add(instance);
    }
    this.byService.delete(id);
    this.subjects.delete(id);
    if (service && this.node !== undefined && inScope(this.config, this.from, source, service)) {
      const { registrations, refused } = registrationsOf(service, this.config, this.writer);
      if (refused) this.problem(service, refused);
      const ids: string[] = [];
      for (const registration of registrations) {
        this.wanted.set(registration.id, registration);
        this.dirty.add(registration.id);
        ids.push(registration.id);
      }
      if (ids.length > 0) this.byService.set(id, ids);
      this.subjects.set(id, { id, name: service.name, source: service.source, ...(service.namespace ? { namespace: service.namespace } : {}) });
    }
    this.kick();
  }

  setSidecar(): void {}

  complete(): void {
    if (this.mayRemove) return;
    this.mayRemove = true;
    // What Consul holds of ours and nobody wants is found by comparing everything.
    if (this.held) for (const id of this.held.keys()) this.dirty.add(id);
    this.kick();
  }

  private problem(service: ServiceSubject, why: string): void {
    if (this.reported.get(service.id) === why) return;
    this.reported.set(service.id, why);
    this.log.warn({ service: service.id, why }, 'a service is not written to Consul');
    this.onProblem(service, why);
  }

  private kick(): void {
    if (this.stopped || this.running) return;
    this.running = true;
    void this.run().finally(() => {
      this.running = false;
      if (this.work().length > 0 || this.held === undefined) this.later();
      this.notifyIdle();
    });
  }

  private later(): void {
    if (this.stopped || this.wake) return;
    const now = Date.now();
    let at = this.held === undefined ? now + this.readBackoffMs : Infinity;
    for (const id of this.work()) {
      const retry = this.retryAt.get(id)?.at ?? now;
      if (retry !== NEVER) at = Math.min(at, retry);
    }
    if (at === Infinity) return;
    this.wake = setTimeout(
      () => {
        this.wake = undefined;
        this.kick();
      },
      Math.max(0, at - now),
    );
  }

  /** Dirty instances that need a write now or later (deregistrations wait for complete()). */
  private work(): string[] {
    if (!this.held) return [...this.dirty];
    return [...this.dirty].filter((id) => this.actionOf(id).kind !== 'none');
  }

  private actionOf(id: string) {
    const held = this.held?.get(id);
    return actionFor(this.wanted.get(id), held, held?.meta[META.writer] === this.writer, this.mayRemove);
  }

  private async run(): Promise<void> {
    while (!this.stopped && this.node !== undefined) {
      if (!this.held) {
        try {
          await this.readNode();
          this.readBackoffMs = BACKOFF_START_MS;
        } catch (error) {
          this.fail(undefined, error as Error);
          this.readBackoffMs = Math.min(this.readBackoffMs * 2, BACKOFF_MAX_MS);
          return;
        }
      }
      const now = Date.now();
      const due = [...this.dirty].filter((id) => (this.retryAt.get(id)?.at ?? 0) <= now);
      if (due.length === 0) return;
      for (const id of due) this.dirty.delete(id);
      const queue = due.filter((id) => {
        const action = this.actionOf(id);
        if (action.kind === 'foreign') {
          const wanted = this.wanted.get(id)!;
          this.fail(id, new Error(`Consul service ID ${id} on node ${this.node} is someone else's (no ${META.writer}: ${this.writer}); left alone`), false);
          this.problem(
            this.subjects.get(wanted.catalogId) ?? { id: wanted.catalogId, name: wanted.name, source: 'static' },
            `Consul already holds a service ID ${id} on node ${this.node} that the bridge did not write; left alone`,
          );
        }
        // A removal not yet allowed is found again by complete(), which compares everything held.
        return action.kind === 'register' || action.kind === 'check' || action.kind === 'deregister';
      });
      await Promise.all(
        Array.from({ length: Math.min(this.config.writeConcurrency, queue.length) }, async () => {
          for (let id = queue.shift(); id !== undefined && !this.stopped; id = queue.shift()) await this.write(id);
        }),
      );
    }
  }

  private async readNode(): Promise<void> {
    const node = encodeURIComponent(this.node!);
    const [services, checks] = await Promise.all([this.api.call('GET', `/v1/catalog/node-services/${node}`), this.api.call('GET', `/v1/health/node/${node}`)]);
    this.held = heldOnNode(services, checks);
    for (const [id, retry] of this.retryAt) if (retry.at === NEVER) this.retryAt.delete(id);
    for (const id of this.held.keys()) this.dirty.add(id);
    for (const id of this.wanted.keys()) this.dirty.add(id);
  }

  private async write(id: string): Promise<void> {
    // A failure in this round dropped what the node holds: decided once it is read again, never as "nothing there".
    if (!this.held) {
      this.dirty.add(id);
      return;
    }
    // Decided again now: an earlier write in this round may have changed what Consul holds.
    const action = this.actionOf(id);
    const wanted = this.wanted.get(id);
    try {
      if (action.kind === 'register' && wanted) {
        await this.api.call('PUT', '/v1/catalog/register', {
          Node: this.node,
          Address: this.config.nodeAddress,
          NodeMeta: { [META.externalSource]: 'flomesh', [META.writer]: this.writer },
          Service: { ID: id, Service: wanted.name, Address: wanted.address, Port: wanted.port, Tags: wanted.tags, Meta: wanted.meta },
          Check: this.check(wanted),
        });
        this.held?.set(id, { id, name: wanted.name, address: wanted.address, port: wanted.port, tags: wanted.tags, meta: wanted.meta, status: wanted.status });
      } else if (action.kind === 'check' && wanted) {
        // Readiness alone changed: the check only, the service and node untouched.
        await this.api.call('PUT', '/v1/catalog/register', {
          Node: this.node,
          Address: this.config.nodeAddress,
          SkipNodeUpdate: true,
          Check: this.check(wanted),
        });
        const held = this.held?.get(id);
        if (held) held.status = wanted.status;
      } else if (action.kind === 'deregister') {
        await this.api.call('PUT', '/v1/catalog/deregister', { Node: this.node, ServiceID: id });
        this.held?.delete(id);
      } else return;
      this.stats.writes++;
      this.stats.lastWriteAt = Date.now();
      this.retryAt.delete(id);
    } catch (error) {
      this.dirty.add(id);
      this.fail(id, error as Error);
    }
  }

  private check(wanted: Registration) {
    return {
      Node: this.node,
      CheckID: checkIdOf(wanted.id),
      Name: wanted.meta[META.origin] === 'kubernetes' ? 'Kubernetes readiness' : 'Registry health',
      Status: wanted.status,
      ServiceID: wanted.id,
      Output: wanted.status === 'passing' ? 'ready (written by flb bridge)' : 'not ready (written by flb bridge)',
    };
  }

  private fail(id: string | undefined, error: Error, retry = true): void {
    this.stats.failures++;
    const what = id ? `${id}: ${error.message}` : error.message;
    this.stats.lastError = what;
    const status = error instanceof ConsulWriteError ? error.status : undefined;
    if (status === 403) {
      try {
        this.api.reloadToken();
      } catch (reload) {
        this.stats.lastError = `${what}; ${(reload as Error).message}`;
      }
    }
    // Unreachable: Consul may come back empty (a restart of a dev agent, a restored snapshot); read the node again.
    if (status === undefined && error instanceof ConsulWriteError) this.held = undefined;
    if (id && retry) {
      const previous = this.retryAt.get(id)?.failures ?? 0;
      const delay = Math.min(BACKOFF_START_MS * 2 ** previous, BACKOFF_MAX_MS);
      this.retryAt.set(id, { failures: previous + 1, at: Date.now() + delay });
    } else if (id) this.retryAt.set(id, { failures: 1, at: NEVER });
    this.log.warn(
      { instance: id, node: this.node, err: error.message, status },
      id ? 'a Consul write failed; retried with backoff' : 'cannot read the node Consul holds; retried with backoff',
    );
  }

  /** Work not written yet that has not failed: what settled() waits for (a failing write is reported, and retried, not awaited). */
  private unsettledCount(): number {
    if (!this.held) return this.wanted.size > 0 && this.readBackoffMs === BACKOFF_START_MS ? this.dirty.size : 0;
    return this.work().filter((id) => !this.retryAt.has(id) && (this.mayRemove || this.wanted.has(id))).length;
  }

  private notifyIdle(): void {
    if (this.running || this.unsettledCount() > 0) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  private pendingCount(): number {
    if (!this.held) return this.wanted.size > 0 ? this.dirty.size : 0;
    return this.work()
      .filter((id) => this.retryAt.get(id)?.at !== NEVER)
      .filter((id) => this.mayRemove || this.wanted.has(id)).length;
  }

  async settled(): Promise<void> {
    if (!this.running && this.unsettledCount() === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.resync);
    clearTimeout(this.wake);
    this.api.close();
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  status(): SinkStatus {
    return {
      name: this.name,
      kind: this.kind,
      address: `${this.config.address} (node ${this.node ?? '?'})`,
      pending: this.pendingCount(),
      writes: this.stats.writes,
      failures: this.stats.failures,
      lastWriteAt: this.stats.lastWriteAt,
      ...(this.stats.lastError ? { lastError: this.stats.lastError } : {}),
    };
  }
}
