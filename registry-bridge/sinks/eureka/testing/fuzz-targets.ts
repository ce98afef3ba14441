// Fuzz target of the Eureka sink (run by ../fuzz.test.ts through common/testing/fuzz.ts): whatever a
// Eureka server (or something in its place) answers to /apps reaches what the sink decides to write.
// For every input that is JSON:
//  - heldInRegistry returns, or throws only its own "no applications" error (nothing is decided then);
//  - no instance without this sink's writer mark is ever registered over or cancelled, whatever the
//    sink wants and whether removals are allowed;
//  - nothing is cancelled while it is wanted or before removals are allowed;
//  - an instance of ours that matches what is wanted is never registered again.
// Seeds (fuzz/corpus/eureka-apps/) are in the shape the Spring Cloud Eureka server answers: the
// sink's instances, someone's instance of the same app, an empty registry.
import type fc from 'fast-check';
import { fuzzInputs, utf8 } from '../../../../common/testing/fuzz-inputs.js';
import type { FuzzCheck, FuzzTarget } from '../../../../common/testing/fuzz-runner.js';
import { actionFor, heldInRegistry, METADATA, type Held, type Lease, type Registration } from '../instances.js';

const WRITER = 'flb-local/eureka';

function registrationLike(held: Held): Registration | undefined {
  // Only what the sink itself writes: UP or DOWN, exactly one of the two ports enabled.
  if ((held.status !== 'UP' && held.status !== 'DOWN') || held.portEnabled === held.securePortEnabled) return undefined;
  const secure = held.securePortEnabled && !held.portEnabled;
  return {
    id: held.id,
    app: held.app,
    catalogId: 'x',
    address: held.address,
    port: secure ? held.securePort : held.port,
    secure,
    status: held.status,
    vipAddress: held.vipAddress,
    metadata: held.metadata,
  };
}

function run(input: Uint8Array): void {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder().decode(input));
  } catch {
    return; // The sink refuses what is not JSON before anything reads it.
  }
  let held: Map<string, Held>;
  try {
    held = heldInRegistry(doc);
  } catch (error) {
    if (/no "applications" object/.test((error as Error).message)) return;
    throw error;
  }
  for (const [key, instance] of held) {
    const ours = instance.metadata[METADATA.writer] === WRITER;
    const lease: Lease = { renewalIntervalSeconds: instance.renewalSeconds ?? 30, leaseDurationSeconds: instance.leaseSeconds ?? 90 };
    const same = registrationLike(instance);
    const other: Registration | undefined = same && { ...same, address: `${instance.address}x` };
    for (const mayRemove of [false, true]) {
      for (const wanted of [undefined, same, other]) {
        const action = actionFor(wanted, instance, ours, mayRemove, lease).kind;
        if (!ours && action !== 'none' && action !== 'foreign') throw new Error(`${action} of ${key}, which is not the sink's`);
        if (action === 'cancel' && (!mayRemove || wanted)) throw new Error(`cancelled ${key} while ${wanted ? 'wanted' : 'removals wait'}`);
      }
      if (ours && same && instance.address === instance.hostName && actionFor(same, instance, ours, mayRemove, lease).kind !== 'none')
        throw new Error(`${key} registered again unchanged`);
    }
  }
}

function structured(check: FuzzCheck): fc.Arbitrary<Uint8Array> {
  const value = check.oneof(check.constantFrom<unknown>(null, true, 0, -1, 8080, '', 'WEB', [], {}), check.string({ maxLength: 10 }), check.integer());
  const port = check.oneof(
    check.record({ $: check.oneof(check.constant(8080), value), '@enabled': check.oneof(check.constantFrom('true', 'false', true), value) }),
    value,
  );
  const instance = check.record(
    {
      instanceId: check.oneof(check.constantFrom('10.0.0.1:web.shop:8080', 'vm-1'), value),
      app: check.oneof(check.constantFrom('WEB', 'web'), value),
      hostName: check.oneof(check.constant('10.0.0.1'), value),
      ipAddr: check.oneof(check.constant('10.0.0.1'), value),
      status: check.oneof(check.constantFrom('UP', 'DOWN', 'OUT_OF_SERVICE'), value),
      overriddenStatus: check.oneof(check.constantFrom('UNKNOWN', 'OUT_OF_SERVICE'), value),
      port,
      securePort: port,
      vipAddress: check.oneof(check.constant('web'), value),
      leaseInfo: check.oneof(
        check.record({ renewalIntervalInSecs: check.oneof(check.constant(30), value), durationInSecs: check.oneof(check.constant(90), value) }),
        value,
      ),
      metadata: check.oneof(
        check.record({ [METADATA.writer]: check.oneof(check.constantFrom(WRITER, 'flb-other/eureka'), value), [METADATA.origin]: value }, { requiredKeys: [] }),
        value,
      ),
    },
    { requiredKeys: [] },
  );
  const app = check.record(
    { name: check.oneof(check.constant('WEB'), value), instance: check.oneof(check.array(instance, { maxLength: 4 }), instance, value) },
    { requiredKeys: [] },
  );
  const doc = check.record(
    {
      applications: check.oneof(
        check.record({ apps__hashcode: value, application: check.oneof(check.array(app, { maxLength: 3 }), app, value) }, { requiredKeys: [] }),
        value,
      ),
    },
    { requiredKeys: [] },
  );
  return doc.map((d) => utf8(JSON.stringify(d)));
}

export const fuzzTargets: Record<string, FuzzTarget> = {
  'eureka-apps': {
    run,
    inputs: (check, seeds) => fuzzInputs(check, seeds, structured(check)),
  },
};
