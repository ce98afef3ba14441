// `flb inject` and `flb webhook`: options parsed and checked here, the work done by runner.ts.
import { Command, Option } from 'commander';

import { notBuiltYet } from '../common/cli.js';
import { INJECT_LABEL, NAMESPACE_INJECT_ENABLED } from '../common/contract/annotations.js';
import { UsageError } from '../common/errors.js';
import { parseDuration, parseHostPort } from '../common/duration.js';

const collect = (value: string, previous: string[]) => [...previous, value];

/** What only the injector's own certificates use: meaningless with a certificate from --tls-dir. */
const CERTIFICATE_MAKING_OPTIONS = ['secret', 'configName', 'dnsName', 'ip', 'certValidity', 'caValidity'];

/** `NAMESPACE/NAME[:KEY]` of a ConfigMap, as Kubernetes names them; no key: the runner's default. */
export function parseConfigMapRef(text: string, flag: string): { namespace: string; name: string; key?: string } {
  const match = /^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)\/([a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?)(?::([-._a-zA-Z0-9]{1,253}))?$/.exec(text);
  if (!match) throw new UsageError(`${flag} "${text}" is not NAMESPACE/NAME[:KEY] of a ConfigMap (e.g. flomesh/flb-mesh, or flomesh/flb-mesh:mesh.yaml)`);
  return { namespace: match[1]!, name: match[3]!, ...(match[5] ? { key: match[5] } : {}) };
}

function injectCommand(): Command {
  return new Command('inject')
    .summary('add sidecars to Kubernetes manifests offline (for GitOps)')
    .description(
      `Injects sidecars into Pods and workloads (Deployments, StatefulSets, DaemonSets, ReplicaSets, ReplicationControllers, PodTemplates, Jobs, CronJobs, Argo Rollouts; Lists; multi-document files) and prints the result to stdout; warnings (such as a Pod Security level that rejects the init container) go to stderr. The same decisions as the webhook: the pod template's label ${INJECT_LABEL}=true opts a workload in anywhere, "false" opts it out; in a namespace labelled ${INJECT_LABEL}=${NAMESPACE_INJECT_ENABLED} every workload is injected. The annotation of the same name can opt out but never in (the webhook selects pods by label).`,
    )
    .option('-f, --filename <path>', 'manifest file, folder (its .yaml, .yml and .json files, in name order) or - (standard input); repeatable', collect, [])
    .option('-R, --recursive', 'read the subfolders of folders given with -f too')
    .option('--explain', 'print why each workload would or would not be injected, instead of the manifests')
    .option('--mesh-config <file>', 'mesh config (JSON or YAML); defaults apply without one')
    .option(
      '--namespace-label <key=value>',
      `labels of the namespaces the workloads go to (default ${INJECT_LABEL}=${NAMESPACE_INJECT_ENABLED}); repeatable`,
      collect,
      [],
    )
    .addOption(new Option('--native-sidecars <bool>', 'inject the sidecar as a native sidecar (Kubernetes 1.29+)').choices(['true', 'false']).default('true'))
    .action(
      async (options: {
        filename: string[];
        recursive?: boolean;
        explain?: boolean;
        meshConfig?: string;
        namespaceLabel: string[];
        nativeSidecars: string;
      }) => {
        const namespaceLabels: Record<string, string> = options.namespaceLabel.length ? {} : { [INJECT_LABEL]: NAMESPACE_INJECT_ENABLED };
        for (const pair of options.namespaceLabel) {
          const eq = pair.indexOf('=');
          if (eq <= 0) throw new UsageError(`--namespace-label "${pair}" is not key=value`);
          namespaceLabels[pair.slice(0, eq)] = pair.slice(eq + 1);
        }
        const { injectManifestFiles } = await import('./manifests-runner.js');
        injectManifestFiles({
          inputs: options.filename.length ? options.filename : ['-'],
          recursive: Boolean(options.recursive),
          explain: Boolean(options.explain),
          ...(options.meshConfig ? { meshConfig: options.meshConfig } : {}),
          namespaceLabels,
          nativeSidecars: options.nativeSidecars === 'true',
        });
      },
    );
}

function webhookCommand(): Command {
  const webhook = new Command('webhook')
    .summary('run the mutating admission webhook, or install its configuration')
    .description('The sidecar injector: `serve` runs it, `install`/`uninstall` own the MutatingWebhookConfiguration.');

  webhook
    .command('serve')
    .description(
      'Serve AdmissionReviews over HTTPS; make, store (in a Secret) and renew its certificates and keep the caBundle current, or with --tls-dir serve the certificate in a mounted Secret (cert-manager) and leave the caBundle to its CA injector.',
    )
    .option('--listen <host:port>', 'HTTPS address', '0.0.0.0:9443')
    .option('--metrics-listen <host:port>', 'Prometheus /metrics address (plain HTTP)', '0.0.0.0:15010')
    .option('--kubeconfig <file>', 'kubeconfig (default: $KUBECONFIG, ~/.kube/config, or in-cluster)')
    .option('--mesh-config <file>', 'mesh settings file (JSON or YAML), read at start: for offline and VM use')
    .option(
      '--mesh-configmap <ns/name[:key]>',
      'mesh settings from this ConfigMap (key mesh.yaml unless given), the one the registry bridge reads: edits apply to the next pod; a bad edit keeps the last good settings, with an Event on the ConfigMap; until good settings are read, reviews get 503 and the failurePolicy decides',
    )
    .option('--namespace <ns>', "the mesh's namespace (holds the certificate Secret; never injected)", 'flomesh')
    .addOption(
      new Option(
        '--tls-dir <dir>',
        "serve tls.crt and tls.key from this folder (a mounted Secret, e.g. one cert-manager issues), reloaded when they change; the injector then makes no certificate and leaves the caBundle to cert-manager's CA injector",
      ).conflicts(CERTIFICATE_MAKING_OPTIONS),
    )
    .option('--secret <name>', 'Secret that holds the CA and serving certificate', 'flb-injector-tls')
    .option('--config-name <name>', 'MutatingWebhookConfiguration whose caBundle is kept current', 'flb-sidecar-injector')
    .option('--dns-name <name>', 'DNS name in the serving certificate; repeatable (default: the Service names)', collect, [])
    .option('--ip <address>', 'IP address in the serving certificate; repeatable', collect, [])
    .option('--service-name <name>', 'the injector Service, for the default DNS names', 'flb-injector')
    .option('--cert-validity <duration>', 'serving certificate lifetime; renewed with a third left', '2160h')
    .option('--ca-validity <duration>', 'CA lifetime', '87600h')
    .addOption(new Option('--native-sidecars <mode>', 'inject native sidecars').choices(['auto', 'true', 'false']).default('auto'))
    .action(async (o: Record<string, string> & { dnsName: string[]; ip: string[] }) => {
      const listen = parseHostPort(o.listen!, '--listen');
      const metricsListen = parseHostPort(o.metricsListen!, '--metrics-listen');
      const svc = o.serviceName!;
      const ns = o.namespace!;
      if (o.meshConfig && o.meshConfigmap)
        throw new UsageError('give --mesh-config (a file, for offline and VM use) or --mesh-configmap (the ConfigMap the registry bridge reads), not both');
      const meshConfigMap = o.meshConfigmap === undefined ? undefined : parseConfigMapRef(o.meshConfigmap, '--mesh-configmap');
      const { serveWebhook } = await import('./runner.js');
      const certificates = o.tlsDir
        ? { tlsDir: o.tlsDir }
        : {
            secret: { namespace: ns, name: o.secret! },
            webhookConfigName: o.configName!,
            certs: {
              dnsNames: o.dnsName.length ? o.dnsName : [`${svc}.${ns}.svc`, `${svc}.${ns}.svc.cluster.local`, `${svc}.${ns}`, svc],
              ipAddresses: o.ip,
              certValidityMs: parseDuration(o.certValidity!),
              caValidityMs: parseDuration(o.caValidity!),
            },
          };
      await serveWebhook({
        ...(o.kubeconfig ? { kubeconfig: o.kubeconfig } : {}),
        ...(o.meshConfig ? { meshConfig: o.meshConfig } : {}),
        ...(meshConfigMap ? { meshConfigMap } : {}),
        nativeSidecars: o.nativeSidecars as 'auto' | 'true' | 'false',
        host: listen.host,
        port: listen.port,
        metricsHost: metricsListen.host,
        metricsPort: metricsListen.port,
        ...certificates,
      });
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
    .option(
      '--cert-manager-certificate <ns/name>',
      "the cert-manager Certificate the injector serves (flb webhook serve --tls-dir): cert-manager's CA injector sets the caBundle from it",
    )
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
        certManagerCertificate?: string;
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
        let certManagerCertificate: { namespace: string; name: string } | undefined;
        if (o.certManagerCertificate !== undefined) {
          const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-.a-z0-9]*[a-z0-9])?)$/.exec(o.certManagerCertificate);
          if (!m) throw new UsageError(`--cert-manager-certificate "${o.certManagerCertificate}" is not NAMESPACE/NAME of a cert-manager Certificate`);
          certManagerCertificate = { namespace: m[1]!, name: m[3]! };
        }
        const [{ loadKubeConfig }, { createLogger }, { installWebhook }] = await Promise.all([
          import('../common/kube.js'),
          import('../common/log.js'),
          import('./runner.js'),
        ]);
        await installWebhook(
          {
            name: o.configName,
            ...(o.url ? { url: o.url } : {}),
            ...(service ? { service } : {}),
            failurePolicy: o.failurePolicy,
            timeoutSeconds: timeout,
            meshNamespace: o.namespace,
            secret: o.secret,
            ...(certManagerCertificate ? { certManagerCertificate } : {}),
            ...(o.print ? { print: true } : { kubeConfig: loadKubeConfig(o.kubeconfig) }),
          },
          createLogger('injector'),
        );
      },
    );

  webhook
    .command('uninstall')
    .description('Delete the MutatingWebhookConfiguration.')
    .option('--config-name <name>', 'name of the MutatingWebhookConfiguration', 'flb-sidecar-injector')
    .option('--kubeconfig <file>', 'kubeconfig')
    .action(async (o: { configName: string; kubeconfig?: string }) => {
      const [{ loadKubeConfig }, { uninstallWebhook }] = await Promise.all([import('../common/kube.js'), import('./runner.js')]);
      await uninstallWebhook(loadKubeConfig(o.kubeconfig), o.configName);
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
