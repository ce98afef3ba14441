/*
 * `flb check`'s checks: each a pure function from facts the runner gathered (check-runner.ts) to a
 * result that says what was found and, when it is wrong, how to fix it. Nothing here talks to a
 * cluster, so every verdict and every hint is tested on facts written down in the test.
 */
import { X509Certificate } from 'node:crypto';
import YAML from 'yaml';
import { SIDECAR_CONTAINER_NAME, SIDECAR_STATUS_ANNOTATION } from '../common/contract/annotations.js';
import { MeshSchema, checkDocument, type Mesh } from '../common/contract/index.js';

export type CheckStatus = 'pass' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  /** Stable id (JSON output, tests). */
  id: string;
  /** What is checked, as the user reads it. */
  title: string;
  status: CheckStatus;
  /** What was found. */
  detail: string;
  /** What to do, on a failure or a warning. */
  hint?: string;
}

const pass = (id: string, title: string, detail: string): CheckResult => ({ id, title, status: 'pass', detail });
const fail = (id: string, title: string, detail: string, hint: string): CheckResult => ({ id, title, status: 'fail', detail, hint });
const warn = (id: string, title: string, detail: string, hint: string): CheckResult => ({ id, title, status: 'warn', detail, hint });
const skip = (id: string, title: string, detail: string): CheckResult => ({ id, title, status: 'skip', detail });

/** `12s`, `3m`, `2h`, `4d`. */
export function formatAge(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86400)}d`;
}

/** A list for a message: the first few, then how many more. */
export function someOf(items: readonly string[], shown = 5): string {
  return items.length <= shown ? items.join(', ') : `${items.slice(0, shown).join(', ')} and ${items.length - shown} more`;
}

// ---------------------------------------------------------------------------------------------
// The apiserver

/** The chart's kubeVersion: every API the mesh uses is there from 1.25. */
export const MIN_KUBERNETES = { major: 1, minor: 25 } as const;
/** Native sidecars (init containers with restartPolicy Always) are on by default from 1.29. */
export const NATIVE_SIDECARS_FROM = { major: 1, minor: 29 } as const;

export interface ApiServerFacts {
  /** The apiserver's address, from the kubeconfig. */
  server: string;
  /** /version, when it answered. */
  version?: { gitVersion: string; major: string; minor: string };
  error?: string;
}

/** major.minor from /version; managed clusters write minor as `29+`; undefined when it says nothing usable. */
export function kubernetesVersion(version: { gitVersion: string; major: string; minor: string }): { major: number; minor: number } | undefined {
  const major = Number.parseInt(version.major, 10);
  const minor = Number.parseInt(version.minor, 10);
  if (Number.isFinite(major) && Number.isFinite(minor) && major > 0) return { major, minor };
  const match = /^v?(\d+)\.(\d+)\./.exec(version.gitVersion);
  if (match && Number(match[1]) > 0) return { major: Number(match[1]), minor: Number(match[2]) };
  return undefined;
}

const atLeast = (v: { major: number; minor: number }, min: { major: number; minor: number }) =>
  v.major > min.major || (v.major === min.major && v.minor >= min.minor);

export function checkApiServer(facts: ApiServerFacts): CheckResult {
  const id = 'apiserver';
  const title = 'Kubernetes API';
  if (!facts.version)
    return fail(
      id,
      title,
      `the apiserver at ${facts.server} does not answer: ${facts.error ?? 'no answer'}`,
      'check the kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config) and that kubectl version answers',
    );
  const version = kubernetesVersion(facts.version);
  if (!version)
    return warn(
      id,
      title,
      `${facts.server} answers, but its version ${facts.version.gitVersion} says no release (a build without version stamps?)`,
      `flb-mesh needs Kubernetes ${MIN_KUBERNETES.major}.${MIN_KUBERNETES.minor} or later; check the cluster's release by other means`,
    );
  if (!atLeast(version, MIN_KUBERNETES))
    return fail(
      id,
      title,
      `Kubernetes ${facts.version.gitVersion} at ${facts.server} is older than ${MIN_KUBERNETES.major}.${MIN_KUBERNETES.minor}`,
      `upgrade the cluster to Kubernetes ${MIN_KUBERNETES.major}.${MIN_KUBERNETES.minor} or later (the chart refuses older ones)`,
    );
  return pass(id, title, `Kubernetes ${facts.version.gitVersion} at ${facts.server}`);
}

export function checkNativeSidecars(facts: ApiServerFacts): CheckResult {
  const id = 'native-sidecars';
  const title = 'native sidecars';
  const version = facts.version && kubernetesVersion(facts.version);
  if (!facts.version) return skip(id, title, 'the apiserver did not answer');
  if (!version)
    return warn(
      id,
      title,
      `cannot tell from version ${facts.version.gitVersion}; the injector (--native-sidecars auto) will inject sidecars as ordinary containers`,
      'run the injector with --native-sidecars true if the cluster is 1.29 or later',
    );
  if (atLeast(version, NATIVE_SIDECARS_FROM))
    return pass(id, title, 'supported: the sidecar is a native sidecar, started before the app and stopped after it; Jobs complete');
  return warn(
    id,
    title,
    `not on by default before 1.29 (this is ${version.major}.${version.minor}): the sidecar is the pod's first container, with a postStart hook that waits until it is ready; a Job's pod does not complete while its sidecar runs`,
    'upgrade to Kubernetes 1.29 or later for native sidecars',
  );
}

// ---------------------------------------------------------------------------------------------
// Pre-install: what the install needs from the cluster and from whoever installs

export interface ApiGroupFacts {
  /** group/version strings the apiserver serves, e.g. admissionregistration.k8s.io/v1. */
  served?: string[];
  error?: string;
}

/** The APIs the mesh's parts use, and what for. */
export const REQUIRED_APIS: Record<string, string> = {
  'admissionregistration.k8s.io/v1': 'the sidecar injector (MutatingWebhookConfiguration)',
  'coordination.k8s.io/v1': "the bridge's leader election (Lease)",
  'discovery.k8s.io/v1': "the bridge's Kubernetes source (EndpointSlices)",
  'authentication.k8s.io/v1': "the repo's check of sidecars' ServiceAccount tokens (TokenReview)",
  'apps/v1': 'the control plane (Deployments, StatefulSet, DaemonSet)',
  'scheduling.k8s.io/v1': "the control plane's PriorityClasses",
};

export function checkApiGroups(facts: ApiGroupFacts): CheckResult {
  const id = 'api-groups';
  const title = 'Kubernetes APIs';
  if (!facts.served) return skip(id, title, `cannot list the served APIs: ${facts.error ?? 'no answer'}`);
  const missing = Object.keys(REQUIRED_APIS).filter((api) => !facts.served!.includes(api));
  if (missing.length)
    return fail(
      id,
      title,
      `not served: ${missing.map((api) => `${api} (${REQUIRED_APIS[api]})`).join(', ')}`,
      'enable these APIs on the apiserver (--runtime-config), or use a Kubernetes release that serves them',
    );
  return pass(id, title, `every API the mesh uses is served (${Object.keys(REQUIRED_APIS).length})`);
}

export interface PermissionFacts {
  /** What the install does, e.g. 'create mutatingwebhookconfigurations (admissionregistration.k8s.io)'. */
  action: string;
  allowed?: boolean;
  error?: string;
}

export function checkInstallPermissions(facts: PermissionFacts[]): CheckResult {
  const id = 'install-permissions';
  const title = 'permission to install';
  const unknown = facts.filter((f) => f.allowed === undefined);
  const denied = facts.filter((f) => f.allowed === false);
  if (denied.length)
    return fail(
      id,
      title,
      `you may not: ${denied.map((f) => f.action).join('; ')}`,
      'install as a cluster administrator (the chart makes cluster-wide objects: the webhook configuration, ClusterRoles, PriorityClasses)',
    );
  if (unknown.length)
    return warn(
      id,
      title,
      `could not ask the apiserver about: ${unknown.map((f) => `${f.action} (${f.error ?? 'no answer'})`).join('; ')}`,
      'kubectl auth can-i create mutatingwebhookconfigurations answers the same question',
    );
  return pass(id, title, `allowed: ${facts.length} kinds of object the chart makes`);
}

export function checkNotInstalled(facts: { webhookConfigName: string; exists?: boolean; error?: string }): CheckResult {
  const id = 'existing-install';
  const title = 'existing install';
  if (facts.exists === undefined) return skip(id, title, `cannot tell: ${facts.error ?? 'no answer'}`);
  if (facts.exists)
    return warn(
      id,
      title,
      `MutatingWebhookConfiguration ${facts.webhookConfigName} exists: flb-mesh (or part of it) is installed already`,
      "upgrade it (helm upgrade), or check it with 'flb check' (without --pre-install)",
    );
  return pass(id, title, 'no flb-mesh webhook configuration yet');
}

// ---------------------------------------------------------------------------------------------
// Mesh settings

export interface MeshSettingsFacts {
  where: string;
  found: boolean;
  /** The contract's verdict on the key's text. */
  problems?: string[];
  error?: string;
}

/** The mesh settings in a ConfigMap key's text, or every problem the contract finds with them. */
export function meshFromText(text: string): { mesh: Mesh } | { problems: string[] } {
  let data: unknown;
  try {
    data = YAML.parse(text);
  } catch (error) {
    return { problems: [`not YAML: ${(error as Error).message.split('\n')[0]}`] };
  }
  const result = checkDocument(MeshSchema, data);
  return result.ok ? { mesh: result.value } : { problems: result.issues.map((i) => `${i.field}: ${i.message}`) };
}

export function checkMeshSettings(facts: MeshSettingsFacts): CheckResult {
  const id = 'mesh-settings';
  const title = 'mesh settings';
  if (facts.error) return fail(id, title, `cannot read ${facts.where}: ${facts.error}`, 'check that you may read ConfigMaps in the mesh namespace');
  if (!facts.found)
    return fail(
      id,
      title,
      `${facts.where} does not exist: the injector injects nothing and the bridge publishes the defaults`,
      'install the chart (it renders the ConfigMap), or create it with a mesh.yaml; check one with flb validate -f FILE',
    );
  if (facts.problems?.length)
    return fail(
      id,
      title,
      `${facts.where} is refused: ${facts.problems.join('; ')}`,
      'fix those fields (kubectl edit configmap); the injector and the bridge keep the last good settings meanwhile',
    );
  return pass(id, title, `${facts.where} is valid`);
}

// ---------------------------------------------------------------------------------------------
// The sidecar injector

export interface WebhookEntry {
  name: string;
  url?: string;
  service?: { namespace: string; name: string; port: number; path?: string };
  /** PEM certificates decoded from clientConfig.caBundle. */
  caBundle: string[];
  failurePolicy: string;
}

export interface WebhookConfigFacts {
  name: string;
  webhooks?: WebhookEntry[];
  error?: string;
  /** For a service-backed webhook: that Service, and its ready endpoints. */
  service?: { namespace: string; name: string; exists: boolean; readyEndpoints: number; error?: string };
  /** The Certificate whose CA cert-manager's CA injector keeps in the caBundles (the cert-manager.io/inject-ca-from annotation). */
  certManager?: CertManagerCertificate;
}

export interface CertManagerCertificate {
  namespace: string;
  name: string;
}

/** What fixes a caBundle: the injector rewrites its own; cert-manager's CA injector writes it from the Certificate. */
function caBundleFix(meshNamespace: string, certManager: CertManagerCertificate | undefined): string {
  if (certManager)
    return (
      `cert-manager's CA injector writes the caBundle from Certificate ${certManager.namespace}/${certManager.name}: ` +
      `check that it is Ready (kubectl -n ${certManager.namespace} describe certificate ${certManager.name}) and that cert-manager's cainjector runs`
    );
  return `the injector rewrites the caBundle when it starts and whenever it renews: kubectl -n ${meshNamespace} rollout restart deploy/flb-injector`;
}

const describeTarget = (entry: WebhookEntry) =>
  entry.url ?? (entry.service ? `Service ${entry.service.namespace}/${entry.service.name}:${entry.service.port}${entry.service.path ?? ''}` : 'nowhere');

export function checkWebhookConfiguration(facts: WebhookConfigFacts, meshNamespace: string): CheckResult {
  const id = 'webhook-config';
  const title = 'webhook configuration';
  const install = `install the chart, or: flb webhook install --service ${meshNamespace}/flb-injector:443`;
  if (facts.error)
    return fail(id, title, `cannot read MutatingWebhookConfiguration ${facts.name}: ${facts.error}`, 'check that you may read it (cluster-scoped)');
  if (!facts.webhooks) return fail(id, title, `MutatingWebhookConfiguration ${facts.name} does not exist: no pod gets a sidecar`, install);
  if (facts.webhooks.length === 0) return fail(id, title, `MutatingWebhookConfiguration ${facts.name} has no webhooks`, install);
  const targets = [...new Set(facts.webhooks.map(describeTarget))];
  const service = facts.service;
  if (service) {
    const named = `Service ${service.namespace}/${service.name}`;
    if (service.error)
      return fail(id, title, `cannot read the webhook's ${named}: ${service.error}`, 'check that you may read Services and EndpointSlices there');
    if (!service.exists)
      return fail(
        id,
        title,
        `the webhook's ${named} does not exist: the apiserver cannot reach the injector`,
        `helm upgrade the release to restore it (kubectl -n ${service.namespace} get service ${service.name})`,
      );
    if (service.readyEndpoints === 0)
      return fail(
        id,
        title,
        `the webhook's ${named} has no ready endpoint: no injector pod is ready`,
        `kubectl -n ${service.namespace} get pods -l app.kubernetes.io/name=flb-injector, then its logs (kubectl -n ${service.namespace} logs deploy/flb-injector)`,
      );
  }
  const policies = [...new Set(facts.webhooks.map((w) => w.failurePolicy))].join(', ');
  return pass(
    id,
    title,
    `${facts.name}: ${facts.webhooks.length} webhooks to ${targets.join(', ')}${service ? ` (${service.readyEndpoints} ready endpoints)` : ''}, failurePolicy ${policies}`,
  );
}

/** What a server-side dry-run pod create gave back. */
export type DryRunOutcome =
  | {
      kind: 'created';
      containers: string[];
      initContainers: string[];
      annotations: Record<string, string>;
      /** Warnings the apiserver returned (the injector's Pod Security warning among them). */
      warnings: string[];
    }
  | { kind: 'refused'; status: number; message: string }
  | { kind: 'error'; message: string };

export interface WebhookAnswerFacts {
  namespace: string;
  /** How the namespace was chosen, for the message. */
  why: string;
  outcome?: DryRunOutcome;
  failurePolicies: string[];
}

/** What to do about the apiserver's message when it called the webhook and failed. */
export function webhookCallHint(message: string, meshNamespace: string, certManager?: CertManagerCertificate): string {
  const logs = `kubectl -n ${meshNamespace} logs deploy/flb-injector`;
  if (/x509|certificate|tls:/i.test(message))
    return `the apiserver does not trust the injector's certificate: see the caBundle check; ${caBundleFix(meshNamespace, certManager)}`;
  if (/not ready|no mesh settings/i.test(message))
    return `the injector has no valid mesh settings: fix the ConfigMap ${meshNamespace}/flb-mesh (see the mesh settings check), then ${logs}`;
  if (/no endpoints available|service "[^"]+" not found|connection refused|no route to host|i\/o timeout|context deadline exceeded|EOF/i.test(message))
    return `the injector is not running or not reachable from the apiserver: kubectl -n ${meshNamespace} get pods -l app.kubernetes.io/name=flb-injector, then ${logs}; a NetworkPolicy must let the apiserver reach its port`;
  return `read the injector's log: ${logs}`;
}

export function checkWebhookAnswers(facts: WebhookAnswerFacts, meshNamespace: string, certManager?: CertManagerCertificate): CheckResult {
  const id = 'webhook-answers';
  const title = 'webhook answers';
  const where = `a dry-run pod in namespace ${facts.namespace} (${facts.why})`;
  const outcome = facts.outcome;
  if (!outcome) return skip(id, title, 'no webhook configuration to try');
  if (outcome.kind === 'error') return fail(id, title, `${where} could not be sent: ${outcome.message}`, 'check the apiserver check above');
  if (outcome.kind === 'refused') {
    if (/failed calling webhook|failed to call webhook|admission webhook/i.test(outcome.message))
      return fail(id, title, `${where} was refused: ${outcome.message}`, webhookCallHint(outcome.message, meshNamespace, certManager));
    return fail(
      id,
      title,
      `${where} was refused (${outcome.status}): ${outcome.message}`,
      'the apiserver refused it before the webhook could inject; fix what it names',
    );
  }
  const injected = outcome.initContainers.includes(SIDECAR_CONTAINER_NAME) || outcome.containers.includes(SIDECAR_CONTAINER_NAME);
  if (!injected || !outcome.annotations[SIDECAR_STATUS_ANNOTATION]) {
    const ignored = facts.failurePolicies.includes('Ignore');
    return fail(
      id,
      title,
      `${where} came back without a sidecar${ignored ? ': with failurePolicy Ignore a webhook that fails lets pods through uninjected' : ''}`,
      ignored
        ? `find out why the webhook fails: kubectl -n ${meshNamespace} logs deploy/flb-injector (and the apiserver's log); the other webhook checks name the usual causes`
        : `the webhook did not inject: check its selectors (kubectl get mutatingwebhookconfiguration -o yaml) and kubectl -n ${meshNamespace} logs deploy/flb-injector`,
    );
  }
  const native = outcome.initContainers.includes(SIDECAR_CONTAINER_NAME);
  const warnings = outcome.warnings.length ? `; warnings: ${outcome.warnings.join('; ')}` : '';
  return pass(
    id,
    title,
    `${where} was injected: ${SIDECAR_CONTAINER_NAME} as ${native ? 'a native sidecar' : 'a container'}, init containers ${outcome.initContainers.join(', ') || 'none'}${warnings}`,
  );
}

export interface CaBundleFacts {
  webhooks: WebhookEntry[];
  /** The injector's Secret: where its CA and serving certificate live (with cert-manager, its Certificate's). */
  secret: { namespace: string; name: string; found: boolean; caPem?: string; certPem?: string; error?: string };
  certManager?: CertManagerCertificate;
  now: number;
}

function certificates(pems: string[]): { cert?: X509Certificate; error?: string }[] {
  return pems.map((pem) => {
    try {
      return { cert: new X509Certificate(pem) };
    } catch (error) {
      return { error: (error as Error).message };
    }
  });
}

/** Splits a PEM bundle into its certificates. */
export function splitPem(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
}

export function checkCaBundle(facts: CaBundleFacts, meshNamespace: string): CheckResult {
  const id = 'webhook-ca-bundle';
  const title = 'webhook caBundle';
  const restart = caBundleFix(meshNamespace, facts.certManager);
  if (facts.webhooks.length === 0) return skip(id, title, 'no webhook configuration');
  const empty = facts.webhooks.filter((w) => w.caBundle.length === 0).map((w) => w.name);
  if (empty.length) return fail(id, title, `no caBundle on ${empty.join(', ')}: the apiserver cannot verify the injector`, restart);
  const expiredInBundle: string[] = [];
  for (const webhook of facts.webhooks) {
    for (const { cert, error } of certificates(webhook.caBundle)) {
      if (error) return fail(id, title, `the caBundle of ${webhook.name} holds a certificate that cannot be read: ${error}`, restart);
      if (cert && Date.parse(cert.validTo) <= facts.now && !expiredInBundle.includes(cert.subject)) expiredInBundle.push(cert.subject);
    }
  }
  const secret = facts.secret;
  const named = `Secret ${secret.namespace}/${secret.name}`;
  if (!secret.found || !secret.caPem || !secret.certPem)
    return warn(
      id,
      title,
      `every webhook has a caBundle, but ${named} ${secret.error ? `cannot be read (${secret.error})` : secret.found ? 'lacks ca.crt or tls.crt' : 'does not exist'}, so it cannot be compared with what the injector serves`,
      `check that you may read Secrets in ${secret.namespace}; with a certificate from elsewhere (cert-manager), compare its CA with the caBundle yourself`,
    );
  const [ca, serving] = [certificates([secret.caPem])[0]!, certificates([secret.certPem])[0]!];
  if (!ca.cert || !serving.cert) return fail(id, title, `${named} holds a certificate that cannot be read: ${ca.error ?? serving.error}`, restart);
  if (Date.parse(serving.cert.validTo) <= facts.now)
    return fail(id, title, `the injector's serving certificate in ${named} expired on ${serving.cert.validTo}`, restart);
  for (const webhook of facts.webhooks) {
    const bundle = certificates(webhook.caBundle).flatMap((c) => (c.cert ? [c.cert] : []));
    const signer = bundle.find((c) => serving.cert!.checkIssued(c) && serving.cert!.verify(c.publicKey) && Date.parse(c.validTo) > facts.now);
    if (!signer)
      return fail(
        id,
        title,
        `the caBundle of ${webhook.name} does not hold the CA that signed the injector's serving certificate (${named}): the apiserver refuses the injector's TLS`,
        restart,
      );
    if (!bundle.some((c) => c.fingerprint256 === ca.cert!.fingerprint256))
      return fail(
        id,
        title,
        `the caBundle of ${webhook.name} lacks the injector's current CA (${named}); after the next renewal the apiserver would refuse it`,
        restart,
      );
  }
  const left = Date.parse(serving.cert.validTo) - facts.now;
  const stale = expiredInBundle.length ? `; expired CAs still in the bundle: ${expiredInBundle.join(', ')}` : '';
  return pass(id, title, `holds the injector's CA; its serving certificate is valid for ${formatAge(left)} more${stale}`);
}

// ---------------------------------------------------------------------------------------------
// The repo

export interface RepoFacts {
  url: string;
  /** Where the TLS material came from, for the message. */
  credentials: string;
  /** The answer to GET /api/v1/repo, when there was one. */
  answer?: { status: number; codebases: string[]; server?: string };
  /** A connection or TLS failure: Node's code and message. */
  error?: { code?: string; message: string };
}

export function repoErrorHint(url: string, code: string | undefined, meshNamespace: string): string {
  const host = (() => {
    try {
      return new URL(url).hostname;
    } catch {
      return url;
    }
  })();
  switch (code) {
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `${host} does not resolve here: it is the name pods use. Run flb check from a pod in the cluster, or pass --repo-url with an address this machine reaches`;
    case 'ECONNREFUSED':
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ECONNRESET':
      return `nothing answers at ${url}: kubectl -n ${meshNamespace} get pods -l app.kubernetes.io/name=flb-repo, then their logs (kubectl -n ${meshNamespace} logs -l app.kubernetes.io/name=flb-repo --prefix; a StatefulSet with the disk store, a Deployment on etcd)`;
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
      return `the repo's certificate is not signed by the CA given (--repo-ca-file, or ca.crt of Secret ${meshNamespace}/flb-repo-client): pass the repo's CA`;
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return `the repo's certificate does not name ${host}: pass --repo-tls-server-name with a name it was issued for (flb-repo.${meshNamespace}.svc), or add ${host} to it (the chart's repo.tls.extraDnsNames / extraIpAddresses)`;
    case 'CERT_HAS_EXPIRED':
      return "the repo's certificate expired: helm upgrade issues a new one (the chart reissues after two thirds of its life)";
    default:
      return `check that ${url} is the repo's address (--repo-url)`;
  }
}

export function checkRepo(facts: RepoFacts, meshNamespace: string): CheckResult {
  const id = 'repo';
  const title = 'repo';
  if (facts.error)
    return fail(
      id,
      title,
      `${facts.url} (${facts.credentials}): ${facts.error.message}${facts.error.code && !facts.error.message.includes(facts.error.code) ? ` (${facts.error.code})` : ''}`,
      repoErrorHint(facts.url, facts.error.code, meshNamespace),
    );
  const answer = facts.answer;
  if (!answer) return skip(id, title, 'not asked');
  if (answer.status === 401 || answer.status === 403)
    return fail(
      id,
      title,
      `${facts.url} refused the client certificate (${answer.status}; ${facts.credentials})`,
      `the control plane's certificate (CN flb-control-plane) reads everything: pass it with --repo-cert-file and --repo-key-file, or let flb check read Secret ${meshNamespace}/flb-repo-client`,
    );
  if (answer.status !== 200)
    return fail(id, title, `${facts.url} answered ${answer.status} to GET /api/v1/repo`, 'is --repo-url the repo (flb repo) and not something else?');
  const plain = facts.url.startsWith('http:');
  if (!answer.codebases.includes('/flb/mesh'))
    return fail(
      id,
      title,
      `${facts.url} answers, but /flb/mesh is not published: the bridge has not published the catalog`,
      'see the bridge checks below; the leader publishes /flb/mesh as soon as it leads',
    );
  const sidecars = answer.codebases.filter((c) => c.startsWith('/flb/sidecars/')).length;
  const detail = `${facts.url} answers${plain ? '' : ' over TLS'} (${facts.credentials}): /flb/mesh and ${sidecars} sidecar codebases`;
  if (plain)
    return warn(
      id,
      title,
      `${detail}, in plain HTTP`,
      'give the repo --tls-cert and --tls-key: sidecars in pods prove who they are with tokens, which travel in clear otherwise',
    );
  return pass(id, title, detail);
}

// ---------------------------------------------------------------------------------------------
// The registry bridge

export interface LeaseFacts {
  namespace: string;
  name: string;
  found: boolean;
  holder?: string;
  /** ms since the epoch. */
  renewTime?: number;
  leaseDurationSeconds?: number;
  error?: string;
  now: number;
}

export function checkBridgeLeader(facts: LeaseFacts): CheckResult {
  const id = 'bridge-leader';
  const title = 'bridge leader';
  const lease = `Lease ${facts.namespace}/${facts.name}`;
  const pods = `kubectl -n ${facts.namespace} get pods -l app.kubernetes.io/name=flb-bridge, then kubectl -n ${facts.namespace} logs deploy/flb-bridge`;
  if (facts.error) return fail(id, title, `cannot read ${lease}: ${facts.error}`, `check that you may read Leases in ${facts.namespace}`);
  if (!facts.found) return fail(id, title, `${lease} does not exist: no bridge replica has ever led, so nothing is published`, pods);
  if (!facts.holder) return fail(id, title, `${lease} has no holder: no replica leads, nothing is published`, pods);
  const renewed = facts.renewTime === undefined ? undefined : facts.now - facts.renewTime;
  const duration = (facts.leaseDurationSeconds ?? 15) * 1000;
  if (renewed === undefined || renewed > duration)
    return fail(
      id,
      title,
      `${facts.holder} holds ${lease} but has not renewed it for ${renewed === undefined ? 'ever' : formatAge(renewed)} (lease ${duration / 1000}s): no replica is leading`,
      pods,
    );
  return pass(id, title, `${facts.holder} leads (${lease} renewed ${formatAge(renewed)} ago)`);
}

/** What flb check reads of the bridge's /status (registry-bridge/bridge.ts BridgeStatus). */
export interface BridgeStatusView {
  identity: string;
  leader: boolean;
  leaseHolder?: string;
  mesh?: { name?: string; where?: string; problem?: string };
  sources: { name: string; kind: string; address?: string; state: string; lastContactAt?: number; lastError?: string; services?: number }[];
  sinks: { name: string; kind: string; address?: string; pending?: number; failures?: number; lastError?: string }[];
}

export interface BridgeStatusFacts {
  /** Where it was asked. */
  from: string;
  status?: BridgeStatusView;
  error?: string;
  now: number;
}

export function checkBridgeSources(facts: BridgeStatusFacts, meshNamespace: string): CheckResult {
  const id = 'bridge-sources';
  const title = "bridge's sources";
  const logs = `kubectl -n ${meshNamespace} logs deploy/flb-bridge`;
  if (!facts.status)
    return fail(
      id,
      title,
      `cannot read the leader's status from ${facts.from}: ${facts.error ?? 'no answer'}`,
      "pass the bridge's admin address with --bridge-url (flb bridge run --admin), or check that the apiserver may proxy to the bridge's pods",
    );
  const status = facts.status;
  if (!status.leader) return fail(id, title, `${status.identity} (at ${facts.from}) is not leading (leader: ${status.leaseHolder || 'none'})`, logs);
  const problems: string[] = [];
  if (status.mesh?.problem) problems.push(`a mesh settings edit was refused: ${status.mesh.problem}`);
  for (const source of status.sources) {
    if (source.state === 'synced') continue;
    const contact = source.lastContactAt ? `last contact ${formatAge(facts.now - source.lastContactAt)} ago` : 'never reached';
    problems.push(
      `source ${source.name} (${source.kind}${source.address ? ` at ${source.address}` : ''}) is ${source.state === 'starting' ? 'not synced yet' : source.state}, ${contact}${source.lastError ? `: ${source.lastError}` : ''}`,
    );
  }
  for (const sink of status.sinks) {
    if (sink.lastError && (sink.pending ?? 0) > 0)
      problems.push(`sink ${sink.name} (${sink.kind}${sink.address ? ` at ${sink.address}` : ''}) has ${sink.pending} changes waiting: ${sink.lastError}`);
  }
  if (problems.length)
    return fail(
      id,
      title,
      `${status.identity}: ${problems.join('; ')}`,
      `a stale source keeps what it published: check the registry at its address, and ${logs}; 'flb bridge status --url ${facts.from}' shows every source`,
    );
  const sources = status.sources.map((s) => `${s.name} (${s.kind})`);
  return pass(id, title, `${status.identity}: ${sources.length} sources synced: ${someOf(sources)}; ${status.sinks.length} sinks without errors`);
}

// ---------------------------------------------------------------------------------------------
// CNI

export interface CniFacts {
  /** The mesh's interception mode, when the mesh settings could be read. */
  mode?: string;
  namespace: string;
  daemonSet?: { name: string; found: boolean; desired: number; ready: number; error?: string };
  /** Pods the agent's repair loop labelled flomesh.io/cni-repair=broken. */
  brokenPods: string[];
  /** Of those, the eBPF pods, by node: their node's agent could not run eBPF (its feature check or load failed). */
  ebpfUnavailable?: EbpfNodeFacts[];
}

export interface EbpfNodeFacts {
  node: string;
  pods: string[];
  /** What the node's agent said is missing (its repair Event on the pods; Events last an hour by default). */
  reason: string;
}

export function checkCni(facts: CniFacts): CheckResult {
  const id = 'cni';
  const title = 'CNI plugin';
  if (facts.mode === undefined) return skip(id, title, 'the mesh settings could not be read, so the interception mode is unknown');
  // eBPF mode is CNI mode plus eBPF: the same plugin and node agent set pods up.
  if (facts.mode !== 'cni' && facts.mode !== 'ebpf')
    return skip(id, title, `interception mode ${facts.mode}: pods steer their own traffic, no CNI plugin is needed`);
  const ebpf = facts.mode === 'ebpf';
  const ds = facts.daemonSet;
  const named = `DaemonSet ${facts.namespace}/${ds?.name ?? 'flb-cni-node'}`;
  const logs = `kubectl -n ${facts.namespace} get pods -l app.kubernetes.io/name=flb-cni-node -o wide, then the logs of those not ready`;
  if (!ds || ds.error) return fail(id, title, `cannot read ${named}: ${ds?.error ?? 'not asked'}`, `check that you may read DaemonSets in ${facts.namespace}`);
  if (!ds.found)
    return fail(
      id,
      title,
      ebpf
        ? `the mesh uses eBPF interception but ${named} does not exist: pods fail their flb-validation init container (not registered with the eBPF programs)`
        : `the mesh uses CNI interception but ${named} does not exist: pods fail their flb-validation init container (no rules)`,
      `install the chart with mesh.interception.mode=${ebpf ? 'ebpf' : 'cni'} (it deploys the node agent), or switch the mesh to iptables`,
    );
  if (ds.desired === 0)
    return fail(id, title, `${named} runs on no node: no node can program pods`, "check the DaemonSet's nodeSelector and tolerations (the chart's cni values)");
  if (ds.ready < ds.desired)
    return fail(id, title, `${named}: ${ds.ready} of ${ds.desired} nodes have a ready CNI agent; pods on the others cannot start`, logs);
  const ebpfNodes = facts.ebpfUnavailable ?? [];
  if (ebpfNodes.length) {
    const nodes = ebpfNodes.map((n) => `node ${n.node} (${n.reason}): ${someOf(n.pods, 3)}`);
    const onEbpfNodes = new Set(ebpfNodes.flatMap((n) => n.pods));
    const others = facts.brokenPods.filter((p) => !onEbpfNodes.has(p));
    return fail(
      id,
      title,
      `eBPF interception is not available on ${ebpfNodes.length === 1 ? 'a node' : `${ebpfNodes.length} nodes`}, whose eBPF pods fail their validation: ${someOf(nodes, 3)}` +
        (others.length ? `; other pods found without interception (labelled flomesh.io/cni-repair=broken): ${someOf(others)}` : ''),
      `fix the node (its agent's log says what is missing; 'flb bpf check' on the node) and restart its agent (kubectl -n ${facts.namespace} delete pod on that node), ` +
        'then delete those pods; or give them cni or iptables mode (the flomesh.io/interception annotation, or the mesh)',
    );
  }
  if (facts.brokenPods.length)
    return fail(
      id,
      title,
      `pods found without interception (labelled flomesh.io/cni-repair=broken): ${someOf(facts.brokenPods)}`,
      'delete them so they start again with the rules (they have no controller to do it), and read the agent log of their node',
    );
  return pass(id, title, `${named} ready on ${ds.ready} of ${ds.desired} nodes${ebpf ? ' (eBPF mode)' : ''}`);
}

// ---------------------------------------------------------------------------------------------
// Sidecars

export interface InjectedPodFacts {
  id: string;
  /** When its sidecar container started running (ms), if it runs. */
  sidecarStartedAt?: number;
  deleting?: boolean;
}

export interface SidecarReportFacts {
  pods?: InjectedPodFacts[];
  podsError?: string;
  /** Sidecar codebases the repo has, and the last report of each (ms; undefined: none kept). */
  codebases?: Map<string, { lastReportAt?: number; rejected: number }>;
  repoError?: string;
  now: number;
  /** Sidecars report every 5 s; one silent for longer than this counts as not reporting. */
  staleAfterMs: number;
}

export function checkSidecarsReporting(facts: SidecarReportFacts, meshNamespace: string): CheckResult {
  const id = 'sidecars';
  const title = 'sidecars reporting';
  if (!facts.pods) return skip(id, title, `cannot list injected pods: ${facts.podsError ?? 'not asked'}`);
  if (!facts.codebases) return skip(id, title, `the repo could not be read${facts.repoError ? `: ${facts.repoError}` : ''}`);
  const noCodebase: string[] = [];
  const silent: string[] = [];
  let running = 0;
  for (const pod of facts.pods) {
    if (pod.deleting || pod.sidecarStartedAt === undefined) continue;
    running++;
    const runningFor = facts.now - pod.sidecarStartedAt;
    if (runningFor < facts.staleAfterMs) continue;
    const codebase = facts.codebases.get(pod.id);
    if (!codebase) noCodebase.push(pod.id);
    else if (codebase.lastReportAt === undefined) silent.push(`${pod.id} (no report kept: none in the last minute)`);
    else if (facts.now - codebase.lastReportAt > facts.staleAfterMs) silent.push(`${pod.id} (last report ${formatAge(facts.now - codebase.lastReportAt)} ago)`);
  }
  const withRejected = [...facts.codebases.entries()].filter(([, c]) => c.rejected > 0).map(([id]) => id);
  const problems: string[] = [];
  if (noCodebase.length) problems.push(`no codebase in the repo for ${someOf(noCodebase)} (the bridge makes one when it sees the pod)`);
  if (silent.length) problems.push(`not reporting for ${formatAge(facts.staleAfterMs)}: ${someOf(silent)}`);
  if (problems.length)
    return fail(
      id,
      title,
      problems.join('; '),
      `a sidecar reports every 5 s: read its log (kubectl logs POD -c flb-sidecar); one that cannot reach the repo says so there. For a missing codebase: kubectl -n ${meshNamespace} logs deploy/flb-bridge`,
    );
  if (withRejected.length)
    return warn(
      id,
      title,
      `${running} running sidecars report; ${withRejected.length} refused files of their configuration: ${someOf(withRejected)}`,
      'flb proxy-status lists each refused file and why; fix what the bridge publishes (its log names the source)',
    );
  return pass(id, title, `${running} running sidecars, every one reported within ${formatAge(facts.staleAfterMs)}`);
}

// ---------------------------------------------------------------------------------------------

export interface CheckSummary {
  results: CheckResult[];
  failed: number;
  warnings: number;
}

export function summarize(results: CheckResult[]): CheckSummary {
  return { results, failed: results.filter((r) => r.status === 'fail').length, warnings: results.filter((r) => r.status === 'warn').length };
}

const MARK: Record<CheckStatus, string> = { pass: '[ok]  ', warn: '[warn]', fail: '[FAIL]', skip: '[skip]' };

/** The report a person reads: one line per check, its hint under a failure or warning, a last line with the count. */
export function renderChecks(summary: CheckSummary): string {
  const lines: string[] = [];
  for (const r of summary.results) {
    lines.push(`${MARK[r.status]} ${r.title}: ${r.detail}`);
    if (r.hint && (r.status === 'fail' || r.status === 'warn')) lines.push(`       hint: ${r.hint}`);
  }
  const { failed, warnings } = summary;
  lines.push(
    '',
    failed
      ? `${failed} of ${summary.results.length} checks failed${warnings ? `, ${warnings} warnings` : ''}`
      : `all ${summary.results.filter((r) => r.status === 'pass').length} checks passed${warnings ? `, ${warnings} warnings` : ''}`,
  );
  return `${lines.join('\n')}\n`;
}
