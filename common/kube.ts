/*
 * The Kubernetes API from a command: which kubeconfig is used, in kubectl's order, and errors that
 * say which files were looked for and what to do. The client's own fallback when it finds nothing
 * (http://localhost:8080, refused later as "HTTP protocol is not allowed when skipTLSVerify is not
 * set") and its bare ENOENT told a user neither.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { KubeConfig, VersionApi } from '@kubernetes/client-node';
import { ActionableError } from './errors.js';

/**
 * The user's home, or undefined: os.homedir() throws (uv_os_homedir ENOENT) for a user with no
 * passwd entry and no HOME, as a control-plane container running as a bare UID can be.
 */
function homeDirectory(): string | undefined {
  try {
    return homedir();
  } catch {
    return undefined;
  }
}

/** Where a pod's ServiceAccount credentials are mounted. */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

const WHAT_TO_DO = "pass --kubeconfig FILE or set KUBECONFIG=FILE ('flb demo' prints one for a local control plane)";

/** Where to look (tests give their own). */
export interface KubeConfigLookup {
  env?: NodeJS.ProcessEnv;
  home?: string;
  /** Prefixed to SERVICE_ACCOUNT_DIR. */
  root?: string;
}

/**
 * A kubeconfig from --kubeconfig, else $KUBECONFIG (files that do not exist are skipped, as
 * kubectl does), else ~/.kube/config, else the pod's ServiceAccount (in-cluster). Throws an
 * ActionableError naming what was looked for when none gives a usable cluster.
 */
export function loadKubeConfig(path?: string, lookup: KubeConfigLookup = {}): KubeConfig {
  const env = lookup.env ?? process.env;
  if (path) {
    if (!existsSync(path)) throw new ActionableError(`the kubeconfig ${path} (--kubeconfig) does not exist`, `check the path, or ${WHAT_TO_DO}`);
    return fromFiles([path], '--kubeconfig');
  }
  const listed = (env.KUBECONFIG ?? '').split(delimiter).filter(Boolean);
  if (listed.length) {
    const present = listed.filter((file) => existsSync(file));
    if (!present.length) {
      throw new ActionableError(`KUBECONFIG=${env.KUBECONFIG}: ${listed.length > 1 ? 'none of these files exists' : 'the file does not exist'}`, WHAT_TO_DO);
    }
    return fromFiles(present, '$KUBECONFIG');
  }
  const home = lookup.home ?? homeDirectory();
  const homeConfig = home === undefined ? undefined : join(home, '.kube', 'config');
  if (homeConfig && existsSync(homeConfig)) return fromFiles([homeConfig], '~/.kube/config');
  const serviceAccount = `${lookup.root ?? ''}${SERVICE_ACCOUNT_DIR}`;
  const token = join(serviceAccount, 'token');
  if (existsSync(token)) {
    if (!env.KUBERNETES_SERVICE_HOST || !env.KUBERNETES_SERVICE_PORT) {
      throw new ActionableError(
        `a ServiceAccount token is mounted (${token}) but KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set, so the API server is unknown`,
        `run inside a Kubernetes pod, or ${WHAT_TO_DO}`,
      );
    }
    const kc = new KubeConfig();
    kc.loadFromCluster(lookup.root ?? '');
    // loadFromCluster reads process.env; the address comes from the environment looked at here.
    const host = env.KUBERNETES_SERVICE_HOST.includes(':') ? `[${env.KUBERNETES_SERVICE_HOST}]` : env.KUBERNETES_SERVICE_HOST;
    kc.clusters = kc.clusters.map((cluster) => ({ ...cluster, server: `https://${host}:${env.KUBERNETES_SERVICE_PORT}` }));
    return kc;
  }
  throw new ActionableError(
    `no Kubernetes API configured: no --kubeconfig, KUBECONFIG is not set, ${homeConfig ? `${homeConfig} does not exist` : 'no home directory (no HOME, no passwd entry)'}, and this is not a pod (no ${token})`,
    WHAT_TO_DO,
  );
}

function fromFiles(files: string[], source: string): KubeConfig {
  const kc = new KubeConfig();
  for (const [index, file] of files.entries()) {
    const named = `the kubeconfig ${file} (${source})`;
    try {
      if (index === 0) kc.loadFromFile(file);
      else {
        const more = new KubeConfig();
        more.loadFromFile(file);
        kc.mergeConfig(more);
      }
    } catch (error) {
      throw new ActionableError(`${named} cannot be read: ${(error as Error).message}`, `fix the file, or ${WHAT_TO_DO}`, { cause: error });
    }
  }
  const named = `the kubeconfig ${files.join(delimiter)} (${source})`;
  const cluster = kc.getCurrentCluster();
  if (!cluster) {
    throw new ActionableError(
      `${named} has no current cluster (current-context: ${kc.getCurrentContext() || 'none'})`,
      'choose one with kubectl config use-context NAME',
    );
  }
  // The client refuses plain HTTP unless the cluster entry says to skip TLS verification.
  if (cluster.server.startsWith('http:') && !cluster.skipTLSVerify) {
    throw new ActionableError(
      `${named} points at ${cluster.server}, plain HTTP, which the Kubernetes client refuses unless the cluster says insecure-skip-tls-verify: true`,
      `use the API server's https:// address, or add insecure-skip-tls-verify: true to the cluster '${cluster.name}' (e.g. for kubectl proxy)`,
    );
  }
  return kc;
}

/** Native sidecars (init containers with restartPolicy Always) are on by default from Kubernetes 1.29. */
export async function supportsNativeSidecars(kc: KubeConfig): Promise<boolean> {
  const version = await kc.makeApiClient(VersionApi).getCode();
  const major = Number.parseInt(version.major, 10);
  const minor = Number.parseInt(version.minor, 10);
  return major > 1 || (major === 1 && minor >= 29);
}
