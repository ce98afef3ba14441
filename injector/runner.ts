// The webhook's runner, between cli.ts (which only parses) and the pure parts: `flb webhook serve`
// (certificates, caBundle, namespace cache, HTTPS and metrics servers, rotation) and `flb webhook
// install|uninstall`. `flb inject` has its own (manifests-runner.ts), which loads no Kubernetes
// client: half a second of start-up for a command run once per manifest in a pipeline.
import type { KubeConfig } from '@kubernetes/client-node';
import YAML from 'yaml';
import { untilStopped } from '../common/cli.js';
import { loadMeshConfig } from '../common/config.js';
import type { Mesh } from '../common/contract/index.js';
import { FLB_MESH_VERSION } from '../common/contract/version.js';
import { formatAddress, listenError } from '../common/errors.js';
import { loadKubeConfig, supportsNativeSidecars } from '../common/kube.js';
import { KubeEventRecorder, kubeEventsApi } from '../common/kube-events.js';
import { DEFAULT_MESH_CONFIGMAP_KEY, KubeMeshSettings, type MeshConfigMap } from '../common/kube-mesh-settings.js';
import { createLogger, type Logger } from '../common/log.js';
import { caBundle, ensureCertificates, SecretCertStore, syncCaBundle, type CertOptions, type TlsMaterial } from './certs.js';
import type { InjectorSettings } from './inject.js';
import { InjectorMetrics } from './metrics.js';
import { certificateExpiry, MountedCertificate, readCertificateFiles, type ServedCertificate } from './mounted-certs.js';
import { NamespaceCache } from './namespaces.js';
import { startMetricsServer, startWebhookServer, type CurrentSettings, type WebhookServerOptions } from './server.js';
import { installWebhookConfiguration, uninstallWebhookConfiguration, webhookConfiguration, type WebhookConfigOptions } from './webhook-config.js';

/**
 * Where the mesh settings come from: given (a file read at start, for offline and VM use), or the
 * ConfigMap the registry bridge reads too, watched for edits.
 */
export type MeshSource = { fixed: Mesh } | { configMap: MeshConfigMap };

interface CommonInjectorOptions {
  kubeConfig: KubeConfig;
  /** How pods are injected, but for the mesh settings: those come from `mesh`. */
  settings: Omit<InjectorSettings, 'mesh'>;
  mesh: MeshSource;
  host: string;
  port: number;
  metricsHost?: string;
  /** Omit for no metrics listener. */
  metricsPort?: number;
  /** Events per namespace: this many at once, then this many a second (default 25, then 1 a second). */
  eventRate?: { burst: number; perSecond: number };
  log: Logger;
}

/** The injector makes, stores and renews its own CA and serving certificate, and keeps the caBundle current. */
export interface ManagedCertificates {
  /** Where the certificates live: namespace/name of a Secret. */
  secret: { namespace: string; name: string };
  webhookConfigName: string;
  certs: CertOptions;
  /** How often to check certificates and the caBundle. */
  checkIntervalMs?: number;
  /** After a new CA is put in the caBundle, wait this long before serving a certificate it signed. */
  caPropagationMs?: number;
}

/**
 * The serving certificate is someone else's (cert-manager's, in a mounted Secret): read from
 * tls.crt and tls.key in this folder and reloaded when they change. The injector then writes no
 * Secret and never touches the caBundle, which cert-manager's CA injector owns.
 */
export interface MountedCertificates {
  tlsDir: string;
  /** Re-read the folder this often too, in case a change was not seen (default 60 s). */
  tlsPollIntervalMs?: number;
}

export type InjectorOptions = CommonInjectorOptions & (ManagedCertificates | MountedCertificates);

export interface RunningInjector<Certificate extends ServedCertificate = TlsMaterial> {
  readonly port: number;
  readonly metricsPort?: number;
  readonly metrics: InjectorMetrics;
  readonly events: KubeEventRecorder;
  /** The mesh settings pods are injected with (undefined until good ones were read), and what is wrong with the ConfigMap now, if anything. */
  meshSettings(): { mesh: Mesh | undefined; problem: string | undefined };
  /** The certificate being served now. */
  current(): Certificate;
  stop(): Promise<void>;
}

/** The serving certificate, and what keeps it current once the server runs. */
interface CertificateKeeper<Certificate extends ServedCertificate> {
  current(): Certificate;
  /** Keeps the certificate current; `serve` puts a renewed one in use from the next handshake on. */
  start(serve: (certificate: ServedCertificate) => void): void;
  stop(): void;
}

/** Ours: made, stored in a Secret the replicas share, renewed, with the caBundle kept current. */
async function managedCertificates(options: ManagedCertificates, kubeConfig: KubeConfig, log: Logger): Promise<CertificateKeeper<TlsMaterial>> {
  const store = new SecretCertStore(kubeConfig, options.secret.namespace, options.secret.name);
  let material = await ensureCertificates(store, options.certs, log);
  /** True when the configuration's caBundle is now `m`'s (or there is no configuration to update yet). */
  const syncBundle = async (m: TlsMaterial): Promise<boolean> => {
    try {
      if (await syncCaBundle(kubeConfig, options.webhookConfigName, caBundle(m))) log.info({ config: options.webhookConfigName }, 'caBundle updated');
      return true;
    } catch (error) {
      const code = (error as { code?: number }).code;
      if (code === 404) {
        log.warn(
          { config: options.webhookConfigName },
          "the MutatingWebhookConfiguration does not exist yet: run 'flb webhook install' (or install the chart)",
        );
        return true;
      }
      log.warn({ err: error }, 'could not update the caBundle; will retry');
      return false;
    }
  };
  await syncBundle(material);
  let timer: NodeJS.Timeout | undefined;
  return {
    current: () => material,
    start(serve) {
      let checking = false;
      const check = async () => {
        if (checking) return;
        checking = true;
        try {
          const next = await ensureCertificates(store, options.certs, log);
          if (next.certPem !== material.certPem) {
            if (next.caPem !== material.caPem) {
              // The bundle must trust the new CA before anyone is shown a certificate it signed: until
              // the update is confirmed, keep serving the old certificate (still valid) and retry.
              if (!(await syncBundle(next))) return;
              await new Promise((r) => setTimeout(r, options.caPropagationMs ?? 5000));
            }
            material = next;
            serve(next);
          }
          await syncBundle(material);
        } catch (error) {
          log.warn({ err: error }, 'certificate check failed; will retry');
        } finally {
          checking = false;
        }
      };
      timer = setInterval(() => void check(), options.checkIntervalMs ?? Math.max(1000, Math.min(3_600_000, options.certs.certValidityMs / 10)));
    },
    stop: () => clearInterval(timer),
  };
}

/** Someone else's (cert-manager's): files in a mounted Secret, reloaded when they change; the caBundle is theirs too. */
function mountedCertificates(options: MountedCertificates, metrics: InjectorMetrics, log: Logger): CertificateKeeper<ServedCertificate> {
  let serve: ((certificate: ServedCertificate) => void) | undefined;
  const mounted = new MountedCertificate({
    dir: options.tlsDir,
    log,
    onRenewed: (certificate) => serve?.(certificate),
    onRefused: () => metrics.certificateReloadsRefused.inc(),
    ...(options.tlsPollIntervalMs ? { pollIntervalMs: options.tlsPollIntervalMs } : {}),
  });
  log.info({ dir: options.tlsDir }, 'serving the certificate in the mounted folder; the caBundle is left to its issuer (cert-manager)');
  return {
    current: () => mounted.current(),
    start: (serveRenewed) => (serve = serveRenewed),
    stop: () => mounted.stop(),
  };
}

/** The running injector: certificates, caBundle, namespace cache, HTTPS and metrics servers, rotation. */
export async function runInjector(options: CommonInjectorOptions & ManagedCertificates): Promise<RunningInjector<TlsMaterial>>;
export async function runInjector(options: CommonInjectorOptions & MountedCertificates): Promise<RunningInjector<ServedCertificate>>;
export async function runInjector(options: InjectorOptions): Promise<RunningInjector<ServedCertificate>>;
export async function runInjector(options: InjectorOptions): Promise<RunningInjector<ServedCertificate>> {
  const { kubeConfig, log } = options;
  const metrics = new InjectorMetrics();
  const certificates: CertificateKeeper<ServedCertificate> =
    'tlsDir' in options ? mountedCertificates(options, metrics, log) : await managedCertificates(options, kubeConfig, log);
  const updateExpiry = () => metrics.certificateExpiry.set(certificateExpiry(certificates.current().certPem) / 1000);
  updateExpiry();

  // Never inject with settings not read: until the ConfigMap gives good ones, reviews get a 503.
  let injecting: InjectorSettings | undefined = 'fixed' in options.mesh ? { ...options.settings, mesh: options.mesh.fixed } : undefined;
  const meshWatch =
    'configMap' in options.mesh
      ? new KubeMeshSettings({
          kubeConfig,
          configMap: options.mesh.configMap,
          log,
          component: 'flb-injector',
          withoutSettings: 'no pod is injected until it is fixed (the webhook answers 503, so its failurePolicy decides)',
          onChange: (mesh) => (injecting = { ...options.settings, mesh }),
          onEventDropped: (reason) => metrics.eventsDropped.inc({ reason }),
        })
      : undefined;
  let settings: InjectorSettings | CurrentSettings = injecting!;
  if (meshWatch) {
    settings = () => injecting ?? { notReady: `no mesh settings yet: ${meshWatch.problem ?? `reading ${meshWatch.where}`}` };
    metrics.meshSettingsState = () => ({ loaded: injecting !== undefined, refused: meshWatch.refused });
    void meshWatch.start();
  }

  const namespaces = new NamespaceCache(kubeConfig, log);
  await namespaces.start();
  const events = new KubeEventRecorder({
    api: kubeEventsApi(kubeConfig),
    log,
    component: 'flb-injector',
    protectedNamespaces: [
      ...('secret' in options ? [options.secret.namespace] : []),
      ...('configMap' in options.mesh ? [options.mesh.configMap.namespace] : []),
    ],
    // The mesh's namespace comes with its settings, which may change.
    isProtectedNamespace: (namespace) => namespace === injecting?.mesh.controlPlaneNamespace,
    ...(options.eventRate ? { perNamespace: options.eventRate } : {}),
    onDropped: (reason) => metrics.eventsDropped.inc({ reason }),
  });
  let servers: Awaited<ReturnType<typeof startServers>>;
  try {
    servers = await startServers(
      {
        host: options.host,
        port: options.port,
        settings,
        namespaces,
        tls: { cert: certificates.current().certPem, key: certificates.current().keyPem },
        metrics,
        log,
        events,
      },
      options.metricsPort === undefined ? undefined : { host: options.metricsHost ?? '127.0.0.1', port: options.metricsPort },
    );
  } catch (error) {
    // Nothing may keep the process up after a failed start: the namespace and ConfigMap watches would.
    certificates.stop();
    await namespaces.stop();
    await meshWatch?.stop();
    throw error;
  }
  const { server, metricsServer } = servers;
  log.info(
    {
      port: server.port,
      metricsPort: metricsServer?.port,
      nativeSidecars: options.settings.nativeSidecars,
      meshSettings: meshWatch ? meshWatch.where : 'given at start',
    },
    'injector serving',
  );

  certificates.start((next) => {
    server.setCertificate({ cert: next.certPem, key: next.keyPem });
    updateExpiry();
    metrics.certificateRenewals.inc();
    log.info({ expires: new Date(certificateExpiry(next.certPem)).toISOString() }, 'serving a renewed certificate');
  });

  return {
    port: server.port,
    ...(metricsServer ? { metricsPort: metricsServer.port } : {}),
    metrics,
    events,
    meshSettings: () => ({ mesh: injecting?.mesh, problem: meshWatch?.problem }),
    current: () => certificates.current(),
    async stop() {
      certificates.stop();
      await server.close();
      await metricsServer?.close();
      await events.flush();
      await namespaces.stop();
      await meshWatch?.stop();
    },
  };
}

/**
 * The webhook's HTTPS listener and the metrics listener. A failure to listen names the listener and
 * the flag that moves it (a busy port: how to find who holds it), and closes what did start.
 */
export async function startServers(webhook: WebhookServerOptions, metricsAt: { host: string; port: number } | undefined) {
  const server = await startWebhookServer(webhook).catch((error: unknown) => {
    throw listenError(error, { what: "the injector's webhook", address: formatAddress(webhook.host, webhook.port), flag: '--listen HOST:PORT' });
  });
  if (!metricsAt) return { server, metricsServer: undefined };
  try {
    return { server, metricsServer: await startMetricsServer(metricsAt.host, metricsAt.port, webhook.metrics) };
  } catch (error) {
    await server.close();
    throw listenError(error, {
      what: "the injector's metrics endpoint",
      address: formatAddress(metricsAt.host, metricsAt.port),
      flag: '--metrics-listen HOST:PORT',
    });
  }
}

interface ServeOnlyOptions {
  kubeconfig?: string;
  /** A mesh settings file, read at start; neither this nor meshConfigMap: the defaults. */
  meshConfig?: string;
  /** The mesh settings ConfigMap the registry bridge reads too (key mesh.yaml unless given). */
  meshConfigMap?: Omit<MeshConfigMap, 'key'> & { key?: string };
  /** auto: native sidecars when the apiserver is Kubernetes 1.29 or later. */
  nativeSidecars: 'auto' | 'true' | 'false';
}

export type ServeOptions = Omit<CommonInjectorOptions, 'kubeConfig' | 'settings' | 'mesh' | 'log'> &
  ServeOnlyOptions &
  (ManagedCertificates | MountedCertificates);

/** `flb webhook serve`: runs the injector until SIGINT or SIGTERM, then stops it. */
export async function serveWebhook(options: ServeOptions): Promise<void> {
  const { kubeconfig, meshConfig, meshConfigMap, nativeSidecars: native, ...rest } = options;
  const log = createLogger('injector');
  // A Secret that is not mounted right is named before anything else can fail.
  if ('tlsDir' in rest) readCertificateFiles(rest.tlsDir);
  const kubeConfig = loadKubeConfig(kubeconfig);
  const mesh: MeshSource = meshConfigMap ? { configMap: { key: DEFAULT_MESH_CONFIGMAP_KEY, ...meshConfigMap } } : { fixed: loadMeshConfig(meshConfig) };
  const nativeSidecars = native === 'auto' ? await supportsNativeSidecars(kubeConfig) : native === 'true';
  const injector = await runInjector({ ...rest, kubeConfig, settings: { nativeSidecars, version: FLB_MESH_VERSION }, mesh, log });
  await untilStopped();
  log.info('shutting down');
  await injector.stop();
}

export interface InstallOptions extends Omit<WebhookConfigOptions, 'caBundlePem'> {
  /** Secret whose CA goes into the caBundle when it exists already. */
  secret: string;
  /** Omitted with `print`: nothing is read from or written to a cluster. */
  kubeConfig?: KubeConfig;
  /** Print the configuration as YAML instead of applying it. */
  print?: boolean;
}

/** `flb webhook install`: applies the configuration (or prints it); says whether it was created or updated. */
export async function installWebhook(options: InstallOptions, log: Logger, stdout: NodeJS.WritableStream = process.stdout): Promise<void> {
  const { kubeConfig, secret, print, ...config } = options;
  // With cert-manager the caBundle is its CA injector's: the injector's own Secret is not looked at.
  const existing =
    kubeConfig && !config.certManagerCertificate ? (await new SecretCertStore(kubeConfig, config.meshNamespace, secret).read()).material : undefined;
  const configuration = webhookConfiguration({ ...config, ...(existing ? { caBundlePem: caBundle(existing) } : {}) });
  if (print || !kubeConfig) {
    stdout.write(YAML.stringify(configuration, { lineWidth: 0 }));
    return;
  }
  const what = await installWebhookConfiguration(kubeConfig, configuration);
  log.info({ config: configuration.metadata?.name, failurePolicy: configuration.webhooks?.[0]?.failurePolicy }, `MutatingWebhookConfiguration ${what}`);
}

/** `flb webhook uninstall`. */
export async function uninstallWebhook(kubeConfig: KubeConfig, name: string, stderr: NodeJS.WritableStream = process.stderr): Promise<void> {
  const deleted = await uninstallWebhookConfiguration(kubeConfig, name);
  stderr.write(deleted ? `deleted ${name}\n` : `${name} was not installed\n`);
}
