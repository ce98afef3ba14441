// What the Eureka sink registers for a catalog service, and how it compares with what a Eureka server
// holds. Pure, so every rule is tested without a server. One instance per endpoint, at the
// endpoint's own address (a pod IP: registry-bridge/README.md, Sinks into registries), in the shape
// a Spring Cloud Netflix client registers (InstanceInfo as JSON), so Spring's DiscoveryClient,
// Ribbon and Spring Cloud LoadBalancer read it as one of theirs. Everything written carries its
// origin in the instance's metadata, which the Eureka source never reads back
// (sources/eureka/translate.ts, ORIGIN_METADATA).
import { createHash } from 'node:crypto';
import type { EurekaSinkConfig, Service } from '../../../common/contract/index.js';
import { ORIGIN_METADATA } from '../../sources/eureka/translate.js';

/** Metadata keys the sink writes on every instance. */
export const METADATA = {
  /** The catalog service's source (`kubernetes`, `consul`): what the Eureka source skips. */
  origin: ORIGIN_METADATA,
  /** Which bridge sink wrote it: only instances with this sink's value are ever renewed, changed or cancelled. */
  writer: 'flomesh-writer',
  catalogId: 'flomesh-service',
  mesh: 'flomesh-mesh',
  namespace: 'flomesh-namespace',
  /** Spring Cloud's zone key (eureka.instance.metadata-map.zone), read by its zone-preferring balancers. */
  zone: 'zone',
} as const;

export type EurekaStatus = 'UP' | 'DOWN';

export interface Registration {
  /** The instanceId, unique in the app. */
  id: string;
  /** The application name, upper-cased as Eureka keeps every app name. */
  app: string;
  catalogId: string;
  address: string;
  port: number;
  /** The app speaks TLS on its port: `securePort` is enabled and `port` is not. */
  secure: boolean;
  status: EurekaStatus;
  /** What Spring's clients look instances up by (the lower-cased name, as spring.application.name). */
  vipAddress: string;
  metadata: Record<string, string>;
}

/** What a Eureka server holds of one instance, read from /apps. */
export interface Held {
  id: string;
  app: string;
  address: string;
  hostName: string;
  port: number;
  portEnabled: boolean;
  securePort: number;
  securePortEnabled: boolean;
  status: string;
  /** A status someone set with PUT .../status (OUT_OF_SERVICE by hand): Eureka keeps it over any registration. */
  overriddenStatus?: string;
  vipAddress: string;
  metadata: Record<string, string>;
  leaseSeconds?: number;
  renewalSeconds?: number;
}

export type SinkNaming = Pick<EurekaSinkConfig, 'servicePrefix' | 'namespaceSuffix'>;

export interface Writer {
  /** `flb-<clusterName>/<sink name>`: this sink's mark. */
  writer: string;
  /** The mesh's name, in every instance's metadata. */
  mesh: string;
}

export interface Lease {
  renewalIntervalSeconds: number;
  leaseDurationSeconds: number;
}

/** Characters an application name may hold: it goes into URL paths and is the host part of http://NAME/ in Spring. */
const APP_NAME = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$/;
const SECURE_PORT_NAMES = new Set(['https', 'tls']);

export function appNameOf(service: Pick<Service, 'name' | 'source' | 'namespace'>, naming: SinkNaming): string {
  const suffix = naming.namespaceSuffix && service.source === 'kubernetes' && service.namespace ? `-${service.namespace}` : '';
  return `${naming.servicePrefix}${service.name}${suffix}`.toUpperCase();
}

/**
 * An instanceId for one endpoint, in the `<host>:<app>:<port>` shape Spring Cloud gives its own
 * (`${hostname}:${spring.application.name}:${port}`), with the catalog id for the app so two
 * namespaces' `web` written into one app never share one. Over 200 characters (it goes into URLs)
 * it is shortened with a hash of the whole.
 */
export function instanceIdOf(catalogId: string, address: string, port: number): string {
  const id = `${address}:${catalogId}:${port}`;
  if (id.length <= 200) return id;
  return `${id.slice(0, 186)}-${createHash('sha256').update(id).digest('hex').slice(0, 12)}`;
}

/**
 * Whether a service's instances are reached over TLS: its (first) port named `https` or `tls`, or
 * numbered 443. Spring's clients then build https:// URLs from `securePort` (`secure-port-enabled`).
 */
function isSecure(service: Service): boolean {
  const first = service.ports[0];
  return first !== undefined && (SECURE_PORT_NAMES.has(first.name ?? '') || first.port === 443);
}

/** The instances to register for a service, or why none can be (a name Eureka clients cannot use). */
export function registrationsOf(service: Service, naming: SinkNaming, writer: Writer): { registrations: Registration[]; refused?: string } {
  const app = appNameOf(service, naming);
  if (!APP_NAME.test(app))
    return {
      registrations: [],
      refused: `the Eureka application name ${JSON.stringify(app)} is not one Eureka clients can use (letters, digits, ., - and _, starting and ending with a letter or digit, at most 253)`,
    };
  const common: Record<string, string> = {
    [METADATA.origin]: service.source,
    [METADATA.writer]: writer.writer,
    [METADATA.catalogId]: service.id,
    [METADATA.mesh]: writer.mesh,
    ...(service.source === 'kubernetes' && service.namespace ? { [METADATA.namespace]: service.namespace } : {}),
  };
  const secure = isSecure(service);
  const registrations = service.endpoints.map((endpoint): Registration => {
    const metadata: Record<string, string> = { ...common };
    if (endpoint.zone) metadata[METADATA.zone] = endpoint.zone;
    // A multi-port Service's other ports, where Spring's metadata readers find them.
    for (const [portName, port] of Object.entries(endpoint.ports ?? {})) metadata[`port-${portName}`] = String(port);
    return {
      id: instanceIdOf(service.id, endpoint.address, endpoint.port),
      app,
      catalogId: service.id,
      address: endpoint.address,
      port: endpoint.port,
      secure,
      status: endpoint.healthy ? 'UP' : 'DOWN',
      vipAddress: app.toLowerCase(),
      metadata,
    };
  });
  return { registrations };
}

/** The port a plain registration carries in its disabled slot (Eureka wants both; Spring's defaults). */
const UNUSED_PLAIN_PORT = 80;
const UNUSED_SECURE_PORT = 443;

/** A URL host: an IPv6 address in brackets. */
const urlHost = (address: string) => (address.includes(':') ? `[${address}]` : address);

/**
 * The registration body, as a Spring Cloud Netflix client sends it (InstanceInfo as JSON, the
 * form Jackson writes and the server reads). `hostName` is the address: the instance has no name
 * clients outside the cluster can resolve, and Spring's clients dial `hostName`.
 */
export function registrationBody(r: Registration, lease: Lease, lastDirtyTimestamp: number): { instance: Record<string, unknown> } {
  const scheme = r.secure ? 'https' : 'http';
  const base = `${scheme}://${urlHost(r.address)}:${r.port}/`;
  return {
    instance: {
      instanceId: r.id,
      app: r.app,
      appGroupName: null,
      hostName: r.address,
      ipAddr: r.address,
      status: r.status,
      overriddenStatus: 'UNKNOWN',
      port: { $: r.secure ? UNUSED_PLAIN_PORT : r.port, '@enabled': String(!r.secure) },
      securePort: { $: r.secure ? r.port : UNUSED_SECURE_PORT, '@enabled': String(r.secure) },
      countryId: 1,
      dataCenterInfo: { '@class': 'com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo', name: 'MyOwn' },
      leaseInfo: { renewalIntervalInSecs: lease.renewalIntervalSeconds, durationInSecs: lease.leaseDurationSeconds },
      metadata: r.metadata,
      homePageUrl: base,
      statusPageUrl: null,
      healthCheckUrl: null,
      vipAddress: r.vipAddress,
      secureVipAddress: r.vipAddress,
      isCoordinatingDiscoveryServer: 'false',
      lastDirtyTimestamp: String(lastDirtyTimestamp),
    },
  };
}

const sortedEntries = (metadata: Record<string, string>) => JSON.stringify(Object.entries(metadata).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

/**
 * Whether the server holds what the sink would register. A status someone overrode by hand
 * (OUT_OF_SERVICE through the REST API) is Eureka's to keep: it is not fought with registrations.
 */
export function sameRegistration(wanted: Registration, held: Held, lease: Lease): boolean {
  const overridden = held.overriddenStatus !== undefined && held.overriddenStatus !== 'UNKNOWN';
  return (
    wanted.app === held.app &&
    wanted.address === held.address &&
    wanted.address === held.hostName &&
    (wanted.secure
      ? held.securePortEnabled && !held.portEnabled && held.securePort === wanted.port
      : held.portEnabled && !held.securePortEnabled && held.port === wanted.port) &&
    (overridden || wanted.status === held.status) &&
    wanted.vipAddress === held.vipAddress &&
    sortedEntries(wanted.metadata) === sortedEntries(held.metadata) &&
    (held.leaseSeconds === undefined || held.leaseSeconds === lease.leaseDurationSeconds) &&
    (held.renewalSeconds === undefined || held.renewalSeconds === lease.renewalIntervalSeconds)
  );
}

export type Action = { kind: 'register' } | { kind: 'cancel' } | { kind: 'none' } | { kind: 'foreign' };

/**
 * What to do about one instanceId: `held` is what the server has under it in that app (undefined:
 * nothing), `ours` whether it carries this sink's writer mark. A cancel is only ever of an
 * instance of ours, and only once `mayRemove` (every source listed once).
 */
export function actionFor(wanted: Registration | undefined, held: Held | undefined, ours: boolean, mayRemove: boolean, lease: Lease): Action {
  if (held && !ours) return { kind: wanted ? 'foreign' : 'none' };
  if (wanted && (!held || !sameRegistration(wanted, held, lease))) return { kind: 'register' };
  if (!wanted && held && mayRemove) return { kind: 'cancel' };
  return { kind: 'none' };
}

/** The key instances are held under: an instanceId is unique within its app only. */
export const keyOf = (app: string, id: string) => `${app}/${id}`;

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const text = (v: unknown): string | undefined => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined);
const listOf = (v: unknown): unknown[] => (v === undefined || v === null ? [] : Array.isArray(v) ? v : [v]);
const stringRecord = (v: unknown): Record<string, string> => {
  const out: Record<string, string> = {};
  if (isObject(v)) for (const [k, value] of Object.entries(v)) if (typeof value === 'string') out[k] = value;
  return out;
};
function portOf(v: unknown): { number: number; enabled: boolean } {
  if (!isObject(v)) return { number: Number(v) || 0, enabled: false };
  const enabled = v['@enabled'];
  return { number: Number(v.$) || 0, enabled: enabled === true || enabled === 'true' };
}
const seconds = (v: unknown): number | undefined => (typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : undefined);

/**
 * Every instance a server's `/apps` answer (parsed JSON) holds, by keyOf(app, instanceId). Entries
 * that are not instances are skipped: they cannot be ours. Throws when the answer is no registry
 * (then nothing is known, and nothing is decided on it).
 */
export function heldInRegistry(document: unknown): Map<string, Held> {
  const root = isObject(document) ? document.applications : undefined;
  if (!isObject(root)) throw new Error('the answer has no "applications" object: is this a Eureka server?');
  const held = new Map<string, Held>();
  for (const rawApp of listOf(root.application)) {
    if (!isObject(rawApp)) continue;
    for (const raw of listOf(rawApp.instance)) {
      if (!isObject(raw)) continue;
      const id = text(raw.instanceId);
      const app = text(raw.app) ?? text(rawApp.name);
      if (!id || !app) continue;
      const port = portOf(raw.port);
      const securePort = portOf(raw.securePort);
      const lease = isObject(raw.leaseInfo) ? raw.leaseInfo : {};
      const leaseSeconds = seconds(lease.durationInSecs);
      const renewalSeconds = seconds(lease.renewalIntervalInSecs);
      const overriddenStatus = text(raw.overriddenStatus ?? raw.overriddenstatus);
      held.set(keyOf(app.toUpperCase(), id), {
        id,
        app: app.toUpperCase(),
        address: text(raw.ipAddr) ?? '',
        hostName: text(raw.hostName) ?? '',
        port: port.number,
        portEnabled: port.enabled,
        securePort: securePort.number,
        securePortEnabled: securePort.enabled,
        status: text(raw.status) ?? 'UNKNOWN',
        ...(overriddenStatus !== undefined ? { overriddenStatus } : {}),
        vipAddress: text(raw.vipAddress) ?? '',
        metadata: stringRecord(raw.metadata),
        ...(leaseSeconds !== undefined ? { leaseSeconds } : {}),
        ...(renewalSeconds !== undefined ? { renewalSeconds } : {}),
      });
    }
  }
  return held;
}

/** What the server holds once `r` is registered (what the sink assumes until it reads again). */
export function heldAfterRegister(r: Registration, lease: Lease): Held {
  return {
    id: r.id,
    app: r.app,
    address: r.address,
    hostName: r.address,
    port: r.secure ? UNUSED_PLAIN_PORT : r.port,
    portEnabled: !r.secure,
    securePort: r.secure ? r.port : UNUSED_SECURE_PORT,
    securePortEnabled: r.secure,
    status: r.status,
    vipAddress: r.vipAddress,
    metadata: r.metadata,
    leaseSeconds: lease.leaseDurationSeconds,
    renewalSeconds: lease.renewalIntervalSeconds,
  };
}
