/*
 * Replicas on one etcd take in each other's writes through a watch on the repo's records and
 * drafts, from the revision the replica loaded at. Each batch etcd sends is applied in order: the
 * codebases it names are read again inside their own write queue (Repo.reload), which wakes their
 * long polls at once. After a disconnect the watch resumes from the last revision delivered; when
 * etcd has compacted that revision away, the replica reloads everything (Repo.refresh wakes only
 * codebases whose served state changed, so nothing is published twice) and watches again from the
 * revision read before the reload.
 *
 * While etcd is away the replica serves what it has (writes fail with 503, see StoreUnavailable);
 * a probe every few seconds tells /healthz and the metrics, and the log says it once, then once a
 * minute, and once when etcd is back.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { ConditionLog, describeError, type Logger } from '../common/log.js';
import type { Repo } from './repo.js';
import type { CodebaseChanges, CodebaseWatch, CodebaseWatchHandlers, EtcdStore } from './store/etcd.js';

export interface ReplicaSyncOptions {
  etcd: Pick<EtcdStore, 'revision' | 'changesAfter' | 'watchCodebases' | 'latestRevision' | 'errors' | 'prefetchBlobs'>;
  repo: Pick<Repo, 'refresh' | 'reload' | 'get' | 'list'>;
  /** etcd's revision read before the Repo was loaded: the watch starts just after it. */
  since: string;
  log: Logger;
  /** How often etcd is asked what changed past the revision applied (reachability, watch lag); 2 s unless told. */
  probeIntervalMs?: number;
  /** Reminders while etcd stays away; 60 s unless told (tests). */
  reminderMs?: number;
  /** How long etcd may answer while the watch stays down before it is started again; 10 s unless told (tests). */
  watchRestartMs?: number;
}

export interface ReplicaHealth {
  /** The last probe of etcd answered. */
  reachable: boolean;
  /** The watch stream is up. */
  watching: boolean;
  /** Every change up to this revision is served here. */
  appliedRevision: string;
  /** The newest revision etcd was seen at. */
  etcdRevision: string;
  /** Revisions etcd is ahead of appliedRevision when some of the repo's own keys changed past it (else 0). */
  lagRevisions: number;
  /** Full reloads after etcd compacted the revision the watch needed (or cancelled the watch). */
  reloads: number;
  /** When this replica lost etcd, if it has (ISO time). */
  unreachableSince?: string;
  lastError?: string;
}

export interface ReplicaSync {
  health(): ReplicaHealth;
  registerMetrics(registry: Registry): void;
  /** Resolves once every change already delivered has been applied (tests). */
  settled(): Promise<void>;
  stop(): Promise<void>;
}

const RETRY_MIN_MS = 200;
const RETRY_MAX_MS = 5000;
/** How long etcd may answer while the watch stays down before the watch is started again. */
const WATCH_RESTART_MS = 10_000;

export function startReplicaSync(options: ReplicaSyncOptions): ReplicaSync {
  const { etcd, repo, log } = options;
  const conditions = new ConditionLog(log, options.reminderMs === undefined ? {} : { reminderMs: options.reminderMs });
  let applied = BigInt(options.since);
  let reachable = true;
  let watching = false;
  let reloads = 0;
  /** When the probe last started failing, and when the watch stream went down; either means etcd is lost. */
  let unreachableSince: number | undefined;
  let watchDownSince: number | undefined;
  let lastError: string | undefined;
  let stopped = false;
  let watch: CodebaseWatch | undefined;
  /** Since the probe first found changes the watch had not delivered yet, and etcd's revision then. */
  let behind: { since: number; revision: bigint } | undefined;
  /** When the watch last delivered a batch. */
  let lastDelivery = 0;
  /** Batches are applied one after another, in the order etcd sent them. */
  let work: Promise<void> = Promise.resolve();

  const lost = (error: unknown) => {
    reachable = false;
    unreachableSince ??= Date.now();
    lastError = describeError(error);
    conditions.report('etcd-unreachable', 'cannot reach etcd; serving what this replica has, refusing writes (503)', { error });
  };
  const found = () => {
    reachable = true;
    unreachableSince = undefined;
    lastError = undefined;
    conditions.clear('etcd reachable again; replicas in sync');
  };

  /** Runs `step` after every earlier one, again and again (backing off) until it succeeds or the sync stops. */
  const enqueue = (step: () => Promise<void>) => {
    work = work.then(async () => {
      for (let delay = RETRY_MIN_MS; !stopped; delay = Math.min(delay * 2, RETRY_MAX_MS)) {
        try {
          await step();
          if (!reachable) found();
          return;
        } catch (error) {
          lost(error);
          await new Promise((resolve) => setTimeout(resolve, delay * (0.5 + Math.random() / 2)));
        }
      }
    });
  };

  const apply = (changes: CodebaseChanges) =>
    enqueue(async () => {
      // The replica's own writes come back through the watch too: a record already at the event's
      // revision needs no read.
      const names = [...changes.names].filter((name) => {
        const revision = changes.recordRevisions.get(name);
        return revision === undefined || repo.get(name)?.revision !== revision;
      });
      if (names.length > 0) {
        await repo.reload(names);
        // What it now serves, in memory: reads go on while etcd is away.
        await etcd.prefetchBlobs(servedShas(names));
      }
      if (BigInt(changes.revision) > applied) applied = BigInt(changes.revision);
    });

  const handlers: CodebaseWatchHandlers = {
    changes: (changes) => {
      lastDelivery = Date.now();
      apply(changes);
    },
    connected: () => {
      watching = true;
      watchDownSince = undefined;
      found();
    },
    // One member going away moves the stream to another within a moment: not worth a log line.
    // The probe says when no member answers.
    disconnected: (error) => {
      watching = false;
      watchDownSince ??= Date.now();
      lastError = describeError(error);
    },
    compacted: () => {
      watching = false;
      watchDownSince ??= Date.now();
      log.warn({ appliedRevision: String(applied) }, 'etcd compacted the revisions this replica had not taken in yet; reloading every codebase');
      queueReload(0);
    },
    failed: (error) => {
      watching = false;
      watchDownSince ??= Date.now();
      lost(error);
      // A reload is always safe (nothing lost, nothing published twice); it fails, and is retried,
      // for as long as the cause (permissions) lasts.
      queueReload(RETRY_MAX_MS);
    },
  };

  /** One reload at a time: a second cause while one is queued is the same reload. */
  let reloadQueued = false;
  const queueReload = (afterMs: number) => {
    if (reloadQueued) return;
    reloadQueued = true;
    enqueue(async () => {
      if (afterMs > 0) await new Promise((resolve) => setTimeout(resolve, afterMs));
      await reloadAll();
      reloadQueued = false;
    });
  };

  const servedShas = (names: string[]) => names.flatMap((name) => Object.values(repo.get(name)?.files ?? {}));

  /** Only the newest watch speaks for the stream: one cancelled or replaced may still report its end. */
  let generation = 0;
  const startWatch = () => {
    if (stopped) return;
    const mine = ++generation;
    const current = () => mine === generation;
    watch = etcd.watchCodebases(String(applied + 1n), {
      // Its changes are real whichever watch brings them; read again, they publish nothing twice.
      changes: handlers.changes,
      connected: () => current() && handlers.connected(),
      disconnected: (error) => current() && handlers.disconnected(error),
      compacted: () => current() && handlers.compacted(),
      failed: (error) => current() && handlers.failed(error),
    });
  };

  const reloadAll = async () => {
    // Read before the reload: whatever lands after it comes through the new watch (read again, published once).
    const at = BigInt(await etcd.revision());
    await repo.refresh();
    await etcd.prefetchBlobs(servedShas(repo.list()));
    reloads++;
    if (at > applied) applied = at;
    startWatch();
  };

  const restartWatch = (why: string) => {
    log.warn({ appliedRevision: String(applied) }, why);
    watchDownSince = Date.now();
    behind = undefined;
    generation++;
    void watch?.cancel().catch(() => undefined);
    // From the revision applied: a batch delivered twice is read again and publishes nothing.
    enqueue(async () => startWatch());
  };
  const restartMs = options.watchRestartMs ?? WATCH_RESTART_MS;
  const probe = setInterval(() => {
    etcd.changesAfter(String(applied)).then(({ revision, count }) => {
      found();
      const now = Date.now();
      behind = count > 0 ? { since: behind?.since ?? now, revision: BigInt(revision) } : undefined;
      // etcd answers but the watch has not come back, or holds changes it never delivers (a
      // stream on a member cut off from the others): start it again rather than trust the client.
      if (!watching && watchDownSince !== undefined && now - watchDownSince > restartMs)
        restartWatch('the etcd watch did not come back with etcd; starting it again');
      else if (behind && now - behind.since > restartMs && lastDelivery < behind.since)
        restartWatch('the etcd watch delivers nothing while etcd has changes for it; starting it again');
    }, lost);
  }, options.probeIntervalMs ?? 2000);
  probe.unref();
  startWatch();

  const lostSince = () =>
    unreachableSince === undefined ? watchDownSince : watchDownSince === undefined ? unreachableSince : Math.min(unreachableSince, watchDownSince);
  const health = (): ReplicaHealth => {
    const latest = BigInt(etcd.latestRevision);
    return {
      reachable: reachable && watching,
      watching,
      appliedRevision: String(applied),
      etcdRevision: String(latest > applied ? latest : applied),
      lagRevisions: behind && behind.revision > applied ? Number(behind.revision - applied) : 0,
      reloads,
      ...(lostSince() !== undefined ? { unreachableSince: new Date(lostSince()!).toISOString() } : {}),
      ...(lastError !== undefined ? { lastError } : {}),
    };
  };

  return {
    health,
    registerMetrics(registry) {
      new Gauge({
        name: 'flb_repo_etcd_watch_lag_revisions',
        help: "Revisions etcd is ahead of what this replica serves, when the repo's keys changed past it (0: every replica's write taken in)",
        registers: [registry],
        collect() {
          this.set(health().lagRevisions);
        },
      });
      new Gauge({
        name: 'flb_repo_etcd_connected',
        help: 'Whether this replica reaches etcd and its watch is up (0: serving what it has, writes answered 503)',
        registers: [registry],
        collect() {
          this.set(health().reachable ? 1 : 0);
        },
      });
      new Counter({
        name: 'flb_repo_etcd_reloads_total',
        help: 'Full reloads: etcd compacted the revision the watch had to resume from (or cancelled the watch)',
        registers: [registry],
        collect() {
          this.reset();
          this.inc(reloads);
        },
      });
      new Counter({
        name: 'flb_repo_etcd_errors_total',
        help: 'etcd calls that failed, by operation (load, write, read, revision)',
        labelNames: ['operation'] as const,
        registers: [registry],
        collect() {
          this.reset();
          for (const [operation, count] of etcd.errors) this.inc({ operation }, count);
        },
      });
    },
    settled: () => work,
    async stop() {
      stopped = true;
      clearInterval(probe);
      await watch?.cancel().catch(() => undefined);
    },
  };
}
