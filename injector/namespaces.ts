import { CoreV1Api, makeInformer, type KubeConfig, type V1Namespace } from '@kubernetes/client-node';
import type { Logger } from '../common/log.js';
import type { NamespaceLookup } from './admission.js';

/**
 * Namespaces from a watch cache, so admission does not call the API; a namespace the cache has
 * not seen yet (created a moment ago) is read from the API within a short budget.
 */
export class NamespaceCache implements NamespaceLookup {
  private readonly core: CoreV1Api;
  private readonly informer;
  private stopped = false;

  constructor(
    kubeConfig: KubeConfig,
    private readonly log: Logger,
    private readonly lookupTimeoutMs = 1000,
  ) {
    this.core = kubeConfig.makeApiClient(CoreV1Api);
    this.informer = makeInformer<V1Namespace>(kubeConfig, '/api/v1/namespaces', () => this.core.listNamespace());
    this.informer.on('error', (error: unknown) => {
      if (this.stopped) return;
      this.log.warn({ err: error }, 'namespace watch failed; restarting in 1 s');
      setTimeout(() => void this.informer.start().catch(() => {}), 1000);
    });
  }

  start(): Promise<void> {
    return this.informer.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.informer.stop();
  }

  async get(name: string): Promise<V1Namespace | undefined> {
    const cached = this.informer.get(name);
    if (cached) return cached;
    const timeout = new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), this.lookupTimeoutMs).unref());
    return Promise.race([this.core.readNamespace({ name }).catch(() => undefined), timeout]);
  }
}
