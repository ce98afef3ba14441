// The Consul sink: catalog services (Kubernetes ones by default) registered in Consul's catalog on
// the synthetic nodes of a cluster (`nodes` of them, each Service on the one a hash of its catalog id
// picks), as consul-k8s's catalog sync does on one (registry-bridge/README.md, Sinks). It writes
// only differences: what its nodes hold is read back when the sink starts (a restart or a new
// leader writes nothing unchanged) and every `resyncSeconds` (what someone removed is put back; a
// read, no write when nothing differs). A check's status is written alone when only readiness
// changed. Nothing is deregistered before every source's first full list (`complete()`, the
// catalog's gate), and only instances carrying this sink's writer mark ever are; an instance of
// ours on another node than its own (`nodes` changed) is removed in the transaction that writes it
// on its own, and a node of ours beyond `nodes` goes once empty.
import type { ConsulSinkConfig, Mesh, Service, SourceConfig } from '../../../common/contract/index.js';
import type { Logger } from '../../../common/log.js';
import type { Sink, SinkStatus } from '../../core/types.js';
import { WriteQueue } from '../../core/write-queue.js';
import { inScope, sourcesOf } from '../scope.js';
import { ConsulAnswerTooLargeError, ConsulApi, ConsulSlowError, ConsulWriteError } from './api.js';
import {
  actionFor,
  checkIdOf,
  heldOnNode,
  META,
  nodeIndexOf,
  nodeNameOf,
  nodeNames,
  registrationsOf,
  sameNode,
  type Held,
  type Registration,
} from './registrations.js';

/**
 * Instances per /v1/txn: two operations each (service and check), within the 64 operations a
 * transaction may hold (Consul before 1.16; 128 since).
 */
export const TXN_INSTANCES = 32;

/** Operations a transaction may hold before Consul 1.16: a batch with moves (three operations each) goes in several. */
export const TXN_OPERATIONS = 64;

/** Nodes read at once (two requests each) when the sink reads what it holds. */
const NODE_READS = 4;

/** One write to Consul for an instance: on its own node, or removing it from another. */
type Write = { kind: 'register' | 'check' | 'deregister'; node: string };

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
  /** The first node's name and the others' prefix (nodeNameOf). */
  private node?: string;
  /** Desired instances by ID, and the IDs of each catalog service. */
  private readonly wanted = new Map<string, Registration>();
  private readonly byService = new Map<string, string[]>();
  /** Who each written service is, for the Event a problem raises on its Kubernetes Service. */
  private readonly subjects = new Map<string, ServiceSubject>();
  /**
   * What each node read holds (all of it, ours and others'), by node name: the sink's `nodes` and
   * any other carrying its writer mark. Undefined until read, and after Consul was unreachable.
   */
  private held?: Map<string, Map<string, Held>>;
  /** Nodes that are in Consul as the sink writes them (read so, or registered since the read): a transaction's service operations need theirs there. */
  private nodesWritten = new Set<string>();
  private readonly nodesWriting = new Map<string, Promise<void>>();
  /** Empty nodes of ours beyond `nodes` being deregistered. */
  private readonly nodesDropping = new Set<string>();
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
        read: () => this.readNodes(),
        wanted: (id) => this.wanted.has(id),
        wantedKeys: () => this.wanted.keys(),
        needs: (id, removalsAllowed) => {
          const writes = this.writesOf(id, removalsAllowed);
          return writes === 'foreign' ? 'foreign' : writes.length === 0 ? 'none' : 'write';
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
    this.queue.allowRemovals(this.heldIds());
  }

  private problem(service: ServiceSubject, why: string): void {
    if (this.reported.get(service.id) === why) return;
    this.reported.set(service.id, why);
    this.log.warn({ service: service.id, why }, 'a service is not written to Consul');
    this.onProblem(service, why);
  }

  /** The nodes instances are written to: `nodes` of them. */
  private nodeNames(): string[] {
    return Array.from({ length: this.config.nodes }, (_, index) => nodeNameOf(this.node!, index));
  }

  private nodeOf(wanted: Registration): string {
    return nodeNameOf(this.node!, nodeIndexOf(wanted.catalogId, this.config.nodes));
  }

  private ours(held: Held | undefined): boolean {
    return held?.meta[META.writer] === this.writer;
  }

  private heldIds(): Set<string> {
    const ids = new Set<string>();
    for (const instances of this.held?.values() ?? []) for (const id of instances.keys()) ids.add(id);
    return ids;
  }

  /**
   * What `id` needs written, in order: on its own node first (registered, or its check), then
   * removed from any other node of ours holding it (`nodes` changed; not wanted any more: only
   * once removals are allowed). 'foreign': someone else's service holds the ID on its node, and
   * every copy of ours stays where it is.
   */
  private writesOf(id: string, removalsAllowed: boolean): Write[] | 'foreign' {
    const wanted = this.wanted.get(id);
    const writes: Write[] = [];
    const own = wanted && this.nodeOf(wanted);
    if (wanted && own) {
      const held = this.held?.get(own)?.get(id);
      const action = actionFor(wanted, held, this.ours(held), removalsAllowed);
      if (action.kind === 'foreign') return 'foreign';
      if (action.kind === 'register' || action.kind === 'check') writes.push({ kind: action.kind, node: own });
    }
    for (const [node, instances] of this.held ?? []) {
      // A moved instance's old copy goes with the write of the new (a transaction applies both or
      // neither), so it need not wait for removals: it is never missing from both.
      if (node !== own && this.ours(instances.get(id)) && (wanted || removalsAllowed)) writes.push({ kind: 'deregister', node });
    }
    return writes;
  }

  /** Someone else's service holds the ID: reported on the Service, left alone until the node is read again. */
  private foreign(id: string): void {
    const wanted = this.wanted.get(id)!;
    const node = this.nodeOf(wanted);
    this.fail(id, new Error(`Consul service ID ${id} on node ${node} is someone else's (no ${META.writer}: ${this.writer}); left alone`));
    this.problem(
      this.subjects.get(wanted.catalogId) ?? { id: wanted.catalogId, name: wanted.name, source: 'static' },
      `Consul already holds a service ID ${id} on node ${node} that the bridge did not write; left alone`,
    );
  }

  /** Each of the sink's nodes, and any other carrying its writer mark (left from a larger `nodes`). */
  private async readNodes(): Promise<Iterable<string>> {
    const marked = nodeNames(await this.api.call('GET', `/v1/catalog/nodes?node-meta=${encodeURIComponent(`${META.writer}:${this.writer}`)}`));
    const names = [...new Set([...this.nodeNames(), ...marked])];
    const held = new Map<string, Map<string, Held>>();
    const written = new Set<string>();
    let next = 0;
    const reader = async () => {
      while (next < names.length) {
        const name = names[next++]!;
        const [services, checks] = await this.readNode(name);
        held.set(name, heldOnNode(services, checks));
        if (sameNode(services, this.config.nodeAddress, this.nodeMeta())) written.add(name);
      }
    };
    await Promise.all(Array.from({ length: Math.min(NODE_READS, names.length) }, reader));
    this.held = held;
    this.nodesWritten = written;
    void this.dropEmptyNodes();
    return this.heldIds();
  }

  private readNode(name: string): Promise<[unknown, unknown]> {
    const node = encodeURIComponent(name);
    return Promise.all([this.api.call('GET', `/v1/catalog/node-services/${node}`), this.api.call('GET', `/v1/health/node/${node}`)]).catch((error: unknown) => {
      if (!(error instanceof ConsulAnswerTooLargeError)) throw error;
      throw new ConsulAnswerTooLargeError(
        `${error.message}: node ${name} holds more than the sink reads at once (about 70,000 instances); nothing is written until it can be read: raise the sink's nodes (${this.config.nodes} now) to spread the catalog thinner (registry-bridge/README.md, One node's size)`,
      );
    });
  }

  /**
   * Nodes of ours beyond `nodes` are deregistered once they hold nothing (a node deregistered takes
   * its services with it: one holding anyone's is kept). A failure is logged; the next read finds
   * the node again.
   */
  private async dropEmptyNodes(): Promise<void> {
    const own = new Set(this.nodeNames());
    for (const [node, instances] of this.held ?? []) {
      if (own.has(node) || instances.size > 0 || this.nodesDropping.has(node)) continue;
      this.nodesDropping.add(node);
      try {
        await this.api.call('PUT', '/v1/catalog/deregister', { Node: node });
        if (this.held?.get(node)?.size === 0) this.held.delete(node);
        this.log.info({ node }, 'an empty Consul node of this sink beyond its nodes deregistered');
      } catch (error) {
        this.stats.failures++;
        this.stats.lastError = `node ${node}: ${(error as Error).message}`;
        this.log.warn({ node, err: (error as Error).message }, 'cannot deregister an empty Consul node of this sink; tried again after the next read');
      } finally {
        this.nodesDropping.delete(node);
      }
    }
  }

  private nodeMeta(): Record<string, string> {
    return { [META.externalSource]: 'flomesh', [META.writer]: this.writer };
  }

  private async write(id: string, removalsAllowed: boolean): Promise<void> {
    // Decided again now: an earlier write in this round may have changed what Consul holds.
    const writes = this.writesOf(id, removalsAllowed);
    if (writes === 'foreign' || writes.length === 0) return;
    const wanted = this.wanted.get(id);
    // In order: a moved instance is written on its node before it is removed from the old one.
    for (const write of writes) {
      if (write.kind === 'register' && wanted) {
        await this.api.call('PUT', '/v1/catalog/register', {
          Node: write.node,
          Address: this.config.nodeAddress,
          NodeMeta: this.nodeMeta(),
          Service: this.service(wanted),
          Check: this.check(wanted, write.node),
        });
        this.nodesWritten.add(write.node);
      } else if (write.kind === 'check' && wanted) {
        // Readiness alone changed: the check only, the service and node untouched.
        await this.api.call('PUT', '/v1/catalog/register', {
          Node: write.node,
          Address: this.config.nodeAddress,
          SkipNodeUpdate: true,
          Check: this.check(wanted, write.node),
        });
      } else if (write.kind === 'deregister') {
        await this.api.call('PUT', '/v1/catalog/deregister', { Node: write.node, ServiceID: id });
      } else continue;
      this.applied(id, write);
    }
    this.written(writes);
  }

  /** What Consul holds now that `write` of `id` was applied. */
  private applied(id: string, write: Write): void {
    const wanted = this.wanted.get(id);
    if (write.kind === 'register' && wanted) {
      if (this.held && !this.held.has(write.node)) this.held.set(write.node, new Map());
      this.held
        ?.get(write.node)
        ?.set(id, { id, name: wanted.name, address: wanted.address, port: wanted.port, tags: wanted.tags, meta: wanted.meta, status: wanted.status });
    } else if (write.kind === 'check' && wanted) {
      const held = this.held?.get(write.node)?.get(id);
      if (held) held.status = wanted.status;
    } else if (write.kind === 'deregister') this.held?.get(write.node)?.delete(id);
  }

  private written(writes: readonly Write[]): void {
    this.stats.writes++;
    this.stats.lastWriteAt = Date.now();
    if (writes.some((write) => write.kind === 'deregister')) void this.dropEmptyNodes();
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
    // An instance's operations stay in one transaction (a move's write and delete apply together).
    const transactions: { operations: unknown[]; inTxn: { id: string; writes: Write[] }[] }[] = [];
    const registeredOn = new Set<string>();
    for (const id of ids) {
      const writes = this.writesOf(id, removalsAllowed);
      const wanted = this.wanted.get(id);
      if (writes === 'foreign' || writes.length === 0) continue;
      const operations: unknown[] = [];
      for (const write of writes) {
        if (write.kind === 'register' && wanted) {
          operations.push(
            { Service: { Verb: 'set', Node: write.node, Service: this.service(wanted) } },
            { Check: { Verb: 'set', Check: this.check(wanted, write.node) } },
          );
          registeredOn.add(write.node);
        } else if (write.kind === 'check' && wanted) operations.push({ Check: { Verb: 'set', Check: this.check(wanted, write.node) } });
        else if (write.kind === 'deregister') operations.push({ Service: { Verb: 'delete', Node: write.node, Service: { ID: id } } });
      }
      let last = transactions.at(-1);
      if (!last || last.operations.length + operations.length > TXN_OPERATIONS) transactions.push((last = { operations: [], inTxn: [] }));
      last.operations.push(...operations);
      last.inTxn.push({ id, writes });
    }
    if (transactions.length === 0) return failures;
    await Promise.all([...registeredOn].map((node) => this.writeNode(node)));
    for (const [index, { operations, inTxn }] of transactions.entries()) {
      try {
        await this.api.call('PUT', '/v1/txn', operations);
      } catch (error) {
        // Refused (409 names an operation; 413 or 400 the whole body): each alone. Unreachable or a 5xx: all retried.
        if (!(error instanceof ConsulWriteError) || error.status === undefined || error.status < 400 || error.status >= 500) {
          if (index === 0) throw error;
          // The transactions before were applied: only this one's and the later ones' instances failed.
          for (const later of transactions.slice(index)) for (const { id } of later.inTxn) failures.set(id, error);
          return failures;
        }
        for (const { id } of inTxn) {
          try {
            await this.write(id, removalsAllowed);
          } catch (alone) {
            failures.set(id, alone);
          }
        }
        continue;
      }
      for (const { id, writes } of inTxn) {
        for (const write of writes) this.applied(id, write);
        this.written(writes);
      }
    }
    return failures;
  }

  /**
   * A node first, once for the batches in flight: a transaction's service operations need it,
   * and a node operation in every transaction would rewrite it (a transaction's node carries no
   * datacenter, so Consul finds it changed and touches every service on it).
   */
  private writeNode(node: string): Promise<void> {
    if (this.nodesWritten.has(node)) return Promise.resolve();
    let writing = this.nodesWriting.get(node);
    if (!writing) {
      writing = this.api
        .call('PUT', '/v1/catalog/register', { Node: node, Address: this.config.nodeAddress, NodeMeta: this.nodeMeta() })
        .then(() => {
          this.nodesWritten.add(node);
        })
        .finally(() => {
          this.nodesWriting.delete(node);
        });
      this.nodesWriting.set(node, writing);
    }
    return writing;
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

  private check(wanted: Registration, node: string) {
    return {
      Node: node,
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
      this.nodesWritten = new Set();
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
      address: `${this.config.address} (${this.config.nodes === 1 ? `node ${this.node ?? '?'}` : `nodes ${this.node ?? '?'}, ${this.node ?? '?'}-1 … -${this.config.nodes - 1}`})`,
      pending: this.queue.pending(),
      writes: this.stats.writes,
      failures: this.stats.failures,
      lastWriteAt: this.stats.lastWriteAt,
      ...(this.stats.lastError ? { lastError: this.stats.lastError } : {}),
    };
  }
}
