/*
 * `flb repo` running: the store (local disk or etcd), the Repo over it, the replicas' sync loop
 * with etcd, TokenReview, and the HTTP(S) server. repo/cli.ts only parses flags into RepoRunOptions.
 */
import { readFileSync } from 'node:fs';
import type { KubeConfig } from '@kubernetes/client-node';
import { formatAddress, listenError } from '../common/errors.js';
import { describeError, type Logger } from '../common/log.js';
import { Authenticator } from './auth.js';
import { startReplicaSync } from './replica-sync.js';
import { Repo } from './repo.js';
import { startRepoServer } from './server.js';
import { DiskStore, type WriteStep } from './store/disk.js';
import { EtcdStore } from './store/etcd.js';
import { StoreUnavailable } from './store/store.js';

export interface RepoRunOptions {
  host: string;
  port: number;
  /** Exactly one of dataDir and etcd. */
  dataDir?: string;
  etcd?: EtcdRunOptions;
  /** PEM files; without them the repo serves plain HTTP to anyone (the CLI allows that on loopback only). */
  tls?: { certFile: string; keyFile: string; clientCaFile?: string };
  tokenAudience: string;
  kubeconfig?: string;
  log: Logger;
}

export interface EtcdRunOptions {
  endpoints: string[];
  /** PEM files: the CA that signed etcd's serving certificates, and the repo's client certificate. */
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  username?: string;
  /** The password, in a file (a mounted Secret) so that it is in no process listing. */
  passwordFile?: string;
  prefix?: string;
  timeoutMs: number;
}

export interface RunningRepo {
  readonly port: number;
  close(): Promise<void>;
}

export async function runRepo(options: RepoRunOptions): Promise<RunningRepo> {
  const { log } = options;
  const etcd = options.etcd ? openEtcd(options.etcd) : undefined;
  const plain = options.etcd?.endpoints.filter((endpoint) => endpoint.startsWith('http://')) ?? [];
  if (options.etcd?.username !== undefined && plain.length > 0)
    log.warn({ endpoints: plain }, "the etcd password goes to these endpoints unencrypted (http): give etcd's https URLs");
  const store = etcd ?? (await new DiskStore(options.dataDir!, crashPointFromEnvironment()).init());
  // Read before the load: a write landing between the two comes through the watch. Also the first
  // call to etcd: wrong certificates or credentials stop the repo here, saying which.
  const loadedAt = await etcd?.revision().catch(async (error: unknown) => {
    const why = error instanceof StoreUnavailable ? await etcd.diagnoseTls() : undefined;
    await etcd.close();
    throw new Error(`cannot start the repo on etcd (${options.etcd!.endpoints.join(', ')}): ${why ?? describeError(error)}`);
  });
  const repo = await new Repo(store).load();
  // Every published file in memory before serving: reads go on while etcd is away.
  await etcd?.prefetchBlobs(repo.list().flatMap((name) => Object.values(repo.get(name)!.files)));
  const sync = etcd ? startReplicaSync({ etcd, repo, since: loadedAt!, log }) : undefined;
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
      ...(sync ? { storeHealth: () => ({ writable: sync.health().reachable, etcd: sync.health() }) } : {}),
    }).catch((error: unknown) => {
      throw listenError(error, { what: 'the repo', address: formatAddress(options.host, options.port), flag: '--listen HOST:PORT' });
    });
    sync?.registerMetrics(server.registry);
    log.info(
      {
        host: options.host,
        port: server.port,
        store: options.etcd ? options.etcd.endpoints.join(',') : options.dataDir,
        codebases: repo.list().length,
        tls: Boolean(options.tls),
      },
      options.tls
        ? 'repo serving over TLS; writes need the control plane certificate, sidecars read their own'
        : 'repo serving; anonymous access, bound to loopback',
    );
    return {
      port: server.port,
      close: async () => {
        await sync?.stop();
        await server.close();
        await etcd?.close();
      },
    };
  } catch (error) {
    await sync?.stop();
    await etcd?.close();
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

function openEtcd(options: EtcdRunOptions): EtcdStore {
  const pem = (file: string | undefined) => (file === undefined ? undefined : readFileSync(file));
  const ca = pem(options.caFile);
  const cert = pem(options.certFile);
  const key = pem(options.keyFile);
  return new EtcdStore({
    endpoints: options.endpoints,
    ...(ca || cert || key ? { tls: { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) } } : {}),
    ...(options.username !== undefined ? { auth: { username: options.username, password: readFileSync(options.passwordFile!, 'utf8').trim() } } : {}),
    ...(options.prefix !== undefined ? { prefix: options.prefix } : {}),
    timeoutMs: options.timeoutMs,
  });
}
