// What the Eureka source keeps of a Eureka server's registry, and the rules Eureka's own client
// follows to keep it current: a full `/apps` replaces it, an `/apps/delta` is applied on top
// (ADDED and MODIFIED replace an instance, DELETED removes it), and the result is trusted only when
// its reconcile hashcode equals the server's `apps__hashcode`. The hashcode counts instances of
// every status, so every instance is kept here whatever its status; the source filters on output.
// Pure code over parsed JSON: every rule is tested on answers recorded from a real server.

/** The metadata key every instance a bridge's Eureka sink writes carries (sinks/eureka/instances.ts): the source never publishes those. */
export const ORIGIN_METADATA = 'flomesh-origin';

/** An instance as kept: the fields the catalog needs, in the types the contract wants. */
export interface EurekaInstance {
  /** Eureka's id of the instance (InstanceInfo.getId()): instanceId, else the Amazon instance-id, else hostName. */
  id: string;
  app: string;
  status: string;
  ipAddr?: string;
  hostName?: string;
  /** Undefined when the registry gives none; `valid: false` when the number is no port. */
  port?: EurekaPort;
  securePort?: EurekaPort;
  /** `metadata.zone` (Spring Cloud's), else the Amazon data center's availability-zone. */
  zone?: string;
  /** `metadata.flomesh-origin`: a bridge's Eureka sink wrote it (from that source kind); never published. */
  origin?: string;
}

export interface EurekaPort {
  number: number;
  enabled: boolean;
}

export interface EurekaApplications {
  /** The server's reconcile hashcode (`apps__hashcode`), e.g. `DOWN_1_UP_3_`; empty for an empty registry. */
  hashcode: string;
  apps: EurekaApp[];
  /** Instances that were not kept (not an object, no id): each named, for the log. */
  problems: string[];
}

export interface EurekaApp {
  name: string;
  instances: EurekaDeltaInstance[];
  /** Instances that have no id: nothing can change or remove them but the next full answer; counted in the hashcode. */
  anonymous: { status: string }[];
}

export interface EurekaDeltaInstance extends EurekaInstance {
  /** In a delta: what happened to it (ADDED, MODIFIED, DELETED). */
  actionType?: string;
}

/** An answer that is not a Eureka registry at all: the last good state stays. */
export class EurekaAnswerError extends Error {
  override readonly name = 'EurekaAnswerError';
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const text = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : typeof v === 'number' ? String(v) : undefined);

/**
 * Eureka's JSON codecs disagree on lists: Jackson (Eureka 1.4 on, Spring Cloud) always writes an
 * array, the older XStream-based codec writes a lone element as the element itself.
 */
function listOf(v: unknown): unknown[] {
  if (v === undefined || v === null) return [];
  return Array.isArray(v) ? v : [v];
}

/** `{"$": 8080, "@enabled": "true"}` (either may be a string or not: codecs differ). */
function portOf(v: unknown): EurekaPort | undefined {
  if (!isObject(v)) return typeof v === 'number' || typeof v === 'string' ? numberPort(v, true) : undefined;
  const enabled = v['@enabled'];
  return numberPort(v.$, enabled === true || enabled === 'true');
}

function numberPort(raw: unknown, enabled: boolean): EurekaPort | undefined {
  const number = typeof raw === 'number' ? raw : typeof raw === 'string' && /^-?\d+$/.test(raw.trim()) ? Number(raw) : undefined;
  return number === undefined ? undefined : { number, enabled };
}

const STATUSES = new Set(['UP', 'DOWN', 'STARTING', 'OUT_OF_SERVICE', 'UNKNOWN']);

/** As Eureka reads a status (InstanceStatus.toEnum): a name it does not know is UNKNOWN. */
function statusOf(v: unknown): string {
  const name = text(v)?.toUpperCase();
  return name !== undefined && STATUSES.has(name) ? name : 'UNKNOWN';
}

/** One instance of an answer, or why it cannot be kept. */
export function parseInstance(raw: unknown, appName: string): EurekaDeltaInstance | { problem: string; status?: string } {
  if (!isObject(raw)) return { problem: `an instance of ${appName} is not an object (${JSON.stringify(raw)?.slice(0, 80)})` };
  const status = statusOf(raw.status);
  const dataCenter = isObject(raw.dataCenterInfo) ? raw.dataCenterInfo : {};
  const dataCenterMetadata = isObject(dataCenter.metadata) ? dataCenter.metadata : {};
  const hostName = text(raw.hostName);
  const id = text(raw.instanceId) ?? (text(dataCenter.name) === 'Amazon' ? text(dataCenterMetadata['instance-id']) : undefined) ?? hostName;
  if (id === undefined) return { problem: `an instance of ${appName} has no instanceId and no hostName`, status };
  const metadata = isObject(raw.metadata) ? raw.metadata : {};
  const zone = text(metadata.zone) ?? text(dataCenterMetadata['availability-zone']);
  const origin = text(metadata[ORIGIN_METADATA]);
  const ipAddr = text(raw.ipAddr);
  const port = portOf(raw.port);
  const securePort = portOf(raw.securePort);
  const actionType = text(raw.actionType);
  return {
    id,
    app: appName,
    status,
    ...(ipAddr !== undefined ? { ipAddr } : {}),
    ...(hostName !== undefined ? { hostName } : {}),
    ...(port ? { port } : {}),
    ...(securePort ? { securePort } : {}),
    ...(zone !== undefined ? { zone } : {}),
    ...(origin !== undefined ? { origin } : {}),
    ...(actionType !== undefined ? { actionType: actionType.toUpperCase() } : {}),
  };
}

/**
 * An `/apps` or `/apps/delta` answer (JSON text). Throws EurekaAnswerError when it is not one
 * (not JSON, XML, no `applications`); a bad application or instance inside is named in `problems`
 * and left out, the rest kept.
 */
export function parseApplications(body: string): EurekaApplications {
  const trimmed = body.trimStart();
  if (trimmed.startsWith('<'))
    throw new EurekaAnswerError('the server answered XML (or HTML), not JSON: is this a Eureka server, and does it honour Accept: application/json?');
  let document: unknown;
  try {
    document = JSON.parse(body);
  } catch (error) {
    throw new EurekaAnswerError(`the answer is not JSON (${(error as Error).message}; ${body.length} bytes)`);
  }
  const root = isObject(document) ? document.applications : undefined;
  if (!isObject(root)) throw new EurekaAnswerError(`the answer has no "applications" object (it starts ${JSON.stringify(body.slice(0, 60))})`);
  const hashcode = root.apps__hashcode ?? '';
  if (typeof hashcode !== 'string') throw new EurekaAnswerError(`apps__hashcode is not a string (${JSON.stringify(hashcode)?.slice(0, 60)})`);
  const problems: string[] = [];
  const apps = new Map<string, EurekaApp>();
  for (const rawApp of listOf(root.application)) {
    const name = isObject(rawApp) ? text(rawApp.name) : undefined;
    if (name === undefined || !isObject(rawApp)) {
      problems.push(`an application without a name was left out (${JSON.stringify(rawApp)?.slice(0, 80)})`);
      continue;
    }
    // The server upper-cases application names; a delta names the app as its full answer does.
    const appName = name.toUpperCase();
    let app = apps.get(appName);
    if (!app) apps.set(appName, (app = { name: appName, instances: [], anonymous: [] }));
    for (const rawInstance of listOf(rawApp.instance)) {
      const parsed = parseInstance(rawInstance, appName);
      if ('problem' in parsed) {
        problems.push(parsed.problem);
        if (parsed.status !== undefined) app.anonymous.push({ status: parsed.status });
      } else app.instances.push(parsed);
    }
  }
  return { hashcode, apps: [...apps.values()], problems };
}

/**
 * Eureka's reconcile hashcode of a set of instances (Applications.getReconcileHashCode): for each
 * status, in the order of a Java TreeMap of the status names (sorted by UTF-16 code units, so
 * `DOWN_1_UP_3_`, never `UP_3_DOWN_1_`), the status, `_`, the count, `_`.
 */
export function reconcileHashcode(countsByStatus: ReadonlyMap<string, number>): string {
  return [...countsByStatus]
    .filter(([, count]) => count > 0)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([status, count]) => `${status}_${count}_`)
    .join('');
}

/** Every instance of a Eureka server's registry, of every status, kept between fetches. */
export class LocalRegistry {
  private readonly apps = new Map<string, Map<string, EurekaInstance>>();
  private readonly anonymous = new Map<string, { status: string }[]>();
  private readonly counts = new Map<string, number>();
  /** True once a full answer has been taken. */
  loaded = false;

  appNames(): IterableIterator<string> {
    return this.apps.keys();
  }

  instancesOf(app: string): Iterable<EurekaInstance> {
    return this.apps.get(app)?.values() ?? [];
  }

  hasApp(app: string): boolean {
    return this.apps.has(app) || this.anonymous.has(app);
  }

  /** Whether the app has an instance no bridge sink wrote: an app only a sink wrote is not the registry's own. */
  hasOwnInstances(app: string): boolean {
    if (this.anonymous.has(app)) return true;
    for (const instance of this.apps.get(app)?.values() ?? []) if (instance.origin === undefined) return true;
    return false;
  }

  get instanceCount(): number {
    let n = 0;
    for (const count of this.counts.values()) n += count;
    return n;
  }

  hashcode(): string {
    return reconcileHashcode(this.counts);
  }

  /** A full answer replaces everything. Returns the names of the apps whose instances changed. */
  replace(answer: EurekaApplications): Set<string> {
    const changed = new Set<string>();
    const seen = new Set<string>();
    for (const app of answer.apps) {
      seen.add(app.name);
      const before = this.apps.get(app.name);
      const next = new Map<string, EurekaInstance>();
      for (const instance of app.instances) next.set(instance.id, withoutAction(instance));
      if (!before || !sameInstances(before, next)) changed.add(app.name);
      this.setApp(app.name, next);
      const anonymousBefore = this.anonymous.get(app.name)?.length ?? 0;
      this.setAnonymous(app.name, app.anonymous);
      if (anonymousBefore !== app.anonymous.length) changed.add(app.name);
    }
    for (const name of [...this.apps.keys(), ...this.anonymous.keys()]) {
      if (seen.has(name)) continue;
      changed.add(name);
      this.setApp(name, new Map());
      this.setAnonymous(name, []);
    }
    this.loaded = true;
    return changed;
  }

  /**
   * A delta applied on top. Returns the names of the apps it changed; the caller compares
   * hashcode() with the delta's and fetches everything when they differ.
   */
  applyDelta(delta: EurekaApplications): Set<string> {
    const changed = new Set<string>();
    for (const app of delta.apps) {
      const instances = new Map(this.apps.get(app.name) ?? []);
      let touched = false;
      for (const instance of app.instances) {
        if (instance.actionType === 'DELETED') {
          touched = instances.delete(instance.id) || touched;
        } else {
          const kept = withoutAction(instance);
          const before = instances.get(instance.id);
          if (!before || !sameInstance(before, kept)) touched = true;
          instances.set(instance.id, kept);
        }
      }
      if (!touched) continue;
      changed.add(app.name);
      this.setApp(app.name, instances);
    }
    return changed;
  }

  private setApp(name: string, instances: Map<string, EurekaInstance>): void {
    for (const instance of this.apps.get(name)?.values() ?? []) this.count(instance.status, -1);
    for (const instance of instances.values()) this.count(instance.status, 1);
    if (instances.size === 0) this.apps.delete(name);
    else this.apps.set(name, instances);
  }

  private setAnonymous(name: string, anonymous: { status: string }[]): void {
    for (const a of this.anonymous.get(name) ?? []) this.count(a.status, -1);
    for (const a of anonymous) this.count(a.status, 1);
    if (anonymous.length === 0) this.anonymous.delete(name);
    else this.anonymous.set(name, anonymous);
  }

  private count(status: string, by: number): void {
    const n = (this.counts.get(status) ?? 0) + by;
    if (n === 0) this.counts.delete(status);
    else this.counts.set(status, n);
  }
}

function withoutAction(instance: EurekaDeltaInstance): EurekaInstance {
  if (instance.actionType === undefined) return instance;
  const { actionType: _, ...kept } = instance;
  return kept;
}

function sameInstance(a: EurekaInstance, b: EurekaInstance): boolean {
  return (
    a.status === b.status &&
    a.ipAddr === b.ipAddr &&
    a.hostName === b.hostName &&
    a.zone === b.zone &&
    a.origin === b.origin &&
    a.port?.number === b.port?.number &&
    a.port?.enabled === b.port?.enabled &&
    a.securePort?.number === b.securePort?.number &&
    a.securePort?.enabled === b.securePort?.enabled
  );
}

function sameInstances(a: ReadonlyMap<string, EurekaInstance>, b: ReadonlyMap<string, EurekaInstance>): boolean {
  if (a.size !== b.size) return false;
  for (const [id, instance] of a) {
    const other = b.get(id);
    if (!other || !sameInstance(instance, other)) return false;
  }
  return true;
}
