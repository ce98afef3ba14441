// The Eureka sink: catalog services (Kubernetes ones by default) registered in a Eureka server as
// instances a Spring Cloud client reads as its own, kept alive by renewals (registry-bridge/README.md,
// Sinks into registries: Eureka). What the server holds is read when the sink starts (a restart or
// a new leader registers nothing unchanged, and renews what it finds of its own at once); after that
// a renewal that gets 404 (the server evicted or lost the instance) registers it again. A status
// change is a new registration, as Spring's clients make one, so status is written only when it
// changes. Every instance renews once per renewalIntervalSeconds at its own phase (renewals.ts), at
// most writeConcurrency requests in flight over one keep-alive agent. Nothing is cancelled before
// every source's first full list (`complete()`, the catalog's gate), and only instances carrying
// this sink's writer mark ever are; until then the sink's own instances nobody wants are renewed,
// so a restart cannot let them expire either.
import type { EurekaSinkConfig, Mesh, Service, SourceConfig } from '../../../common/contract/index.js';
import type { Logger } from '../../../common/log.js';
import type { RenewalCounts, Sink, SinkStatus } from '../../core/types.js';
import { WriteQueue } from '../../core/write-queue.js';
import { inScope, sourcesOf } from '../scope.js';
import { EurekaApi, EurekaWriteError, type EurekaCall } from './api.js';
import {
  actionFor,
  heldAfterRegister,
  heldInRegistry,
  keyOf,
  METADATA,
  registrationBody,
  registrationsOf,
  type Held,
  type Lease,
  type Registration,
} from './instances.js';
import { RenewalSchedule, SLOT_MS } from './renewals.js';

type ServiceSubject = Pick<Service, 'id' | 'name' | 'source' | 'namespace'>;

/** A failure that lasts is logged when it changes, and reminded of this often. */
const REMIND_EVERY_MS = 60_000;

export interface EurekaSinkOptions {
  config: EurekaSinkConfig;
  sources: readonly Pick<SourceConfig, 'name' | 'kind'>[];
  log: Logger;
  /** A problem a user should see on the object (an Event on a Kubernetes Service), besides the log and status. */
  onProblem?: (service: ServiceSubject, why: string) => void;
  /** Test hook: the API (a fake server in unit tests). */
  api?: { call: EurekaCall; close(): void; readonly address: string };
}

export interface EurekaSinkCounters {
  registrations: number;
  cancels: number;
  renewals: number;
  /** Renewals answered 404: the server had lost the instance, which was registered again. */
  renewalsNotFound: number;
  renewalFailures: number;
  /** Renewals sent more than half an interval after their time (the server or the sink fell behind). */
  lateRenewals: number;
  /** The largest delay of a renewal past its time, in ms, since the sink started. */
  maxRenewalDelayMs: number;
}

export type { RenewalCounts };

export interface EurekaSinkStatus extends SinkStatus {
  renewals: RenewalCounts;
}

export class EurekaSink implements Sink {
  readonly kind = 'eureka';
  readonly name: string;
  private readonly config: EurekaSinkConfig;
  private readonly lease: Lease;
  private readonly from: Set<string>;
  private readonly api: NonNullable<EurekaSinkOptions['api']>;
  private readonly log: Logger;
  private writer?: { writer: string; mesh: string };
  /** Desired instances by keyOf(app, id), and the keys of each catalog service. */
  private readonly wanted = new Map<string, Registration>();
  private readonly byService = new Map<string, string[]>();
  private readonly subjects = new Map<string, ServiceSubject>();
  /** What the server holds (ours and others'); undefined until read, and after it could not be reached. */
  private held?: Map<string, Held>;
  /** Keys to compare with the server, their backoff, and the first-sync gate. */
  private readonly queue: WriteQueue;
  /** Our instances the server holds, each renewed once per interval at its phase. */
  private readonly schedule: RenewalSchedule;
  private readonly renewing = new Set<string>();
  /** When each instance was last renewed or registered: a renewal later than an interval after it is late. */
  private readonly lastRenewedAt = new Map<string, number>();
  /** Instances a renewal found gone (404), until they are registered again. */
  private readonly lost = new Set<string>();
  private readonly renewalCounts: RenewalCounts = { sent: 0, failed: 0, reregistered: 0, late: 0 };
  private lastTick = Date.now();
  private inFlight = 0;
  /** Tasks waiting for a free slot: renewals before writes, so a backlog of registrations never lets held instances expire. */
  private readonly waitingRenewals: (() => void)[] = [];
  private readonly waitingWrites: (() => void)[] = [];
  private lastDirty = 0;
  private stopped = false;
  private readonly ticker: NodeJS.Timeout;
  private readonly reported = new Map<string, string>();
  private readonly logged = new Map<string, number>();
  private readonly stats = { writes: 0, failures: 0, lastWriteAt: 0, lastError: undefined as string | undefined };
  readonly counters: EurekaSinkCounters = {
    registrations: 0,
    cancels: 0,
    renewals: 0,
    renewalsNotFound: 0,
    renewalFailures: 0,
    lateRenewals: 0,
    maxRenewalDelayMs: 0,
  };
  private readonly onProblem: (service: ServiceSubject, why: string) => void;

  constructor(options: EurekaSinkOptions) {
    this.config = options.config;
    this.name = options.config.name;
    this.lease = { renewalIntervalSeconds: options.config.renewalIntervalSeconds, leaseDurationSeconds: options.config.leaseDurationSeconds };
    this.from = sourcesOf(options.config, options.sources);
    this.log = options.log.child({ sink: this.name });
    this.api = options.api ?? new EurekaApi(options.config);
    this.onProblem = options.onProblem ?? (() => {});
    this.schedule = new RenewalSchedule(options.config.renewalIntervalSeconds * 1000);
    this.queue = new WriteQueue(
      {
        canWrite: () => this.writer !== undefined,
        hasRead: () => this.held !== undefined,
        read: () => this.readRegistry(),
        wanted: (key) => this.wanted.has(key),
        wantedKeys: () => this.wanted.keys(),
        needs: (key, removalsAllowed) => {
          const kind = this.actionOf(key, removalsAllowed).kind;
          return kind === 'foreign' ? 'foreign' : kind === 'register' || kind === 'cancel' ? 'write' : 'none';
        },
        write: (key, removalsAllowed) => this.limited(() => this.write(key, removalsAllowed)),
        failed: (key, error) => this.fail(key, error as Error),
        foreign: (key) => this.foreign(key),
      },
      // Every write starts at once and waits in limited(), whose writeConcurrency slots renewals share.
      { concurrency: Number.POSITIVE_INFINITY },
    );
    this.ticker = setInterval(() => this.tick(), SLOT_MS);
    this.ticker.unref();
  }

  setMesh(mesh: Mesh): void {
    // The mark is set once: a cluster renamed later keeps renewing and cancelling what it wrote.
    if (this.writer) return;
    this.writer = { writer: `flb-${mesh.clusterName}/${this.name}`, mesh: mesh.name };
  }

  setService(id: string, service: Service | undefined, _json: string | undefined, source?: string): void {
    const previous = this.byService.get(id) ?? [];
    for (const key of previous) {
      this.wanted.delete(key);
      this.queue.mark(key);
    }
    this.byService.delete(id);
    this.subjects.delete(id);
    if (service && this.writer && inScope(this.config, this.from, source, service)) {
      const { registrations, refused } = registrationsOf(service, this.config, this.writer);
      if (refused) this.problem(service, refused);
      const keys: string[] = [];
      for (const registration of registrations) {
        const key = keyOf(registration.app, registration.id);
        this.wanted.set(key, registration);
        this.queue.mark(key);
        keys.push(key);
      }
      if (keys.length > 0) this.byService.set(id, keys);
      this.subjects.set(id, { id, name: service.name, source: service.source, ...(service.namespace ? { namespace: service.namespace } : {}) });
    }
    // Gone after a 404 and no longer wanted: never registered again, so never counted.
    for (const key of previous) if (!this.wanted.has(key)) this.lost.delete(key);
    this.queue.kick();
  }

  setSidecar(): void {}

  complete(): void {
    this.queue.allowRemovals(this.held?.keys() ?? []);
  }

  private problem(service: ServiceSubject, why: string): void {
    if (this.reported.get(service.id) === why) return;
    this.reported.set(service.id, why);
    this.log.warn({ service: service.id, why }, 'a service is not written to Eureka');
    this.onProblem(service, why);
  }

  private ours(held: Held | undefined): boolean {
    return held !== undefined && this.writer !== undefined && held.metadata[METADATA.writer] === this.writer.writer;
  }

  private actionOf(key: string, removalsAllowed: boolean) {
    const held = this.held?.get(key);
    return actionFor(this.wanted.get(key), held, this.ours(held), removalsAllowed, this.lease);
  }

  /** Someone else's instance holds the id: reported on the Service, left alone until the server is read again. */
  private foreign(key: string): void {
    const wanted = this.wanted.get(key)!;
    const why = `Eureka already holds instance ${wanted.id} of ${wanted.app} that the bridge did not write; left alone`;
    this.fail(key, new Error(why));
    this.problem(this.subjects.get(wanted.catalogId) ?? { id: wanted.catalogId, name: wanted.app, source: 'static' }, why);
  }

  private async readRegistry(): Promise<Iterable<string>> {
    const answer = await this.api.call('GET', 'apps');
    if (answer.status !== 200) throw new EurekaWriteError(`GET apps answered ${answer.status}: ${answer.body.trim().slice(0, 300)}`, answer.status);
    let document: unknown;
    try {
      document = JSON.parse(answer.body);
    } catch (error) {
      throw new EurekaWriteError(`GET apps: not JSON (${(error as Error).message})`, answer.status);
    }
    this.held = heldInRegistry(document);
    // Our instances are renewed from now on, wanted or not yet: none may expire before complete() decides.
    this.schedule.clear();
    for (const [key, held] of this.held) if (this.ours(held)) this.schedule.add(key);
    this.log.info({ server: this.api.address, instances: this.held.size, ours: this.schedule.size }, 'read what the Eureka server holds');
    return this.held.keys();
  }

  /**
   * Runs `task` once fewer than writeConcurrency requests are in flight (renewals and writes
   * alike). A finished task hands its slot to the next waiting renewal, else the next write, in
   * the order they came.
   */
  private async limited<T>(task: () => Promise<T>, renewal = false): Promise<T> {
    if (this.inFlight < this.config.writeConcurrency) this.inFlight++;
    else await new Promise<void>((resolve) => (renewal ? this.waitingRenewals : this.waitingWrites).push(resolve));
    try {
      return await task();
    } finally {
      const next = this.waitingRenewals.shift() ?? this.waitingWrites.shift();
      if (next) next();
      else this.inFlight--;
    }
  }

  /** A registration's lastDirtyTimestamp: always newer than the last one, or the server keeps what it has. */
  private dirtyTimestamp(): number {
    this.lastDirty = Math.max(Date.now(), this.lastDirty + 1);
    return this.lastDirty;
  }

  private async write(key: string, removalsAllowed: boolean): Promise<void> {
    // What the server holds was dropped while this waited for a slot: decided once it is read again.
    if (!this.held || this.stopped) {
      this.queue.mark(key);
      return;
    }
    const action = this.actionOf(key, removalsAllowed);
    const wanted = this.wanted.get(key);
    const held = this.held.get(key);
    if (action.kind === 'register' && wanted) {
      const path = `apps/${encodeURIComponent(wanted.app)}`;
      const answer = await this.api.call('POST', path, registrationBody(wanted, this.lease, this.dirtyTimestamp()));
      if (answer.status !== 204 && answer.status !== 200)
        throw new EurekaWriteError(`POST ${path} answered ${answer.status}: ${answer.body.trim().slice(0, 300) || '(no body)'}`, answer.status);
      this.held?.set(key, heldAfterRegister(wanted, this.lease));
      this.schedule.add(key);
      this.lastRenewedAt.set(key, Date.now());
      this.counters.registrations++;
      if (this.lost.delete(key)) this.renewalCounts.reregistered++;
    } else if (action.kind === 'cancel' && held) {
      const path = `apps/${encodeURIComponent(held.app)}/${encodeURIComponent(held.id)}`;
      const answer = await this.api.call('DELETE', path);
      // 404: it went already (evicted, or cancelled by someone): what was wanted is true.
      if (answer.status !== 200 && answer.status !== 404)
        throw new EurekaWriteError(`DELETE ${path} answered ${answer.status}: ${answer.body.trim().slice(0, 300)}`, answer.status);
      this.held?.delete(key);
      this.schedule.delete(key);
      this.lastRenewedAt.delete(key);
      this.lost.delete(key);
      this.counters.cancels++;
    } else return;
    this.stats.writes++;
    this.stats.lastWriteAt = Date.now();
  }

  private tick(): void {
    const now = Date.now();
    const due = this.schedule.due(this.lastTick, now);
    const scheduledAt = Math.floor(now / SLOT_MS) * SLOT_MS;
    this.lastTick = now;
    if (this.stopped || !this.held) return;
    for (const key of due) {
      // One renewal of an instance at a time: a backlog never doubles itself.
      if (this.renewing.has(key)) continue;
      this.renewing.add(key);
      void this.limited(() => this.renew(key, scheduledAt), true).finally(() => this.renewing.delete(key));
    }
  }

  private async renew(key: string, scheduledAt: number): Promise<void> {
    const held = this.held?.get(key);
    if (this.stopped || !held || !this.ours(held)) {
      this.schedule.delete(key);
      this.lastRenewedAt.delete(key);
      return;
    }
    const delay = Date.now() - scheduledAt;
    if (delay > this.counters.maxRenewalDelayMs) this.counters.maxRenewalDelayMs = delay;
    if (delay > (this.config.renewalIntervalSeconds * 1000) / 2) {
      this.counters.lateRenewals++;
      this.stats.lastError = `renewals are ${(delay / 1000).toFixed(1)} s late (${this.counters.lateRenewals} so far): the server answers too slowly for ${this.schedule.size} instances at writeConcurrency ${this.config.writeConcurrency}`;
      this.remind('late', 'renewals fall behind their interval: the server may evict instances and enter self-preservation', { delayMs: delay });
    }
    const path = `apps/${encodeURIComponent(held.app)}/${encodeURIComponent(held.id)}`;
    const sentAt = Date.now();
    const previous = this.lastRenewedAt.get(key);
    // The schedule's own resolution is no lateness: ticks land anywhere in their slot.
    if (previous !== undefined && sentAt - previous > this.config.renewalIntervalSeconds * 1000 + SLOT_MS) this.renewalCounts.late++;
    this.lastRenewedAt.set(key, sentAt);
    this.renewalCounts.sent++;
    try {
      const answer = await this.api.call('PUT', path);
      if (answer.status === 200) {
        this.counters.renewals++;
        return;
      }
      if (answer.status === 404) {
        // Evicted, or lost in a server restart: registered again, as Eureka's clients do.
        this.counters.renewalsNotFound++;
        this.lost.add(key);
        this.lastRenewedAt.delete(key);
        this.log.info({ instance: held.id, app: held.app }, 'the Eureka server no longer holds an instance; registering it again');
        this.held?.delete(key);
        this.schedule.delete(key);
        this.queue.mark(key);
        this.queue.kick();
        return;
      }
      throw new EurekaWriteError(`PUT ${path} answered ${answer.status}: ${answer.body.trim().slice(0, 300)}`, answer.status);
    } catch (error) {
      this.counters.renewalFailures++;
      this.renewalCounts.failed++;
      this.stats.failures++;
      const message = `renewing ${held.id} of ${held.app}: ${(error as Error).message}`;
      this.stats.lastError = message;
      // Tried again at its next time: a lease outlives two missed renewals (leaseDurationSeconds >= 2 intervals).
      this.remind(`renew ${(error as Error).message}`, 'a Eureka renewal failed; tried again at its next time', {
        instance: held.id,
        app: held.app,
        err: (error as Error).message,
      });
    }
  }

  private remind(what: string, message: string, fields: Record<string, unknown>): void {
    const now = Date.now();
    const last = this.logged.get(what);
    if (last !== undefined && now - last < REMIND_EVERY_MS) return;
    this.logged.set(what, now);
    this.log.warn(fields, message);
  }

  private fail(key: string | undefined, error: Error): void {
    this.stats.failures++;
    const registration = key ? (this.wanted.get(key) ?? this.held?.get(key)) : undefined;
    const what = registration ? `instance ${registration.id} of ${registration.app}: ${error.message}` : error.message;
    this.stats.lastError = what;
    const status = error instanceof EurekaWriteError ? error.status : undefined;
    // Unreachable: the server may come back empty (a restart); read it again before deciding anything.
    if (status === undefined && key && error instanceof EurekaWriteError) this.held = undefined;
    if (!key) {
      const keys = [...this.queue.waiting()];
      const waiting = keys.map((k) => this.wanted.get(k)).find((r) => r !== undefined);
      const more = keys.length - 1;
      if (waiting) this.stats.lastError = `${what} (instance ${waiting.id} of ${waiting.app}${more > 0 ? ` and ${more} more` : ''} waiting to be written)`;
    }
    this.log.warn(
      { instance: registration?.id, app: registration?.app, err: error.message, status },
      key ? 'a Eureka write failed; retried with backoff' : 'cannot read what the Eureka server holds; retried with backoff',
    );
  }

  settled(): Promise<void> {
    return this.queue.settled();
  }

  /**
   * Stops writing and renewing. Nothing is cancelled: the next leader (or this bridge restarted)
   * renews the instances within their lease; a bridge gone for good lets them expire.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.queue.stop();
    clearInterval(this.ticker);
    this.api.close();
    for (const resolve of [...this.waitingRenewals.splice(0), ...this.waitingWrites.splice(0)]) resolve();
  }

  /** Instances renewed now, and the renewals a minute they send (what the server counts on for them). */
  renewalLoad(): { instances: number; renewalsPerMinute: number } {
    return { instances: this.schedule.size, renewalsPerMinute: (this.schedule.size * 60) / this.config.renewalIntervalSeconds };
  }

  status(): EurekaSinkStatus {
    return {
      name: this.name,
      kind: this.kind,
      address: this.api.address,
      renewals: { ...this.renewalCounts },
      pending: this.queue.pending(),
      writes: this.stats.writes,
      failures: this.stats.failures,
      lastWriteAt: this.stats.lastWriteAt,
      ...(this.stats.lastError ? { lastError: this.stats.lastError } : {}),
    };
  }
}
