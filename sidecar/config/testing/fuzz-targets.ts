// The fuzz target of the sidecar's configuration files (run by common/testing/fuzz.ts; see
// sidecar/config/fuzz.test.ts): any bytes as mesh.json, services/<id>.json or sidecar.json, through
// buildState (each file's validation and the state built from them) on top of a good state built
// from a realistic codebase. Every input must be accepted, or refused with an error that names the
// file; nothing may throw; a refused file leaves what it would have replaced exactly as it was
// (the very same objects, and the bytes the cache keeps); an accepted codebase rebuilds to the same
// state from the bytes the cache would keep (what a restart does); the previous state is never
// changed. Inputs: the seeds in fuzz/corpus/config-file/ (the contract's examples and realistic
// catalogs) with values replaced: wildly (values of every type the contract uses, nested very
// deep, long lists), or mildly (values the seeds hold under the same key, so that many files are
// accepted and the state they build is checked too); their raw bytes mutated; and noise.
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import type fc from 'fast-check';
import { fuzzInputs, utf8 } from '../../../common/testing/fuzz-inputs.js';
import type { FuzzCheck, FuzzTarget } from '../../../common/testing/fuzz-runner.js';
import { MESH_FILE, SIDECAR_FILE, buildState, sourceFiles, type SidecarState } from '../state.js';
import { json, serviceDoc } from './fixtures.js';

const MESH = {
  apiVersion: 'flb.flomesh.io/v1alpha1',
  kind: 'Mesh',
  name: 'flb',
  controlPlaneNamespace: 'flomesh',
  clusterName: 'east',
  interception: { mode: 'iptables', captureDns: true, excludeOutboundIpRanges: ['169.254.169.254/32'] },
  vipRanges: ['240.240.0.0/16'],
  dns: { domains: ['consul', 'eureka'] },
};
const SIDECAR_ID = 'pod.shop.orders-7d9f8c6b5-x2x4q';
const SIDECAR = {
  apiVersion: 'flb.flomesh.io/v1alpha1',
  kind: 'Sidecar',
  id: SIDECAR_ID,
  mesh: 'flb',
  identity: { kind: 'pod', namespace: 'shop', name: 'orders-7d9f8c6b5-x2x4q', serviceAccount: 'orders' },
  services: ['*'],
  locality: { zone: 'east-1a', cluster: 'east' },
};
const EUREKA = {
  apiVersion: 'flb.flomesh.io/v1alpha1',
  kind: 'Service',
  id: 'payments.eureka-prod.eureka',
  name: 'PAYMENTS',
  registry: 'eureka-prod',
  source: 'eureka',
  hostnames: ['payments', 'payments.eureka'],
  vips: [{ address: '240.240.0.17', allocation: 'mesh' }],
  ports: [{ port: 80, protocol: 'http', targetPort: 8080 }],
  endpoints: [
    { address: '192.168.10.21', port: 8080, cluster: 'vm', metadata: { instanceId: 'vm-21:payments:8080' } },
    { address: '10.244.1.30', port: 8080, cluster: 'east', priority: 1 },
  ],
  policy: { loadBalancer: { algorithm: 'ring-hash', hash: { on: 'header', name: 'x-user-id' } }, locality: { prefer: 'cluster', minHealthyPercent: 50 } },
};

const KUBERNETES = {
  apiVersion: 'flb.flomesh.io/v1alpha1',
  kind: 'Service',
  id: 'orders.shop',
  name: 'orders',
  namespace: 'shop',
  source: 'kubernetes',
  hostnames: ['orders.shop.svc.cluster.local'],
  vips: [{ address: '10.96.14.20', allocation: 'cluster-ip' }],
  ports: [
    { name: 'http', port: 80, protocol: 'http', targetPort: 8080 },
    { name: 'grpc', port: 9090, protocol: 'grpc' },
  ],
  endpoints: [
    { address: '10.244.1.5', port: 8080, ports: { grpc: 9090 }, zone: 'east-1a' },
    { address: '10.244.3.9', port: 8080, ports: { grpc: 9090 }, zone: 'east-1b', healthy: false },
  ],
  policy: {
    loadBalancer: { algorithm: 'least-request' },
    healthCheck: { protocol: 'http', path: '/actuator/health', intervalMs: 2000 },
    retries: { attempts: 2, on: ['connect-failure', '5xx'] },
  },
};

/** The codebase in force before each input: the contract's examples and a realistic catalog. */
function goodCodebase(): Map<string, Buffer> {
  const files = new Map<string, Buffer>([
    [MESH_FILE, json(MESH)],
    [SIDECAR_FILE, json(SIDECAR)],
    [`services/${EUREKA.id}.json`, json(EUREKA)],
  ]);
  files.set(`services/${String(KUBERNETES.id)}.json`, json(KUBERNETES));
  // Enough services for conflicts and reuse to matter; every build walks all of them, so few.
  for (const i of [1, 2, 7]) {
    const doc = serviceDoc(`svc-${i}`, { vip: `240.240.1.${i}`, endpoints: 1 + (i % 4) * 8, port: i % 3 === 0 ? 8080 : 80 });
    files.set(`services/${String(doc.id)}.json`, json(doc));
  }
  return files;
}

const GOOD = goodCodebase();
const built = buildState(GOOD, undefined, 'good', { sidecarId: SIDECAR_ID });
if (!built.state || built.rejected.length > 0) throw new Error(`the fuzz targets' good codebase is not good: ${JSON.stringify(built.rejected)}`);
const PREVIOUS: SidecarState = built.state;
/** A deep copy to compare with now and then: nothing may change the state in force. */
const PREVIOUS_COPY = structuredClone({ mesh: PREVIOUS.mesh, sidecar: PREVIOUS.sidecar, services: [...PREVIOUS.services] });
const EXISTING_SERVICE = 'svc-7.static';
let runs = 0;

function stateParts(state: SidecarState) {
  return { mesh: state.mesh, sidecar: state.sidecar, services: [...state.services] };
}

/**
 * Which file the bytes are: the one their `kind` says (a mutated seed stays what it was), else one
 * of the three by length. A service goes over a known one, or in as a new one named after its id.
 * (Read with patterns rather than JSON.parse: the build parses the file anyway, once is enough.)
 */
function pathFor(input: Uint8Array): string {
  const text = Buffer.from(input.buffer, input.byteOffset, input.byteLength).toString('latin1');
  const kind = /"kind"\s*:\s*"(Mesh|Sidecar|Service)"/.exec(text)?.[1] ?? (['Mesh', 'Sidecar', 'Service'] as const)[input.length % 3]!;
  if (kind === 'Mesh') return MESH_FILE;
  if (kind === 'Sidecar') return SIDECAR_FILE;
  if (input.length % 4 === 0) return `services/${EXISTING_SERVICE}.json`;
  const id = /"id"\s*:\s*"([a-z0-9.-]{1,200})"/.exec(text)?.[1];
  return id !== undefined ? `services/${id}.json` : 'services/fuzzed.static.json';
}

function checkFile(path: string, input: Uint8Array): void {
  const bytes = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  const files = new Map(GOOD);
  files.set(path, bytes);
  const result = buildState(files, PREVIOUS, 'next', { sidecarId: SIDECAR_ID });
  const state = result.state;
  assert.ok(state, 'with a state in force, there is always a state');
  assert.equal(state.version, 'next');
  assert.equal(state.sidecar.mesh, state.mesh.name, 'the sidecar in force belongs to the mesh in force');
  for (const r of result.rejected) {
    assert.equal(typeof r.error, 'string');
    assert.ok(r.error.startsWith(`invalid ${r.path}: `), `the error names the file: ${r.error.slice(0, 200)}`);
    assert.ok(r.error.length <= 5000, `an error of ${r.error.length} characters is not one a person reads`);
    // Only the fuzzed file, or services that a new mesh.json (new VIP ranges) makes invalid.
    assert.ok(r.path === path || (path === MESH_FILE && r.path.startsWith('services/')), `refused ${r.path} for a change to ${path}`);
  }
  const refused = result.rejected.some((r) => r.path === path);
  const kept = sourceFiles(state)!;
  const id = /^services\/(.+)\.json$/.exec(path)?.[1];
  if (refused) {
    // What the file would have replaced stays, as the same objects and the same bytes.
    if (path === MESH_FILE) {
      assert.equal(state.mesh, PREVIOUS.mesh);
      assert.ok(kept.get(path)!.equals(GOOD.get(path)!));
      assert.deepEqual([...state.services.keys()], [...PREVIOUS.services.keys()]);
      for (const [sid, service] of state.services) assert.equal(service, PREVIOUS.services.get(sid));
    } else if (path === SIDECAR_FILE) {
      assert.equal(state.sidecar, PREVIOUS.sidecar);
      assert.ok(kept.get(path)!.equals(GOOD.get(path)!));
    } else if (id !== undefined && PREVIOUS.services.has(id)) {
      assert.equal(state.services.get(id), PREVIOUS.services.get(id));
      assert.ok(kept.get(path)!.equals(GOOD.get(path)!));
    } else if (id !== undefined) {
      assert.equal(state.services.has(id), false);
      assert.equal(kept.has(path), false);
    }
  } else if (id === undefined || state.services.has(id)) {
    assert.ok(kept.get(path)!.equals(bytes), 'an accepted file is what the cache keeps');
  }
  runs++;
  if (result.rejected.length === 0 && runs % 3 === 0) {
    // A restart from the cache (no state in force) must give the same state. For every third
    // accepted input: a build from nothing parses every file and costs five times the rest.
    const again = buildState(new Map(kept), undefined, 'restart', { sidecarId: SIDECAR_ID });
    assert.deepEqual(again.rejected, []);
    assert.ok(isDeepStrictEqual(stateParts(again.state!), stateParts(state)), 'the cached bytes rebuild the same state');
  }
  // A first start with the same mesh.json and sidecar.json: a state, or none when either is
  // refused (every third input: it parses both again).
  if ((path === MESH_FILE || path === SIDECAR_FILE) && runs % 3 === 1) {
    const first = buildState(
      new Map([
        [MESH_FILE, files.get(MESH_FILE)!],
        [SIDECAR_FILE, files.get(SIDECAR_FILE)!],
      ]),
      undefined,
      'first',
      { sidecarId: SIDECAR_ID },
    );
    assert.equal(
      first.state === undefined,
      first.rejected.some((r) => r.path === MESH_FILE || r.path === SIDECAR_FILE),
    );
  }
  if (runs % 5000 === 0) assert.ok(isDeepStrictEqual(stateParts(PREVIOUS), PREVIOUS_COPY), 'the state in force was changed');
}

/** Values of every type the contract uses, and some it does not expect. */
const VALUES: unknown[] = [
  null,
  true,
  false,
  0,
  -1,
  1,
  80,
  8080,
  65535,
  65536,
  1e308,
  -0,
  0.5,
  Number.MAX_SAFE_INTEGER,
  2 ** 53 + 1,
  '',
  ' ',
  'x',
  'flb',
  'flb.flomesh.io/v1alpha1',
  'Mesh',
  'Service',
  'Sidecar',
  '*',
  'tcp',
  'http',
  'http2',
  'grpc',
  'mesh',
  'cluster-ip',
  '10.0.0.1',
  '240.240.0.17',
  '240.240.1.7',
  '::1',
  '::ffff:240.240.0.17',
  'fd00::1',
  '999.1.1.1',
  '10.0.0.0/8',
  '240.240.0.0/16',
  '0.0.0.0/0',
  '::/0',
  '10.0.0.0/33',
  '1s',
  '250ms',
  '-1s',
  '1e9h',
  'pod.shop.orders-7d9f8c6b5-x2x4q',
  'svc-7.static',
  'orders.shop',
  '__proto__',
  'constructor',
  '\u0000',
  '\u202e',
  '🙂',
  'x'.repeat(5000),
  {},
  [],
  [{}],
  [null],
  JSON.parse('{"__proto__": {"polluted": true}}'),
];

/** A marker replaced, in the JSON text, by arrays or objects nested this deep (too deep to build as values and serialise). */
const DEEP = 'FUZZ-DEEP-';
const nestedText = (depth: number, objects: boolean) =>
  objects ? '{"a":'.repeat(depth) + '1' + '}'.repeat(depth) : '['.repeat(depth) + '1' + ']'.repeat(depth);

/** Every leaf value of the seeds by its key ("address" -> the addresses they hold): replacements that usually stay valid. */
type Pools = Map<string, unknown[]>;

function poolsOf(docs: readonly unknown[]): Pools {
  const pools: Pools = new Map();
  const walk = (value: unknown, key: string) => {
    if (Array.isArray(value)) for (const item of value) walk(item, key);
    else if (value && typeof value === 'object') for (const [k, v] of Object.entries(value)) walk(v, k);
    else pools.set(key, [...(pools.get(key) ?? []), value]);
  };
  for (const doc of docs) walk(doc, '');
  return pools;
}

/**
 * One to four values replaced or deleted, anywhere. Wild: by a value above, a very deep one or a
 * long list, so most documents are refused. Mild: by a value the seeds hold under the same key, or
 * an element repeated, so most are accepted and the state they build is checked too.
 */
function mutateDocument(doc: unknown, random: () => number, pools: Pools | undefined): unknown {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const replacement = (key: string): unknown => {
    const pool = pools?.get(key);
    if (pool) return pick(pool);
    const r = random();
    if (r < 0.92) return structuredClone(pick(VALUES));
    // 2,000 levels already overflow the stack of a recursive walk (util.isDeepStrictEqual's, say).
    if (r < 0.96) return `${DEEP}${pick([10, 100, 2000, 5000])}-${random() < 0.5 ? 'o' : 'a'}`;
    // Long lists are slow to refuse (each bad item is a problem of its own), so they are rarer.
    return Array.from({ length: random() < 0.9 ? pick([2, 5, 20]) : pick([200, 2000]) }, () => pick(VALUES.slice(0, 45)));
  };
  if (doc === null || typeof doc !== 'object') return replacement('');
  for (let n = 1 + Math.floor(random() * 4); n > 0; n--) {
    let node = doc as Record<string, unknown>;
    let nodeKey = '';
    for (let depth = 0; depth < 8; depth++) {
      const keys = Object.keys(node);
      if (keys.length === 0) {
        if (!pools) node[pick(['id', 'name', 'vips', 'ports', 'endpoints', 'services', 'x'])] = replacement('');
        break;
      }
      const key = pick(keys);
      // Mild mutations leave what names the document alone: another kind or id is refused outright.
      if (pools && depth === 0 && ['apiVersion', 'kind', 'id', 'mesh'].includes(key)) break;
      const child = node[key];
      if (child && typeof child === 'object' && random() < 0.7) {
        node = child as Record<string, unknown>;
        // Array elements take their list's key: the pools know "vipRanges", not "0".
        if (!Array.isArray(node) || !/^\d+$/.test(key)) nodeKey = key;
        continue;
      }
      const leafKey = Array.isArray(node) ? nodeKey : key;
      if (random() < (pools ? 0.1 : 0.25)) delete node[key];
      else if (Array.isArray(node) && random() < 0.2) node.push(structuredClone(child));
      else node[key] = replacement(leafKey);
      break;
    }
  }
  return doc;
}

function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Seeds parsed once; each input is one of them, its values mutated, serialised (sometimes pretty). */
function inputs(check: FuzzCheck, seeds: readonly Uint8Array[]): fc.Arbitrary<Uint8Array> {
  const docs = seeds.flatMap((seed) => {
    try {
      return [JSON.parse(Buffer.from(seed).toString('utf8')) as unknown];
    } catch {
      return [];
    }
  });
  const pools = poolsOf(docs);
  const documents = check.tuple(check.nat(docs.length - 1), check.integer()).map(([index, seed]) => {
    const random = mulberry32(seed);
    const doc = mutateDocument(structuredClone(docs[index]), random, random() < 0.4 ? pools : undefined);
    const text = random() < 0.1 ? JSON.stringify(doc, null, 2) : JSON.stringify(doc);
    return utf8(text.replace(/"FUZZ-DEEP-(\d+)-([oa])"/g, (_, depth: string, kind: string) => nestedText(Number(depth), kind === 'o')));
  });
  // Mostly documents that parse, so validation and state building are explored as deeply as the
  // JSON; the rest are byte mutations (which mostly break the JSON) and noise.
  return check.oneof({ arbitrary: documents, weight: 3 }, { arbitrary: fuzzInputs(check, seeds, documents), weight: 1 });
}

/** Which file an input goes in as, and whether it is accepted there (for the test that the inputs reach both). */
export function outcomeOf(input: Uint8Array): { file: 'mesh.json' | 'sidecar.json' | 'service'; accepted: boolean } {
  const path = pathFor(input);
  const files = new Map(GOOD);
  files.set(path, Buffer.from(input));
  const { rejected } = buildState(files, PREVIOUS, 'next', { sidecarId: SIDECAR_ID });
  return { file: path === MESH_FILE || path === SIDECAR_FILE ? path : 'service', accepted: !rejected.some((r) => r.path === path) };
}

export const fuzzTargets: Record<string, FuzzTarget> = {
  'config-file': { run: (input) => checkFile(pathFor(input), input), inputs },
};
