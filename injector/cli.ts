import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';

import { notBuiltYet, untilStopped } from '../common/cli.js';
import { INJECT_LABEL, NAMESPACE_INJECT_ENABLED } from '../common/contract/annotations.js';
import { UsageError, ActionableError } from '../common/errors.js';
import { parseDuration, parseHostPort } from '../common/duration.js';

const collect = (value: string, previous: string[]) => [...previous, value];

function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'dev';
  }
}

function injectCommand(): Command {
  return new Command('inject')
    .summary('add sidecars to Kubernetes manifests offline (for GitOps)')
    .description(
      'Injects sidecars into Pods and workloads (Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs, Lists, multi-document files) and prints the result to stdout. The same decisions as the webhook: a workload labelled flomesh.io/inject=false is left alone.',
    )
    .option('-f, --filename <file>', 'manifest file, or - for standard input', '-')
    .option('--explain', 'print why each workload would or would not be injected, instead of the manifests')
    .option('--mesh-config <file>', 'mesh config (JSON or YAML); defaults apply without one')
    .option(
      '--namespace-label <key=value>',
      `labels of the namespaces the workloads go to (default ${INJECT_LABEL}=${NAMESPACE_INJECT_ENABLED}); repeatable`,
      collect,
      [],
    )
    .addOption(new Option('--native-sidecars <bool>', 'inject the sidecar as a native sidecar (Kubernetes 1.29+)').choices(['true', 'false']).default('true'))
    .action(async (options: { filename: string; explain?: boolean; meshConfig?: string; namespaceLabel: string[]; nativeSidecars: string }) => {
      const { loadMeshConfig } = await import('../common/config.js');
      const { injectManifests, explain } = await import('./manifests.js');
      const labels: Record<string, string> = options.namespaceLabel.length ? {} : { [INJECT_LABEL]: NAMESPACE_INJECT_ENABLED };
      for (const pair of options.namespaceLabel) {
        const eq = pair.indexOf('=');
        if (eq <= 0) throw new UsageError(`--namespace-label "${pair}" is not key=value`);
        labels[pair.slice(0, eq)] = pair.slice(eq + 1);
      }
      let text: string;
      try {
        text = readFileSync(options.filename === '-' ? 0 : options.filename, 'utf8');
      } catch (error) {
        throw new ActionableError(`cannot read ${options.filename}: ${(error as Error).message}`);
      }
      const settings = { mesh: loadMeshConfig(options.meshConfig), nativeSidecars: options.nativeSidecars === 'true', version: version() };
      const { yaml, verdicts } = injectManifests(text, settings, (name) => ({ metadata: { name, labels } }));
      process.stdout.write(options.explain ? `${explain(verdicts)}\n` : yaml);
      const refused = verdicts.filter((v) => v.result.action === 'deny');
      if (refused.length) {
        if (!options.explain) process.stderr.write(`${explain(refused)}\n`);
        throw new ActionableError(`${refused.length} workload(s) would be refused by the injector`, 'fix the annotations named above');
      }
    });
}

function webhookCommand(): Command {
  const webhook = new Command('webhook')
    .summary('run the mutating admission webhook, or install its configuration')
    .description('The sidecar injector: `serve` runs it, `install`/`uninstall` own the MutatingWebhookConfiguration.');

  webhook
    .command('serve')
    .description('Serve AdmissionReviews over HTTPS; make, store (in a Secret) and renew its certificates; keep the caBundle current.')
    .option('--listen <host:port>', 'HTTPS address', '0.0.0.0:9443')
    .option('--metrics-listen <host:port>', 'Prometheus /metrics address (plain HTTP)', '0.0.0.0:15010')
    .option('--kubeconfig <file>', 'kubeconfig (default: $KUBECONFIG, ~/.kube/config, or in-cluster)')
    .option('--mesh-config <file>', 'mesh config (JSON or YAML)')
    .option('--namespace <ns>', "the mesh's namespace (holds the certificate Secret; never injected)", 'flomesh')
    .option('--secret <name>', 'Secret that holds the CA and serving certificate', 'flb-injector-tls')
    .option('--config-name <name>', 'MutatingWebhookConfiguration whose caBundle is kept current', 'flb-sidecar-injector')
    .option('--dns-name <name>', 'DNS name in the serving certificate; repeatable (default: the Service names)', collect, [])
    .option('--ip <address>', 'IP address in the serving certificate; repeatable', collect, [])
    .option('--service-name <name>', 'the injector Service, for the default DNS names', 'flb-injector')
    .option('--cert-validity <duration>', 'serving certificate lifetime; renewed with a third left', '2160h')
    .option('--ca-validity <duration>', 'CA lifetime', '87600h')
    .addOption(new Option('--native-sidecars <mode>', 'inject native sidecars').choices(['auto', 'true', 'false']).default('auto'))
    .action(async (o: Record<string, string> & { dnsName: string[]; ip: string[] }) => {
      const [{ loadMeshConfig }, { loadKubeConfig, supportsNativeSidecars }, { createLogger }, { runInjector }] = await Promise.all([
        import('../common/config.js'),
        import('../common/kube.js'),
        import('../common/log.js'),
        import('./webhook.js'),
      ]);
      const log = createLogger('injector');
      const listen = parseHostPort(o.listen!, '--listen');
      const metricsListen = parseHostPort(o.metricsListen!, '--metrics-listen');
      const kubeConfig = loadKubeConfig(o.kubeconfig);
      const mesh = loadMeshConfig(o.meshConfig);
      const nativeSidecars = o.nativeSidecars === 'auto' ? await supportsNativeSidecars(kubeConfig) : o.nativeSidecars === 'true';
      const svc = o.serviceName!;
      const ns = o.namespace!;
      const dnsNames = o.dnsName.length ? o.dnsName : [`${svc}.${ns}.svc`, `${svc}.${ns}.svc.cluster.local`, `${svc}.${ns}`, svc];
      const injector = await runInjector({
        kubeConfig,
        settings: { mesh, nativeSidecars, version: version() },
        host: listen.host,
        port: listen.port,
        metricsHost: metricsListen.host,
        metricsPort: metricsListen.port,
        secret: { namespace: ns, name: o.secret! },
        webhookConfigName: o.configName!,
        certs: { dnsNames, ipAddresses: o.ip, certValidityMs: parseDuration(o.certValidity!), caValidityMs: parseDuration(o.caValidity!) },
        log,
      });
      await untilStopped();
      log.info('shutting down');
      await injector.stop();
    });

  webhook
    .command('install')
    .description('Create or update the MutatingWebhookConfiguration (two entries: labelled namespaces, and pods labelled "true").')
    .option('--url <url>', 'reach the injector at this URL (outside a cluster, tests)')
    .option('--service <ns/name[:port]>', 'reach the injector through this Service')
    .addOption(
      new Option('--failure-policy <policy>', 'Fail refuses pods while the injector is down; Ignore lets them start without a sidecar')
        .choices(['Fail', 'Ignore'])
        .default('Fail'),
    )
    .option('--timeout-seconds <n>', 'how long the apiserver waits for the injector (1-30)', '10')
    .option('--namespace <ns>', "the mesh's namespace (never injected; holds the certificate Secret)", 'flomesh')
    .option('--secret <name>', 'Secret whose CA goes into the caBundle, when it exists already', 'flb-injector-tls')
    .option('--config-name <name>', 'name of the MutatingWebhookConfiguration', 'flb-sidecar-injector')
    .option('--kubeconfig <file>', 'kubeconfig')
    .option('--print', 'print the configuration as YAML instead of applying it')
    .action(
      async (o: {
        url?: string;
        service?: string;
        failurePolicy: 'Fail' | 'Ignore';
        timeoutSeconds: string;
        namespace: string;
        secret: string;
        configName: string;
        kubeconfig?: string;
        print?: boolean;
      }) => {
        if (!o.url === !o.service) throw new UsageError('give exactly one of --url or --service');
        const timeout = Number(o.timeoutSeconds);
        if (!Number.isInteger(timeout) || timeout < 1 || timeout > 30) throw new UsageError('--timeout-seconds must be an integer from 1 to 30');
        let service: { namespace: string; name: string; port?: number } | undefined;
        if (o.service) {
          const m = /^([a-z0-9-]+)\/([a-z0-9-]+)(?::(\d+))?$/.exec(o.service);
          if (!m) throw new UsageError(`--service "${o.service}" is not NAMESPACE/NAME[:PORT]`);
          service = { namespace: m[1]!, name: m[2]!, ...(m[3] ? { port: Number(m[3]) } : {}) };
        }
        const [{ loadKubeConfig }, { webhookConfiguration, installWebhookConfiguration }, { SecretCertStore, caBundle }, { createLogger }] = await Promise.all([
          import('../common/kube.js'),
          import('./webhook-config.js'),
          import('./certs.js'),
          import('../common/log.js'),
        ]);
        const kubeConfig = o.print ? undefined : loadKubeConfig(o.kubeconfig);
        const existing = kubeConfig ? (await new SecretCertStore(kubeConfig, o.namespace, o.secret).read()).material : undefined;
        const config = webhookConfiguration({
          name: o.configName,
          ...(o.url ? { url: o.url } : {}),
          ...(service ? { service } : {}),
          failurePolicy: o.failurePolicy,
          timeoutSeconds: timeout,
          meshNamespace: o.namespace,
          ...(existing ? { caBundlePem: caBundle(existing) } : {}),
        });
        if (o.print) {
          const { default: YAML } = await import('yaml');
          process.stdout.write(YAML.stringify(config, { lineWidth: 0 }));
          return;
        }
        const what = await installWebhookConfiguration(kubeConfig!, config);
        createLogger('injector').info({ config: o.configName, failurePolicy: o.failurePolicy }, `MutatingWebhookConfiguration ${what}`);
      },
    );

  webhook
    .command('uninstall')
    .description('Delete the MutatingWebhookConfiguration.')
    .option('--config-name <name>', 'name of the MutatingWebhookConfiguration', 'flb-sidecar-injector')
    .option('--kubeconfig <file>', 'kubeconfig')
    .action(async (o: { configName: string; kubeconfig?: string }) => {
      const [{ loadKubeConfig }, { uninstallWebhookConfiguration }] = await Promise.all([import('../common/kube.js'), import('./webhook-config.js')]);
      const deleted = await uninstallWebhookConfiguration(loadKubeConfig(o.kubeconfig), o.configName);
      process.stderr.write(deleted ? `deleted ${o.configName}\n` : `${o.configName} was not installed\n`);
    });
  return webhook;
}

export function injectorCommands(): Command[] {
  return [
    injectCommand(),
    webhookCommand(),
    notBuiltYet(
      new Command('vm')
        .summary('install, check or remove the sidecar on a plain VM')
        .description('Installs the same sidecar on a VM, with iptables or eBPF interception, registered with the repo.'),
      'the VM installer, a later issue',
    ),
  ];
}
