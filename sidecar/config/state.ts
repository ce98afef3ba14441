import { isDeepStrictEqual } from 'node:util';
import type { z } from 'zod';
import { serviceSchemaFor, type Service } from '../../common/contract/catalog.js';
import { MeshSchema, type Mesh } from '../../common/contract/mesh.js';
import { routingAddress } from '../../common/contract/primitives.js';
import { SidecarConfigSchema, type SidecarConfig } from '../../common/contract/sidecar.js';
import { ContractError, checkDocument, type ContractIssue } from '../../common/contract/validate.js';

/** Everything the sidecar runs on, as of one version of its codebase. */
export interface SidecarState {
  /** The codebase version (the repo's etag) this state was built from. */
  readonly version: string;
  readonly mesh: Mesh;
  readonly sidecar: SidecarConfig;
  /** By service id, only those `sidecar.services` names (`*`: all), in id order. */
  readonly services: ReadonlyMap<string, Service>;
}

/** What a new state changes compared with the previous one, so consumers touch only that. */
export interface ConfigChange {
  mesh: boolean;
  sidecar: boolean;
  services: { added: string[]; changed: string[]; removed: string[] };
}

/** A file that was refused; `error` names the file and each bad field. */
export interface RejectedFile {
  path: string;
  error: string;
}

export interface BuildResult {
  /** Undefined when there is no usable mesh.json and sidecar.json yet: the sidecar is not ready. */
  state: SidecarState | undefined;
  change: ConfigChange;
  rejected: RejectedFile[];
}

export interface BuildOptions {
  /** This sidecar's id: a sidecar.json for another sidecar is refused. */
  sidecarId?: string;
}

export const MESH_FILE = 'mesh.json';
export const SIDECAR_FILE = 'sidecar.json';
const SERVICE_FILE = /^services\/([^/]+)\.json$/;

/**
 * The bytes each state was built from, by path: what the on-disk cache must hold to rebuild the
 * same state (a refused file's previous bytes, not the refused ones), and what lets the next build
 * skip parsing files that did not change. Kept beside the state rather than in it so that code
 * which makes states by hand (tests of the proxy, say) need not invent bytes.
 */
const sources = new WeakMap<SidecarState, ReadonlyMap<string, Buffer>>();

/** The accepted files a state was built from (paths without a leading `/`). */
export function sourceFiles(state: SidecarState): ReadonlyMap<string, Buffer> | undefined {
  return sources.get(state);
}

export function emptyChange(): ConfigChange {
  return { mesh: false, sidecar: false, services: { added: [], changed: [], removed: [] } };
}

export function isEmptyChange(change: ConfigChange): boolean {
  const s = change.services;
  return !change.mesh && !change.sidecar && s.added.length + s.changed.length + s.removed.length === 0;
}

/**
 * Builds the state for a new version of the sidecar's codebase (`/mesh.json`, `/services/<id>.json`,
 * `/sidecar.json`; paths with or without the leading `/`). Pure: no I/O, no clock.
 *
 * A file that fails validation is refused and reported, and what it would have replaced stays: a
 * service's previous version, the previous mesh.json or sidecar.json. With no previous mesh.json or
 * sidecar.json to fall back on there is no state. A service whose VIP:port another service already
 * serves is refused too (the proxy maps a destination VIP:port to one service): the one that was
 * there first stays; between two new ones, the id that sorts first wins, so every sidecar decides
 * alike.
 */
export function buildState(files: ReadonlyMap<string, Buffer>, previous: SidecarState | undefined, version: string, options: BuildOptions = {}): BuildResult {
  const byPath = new Map<string, Buffer>();
  for (const [path, content] of files) byPath.set(path.replace(/^\/+/, ''), content);
  const previousSources = previous ? sources.get(previous) : undefined;
  const rejected: RejectedFile[] = [];
  const accepted = new Map<string, Buffer>();
  const refuse = (path: string, issues: ContractIssue[]) => rejected.push({ path, error: refusal(path, issues) });

  let mesh = readSingleton(MESH_FILE, MeshSchema, byPath, previous?.mesh, previousSources, accepted, refuse);
  if (!mesh) return { state: undefined, change: emptyChange(), rejected };
  const readSidecar = (meshName: string) =>
    readSingleton(SIDECAR_FILE, SidecarConfigSchema, byPath, previous?.sidecar, previousSources, accepted, refuse, (doc) => {
      const issues: ContractIssue[] = [];
      if (options.sidecarId !== undefined && doc.id !== options.sidecarId)
        issues.push({
          field: 'id',
          message: `is ${JSON.stringify(doc.id)}, but this sidecar is ${JSON.stringify(options.sidecarId)} (its --id, FLB_SIDECAR_ID, or POD_NAMESPACE and POD_NAME)`,
        });
      if (doc.mesh !== meshName) issues.push({ field: 'mesh', message: `is ${JSON.stringify(doc.mesh)}, but mesh.json names ${JSON.stringify(meshName)}` });
      return issues;
    });
  let sidecar = readSidecar(mesh.name);
  if (previous && sidecar && sidecar.mesh !== mesh.name) {
    // The new sidecar.json was refused and the one kept names the previous mesh: a mesh.json that
    // renames the mesh cannot go in without a sidecar.json that follows it, or the state would pair
    // a sidecar with another mesh and the cache keep files that build nothing after a restart.
    // (Found by the configuration-file fuzz target.)
    rejected.splice(0, rejected.length, ...rejected.filter((r) => r.path !== SIDECAR_FILE));
    refuse(MESH_FILE, [
      { field: 'name', message: `is ${JSON.stringify(mesh.name)}, but sidecar.json names ${JSON.stringify(sidecar.mesh)} (a sidecar belongs to one mesh)` },
    ]);
    mesh = previous.mesh;
    accepted.set(MESH_FILE, previousSources?.get(MESH_FILE) ?? Buffer.from(JSON.stringify(previous.mesh)));
    sidecar = readSidecar(mesh.name);
  }
  if (!sidecar) return { state: undefined, change: emptyChange(), rejected };

  const services = readServices(byPath, previous, previousSources, mesh, sidecar, accepted, refuse);
  const state: SidecarState = Object.freeze({ version, mesh, sidecar, services });
  sources.set(state, accepted);
  return { state, change: diff(previous, state), rejected };
}

type Refuse = (path: string, issues: ContractIssue[]) => void;

/** Problems named in one refusal, and characters of each: an error is read by people and sent in every status report. */
const MAX_ISSUES = 10;
const MAX_ISSUE_TEXT = 200;

/**
 * The error of a refused file: its first problems, each cut short, and how many more there are.
 * A file with thousands of bad values otherwise made an error ten times its own size (found by the
 * configuration-file fuzz target).
 */
function refusal(path: string, issues: ContractIssue[]): string {
  const cut = (text: string) => (text.length > MAX_ISSUE_TEXT ? `${text.slice(0, MAX_ISSUE_TEXT)}…` : text);
  const shown = issues.slice(0, MAX_ISSUES).map((i) => ({ field: cut(i.field), message: cut(i.message) }));
  const more = issues.length - shown.length;
  return new ContractError(path, shown).message + (more > 0 ? `; and ${more} more problems` : '');
}

function parse<S extends z.ZodType>(schema: S, content: Buffer): { ok: true; value: z.output<S> } | { ok: false; issues: ContractIssue[] } {
  let data: unknown;
  try {
    data = JSON.parse(content.toString('utf8'));
  } catch (error) {
    return { ok: false, issues: [{ field: '(document)', message: `not valid JSON: ${(error as Error).message}` }] };
  }
  return checkDocument(schema, data);
}

const sameBytes = (a: Buffer | undefined, b: Buffer) => a !== undefined && (a === b || a.equals(b));

/** mesh.json or sidecar.json: the new one if valid, else the previous one (with its bytes). */
function readSingleton<S extends z.ZodType>(
  path: string,
  schema: S,
  byPath: ReadonlyMap<string, Buffer>,
  previous: z.output<S> | undefined,
  previousSources: ReadonlyMap<string, Buffer> | undefined,
  accepted: Map<string, Buffer>,
  refuse: Refuse,
  crossCheck?: (doc: z.output<S>) => ContractIssue[],
): z.output<S> | undefined {
  const content = byPath.get(path);
  const keepPrevious = () => {
    if (previous === undefined) return undefined;
    accepted.set(path, previousSources?.get(path) ?? Buffer.from(JSON.stringify(previous)));
    return previous;
  };
  if (!content) {
    refuse(path, [{ field: '(document)', message: 'missing from the codebase' }]);
    return keepPrevious();
  }
  let doc: z.output<S>;
  if (previous !== undefined && sameBytes(previousSources?.get(path), content)) {
    doc = previous;
  } else {
    const result = parse(schema, content);
    if (!result.ok) {
      refuse(path, result.issues);
      return keepPrevious();
    }
    doc = result.value;
  }
  // Checked every time, even for unchanged bytes: the document it is checked against may have changed.
  const issues = crossCheck?.(doc) ?? [];
  if (issues.length > 0) {
    refuse(path, issues);
    return keepPrevious();
  }
  accepted.set(path, content);
  return doc;
}

interface Candidate {
  id: string;
  path: string;
  service: Service;
  content: Buffer;
  /** 0: as before (or the previous version kept), 1: a new version of a known service, 2: a new service. */
  age: 0 | 1 | 2;
  previous?: { service: Service; content: Buffer };
}

function readServices(
  byPath: ReadonlyMap<string, Buffer>,
  previous: SidecarState | undefined,
  previousSources: ReadonlyMap<string, Buffer> | undefined,
  mesh: Mesh,
  sidecar: SidecarConfig,
  accepted: Map<string, Buffer>,
  refuse: Refuse,
): Map<string, Service> {
  const wanted = sidecar.services.includes('*') ? undefined : new Set(sidecar.services);
  // A parsed service stays valid as long as its bytes and the mesh's VIP ranges do not change.
  const reusable = previous !== undefined && isDeepStrictEqual(previous.mesh.vipRanges, mesh.vipRanges);
  let schema: ReturnType<typeof serviceSchemaFor> | undefined;
  const candidates: Candidate[] = [];
  for (const [path, content] of byPath) {
    const id = SERVICE_FILE.exec(path)?.[1];
    if (id === undefined || (wanted && !wanted.has(id))) continue;
    const before = previous?.services.get(id);
    const beforeContent = before ? (previousSources?.get(path) ?? Buffer.from(JSON.stringify(before))) : undefined;
    const kept = before && beforeContent ? { service: before, content: beforeContent } : undefined;
    if (reusable && before && sameBytes(previousSources?.get(path), content)) {
      candidates.push({ id, path, service: before, content, age: 0 });
      continue;
    }
    schema ??= serviceSchemaFor(mesh);
    const result = parse(schema, content);
    const issues = result.ok ? idIssues(id, path, result.value) : result.issues;
    if (result.ok && issues.length === 0) {
      candidates.push({ id, path, service: result.value, content, age: kept ? 1 : 2, ...(kept ? { previous: kept } : {}) });
      continue;
    }
    refuse(path, issues);
    if (kept) candidates.push({ id, path, service: kept.service, content: kept.content, age: 0 });
  }

  candidates.sort((a, b) => a.age - b.age || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const claims = new Map<string, { id: string; path: string }>();
  const out = new Map<string, Service>();
  for (const candidate of candidates) {
    const conflict = firstConflict(candidate.service, claims);
    if (!conflict) {
      claim(candidate, candidate.service, claims);
      out.set(candidate.id, candidate.service);
      accepted.set(candidate.path, candidate.content);
      continue;
    }
    refuse(candidate.path, [conflict]);
    // The new version collides; its previous one did not, unless something that came first took its place.
    const fallback = candidate.previous;
    if (fallback && !firstConflict(fallback.service, claims)) {
      claim(candidate, fallback.service, claims);
      out.set(candidate.id, fallback.service);
      accepted.set(candidate.path, fallback.content);
    }
  }
  return new Map([...out].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function idIssues(id: string, path: string, service: Service): ContractIssue[] {
  return service.id === id
    ? []
    : [{ field: 'id', message: `is ${JSON.stringify(service.id)}, but the file is ${path} (a service's file is services/<its id>.json)` }];
}

/** The proxy's key for a destination (RouteTable's): ::ffff:a.b.c.d and a.b.c.d are one. */
function vipKey(address: string, port: number): string {
  return `${routingAddress(address)}|${port}`;
}

function* vipPorts(service: Service): Generator<{ key: string; field: string; shown: string }> {
  for (const [i, vip] of service.vips.entries()) {
    for (const p of service.ports) {
      const shown = vip.address.includes(':') ? `[${vip.address}]:${p.port}` : `${vip.address}:${p.port}`;
      yield { key: vipKey(vip.address, p.port), field: `vips[${i}].address`, shown };
    }
  }
}

function firstConflict(service: Service, claims: ReadonlyMap<string, { id: string; path: string }>): ContractIssue | undefined {
  for (const { key, field, shown } of vipPorts(service)) {
    const owner = claims.get(key);
    if (owner && owner.id !== service.id) {
      return { field, message: `${shown} is already served by ${owner.id} (${owner.path}); the proxy maps a VIP and port to one service` };
    }
  }
  return undefined;
}

function claim(candidate: Candidate, service: Service, claims: Map<string, { id: string; path: string }>): void {
  for (const { key } of vipPorts(service)) claims.set(key, { id: candidate.id, path: candidate.path });
}

function diff(previous: SidecarState | undefined, next: SidecarState): ConfigChange {
  const change: ConfigChange = {
    mesh: !previous || !isDeepStrictEqual(previous.mesh, next.mesh),
    sidecar: !previous || !isDeepStrictEqual(previous.sidecar, next.sidecar),
    services: { added: [], changed: [], removed: [] },
  };
  for (const [id, service] of next.services) {
    const before = previous?.services.get(id);
    if (!before) change.services.added.push(id);
    else if (before !== service && !isDeepStrictEqual(before, service)) change.services.changed.push(id);
  }
  for (const id of previous?.services.keys() ?? []) if (!next.services.has(id)) change.services.removed.push(id);
  return change;
}
