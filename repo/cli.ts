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
      .option(
        '--etcd-endpoint <url>',
        "keep codebases in etcd instead (several replicas serve the same data and watch each other's writes), e.g. https://etcd-0:2379; repeat it or separate with commas for every member (calls fail over)",
        (value: string, previous: string[] = []) => [
          ...previous,
          ...value
            .split(',')
            .map((v) => v.trim())
            .filter(Boolean),
        ],
      )
      .option('--etcd-ca <file>', "CA of etcd's serving certificates (PEM; default: the system's)")
      .option('--etcd-cert <file>', 'client certificate for etcd (PEM)')
      .option('--etcd-key <file>', 'client key for etcd (PEM)')
      .option('--etcd-username <name>', "etcd user (etcd's own authentication); with --etcd-password-file")
      .option('--etcd-password-file <file>', "file holding the etcd user's password")
      .option('--etcd-prefix <prefix>', 'where in etcd the repo keeps its keys', 'flb-repo/')
      .option('--etcd-timeout <duration>', 'longest an etcd call may take before a write is answered 503', '5s')
      .option('--tls-cert <file>', 'serving certificate (PEM)')
      .option('--tls-key <file>', 'serving key (PEM)')
      .option('--client-ca <file>', 'CA of client certificates (control plane, VMs, Pipy workers)')
      .option('--token-audience <aud>', 'audience of sidecar ServiceAccount tokens (checked by TokenReview)', 'flb-repo')
      .option('--kubeconfig <file>', 'for TokenReview (default: $KUBECONFIG, ~/.kube/config, or in-cluster); without a cluster tokens are refused')
      .action(
        async (o: {
          listen: string;
          dataDir?: string;
          etcdEndpoint?: string[];
          etcdCa?: string;
          etcdCert?: string;
          etcdKey?: string;
          etcdUsername?: string;
          etcdPasswordFile?: string;
          etcdPrefix: string;
          etcdTimeout: string;
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
          if (!o.etcdCert !== !o.etcdKey) throw new UsageError('give both --etcd-cert and --etcd-key, or neither');
          if (!o.etcdUsername !== !o.etcdPasswordFile) throw new UsageError('give both --etcd-username and --etcd-password-file, or neither');
          if (!o.etcdEndpoint && (o.etcdCa || o.etcdCert || o.etcdUsername))
            throw new UsageError('--etcd-ca, --etcd-cert and --etcd-username need --etcd-endpoint');
          for (const endpoint of o.etcdEndpoint ?? []) {
            if (!/^https?:\/\/[^/]+\/?$/.test(endpoint)) throw new UsageError(`--etcd-endpoint ${endpoint}: expected http(s)://HOST:PORT`);
          }
          const etcdTimeoutMs = parseDuration(o.etcdTimeout);
          const [{ runRepo }, { createLogger }] = await Promise.all([import('./runner.js'), import('../common/log.js')]);
          const running = await runRepo({
            host,
            port,
            ...(o.dataDir ? { dataDir: o.dataDir } : {}),
            ...(o.etcdEndpoint
              ? {
                  etcd: {
                    endpoints: o.etcdEndpoint.map((endpoint) => endpoint.replace(/\/$/, '')),
                    ...(o.etcdCa ? { caFile: o.etcdCa } : {}),
                    ...(o.etcdCert ? { certFile: o.etcdCert, keyFile: o.etcdKey! } : {}),
                    ...(o.etcdUsername ? { username: o.etcdUsername, passwordFile: o.etcdPasswordFile! } : {}),
                    prefix: o.etcdPrefix,
                    timeoutMs: etcdTimeoutMs,
                  },
                }
              : {}),
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
