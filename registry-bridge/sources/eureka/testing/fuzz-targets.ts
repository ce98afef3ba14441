// Fuzz target of the Eureka source (run by ../fuzz.test.ts through common/testing/fuzz.ts): whatever
// bytes a Eureka server answers with reach parseApplications, the local copy (as a full answer and
// as a delta) and the translation into catalog services. For every input:
//  - parseApplications returns, or throws an EurekaAnswerError (never a TypeError or the like);
//  - the local copy's hashcode after a full answer is the one counted afresh from that answer's
//    instances (the incremental counts never drift), and a delta on top of a recorded registry
//    leaves counts that match a fresh count too;
//  - every service translated from any app passes the contract (as the catalog will check it), and
//    its JSON is the same whatever order the instances come in.
// Seeds (fuzz/corpus/eureka-answer/) are the answers recorded from the real server in testdata/.
import type fc from 'fast-check';
import { MeshSchema, serviceSchemaFor, API_VERSION } from '../../../../common/contract/index.js';
import { fuzzInputs, utf8 } from '../../../../common/testing/fuzz-inputs.js';
import type { FuzzCheck, FuzzTarget } from '../../../../common/testing/fuzz-runner.js';
import { dnsLabelOf } from '../../../core/names.js';
import { EurekaAnswerError, LocalRegistry, parseApplications, reconcileHashcode, type EurekaApplications } from '../registry.js';
import { translateApp, type TranslateOptions } from '../translate.js';

const schema = serviceSchemaFor(MeshSchema.parse({ apiVersion: API_VERSION, kind: 'Mesh', name: 'flb' }));
const OPTIONS: TranslateOptions[] = [
  { registry: 'eureka', statuses: ['UP'], servicePort: 80, protocol: 'http', preferSecurePort: false },
  { registry: 'prod', statuses: ['UP', 'DOWN', 'STARTING', 'OUT_OF_SERVICE', 'UNKNOWN'], servicePort: 8080, protocol: 'tcp', preferSecurePort: true },
];

/** The registry a delta input is applied to: ORDERS with three instances, one DOWN, and PAYMENTS. */
const BEFORE = parseApplications(
  JSON.stringify({
    applications: {
      apps__hashcode: 'DOWN_1_UP_3_',
      application: [
        {
          name: 'ORDERS',
          instance: ['i-1', 'i-2', 'i-3'].map((id, i) => ({
            instanceId: id,
            ipAddr: `10.1.0.${i + 1}`,
            status: i === 2 ? 'DOWN' : 'UP',
            port: { $: 8080, '@enabled': 'true' },
          })),
        },
        { name: 'PAYMENTS', instance: [{ instanceId: 'p-1', ipAddr: '10.2.0.1', status: 'UP', port: { $: 9090, '@enabled': 'true' } }] },
      ],
    },
  }),
);

function freshCount(answer: EurekaApplications): string {
  const counts = new Map<string, number>();
  for (const app of answer.apps) {
    const byId = new Map<string, string>();
    for (const instance of app.instances) byId.set(instance.id, instance.status);
    for (const status of [...byId.values(), ...app.anonymous.map((a) => a.status)]) counts.set(status, (counts.get(status) ?? 0) + 1);
  }
  return reconcileHashcode(counts);
}

function countOf(registry: LocalRegistry): string {
  const counts = new Map<string, number>();
  for (const app of registry.appNames()) for (const instance of registry.instancesOf(app)) counts.set(instance.status, (counts.get(instance.status) ?? 0) + 1);
  return reconcileHashcode(counts);
}

function run(input: Uint8Array): void {
  const body = new TextDecoder().decode(input);
  let answer: EurekaApplications;
  try {
    answer = parseApplications(body);
  } catch (error) {
    if (error instanceof EurekaAnswerError) return;
    throw error;
  }
  const registry = new LocalRegistry();
  registry.replace(answer);
  const expected = freshCount(answer);
  if (registry.hashcode() !== expected) throw new Error(`hashcode ${registry.hashcode()} after a full answer, counted afresh ${expected}`);
  for (const app of registry.appNames()) {
    const label = dnsLabelOf(app);
    if (label === undefined) continue;
    const instances = [...registry.instancesOf(app)];
    for (const options of OPTIONS) {
      const translated = translateApp(app, label, instances, options);
      if (!translated.service) continue;
      const checked = schema.safeParse(translated.service);
      if (!checked.success) throw new Error(`app ${app}: the contract refuses the service: ${checked.error.message}`);
      const reversed = translateApp(app, label, [...instances].reverse(), options);
      if (JSON.stringify(reversed.service) !== JSON.stringify(translated.service)) throw new Error(`app ${app}: the service depends on the instances' order`);
    }
  }
  // The same answer as a delta on another registry: the counts stay true to what is held.
  const onTop = new LocalRegistry();
  onTop.replace(BEFORE);
  onTop.applyDelta(answer);
  if (onTop.hashcode() !== countOf(onTop)) throw new Error(`hashcode ${onTop.hashcode()} after a delta, counted afresh ${countOf(onTop)}`);
}

const STATUSES = ['UP', 'DOWN', 'STARTING', 'OUT_OF_SERVICE', 'UNKNOWN', 'up', 'Sleepy', '', 7];
const ACTIONS = ['ADDED', 'MODIFIED', 'DELETED', 'added', 'GONE'];

/** Registry-shaped JSON with odd values where a server (or a broken one) could put them. */
function structured(check: FuzzCheck): fc.Arbitrary<Uint8Array> {
  const value = check.oneof(
    check.constantFrom<unknown>(null, true, false, 0, -1, 65535, 65536, 1.5, '', '0', '8080', '99999', '10.0.0.1', '::1', 'not an ip', '10.0.0.256'),
    check.string({ maxLength: 12 }),
    check.integer(),
  );
  const port = check.oneof(
    value,
    check.record({ $: value, '@enabled': check.constantFrom<unknown>('true', 'false', true, false, undefined, 'yes') }, { requiredKeys: [] }),
  );
  const instance = check.oneof(
    check.record(
      {
        instanceId: check.oneof(check.constantFrom('i-1', 'i-2', 'i-3', ''), value),
        hostName: check.oneof(check.constantFrom('10.1.0.1', 'host-a', ''), value),
        ipAddr: check.oneof(check.constantFrom('10.1.0.1', '10.1.0.2', 'fd00::1', '::ffff:10.1.0.3', '10.1.0.300'), value),
        status: check.constantFrom<unknown>(...STATUSES),
        actionType: check.constantFrom<unknown>(...ACTIONS),
        port,
        securePort: port,
        metadata: check.oneof(check.record({ zone: value, '@class': check.constant('java.util.Collections$EmptyMap') }, { requiredKeys: [] }), value),
        dataCenterInfo: check.record(
          {
            name: check.constantFrom<unknown>('Amazon', 'MyOwn', 3),
            metadata: check.record({ 'availability-zone': value, 'instance-id': value }, { requiredKeys: [] }),
          },
          { requiredKeys: [] },
        ),
      },
      { requiredKeys: [] },
    ),
    value,
  );
  const application = check.oneof(
    check.record(
      {
        name: check.oneof(check.constantFrom('ORDERS', 'orders', 'Web_API', 'web-api', '___', 'x'.repeat(80), 'ünï'), value),
        instance: check.oneof(check.array(instance, { maxLength: 5 }), instance),
      },
      { requiredKeys: [] },
    ),
    value,
  );
  return check
    .record({
      applications: check.record(
        {
          apps__hashcode: check.oneof(check.constantFrom('', 'UP_1_', 'DOWN_1_UP_3_'), value),
          application: check.oneof(check.array(application, { maxLength: 5 }), application),
        },
        { requiredKeys: [] },
      ),
    })
    .map((doc) => utf8(JSON.stringify(doc)));
}

export const fuzzTargets: Record<string, FuzzTarget> = {
  'eureka-answer': {
    run,
    inputs: (check, seeds) => fuzzInputs(check, seeds, structured(check)),
  },
};
