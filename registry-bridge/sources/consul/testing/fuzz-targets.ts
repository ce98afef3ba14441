// Fuzz target of the Consul source (run by ../fuzz.test.ts through common/testing/fuzz.ts): whatever
// bytes Consul (or something in its place) answers to /v1/health/service/<name> reach the
// translation into a catalog service. For every input that is JSON:
//  - translateConsulService returns (never throws), under either set of filters;
//  - a service it makes passes the contract once the catalog gives it a VIP;
//  - the service is the same whatever order Consul lists the instances in.
// Seeds (fuzz/corpus/consul-service/) are answers recorded from Consul v1.16.1 (-dev): a service
// with a warning instance, a critical node, a tagged WAN address and an IPv6 node; a Connect proxy;
// the agent's own `consul` service.
import type fc from 'fast-check';
import { API_VERSION, ConsulSourceSchema, MeshSchema, serviceSchemaFor } from '../../../../common/contract/index.js';
import { fuzzInputs, utf8 } from '../../../../common/testing/fuzz-inputs.js';
import type { FuzzCheck, FuzzTarget } from '../../../../common/testing/fuzz-runner.js';
import { ConsulError } from '../client.js';
import { addNodeServices, checksByNode } from '../node-reads.js';
import { translateConsulService } from '../translate.js';

const schema = serviceSchemaFor(MeshSchema.parse({ apiVersion: API_VERSION, kind: 'Mesh', name: 'flb' }));
const FILTERS = [
  ConsulSourceSchema.parse({ kind: 'consul' }),
  ConsulSourceSchema.parse({
    kind: 'consul',
    healthy: 'passing-or-warning',
    tags: { include: ['prod'] },
    meta: { team: 'pay' },
    addressTag: 'wan',
    protocol: 'grpc',
  }),
];

function run(input: Uint8Array): void {
  let entries: unknown;
  try {
    entries = JSON.parse(new TextDecoder().decode(input));
  } catch {
    return; // The client refuses what is not JSON before anything reads it.
  }
  for (const filters of FILTERS) {
    for (const previousPort of [undefined, 8080]) {
      const args = { name: 'Web_API', label: 'web-api', datacenter: 'dc1', entries, filters, ...(previousPort ? { previousPort } : {}) };
      const translated = translateConsulService(args);
      if (!translated.service) continue;
      const checked = schema.safeParse({ ...translated.service, vips: [{ address: '240.240.0.1', allocation: 'mesh' }] });
      if (!checked.success) throw new Error(`the contract refuses the service: ${checked.error.message}`);
      if (Array.isArray(entries)) {
        const reversed = translateConsulService({ ...args, entries: [...entries].reverse() });
        if (JSON.stringify(reversed.service) !== JSON.stringify(translated.service)) throw new Error("the service depends on the instances' order");
      }
    }
  }
}

/** /v1/health/service-shaped JSON with odd values where Consul (or a broken proxy) could put them. */
function structured(check: FuzzCheck): fc.Arbitrary<Uint8Array> {
  const value = check.oneof(
    check.constantFrom<unknown>(null, true, false, 0, -1, 65535, 65536, 1.5, '', '8080', '10.0.0.1', '::1', 'fd00::1', 'host.example', '10.0.0.256', [], {}),
    check.string({ maxLength: 12 }),
    check.integer(),
  );
  const status = check.constantFrom<unknown>('passing', 'warning', 'critical', 'maintenance', '', null, 3);
  const check_ = check.record(
    {
      CheckID: check.oneof(check.constantFrom('serfHealth', 'service:web-1', '_node_maintenance', '_service_maintenance:web-1'), value),
      Status: status,
      ServiceID: value,
    },
    { requiredKeys: [] },
  );
  const address = check.oneof(check.constantFrom('10.1.0.1', '10.1.0.2', '', 'fd00::2', '::ffff:10.1.0.3', 'web.example'), value);
  const entry = check.oneof(
    check.record(
      {
        Node: check.oneof(
          check.record(
            {
              Node: check.oneof(check.constantFrom('vm-1', 'vm-2'), value),
              Address: address,
              TaggedAddresses: check.oneof(check.record({ wan: address, lan: address }, { requiredKeys: [] }), value),
              Meta: check.oneof(check.record({ zone: value }, { requiredKeys: [] }), value),
            },
            { requiredKeys: [] },
          ),
          value,
        ),
        Service: check.oneof(
          check.record(
            {
              ID: check.oneof(check.constantFrom('web-1', 'web-2', 'web-3'), value),
              Kind: check.oneof(check.constantFrom('', 'connect-proxy', 'mesh-gateway'), value),
              Address: address,
              Port: check.oneof(check.constantFrom(8080, 9090, 0, 65536), value),
              Tags: check.oneof(check.array(check.oneof(check.constantFrom('prod', 'v1'), value), { maxLength: 3 }), value),
              Meta: check.oneof(
                check.record(
                  {
                    team: check.oneof(check.constant('pay'), value),
                    protocol: check.oneof(check.constantFrom('http', 'grpc', 'HTTP', 'smtp'), value),
                    'flomesh-origin': value,
                  },
                  { requiredKeys: [] },
                ),
                value,
              ),
              Weights: check.oneof(check.record({ Passing: value, Warning: value }, { requiredKeys: [] }), value),
              TaggedAddresses: check.oneof(
                check.record({ wan: check.oneof(check.record({ Address: address, Port: value }, { requiredKeys: [] }), value) }, { requiredKeys: [] }),
                value,
              ),
            },
            { requiredKeys: [] },
          ),
          value,
        ),
        Checks: check.oneof(check.array(check_, { maxLength: 3 }), value),
      },
      { requiredKeys: [] },
    ),
    value,
  );
  return check.oneof(check.array(entry, { maxLength: 6 }), value).map((doc) => utf8(JSON.stringify(doc)));
}

/** The checks the node reads are put together with: vm-1's node check and web-1's own. */
const NODE_CHECKS = checksByNode([
  { Node: 'vm-1', CheckID: 'serfHealth', Status: 'passing', ServiceID: '', ServiceName: '' },
  { Node: 'vm-1', CheckID: 'service:web-1', Status: 'warning', ServiceID: 'web-1', ServiceName: 'web' },
]);
const WANTED = new Set(['web', 'web-sidecar-proxy']);

/**
 * Whatever Consul answers to /v1/catalog/node-services/<node> or /v1/health/node/<node>: the
 * start's node reads refuse it with a ConsulError (its services are then fetched one by one) or
 * make entries of the wanted services only, each with its node and a list of checks, which the
 * translation takes like any other answer.
 */
function runNodeRead(input: Uint8Array): void {
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder().decode(input));
  } catch {
    return;
  }
  const refusedOnly = (read: () => void) => {
    try {
      read();
    } catch (error) {
      if (!(error instanceof ConsulError)) throw error;
    }
  };
  refusedOnly(() => checksByNode(body));
  const into = new Map<string, unknown[]>();
  refusedOnly(() => addNodeServices('vm-1', body, NODE_CHECKS, WANTED, into));
  for (const [name, entries] of into) {
    if (!WANTED.has(name)) throw new Error(`an entry for ${name}, which was not wanted`);
    for (const entry of entries as { Node: unknown; Checks: unknown }[]) {
      if (typeof entry.Node !== 'object' || entry.Node === null || !Array.isArray(entry.Checks)) throw new Error('an entry without its node or checks');
    }
    translateConsulService({ name, label: name, datacenter: 'dc1', entries, filters: FILTERS[0]! });
  }
}

/** node-services-shaped JSON with odd values where Consul (or a broken proxy) could put them. */
function nodeServices(check: FuzzCheck): fc.Arbitrary<Uint8Array> {
  const value = check.oneof(check.constantFrom<unknown>(null, true, 0, '', 'web', [], {}), check.string({ maxLength: 8 }), check.integer());
  const service = check.oneof(
    check.record(
      {
        ID: check.oneof(check.constantFrom('web-1', 'web-2', ''), value),
        Service: check.oneof(check.constantFrom('web', 'web-sidecar-proxy', 'db'), value),
        Kind: check.oneof(check.constant('connect-proxy'), value),
        Address: check.oneof(check.constantFrom('', '10.1.0.9'), value),
        Port: check.oneof(check.constantFrom(8080, 0), value),
      },
      { requiredKeys: [] },
    ),
    value,
  );
  const node = check.oneof(check.record({ Node: check.oneof(check.constant('vm-1'), value), Address: check.oneof(check.constant('10.1.0.1'), value) }), value);
  return check
    .oneof(check.record({ Node: node, Services: check.oneof(check.array(service, { maxLength: 4 }), value) }, { requiredKeys: [] }), value)
    .map((doc) => utf8(JSON.stringify(doc)));
}

export const fuzzTargets: Record<string, FuzzTarget> = {
  'consul-service': {
    run,
    inputs: (check, seeds) => fuzzInputs(check, seeds, structured(check)),
  },
  'consul-node-read': {
    run: runNodeRead,
    inputs: (check, seeds) => fuzzInputs(check, seeds, nodeServices(check)),
  },
};
