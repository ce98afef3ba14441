/*
 * `flb repo` running: the store (local disk or etcd), the Repo over it, the replicas' sync loop
 * with etcd, TokenReview, and the HTTP(S) server. repo/cli.ts only parses flags into RepoRunOptions.
 */
import { readFileSync } from 'node:fs';
import type { KubeConfig } from '@kubernetes/client-node';
import { formatAddress, listenError } from '../common/errors.js';
import { ConditionLog, describeError, type Logger } from '../common/log.js';
import { Authenticator } from './auth.js';
import { Repo } from './repo.js';
import { startRepoServer } from './server.js';
import { DiskStore, type WriteStep } from './store/disk.js';
import { EtcdStore } from './store/etcd.js';

export interface RepoRunOptions {
  host: string;
  port: number;
  /** Exactly one of dataDir and etcdEndpoint. */
  dataDir?: string;
  etcdEndpoint?: string;
  /** With etcd: how often to take in the other replicas' writes. */
  syncIntervalMs: number;
  /** PEM files; without them the repo serves plain HTTP to anyone (the CLI allows that on loopback only). */
  tls?: { certFile: string; keyFile: string; clientCaFile?: string };
  tokenAudience: string;
  kubeconfig?: string;
  log: Logger;
}

export interface RunningRepo {
  readonly port: number;
  close(): Promise<void>;
}

export async function runRepo(options: RepoRunOptions): Promise<RunningRepo> {
  const { log } = options;
  const etcd = options.etcdEndpoint ? new EtcdStore(options.etcdEndpoint) : undefined;
  const store = etcd ?? (await new DiskStore(options.dataDir!, crashPointFromEnvironment()).init());
  // Read before the load: a write landing between the two is taken in by the first sync.
  const loadedAt = await etcd?.revision();
  const repo = await new Repo(store).load();
  const sync = etcd ? startReplicaSync({ etcd, repo, since: loadedAt!, intervalMs: options.syncIntervalMs, log }) : undefined;
  try {
    const server = await startRepoServer({
      repo,
      host: options.host,
      port: options.port,
      log,
      ...(options.tls
        ? {
            tls: {
              cert: readFileSync(options.tls.certFile, 'utf8'),
              key: readFileSync(options.tls.keyFile, 'utf8'),
              ...(options.tls.clientCaFile ? { ca: readFileSync(options.tls.clientCaFile, 'utf8') } : {}),
            },
          }
        : {}),
      auth: await authenticator(options),
    }).catch((error: unknown) => {
      throw listenError(error, { what: 'the repo', address: formatAddress(options.host, options.port), flag: '--listen HOST:PORT' });
    });
    log.info(
      { host: options.host, port: server.port, store: etcd ? options.etcdEndpoint : options.dataDir, codebases: repo.list().length, tls: Boolean(options.tls) },
      options.tls
        ? 'repo serving over TLS; writes need the control plane certificate, sidecars read their own'
        : 'repo serving; anonymous access, bound to loopback',
    );
    return {
      port: server.port,
      close: async () => {
        sync?.stop();
        await server.close();
      },
    };
  } catch (error) {
    sync?.stop();
    throw error;
  }
}

/** Anonymous access without TLS; with it, client certificates and (given a cluster) ServiceAccount tokens. */
async function authenticator(options: RepoRunOptions): Promise<Authenticator> {
  if (!options.tls) return new Authenticator({ trustAnonymous: true });
  let tokenReview: { kubeConfig: KubeConfig; audience: string } | undefined;
  try {
    const { loadKubeConfig } = await import('../common/kube.js');
    tokenReview = { kubeConfig: loadKubeConfig(options.kubeconfig), audience: options.tokenAudience };
  } catch (error) {
    options.log.warn({ error: describeError(error) }, 'no Kubernetes API for TokenReview: ServiceAccount tokens will be refused');
  }
  return new Authenticator({ trustAnonymous: false, ...(tokenReview ? { tokenReview } : {}) });
}

/**
 * Fault injection for the crash tests (test-e2e/repo-crash.test.ts) only:
 * FLB_REPO_CRASH_AFTER=<step>[:<nth write>] kills the process inside the disk store's write path.
 */
function crashPointFromEnvironment(): { crashAfter: WriteStep; occurrence: number } | undefined {
  const [crashAfter, occurrence] = (process.env.FLB_REPO_CRASH_AFTER ?? '').split(':');
  return crashAfter ? { crashAfter: crashAfter as WriteStep, occurrence: Number(occurrence ?? 1) } : undefined;
}

export interface ReplicaSyncOptions {
  etcd: Pick<EtcdStore, 'revision'>;
  repo: Pick<Repo, 'refresh'>;
  /** etcd's revision when the Repo was loaded. */
  since: string;
  intervalMs: number;
  log: Logger;
  /** Reminders while etcd stays away; 60 s unless told (tests). */
  reminderMs?: number;
}

/**
 * Replicas on one etcd take in each other's writes: every interval, when etcd's revision moved, the
 * Repo reloads (and wakes the long polls whose codebase changed). While etcd is away the replica
 * serves what it has; that is logged when it starts, as a reminder once a minute, and when it ends,
 * not on every tick.
 */
export function startReplicaSync(options: ReplicaSyncOptions): { stop(): void } {
  const conditions = new ConditionLog(options.log, options.reminderMs === undefined ? {} : { reminderMs: options.reminderMs });
  let seen = options.since;
  let syncing = false;
  const tick = async () => {
    const revision = await options.etcd.revision();
    if (revision === seen) return;
    // Marked seen only once taken in: a refresh that fails is tried again on the next tick.
    await options.repo.refresh();
    seen = revision;
  };
  const timer = setInterval(() => {
    if (syncing) return;
    syncing = true;
    tick()
      .then(
        () => conditions.clear('etcd reachable again; replicas in sync'),
        (error: unknown) => conditions.report('etcd-unreachable', 'cannot reach etcd; serving what this replica has', { error }),
      )
      .finally(() => (syncing = false));
  }, options.intervalMs);
  return { stop: () => clearInterval(timer) };
}
