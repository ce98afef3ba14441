import { hostname } from 'node:os';
import { CoreV1Api, type CoreV1Event, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import type { Logger } from '../common/log.js';

export interface PodEvent {
  pod: V1Pod;
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

/**
 * Kubernetes Events about injection, on the pod's owner (a pod made from generateName has no
 * name yet, and the ReplicaSet is where `kubectl describe` users look), or on the pod when it has
 * no owner. Sent in the background with a bounded queue, so admission never waits for them.
 */
export class EventRecorder {
  private readonly core: CoreV1Api;
  private readonly queue: PodEvent[] = [];
  private inFlight = 0;
  private readonly instance = hostname();

  constructor(
    kubeConfig: KubeConfig,
    private readonly log: Logger,
    private readonly onDropped: () => void,
    private readonly maxQueued = 500,
    private readonly concurrency = 4,
  ) {
    this.core = kubeConfig.makeApiClient(CoreV1Api);
  }

  record(event: PodEvent): void {
    if (this.queue.length >= this.maxQueued) {
      this.onDropped();
      return;
    }
    this.queue.push(event);
    this.pump();
  }

  /** Resolves once everything queued has been sent (for tests and shutdown). */
  async flush(): Promise<void> {
    while (this.queue.length > 0 || this.inFlight > 0) await new Promise((r) => setTimeout(r, 20));
  }

  private pump(): void {
    while (this.inFlight < this.concurrency && this.queue.length > 0) {
      const event = this.queue.shift()!;
      this.inFlight++;
      this.send(event)
        .catch((error: unknown) => {
          this.onDropped();
          this.log.warn({ err: error, reason: event.reason }, 'could not record a Kubernetes Event');
        })
        .finally(() => {
          this.inFlight--;
          this.pump();
        });
    }
  }

  private async send({ pod, type, reason, message }: PodEvent): Promise<void> {
    const namespace = pod.metadata?.namespace ?? 'default';
    const owner = pod.metadata?.ownerReferences?.find((o) => o.controller) ?? pod.metadata?.ownerReferences?.[0];
    const involvedObject = owner
      ? { apiVersion: owner.apiVersion, kind: owner.kind, name: owner.name, uid: owner.uid, namespace }
      : { apiVersion: 'v1', kind: 'Pod', name: pod.metadata?.name ?? pod.metadata?.generateName ?? '', namespace };
    const now = new Date();
    const body: CoreV1Event = {
      metadata: { generateName: 'flb-injector-', namespace },
      involvedObject,
      type,
      reason,
      message: message.slice(0, 1024),
      source: { component: 'flb-injector' },
      reportingComponent: 'flomesh.io/flb-injector',
      reportingInstance: this.instance,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
    await this.core.createNamespacedEvent({ namespace, body });
  }
}
