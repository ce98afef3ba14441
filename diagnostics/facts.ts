/*
 * What `flb check` looks at, gathered from the apiserver (@kubernetes/client-node), the repo and
 * the bridge's admin endpoint. Each function returns facts, never throws: a question that gets no
 * answer is a fact too (the check that needs it says so), and every call has a deadline.
 */
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import {
  AdmissionregistrationV1Api,
  ApisApi,
  AppsV1Api,
  AuthorizationV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
  VersionApi,
  type CoreV1Event,
  type KubeConfig,
  type V1Pod,
} from '@kubernetes/client-node';
import {
  CERT_MANAGER_INJECT_CA_FROM,
  INJECT_LABEL,
  NAMESPACE_INJECT_ENABLED,
  SIDECAR_CONTAINER_NAME,
  SIDECAR_INJECTED_LABEL,
  SIDECAR_INJECTED_VALUE,
} from '../common/contract/annotations.js';
import { INTERCEPTION_ANNOTATION, sidecarId, type Mesh } from '../common/contract/index.js';
import { describeError } from '../common/log.js';
import {
  meshFromText,
  splitPem,
  type ApiGroupFacts,
  type ApiServerFacts,
  type BridgeStatusFacts,
  type BridgeStatusView,
  type CaBundleFacts,
  type CertManagerCertificate,
  type CniFacts,
  type DryRunOutcome,
  type EbpfNodeFacts,
  type InjectedPodFacts,
  type LeaseFacts,
  type MeshSettingsFacts,
  type PermissionFacts,
  type WebhookAnswerFacts,
  type WebhookConfigFacts,
  type WebhookEntry,
} from './checks.js';

/** Each question to the apiserver or a component gets this long. */
export const DEFAULT_TIMEOUT_MS = 10_000;

export function withDeadline<T>(what: string, promise: Promise<T>, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${timeoutMs / 1000} s`)), timeoutMs);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

const statusOf = (error: unknown) => (error as { code?: number } | null)?.code;

/** The apiserver's own words for a refusal (a Status's message), else the error's. */
export function apiMessage(error: unknown): string {
  const body = (error as { body?: unknown } | null)?.body;
  if (typeof body === 'string') {
    try {
      const status = JSON.parse(body) as { message?: string };
      if (status.message) return status.message;
    } catch {
      // not a Status
    }
  } else if (body && typeof body === 'object' && typeof (body as { message?: unknown }).message === 'string') return (body as { message: string }).message;
  return describeError(error);
}

export async function apiServerFacts(kc: KubeConfig): Promise<ApiServerFacts> {
  const server = kc.getCurrentCluster()?.server ?? 'unknown';
  try {
    const version = await withDeadline('GET /version', kc.makeApiClient(VersionApi).getCode());
    return { server, version: { gitVersion: version.gitVersion, major: version.major, minor: version.minor } };
  } catch (error) {
    return { server, error: apiMessage(error) };
  }
}

export async function apiGroupFacts(kc: KubeConfig): Promise<ApiGroupFacts> {
  try {
    const groups = await withDeadline('GET /apis', kc.makeApiClient(ApisApi).getAPIVersions());
    return { served: groups.groups.flatMap((g) => g.versions.map((v) => v.groupVersion)) };
  } catch (error) {
    return { error: apiMessage(error) };
  }
}

/** What the chart makes, as SelfSubjectAccessReviews ask it. */
const INSTALL_ACTIONS: { verb: string; group: string; resource: string; namespaced: boolean }[] = [
  { verb: 'create', group: '', resource: 'namespaces', namespaced: false },
  { verb: 'create', group: 'admissionregistration.k8s.io', resource: 'mutatingwebhookconfigurations', namespaced: false },
  { verb: 'create', group: 'rbac.authorization.k8s.io', resource: 'clusterroles', namespaced: false },
  { verb: 'create', group: 'rbac.authorization.k8s.io', resource: 'clusterrolebindings', namespaced: false },
  { verb: 'create', group: 'scheduling.k8s.io', resource: 'priorityclasses', namespaced: false },
  { verb: 'create', group: 'apps', resource: 'deployments', namespaced: true },
  { verb: 'create', group: 'apps', resource: 'statefulsets', namespaced: true },
  { verb: 'create', group: '', resource: 'secrets', namespaced: true },
  { verb: 'create', group: 'networking.k8s.io', resource: 'networkpolicies', namespaced: true },
];

export async function installPermissionFacts(kc: KubeConfig, namespace: string): Promise<PermissionFacts[]> {
  const api = kc.makeApiClient(AuthorizationV1Api);
  return Promise.all(
    INSTALL_ACTIONS.map(async ({ verb, group, resource, namespaced }) => {
      const action = `${verb} ${resource}${group ? ` (${group})` : ''}${namespaced ? ` in ${namespace}` : ''}`;
      try {
        const review = await withDeadline(
          'SelfSubjectAccessReview',
          api.createSelfSubjectAccessReview({ body: { spec: { resourceAttributes: { verb, group, resource, ...(namespaced ? { namespace } : {}) } } } }),
        );
        return { action, allowed: review.status?.allowed === true };
      } catch (error) {
        return { action, error: apiMessage(error) };
      }
    }),
  );
}

export async function webhookExists(kc: KubeConfig, name: string): Promise<{ webhookConfigName: string; exists?: boolean; error?: string }> {
  try {
    await withDeadline('read the webhook configuration', kc.makeApiClient(AdmissionregistrationV1Api).readMutatingWebhookConfiguration({ name }));
    return { webhookConfigName: name, exists: true };
  } catch (error) {
    return statusOf(error) === 404 ? { webhookConfigName: name, exists: false } : { webhookConfigName: name, error: apiMessage(error) };
  }
}

export interface ConfigMapRef {
  namespace: string;
  name: string;
  key: string;
}

export async function meshSettingsFacts(kc: KubeConfig, ref: ConfigMapRef): Promise<{ facts: MeshSettingsFacts; mesh?: Mesh }> {
  const where = `ConfigMap ${ref.namespace}/${ref.name} key ${ref.key}`;
  try {
    const configMap = await withDeadline(`read ${where}`, kc.makeApiClient(CoreV1Api).readNamespacedConfigMap({ name: ref.name, namespace: ref.namespace }));
    const text = configMap.data?.[ref.key];
    if (text === undefined) return { facts: { where, found: true, problems: [`the key ${ref.key} is missing`] } };
    const read = meshFromText(text);
    return 'mesh' in read ? { facts: { where, found: true }, mesh: read.mesh } : { facts: { where, found: true, problems: read.problems } };
  } catch (error) {
    if (statusOf(error) === 404) return { facts: { where, found: false } };
    return { facts: { where, found: false, error: apiMessage(error) } };
  }
}

export async function webhookConfigFacts(kc: KubeConfig, name: string): Promise<WebhookConfigFacts> {
  let webhooks: WebhookEntry[];
  let certManager: CertManagerCertificate | undefined;
  try {
    const config = await withDeadline(
      'read the webhook configuration',
      kc.makeApiClient(AdmissionregistrationV1Api).readMutatingWebhookConfiguration({ name }),
    );
    const injectFrom = /^([^/\s]+)\/([^/\s]+)$/.exec(config.metadata?.annotations?.[CERT_MANAGER_INJECT_CA_FROM] ?? '');
    if (injectFrom) certManager = { namespace: injectFrom[1]!, name: injectFrom[2]! };
    webhooks = (config.webhooks ?? []).map((w) => ({
      name: w.name,
      ...(w.clientConfig.url ? { url: w.clientConfig.url } : {}),
      ...(w.clientConfig.service
        ? {
            service: {
              namespace: w.clientConfig.service.namespace,
              name: w.clientConfig.service.name,
              port: w.clientConfig.service.port ?? 443,
              ...(w.clientConfig.service.path ? { path: w.clientConfig.service.path } : {}),
            },
          }
        : {}),
      caBundle: w.clientConfig.caBundle ? splitPem(Buffer.from(w.clientConfig.caBundle, 'base64').toString('utf8')) : [],
      failurePolicy: w.failurePolicy ?? 'Fail',
    }));
  } catch (error) {
    return statusOf(error) === 404 ? { name } : { name, error: apiMessage(error) };
  }
  const found = { name, webhooks, ...(certManager ? { certManager } : {}) };
  const target = webhooks.find((w) => w.service)?.service;
  if (!target) return found;
  const service = { namespace: target.namespace, name: target.name };
  try {
    await withDeadline('read the webhook Service', kc.makeApiClient(CoreV1Api).readNamespacedService(service));
  } catch (error) {
    if (statusOf(error) === 404) return { ...found, service: { ...service, exists: false, readyEndpoints: 0 } };
    return { ...found, service: { ...service, exists: false, readyEndpoints: 0, error: apiMessage(error) } };
  }
  try {
    const slices = await withDeadline(
      'list the webhook EndpointSlices',
      kc.makeApiClient(DiscoveryV1Api).listNamespacedEndpointSlice({ namespace: target.namespace, labelSelector: `kubernetes.io/service-name=${target.name}` }),
    );
    const ready = slices.items.flatMap((s) => s.endpoints ?? []).filter((e) => e.conditions?.ready !== false).length;
    return { ...found, service: { ...service, exists: true, readyEndpoints: ready } };
  } catch (error) {
    return { ...found, service: { ...service, exists: true, readyEndpoints: 0, error: apiMessage(error) } };
  }
}

/** `299 - "text"` warnings the apiserver returned, as kubectl prints them. */
export function warningsOf(header: string | undefined): string[] {
  if (!header) return [];
  return [...header.matchAll(/\d{3} \S+ "((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!.replace(/\\(.)/g, '$1'));
}

/**
 * A pod created with dryRun=All in a namespace labelled for injection (else `default`, the pod
 * labelled to opt in): the apiserver calls the webhook exactly as for a real pod (its
 * sideEffects NoneOnDryRun allows it) and returns the pod as it would have stored it.
 */
export async function webhookAnswerFacts(kc: KubeConfig, meshNamespace: string, failurePolicies: string[], namespace?: string): Promise<WebhookAnswerFacts> {
  const core = kc.makeApiClient(CoreV1Api);
  let why = 'given with --probe-namespace';
  if (!namespace) {
    try {
      const labelled = await withDeadline('list labelled namespaces', core.listNamespace({ labelSelector: `${INJECT_LABEL}=${NAMESPACE_INJECT_ENABLED}` }));
      const first = labelled.items
        .map((n) => n.metadata?.name ?? '')
        .filter((n) => n && n !== meshNamespace && !n.startsWith('kube-'))
        .sort()[0];
      namespace = first ?? 'default';
      why = first
        ? `labelled ${INJECT_LABEL}=${NAMESPACE_INJECT_ENABLED}`
        : `no namespace is labelled ${INJECT_LABEL}=${NAMESPACE_INJECT_ENABLED}; the pod is labelled ${INJECT_LABEL}=true`;
    } catch (error) {
      return { namespace: '?', why: 'namespaces could not be listed', outcome: { kind: 'error', message: apiMessage(error) }, failurePolicies };
    }
  }
  const pod: V1Pod = {
    metadata: { name: `flb-check-${randomBytes(4).toString('hex')}`, labels: { [INJECT_LABEL]: 'true', 'app.kubernetes.io/name': 'flb-check' } },
    spec: {
      automountServiceAccountToken: false,
      securityContext: { runAsNonRoot: true, runAsUser: 65534, seccompProfile: { type: 'RuntimeDefault' } },
      containers: [
        {
          name: 'app',
          image: 'registry.k8s.io/pause:3.10',
          securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
        },
      ],
    },
  };
  try {
    const answer = await withDeadline('the dry-run pod', core.createNamespacedPodWithHttpInfo({ namespace, body: pod, dryRun: 'All' }));
    const created = answer.data;
    const outcome: DryRunOutcome = {
      kind: 'created',
      containers: (created.spec?.containers ?? []).map((c) => c.name),
      initContainers: (created.spec?.initContainers ?? []).map((c) => c.name),
      annotations: created.metadata?.annotations ?? {},
      warnings: warningsOf(answer.headers.warning),
    };
    return { namespace, why, outcome, failurePolicies };
  } catch (error) {
    const status = statusOf(error);
    return {
      namespace,
      why,
      outcome: typeof status === 'number' ? { kind: 'refused', status, message: apiMessage(error) } : { kind: 'error', message: apiMessage(error) },
      failurePolicies,
    };
  }
}

/**
 * The Secret cert-manager issues for a Certificate (its spec.secretName), or why it cannot be
 * read: no cert-manager CRDs, or no permission to read Certificates.
 */
export async function certificateSecretName(kc: KubeConfig, certificate: CertManagerCertificate): Promise<{ name?: string; error?: string }> {
  try {
    const object = (await withDeadline(
      'read the cert-manager Certificate',
      kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({
        group: 'cert-manager.io',
        version: 'v1',
        namespace: certificate.namespace,
        plural: 'certificates',
        name: certificate.name,
      }),
    )) as { spec?: { secretName?: unknown } };
    const secretName = object.spec?.secretName;
    return typeof secretName === 'string' && secretName !== '' ? { name: secretName } : { error: 'it names no spec.secretName' };
  } catch (error) {
    return { error: apiMessage(error) };
  }
}

export async function injectorSecretFacts(kc: KubeConfig, namespace: string, name: string): Promise<CaBundleFacts['secret']> {
  try {
    const secret = await withDeadline('read the injector Secret', kc.makeApiClient(CoreV1Api).readNamespacedSecret({ name, namespace }));
    const decode = (key: string) => (secret.data?.[key] ? Buffer.from(secret.data[key], 'base64').toString('utf8') : undefined);
    const [caPem, certPem] = [decode('ca.crt'), decode('tls.crt')];
    return { namespace, name, found: true, ...(caPem ? { caPem } : {}), ...(certPem ? { certPem } : {}) };
  } catch (error) {
    return statusOf(error) === 404 ? { namespace, name, found: false } : { namespace, name, found: false, error: apiMessage(error) };
  }
}

export async function leaseFacts(kc: KubeConfig, namespace: string, name: string): Promise<LeaseFacts> {
  const now = Date.now();
  try {
    const lease = await withDeadline('read the Lease', kc.makeApiClient(CoordinationV1Api).readNamespacedLease({ name, namespace }));
    const renew = lease.spec?.renewTime ?? lease.spec?.acquireTime;
    return {
      namespace,
      name,
      found: true,
      ...(lease.spec?.holderIdentity ? { holder: lease.spec.holderIdentity } : {}),
      ...(renew ? { renewTime: new Date(renew as unknown as string).getTime() } : {}),
      ...(lease.spec?.leaseDurationSeconds ? { leaseDurationSeconds: lease.spec.leaseDurationSeconds } : {}),
      now,
    };
  } catch (error) {
    return statusOf(error) === 404 ? { namespace, name, found: false, now } : { namespace, name, found: false, error: apiMessage(error), now };
  }
}

function getJson(url: string, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request(url, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`${url} answered ${res.statusCode}`));
        try {
          resolve(JSON.parse(body));
        } catch {
          reject(new Error(`${url} did not answer JSON (is it the bridge's --admin address?)`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs / 1000} s`)));
    req.on('error', reject);
    req.end();
  });
}

function asBridgeStatus(value: unknown): BridgeStatusView {
  const status = value as Partial<BridgeStatusView> | null;
  if (!status || typeof status.identity !== 'string' || !Array.isArray(status.sources) || !Array.isArray(status.sinks))
    throw new Error("the answer is not a bridge's /status (identity, sources, sinks)");
  return status as BridgeStatusView;
}

/**
 * The leading bridge's /status: from the admin URLs given (the one that leads), else through the
 * apiserver's proxy to the pod the Lease names, on the chart's admin port.
 */
export async function bridgeStatusFacts(kc: KubeConfig | undefined, urls: string[], lease: LeaseFacts, adminPort: number): Promise<BridgeStatusFacts> {
  const now = Date.now();
  if (urls.length) {
    const answers = await Promise.all(
      urls.map(async (url) => {
        try {
          return { url, status: asBridgeStatus(await getJson(new URL('/status', url).toString(), DEFAULT_TIMEOUT_MS)) };
        } catch (error) {
          return { url, error: describeError(error) };
        }
      }),
    );
    const leading = answers.find((a) => a.status?.leader) ?? answers.find((a) => a.status) ?? answers[0]!;
    const errors = answers.filter((a) => a.error).map((a) => `${a.url}: ${a.error}`);
    return { from: leading.url, ...(leading.status ? { status: leading.status } : { error: errors.join('; ') }), now };
  }
  if (!kc || !lease.holder) return { from: `the leader's pod`, error: 'no leader named by the Lease, and no --bridge-url', now };
  const from = `pod ${lease.namespace}/${lease.holder}:${adminPort} (through the apiserver's proxy)`;
  try {
    const body = await withDeadline(
      'the bridge status',
      kc.makeApiClient(CoreV1Api).connectGetNamespacedPodProxyWithPath({ name: `${lease.holder}:${adminPort}`, namespace: lease.namespace, path: 'status' }),
    );
    return { from, status: asBridgeStatus(typeof body === 'string' ? JSON.parse(body) : body), now };
  } catch (error) {
    return { from, error: apiMessage(error), now };
  }
}

export async function cniFacts(kc: KubeConfig, namespace: string, mode: string | undefined): Promise<CniFacts> {
  const base: CniFacts = { ...(mode ? { mode } : {}), namespace, brokenPods: [] };
  if (mode !== 'cni' && mode !== 'ebpf') return base;
  const name = 'flb-cni-node';
  let daemonSet: CniFacts['daemonSet'];
  try {
    const ds = await withDeadline('read the CNI DaemonSet', kc.makeApiClient(AppsV1Api).readNamespacedDaemonSet({ name, namespace }));
    daemonSet = { name, found: true, desired: ds.status?.desiredNumberScheduled ?? 0, ready: ds.status?.numberReady ?? 0 };
  } catch (error) {
    daemonSet = statusOf(error) === 404 ? { name, found: false, desired: 0, ready: 0 } : { name, found: false, desired: 0, ready: 0, error: apiMessage(error) };
  }
  try {
    const broken = await withDeadline(
      'list pods without interception',
      kc.makeApiClient(CoreV1Api).listPodForAllNamespaces({ labelSelector: 'flomesh.io/cni-repair=broken' }),
    );
    base.brokenPods = broken.items.map((p) => `${p.metadata?.namespace}/${p.metadata?.name}`);
    // Per-pod annotations may choose eBPF in a CNI mesh too: look whenever a broken pod is one.
    if (broken.items.some(inEbpfMode)) {
      const events = await withDeadline(
        "list the node agents' repair Events",
        kc.makeApiClient(CoreV1Api).listEventForAllNamespaces({ fieldSelector: `reason=${REPAIR_EVENT_REASON}` }),
      ).catch(() => ({ items: [] as CoreV1Event[] }));
      base.ebpfUnavailable = ebpfUnavailableNodes(broken.items, events.items);
    }
  } catch {
    // the DaemonSet verdict stands on its own
  }
  return { ...base, daemonSet };
}

/** The reason cni/repair.ts gives the Event it records on a pod it labels or deletes. */
const REPAIR_EVENT_REASON = 'InterceptionMissing';
/** How that Event's message carries the node agent's eBPF verdict (cni/repair.ts). */
const EBPF_VERDICT = /eBPF interception is not available on this node \((.*)\); (?:labelled|deleted) /s;

function inEbpfMode(pod: V1Pod): boolean {
  try {
    return (JSON.parse(pod.metadata?.annotations?.[INTERCEPTION_ANNOTATION] ?? '{}') as { mode?: unknown }).mode === 'ebpf';
  } catch {
    return false;
  }
}

/**
 * How flb-validation's error names the node and what it lacks (cni/validate.ts, from the mark
 * cni/ebpf.ts leaves on the pod's lo); the injector makes that error the container's termination
 * message (FallbackToLogsOnError), which lasts as long as the pod where the Events expire.
 */
const EBPF_TERMINATION_VERDICT = /eBPF interception is not available on node (\S+): ([^\n]*)/;

/** What a broken eBPF pod's flb-validation said, from its current or last termination message. */
function validationVerdict(pod: V1Pod): { node: string; reason: string } | undefined {
  const validation = pod.status?.initContainerStatuses?.find((c) => c.name === 'flb-validation');
  for (const terminated of [validation?.state?.terminated, validation?.lastState?.terminated]) {
    const match = EBPF_TERMINATION_VERDICT.exec(terminated?.message ?? '');
    if (match) return { node: match[1]!, reason: match[2]!.replace(/\.\.\.$/, '').trim() };
  }
  return undefined;
}

/**
 * The broken eBPF pods by node, with what the node's agent said is missing, from its repair Events
 * (the agent labels such pods rather than deleting them: a replacement would fail the same way),
 * or, once those have expired (an hour), from the pod's flb-validation termination message. A
 * broken eBPF pod with neither is not counted: its node may run eBPF and the pod have failed for
 * another reason (it stays among the broken pods).
 */
export function ebpfUnavailableNodes(brokenPods: readonly V1Pod[], events: readonly CoreV1Event[]): EbpfNodeFacts[] {
  const verdicts = new Map<string, { node: string; reason: string }>();
  for (const event of events) {
    const verdict = EBPF_VERDICT.exec(event.message ?? '')?.[1];
    const pod = event.involvedObject;
    if (verdict === undefined || pod.kind !== 'Pod') continue;
    verdicts.set(`${pod.namespace}/${pod.name}`, { node: event.source?.host ?? '', reason: verdict });
  }
  const byNode = new Map<string, EbpfNodeFacts>();
  for (const pod of brokenPods) {
    const name = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
    const verdict = verdicts.get(name) ?? validationVerdict(pod);
    if (!inEbpfMode(pod) || !verdict) continue;
    const node = pod.spec?.nodeName ?? verdict.node;
    const entry = byNode.get(node) ?? { node, pods: [], reason: verdict.reason };
    entry.pods.push(name);
    byNode.set(node, entry);
  }
  return [...byNode.values()].sort((a, b) => a.node.localeCompare(b.node));
}

/** Injected pods (by the label the injector gives them), with when their sidecar started running. */
export async function injectedPods(kc: KubeConfig): Promise<InjectedPodFacts[]> {
  const pods = await withDeadline(
    'list injected pods',
    kc.makeApiClient(CoreV1Api).listPodForAllNamespaces({ labelSelector: `${SIDECAR_INJECTED_LABEL}=${SIDECAR_INJECTED_VALUE}` }),
  );
  return pods.items
    .filter((p) => p.metadata?.namespace && p.metadata.name)
    .map((p) => {
      const sidecar = [...(p.status?.initContainerStatuses ?? []), ...(p.status?.containerStatuses ?? [])].find((c) => c.name === SIDECAR_CONTAINER_NAME);
      const started = sidecar?.state?.running?.startedAt;
      return {
        id: sidecarId({ kind: 'pod', namespace: p.metadata!.namespace!, name: p.metadata!.name! }),
        ...(started ? { sidecarStartedAt: new Date(started as unknown as string).getTime() } : {}),
        ...(p.metadata?.deletionTimestamp ? { deleting: true } : {}),
      };
    });
}
