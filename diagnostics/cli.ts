// `flb check`, `flb proxy-status`, `flb proxy-config`, `flb validate`, `flb completion`: flags
// parsed and checked here, the work done by runner.ts.
import { Argument, Command, Option } from 'commander';
import { UsageError } from '../common/errors.js';
import { parseDuration } from '../common/duration.js';

const collect = (value: string, previous: string[]) => [...previous, value];

interface LocationFlags {
  kubeconfig?: string;
  meshNamespace: string;
  meshConfigmap?: string;
  repoUrl?: string;
  repoCaFile?: string;
  repoCertFile?: string;
  repoKeyFile?: string;
  repoTlsServerName?: string;
  repoClientSecret: string;
  output: 'table' | 'json';
}

/** `NAMESPACE/NAME[:KEY]` of a ConfigMap; no key: mesh.yaml. */
export function parseConfigMapRef(text: string, flag: string): { namespace: string; name: string; key: string } {
  const match = /^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)\/([a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?)(?::([-._a-zA-Z0-9]{1,253}))?$/.exec(text);
  if (!match) throw new UsageError(`${flag} "${text}" is not NAMESPACE/NAME[:KEY] of a ConfigMap (e.g. flomesh/flb-mesh, or flomesh/flb-mesh:mesh.yaml)`);
  return { namespace: match[1]!, name: match[3]!, key: match[5] ?? 'mesh.yaml' };
}

function parseUrl(text: string, flag: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`${flag} "${text}" is not a URL (e.g. https://10.0.0.5:6060)`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new UsageError(`${flag} "${text}" is not an http:// or https:// URL`);
  return text;
}

function withLocation(command: Command): Command {
  return command
    .option('--kubeconfig <file>', 'kubeconfig (default: $KUBECONFIG, ~/.kube/config, or in-cluster)')
    .option('--mesh-namespace <ns>', "the mesh's namespace (the control plane's)", 'flomesh')
    .option('--mesh-configmap <ns/name[:key]>', 'the mesh settings ConfigMap (default: <mesh-namespace>/flb-mesh:mesh.yaml)')
    .option('--repo-url <url>', "the repo's address (default: repo.url of the mesh settings, the name pods use)")
    .option('--repo-ca-file <file>', "PEM file of the repo's CA (default: ca.crt of the client Secret)")
    .option('--repo-cert-file <file>', 'client certificate (CN flb-control-plane) the repo reads everything for (default: tls.crt of the client Secret)')
    .option('--repo-key-file <file>', "that certificate's key (default: tls.key of the client Secret)")
    .option(
      '--repo-tls-server-name <name>',
      "the name the repo's certificate is checked for, when --repo-url's host is an address it does not name (a pod IP, a port-forward)",
    )
    .option('--repo-client-secret <name>', "Secret in the mesh's namespace with the control plane's client certificate", 'flb-repo-client')
    .addOption(new Option('-o, --output <format>', 'table or json').choices(['table', 'json']).default('table'));
}

function location(flags: LocationFlags) {
  if (flags.repoUrl) parseUrl(flags.repoUrl, '--repo-url');
  if ((flags.repoCertFile === undefined) !== (flags.repoKeyFile === undefined)) throw new UsageError('--repo-cert-file and --repo-key-file go together');
  return {
    ...(flags.kubeconfig ? { kubeconfig: flags.kubeconfig } : {}),
    namespace: flags.meshNamespace,
    meshConfigMap: flags.meshConfigmap
      ? parseConfigMapRef(flags.meshConfigmap, '--mesh-configmap')
      : { namespace: flags.meshNamespace, name: 'flb-mesh', key: 'mesh.yaml' },
    repo: {
      ...(flags.repoUrl ? { url: flags.repoUrl } : {}),
      ...(flags.repoCaFile ? { caFile: flags.repoCaFile } : {}),
      ...(flags.repoCertFile ? { certFile: flags.repoCertFile } : {}),
      ...(flags.repoKeyFile ? { keyFile: flags.repoKeyFile } : {}),
      ...(flags.repoTlsServerName ? { tlsServerName: flags.repoTlsServerName } : {}),
      clientSecret: flags.repoClientSecret,
    },
  };
}

function positiveDuration(text: string, flag: string): number {
  const ms = parseDuration(text);
  if (ms <= 0) throw new UsageError(`${flag} must be more than 0`);
  return ms;
}

function checkCommand(): Command {
  return withLocation(
    new Command('check')
      .summary('check that the mesh is installed and working, and say how to fix what is not')
      .description(
        'Checks, each with how to fix it when it fails: the Kubernetes API and native sidecar support; the mesh settings; the webhook configuration, its Service, a server-side dry-run pod (is it injected?) and its caBundle; the repo over TLS; the bridge leader (its Lease) and its sources; the CNI node agent when the mesh uses CNI interception; sidecars that have not reported. Exit 1 when any check fails. --pre-install checks what an install needs instead.',
      ),
  )
    .option('--pre-install', 'before installing: the Kubernetes version, the APIs the mesh uses, your permission to install, an existing install')
    .option('--webhook-config <name>', 'the MutatingWebhookConfiguration', 'flb-sidecar-injector')
    .option(
      '--injector-secret <name>',
      "the Secret (in the mesh's namespace) with the injector's CA and serving certificate (default: flb-injector-tls, or with cert-manager the Secret of the Certificate the webhook configuration names)",
    )
    .option('--probe-namespace <ns>', 'where the dry-run pod goes (default: the first namespace labelled flomesh.io/inject=enabled, else default)')
    .option(
      '--bridge-url <url>',
      "a bridge's admin address (flb bridge run --admin), repeatable; default: the leader's pod, through the apiserver's proxy",
      collect,
      [],
    )
    .option('--bridge-admin-port <port>', "the bridge pods' admin port (the chart's bridge.adminPort)", '15020')
    .option('--lease <name>', "the bridge's Lease (in the mesh's namespace)", 'flb-bridge')
    .option('--stale-after <duration>', 'a sidecar silent this long is not reporting (they report every 5 s)', '30s')
    .action(
      async (
        flags: LocationFlags & {
          preInstall?: boolean;
          webhookConfig: string;
          injectorSecret?: string;
          probeNamespace?: string;
          bridgeUrl: string[];
          bridgeAdminPort: string;
          lease: string;
          staleAfter: string;
        },
      ) => {
        const port = Number(flags.bridgeAdminPort);
        if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`--bridge-admin-port "${flags.bridgeAdminPort}" is not a port (1-65535)`);
        for (const url of flags.bridgeUrl) parseUrl(url, '--bridge-url');
        const options = {
          ...location(flags),
          preInstall: Boolean(flags.preInstall),
          webhookConfig: flags.webhookConfig,
          ...(flags.injectorSecret !== undefined ? { injectorSecret: flags.injectorSecret } : {}),
          ...(flags.probeNamespace ? { probeNamespace: flags.probeNamespace } : {}),
          bridgeUrls: flags.bridgeUrl,
          bridgeAdminPort: port,
          lease: flags.lease,
          staleAfterMs: positiveDuration(flags.staleAfter, '--stale-after'),
          output: flags.output,
        };
        const { runCheck } = await import('./runner.js');
        await runCheck(options);
      },
    );
}

function proxyStatusCommand(): Command {
  return withLocation(
    new Command('proxy-status')
      .summary('every sidecar: the configuration version it applied against the latest, refused files, its last report')
      .description(
        'Every sidecar the repo has a codebase for, and every injected pod it has none for: the version it applied against the latest published, files it refused and why, and when it last reported. Read from the status reports sidecars post to the repo (kept for a minute), not from their admin ports.',
      ),
  )
    .option('--stale-after <duration>', 'a sidecar silent this long is SILENT (they report every 5 s)', '30s')
    .action(async (flags: LocationFlags & { staleAfter: string }) => {
      const options = { ...location(flags), staleAfterMs: positiveDuration(flags.staleAfter, '--stale-after'), output: flags.output };
      const { runProxyStatus } = await import('./runner.js');
      await runProxyStatus(options);
    });
}

function proxyConfigCommand(): Command {
  return withLocation(
    new Command('proxy-config')
      .summary('one sidecar: its services, endpoints with health, listeners and ports')
      .description(
        "What one sidecar is told, from its codebase in the repo, with the version it reports applied: the services it may reach (hostnames, VIPs, ports, balancing), their endpoints with the registry's health, its listeners and ports, inbound ports and probes, DNS records. The target is a pod (NAME with -n, NAMESPACE/NAME, or pod.NAMESPACE.NAME) or a VM (vm/NAME, vm.NAME).",
      )
      .addArgument(new Argument('<pod|vm>', 'the sidecar: NAME (with -n), NAMESPACE/NAME, pod.NAMESPACE.NAME, vm/NAME or vm.NAME')),
  )
    .option('-n, --namespace <ns>', "the pod's namespace, for a bare NAME", 'default')
    .action(async (target: string, flags: LocationFlags & { namespace: string }) => {
      const options = { ...location(flags), target, podNamespace: flags.namespace, output: flags.output };
      const { runProxyConfig } = await import('./runner.js');
      await runProxyConfig(options);
    });
}

function validateCommand(): Command {
  return new Command('validate')
    .summary('check contract documents, mesh settings and BridgeConfigs, naming every bad field')
    .description(
      'Checks every document in the files given (YAML or JSON, several per file) against the contract: Mesh (mesh.json, mesh.yaml), Service (catalog files), Sidecar (sidecar.json), BridgeConfig, the interception settings, and ConfigMaps holding them. Every problem is named by its field and line; exit 1 when any document has one. Services are checked against the VIP ranges of a Mesh given alongside.',
    )
    .option('-f, --filename <path>', 'file, folder (its .yaml, .yml and .json files, in name order) or - (standard input); repeatable', collect, [])
    .option('-R, --recursive', 'read the subfolders of folders given with -f too')
    .addOption(new Option('-o, --output <format>', 'table or json').choices(['table', 'json']).default('table'))
    .action(async (flags: { filename: string[]; recursive?: boolean; output: 'table' | 'json' }) => {
      if (!flags.filename.length) throw new UsageError('say what to validate with -f FILE|DIR (or -f - for standard input)');
      const { runValidate } = await import('./runner.js');
      runValidate({ inputs: flags.filename, recursive: Boolean(flags.recursive), output: flags.output });
    });
}

function completionCommand(): Command {
  return new Command('completion')
    .summary('shell completion for flb (bash or zsh)')
    .description(
      'Prints a completion script for every flb subcommand and flag. bash: source <(flb completion bash), or write it to /etc/bash_completion.d/flb. zsh: source <(flb completion zsh), or write it as _flb into a folder of $fpath.',
    )
    .addArgument(new Argument('<shell>', 'the shell').choices(['bash', 'zsh']))
    .action(async (shell: 'bash' | 'zsh', _flags: unknown, command: Command) => {
      let root = command;
      while (root.parent) root = root.parent;
      const { printCompletion } = await import('./runner.js');
      printCompletion(shell, root);
    });
}

export function diagnosticsCommands(): Command[] {
  return [checkCommand(), proxyStatusCommand(), proxyConfigCommand(), validateCommand(), completionCommand()];
}
