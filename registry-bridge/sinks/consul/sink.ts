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
import { WriteQueue } from '../../core/write-queue.js';
import { inScope, sourcesOf } from '../scope.js';
import { ConsulAnswerTooLargeError, ConsulApi, ConsulSlowError, ConsulWriteError } from './api.js';
import { actionFor, checkIdOf, heldOnNode, META, registrationsOf, sameNode, type Held, type Registration } from './registrations.js';

/**
 * Instances per /v1/txn: two operations each (service and check), within the 64 operations a
 * transaction may hold (Consul before 1.16; 128 since).
 */
export const TXN_INSTANCES = 32;

type ServiceSubject = Pick<Service, 'id' | 'name' | 'source' | 'namespace'>;

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
  /** The node as the sink writes it is in Consul (read so, or registered since the read): a transaction's service operations need it there. */
  private nodeWritten = false;
  private nodeWriting?: Promise<void>;
  /** Instance IDs to compare with Consul, their backoff, and the first-sync gate. */
  private readonly queue: WriteQueue;
  private resync?: NodeJS.Timeout;
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
    this.queue = new WriteQueue(
      {
        canWrite: () => this.node !== undefined,
        hasRead: () => this.held !== undefined,
        read: () => this.readNode(),
        wanted: (id) => this.wanted.has(id),
        wantedKeys: () => this.wanted.keys(),
        needs: (id, removalsAllowed) => {
          const kind = this.actionOf(id, removalsAllowed).kind;
          return kind === 'foreign' ? 'foreign' : kind === 'none' ? 'none' : 'write';
        },
        write: (id, removalsAllowed) => this.write(id, removalsAllowed),
        writeBatch: (ids, removalsAllowed) => this.writeBatch(ids, removalsAllowed),
        failed: (id, error) => this.fail(id, error as Error),
        foreign: (id) => this.foreign(id),
      },
      { concurrency: options.config.writeConcurrency, batchSize: TXN_INSTANCES },
    );
    this.resync = setInterval(() => {
      this.held = undefined;
      this.queue.kick();
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
      this.queue.mark(instance);
    }
    this.byService.delete(id);
    this.subjects.delete(id);
    if (service && this.node !== undefined && inScope(this.config, this.from, source, service)) {
      const { registrations, refused } = registrationsOf(service, this.config, this.writer);
      if (refused) this.problem(service, refused);
      const ids: string[] = [];
      for (const registration of registrations) {
        this.wanted.set(registration.id, registration);
        this.queue.mark(registration.id);
        ids.push(registration.id);
      }
      if (ids.length > 0) this.byService.set(id, ids);
      this.subjects.set(id, { id, name: service.name, source: service.source, ...(service.namespace ? { namespace: service.namespace } : {}) });
    }
    this.queue.kick();
  }

  setSidecar(): void {}

  complete(): void {
    // What Consul holds of ours and nobody wants is found by comparing everything.
    this.queue.allowRemovals(this.held?.keys() ?? []);
  }

  private problem(service: ServiceSubject, why: string): void {
    if (this.reported.get(service.id) === why) return;
    this.reported.set(service.id, why);
    this.log.warn({ service: service.id, why }, 'a service is not written to Consul');
    this.onProblem(service, why);
  }

  private actionOf(id: string, removalsAllowed: boolean) {
    const held = this.held?.get(id);
    return actionFor(this.wanted.get(id), held, held?.meta[META.writer] === this.writer, removalsAllowed);
  }

  /** Someone else's service holds the ID: reported on the Service, left alone until the node is read again. */
  private foreign(id: string): void {
    const wanted = this.wanted.get(id)!;
    this.fail(id, new Error(`Consul service ID ${id} on node ${this.node} is someone else's (no ${META.writer}: ${this.writer}); left alone`));
    this.problem(
      this.subjects.get(wanted.catalogId) ?? { id: wanted.catalogId, name: wanted.name, source: 'static' },
      `Consul already holds a service ID ${id} on node ${this.node} that the bridge did not write; left alone`,
    );
  }

  private async readNode(): Promise<Iterable<string>> {
    const node = encodeURIComponent(this.node!);
    const [services, checks] = await Promise.all([
      this.api.call('GET', `/v1/catalog/node-services/${node}`),
      this.api.call('GET', `/v1/health/node/${node}`),
    ]).catch((error: unknown) => {
      if (!(error instanceof ConsulAnswerTooLargeError)) throw error;
      throw new ConsulAnswerTooLargeError(
        `${error.message}: node ${this.node} holds more than the sink reads at once (about 70,000 instances); nothing is written until it can be read: split the catalog over Consul sinks with a node each (registry-bridge/README.md, One node's size)`,
      );
    });
    this.held = heldOnNode(services, checks);
    this.nodeWritten = sameNode(services, this.config.nodeAddress, this.nodeMeta());
    return this.held.keys();
  }

  private nodeMeta(): Record<string, string> {
    return { [META.externalSource]: 'flomesh', [META.writer]: this.writer };
  }

  private async write(id: string, removalsAllowed: boolean): Promise<void> {
    // Decided again now: an earlier write in this round may have changed what Consul holds.
    const action = this.actionOf(id, removalsAllowed);
    const wanted = this.wanted.get(id);
    if (action.kind === 'register' && wanted) {
      await this.api.call('PUT', '/v1/catalog/register', {
        Node: this.node,
        Address: this.config.nodeAddress,
        NodeMeta: this.nodeMeta(),
        Service: this.service(wanted),
        Check: this.check(wanted),
      });
      this.nodeWritten = true;
    } else if (action.kind === 'check' && wanted) {
      // Readiness alone changed: the check only, the service and node untouched.
      await this.api.call('PUT', '/v1/catalog/register', {
        Node: this.node,
        Address: this.config.nodeAddress,
        SkipNodeUpdate: true,
        Check: this.check(wanted),
      });
    } else if (action.kind === 'deregister') {
      await this.api.call('PUT', '/v1/catalog/deregister', { Node: this.node, ServiceID: id });
    } else return;
    this.written(id, action.kind);
  }

  /** What Consul holds now that `id` was written. */
  private written(id: string, kind: 'register' | 'check' | 'deregister'): void {
    const wanted = this.wanted.get(id);
    if (kind === 'register' && wanted) {
      this.held?.set(id, { id, name: wanted.name, address: wanted.address, port: wanted.port, tags: wanted.tags, meta: wanted.meta, status: wanted.status });
    } else if (kind === 'check' && wanted) {
      const held = this.held?.get(id);
      if (held) held.status = wanted.status;
    } else if (kind === 'deregister') this.held?.delete(id);
    this.stats.writes++;
    this.stats.lastWriteAt = Date.now();
  }

  /**
   * Several instances in one /v1/txn. A catalog register costs Consul a copy of every service on
   * the node (it reads them all to check the ACL; with one node carrying every instance, that grows
   * with the catalog), a transaction's service operations do not, and one Raft entry carries them
   * all. A transaction Consul refuses applies nothing: each instance is then written alone, so the
   * one refused is named and the others go in.
   */
  private async writeBatch(ids: readonly string[], removalsAllowed: boolean): Promise<Map<string, unknown>> {
    const failures = new Map<string, unknown>();
    const operations: unknown[] = [];
    const inTxn: { id: string; kind: 'register' | 'check' | 'deregister' }[] = [];
    for (const id of ids) {
      const action = this.actionOf(id, removalsAllowed);
      const wanted = this.wanted.get(id);
      if (action.kind === 'register' && wanted) {
        operations.push({ Service: { Verb: 'set', Node: this.node, Service: this.service(wanted) } }, { Check: { Verb: 'set', Check: this.check(wanted) } });
      } else if (action.kind === 'check' && wanted) operations.push({ Check: { Verb: 'set', Check: this.check(wanted) } });
      else if (action.kind === 'deregister') operations.push({ Service: { Verb: 'delete', Node: this.node, Service: { ID: id } } });
      else continue;
      inTxn.push({ id, kind: action.kind });
    }
    if (inTxn.length === 0) return failures;
    if (inTxn.some((write) => write.kind === 'register')) await this.writeNode();
    try {
      await this.api.call('PUT', '/v1/txn', operations);
    } catch (error) {
      // Refused (409 names an operation; 413 or 400 the whole body): each alone. Unreachable or a 5xx: all retried.
      if (!(error instanceof ConsulWriteError) || error.status === undefined || error.status < 400 || error.status >= 500) throw error;
      for (const { id } of inTxn) {
        try {
          await this.write(id, removalsAllowed);
        } catch (alone) {
          failures.set(id, alone);
        }
      }
      return failures;
    }
    for (const { id, kind } of inTxn) this.written(id, kind);
    return failures;
  }

  /**
   * The node first, once for the batches in flight: a transaction's service operations need it,
   * and a node operation in every transaction would rewrite it (a transaction's node carries no
   * datacenter, so Consul finds it changed and touches every service on it).
   */
  private writeNode(): Promise<void> {
    if (this.nodeWritten) return Promise.resolve();
    this.nodeWriting ??= this.api
      .call('PUT', '/v1/catalog/register', { Node: this.node, Address: this.config.nodeAddress, NodeMeta: this.nodeMeta() })
      .then(() => {
        this.nodeWritten = true;
      })
      .finally(() => {
        this.nodeWriting = undefined;
      });
    return this.nodeWriting;
  }

  private service(wanted: Registration) {
    return {
      ID: wanted.id,
      Service: wanted.name,
      Address: wanted.address,
      Port: wanted.port,
      Tags: wanted.tags,
      Meta: wanted.meta,
      // What an agent gives a service by default (a transaction would store 0 / 0).
      Weights: { Passing: 1, Warning: 1 },
    };
  }

  private check(wanted: Registration) {
    return {
      Node: this.node,
      CheckID: checkIdOf(wanted.id),
      Name: wanted.meta[META.origin] === 'kubernetes' ? 'Kubernetes readiness' : 'Registry health',
      Status: wanted.status,
      ServiceID: wanted.id,
      // What the ACL check of a transaction's check operation is made against.
      ServiceName: wanted.name,
      Output: wanted.status === 'passing' ? 'ready (written by flb bridge)' : 'not ready (written by flb bridge)',
    };
  }

  private fail(id: string | undefined, error: Error): void {
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
    // A slow Consul is not read again: each read of a large node is what a slow server can least afford,
    // and a write retried is the same write (a restart that emptied it is found by the next resync).
    if (status === undefined && error instanceof ConsulWriteError && !(error instanceof ConsulSlowError)) {
      this.held = undefined;
      this.nodeWritten = false;
    }
    this.log.warn(
      { instance: id, node: this.node, err: error.message, status },
      id ? 'a Consul write failed; retried with backoff' : 'cannot read the node Consul holds; retried with backoff',
    );
  }

  settled(): Promise<void> {
    return this.queue.settled();
  }

  async stop(): Promise<void> {
    this.queue.stop();
    clearInterval(this.resync);
    this.api.close();
  }

  status(): SinkStatus {
    return {
      name: this.name,
      kind: this.kind,
      address: `${this.config.address} (node ${this.node ?? '?'})`,
      pending: this.queue.pending(),
      writes: this.stats.writes,
      failures: this.stats.failures,
      lastWriteAt: this.stats.lastWriteAt,
      ...(this.stats.lastError ? { lastError: this.stats.lastError } : {}),
    };
  }
}
