// Fuzz target of the Consul sink (run by ../fuzz.test.ts through common/testing/fuzz.ts): whatever
// Consul (or something in its place) answers to /v1/catalog/node-services/<node> and
// /v1/health/node/<node> reaches what the sink decides to write. For every input that is JSON:
//  - heldOnNode returns (never throws), and so do sameNode (whether the node is as the sink writes it)
//    and nodeNames (the names in /v1/catalog/nodes?node-meta=…'s answer: strings only);
//  - no instance without this sink's writer mark is ever registered over or deregistered, whatever
//    the sink wants and whether removals are allowed;
//  - an instance of ours that matches what is wanted is never written again.
// Seeds (fuzz/corpus/consul-node/) are in the shape Consul v1.16.1 answers (as the e2e test reads
// them): the sink's node with its instances and readiness checks, someone's instance on it, no node.
import type fc from 'fast-check';
import { fuzzInputs, utf8 } from '../../../../common/testing/fuzz-inputs.js';
import type { FuzzCheck, FuzzTarget } from '../../../../common/testing/fuzz-runner.js';
import { actionFor, heldOnNode, META, nodeNames, sameNode, type Registration } from '../registrations.js';

const WRITER = 'flb-local/consul';

function run(input: Uint8Array): void {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder().decode(input));
  } catch {
    return; // The client refuses what is not JSON before anything reads it.
  }
  const { services, checks } = (typeof doc === 'object' && doc !== null ? doc : {}) as { services?: unknown; checks?: unknown };
  const held = heldOnNode(services, checks);
  // The answer to /v1/catalog/nodes?node-meta=… (the nodes the sink reads besides its own): names only.
  for (const answer of [doc, services, checks])
    if (nodeNames(answer).some((name) => typeof name !== 'string')) throw new Error('nodeNames gave a name that is not a string');
  if (typeof sameNode(services, '127.0.0.1', { [META.writer]: WRITER }) !== 'boolean') throw new Error('sameNode answered no boolean');
  for (const [id, instance] of held) {
    const ours = instance.meta[META.writer] === WRITER;
    const same: Registration = {
      ...instance,
      catalogId: 'x',
      tags: [...instance.tags].sort(),
      status: instance.status === 'critical' ? 'critical' : 'passing',
    };
    const other: Registration = { ...same, address: `${instance.address}x` };
    for (const mayRemove of [false, true]) {
      for (const wanted of [undefined, same, other]) {
        const action = actionFor(wanted, instance, ours, mayRemove).kind;
        if (!ours && action !== 'none' && action !== 'foreign') throw new Error(`${action} of ${id}, which is not the sink's`);
        if (action === 'deregister' && (!mayRemove || wanted)) throw new Error(`deregistered ${id} while ${wanted ? 'wanted' : 'removals wait'}`);
      }
      if (ours && instance.status === same.status && actionFor(same, instance, ours, mayRemove).kind !== 'none')
        throw new Error(`${id} written again unchanged`);
    }
  }
}

function structured(check: FuzzCheck): fc.Arbitrary<Uint8Array> {
  const value = check.oneof(check.constantFrom<unknown>(null, true, 0, -1, 8080, '', 'web', [], {}), check.string({ maxLength: 10 }), check.integer());
  const id = check.oneof(check.constantFrom('web.shop-10-0-0-1-8080', 'hand-made'), value);
  const service = check.record(
    {
      ID: id,
      Service: check.oneof(check.constant('web'), value),
      Address: check.oneof(check.constantFrom('10.0.0.1', ''), value),
      Port: check.oneof(check.constant(8080), value),
      Tags: check.oneof(check.array(check.oneof(check.constant('k8s'), value), { maxLength: 3 }), value),
      Meta: check.oneof(
        check.record({ [META.writer]: check.oneof(check.constantFrom(WRITER, 'flb-other/consul'), value), [META.origin]: value }, { requiredKeys: [] }),
        value,
      ),
    },
    { requiredKeys: [] },
  );
  const healthCheck = check.record(
    {
      CheckID: check.oneof(check.constantFrom('web.shop-10-0-0-1-8080:readiness', 'serfHealth'), value),
      ServiceID: id,
      Status: check.oneof(check.constantFrom('passing', 'critical', 'warning'), value),
    },
    { requiredKeys: [] },
  );
  const doc = check.record(
    {
      services: check.oneof(
        check.record(
          {
            Node: check.oneof(
              check.record(
                {
                  Address: check.oneof(check.constant('127.0.0.1'), value),
                  Meta: check.oneof(check.record({ [META.writer]: check.oneof(check.constant(WRITER), value) }, { requiredKeys: [] }), value),
                },
                { requiredKeys: [] },
              ),
              value,
            ),
            Services: check.oneof(check.array(service, { maxLength: 4 }), value),
          },
          { requiredKeys: [] },
        ),
        value,
      ),
      checks: check.oneof(check.array(healthCheck, { maxLength: 4 }), value),
    },
    { requiredKeys: [] },
  );
  return doc.map((d) => utf8(JSON.stringify(d)));
}

export const fuzzTargets: Record<string, FuzzTarget> = {
  'consul-node': {
    run,
    inputs: (check, seeds) => fuzzInputs(check, seeds, structured(check)),
  },
};
