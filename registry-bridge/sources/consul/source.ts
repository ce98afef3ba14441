// The Consul source: one datacenter's services into the catalog without one long poll per
// service (Consul allows 200 connections per client by default). Three blocking queries run all
// the time: /v1/catalog/services (names and tags; its index moves on every registration change,
// never on a check's status) and /v1/health/state/critical and /warning (the failing checks only:
// they wake on any check change and answer a short list, so a status flip costs two small reads
// however many checks there are; comparing them with the last answers names the services whose
// checks moved, or the node whose node check did). Every check, /v1/health/state/any, is read only
// when the catalog moved, to find which services gained or lost instances (45 MB at 100,000
// checks: reading it on every check change made a flip cost half a second there). The services
// named are fetched from /v1/health/service/<name> by a bounded pool. A registration change
// no check explains (an instance with no check) is found by a sweep that fetches every service,
// at most every sweepIntervalSeconds. Nothing is removed because Consul is away: the last good
// state stays, and the source reads stale once it has not heard from Consul for staleAfterSeconds.
// Once it answers again, nothing it said before counts: a restarted Consul's indexes climb back
// from small numbers and can stand at the very ones last seen, with other contents (see watch()).
import { setMaxListeners } from 'node:events';
import type { ConsulSourceConfig, Mesh } from '../../../common/contract/index.js';
import type { Logger } from '../../../common/log.js';
import { LabelBook } from '../../core/names.js';
import type { CatalogUpdates, Source, SourceStatus } from '../../core/types.js';
import { ConsulClient, ConsulError } from './client.js';
import { nextIndex, nextQueryDelay } from './index-rules.js';
import { addNodeServices, checksByNode, nodeNames, readPerNode } from './node-reads.js';
import { translateConsulService } from './translate.js';

export interface ConsulSourceOptions {
  config: ConsulSourceConfig;
  log: Logger;
  /** How the start reads every service: by the counts (node-reads.ts), or one way for tests that compare the two. */
  startReads?: 'by-counts' | 'per-service' | 'per-node';
}

interface Known {
  tags: string;
  /** X-Consul-Index of its last fetch: a sweep that finds the same skips it. Forgotten when Consul goes away. */
  index?: bigint;
  /** Its own checks (node\0checkID) in allChecks, as its last fetch said. */
  checkKeys?: string[];
  port?: number;
  reportedId?: string;
  endpoints: number;
  nodes: string[];
  /** Gone from Consul's list: removed from the catalog at this time unless it comes back. */
  removeAt?: number;
  removeTimer?: NodeJS.Timeout;
  /** What was last logged about it, so a problem is logged when it changes. */
  problems?: string;
}

/** A wait that stop() cuts short. Its listener goes with it: the signal lives as long as the source. */
const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted || ms <= 0) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });

export class ConsulSource implements Source {
  readonly kind = 'consul';
  readonly name: string;
  private readonly config: ConsulSourceConfig;
  private readonly log: Logger;
  private readonly startReads: NonNullable<ConsulSourceOptions['startReads']>;
  private readonly client: ConsulClient;
  private readonly abort = new AbortController();
  private updates?: CatalogUpdates;
  private datacenter?: string;
  private readonly known = new Map<string, Known>();
  private readonly labels = new LabelBook();
  /**
   * node\0checkID to its service's name ('' for a node check): what /v1/health/state/any last said,
   * kept current by every service fetched since (which is all there is before the first read: at
   * start the fetches of every service make it, so the 45 MB list is not read then).
   */
  private allChecks = new Map<string, string>();
  /** The same for the failing checks, per status, as the two status watches last said. */
  private readonly failing: Record<FailingStatus, Map<string, string> | undefined> = { critical: undefined, warning: undefined };
  private readonly servicesOnNode = new Map<string, Set<string>>();
  /** A read of every check is running, and another is wanted after it (the catalog moved meanwhile). */
  private allChecksReading = false;
  private allChecksWanted = false;
  private allChecksFailures = 0;
  private allChecksTimer?: NodeJS.Timeout;
  /**
   * What the next read of every check is for: a catalog change the service list did not explain
   * (an instance came or went in a listed service: only a sweep finds one without checks), or the
   * first list after Consul was away (a sweep in any case: see watch()).
   */
  private catalogUnexplained = false;
  private catalogAfterOutage = false;
  private readonly queue = new Set<string>();
  /** Queued by a sweep only: skipped when Consul's index for the service has not moved. */
  private readonly swept = new Set<string>();
  private readonly retry = new Set<string>();
  private retryTimer?: NodeJS.Timeout;
  private retryFailures = 0;
  private inFlight = 0;
  private catalogListed = false;
  /**
   * Services the start reads per node, not yet published; each leaves it when it is fetched on its
   * own instead (a change named it meanwhile: its fetch is newer than the node reads).
   */
  private readonly startPending = new Set<string>();
  /** The start's reads are running: the queue waits for them to choose the way (the read of every check too). */
  private startRunning = false;
  private syncedOnce = false;
  private lastContactAt = 0;
  private lastSyncAt = 0;
  private errors = 0;
  private lastError?: string;
  private endpointCount = 0;
  private sweepTimer?: NodeJS.Timeout;
  private lastSweepAt = 0;
  private sweepWhy = '';
  private readonly loops: Promise<void>[] = [];

  constructor(options: ConsulSourceOptions) {
    this.config = options.config;
    this.name = options.config.name;
    this.log = options.log.child({ source: this.name });
    this.startReads = options.startReads ?? 'by-counts';
    // Three watches and the read of every check, beside the fetch pool.
    this.client = new ConsulClient(options.config, 4);
    this.datacenter = options.config.datacenter;
    // Every request in flight listens on it (the fetch pool and the two watches, each of which may
    // be waiting instead; at the start, the node reads too): past Node's default of 10 it warned of a
    // leak there is not.
    setMaxListeners(2 * options.config.fetchConcurrency + 8, this.abort.signal);
  }

  start(updates: CatalogUpdates): void {
    this.updates = updates;
    this.loops.push(this.run());
  }

  setMesh(_mesh: Mesh): void {
    // Nothing this source publishes depends on mesh.json (VIPs are the catalog's).
  }

  async stop(): Promise<void> {
    this.abort.abort();
    clearTimeout(this.retryTimer);
    clearTimeout(this.sweepTimer);
    clearTimeout(this.allChecksTimer);
    for (const known of this.known.values()) clearTimeout(known.removeTimer);
    await Promise.all(this.loops);
    this.client.close();
  }

  status(): SourceStatus {
    const stale = this.syncedOnce && Date.now() - this.lastContactAt > this.config.staleAfterSeconds * 1000;
    let services = 0;
    for (const known of this.known.values()) if (known.reportedId) services++;
    return {
      name: this.name,
      kind: this.kind,
      address: this.datacenter ? `${this.config.address} (${this.datacenter})` : this.config.address,
      state: !this.syncedOnce ? 'starting' : stale ? 'stale' : 'synced',
      services,
      endpoints: this.endpointCount,
      sidecars: 0,
      lastContactAt: this.lastContactAt,
      lastSyncAt: this.lastSyncAt,
      errors: this.errors,
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }

  // ---- the watches

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    for (let failures = 0; !this.datacenter && !signal.aborted; failures++) {
      await sleep(nextQueryDelay(0, 0, 0, failures), signal);
      try {
        const self = await this.client.get({ path: '/v1/agent/self', signal });
        this.contact();
        const dc = (self.body as { Config?: { Datacenter?: unknown } } | null)?.Config?.Datacenter;
        if (typeof dc !== 'string' || dc === '') throw new ConsulError('/v1/agent/self names no datacenter; set datacenter in the source config');
        this.datacenter = dc;
        this.log.info({ datacenter: dc, address: this.config.address }, 'reading the datacenter of the Consul agent');
      } catch (error) {
        this.failed(error, 'reading the agent datacenter (set datacenter in the source config to skip it)');
      }
    }
    if (signal.aborted) return;
    await Promise.all([
      this.watch('catalog', '/v1/catalog/services', (body, afterOutage) => this.onCatalog(body, afterOutage)),
      ...FAILING_STATUSES.map((status) => this.watch(`${status} checks`, `/v1/health/state/${status}`, (body) => this.onFailing(status, body))),
    ]);
  }

  /**
   * One blocking query after another. After a failure the next query is a plain read, its answer
   * taken whole: Consul's rule that an index going backwards resets the watch does not see a
   * restarted Consul whose writes brought its index back to the one last seen (mesh-consul's
   * agent came back at 21, as it went): a blocking query sent with it would wait for a write past
   * it and then read "no change" with different contents, missing a deregistration for good.
   */
  private async watch(what: string, path: string, onAnswer: (body: unknown, afterOutage: boolean) => void): Promise<void> {
    const signal = this.abort.signal;
    let index = 0n;
    let failures = 0;
    let lastSentAt = 0;
    while (!signal.aborted) {
      await sleep(nextQueryDelay(lastSentAt, Date.now(), this.config.minQueryIntervalMs, failures), signal);
      if (signal.aborted) return;
      lastSentAt = Date.now();
      try {
        const answer = await this.client.get({
          path,
          query: { dc: this.datacenter! },
          ...(index > 0n ? { block: { index, waitSeconds: this.config.waitSeconds } } : {}),
          signal,
        });
        this.contact();
        const afterOutage = failures > 0;
        if (afterOutage) this.log.info({ watch: what, failures }, 'Consul answers again; taking its answer whole');
        failures = 0;
        const step = nextIndex(index, answer.index);
        if (step.reset) this.log.info({ watch: what, from: String(index), to: String(step.next) }, 'the Consul index went backwards; taking the answer whole');
        index = step.next;
        if (step.changed) onAnswer(answer.body, afterOutage);
      } catch (error) {
        if (signal.aborted) return;
        if (failures === 0) this.forgetFetchIndexes();
        failures++;
        index = 0n;
        this.failed(error, `watching ${path}`);
      }
    }
  }

  /** A service's index from before Consul went away may be its index again after, with other instances. */
  private forgetFetchIndexes(): void {
    for (const known of this.known.values()) delete known.index;
  }

  private contact(): void {
    this.lastContactAt = Date.now();
  }

  private failed(error: unknown, doing: string): void {
    this.errors++;
    const message = (error as Error).message;
    const repeated = this.lastError === `${doing}: ${message}`;
    this.lastError = `${doing}: ${message}`;
    if (error instanceof ConsulError && error.refused) {
      try {
        this.client.reloadToken();
      } catch (tokenError) {
        this.lastError = `${doing}: ${message}; ${(tokenError as Error).message}`;
      }
    }
    // Once per new problem at warn: a Consul away for minutes is one line, then debug until it changes.
    (repeated ? this.log.debug : this.log.warn).call(
      this.log,
      { err: message, doing },
      'Consul did not answer as expected; the last good state stays published',
    );
  }

  private onCatalog(body: unknown, afterOutage = false): void {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      this.failed(new ConsulError('not an object of service names'), 'reading /v1/catalog/services');
      return;
    }
    const { include, exclude } = this.config.services;
    const listed = new Map<string, string>();
    for (const [name, tags] of Object.entries(body)) {
      if (exclude.includes(name) || !(include.includes('*') || include.includes(name))) continue;
      listed.set(name, Array.isArray(tags) ? tags.filter((t) => typeof t === 'string').join('\u0000') : '');
    }
    let named = false;
    for (const [name, tags] of listed) {
      const known = this.known.get(name);
      if (!known) {
        named = true;
        this.known.set(name, { tags, endpoints: 0, nodes: [] });
        const changed = this.labels.add(name);
        if (changed === undefined) {
          this.problem(name, [`Consul service name ${JSON.stringify(name)} has nothing a DNS label can hold; not published`]);
          continue;
        }
        for (const other of changed) if (other !== name) this.relabel(other);
        const rivals = this.labels.rivalsOf(name);
        if (rivals.length > 0)
          this.log.warn(
            { labels: Object.fromEntries([name, ...rivals].map((n) => [n, this.labels.labelOf(n)])) },
            'Consul service names that make the same DNS label: the name equal to it, else the smallest, keeps it (registry-bridge/README.md, Names)',
          );
        this.enqueue(name);
      } else if (known.removeAt !== undefined) {
        named = true;
        clearTimeout(known.removeTimer);
        delete known.removeAt;
        delete known.removeTimer;
        known.tags = tags;
        this.enqueue(name);
      } else if (known.tags !== tags) {
        named = true;
        known.tags = tags;
        this.enqueue(name);
      }
    }
    for (const [name, known] of this.known) {
      if (listed.has(name) || known.removeAt !== undefined) continue;
      named = true;
      this.gone(name, known);
    }
    // Instances came or went somewhere (or a service did): every check says where. The first
    // list fetches every service anyway.
    if (this.catalogListed) {
      if (!named) this.catalogUnexplained = true;
      if (afterOutage) this.catalogAfterOutage = true;
      this.readAllChecks();
    } else {
      for (const name of this.queue) this.startPending.add(name);
      this.queue.clear();
      this.startRunning = true;
      void this.readAtStart(Object.keys(body).length);
    }
    this.catalogListed = true;
    this.pump();
  }

  /**
   * Every listed service read once, per service or per node (node-reads.ts says which is cheaper).
   * The node reads start once both failing-check watches hold their first answer: a check that
   * changes after that wakes them and its service is fetched again, one before is in the reads.
   * Whatever the node reads cannot give (a read that fails, a service none of them holds: hidden by
   * the token's policy, or registered on a node listed too late) is fetched per service.
   */
  private async readAtStart(total: number): Promise<void> {
    const signal = this.abort.signal;
    const into = new Map<string, unknown[]>();
    let way = this.startReads === 'per-node' ? 'per node' : 'per service';
    try {
      if (this.startReads !== 'per-service') {
        const nodes = nodeNames((await this.client.get({ path: '/v1/catalog/nodes', query: { dc: this.datacenter! }, signal })).body);
        if (!nodes) throw new ConsulError('/v1/catalog/nodes: not a list of nodes');
        const counts = { nodes: nodes.length, listed: this.startPending.size, total };
        if (this.startReads === 'by-counts') way = readPerNode(counts) ? 'per node' : 'per service';
        this.log.info({ ...counts, way }, 'reading every Consul service');
        if (way === 'per node') {
          while (!(this.failing.critical && this.failing.warning) && !signal.aborted) await sleep(20, signal);
          let next = 0;
          const readNodes = async () => {
            while (next < nodes.length && !signal.aborted) {
              const node = nodes[next++]!;
              const query = { dc: this.datacenter! };
              const [services, checks] = await Promise.all([
                this.client.get({ path: `/v1/catalog/node-services/${encodeURIComponent(node)}`, query, signal }),
                this.client.get({ path: `/v1/health/node/${encodeURIComponent(node)}`, query, signal }),
              ]);
              addNodeServices(node, services.body, checksByNode(checks.body), this.startPending, into);
            }
          };
          // Half as many nodes at once as services are fetched: each takes two reads.
          const readers = Math.max(1, Math.floor(this.config.fetchConcurrency / 2));
          await Promise.all(Array.from({ length: Math.min(readers, nodes.length) }, readNodes));
          this.contact();
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      this.failed(error, `reading every service per node (each is fetched on its own instead)`);
      into.clear();
    }
    if (signal.aborted) return;
    this.startRunning = false;
    for (const name of this.startPending) {
      const known = this.known.get(name);
      const entries = into.get(name);
      if (!known || known.removeAt !== undefined) continue;
      if (!entries) {
        this.enqueue(name);
        continue;
      }
      this.noteChecks(name, known, entries);
      this.render(name, known, entries);
      into.delete(name);
    }
    this.startPending.clear();
    if (this.allChecksWanted) this.readAllChecks();
    this.pump();
  }

  /** The failing checks of one status: those that came, went or changed service name the services to fetch. */
  private onFailing(status: FailingStatus, body: unknown): void {
    const next = checkServices(body);
    if (!next) {
      this.failed(new ConsulError('not a list of checks'), `reading /v1/health/state/${status}`);
      return;
    }
    const previous = this.failing[status];
    this.failing[status] = next;
    // The first answer only sets the baseline: the catalog's first list fetches every service.
    if (previous) this.touch(changedChecks(previous, next));
    this.pump();
  }

  /**
   * Reads every check (one read at a time; a catalog change meanwhile asks for one more after it)
   * and fetches the services whose checks came or went since the last read. When none did and
   * the service list named no service either, the catalog's change was an instance without
   * checks: a sweep finds it. (A service the list named is fetched for that, and its fetch often
   * answers first, putting its checks in the baseline: that read finds nothing, and must not
   * sweep every service for it.) After Consul was away, a sweep in any case.
   */
  private readAllChecks(): void {
    // During the start, a read of every check would find the checks of services not yet published new.
    if (this.allChecksReading || this.allChecksTimer || this.startRunning) {
      this.allChecksWanted = true;
      return;
    }
    this.allChecksReading = true;
    this.allChecksWanted = false;
    const [unexplained, afterOutage] = [this.catalogUnexplained, this.catalogAfterOutage];
    this.catalogUnexplained = this.catalogAfterOutage = false;
    void this.client
      .get({ path: '/v1/health/state/any', query: { dc: this.datacenter! }, signal: this.abort.signal })
      .then((answer) => {
        this.contact();
        const next = checkServices(answer.body);
        if (!next) throw new ConsulError('not a list of checks');
        this.allChecksFailures = 0;
        const changed = changedChecks(this.allChecks, next);
        this.allChecks = next;
        // Checks of services this source leaves out (Consul's own) count as changed the first time: touch() fetches none of them.
        const fetched = this.touch(changed);
        if (afterOutage) this.maybeSweep('Consul answers again after it was away: what it held before says nothing now');
        else if (fetched === 0 && unexplained) this.maybeSweep('a catalog change no check explains');
      })
      .catch((error: unknown) => {
        if (this.abort.signal.aborted) return;
        this.failed(error, 'reading /v1/health/state/any');
        this.allChecksFailures++;
        this.allChecksWanted = true;
        this.catalogUnexplained ||= unexplained;
        this.catalogAfterOutage ||= afterOutage;
      })
      .finally(() => {
        this.allChecksReading = false;
        if (this.abort.signal.aborted) return;
        if (this.allChecksWanted)
          this.allChecksTimer = setTimeout(
            () => {
              this.allChecksTimer = undefined;
              this.readAllChecks();
            },
            nextQueryDelay(0, 0, 0, this.allChecksFailures),
          );
        this.pump();
      });
  }

  /** Checks that changed: their services are fetched; a node check's, every service on that node. How many are fetched. */
  private touch(changed: readonly string[]): number {
    const names = new Set<string>();
    for (const change of changed) {
      if (change.startsWith(NODE_CHECK)) for (const name of this.servicesOnNode.get(change.slice(NODE_CHECK.length)) ?? []) names.add(name);
      else names.add(change);
    }
    let fetched = 0;
    for (const name of names)
      if (this.known.has(name) && this.known.get(name)!.removeAt === undefined) {
        this.enqueue(name);
        fetched++;
      }
    return fetched;
  }

  /** The catalog moved and no check says where: fetch every service, at most every sweepIntervalSeconds. */
  private maybeSweep(why: string): void {
    this.sweepWhy = why;
    if (this.sweepTimer) return;
    const wait = this.lastSweepAt + this.config.sweepIntervalSeconds * 1000 - Date.now();
    if (wait <= 0) {
      this.sweep();
      return;
    }
    this.sweepTimer = setTimeout(() => {
      this.sweepTimer = undefined;
      this.sweep();
    }, wait);
  }

  private sweep(): void {
    this.lastSweepAt = Date.now();
    this.log.debug({ services: this.known.size, why: this.sweepWhy }, 'fetching every service');
    for (const [name, known] of this.known) {
      if (known.removeAt !== undefined || this.queue.has(name)) continue;
      this.queue.add(name);
      this.swept.add(name);
    }
    this.pump();
  }

  // ---- fetching services

  private enqueue(name: string): void {
    this.startPending.delete(name);
    this.queue.add(name);
    this.swept.delete(name);
  }

  private pump(): void {
    while (this.inFlight < this.config.fetchConcurrency && this.queue.size > 0 && !this.abort.signal.aborted) {
      const name = this.queue.values().next().value!;
      this.queue.delete(name);
      const swept = this.swept.delete(name);
      this.inFlight++;
      void this.fetch(name, swept).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
    this.maybeSynced();
  }

  private maybeSynced(): void {
    if (
      !this.catalogListed ||
      this.startRunning ||
      !this.failing.critical ||
      !this.failing.warning ||
      this.queue.size > 0 ||
      this.inFlight > 0 ||
      this.retry.size > 0
    )
      return;
    this.lastSyncAt = Date.now();
    if (this.syncedOnce) return;
    this.syncedOnce = true;
    this.log.info({ services: this.known.size, endpoints: this.endpointCount, datacenter: this.datacenter }, 'Consul listed');
    this.updates?.synced(this.name);
  }

  private async fetch(name: string, swept: boolean): Promise<void> {
    const known = this.known.get(name);
    if (!known || known.removeAt !== undefined) return;
    let answer;
    try {
      answer = await this.client.get({ path: `/v1/health/service/${encodeURIComponent(name)}`, query: { dc: this.datacenter! }, signal: this.abort.signal });
    } catch (error) {
      if (this.abort.signal.aborted) return;
      this.failed(error, `fetching service ${name}`);
      this.retryLater(name);
      return;
    }
    this.contact();
    this.retryFailures = 0;
    // Gone or changed while in flight: the newer word wins.
    if (this.known.get(name) !== known || known.removeAt !== undefined) return;
    if (swept && answer.index !== undefined && answer.index === known.index) return;
    if (answer.index !== undefined) known.index = answer.index;
    this.noteChecks(name, known, answer.body);
    this.render(name, known, answer.body);
  }

  /** A fetched service's checks into allChecks, in place of what its last fetch said. */
  private noteChecks(name: string, known: Known, entries: unknown): void {
    if (!Array.isArray(entries)) return;
    for (const key of known.checkKeys ?? []) if (this.allChecks.get(key) === name) this.allChecks.delete(key);
    const own: string[] = [];
    for (const entry of entries) {
      const checks = (entry as { Checks?: unknown } | null)?.Checks;
      const found = checkServices(checks);
      for (const [key, service] of found ?? []) {
        this.allChecks.set(key, service);
        if (service === name) own.push(key);
      }
    }
    known.checkKeys = own;
  }

  private retryLater(name: string): void {
    this.retry.add(name);
    if (this.retryTimer) return;
    this.retryFailures++;
    this.retryTimer = setTimeout(
      () => {
        this.retryTimer = undefined;
        for (const n of this.retry) this.enqueue(n);
        this.retry.clear();
        this.pump();
      },
      nextQueryDelay(0, 0, 0, this.retryFailures),
    );
  }

  private render(name: string, known: Known, entries: unknown): void {
    const label = this.labels.labelOf(name);
    if (label === undefined) return;
    const translated = translateConsulService({
      name,
      label,
      datacenter: this.datacenter!,
      entries,
      filters: this.config,
      ...(known.port !== undefined ? { previousPort: known.port } : {}),
    });
    this.problem(name, translated.problems);
    this.indexNodes(name, known.nodes, translated.nodes);
    known.nodes = translated.nodes;
    if (!translated.service) {
      this.log.debug({ service: name, why: translated.skipped }, 'Consul service not in the catalog');
      this.withdraw(known);
      return;
    }
    if (known.reportedId !== undefined && known.reportedId !== translated.service.id) this.withdraw(known);
    known.port = translated.port;
    this.endpointCount += translated.service.endpoints.length - known.endpoints;
    known.endpoints = translated.service.endpoints.length;
    known.reportedId = translated.service.id;
    this.updates?.upsertService(this.name, translated.service);
  }

  private withdraw(known: Known): void {
    this.endpointCount -= known.endpoints;
    known.endpoints = 0;
    if (known.reportedId === undefined) return;
    this.updates?.removeService(this.name, known.reportedId);
    delete known.reportedId;
  }

  /** Its label changed (another name took it, or gave it up): the old id goes now, the new one comes with its fetch. */
  private relabel(name: string): void {
    const known = this.known.get(name);
    if (!known) return;
    this.withdraw(known);
    delete known.index;
    if (known.removeAt === undefined) this.enqueue(name);
  }

  /** Deregistered: its instances are gone at once; its name and VIP stay for removeAfterSeconds. */
  private gone(name: string, known: Known): void {
    known.removeAt = Date.now() + this.config.removeAfterSeconds * 1000;
    this.startPending.delete(name);
    this.queue.delete(name);
    this.retry.delete(name);
    this.noteChecks(name, known, []);
    if (known.reportedId !== undefined) this.render(name, known, []);
    known.removeTimer = setTimeout(() => {
      if (this.known.get(name) !== known || known.removeAt === undefined) return;
      this.withdraw(known);
      this.indexNodes(name, known.nodes, []);
      this.known.delete(name);
      for (const other of this.labels.remove(name)) this.relabel(other);
      this.log.info({ service: name, graceSeconds: this.config.removeAfterSeconds }, 'a Consul service deregistered: removed after its grace');
      this.pump();
    }, this.config.removeAfterSeconds * 1000);
  }

  private indexNodes(name: string, before: readonly string[], after: readonly string[]): void {
    for (const node of before) {
      const set = this.servicesOnNode.get(node);
      set?.delete(name);
      if (set?.size === 0) this.servicesOnNode.delete(node);
    }
    for (const node of after) {
      let set = this.servicesOnNode.get(node);
      if (!set) this.servicesOnNode.set(node, (set = new Set()));
      set.add(name);
    }
  }

  private problem(name: string, problems: string[]): void {
    const known = this.known.get(name);
    const text = problems.join('; ');
    if (!known || (known.problems ?? '') === text) return;
    known.problems = text;
    if (text) this.log.warn({ service: name, problems: problems.slice(0, 10), count: problems.length }, 'a Consul service has instances the mesh cannot use');
  }
}

const FAILING_STATUSES = ['critical', 'warning'] as const;
type FailingStatus = (typeof FAILING_STATUSES)[number];
/** How changedChecks names a node check's node: its services follow. */
const NODE_CHECK = '\u0000node:';

/** node\0checkID to its service's name ('' for a node check), from a list of checks; undefined when it is not one. */
function checkServices(body: unknown): Map<string, string> | undefined {
  if (!Array.isArray(body)) return undefined;
  const checks = new Map<string, string>();
  for (const check of body) {
    if (typeof check !== 'object' || check === null) continue;
    const { Node, CheckID, ServiceName } = check as Record<string, unknown>;
    if (typeof Node !== 'string' || typeof CheckID !== 'string') continue;
    checks.set(`${Node}\u0000${CheckID}`, typeof ServiceName === 'string' ? ServiceName : '');
  }
  return checks;
}

/** The services (or NODE_CHECK + node) of the checks in one map and not the other, or under another service. */
function changedChecks(before: ReadonlyMap<string, string>, after: ReadonlyMap<string, string>): string[] {
  const changed = new Set<string>();
  const note = (key: string, service: string) => changed.add(service !== '' ? service : NODE_CHECK + key.slice(0, key.indexOf('\u0000')));
  for (const [key, service] of after) {
    const was = before.get(key);
    if (was === service) continue;
    note(key, service);
    if (was !== undefined) note(key, was);
  }
  for (const [key, service] of before) if (!after.has(key)) note(key, service);
  return [...changed];
}
