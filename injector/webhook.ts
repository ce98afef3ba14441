import { X509Certificate } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';
import { KubeEventRecorder, kubeEventsApi } from '../common/kube-events.js';
import type { Logger } from '../common/log.js';
import { caBundle, ensureCertificates, SecretCertStore, syncCaBundle, type CertOptions, type TlsMaterial } from './certs.js';
import type { InjectorSettings } from './inject.js';
import { InjectorMetrics } from './metrics.js';
import { NamespaceCache } from './namespaces.js';
import { startMetricsServer, startWebhookServer } from './server.js';

export interface InjectorOptions {
  kubeConfig: KubeConfig;
  settings: InjectorSettings;
  host: string;
  port: number;
  metricsHost?: string;
  /** Omit for no metrics listener. */
  metricsPort?: number;
  /** Where the certificates live: namespace/name of a Secret. */
  secret: { namespace: string; name: string };
  webhookConfigName: string;
  certs: CertOptions;
  /** How often to check certificates and the caBundle. */
  checkIntervalMs?: number;
  /** After a new CA is put in the caBundle, wait this long before serving a certificate it signed. */
  caPropagationMs?: number;
  /** Events per namespace: this many at once, then this many a second (default 25, then 1 a second). */
  eventRate?: { burst: number; perSecond: number };
  log: Logger;
}

export interface RunningInjector {
  readonly port: number;
  readonly metricsPort?: number;
  readonly metrics: InjectorMetrics;
  readonly events: KubeEventRecorder;
  /** The certificate being served now. */
  current(): TlsMaterial;
  stop(): Promise<void>;
}

/** The running injector: certificates, caBundle, namespace cache, HTTPS and metrics servers, rotation. */
export async function runInjector(options: InjectorOptions): Promise<RunningInjector> {
  const { kubeConfig, log } = options;
  const metrics = new InjectorMetrics();
  const store = new SecretCertStore(kubeConfig, options.secret.namespace, options.secret.name);
  let material = await ensureCertificates(store, options.certs, log);
  const updateExpiry = () => metrics.certificateExpiry.set(certificateExpiry(material.certPem) / 1000);
  updateExpiry();
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

  const namespaces = new NamespaceCache(kubeConfig, log);
  await namespaces.start();
  const events = new KubeEventRecorder({
    api: kubeEventsApi(kubeConfig),
    log,
    component: 'flb-injector',
    protectedNamespaces: [options.settings.mesh.controlPlaneNamespace, options.secret.namespace],
    ...(options.eventRate ? { perNamespace: options.eventRate } : {}),
    onDropped: (reason) => metrics.eventsDropped.inc({ reason }),
  });
  const server = await startWebhookServer({
    host: options.host,
    port: options.port,
    settings: options.settings,
    namespaces,
    tls: { cert: material.certPem, key: material.keyPem },
    metrics,
    log,
    events,
  });
  const metricsServer =
    options.metricsPort === undefined ? undefined : await startMetricsServer(options.metricsHost ?? '127.0.0.1', options.metricsPort, metrics);
  log.info({ port: server.port, metricsPort: metricsServer?.port, nativeSidecars: options.settings.nativeSidecars }, 'injector serving');

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
        server.setCertificate({ cert: next.certPem, key: next.keyPem });
        material = next;
        updateExpiry();
        metrics.certificateRenewals.inc();
        log.info({ expires: new Date(certificateExpiry(next.certPem)).toISOString() }, 'serving a renewed certificate');
      }
      await syncBundle(material);
    } catch (error) {
      log.warn({ err: error }, 'certificate check failed; will retry');
    } finally {
      checking = false;
    }
  };
  const timer = setInterval(() => void check(), options.checkIntervalMs ?? Math.max(1000, Math.min(3_600_000, options.certs.certValidityMs / 10)));

  return {
    port: server.port,
    ...(metricsServer ? { metricsPort: metricsServer.port } : {}),
    metrics,
    events,
    current: () => material,
    async stop() {
      clearInterval(timer);
      await server.close();
      await metricsServer?.close();
      await events.flush();
      await namespaces.stop();
    },
  };
}

function certificateExpiry(certPem: string): number {
  return new Date(new X509Certificate(certPem).validTo).getTime();
}
