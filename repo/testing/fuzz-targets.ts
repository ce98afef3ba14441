// Fuzz targets of the repo (run by common/testing/fuzz.ts; see repo/fuzz.test.ts). Each drives the
// real request handler (createRepoHandler: authentication, routing, the Repo, an in-memory store)
// in-process, without a socket, and wants for every input an answer below 500 whose
// content-length is its body's, with the repo's state still sound afterwards: every codebase name
// and path a valid one, every sha it refers to a blob the store has.
//
// - paths: any bytes as the request path, for every method, anonymous (what a loopback caller may
//   do) or as the sidecar pod.shop.web. checkPath on the same string either refuses it or returns
//   a plain path; a sidecar's 2xx answer never carries another sidecar's content.
// - headers: If-None-Match, Prefer: wait=, Accept, Authorization and content-length on the routes
//   that read them (long polls with deltas, status reports, drafts, batches).
// - bodies: the JSON of POST/PATCH /api/v1/repo/<codebase> (create, publish, the batch extension),
//   drafts, and status reports.
//
// The state is made afresh every RESET inputs (a codebase created per input would otherwise make
// every later one slower).
import assert from 'node:assert/strict';
import { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import type fc from 'fast-check';
import { Registry } from 'prom-client';
import { createLogger } from '../../common/log.js';
import { DELTA_MEDIA_TYPE } from '../../common/repo-worker.js';
import { fuzzInputs, utf8 } from '../../common/testing/fuzz-inputs.js';
import type { FuzzCheck, FuzzTarget } from '../../common/testing/fuzz-runner.js';
import { Authenticator } from '../auth.js';
import { checkPath, Repo } from '../repo.js';
import { createRepoHandler, type RepoHandler, type ReplySink } from '../server.js';
import { MemoryStore } from './memory-store.js';

const AUDIENCE = 'flb-repo';
const RESET = 2000;
const METHODS = ['GET', 'HEAD', 'POST', 'PATCH', 'DELETE', 'PUT', 'OPTIONS'] as const;
/** Content only the sidecar pod.shop.other's codebase holds: pod.shop.web must never be served it. */
const OTHERS_SECRET = 'secret-of-pod.shop.other';

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
/** A token that passes the local checks; the in-process TokenReview believes its pod claim. */
export const tokenFor = (pod: string, extra: Record<string, unknown> = {}) =>
  `${b64({ alg: 'RS256', kid: 'fuzz' })}.${b64({ aud: [AUDIENCE], exp: Math.floor(Date.now() / 1000) + 3600, sub: 'system:serviceaccount:shop:default', 'kubernetes.io': { pod: { name: pod } }, ...extra })}.c2lnbmF0dXJl`;
const WEB_TOKEN = tokenFor('web');

interface World {
  store: MemoryStore;
  repo: Repo;
  handler: RepoHandler;
  /** The same repo with long polls held 1 ms: every held poll costs a timer's millisecond, so only some inputs use it. */
  waitingHandler: RepoHandler;
  inputs: number;
}

// Most inputs are refused with a 4xx thrown as a RepoError (or a SyntaxError, a URIError): capturing
// ten stack frames for each took a third of the time. A finding's message carries the request.
Error.stackTraceLimit = 1;

let world: World | undefined;
const log = createLogger('repo-fuzz', 'silent');
const socket = new Socket();

async function freshWorld(): Promise<World> {
  const store = new MemoryStore();
  const repo = await new Repo(store).load();
  const publish = (name: string, files: Record<string, string>, version: string) =>
    repo.writeFiles(name, new Map(Object.entries(files).map(([p, c]) => [p, Buffer.from(c)])), { version });
  await repo.create('/flb/mesh', { main: '/mesh.json' });
  await publish('/flb/mesh', { '/mesh.json': '{"v":1}', '/services/a.json': '{"a":1}' }, '1');
  await publish('/flb/mesh', { '/mesh.json': '{"v":2}', '/services/b.json': '{"b":2}' }, '2');
  for (const pod of ['web', 'other']) {
    await repo.create(`/flb/sidecars/pod.shop.${pod}`, { base: '/flb/mesh' });
    await publish(`/flb/sidecars/pod.shop.${pod}`, { '/sidecar.json': pod === 'other' ? OTHERS_SECRET : `{"id":"${pod}"}` }, '1');
    await repo.writeDraft(`/flb/sidecars/pod.shop.${pod}`, '/draft.json', Buffer.from(pod === 'other' ? OTHERS_SECRET : 'draft'));
  }
  const auth = new Authenticator({
    trustAnonymous: true,
    tokenReview: {
      audience: AUDIENCE,
      // The apiserver's part, in-process: any token that got this far is taken at its word.
      review: async (token) => {
        const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as { 'kubernetes.io'?: { pod?: { name?: unknown } } };
        const pod = claims['kubernetes.io']?.pod?.name;
        return {
          authenticated: true,
          audiences: [AUDIENCE],
          user: { username: 'system:serviceaccount:shop:default', extra: { 'authentication.kubernetes.io/pod-name': [String(pod)] } },
        };
      },
    },
  });
  const handler = createRepoHandler({ repo, log, auth, registry: new Registry(), maxWaitMs: 0 });
  const waitingHandler = createRepoHandler({ repo, log, auth, registry: new Registry(), maxWaitMs: 1 });
  return { store, repo, handler, waitingHandler, inputs: 0 };
}

async function current(): Promise<World> {
  if (world && world.inputs++ < RESET) return world;
  world?.handler.close();
  world?.waitingHandler.close();
  world = await freshWorld();
  return world;
}

class Capture implements ReplySink {
  headersSent = false;
  status = 0;
  headers: Record<string, unknown> = {};
  body: Buffer = Buffer.alloc(0);
  writeHead(status: number, headers: Record<string, unknown>): this {
    this.status = status;
    this.headers = headers;
    this.headersSent = true;
    return this;
  }
  end(body?: string | Buffer): void {
    this.body = typeof body === 'string' ? Buffer.from(body) : (body ?? Buffer.alloc(0));
  }
}

interface Request {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: Uint8Array;
}

/** Answers by target and status, for the test that shows the inputs reach every kind of answer. */
export const answered: Record<string, Record<number, number>> = {};
let target = '';

/** Sends the request through the handler and checks what every answer must be. */
async function send(request: Request, holdLongPolls = false): Promise<Capture> {
  const { handler, waitingHandler } = await current();
  const req = new IncomingMessage(socket);
  req.method = request.method;
  req.url = request.url;
  req.headers = request.headers;
  if (request.body && request.body.length > 0) req.push(Buffer.from(request.body));
  req.push(null);
  const res = new Capture();
  await (holdLongPolls ? waitingHandler : handler).handle(req, res);
  const counts = (answered[target] ??= {});
  counts[res.status] = (counts[res.status] ?? 0) + 1;
  assert.ok(res.headersSent, `no answer to ${request.method} ${request.url}`);
  assert.ok(
    res.status >= 200 && res.status < 500,
    `${request.method} ${JSON.stringify(request.url)} answered ${res.status}: ${res.body.toString().slice(0, 300)}`,
  );
  if (res.headers['content-length'] !== undefined) {
    const expected = Number(res.headers['content-length']);
    assert.equal(request.method === 'HEAD' ? 0 : expected, res.body.length, `content-length ${expected} for a body of ${res.body.length}`);
  }
  return res;
}

/** The repo's state is sound: names and paths valid, every sha a blob the store has. */
async function checkState(): Promise<void> {
  const { repo, store } = world!;
  for (const name of repo.list()) {
    assert.equal(checkPath(name, 'codebase name'), name);
    const record = repo.get(name)!;
    for (const [path, sha] of [...Object.entries(record.files), ...Object.entries(record.edits)]) {
      assert.equal(checkPath(path, 'filename'), path);
      if (sha !== null) assert.ok(await store.getBlob(sha), `${name}${path} refers to a missing blob ${sha}`);
    }
  }
}

const PLAIN_PATH = /^(\/[A-Za-z0-9._-]+)+$/;

/** checkPath refuses the string with a 400, or returns it unchanged as a plain path. */
function checkPathProperty(path: string): void {
  let accepted: string;
  try {
    accepted = checkPath(path, 'path');
  } catch (error) {
    assert.equal((error as { status?: number }).status, 400, `checkPath threw ${String(error)}`);
    return;
  }
  assert.equal(accepted, path);
  assert.ok(PLAIN_PATH.test(path) && path.length <= 512, `checkPath accepted ${JSON.stringify(path)}`);
  assert.ok(!path.split('/').some((s) => s === '.' || s === '..'), `checkPath accepted a dot segment: ${JSON.stringify(path)}`);
}

// paths: [method, principal, ...path bytes (latin1, as node:http hands them over)]
const PATH_PREFIXES = [
  '/repo/flb/mesh/',
  '/repo/flb/sidecars/pod.shop.web/',
  '/repo/flb/sidecars/pod.shop.other/',
  '/repo/',
  '/api/v1/repo/',
  '/api/v1/repo/flb/mesh',
  '/api/v1/repo-files/flb/mesh/',
  '/api/v1/repo-files/flb/sidecars/pod.shop.other/',
  '/metrics',
  '/',
  '',
];
const PATH_PIECES = [
  '..',
  '.',
  '%2e%2e',
  '%2E',
  '%2f',
  '%2F',
  '%00',
  '%',
  '%zz',
  '%c0%ae',
  '/',
  '//',
  '_etags',
  'mesh.json',
  'sidecar.json',
  'draft.json',
  'pod.shop.other',
  'flb',
  'sidecars',
  'services',
  'a.json',
  '?x=1',
  '#',
  '\\',
  '\u0000',
  '\u00ff',
  '\u2028',
  '😀',
  'x'.repeat(600),
  ' ',
  '+',
  '~',
];

/** Paths that name something, so that inputs near them reach the routes behind the checks. */
const KNOWN_PATHS = [
  '/repo/flb/mesh/',
  '/repo/flb/mesh/mesh.json',
  '/repo/flb/mesh/_etags',
  '/repo/flb/sidecars/pod.shop.web/',
  '/repo/flb/sidecars/pod.shop.web/sidecar.json',
  '/repo/flb/sidecars/pod.shop.other/sidecar.json',
  '/repo/flb/',
  '/api/v1/repo',
  '/api/v1/repo/flb/mesh',
  '/api/v1/repo/flb/sidecars/pod.shop.other',
  '/api/v1/repo/flb/new',
  '/api/v1/repo-files/flb/mesh/mesh.json',
  '/api/v1/repo-files/flb/sidecars/pod.shop.other/draft.json',
  '/api/v1/repo-files/flb/mesh/new.json',
  '/metrics',
];

function pathsInput(check: FuzzCheck): fc.Arbitrary<Uint8Array> {
  const built = check
    .tuple(
      check.constantFrom(...PATH_PREFIXES),
      check.array(check.oneof(check.constantFrom(...PATH_PIECES), check.string({ maxLength: 8 })), { maxLength: 8 }),
      check.constantFrom('', '/', '?q', '/..'),
    )
    .map(([prefix, pieces, end]) => prefix + pieces.join('/') + end);
  return check
    .tuple(check.nat(METHODS.length - 1), check.boolean(), check.oneof(built, check.constantFrom(...KNOWN_PATHS)))
    .map(([method, asWeb, path]) => Uint8Array.from([method, asWeb ? 1 : 0, ...Buffer.from(path, 'latin1')]));
}

async function runPath(input: Uint8Array): Promise<void> {
  const method = METHODS[(input[0] ?? 0) % METHODS.length]!;
  const asWeb = ((input[1] ?? 0) & 1) === 1;
  const path = Buffer.from(input.subarray(2)).toString('latin1');
  const res = await send({
    method,
    url: path,
    headers: asWeb ? { authorization: `Bearer ${WEB_TOKEN}` } : {},
    body: method === 'POST' || method === 'PATCH' ? utf8('{}') : undefined,
  });
  if (asWeb && res.status < 300)
    assert.ok(!res.body.includes(OTHERS_SECRET), `pod.shop.web was served another sidecar's content by ${method} ${JSON.stringify(path)}`);
  checkPathProperty(path.split('?')[0]!);
  if (world!.inputs % 64 === 0) await checkState();
}

// headers: NUL-separated [route, if-none-match, prefer, accept, authorization, content-length]
const ROUTES: [string, string, string?][] = [
  ['GET', '/repo/flb/mesh/'],
  ['HEAD', '/repo/flb/mesh/'],
  ['GET', '/repo/flb/sidecars/pod.shop.web/'],
  ['GET', '/repo/flb/sidecars/pod.shop.web/_etags'],
  ['GET', '/repo/flb/mesh/mesh.json'],
  ['POST', '/repo/flb/mesh/', '{"uuid":"u1","name":"w"}'],
  ['POST', '/repo/flb/sidecars/pod.shop.web/', '{"uuid":"u2"}'],
  ['POST', '/api/v1/repo-files/flb/mesh/x.json', '{"x":1}'],
  ['PATCH', '/api/v1/repo/flb/mesh', '{"files":{"/y.json":"y"}}'],
  ['GET', '/api/v1/repo/flb/mesh'],
];
const ETAGS = ['1', '2', '1+1', '1+2', '2+1', '', '*', 'W/"1"', '"1"', '1, 2', '0', '99999999999999999999', '+', '1+', '+1', '1++1'];
const PREFERS = [
  'wait=1',
  'wait=0',
  'wait=55',
  'wait=99999999999999999999999',
  'wait=-1',
  'wait=1.5',
  'wait=',
  'respond-async, wait=2',
  'wait=1e3',
  'WAIT=1',
  'wait=0x10',
  'handling=lenient',
];
const ACCEPTS = [DELTA_MEDIA_TYPE, `${DELTA_MEDIA_TYPE}, text/plain;q=0.5`, 'text/plain', '*/*', '', DELTA_MEDIA_TYPE.toUpperCase()];
const AUTHORIZATIONS = [
  '',
  `Bearer ${WEB_TOKEN}`,
  `Bearer ${tokenFor('other')}`,
  `Bearer ${tokenFor('web', { aud: ['someone-else'] })}`,
  `Bearer ${tokenFor('web', { exp: 1 })}`,
  `Bearer ${tokenFor('web', { nbf: 4e9 })}`,
  `Bearer ${tokenFor('../../etc')}`,
  `Bearer ${tokenFor('web', { 'kubernetes.io': { pod: { name: ['web'] } } })}`,
  'Bearer ',
  'Bearer a.b.c',
  'Basic Zm9vOmJhcg==',
  'bearer x',
  `Bearer ${'x'.repeat(20_000)}`,
];
const LENGTHS = ['0', '5', '-1', 'abc', '99999999999999999999', '8388609', '1e3', ' 7', '7, 7', ''];

function headersInput(check: FuzzCheck): fc.Arbitrary<Uint8Array> {
  const field = (known: string[]) => check.oneof(check.constantFrom(...known), check.string({ maxLength: 16 }));
  return check
    .tuple(
      check.nat(ROUTES.length - 1),
      field(ETAGS),
      field(PREFERS),
      field(ACCEPTS),
      check.oneof(
        check.constantFrom(...AUTHORIZATIONS),
        check.string({ maxLength: 40 }).map((s) => `Bearer ${s}`),
      ),
      field(LENGTHS),
    )
    .map(([route, ...values]) => utf8([String(route), ...values].join('\0')));
}

async function runHeaders(input: Uint8Array): Promise<void> {
  const [route = '', ifNoneMatch, prefer, accept, authorization, contentLength] = Buffer.from(input).toString('utf8').split('\0');
  const [method, url, body] = ROUTES[Math.abs(Number.parseInt(route, 10) || route.length) % ROUTES.length]!;
  const headers: Record<string, string> = {};
  const set = (name: string, value: string | undefined) => {
    if (value) headers[name] = value;
  };
  set('if-none-match', ifNoneMatch);
  set('prefer', prefer);
  set('accept', accept);
  set('authorization', authorization);
  set('content-length', contentLength);
  const res = await send({ method, url, headers, body: body === undefined ? undefined : utf8(body) }, input.length % 8 === 0);
  if (res.status === 304) assert.equal(res.body.length, 0);
  if (res.headers['content-type'] === DELTA_MEDIA_TYPE) {
    const delta = JSON.parse(res.body.toString()) as { main: unknown; files: unknown; removed: unknown };
    assert.ok(typeof delta.main === 'string' && typeof delta.files === 'object' && Array.isArray(delta.removed), 'a malformed delta');
  }
  if (world!.inputs % 64 === 0) await checkState();
}

// bodies: [route, ...body bytes]
const BODY_ROUTES: [string, string][] = [
  ['POST', '/api/v1/repo/flb/fresh'],
  ['POST', '/api/v1/repo/flb/sidecars/pod.shop.new'],
  ['PATCH', '/api/v1/repo/flb/mesh'],
  ['PATCH', '/api/v1/repo/flb/sidecars/pod.shop.web'],
  ['POST', '/repo/flb/mesh/'],
  ['POST', '/repo/flb/sidecars/pod.shop.web/'],
  ['POST', '/api/v1/repo-files/flb/mesh/f.json'],
  ['PATCH', '/api/v1/repo-files/flb/mesh/f.json'],
  ['DELETE', '/api/v1/repo/flb/fresh'],
];

function jsonValue(check: FuzzCheck): fc.Arbitrary<unknown> {
  const path = check.oneof(
    check.constantFrom('/a.json', '/mesh.json', '/services/x.json', '/../x', '/a/./b', 'no-slash', '/', '//x', '/x/', `/${'p'.repeat(600)}`, '/\u0000'),
    check.string({ maxLength: 12 }),
  );
  const scalar = check.oneof(check.string({ maxLength: 12 }), check.integer(), check.double(), check.boolean(), check.constant(null));
  const version = check.oneof(scalar, check.constantFrom('3', '4', 'v+1', 'a b', '#', '', 'x'.repeat(200), -1, 2 ** 31, 1.5, Number.NaN));
  return check.oneof(
    check.record(
      {
        files: check.dictionary(path, check.oneof(check.string({ maxLength: 20 }), check.constant(null), scalar), { maxKeys: 6 }),
        version: version,
        main: check.oneof(path, scalar),
      },
      { requiredKeys: [] },
    ),
    check.record(
      {
        base: check.oneof(check.constantFrom('/flb/mesh', '/flb/fresh', '/nope', '/flb/sidecars/pod.shop.web'), scalar),
        main: check.oneof(path, scalar),
        version,
      },
      { requiredKeys: [] },
    ),
    check.record(
      {
        uuid: check.oneof(check.string({ maxLength: 40 }), scalar),
        name: scalar,
        version,
        rejected: check.oneof(check.array(check.record({ path: scalar, error: scalar }), { maxLength: 4 }), scalar),
        cache: check.oneof(check.record({ dir: scalar, version: scalar, error: scalar }), scalar),
        modules: check.oneof(check.dictionary(check.string({ maxLength: 8 }), check.record({ graph: check.jsonValue({ maxDepth: 2 }) })), scalar),
        logs: check.oneof(check.array(scalar, { maxLength: 4 }), scalar),
        metrics: check.jsonValue({ maxDepth: 3 }),
      },
      { requiredKeys: [] },
    ),
    check.jsonValue({ maxDepth: 4 }),
  );
}

function bodiesInput(check: FuzzCheck): fc.Arbitrary<Uint8Array> {
  return check
    .tuple(check.nat(BODY_ROUTES.length - 1), jsonValue(check))
    .map(([route, value]) => Uint8Array.from([route, ...utf8(JSON.stringify(value) ?? '')]));
}

async function runBody(input: Uint8Array): Promise<void> {
  const [method, url] = BODY_ROUTES[(input[0] ?? 0) % BODY_ROUTES.length]!;
  await send({ method, url, headers: {}, body: Buffer.from(input.subarray(1)) });
  if (world!.inputs % 16 === 0) await checkState();
}

const named = (name: string, run: (input: Uint8Array) => Promise<void>) => (input: Uint8Array) => {
  target = name;
  return run(input);
};

export const fuzzTargets: Record<string, FuzzTarget> = {
  paths: { run: named('paths', runPath), inputs: (check, seeds) => fuzzInputs(check, seeds, pathsInput(check)) },
  headers: { run: named('headers', runHeaders), inputs: (check, seeds) => fuzzInputs(check, seeds, headersInput(check)) },
  bodies: { run: named('bodies', runBody), inputs: (check, seeds) => fuzzInputs(check, seeds, bodiesInput(check)) },
};
