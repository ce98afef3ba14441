import { describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EurekaAnswerError, LocalRegistry, parseApplications, reconcileHashcode } from './registry.js';

// Answers recorded from the test Eureka server (Spring Cloud Netflix 5.0.3, test-e2e/servers/eureka):
// apps-1 after registering ORDERS x3 (one DOWN), PAYMENTS and INVENTORY (Amazon data center, securePort
// only); then orders-3 re-registered UP, orders-4 registered, payments-1 cancelled and INVENTORY set
// OUT_OF_SERVICE: delta-1 (once the older changes had left the delta queue) and apps-2.
const recorded = (name: string) => readFileSync(join(import.meta.dirname, 'testdata', name), 'utf8');

const snapshot = (registry: LocalRegistry) =>
  Object.fromEntries(
    [...registry.appNames()]
      .sort()
      .map((app) => [
        app,
        [...registry.instancesOf(app)].map((i) => `${i.id} ${i.status} ${i.ipAddr}:${i.port?.number}${i.port?.enabled ? '' : '(off)'} ${i.zone ?? '-'}`).sort(),
      ]),
  );

describe("a Eureka server's answers", () => {
  it('reads a full /apps answer: every instance of every status, zones from metadata or the Amazon data center', () => {
    const answer = parseApplications(recorded('apps-1.json'));
    expect(answer.hashcode).toBe('DOWN_1_UP_4_');
    expect(answer.problems).toEqual([]);
    const registry = new LocalRegistry();
    registry.replace(answer);
    expect(snapshot(registry)).toEqual({
      INVENTORY: ['i-0abc123 UP 10.3.0.1:8080(off) us-east-1a'],
      ORDERS: ['orders-1 UP 10.1.0.1:8080 zone-a', 'orders-2 UP 10.1.0.2:8080 zone-a', 'orders-3 DOWN 10.1.0.3:8080 zone-a'],
      PAYMENTS: ['payments-1 UP 10.2.0.1:9090 zone-a'],
    });
    expect([...registry.instancesOf('INVENTORY')][0]!.securePort).toEqual({ number: 8443, enabled: true });
  });

  it("computes the server's own reconcile hashcode over every status", () => {
    const registry = new LocalRegistry();
    registry.replace(parseApplications(recorded('apps-1.json')));
    expect(registry.hashcode()).toBe('DOWN_1_UP_4_');
    registry.replace(parseApplications(recorded('apps-2.json')));
    expect(registry.hashcode()).toBe('OUT_OF_SERVICE_1_UP_4_');
  });

  it('orders statuses as a Java TreeMap does (the issue writes UP_3_DOWN_1_; servers send DOWN_1_UP_3_)', () => {
    expect(
      reconcileHashcode(
        new Map([
          ['UP', 3],
          ['DOWN', 1],
        ]),
      ),
    ).toBe('DOWN_1_UP_3_');
    expect(
      reconcileHashcode(
        new Map([
          ['UP', 1],
          ['UNKNOWN', 2],
          ['STARTING', 1],
          ['OUT_OF_SERVICE', 1],
          ['DOWN', 0],
        ]),
      ),
    ).toBe('OUT_OF_SERVICE_1_STARTING_1_UNKNOWN_2_UP_1_');
    expect(reconcileHashcode(new Map())).toBe('');
  });

  it('applies a delta (ADDED, MODIFIED, DELETED) to exactly what the next full answer holds, hashcode included', () => {
    const registry = new LocalRegistry();
    registry.replace(parseApplications(recorded('apps-1.json')));
    const delta = parseApplications(recorded('delta-1.json'));
    const changed = registry.applyDelta(delta);
    expect([...changed].sort()).toEqual(['INVENTORY', 'ORDERS', 'PAYMENTS']);
    expect(registry.hashcode()).toBe(delta.hashcode);

    const fresh = new LocalRegistry();
    fresh.replace(parseApplications(recorded('apps-2.json')));
    expect(snapshot(registry)).toEqual(snapshot(fresh));
    expect(registry.hasApp('PAYMENTS')).toBe(false);
  });

  it('an empty delta changes nothing and still matches', () => {
    const registry = new LocalRegistry();
    registry.replace(parseApplications(recorded('apps-2.json')));
    const delta = parseApplications(recorded('delta-empty.json'));
    expect(registry.applyDelta(delta).size).toBe(0);
    expect(registry.hashcode()).toBe(delta.hashcode);
  });

  it('a delta that misses a change leaves a hashcode the server does not have', () => {
    const registry = new LocalRegistry();
    registry.replace(parseApplications(recorded('apps-1.json')));
    const delta = parseApplications(recorded('delta-1.json'));
    // As if the INVENTORY change had dropped out of the server's delta queue.
    const partial = { ...delta, apps: delta.apps.filter((a) => a.name !== 'INVENTORY') };
    registry.applyDelta(partial);
    expect(registry.hashcode()).not.toBe(delta.hashcode);
  });

  it('a full answer reports which apps changed, and only those', () => {
    const registry = new LocalRegistry();
    expect([...registry.replace(parseApplications(recorded('apps-1.json')))].sort()).toEqual(['INVENTORY', 'ORDERS', 'PAYMENTS']);
    expect(registry.replace(parseApplications(recorded('apps-1.json'))).size).toBe(0);
    expect([...registry.replace(parseApplications(recorded('apps-2.json')))].sort()).toEqual(['INVENTORY', 'ORDERS', 'PAYMENTS']);
    // Lease timestamps move on every renewal; they are not what the catalog holds, so no change.
    const renewed = recorded('apps-2.json').replace(/"lastRenewalTimestamp": \d+/g, '"lastRenewalTimestamp": 1');
    expect(registry.replace(parseApplications(renewed)).size).toBe(0);
  });
});

describe('answers that are not a registry, or hold bad items', () => {
  it.each([
    ['empty', ''],
    ['not JSON', 'Service Unavailable'],
    ['truncated', recorded('apps-1.json').slice(0, 2000)],
    ['XML', recorded('apps-2.xml')],
    ['an HTML error page', '<!doctype html><title>502</title>'],
    ['no applications', '{}'],
    ['applications a list', '{"applications": []}'],
    ['a hashcode that is no string', '{"applications": {"apps__hashcode": 7}}'],
    ['JSON null', 'null'],
  ])('refuses %s with a message that says what it got', (_, body) => {
    expect(() => parseApplications(body)).toThrow(EurekaAnswerError);
    try {
      parseApplications(body);
    } catch (error) {
      expect((error as Error).message).toMatch(/XML|not JSON|applications|apps__hashcode/);
    }
  });

  it('leaves out an instance that is no object or has no id, names it, and still counts it in the hashcode', () => {
    const body = JSON.stringify({
      applications: {
        apps__hashcode: 'DOWN_1_UP_2_',
        application: [
          {
            name: 'ORDERS',
            instance: [
              { instanceId: 'orders-1', ipAddr: '10.1.0.1', status: 'UP', port: { $: 8080, '@enabled': 'true' } },
              { ipAddr: '10.1.0.2', status: 'DOWN', port: { $: 8080, '@enabled': 'true' } },
              'garbage',
            ],
          },
          { instance: [{ instanceId: 'x' }] },
          { name: 'PAYMENTS', instance: { hostName: '10.2.0.1', status: 'UP', port: { '@enabled': 'true', $: '9090' } } },
        ],
      },
    });
    const answer = parseApplications(body);
    expect(answer.problems).toEqual([
      'an instance of ORDERS has no instanceId and no hostName',
      'an instance of ORDERS is not an object ("garbage")',
      'an application without a name was left out ({"instance":[{"instanceId":"x"}]})',
    ]);
    const registry = new LocalRegistry();
    registry.replace(answer);
    expect(snapshot(registry)).toEqual({ ORDERS: ['orders-1 UP 10.1.0.1:8080 -'], PAYMENTS: ['10.2.0.1 UP undefined:9090 -'] });
    // The id-less DOWN instance is the server's too: without it every delta would look wrong.
    expect(registry.hashcode()).toBe('DOWN_1_UP_2_');
  });

  it('reads the older codec: a lone application or instance as an object, ports as strings, an unknown status as UNKNOWN', () => {
    const answer = parseApplications(
      JSON.stringify({
        applications: {
          apps__hashcode: 'UNKNOWN_1_',
          application: { name: 'legacy', instance: { instanceId: 'l-1', ipAddr: '10.9.0.1', status: 'sleepy', port: { '@enabled': 'true', $: '7001' } } },
        },
      }),
    );
    const registry = new LocalRegistry();
    registry.replace(answer);
    expect(snapshot(registry)).toEqual({ LEGACY: ['l-1 UNKNOWN 10.9.0.1:7001 -'] });
    expect(registry.hashcode()).toBe(answer.hashcode);
  });
});
