/*
 * `flb repo`: parses its flags and hands them to repo/runner.ts, which runs the repo.
 */
import { isIP } from 'node:net';
import { Command } from 'commander';
import { untilStopped } from '../common/cli.js';
import { UsageError } from '../common/errors.js';
import { parseDuration, parseHostPort } from '../common/duration.js';

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);
const DEFAULT_LISTEN = '127.0.0.1:6060';

export function repoCommands(): Command[] {
  return [
    new Command('repo')
      .summary('run the config center (a Pipy-Repo-compatible repo)')
      .description(
        'Serves the Pipy 1.5 repo REST API (repo/PIPY-API.md) from a durable local store: every accepted write is on disk before the answer. With --tls-cert/--tls-key it serves HTTPS; the control plane writes with a client certificate (CN flb-control-plane, from --client-ca), sidecars read the mesh codebase and their own with a ServiceAccount token (TokenReview) or a client certificate named by their sidecar id. Without TLS it listens on loopback only, and anyone there may do anything.',
      )
      .option('--listen <host:port>', 'address to listen on', DEFAULT_LISTEN)
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
          const { host, port } = parseHostPort(o.listen, '--listen', DEFAULT_LISTEN);
          const loopback = LOOPBACK.has(host) || (isIP(host) === 4 && host.startsWith('127.'));
          if (!o.tlsCert !== !o.tlsKey) throw new UsageError('give both --tls-cert and --tls-key, or neither');
          if (!o.dataDir === !o.etcdEndpoint) throw new UsageError('give exactly one of --data-dir (local disk) or --etcd-endpoint (shared by replicas)');
          if (!loopback && !o.tlsCert)
            throw new UsageError(`--listen ${o.listen}: a repo reachable from the network needs TLS and authentication (--tls-cert, --tls-key, --client-ca)`);
          const syncIntervalMs = parseDuration(o.syncInterval);
          const [{ runRepo }, { createLogger }] = await Promise.all([import('./runner.js'), import('../common/log.js')]);
          const running = await runRepo({
            host,
            port,
            ...(o.dataDir ? { dataDir: o.dataDir } : {}),
            ...(o.etcdEndpoint ? { etcdEndpoint: o.etcdEndpoint } : {}),
            syncIntervalMs,
            ...(o.tlsCert ? { tls: { certFile: o.tlsCert, keyFile: o.tlsKey!, ...(o.clientCa ? { clientCaFile: o.clientCa } : {}) } } : {}),
            tokenAudience: o.tokenAudience,
            ...(o.kubeconfig ? { kubeconfig: o.kubeconfig } : {}),
            log: createLogger('repo'),
          });
          process.stdout.write(`${running.port}\n`);
          await untilStopped();
          await running.close();
        },
      ),
  ];
}
