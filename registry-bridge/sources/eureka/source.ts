// The Eureka source: a Eureka cluster's applications into catalog services, kept current the way
// Eureka's own client does it. One full fetch of /apps, then /apps/delta every intervalSeconds,
// applied to the local copy (every instance, every status) and checked against the server's
// apps__hashcode; a mismatch, or an answer from another peer than the last, fetches everything
// again. A server that cannot be reached changes nothing: the last good services stay published
// and the source reports itself stale after staleAfterSeconds.
import type { EurekaSourceConfig, Mesh } from '../../../common/contract/index.js';
import type { Logger } from '../../../common/log.js';
import { dnsLabelOf, LabelBook } from '../../core/names.js';
import type { CatalogUpdates, Source, SourceStatus } from '../../core/types.js';
import { EurekaClient } from './client.js';
import { LocalRegistry, parseApplications, type EurekaApplications } from './registry.js';
import { translateApp } from './translate.js';

/** A failure is logged when it changes, and reminded of this often while it lasts. */
const REMIND_EVERY_MS = 60_000;

export interface EurekaSourceOptions {
  config: EurekaSourceConfig;
  log: Logger;
  /** For tests: what "now" is and how the next round is scheduled. */
  now?: () => number;
}

export interface EurekaSourceCounters {
  fullFetches: number;
  deltaFetches: number;
  /** Full fetches because a delta's hashcode did not match the local copy. */
  reconciliations: number;
}

export class EurekaSource implements Source {
  readonly kind = 'eureka';
  readonly name: string;
  private readonly config: EurekaSourceConfig;
  private readonly log: Logger;
  private readonly client: EurekaClient;
  private readonly registry = new LocalRegistry();
  private readonly labels = new LabelBook();
  private readonly registryName: string;
  private updates?: CatalogUpdates;
  /** Catalog id and endpoint count reported per app. */
  private readonly reported = new Map<string, { id: string; endpoints: number }>();
  private readonly reportedProblems = new Map<string, string>();
  private endpointCount = 0;
  /** The peer the local copy came from: a delta from another peer is not applied (their delta queues differ). */
  private copyFrom?: string;
  /**
   * Set by a delta whose hashcode did not match: the local copy is wrong until a full fetch, and
   * the apps that delta changed are published with that fetch (the full answer may equal the
   * changed copy, and then shows no change of its own).
   */
  private needsFullFetch = false;
  private readonly unpublished = new Set<string>();
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;
  private syncedOnce = false;
  private lastContactAt = 0;
  private lastSyncAt = 0;
  private errors = 0;
  private lastError?: string;
  private lastErrorLoggedAt = 0;
  readonly counters: EurekaSourceCounters = { fullFetches: 0, deltaFetches: 0, reconciliations: 0 };
  private readonly now: () => number;

  constructor(options: EurekaSourceOptions) {
    this.config = options.config;
    this.name = options.config.name;
    this.registryName = options.config.registry ?? options.config.name;
    this.log = options.log.child({ source: this.name });
    this.client = new EurekaClient(options.config);
    this.now = options.now ?? Date.now;
  }

  start(updates: CatalogUpdates): void {
    this.updates = updates;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    this.client.close();
  }

  /** Names and ids do not depend on the mesh's settings. */
  setMesh(_mesh: Mesh): void {}

  status(): SourceStatus {
    const stale = this.syncedOnce && this.now() - this.lastContactAt > this.config.staleAfterSeconds * 1000;
    return {
      name: this.name,
      kind: this.kind,
      address: this.client.address,
      state: !this.syncedOnce ? 'starting' : stale ? 'stale' : 'synced',
      services: this.reported.size,
      endpoints: this.endpointCount,
      sidecars: 0,
      lastContactAt: this.lastContactAt,
      lastSyncAt: this.lastSyncAt,
      errors: this.errors,
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }

  /** One round now (tests; the timer calls it every intervalSeconds). */
  async sync(): Promise<void> {
    if (this.running) return this.running;
    this.running = this.round().finally(() => (this.running = undefined));
    return this.running;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.sync().finally(() => this.schedule(this.config.intervalSeconds * 1000));
    }, delayMs);
  }

  private async round(): Promise<void> {
    try {
      if (!this.registry.loaded) await this.fetchAll('first fetch');
      else if (this.needsFullFetch) await this.fetchAll('the last delta left another registry than the server has');
      else await this.fetchDelta();
      if (this.lastError !== undefined) this.log.info({ server: this.client.address }, 'the Eureka registry answers again');
      this.lastError = undefined;
    } catch (error) {
      this.errors++;
      const message = (error as Error).message;
      const now = this.now();
      if (message !== this.lastError || now - this.lastErrorLoggedAt >= REMIND_EVERY_MS) {
        this.lastErrorLoggedAt = now;
        this.log.warn(
          { err: message, lastContactAt: this.lastContactAt || undefined },
          this.syncedOnce ? 'cannot read the Eureka registry; its last good services stay published' : 'cannot read the Eureka registry yet',
        );
      }
      this.lastError = message;
    }
  }

  private async fetchAll(why: string): Promise<void> {
    const answer = await this.client.get('apps', parseApplications);
    this.counters.fullFetches++;
    this.lastContactAt = this.now();
    this.copyFrom = answer.server;
    this.logProblems(answer.value);
    const changed = this.registry.replace(answer.value);
    this.log.debug({ why, server: answer.server, apps: answer.value.apps.length, bytes: answer.bytes, changed: changed.size }, 'full fetch');
    for (const app of this.unpublished) changed.add(app);
    this.unpublished.clear();
    this.needsFullFetch = false;
    this.publish(changed);
    this.lastSyncAt = this.now();
    if (!this.syncedOnce) {
      this.syncedOnce = true;
      this.log.info({ server: answer.server, services: this.reported.size, endpoints: this.endpointCount }, 'first full fetch of the Eureka registry');
      this.updates?.synced(this.name);
    }
  }

  private async fetchDelta(): Promise<void> {
    const answer = await this.client.get('apps/delta', parseApplications);
    this.counters.deltaFetches++;
    this.lastContactAt = this.now();
    if (answer.server !== this.copyFrom) {
      await this.fetchAll(`the delta came from ${answer.server}, the local copy from ${this.copyFrom}`);
      return;
    }
    this.logProblems(answer.value);
    const changed = this.registry.applyDelta(answer.value);
    const local = this.registry.hashcode();
    if (local !== answer.value.hashcode) {
      this.counters.reconciliations++;
      this.log.info(
        { local, server: answer.value.hashcode, changedByDelta: changed.size },
        'the delta leaves another registry than the server has: fetching everything',
      );
      for (const app of changed) this.unpublished.add(app);
      this.needsFullFetch = true;
      await this.fetchAll('hashcode mismatch');
      return;
    }
    this.publish(changed);
    this.lastSyncAt = this.now();
  }

  private logProblems(answer: EurekaApplications): void {
    if (answer.problems.length === 0) return;
    this.log.warn({ problems: answer.problems.slice(0, 20), count: answer.problems.length }, 'the Eureka answer has items that were left out');
  }

  /** Reports the apps named (and any whose label they moved) to the catalog as they are now. */
  private publish(apps: Iterable<string>): void {
    const todo = new Set(apps);
    for (const app of todo) {
      if (this.registry.hasOwnInstances(app)) {
        const moved = this.labels.add(app);
        if (moved === undefined) {
          this.report(app, [`application name ${JSON.stringify(app)} has nothing a DNS label can hold; not published`]);
          this.withdraw(app);
          continue;
        }
        for (const other of moved) todo.add(other);
      } else {
        for (const other of this.labels.remove(app)) todo.add(other);
      }
    }
    for (const app of todo) this.refresh(app);
  }

  private refresh(app: string): void {
    const label = this.labels.labelOf(app);
    // An app only bridge sinks wrote (a Kubernetes Service registered here) is not published: loop prevention.
    if (!this.registry.hasOwnInstances(app) || label === undefined) {
      this.withdraw(app);
      if (!this.registry.hasOwnInstances(app)) this.report(app, []);
      return;
    }
    const translated = translateApp(app, label, this.registry.instancesOf(app), { ...this.config, registry: this.registryName });
    const problems = [...translated.problems];
    const plain = dnsLabelOf(app);
    const rivals = this.labels.rivalsOf(app);
    if (label !== plain && rivals.length > 0) problems.push(`application ${app} would be named ${plain}, as ${rivals.join(', ')} would; it is named ${label}`);
    this.report(app, problems);
    if (!translated.service) {
      this.withdraw(app);
      return;
    }
    const before = this.reported.get(app);
    if (before && before.id !== translated.service.id) this.updates?.removeService(this.name, before.id);
    this.endpointCount += translated.service.endpoints.length - (before?.endpoints ?? 0);
    this.reported.set(app, { id: translated.service.id, endpoints: translated.service.endpoints.length });
    this.updates?.upsertService(this.name, translated.service);
  }

  private withdraw(app: string): void {
    const before = this.reported.get(app);
    if (!before) return;
    this.reported.delete(app);
    this.endpointCount -= before.endpoints;
    this.updates?.removeService(this.name, before.id);
  }

  /** Logs an app's problems when they change, not on every round. */
  private report(app: string, problems: string[]): void {
    const text = problems.join('; ');
    if (text === (this.reportedProblems.get(app) ?? '')) return;
    if (text) this.reportedProblems.set(app, text);
    else this.reportedProblems.delete(app);
    if (text) this.log.warn({ app, problems }, 'a Eureka application has instances that are not published');
  }
}
