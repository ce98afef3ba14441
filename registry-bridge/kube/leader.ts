// One active bridge among replicas, through a coordination.k8s.io Lease, the way client-go's leader
// election works: the holder renews every retry period; a candidate takes the Lease over once it
// has seen the same record unrenewed for a whole lease duration (measured on its own clock, so the
// replicas' clocks need not agree); writes go through the Lease's resourceVersion, so two
// candidates cannot both win; a leader that could not renew within the renew deadline stops
// leading before its lease can run out elsewhere. Stopping releases the Lease, so a standby takes
// over at once instead of after the lease duration.
import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import type { Logger } from '../../common/log.js';

export interface LeaderElectionOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  name: string;
  /** This replica's name in the Lease (pod name, hostname). */
  identity: string;
  leaseDurationSeconds: number;
  renewDeadlineSeconds: number;
  retryPeriodSeconds: number;
  log: Logger;
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
  /** Milliseconds, monotonic; for tests. */
  now?: () => number;
}

const statusOf = (error: unknown) => (error as { code?: number }).code;

export class LeaderElector {
  private readonly api: CoordinationV1Api;
  private readonly now: () => number;
  private leading = false;
  private stopped = false;
  private timer?: NodeJS.Timeout;
  private observed?: { holder: string; renewTime: string; at: number };
  private lastRenewedAt = 0;
  private loop?: Promise<void>;
  /** Who holds the Lease as last seen, for status. */
  holder = '';

  constructor(private readonly options: LeaderElectionOptions) {
    this.api = options.kubeConfig.makeApiClient(CoordinationV1Api);
    this.now = options.now ?? (() => performance.now());
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.loop ??= this.tick();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.loop = this.tick();
    }, this.options.retryPeriodSeconds * 1000);
  }

  private async tick(): Promise<void> {
    try {
      const acquired = await this.tryAcquireOrRenew();
      if (acquired) {
        this.lastRenewedAt = this.now();
        if (!this.leading && !this.stopped) {
          this.leading = true;
          this.options.log.info({ lease: `${this.options.namespace}/${this.options.name}`, identity: this.options.identity }, 'became the leader');
          this.options.onStartedLeading();
        }
      } else if (this.leading) this.checkDeadline();
    } catch (error) {
      this.options.log.warn(
        { err: (error as Error).message, lease: `${this.options.namespace}/${this.options.name}` },
        'leader election: the Lease could not be read or written',
      );
      if (this.leading) this.checkDeadline();
    }
    this.schedule();
  }

  private checkDeadline(): void {
    if (this.now() - this.lastRenewedAt < this.options.renewDeadlineSeconds * 1000) return;
    this.leading = false;
    this.options.log.warn({ lease: `${this.options.namespace}/${this.options.name}` }, 'could not renew the Lease in time; no longer the leader');
    this.options.onStoppedLeading();
  }

  private spec(previous: V1Lease['spec'] | undefined, takingOver: boolean): V1Lease['spec'] {
    const now = new V1MicroTime();
    return {
      holderIdentity: this.options.identity,
      leaseDurationSeconds: this.options.leaseDurationSeconds,
      renewTime: now,
      acquireTime: takingOver || !previous?.acquireTime ? now : previous.acquireTime,
      leaseTransitions: (previous?.leaseTransitions ?? 0) + (takingOver && previous?.holderIdentity ? 1 : 0),
    };
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity } = this.options;
    let lease: V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ namespace, name });
    } catch (error) {
      if (statusOf(error) !== 404) throw error;
      try {
        await this.api.createNamespacedLease({ namespace, body: { metadata: { name, namespace }, spec: this.spec(undefined, true) } });
        this.holder = identity;
        return true;
      } catch (createError) {
        if (statusOf(createError) === 409) return false;
        throw createError;
      }
    }
    const holder = lease.spec?.holderIdentity ?? '';
    const renewTime = String(lease.spec?.renewTime ?? '');
    this.holder = holder;
    if (!this.observed || this.observed.holder !== holder || this.observed.renewTime !== renewTime) this.observed = { holder, renewTime, at: this.now() };
    const durationMs = (lease.spec?.leaseDurationSeconds ?? this.options.leaseDurationSeconds) * 1000;
    const mine = holder === identity;
    const free = holder === '' || this.now() - this.observed.at > durationMs;
    if (!mine && !free) return false;
    try {
      await this.api.replaceNamespacedLease({ namespace, name, body: { ...lease, spec: this.spec(lease.spec, !mine) } });
      this.holder = identity;
      return true;
    } catch (error) {
      // Someone else wrote it since we read it: they won this round.
      if (statusOf(error) === 409) return false;
      throw error;
    }
  }

  /** Stops campaigning; a leader releases the Lease so that a standby takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.loop?.catch(() => undefined);
    if (!this.leading) return;
    this.leading = false;
    this.options.onStoppedLeading();
    const { namespace, name, identity } = this.options;
    try {
      const lease = await this.api.readNamespacedLease({ namespace, name });
      if (lease.spec?.holderIdentity !== identity) return;
      await this.api.replaceNamespacedLease({
        namespace,
        name,
        body: { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: new V1MicroTime() } },
      });
    } catch (error) {
      this.options.log.warn({ err: (error as Error).message }, 'could not release the Lease; a standby takes over when it expires');
    }
  }
}
