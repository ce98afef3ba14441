import { AdmissionregistrationV1Api, type KubeConfig, type V1MutatingWebhookConfiguration } from '@kubernetes/client-node';
import { CERT_MANAGER_INJECT_CA_FROM, INJECT_LABEL, NAMESPACE_INJECT_ENABLED } from '../common/contract/index.js';
import { SYSTEM_NAMESPACES } from './policy.js';

export const DEFAULT_WEBHOOK_CONFIG_NAME = 'flb-sidecar-injector';
export { CERT_MANAGER_INJECT_CA_FROM };

export interface WebhookConfigOptions {
  name?: string;
  /** Reach the injector by URL (outside a cluster, tests) ... */
  url?: string;
  /** ... or by Service (in a cluster). */
  service?: { namespace: string; name: string; port?: number; path?: string };
  /** Fail: pods are refused while the injector is down (nothing runs without its sidecar). Ignore: they start without one. */
  failurePolicy?: 'Fail' | 'Ignore';
  timeoutSeconds?: number;
  caBundlePem?: string;
  /**
   * The cert-manager Certificate whose CA goes into the caBundle: cert-manager's CA injector sets
   * it (annotation cert-manager.io/inject-ca-from), and the injector serves that Certificate's Secret.
   */
  certManagerCertificate?: { namespace: string; name: string };
  /** The mesh's namespace, never injected (nor are kube-system and friends). */
  meshNamespace: string;
}

/**
 * The MutatingWebhookConfiguration, owned by `flb webhook install` (or the chart): the running
 * injector only keeps its caBundle current. Two entries, as the best meshes do, so that the
 * apiserver itself filters and the injector is not on the path of every pod in the cluster: pods in
 * namespaces labelled enabled (except pods labelled "false"), and pods labelled "true" in any other
 * namespace. Selectors see labels only, never annotations: policy.ts decides the same way.
 */
export function webhookConfiguration(options: WebhookConfigOptions): V1MutatingWebhookConfiguration {
  if (!options.url === !options.service) throw new Error('give exactly one of url or service');
  const clientConfig = {
    ...(options.url ? { url: options.url } : {}),
    ...(options.service
      ? {
          service: {
            namespace: options.service.namespace,
            name: options.service.name,
            port: options.service.port ?? 443,
            path: options.service.path ?? '/mutate',
          },
        }
      : {}),
    ...(options.caBundlePem ? { caBundle: Buffer.from(options.caBundlePem).toString('base64') } : {}),
  };
  const excluded = { key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: [...SYSTEM_NAMESPACES, options.meshNamespace] };
  const common = {
    clientConfig,
    rules: [{ apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'], scope: 'Namespaced' }],
    admissionReviewVersions: ['v1'],
    sideEffects: 'NoneOnDryRun',
    failurePolicy: options.failurePolicy ?? 'Fail',
    timeoutSeconds: options.timeoutSeconds ?? 10,
    reinvocationPolicy: 'IfNeeded',
    matchPolicy: 'Equivalent',
  };
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: {
      name: options.name ?? DEFAULT_WEBHOOK_CONFIG_NAME,
      labels: { 'app.kubernetes.io/part-of': 'flb-mesh' },
      ...(options.certManagerCertificate
        ? { annotations: { [CERT_MANAGER_INJECT_CA_FROM]: `${options.certManagerCertificate.namespace}/${options.certManagerCertificate.name}` } }
        : {}),
    },
    webhooks: [
      {
        name: 'namespace.sidecar-injector.flomesh.io',
        ...common,
        namespaceSelector: { matchExpressions: [{ key: INJECT_LABEL, operator: 'In', values: [NAMESPACE_INJECT_ENABLED] }, excluded] },
        objectSelector: { matchExpressions: [{ key: INJECT_LABEL, operator: 'NotIn', values: ['false'] }] },
      },
      {
        name: 'pod.sidecar-injector.flomesh.io',
        ...common,
        // NotIn also matches namespaces without the label: unlabelled and "disabled" namespaces alike.
        namespaceSelector: { matchExpressions: [{ key: INJECT_LABEL, operator: 'NotIn', values: [NAMESPACE_INJECT_ENABLED] }, excluded] },
        objectSelector: { matchExpressions: [{ key: INJECT_LABEL, operator: 'In', values: ['true'] }] },
      },
    ],
  };
}

/** Creates the configuration, or replaces it keeping the caBundle the injector has set. */
export async function installWebhookConfiguration(kubeConfig: KubeConfig, config: V1MutatingWebhookConfiguration): Promise<'created' | 'updated'> {
  const api = kubeConfig.makeApiClient(AdmissionregistrationV1Api);
  const name = config.metadata!.name!;
  let existing: V1MutatingWebhookConfiguration | undefined;
  try {
    existing = await api.readMutatingWebhookConfiguration({ name });
  } catch (error) {
    if ((error as { code?: number }).code !== 404) throw error;
  }
  if (!existing) {
    await api.createMutatingWebhookConfiguration({ body: config });
    return 'created';
  }
  const keptBundle = existing.webhooks?.[0]?.clientConfig.caBundle;
  const body = structuredClone(config);
  body.metadata = { ...body.metadata, resourceVersion: existing.metadata?.resourceVersion };
  for (const w of body.webhooks ?? []) if (!w.clientConfig.caBundle && keptBundle) w.clientConfig.caBundle = keptBundle;
  await api.replaceMutatingWebhookConfiguration({ name, body });
  return 'updated';
}

export async function uninstallWebhookConfiguration(kubeConfig: KubeConfig, name = DEFAULT_WEBHOOK_CONFIG_NAME): Promise<boolean> {
  const api = kubeConfig.makeApiClient(AdmissionregistrationV1Api);
  try {
    await api.deleteMutatingWebhookConfiguration({ name });
    return true;
  } catch (error) {
    if ((error as { code?: number }).code === 404) return false;
    throw error;
  }
}
