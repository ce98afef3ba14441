/*
 * The diagnostics commands' runners: gather facts (facts.ts, repo-client.ts), hand them to the
 * pure cores (checks.ts, sidecars.ts, validate.ts, completion.ts), print the result on stdout.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { Command } from 'commander';
import { SIDECAR_STATUS_ANNOTATION } from '../common/contract/annotations.js';
import type { Mesh } from '../common/contract/index.js';
import { ActionableError } from '../common/errors.js';
import { loadKubeConfig } from '../common/kube.js';
import { createLogger, describeError } from '../common/log.js';
import {
  checkApiGroups,
  checkApiServer,
  checkBridgeLeader,
  checkBridgeSources,
  checkCaBundle,
  checkCni,
  checkInstallPermissions,
  checkMeshSettings,
  checkNativeSidecars,
  checkNotInstalled,
  checkRepo,
  checkSidecarsReporting,
  checkWebhookAnswers,
  checkWebhookConfiguration,
  renderChecks,
  summarize,
  type CaBundleFacts,
  type CertManagerCertificate,
  type CheckResult,
  type CheckSummary,
  type RepoFacts,
} from './checks.js';
import { bashCompletion, completionTree, zshCompletion } from './completion.js';
import {
  apiGroupFacts,
  apiMessage,
  apiServerFacts,
  bridgeStatusFacts,
  cniFacts,
  injectedPods,
  certificateSecretName,
  injectorSecretFacts,
  installPermissionFacts,
  leaseFacts,
  meshSettingsFacts,
  webhookAnswerFacts,
  webhookConfigFacts,
  webhookExists,
  withDeadline,
  type ConfigMapRef,
} from './facts.js';
import { RepoClient, RepoUnreachable, eachLimited, type RepoAccess } from './repo-client.js';
import { proxyConfigView, proxyStatusRows, renderProxyConfig, renderProxyStatus, sidecarTarget, type SidecarCodebaseFacts } from './sidecars.js';
import { renderValidation, validateSources } from './validate.js';

export type OutputFormat = 'table' | 'json';

/** Where the mesh's parts are, as flb check and proxy-status look for them. */
export interface MeshLocation {
  kubeconfig?: string;
  /** The mesh's (control plane's) namespace. */
  namespace: string;
  meshConfigMap: ConfigMapRef;
  repo: { url?: string; caFile?: string; certFile?: string; keyFile?: string; tlsServerName?: string; clientSecret: string };
}

/** The Secret the injector keeps its own CA and serving certificate in (the chart's, and flb webhook serve's default). */
export const DEFAULT_INJECTOR_SECRET = 'flb-injector-tls';

export interface CheckOptions extends MeshLocation {
  preInstall: boolean;
  webhookConfig: string;
  /** Unset: cert-manager's Secret when the webhook configuration names a Certificate, else DEFAULT_INJECTOR_SECRET. */
  injectorSecret?: string;
  probeNamespace?: string;
  bridgeUrls: string[];
  bridgeAdminPort: number;
  lease: string;
  staleAfterMs: number;
  output: OutputFormat;
}

const write = (text: string) => void process.stdout.write(text);

function readPem(path: string, flag: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new ActionableError(`cannot read ${path} (${flag}): ${describeError(error)}`, `check the path given to ${flag}`);
  }
}

/**
 * How to reach the repo: --repo-url, else the mesh settings' repo.url; the TLS files given, else
 * the control plane's client certificate from its Secret (the chart's flb-repo-client).
 */
async function repoAccess(location: MeshLocation, kc: KubeConfig | undefined, mesh: Mesh | undefined): Promise<RepoAccess> {
  const { repo, namespace } = location;
  const url = repo.url ?? mesh?.repo.url;
  if (!url)
    throw new ActionableError(
      'no repo address: --repo-url is not given and the mesh settings could not be read',
      `pass --repo-url https://HOST:6060 (and --repo-ca-file, --repo-cert-file, --repo-key-file), or fix the mesh settings ConfigMap ${location.meshConfigMap.namespace}/${location.meshConfigMap.name}`,
    );
  if ((repo.certFile === undefined) !== (repo.keyFile === undefined))
    throw new ActionableError('--repo-cert-file and --repo-key-file go together', 'give both, or neither');
  const given = {
    ...(repo.caFile ? { ca: readPem(repo.caFile, '--repo-ca-file') } : {}),
    ...(repo.certFile ? { cert: readPem(repo.certFile, '--repo-cert-file'), key: readPem(repo.keyFile!, '--repo-key-file') } : {}),
  };
  const serverName = repo.tlsServerName ? { serverName: repo.tlsServerName } : {};
  if (given.cert && (given.ca || !url.startsWith('https:'))) return { url, ...given, ...serverName, credentials: `client certificate ${repo.certFile}` };
  // What is missing comes from the control plane's client certificate Secret.
  let secret: Record<string, string> | undefined;
  let secretProblem = '';
  if (kc) {
    try {
      const found = await withDeadline('read the repo client Secret', kc.makeApiClient(CoreV1Api).readNamespacedSecret({ name: repo.clientSecret, namespace }));
      secret = Object.fromEntries(Object.entries(found.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
    } catch (error) {
      secretProblem = `; Secret ${namespace}/${repo.clientSecret}: ${apiMessage(error)}`;
    }
  }
  const ca = given.ca ?? secret?.['ca.crt'];
  const cert = given.cert ?? secret?.['tls.crt'];
  const key = given.key ?? secret?.['tls.key'];
  const from = given.cert
    ? `client certificate ${repo.certFile}`
    : cert
      ? `client certificate from Secret ${namespace}/${repo.clientSecret}`
      : `no client certificate${secretProblem}`;
  return { url, ...(ca ? { ca } : {}), ...(cert && key ? { cert, key } : {}), ...serverName, credentials: from };
}

function kubeConfigOrUndefined(path: string | undefined): { kc?: KubeConfig; problem?: string } {
  try {
    return { kc: loadKubeConfig(path) };
  } catch (error) {
    return { problem: error instanceof ActionableError ? error.message : describeError(error) };
  }
}

async function repoFacts(client: RepoClient): Promise<{ facts: RepoFacts; codebases?: string[] }> {
  const base = { url: client.access.url, credentials: client.access.credentials };
  try {
    const answer = await client.codebases();
    return { facts: { ...base, answer }, codebases: answer.status === 200 ? answer.codebases : undefined };
  } catch (error) {
    const code = error instanceof RepoUnreachable ? error.code : (error as NodeJS.ErrnoException).code;
    return { facts: { ...base, error: { ...(code ? { code } : {}), message: (error as Error).message } } };
  }
}

/** Every sidecar codebase's facts, a few requests at a time. */
async function sidecarFacts(client: RepoClient, ids: string[]): Promise<SidecarCodebaseFacts[]> {
  const found: SidecarCodebaseFacts[] = [];
  await eachLimited(ids, 8, async (id) => {
    const facts = await client.sidecar(id);
    if (facts) found.push(facts);
  });
  return found;
}

export async function gatherChecks(options: CheckOptions): Promise<CheckResult[]> {
  const { namespace } = options;
  const loaded = kubeConfigOrUndefined(options.kubeconfig);
  if (!loaded.kc) throw new ActionableError(`flb check needs the Kubernetes API: ${loaded.problem}`, 'pass --kubeconfig FILE or set KUBECONFIG=FILE');
  const kc = loaded.kc;
  const apiserver = await apiServerFacts(kc);
  const first = [checkApiServer(apiserver), checkNativeSidecars(apiserver)];
  if (!apiserver.version) return first;

  if (options.preInstall) {
    const [groups, permissions, installed] = await Promise.all([
      apiGroupFacts(kc),
      installPermissionFacts(kc, namespace),
      webhookExists(kc, options.webhookConfig),
    ]);
    return [...first, checkApiGroups(groups), checkInstallPermissions(permissions), checkNotInstalled(installed)];
  }

  const webhookPromise = webhookConfigFacts(kc, options.webhookConfig);
  const [meshSettings, webhook, secret, lease, pods] = await Promise.all([
    meshSettingsFacts(kc, options.meshConfigMap),
    webhookPromise,
    webhookPromise.then((facts) => injectorSecret(kc, namespace, options.injectorSecret, facts.certManager)),
    leaseFacts(kc, namespace, options.lease),
    injectedPods(kc).then(
      (list) => ({ list }),
      (error: unknown) => ({ error: apiMessage(error) }),
    ),
  ]);
  const failurePolicies = (webhook.webhooks ?? []).map((w) => w.failurePolicy);
  const answersPromise = webhook.webhooks?.length ? webhookAnswerFacts(kc, namespace, failurePolicies, options.probeNamespace) : undefined;
  const bridgePromise = bridgeStatusFacts(kc, options.bridgeUrls, lease, options.bridgeAdminPort);
  const cniPromise = cniFacts(kc, namespace, meshSettings.mesh?.interception.mode);

  let repoResult: CheckResult;
  let codebases: Map<string, { lastReportAt?: number; rejected: number }> | undefined;
  let repoError: string | undefined;
  try {
    const client = new RepoClient(await repoAccess(options, kc, meshSettings.mesh));
    try {
      const repo = await repoFacts(client);
      repoResult = checkRepo(repo.facts, namespace);
      if (repo.codebases) {
        const sidecars = await sidecarFacts(client, RepoClient.sidecarIds(repo.codebases));
        codebases = new Map(
          sidecars.map((s) => {
            const last = s.instances.reduce<number | undefined>((at, i) => (at === undefined || i.timestamp > at ? i.timestamp : at), undefined);
            const rejected = s.instances.reduce((n, i) => Math.max(n, Array.isArray(i.status.rejected) ? i.status.rejected.length : 0), 0);
            return [s.id, { ...(last !== undefined ? { lastReportAt: last } : {}), rejected }];
          }),
        );
      } else repoError = repo.facts.error?.message ?? `GET /api/v1/repo answered ${repo.facts.answer?.status}`;
    } finally {
      client.close();
    }
  } catch (error) {
    repoError = describeError(error);
    repoResult = {
      id: 'repo',
      title: 'repo',
      status: 'fail',
      detail: error instanceof ActionableError ? error.message : repoError,
      hint: error instanceof ActionableError && error.hint ? error.hint : 'pass --repo-url and the TLS files',
    };
  }

  const [answers, bridge, cni] = await Promise.all([answersPromise, bridgePromise, cniPromise]);
  return [
    ...first,
    checkMeshSettings(meshSettings.facts),
    checkWebhookConfiguration(webhook, namespace),
    checkWebhookAnswers(answers ?? { namespace: '-', why: '', failurePolicies }, namespace, webhook.certManager),
    checkCaBundle(
      { webhooks: webhook.webhooks ?? [], secret, ...(webhook.certManager ? { certManager: webhook.certManager } : {}), now: Date.now() },
      namespace,
    ),
    repoResult,
    checkBridgeLeader(lease),
    checkBridgeSources(bridge, namespace),
    checkCni(cni),
    checkSidecarsReporting(
      {
        ...('list' in pods ? { pods: pods.list } : { podsError: pods.error }),
        ...(codebases ? { codebases } : {}),
        ...(repoError ? { repoError } : {}),
        now: Date.now(),
        staleAfterMs: options.staleAfterMs,
      },
      namespace,
    ),
  ];
}

/** Prints the report on stdout; any failed check fails the command (exit 1), as `flb iptables verify` does. */
export async function runCheck(options: CheckOptions): Promise<void> {
  const summary: CheckSummary = summarize(await gatherChecks(options));
  write(options.output === 'json' ? `${JSON.stringify(summary, null, 2)}\n` : renderChecks(summary));
  if (summary.failed)
    throw new ActionableError(
      `${summary.failed} of ${summary.results.length} checks failed: ${summary.results
        .filter((r) => r.status === 'fail')
        .map((r) => r.title)
        .join(', ')}`,
      options.output === 'json' ? 'each failed check has a hint' : 'each failed check above says how to fix it',
    );
}

// ---------------------------------------------------------------------------------------------

async function repoForCommand(location: MeshLocation): Promise<{ client: RepoClient; kc?: KubeConfig }> {
  const { repo } = location;
  const offline = repo.url && repo.certFile && (repo.caFile || repo.url.startsWith('http:'));
  const loaded = kubeConfigOrUndefined(location.kubeconfig);
  if (!loaded.kc && !offline)
    throw new ActionableError(
      `cannot find the repo: ${loaded.problem}`,
      'pass --kubeconfig (the repo address and client certificate are read from the cluster), or --repo-url, --repo-ca-file, --repo-cert-file and --repo-key-file',
    );
  let mesh: Mesh | undefined;
  if (!repo.url && loaded.kc) {
    const read = await meshSettingsFacts(loaded.kc, location.meshConfigMap);
    mesh = read.mesh;
  }
  return { client: new RepoClient(await repoAccess(location, loaded.kc, mesh)), ...(loaded.kc ? { kc: loaded.kc } : {}) };
}

async function codebaseList(client: RepoClient): Promise<string[]> {
  const repo = await repoFacts(client);
  const problem = checkRepo(repo.facts, 'flomesh');
  if (!repo.codebases) throw new ActionableError(`cannot read the repo: ${problem.detail}`, problem.hint);
  return repo.codebases;
}

export interface ProxyStatusOptions extends MeshLocation {
  staleAfterMs: number;
  output: OutputFormat;
}

export async function runProxyStatus(options: ProxyStatusOptions): Promise<void> {
  const log = createLogger('proxy-status');
  const { client, kc } = await repoForCommand(options);
  try {
    const ids = RepoClient.sidecarIds(await codebaseList(client));
    let pods: string[] | undefined;
    if (kc) {
      try {
        pods = (await injectedPods(kc)).filter((p) => !p.deleting).map((p) => p.id);
      } catch (error) {
        log.warn({ error: apiMessage(error) }, 'cannot list injected pods; showing only the sidecars the repo has');
      }
    }
    const rows = proxyStatusRows(await sidecarFacts(client, ids), pods, Date.now(), options.staleAfterMs);
    write(options.output === 'json' ? `${JSON.stringify(rows, null, 2)}\n` : renderProxyStatus(rows));
  } finally {
    client.close();
  }
}

export interface ProxyConfigOptions extends MeshLocation {
  target: string;
  /** The pod's namespace when the target is a bare name. */
  podNamespace: string;
  output: OutputFormat;
}

export async function runProxyConfig(options: ProxyConfigOptions): Promise<void> {
  const target = sidecarTarget(options.target, options.podNamespace);
  const { client, kc } = await repoForCommand(options);
  try {
    if (target.pod && kc) {
      let annotations: Record<string, string> | undefined;
      try {
        const pod = await withDeadline('read the pod', kc.makeApiClient(CoreV1Api).readNamespacedPod(target.pod));
        annotations = pod.metadata?.annotations ?? {};
      } catch (error) {
        if ((error as { code?: number }).code === 404)
          throw new ActionableError(
            `pod ${target.pod.namespace}/${target.pod.name} does not exist`,
            `kubectl -n ${target.pod.namespace} get pods (give NAMESPACE/NAME, or -n NAMESPACE)`,
          );
        throw new ActionableError(`cannot read pod ${target.pod.namespace}/${target.pod.name}: ${apiMessage(error)}`);
      }
      if (!annotations[SIDECAR_STATUS_ANNOTATION])
        throw new ActionableError(
          `pod ${target.pod.namespace}/${target.pod.name} has no sidecar: it was not injected (no ${SIDECAR_STATUS_ANNOTATION} annotation)`,
          `flb inject --explain says why for its manifest; label its namespace ${'flomesh.io/inject'}=enabled (or the pod ${'flomesh.io/inject'}=true) and recreate the pod`,
        );
    }
    const facts = await client.sidecar(target.id);
    if (!facts)
      throw new ActionableError(
        `the repo has no codebase for ${target.id}`,
        target.pod
          ? `the bridge makes one when it sees the injected pod: is it running (flb check)? ${kc ? '' : 'Without --kubeconfig, a pod without a sidecar looks the same.'}`.trim()
          : 'a VM gets its codebase from flb vm install; check the name (flb proxy-status lists every sidecar)',
      );
    const sidecarJson = await client.servedFiles(target.id, (path) => path === 'sidecar.json' || path === 'mesh.json');
    let allowed: string[] = ['*'];
    try {
      const parsed = JSON.parse(sidecarJson.files['sidecar.json'] ?? '{}') as { services?: unknown };
      if (Array.isArray(parsed.services)) allowed = parsed.services.map(String);
    } catch {
      // proxyConfigView reports it
    }
    const every = allowed.includes('*');
    const wanted = new Set(allowed.map((id) => `services/${id}.json`));
    const served = await client.servedFiles(
      target.id,
      (path) => path === 'sidecar.json' || path === 'mesh.json' || (path.startsWith('services/') && (every || wanted.has(path))),
    );
    const view = proxyConfigView({
      id: target.id,
      ...(facts.latest !== undefined ? { latest: facts.latest } : {}),
      instances: facts.instances,
      files: served.files,
      catalogSize: served.listed.filter((p) => p.startsWith('services/')).length,
      unreadable: served.unreadable,
      now: Date.now(),
    });
    write(options.output === 'json' ? `${JSON.stringify(view, null, 2)}\n` : renderProxyConfig(view));
  } finally {
    client.close();
  }
}

// ---------------------------------------------------------------------------------------------

/** The files -f names: a file, `-` (stdin), or a folder's .yaml, .yml and .json files in name order (subfolders with -R). */
export function validationInputs(inputs: string[], recursive: boolean): { name: string; text: string }[] {
  const sources: { name: string; text: string }[] = [];
  const readOne = (path: string) => {
    try {
      sources.push({ name: path, text: path === '-' ? readFileSync(0, 'utf8') : readFileSync(path, 'utf8') });
    } catch (error) {
      throw new ActionableError(`cannot read ${path === '-' ? 'standard input' : path}: ${describeError(error)}`, 'check the path given to -f');
    }
  };
  const folder = (dir: string, top: boolean) => {
    const entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
    let found = 0;
    for (const entry of entries) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (recursive) found += folder(path, false);
      } else if (/\.(ya?ml|json)$/.test(entry.name)) {
        readOne(path);
        found++;
      }
    }
    if (top && found === 0)
      throw new ActionableError(
        `${dir} holds no .yaml, .yml or .json file${recursive ? '' : ' (subfolders are read with -R)'}`,
        'give a file, or a folder that holds some',
      );
    return found;
  };
  for (const input of inputs) {
    if (input === '-') readOne(input);
    else {
      let isFolder: boolean;
      try {
        isFolder = statSync(input).isDirectory();
      } catch (error) {
        throw new ActionableError(`cannot read ${input}: ${describeError(error)}`, 'check the path given to -f');
      }
      if (isFolder) folder(input, true);
      else readOne(input);
    }
  }
  return sources;
}

/** Prints every document's verdict on stdout; any problem fails the command (exit 1). */
export function runValidate(options: { inputs: string[]; recursive: boolean; output: OutputFormat }): void {
  const results = validateSources(validationInputs(options.inputs, options.recursive));
  write(options.output === 'json' ? `${JSON.stringify(results, null, 2)}\n` : renderValidation(results));
  const bad = results.filter((r) => r.problems.length);
  if (bad.length)
    throw new ActionableError(
      `${bad.length} of ${results.length} documents are not valid`,
      'fix each field named above (the contract and its defaults: common/contract/README.md)',
    );
}

export function printCompletion(shell: 'bash' | 'zsh', root: Command): void {
  const tree = completionTree(root);
  write(shell === 'bash' ? bashCompletion(tree) : zshCompletion(tree));
}

/**
 * The Secret holding the injector's CA and serving certificate: the one named, else with
 * cert-manager the Secret of the Certificate the webhook configuration names, else the injector's own.
 */
async function injectorSecret(
  kc: KubeConfig,
  namespace: string,
  named: string | undefined,
  certManager: CertManagerCertificate | undefined,
): Promise<CaBundleFacts['secret']> {
  if (named !== undefined || !certManager) return injectorSecretFacts(kc, namespace, named ?? DEFAULT_INJECTOR_SECRET);
  const secret = await certificateSecretName(kc, certManager);
  if (secret.name === undefined)
    return {
      namespace: certManager.namespace,
      name: `of Certificate ${certManager.name}`,
      found: false,
      error: `cannot read Certificate ${certManager.namespace}/${certManager.name} (${secret.error}); name its Secret with --injector-secret`,
    };
  return injectorSecretFacts(kc, certManager.namespace, secret.name);
}
