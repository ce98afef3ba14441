import { isIP } from 'node:net';
import { Command } from 'commander';
import { untilStopped } from '../common/cli.js';
import { UsageError } from '../common/errors.js';
import { parseHostPort } from '../common/duration.js';
import type { KubeConfig } from '@kubernetes/client-node';
import type { WriteStep } from './store/disk.js';

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export function repoCommands(): Command[] {
  return [
    new Command('repo')
      .summary('run the config center (a Pipy-Repo-compatible repo)')
      .description(
        'Serves the Pipy 1.5 repo REST API (repo/PIPY-API.md) from a durable local store: every accepted write is on disk before the answer. With --tls-cert/--tls-key it serves HTTPS; the control plane writes with a client certificate (CN flb-control-plane, from --client-ca), sidecars read the mesh codebase and their own with a ServiceAccount token (TokenReview) or a client certificate named by their sidecar id. Without TLS it listens on loopback only, and anyone there may do anything.',
      )
      .option('--listen <host:port>', 'address to listen on', '127.0.0.1:6060')
      .option('--data-dir <dir>', 'where codebases are kept (the disk store)')
      .option('--etcd-endpoint <url>', 'keep codebases in etcd instead (several replicas serve the same data), e.g. http://etcd:2379')
      .option('--sync-interval <duration>', "with etcd: how often to take in the other replicas' writes", '500ms')
      .option('--tls-cert <file>', 'serving certificate (PEM)')
      .option('--tls-key <file>', 'serving key (PEM)')
      .option('--client-ca <file>', 'CA of client certificates (control plane, VMs, Pipy workers)')
      .option('--token-audience <aud>', 'audience of sidecar ServiceAccount tokens (checked by TokenReview)', 'flb-repo')
      .option('--kubeconfig <file>', 'for TokenReview (default: $KUBECONFIG, ~/.kube/config, or in-cluster); without a cluster tokens are refused')
      .action(
        async (o: {
          listen: string;
          dataDir?: string;
          etcdEndpoint?: string;
          syncInterval: string;
          tlsCert?: string;
          tlsKey?: string;
          clientCa?: string;
          tokenAudience: string;
          kubeconfig?: string;
        }) => {
          const { host, port } = parseHostPort(o.listen, '--listen');
          const loopback = LOOPBACK.has(host) || (isIP(host) === 4 && host.startsWith('127.'));
          if (!o.tlsCert !== !o.tlsKey) throw new UsageError('give both --tls-cert and --tls-key, or neither');
          if (!o.dataDir === !o.etcdEndpoint) throw new UsageError('give exactly one of --data-dir (local disk) or --etcd-endpoint (shared by replicas)');
          if (!loopback && !o.tlsCert)
            throw new UsageError(`--listen ${o.listen}: a repo reachable from the network needs TLS and authentication (--tls-cert, --tls-key, --client-ca)`);
          const [{ DiskStore }, { Repo }, { startRepoServer }, { createLogger }] = await Promise.all([
            import('./store/disk.js'),
            import('./repo.js'),
            import('./server.js'),
            import('../common/log.js'),
          ]);
          const log = createLogger('repo');
          // Tests only: FLB_REPO_CRASH_AFTER=<step>[:<nth write>] kills the process inside the write path.
          const [crashAfter, occurrence] = (process.env.FLB_REPO_CRASH_AFTER ?? '').split(':');
          const { EtcdStore } = await import('./store/etcd.js');
          const etcd = o.etcdEndpoint ? new EtcdStore(o.etcdEndpoint) : undefined;
          const store =
            etcd ??
            (await new DiskStore(o.dataDir!, crashAfter ? { crashAfter: crashAfter as WriteStep, occurrence: Number(occurrence ?? 1) } : undefined).init());
          const repo = await new Repo(store).load();
          let syncTimer: NodeJS.Timeout | undefined;
          if (etcd) {
            const { parseDuration } = await import('../common/duration.js');
            let seen = await etcd.revision();
            let syncing = false;
            syncTimer = setInterval(() => {
              if (syncing) return;
              syncing = true;
              void (async () => {
                const revision = await etcd.revision();
                if (revision !== seen) {
                  seen = revision;
                  await repo.refresh();
                }
              })()
                .catch((error: unknown) => log.warn({ err: error }, 'cannot reach etcd; serving what this replica has'))
                .finally(() => (syncing = false));
            }, parseDuration(o.syncInterval));
          }
          const { readFileSync } = await import('node:fs');
          const { Authenticator } = await import('./auth.js');
          const secured = Boolean(o.tlsCert);
          let tokenReview: { kubeConfig: KubeConfig; audience: string } | undefined;
          if (secured) {
            try {
              const { loadKubeConfig } = await import('../common/kube.js');
              tokenReview = { kubeConfig: loadKubeConfig(o.kubeconfig), audience: o.tokenAudience };
            } catch (error) {
              log.warn({ err: error }, 'no Kubernetes API for TokenReview: ServiceAccount tokens will be refused');
            }
          }
          const server = await startRepoServer({
            repo,
            host,
            port,
            log,
            ...(secured
              ? {
                  tls: {
                    cert: readFileSync(o.tlsCert!, 'utf8'),
                    key: readFileSync(o.tlsKey!, 'utf8'),
                    ...(o.clientCa ? { ca: readFileSync(o.clientCa, 'utf8') } : {}),
                  },
                }
              : {}),
            auth: new Authenticator({ trustAnonymous: !secured, ...(tokenReview ? { tokenReview } : {}) }),
          });
          log.info(
            { host, port: server.port, store: etcd ? o.etcdEndpoint : o.dataDir, codebases: repo.list().length, tls: secured },
            secured
              ? 'repo serving over TLS; writes need the control plane certificate, sidecars read their own'
              : 'repo serving; anonymous access, bound to loopback',
          );
          process.stdout.write(`${server.port}\n`);
          await untilStopped();
          clearInterval(syncTimer);
          await server.close();
        },
      ),
  ];
}
