// Kubernetes Events raised by flb-mesh's controllers (the injector; the registry bridge next).
//
// What triggers an Event may come from someone we cannot trust: anyone who reaches the injector's
// port can send it an AdmissionReview that names any namespace, object and text. So an Event is
// raised only when all of this holds, checked in this order (cheapest first, and before any API
// call, so a flood costs no lookups):
// - it is well formed: names and uid are Kubernetes names and a UUID, the reason a CamelCase word;
//   its message is cut to what the apiserver accepts and stripped of control and bidi characters;
// - its namespace is not one of Kubernetes' own (kube-system, ...) nor one the caller protects
//   (the mesh's namespace);
// - the namespace's token bucket has a token (a burst, then a steady rate);
// - the object it is about is of a kind we can look up, and a GET finds it with the same uid.
// Everything refused is counted by reason (`onDropped`), so a flood is visible in metrics.
//
// Why a GET and not informers of the owner kinds: an informer keeps every object of its kind in
// memory, and ReplicaSets are the most numerous objects of a big cluster after pods and events
// (each Deployment keeps ten old revisions, each with its whole pod template): tens of thousands of
// objects, hundreds of MiB, plus cluster-wide list/watch rights and a watch per kind, for a check
// made once per pod created. A GET per owner, remembered by uid (bounded LRU, with a shorter memory
// for absent ones) and behind the rate limit, costs one request per workload rollout instead.
import { hostname } from 'node:os';
import { AppsV1Api, BatchV1Api, CoreV1Api, type CoreV1Event, type KubeConfig } from '@kubernetes/client-node';
import type { Logger } from './log.js';

/** Namespaces Kubernetes itself owns: no Event is ever raised in them. */
export const SYSTEM_NAMESPACES: readonly string[] = ['kube-system', 'kube-public', 'kube-node-lease'];

/** The object an Event is about. */
export interface EventSubject {
  apiVersion: string;
  kind: string;
  namespace: string;
  name: string;
  uid: string;
}

export interface KubeEvent {
  /** Undefined when there is no object the Event could be verified on: it is dropped as unverifiable. */
  subject: EventSubject | undefined;
  type: 'Normal' | 'Warning';
  /** A CamelCase word, as Kubernetes' own reasons (FailedCreate, SidecarInjected). */
  reason: string;
  message: string;
}

export type EventDropReason =
  /** Malformed names, uid, reason or type. */
  | 'invalid'
  /** No subject, or one of a kind that cannot be looked up. */
  | 'unverifiable'
  | 'protected-namespace'
  | 'rate-limited'
  | 'queue-full'
  /** The subject does not exist, or exists with another uid. */
  | 'unverified'
  /** The lookup or the Event's creation failed or timed out. */
  | 'api-error';

/** The API calls the recorder makes: kubeEventsApi() makes them against a cluster; tests bring their own. */
export interface EventsApi {
  /** `<apiVersion> <kind>` of every kind uidOf can look up. */
  readonly verifiableKinds: ReadonlySet<string>;
  /** The uid of the named object; undefined when it does not exist. Throws when the API cannot tell. */
  uidOf(subject: Omit<EventSubject, 'uid'>): Promise<string | undefined>;
  createEvent(namespace: string, body: CoreV1Event): Promise<void>;
}

type Reader = (namespace: string, name: string) => Promise<{ metadata?: { uid?: string } }>;

/** The controllers that own pods in Kubernetes itself. */
const WORKLOAD_READERS: Record<string, (kubeConfig: KubeConfig) => Reader> = {
  'apps/v1 ReplicaSet': (kc) => {
    const api = kc.makeApiClient(AppsV1Api);
    return (namespace, name) => api.readNamespacedReplicaSet({ namespace, name });
  },
  'apps/v1 StatefulSet': (kc) => {
    const api = kc.makeApiClient(AppsV1Api);
    return (namespace, name) => api.readNamespacedStatefulSet({ namespace, name });
  },
  'apps/v1 DaemonSet': (kc) => {
    const api = kc.makeApiClient(AppsV1Api);
    return (namespace, name) => api.readNamespacedDaemonSet({ namespace, name });
  },
  'batch/v1 Job': (kc) => {
    const api = kc.makeApiClient(BatchV1Api);
    return (namespace, name) => api.readNamespacedJob({ namespace, name });
  },
  'v1 ReplicationController': (kc) => {
    const api = kc.makeApiClient(CoreV1Api);
    return (namespace, name) => api.readNamespacedReplicationController({ namespace, name });
  },
};

/** `<apiVersion> <kind>` of the controllers kubeEventsApi can verify. */
export const OWNER_KINDS: ReadonlySet<string> = new Set(Object.keys(WORKLOAD_READERS));

/**
 * Events API of a cluster, able to verify the kinds that own pods (ReplicaSet, StatefulSet,
 * DaemonSet, Job, ReplicationController). Needs `create` on events and `get` on those kinds.
 */
export function kubeEventsApi(kubeConfig: KubeConfig): EventsApi {
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const readers = new Map(Object.entries(WORKLOAD_READERS).map(([kind, make]) => [kind, make(kubeConfig)]));
  return {
    verifiableKinds: new Set(readers.keys()),
    async uidOf({ apiVersion, kind, namespace, name }) {
      const read = readers.get(`${apiVersion} ${kind}`);
      if (!read) throw new Error(`cannot look up ${apiVersion} ${kind}`);
      try {
        return (await read(namespace, name)).metadata?.uid ?? '';
      } catch (error) {
        if ((error as { code?: number }).code === 404) return undefined;
        throw error;
      }
    },
    async createEvent(namespace, body) {
      await core.createNamespacedEvent({ namespace, body });
    },
  };
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const REASON = /^[A-Z][A-Za-z0-9]{0,127}$/;
/** Control characters, bidi overrides and other invisible format characters: nothing a reader should not see. */
const UNSEEN = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]+/gu;
/** The apiserver refuses longer Event messages (events.k8s.io/v1 note: 1 kB). */
export const MAX_EVENT_MESSAGE_BYTES = 1024;

export const isDnsLabel = (value: unknown): value is string => typeof value === 'string' && DNS_LABEL.test(value);
export const isDnsSubdomain = (value: unknown): value is string => typeof value === 'string' && value.length <= 253 && DNS_SUBDOMAIN.test(value);

/** One line of plain visible text, at most `maxBytes` of UTF-8, cut on a character boundary with an ellipsis. */
export function boundedText(text: string, maxBytes = MAX_EVENT_MESSAGE_BYTES): string {
  const clean = text.replace(UNSEEN, ' ').replace(/\s+/g, ' ').trim();
  if (Buffer.byteLength(clean) <= maxBytes) return clean;
  const ellipsis = '…';
  let bytes = Buffer.byteLength(ellipsis);
  let out = '';
  for (const char of clean) {
    bytes += Buffer.byteLength(char);
    if (bytes > maxBytes) break;
    out += char;
  }
  return out + ellipsis;
}

/** The event as it will be sent, or why it may not be. Pure: no API call, no rate limit. */
export function checkEvent(
  event: KubeEvent,
  verifiableKinds: ReadonlySet<string>,
): { ok: true; event: KubeEvent & { subject: EventSubject } } | { ok: false; reason: 'invalid' | 'unverifiable' } {
  const { subject, type, reason } = event;
  if (subject === undefined) return { ok: false, reason: 'unverifiable' };
  if (typeof subject.apiVersion !== 'string' || typeof subject.kind !== 'string' || !verifiableKinds.has(`${subject.apiVersion} ${subject.kind}`))
    return { ok: false, reason: 'unverifiable' };
  if (!isDnsLabel(subject.namespace) || !isDnsSubdomain(subject.name) || typeof subject.uid !== 'string' || !UUID.test(subject.uid))
    return { ok: false, reason: 'invalid' };
  if ((type !== 'Normal' && type !== 'Warning') || typeof reason !== 'string' || !REASON.test(reason) || typeof event.message !== 'string')
    return { ok: false, reason: 'invalid' };
  const message = boundedText(event.message);
  if (message === '') return { ok: false, reason: 'invalid' };
  const { apiVersion, kind, namespace, name, uid } = subject;
  return { ok: true, event: { subject: { apiVersion, kind, namespace, name, uid }, type, reason, message } };
}

/** Token buckets by key (a namespace): `burst` at once, then `perSecond`; a bounded number of keys. */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private lastSweep = -Infinity;

  constructor(
    private readonly burst: number,
    private readonly perSecond: number,
    private readonly now: () => number = () => performance.now(),
    private readonly maxKeys = 10_000,
  ) {}

  take(key: string): boolean {
    const now = this.now();
    let bucket = this.buckets.get(key);
    if (bucket) {
      bucket.tokens = this.refilled(bucket, now);
      bucket.at = now;
    } else {
      if (this.buckets.size >= this.maxKeys) this.sweep(now);
      // Too many keys draining at once: refusing is safer than forgetting one that is empty.
      if (this.buckets.size >= this.maxKeys) return false;
      bucket = { tokens: this.burst, at: now };
      this.buckets.set(key, bucket);
    }
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  private refilled(bucket: { tokens: number; at: number }, now: number): number {
    return Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond);
  }

  /** A full bucket is the same as none, so it can go; at most once a second, so a flood of keys stays cheap. */
  private sweep(now: number): void {
    if (now - this.lastSweep < 1000) return;
    this.lastSweep = now;
    for (const [key, bucket] of this.buckets) if (this.refilled(bucket, now) >= this.burst) this.buckets.delete(key);
  }
}

type Verification = 'verified' | 'absent' | 'error';

export interface EventRecorderOptions {
  api: EventsApi;
  log: Logger;
  /** `source.component` of the Events, e.g. flb-injector. */
  component: string;
  /** Namespaces besides Kubernetes' own where no Event is raised (the mesh's namespace). */
  protectedNamespaces?: Iterable<string>;
  /** More protected namespaces, asked per Event: those that can change while it runs (the mesh's, from its settings). */
  isProtectedNamespace?: (namespace: string) => boolean;
  /** Per namespace: this many Events at once, then this many per second. Default 25, then 1 a second. */
  perNamespace?: { burst: number; perSecond: number };
  /** Events waiting for their lookup and creation. */
  maxQueued?: number;
  /** API calls at a time. */
  concurrency?: number;
  /** How long a subject found with its uid is trusted without asking again. */
  verifiedForMs?: number;
  /** How long a subject found missing (or with another uid) is remembered as such. */
  absentForMs?: number;
  /** Subjects remembered (least recently used go first). */
  maxRemembered?: number;
  lookupTimeoutMs?: number;
  onDropped?: (reason: EventDropReason) => void;
  /** Milliseconds, monotonic; for tests. */
  now?: () => number;
}

/**
 * Raises Kubernetes Events in the background (callers never wait for the API), only on objects
 * verified to exist, never in protected namespaces, rate-limited per namespace, with a bounded
 * queue and bounded memory. See the top of this file for the rules.
 */
export class KubeEventRecorder {
  private readonly api: EventsApi;
  private readonly log: Logger;
  private readonly protectedNamespaces: ReadonlySet<string>;
  private readonly buckets: TokenBuckets;
  private readonly remembered = new Map<string, { verified: boolean; until: number }>();
  private readonly lookups = new Map<string, Promise<Verification>>();
  private readonly queue: (KubeEvent & { subject: EventSubject })[] = [];
  private readonly idle: (() => void)[] = [];
  private readonly now: () => number;
  private readonly instance = hostname();
  private inFlight = 0;

  constructor(private readonly options: EventRecorderOptions) {
    this.api = options.api;
    this.log = options.log;
    this.protectedNamespaces = new Set([...SYSTEM_NAMESPACES, ...(options.protectedNamespaces ?? [])]);
    this.now = options.now ?? (() => performance.now());
    const rate = options.perNamespace ?? { burst: 25, perSecond: 1 };
    this.buckets = new TokenBuckets(rate.burst, rate.perSecond, this.now);
  }

  /** Queues the Event; false (and counted by reason) when it is refused. Never throws, never waits. */
  record(event: KubeEvent): boolean {
    const checked = checkEvent(event, this.api.verifiableKinds);
    if (!checked.ok) return this.drop(checked.reason, event);
    const { namespace } = checked.event.subject;
    if (this.protectedNamespaces.has(namespace) || this.options.isProtectedNamespace?.(namespace)) return this.drop('protected-namespace', event);
    if (!this.buckets.take(namespace)) return this.drop('rate-limited', event);
    if (this.queue.length >= (this.options.maxQueued ?? 500)) return this.drop('queue-full', event);
    this.queue.push(checked.event);
    this.pump();
    return true;
  }

  /** Resolves once every queued Event has been sent or dropped (for tests and shutdown). */
  flush(): Promise<void> {
    if (this.queue.length === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  private drop(reason: EventDropReason, event: KubeEvent): false {
    this.options.onDropped?.(reason);
    // Debug only: a flood must not become a flood of log lines; the metric shows it.
    this.log.debug(
      { reason, eventReason: event.reason, namespace: event.subject?.namespace, kind: event.subject?.kind, name: event.subject?.name },
      'Kubernetes Event not raised',
    );
    return false;
  }

  private pump(): void {
    while (this.inFlight < (this.options.concurrency ?? 4) && this.queue.length > 0) {
      const event = this.queue.shift()!;
      this.inFlight++;
      void this.send(event).finally(() => {
        this.inFlight--;
        this.pump();
        if (this.queue.length === 0 && this.inFlight === 0) for (const resolve of this.idle.splice(0)) resolve();
      });
    }
  }

  private async send(event: KubeEvent & { subject: EventSubject }): Promise<void> {
    const verification = await this.verify(event.subject);
    if (verification !== 'verified') {
      this.drop(verification === 'absent' ? 'unverified' : 'api-error', event);
      return;
    }
    const { apiVersion, kind, namespace, name, uid } = event.subject;
    const now = new Date();
    try {
      await this.api.createEvent(namespace, {
        metadata: { generateName: `${this.options.component}-`, namespace },
        involvedObject: { apiVersion, kind, namespace, name, uid },
        type: event.type,
        reason: event.reason,
        message: event.message,
        source: { component: this.options.component },
        reportingComponent: `flomesh.io/${this.options.component}`,
        reportingInstance: this.instance,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      });
    } catch (error) {
      this.options.onDropped?.('api-error');
      this.log.warn({ err: error, reason: event.reason, namespace }, 'could not record a Kubernetes Event');
    }
  }

  private verify(subject: EventSubject): Promise<Verification> {
    const key = subjectKey(subject);
    const known = this.recall(key);
    if (known !== undefined) return Promise.resolve(known ? 'verified' : 'absent');
    let pending = this.lookups.get(key);
    if (!pending) {
      pending = this.lookup(subject).finally(() => this.lookups.delete(key));
      this.lookups.set(key, pending);
    }
    return pending;
  }

  private async lookup(subject: EventSubject): Promise<Verification> {
    const timeoutMs = this.options.lookupTimeoutMs ?? 2000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    try {
      const { uid, ...named } = subject;
      const found = await Promise.race([this.api.uidOf(named), timeout]);
      if (found === 'timeout') {
        this.log.warn(
          { kind: subject.kind, namespace: subject.namespace, name: subject.name, timeoutMs },
          'looking up the object of a Kubernetes Event timed out',
        );
        return 'error';
      }
      // The uid found is as good as verified itself: the next Event on this object needs no lookup.
      if (found) this.remember(subjectKey({ ...subject, uid: found }), true);
      if (found !== uid) this.remember(subjectKey(subject), false);
      return found === uid ? 'verified' : 'absent';
    } catch (error) {
      this.log.warn({ err: error, kind: subject.kind, namespace: subject.namespace, name: subject.name }, 'could not look up the object of a Kubernetes Event');
      return 'error';
    } finally {
      clearTimeout(timer);
    }
  }

  private recall(key: string): boolean | undefined {
    const entry = this.remembered.get(key);
    if (!entry) return undefined;
    this.remembered.delete(key);
    if (entry.until <= this.now()) return undefined;
    this.remembered.set(key, entry);
    return entry.verified;
  }

  private remember(key: string, verified: boolean): void {
    const forMs = verified ? (this.options.verifiedForMs ?? 300_000) : (this.options.absentForMs ?? 30_000);
    this.remembered.delete(key);
    this.remembered.set(key, { verified, until: this.now() + forMs });
    const max = this.options.maxRemembered ?? 10_000;
    for (const oldest of this.remembered.keys()) {
      if (this.remembered.size <= max) break;
      this.remembered.delete(oldest);
    }
  }
}

const subjectKey = (s: EventSubject) => `${s.apiVersion} ${s.kind} ${s.namespace}/${s.name} ${s.uid}`;
