// The repo's CA in every namespace that needs it, as Kubernetes keeps `kube-root-ca.crt` in every
// namespace: a ConfigMap of a fixed name that the injector mounts into sidecars, so they can verify
// the repo. Needed where injection is on (the namespace label) and wherever an injected pod runs
// (a pod can opt in by its own label); kept current when the CA file changes (rotation). Only the
// leader writes; a ConfigMap of that name that the bridge did not make is left alone and reported.
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { CoreV1Api, type KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import { INJECT_LABEL, NAMESPACE_INJECT_ENABLED, REPO_CA_CONFIGMAP, REPO_CA_CONFIGMAP_KEY } from '../../common/contract/index.js';
import type { Logger } from '../../common/log.js';
import { Informer } from './informer.js';

export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY_BRIDGE = 'flb-bridge';

export interface RepoCaOptions {
  kubeConfig: KubeConfig;
  caFile: string;
  log: Logger;
  /** Namespaces that have injected pods now (the Kubernetes source knows). */
  podNamespaces: () => Iterable<string>;
}

const statusOf = (error: unknown) => (error as { code?: number }).code;

export class RepoCaConfigMaps {
  private readonly core: CoreV1Api;
  private readonly labelled: Informer<string>;
  private ca = '';
  private active = false;
  private readonly done = new Map<string, string>();
  private readonly pending = new Set<string>();
  private running?: Promise<void>;
  private timer?: NodeJS.Timeout;
  readonly stats = { writes: 0, failures: 0, foreign: 0 };

  constructor(private readonly options: RepoCaOptions) {
    this.core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.labelled = new Informer<string>({
      kubeConfig: options.kubeConfig,
      log: options.log,
      path: '/api/v1/namespaces',
      labelSelector: `${INJECT_LABEL}=${NAMESPACE_INJECT_ENABLED}`,
      transform: (raw) => raw.metadata?.name,
      onEvent: (event) => {
        if (event.type === 'upsert') this.want(event.object);
      },
    });
  }

  start(): void {
    this.readCa();
    watchFile(this.options.caFile, { interval: 2000 }, () => {
      if (this.readCa()) for (const namespace of this.done.keys()) this.want(namespace);
    });
    this.labelled.start();
  }

  /** The leader writes; a standby only watches. */
  setActive(active: boolean): void {
    this.active = active;
    if (!active) return;
    this.done.clear();
    for (const [, namespace] of this.labelled.entries()) this.want(namespace);
    for (const namespace of this.options.podNamespaces()) this.want(namespace);
    clearInterval(this.timer);
    // Injected pods appear in namespaces without the label too: look again now and then.
    this.timer = setInterval(() => {
      for (const namespace of this.options.podNamespaces()) if (!this.done.has(namespace)) this.want(namespace);
    }, 2_000);
  }

  /** A namespace that has (or will have) injected pods. */
  want(namespace: string): void {
    if (this.done.get(namespace) === this.ca) return;
    this.pending.add(namespace);
    if (this.active) this.running ??= this.drain().finally(() => (this.running = undefined));
  }

  private readCa(): boolean {
    try {
      const ca = readFileSync(this.options.caFile, 'utf8');
      if (ca === this.ca) return false;
      this.ca = ca;
      return true;
    } catch (error) {
      this.options.log.error(
        { file: this.options.caFile, err: (error as Error).message },
        'cannot read the repo CA file; sidecars in new namespaces cannot verify the repo until it is there',
      );
      return false;
    }
  }

  private async drain(): Promise<void> {
    while (this.active && this.pending.size > 0 && this.ca) {
      const namespace = this.pending.values().next().value as string;
      this.pending.delete(namespace);
      try {
        await this.ensure(namespace);
        this.done.set(namespace, this.ca);
      } catch (error) {
        this.stats.failures++;
        this.options.log.warn({ namespace, err: (error as Error).message }, 'could not write the repo CA ConfigMap; retrying');
        setTimeout(() => this.want(namespace), 2_000).unref();
      }
    }
  }

  private async ensure(namespace: string): Promise<void> {
    const body: V1ConfigMap = {
      metadata: { name: REPO_CA_CONFIGMAP, namespace, labels: { [MANAGED_BY_LABEL]: MANAGED_BY_BRIDGE } },
      data: { [REPO_CA_CONFIGMAP_KEY]: this.ca },
    };
    let existing: V1ConfigMap | undefined;
    try {
      existing = await this.core.readNamespacedConfigMap({ name: REPO_CA_CONFIGMAP, namespace });
    } catch (error) {
      if (statusOf(error) !== 404) throw error;
    }
    if (!existing) {
      await this.core.createNamespacedConfigMap({ namespace, body });
      this.stats.writes++;
      return;
    }
    if (existing.metadata?.labels?.[MANAGED_BY_LABEL] !== MANAGED_BY_BRIDGE) {
      this.stats.foreign++;
      this.options.log.warn(
        { namespace, configMap: REPO_CA_CONFIGMAP },
        'a ConfigMap of this name exists that the bridge did not make; it is left alone (sidecars there trust what it holds)',
      );
      return;
    }
    if (existing.data?.[REPO_CA_CONFIGMAP_KEY] === this.ca) return;
    await this.core.replaceNamespacedConfigMap({
      name: REPO_CA_CONFIGMAP,
      namespace,
      body: { ...body, metadata: { ...body.metadata, resourceVersion: existing.metadata?.resourceVersion } },
    });
    this.stats.writes++;
  }

  async stop(): Promise<void> {
    this.active = false;
    clearInterval(this.timer);
    unwatchFile(this.options.caFile);
    await this.labelled.stop();
    await this.running;
  }
}
