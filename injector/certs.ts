// The webhook's own CA and serving certificate: made with node-forge, kept in a Secret so that
// replicas agree, renewed before expiry, with the caBundle of the MutatingWebhookConfiguration kept
// current. When the CA itself is renewed the bundle carries old and new CA until the old one
// expires, so no admission fails whichever certificate a replica serves meanwhile.
import { X509Certificate } from 'node:crypto';
import { AdmissionregistrationV1Api, CoreV1Api, type KubeConfig, type V1Secret } from '@kubernetes/client-node';
import { createCertificateAuthority, issueCertificate } from '../common/pki.js';
import type { Logger } from '../common/log.js';

export interface TlsMaterial {
  caPem: string;
  caKeyPem: string;
  certPem: string;
  keyPem: string;
  /** The CA before the last CA renewal, kept in the bundle while it is still valid. */
  previousCaPem?: string;
}

export interface CertOptions {
  dnsNames: string[];
  ipAddresses: string[];
  caValidityMs: number;
  certValidityMs: number;
  /** Renew when less than this share of a certificate's lifetime is left (default 1/3). */
  renewFraction?: number;
}

export type RenewalNeed = 'ca' | 'serving' | undefined;

export function renewalNeeded(material: TlsMaterial | undefined, options: CertOptions, now = Date.now()): RenewalNeed {
  if (!material) return 'ca';
  const fraction = options.renewFraction ?? 1 / 3;
  const tooOld = (cert: X509Certificate) => {
    const from = new Date(cert.validFrom).getTime();
    const to = new Date(cert.validTo).getTime();
    return to - now < (to - from) * fraction;
  };
  let ca: X509Certificate;
  let cert: X509Certificate;
  try {
    ca = new X509Certificate(material.caPem);
    cert = new X509Certificate(material.certPem);
  } catch {
    return 'ca';
  }
  if (tooOld(ca)) return 'ca';
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey) || tooOld(cert)) return 'serving';
  const sans = (cert.subjectAltName ?? '').split(', ');
  const wanted = [...options.dnsNames.map((d) => `DNS:${d}`), ...options.ipAddresses.map((ip) => `IP Address:${ip}`)];
  if (!wanted.every((w) => sans.includes(w))) return 'serving';
  return undefined;
}

export function renew(material: TlsMaterial | undefined, need: Exclude<RenewalNeed, undefined>, options: CertOptions): TlsMaterial {
  const days = (ms: number) => ms / 86_400_000;
  let ca = material && need === 'serving' ? { certPem: material.caPem, keyPem: material.caKeyPem } : undefined;
  let previousCaPem = material?.previousCaPem;
  if (!ca) {
    ca = createCertificateAuthority('flb-mesh injector CA', days(options.caValidityMs));
    previousCaPem = material?.caPem;
  }
  const serving = issueCertificate(ca, {
    commonName: options.dnsNames[0] ?? 'flb-injector',
    usage: 'server',
    dnsNames: options.dnsNames,
    ipAddresses: options.ipAddresses,
    validDays: days(options.certValidityMs),
  });
  return { caPem: ca.certPem, caKeyPem: ca.keyPem, certPem: serving.certPem, keyPem: serving.keyPem, ...(previousCaPem ? { previousCaPem } : {}) };
}

/** The CAs a client must trust: the current one and the previous one while it is still valid. */
export function caBundle(material: TlsMaterial, now = Date.now()): string {
  const bundle = [material.caPem.trim()];
  if (material.previousCaPem) {
    try {
      if (new Date(new X509Certificate(material.previousCaPem).validTo).getTime() > now) bundle.push(material.previousCaPem.trim());
    } catch {
      // an unreadable old CA is simply dropped
    }
  }
  return `${bundle.join('\n')}\n`;
}

/** Where the material lives: a Kubernetes Secret, written with optimistic concurrency. */
export class SecretCertStore {
  private readonly core: CoreV1Api;
  constructor(
    kubeConfig: KubeConfig,
    readonly namespace: string,
    readonly name: string,
  ) {
    this.core = kubeConfig.makeApiClient(CoreV1Api);
  }

  async read(): Promise<{ material?: TlsMaterial; resourceVersion?: string }> {
    let secret: V1Secret;
    try {
      secret = await this.core.readNamespacedSecret({ name: this.name, namespace: this.namespace });
    } catch (error) {
      if ((error as { code?: number }).code === 404) return {};
      throw error;
    }
    const d = (key: string) => (secret.data?.[key] ? Buffer.from(secret.data[key], 'base64').toString('utf8') : undefined);
    const [caPem, caKeyPem, certPem, keyPem] = [d('ca.crt'), d('ca.key'), d('tls.crt'), d('tls.key')];
    const previousCaPem = d('ca-previous.crt');
    const material = caPem && caKeyPem && certPem && keyPem ? { caPem, caKeyPem, certPem, keyPem, ...(previousCaPem ? { previousCaPem } : {}) } : undefined;
    return { ...(material ? { material } : {}), ...(secret.metadata?.resourceVersion ? { resourceVersion: secret.metadata.resourceVersion } : {}) };
  }

  /** Writes the material; false when another replica wrote first (the caller re-reads). */
  async write(material: TlsMaterial, resourceVersion: string | undefined): Promise<boolean> {
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    const body: V1Secret = {
      metadata: {
        name: this.name,
        namespace: this.namespace,
        labels: { 'app.kubernetes.io/part-of': 'flb-mesh' },
        ...(resourceVersion ? { resourceVersion } : {}),
      },
      type: 'kubernetes.io/tls',
      data: {
        'tls.crt': b64(material.certPem),
        'tls.key': b64(material.keyPem),
        'ca.crt': b64(material.caPem),
        'ca.key': b64(material.caKeyPem),
        ...(material.previousCaPem ? { 'ca-previous.crt': b64(material.previousCaPem) } : {}),
      },
    };
    try {
      if (resourceVersion) await this.core.replaceNamespacedSecret({ name: this.name, namespace: this.namespace, body });
      else await this.core.createNamespacedSecret({ namespace: this.namespace, body });
      return true;
    } catch (error) {
      const code = (error as { code?: number }).code;
      if (code === 409) return false;
      throw error;
    }
  }
}

/** Reads, renews if needed (racing replicas settle on whichever write won) and returns the material. */
export async function ensureCertificates(store: SecretCertStore, options: CertOptions, log: Logger): Promise<TlsMaterial> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const { material, resourceVersion } = await store.read();
    const need = renewalNeeded(material, options);
    if (!need && material) return material;
    const renewed = renew(material, need ?? 'ca', options);
    if (await store.write(renewed, resourceVersion)) {
      log.info(
        { secret: `${store.namespace}/${store.name}`, renewed: need },
        need === 'ca' ? 'made a new CA and serving certificate' : 'renewed the serving certificate',
      );
      return renewed;
    }
    log.info('another replica renewed the certificates first; using theirs');
  }
  throw new Error(`could not settle the certificates in Secret ${store.namespace}/${store.name} after 5 attempts (too many writers?)`);
}

/** Sets the caBundle of every webhook in the configuration; returns false when it was already current. */
export async function syncCaBundle(kubeConfig: KubeConfig, configName: string, bundlePem: string): Promise<boolean> {
  const api = kubeConfig.makeApiClient(AdmissionregistrationV1Api);
  const config = await api.readMutatingWebhookConfiguration({ name: configName });
  const bundle = Buffer.from(bundlePem).toString('base64');
  const webhooks = config.webhooks ?? [];
  if (webhooks.every((w) => w.clientConfig.caBundle === bundle)) return false;
  for (const w of webhooks) w.clientConfig.caBundle = bundle;
  await api.replaceMutatingWebhookConfiguration({ name: configName, body: config });
  return true;
}
